//! What every simulated system shares: the behaviour knobs, the counters, the answers recorded
//! under idempotency keys, the tombstones, and the gate every keyed call passes through.
//!
//! A keyed call runs in one critical section (after the configured latency): count it, fail it if
//! a knob says so, refuse it if its key is tombstoned, replay the first answer if its key was seen,
//! else apply the operation, record its answer, and maybe lose that answer (`ambiguous_rate`).
//! Two concurrent calls with the same key therefore never both apply.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::carrier::Bookings;
use crate::gateway::Authorizations;
use crate::lost;

/// How an answer lost by `ambiguous_rate` is lost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AmbiguousMode {
    /// Answer `500`.
    Error,
    /// Answer `200`, then drop the connection in the middle of the body.
    Drop,
    /// Either, with even odds.
    #[default]
    Mixed,
}

/// What the simulated system does with calls, settable at run time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Behaviour {
    /// Delay before every keyed call is handled.
    #[serde(default)]
    pub latency_ms: u64,
    /// Share of calls answered `500` with nothing applied (0.0..=1.0).
    #[serde(default)]
    pub error_rate: f64,
    /// Every call answered `503`, nothing applied.
    #[serde(default)]
    pub outage: bool,
    /// Calls whose key contains one of these are answered `500`, nothing applied (a poison request).
    #[serde(default)]
    pub failing_keys: Vec<String>,
    /// Share of calls that would succeed which are applied and then lose their answer (0.0..=1.0).
    #[serde(default)]
    pub ambiguous_rate: f64,
    /// How those answers are lost.
    #[serde(default)]
    pub ambiguous_mode: AmbiguousMode,
    /// Calls whose key contains one of these are refused `422`, nothing applied.
    #[serde(default)]
    pub refused_keys: Vec<String>,
}

/// A behaviour that cannot be set.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BehaviourError {
    #[error("{field} must be within 0.0..=1.0, got {value}")]
    Rate { field: &'static str, value: f64 },
}

impl Behaviour {
    pub fn validate(&self) -> Result<(), BehaviourError> {
        for (field, value) in [("error_rate", self.error_rate), ("ambiguous_rate", self.ambiguous_rate)] {
            if !(0.0..=1.0).contains(&value) {
                return Err(BehaviourError::Rate { field, value });
            }
        }
        Ok(())
    }
}

/// Counters and holdings of one simulated system. The gateway fields are absent (`None`) for the
/// carrier and the carrier fields for the gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Keyed calls received (admin and listing calls excluded).
    pub calls: u64,
    /// Calls answered with a 5xx: `outage`, `failing_keys`, `error_rate`, and the answers lost as
    /// a `500` by `ambiguous_rate` (dropped connections are not counted here).
    pub errors: u64,
    /// Distinct keyed operations applied and recorded (replays and refusals excluded).
    pub operations: u64,
    /// Operations applied whose answer was then lost (a `500` or a dropped connection).
    pub ambiguous: u64,
    /// Calls refused `422` by `refused_keys`.
    pub refused: u64,
    /// Gateway: authorizations neither captured nor voided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorized_open: Option<u64>,
    /// Gateway: authorizations captured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captured: Option<u64>,
    /// Gateway: authorizations voided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voided: Option<u64>,
    /// Carrier: bookings currently booked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub booked: Option<u64>,
    /// Carrier: bookings cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    Gateway,
    Carrier,
}

/// What an operation did.
pub(crate) enum Outcome {
    /// Applied: the answer is recorded under the key and replayed to its repeats.
    Applied(StatusCode, Value),
    /// Nothing applied (unknown id, a conflict): answered, not recorded.
    Refused(StatusCode, Value),
}

impl Outcome {
    pub(crate) fn refused(status: StatusCode, error: &str) -> Self {
        Outcome::Refused(status, json!({"error": error}))
    }
}

/// What a system holds; what operations read and change.
#[derive(Default)]
pub(crate) struct Ledger {
    pub(crate) gateway: Authorizations,
    pub(crate) carrier: Bookings,
    /// (operation, key) undone before it was applied -> the error word its late call gets (409).
    tombstones: HashMap<(&'static str, String), &'static str>,
}

impl Ledger {
    /// Refuse every later call of `operation` with `key`, with `409 {"error": why}`.
    pub(crate) fn tombstone(&mut self, operation: &'static str, key: &str, why: &'static str) {
        self.tombstones.insert((operation, key.to_owned()), why);
    }
}

#[derive(Default)]
struct Counters {
    calls: u64,
    errors: u64,
    operations: u64,
    ambiguous: u64,
    refused: u64,
}

#[derive(Default)]
struct Inner {
    behaviour: Behaviour,
    counters: Counters,
    /// (operation, idempotency key) -> the first answer.
    answers: HashMap<(&'static str, String), (StatusCode, Value)>,
    ledger: Ledger,
}

/// The answer a call gets.
enum Reply {
    Answer(StatusCode, Value),
    /// A `200` whose body is cut off by a dropped connection.
    Drop(Value),
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        match self {
            Reply::Answer(status, body) => (status, Json(body)).into_response(),
            Reply::Drop(body) => lost::dropped(&body),
        }
    }
}

/// One simulated system's state. Cheap to clone.
#[derive(Clone)]
pub struct Sim {
    name: &'static str,
    system: System,
    inner: Arc<Mutex<Inner>>,
}

impl Default for Sim {
    fn default() -> Self {
        Sim::new("gateway")
    }
}

/// True with probability `p`; never for `p <= 0` or NaN.
fn chance(p: f64) -> bool {
    p > 0.0 && (p >= 1.0 || rand::rng().random_bool(p))
}

fn matches_any(key: &str, patterns: &[String]) -> bool {
    patterns.iter().any(|p| key.contains(p.as_str()))
}

impl Inner {
    /// The failure a knob imposes on this call, if any; nothing is applied then.
    fn knob_failure(&mut self, key: &str) -> Option<Reply> {
        let b = &self.behaviour;
        let (status, why) = if b.outage {
            (StatusCode::SERVICE_UNAVAILABLE, "outage")
        } else if matches_any(key, &b.failing_keys) {
            (StatusCode::INTERNAL_SERVER_ERROR, "failing key")
        } else if matches_any(key, &b.refused_keys) {
            self.counters.refused += 1;
            let body = json!({"error": "refused", "detail": "the Idempotency-Key matches refused_keys"});
            return Some(Reply::Answer(StatusCode::UNPROCESSABLE_ENTITY, body));
        } else if chance(b.error_rate) {
            (StatusCode::INTERNAL_SERVER_ERROR, "random error")
        } else {
            return None;
        };
        self.counters.errors += 1;
        Some(Reply::Answer(status, json!({"error": why})))
    }

    /// The answer of an operation just applied, or its loss.
    fn maybe_lose(&mut self, status: StatusCode, body: Value) -> Reply {
        if !chance(self.behaviour.ambiguous_rate) {
            return Reply::Answer(status, body);
        }
        self.counters.ambiguous += 1;
        let drop = match self.behaviour.ambiguous_mode {
            AmbiguousMode::Error => false,
            AmbiguousMode::Drop => true,
            AmbiguousMode::Mixed => rand::rng().random_bool(0.5),
        };
        if drop {
            Reply::Drop(body)
        } else {
            self.counters.errors += 1;
            Reply::Answer(StatusCode::INTERNAL_SERVER_ERROR, json!({"error": "answer lost after applying"}))
        }
    }

    /// Gate, apply, record and answer one keyed call, all under the lock.
    fn call(&mut self, operation: &'static str, key: &str, apply: impl FnOnce(&mut Ledger, &str) -> Outcome) -> Reply {
        self.counters.calls += 1;
        if let Some(failure) = self.knob_failure(key) {
            return failure;
        }
        let scoped = (operation, key.to_owned());
        if let Some(why) = self.ledger.tombstones.get(&scoped) {
            return Reply::Answer(StatusCode::CONFLICT, json!({"error": why}));
        }
        if let Some((status, body)) = self.answers.get(&scoped) {
            return Reply::Answer(*status, body.clone());
        }
        match apply(&mut self.ledger, key) {
            Outcome::Refused(status, body) => Reply::Answer(status, body),
            Outcome::Applied(status, body) => {
                self.counters.operations += 1;
                self.answers.insert(scoped, (status, body.clone()));
                self.maybe_lose(status, body)
            }
        }
    }
}

impl Sim {
    /// `name` is the log field; `"carrier"` makes a carrier, anything else a gateway.
    pub fn new(name: &'static str) -> Self {
        let system = if name == "carrier" { System::Carrier } else { System::Gateway };
        Sim { name, system, inner: Arc::default() }
    }

    pub(crate) fn is_carrier(&self) -> bool {
        self.system == System::Carrier
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No code panics while holding the lock; if one ever did, its state is still usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn behaviour(&self) -> Behaviour {
        self.lock().behaviour.clone()
    }

    /// Set the knobs (not validated: out-of-range rates act as their nearest bound).
    pub fn set_behaviour(&self, b: Behaviour) {
        tracing::info!(system = self.name, behaviour = ?b, "behaviour changed");
        self.lock().behaviour = b;
    }

    pub fn stats(&self) -> Stats {
        let i = self.lock();
        let c = &i.counters;
        let mut s = Stats {
            calls: c.calls,
            errors: c.errors,
            operations: c.operations,
            ambiguous: c.ambiguous,
            refused: c.refused,
            ..Stats::default()
        };
        match self.system {
            System::Gateway => i.ledger.gateway.count_into(&mut s),
            System::Carrier => i.ledger.carrier.count_into(&mut s),
        }
        s
    }

    /// Read what the system holds.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&Ledger) -> T) -> T {
        f(&self.lock().ledger)
    }

    /// Run one keyed call of `operation`: the latency, then [`Inner::call`] under the lock.
    pub(crate) async fn handle(
        &self,
        headers: &HeaderMap,
        operation: &'static str,
        apply: impl FnOnce(&mut Ledger, &str) -> Outcome,
    ) -> Response {
        let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned) else {
            return (StatusCode::BAD_REQUEST, Json(json!({"error": "Idempotency-Key header required"})))
                .into_response();
        };
        let latency = self.behaviour().latency_ms;
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        let reply = self.lock().call(operation, &key, apply);
        reply.into_response()
    }
}

async fn put_behaviour(State(s): State<Sim>, body: Result<Json<Behaviour>, JsonRejection>) -> Response {
    match body {
        Ok(Json(b)) => match b.validate() {
            Ok(()) => {
                s.set_behaviour(b.clone());
                Json(b).into_response()
            }
            Err(e) => (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"error": e.to_string()}))).into_response(),
        },
        Err(e) => (e.status(), Json(json!({"error": e.body_text()}))).into_response(),
    }
}

/// The admin and health routes every system serves.
pub(crate) fn admin(sim: Sim) -> Router {
    Router::new()
        .route("/admin/behaviour", get(|State(s): State<Sim>| async move { Json(s.behaviour()) }).put(put_behaviour))
        .route("/admin/stats", get(|State(s): State<Sim>| async move { Json(s.stats()) }))
        .route("/health/ready", get(|| async { Json(json!({"status": "ready"})) }))
        .route("/health/live", get(|| async { Json(json!({"status": "live"})) }))
        .with_state(sim)
}
