//! Simulated outside systems: the payment gateway and the shipping carrier the participants call
//! over HTTP. They are real HTTP servers with knobs an operator (or a test) turns at run time, so
//! failures can be produced on demand:
//!
//! - `GET/PUT /admin/behaviour`: `{"latency_ms": 0, "error_rate": 0.0, "outage": false,
//!   "failing_keys": []}`. `outage` answers every call `503`; `error_rate` answers that share of
//!   calls `500`; `failing_keys` answers `500` to calls whose `Idempotency-Key` contains one of
//!   them (a poison request).
//! - `GET /admin/stats`: calls received, answered with an error, and distinct operations done.
//!
//! Gateway: `POST /authorizations` `{"amount_cents", "currency"}` -> `201 {"authorization_id"}`;
//! `POST /authorizations/{id}/capture`, `POST /authorizations/{id}/void` -> `200`. Carrier:
//! `POST /shipments` `{"country"}` -> `201 {"tracking_number"}`. Every call carries an
//! `Idempotency-Key` header; a repeated key gets the first answer and does nothing new (like a real
//! payment API), so `stats.operations` counts effects, not calls.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the simulated system does with calls, settable at run time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Behaviour {
    #[serde(default)]
    pub latency_ms: u64,
    #[serde(default)]
    pub error_rate: f64,
    #[serde(default)]
    pub outage: bool,
    #[serde(default)]
    pub failing_keys: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Calls received (admin calls excluded).
    pub calls: u64,
    /// Calls answered with a 5xx.
    pub errors: u64,
    /// Distinct operations done (idempotent repeats excluded).
    pub operations: u64,
}

#[derive(Default)]
struct Inner {
    behaviour: Behaviour,
    stats: Stats,
    /// Idempotency key -> the first answer.
    done: HashMap<String, (u16, Value)>,
}

/// One simulated system's state. Cheap to clone.
#[derive(Clone, Default)]
pub struct Sim {
    name: &'static str,
    inner: Arc<Mutex<Inner>>,
}

/// What a call may do next, decided under the lock.
enum Gate {
    Fail(StatusCode, &'static str),
    Replay(u16, Value),
    Go,
}

impl Sim {
    pub fn new(name: &'static str) -> Self {
        Sim { name, inner: Arc::default() }
    }

    pub fn behaviour(&self) -> Behaviour {
        self.inner.lock().map(|i| i.behaviour.clone()).unwrap_or_default()
    }

    pub fn set_behaviour(&self, b: Behaviour) {
        if let Ok(mut i) = self.inner.lock() {
            tracing::info!(system = self.name, behaviour = ?b, "behaviour changed");
            i.behaviour = b;
        }
    }

    pub fn stats(&self) -> Stats {
        self.inner.lock().map(|i| i.stats.clone()).unwrap_or_default()
    }

    /// Count the call and decide whether it fails, repeats an earlier answer, or goes ahead.
    async fn gate(&self, key: &str) -> Gate {
        let latency = self.behaviour().latency_ms;
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        let Ok(mut i) = self.inner.lock() else { return Gate::Fail(StatusCode::INTERNAL_SERVER_ERROR, "poisoned") };
        i.stats.calls += 1;
        let b = &i.behaviour;
        let fail = if b.outage {
            Some((StatusCode::SERVICE_UNAVAILABLE, "outage"))
        } else if b.failing_keys.iter().any(|k| key.contains(k.as_str())) {
            Some((StatusCode::INTERNAL_SERVER_ERROR, "failing key"))
        } else if b.error_rate > 0.0 && rand::rng().random_bool(b.error_rate.clamp(0.0, 1.0)) {
            Some((StatusCode::INTERNAL_SERVER_ERROR, "random error"))
        } else {
            None
        };
        if let Some((status, why)) = fail {
            i.stats.errors += 1;
            return Gate::Fail(status, why);
        }
        match i.done.get(key) {
            Some((status, body)) => Gate::Replay(*status, body.clone()),
            None => Gate::Go,
        }
    }

    /// Record the answer of a new operation under its key, and return it.
    fn finish(&self, key: &str, status: StatusCode, body: Value) -> Response {
        if let Ok(mut i) = self.inner.lock() {
            i.stats.operations += 1;
            i.done.insert(key.to_owned(), (status.as_u16(), body.clone()));
        }
        (status, Json(body)).into_response()
    }

    /// Run `op` behind the gate: failures and repeats never reach it.
    async fn handle(&self, headers: &HeaderMap, op: impl FnOnce() -> (StatusCode, Value)) -> Response {
        let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned) else {
            return (StatusCode::BAD_REQUEST, Json(json!({"error": "Idempotency-Key header required"})))
                .into_response();
        };
        match self.gate(&key).await {
            Gate::Fail(status, why) => (status, Json(json!({"error": why}))).into_response(),
            Gate::Replay(status, body) => {
                (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), Json(body)).into_response()
            }
            Gate::Go => {
                let (status, body) = op();
                self.finish(&key, status, body)
            }
        }
    }
}

fn admin(sim: Sim) -> Router {
    Router::new()
        .route(
            "/admin/behaviour",
            get(|State(s): State<Sim>| async move { Json(s.behaviour()) }).put(
                |State(s): State<Sim>, body: Result<Json<Behaviour>, axum::extract::rejection::JsonRejection>| async move {
                    match body {
                        Ok(Json(b)) if (0.0..=1.0).contains(&b.error_rate) => {
                            s.set_behaviour(b.clone());
                            Json(b).into_response()
                        }
                        Ok(_) => (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"error": "error_rate must be 0.0..=1.0"})))
                            .into_response(),
                        Err(e) => (e.status(), Json(json!({"error": e.body_text()}))).into_response(),
                    }
                },
            ),
        )
        .route("/admin/stats", get(|State(s): State<Sim>| async move { Json(s.stats()) }))
        .route("/health/ready", get(|| async { Json(json!({"status": "ready"})) }))
        .route("/health/live", get(|| async { Json(json!({"status": "live"})) }))
        .with_state(sim)
}

#[derive(Deserialize)]
struct AuthorizeBody {
    amount_cents: i64,
    currency: String,
}

/// The payment gateway's routes.
pub fn gateway(sim: Sim) -> Router {
    let authorize = |State(s): State<Sim>, headers: HeaderMap, Json(b): Json<AuthorizeBody>| async move {
        s.handle(&headers, || {
            let id = format!("auth-{}", uuid::Uuid::now_v7().simple());
            (
                StatusCode::CREATED,
                json!({"authorization_id": id, "amount_cents": b.amount_cents, "currency": b.currency}),
            )
        })
        .await
    };
    let settle = |what: &'static str| {
        move |State(s): State<Sim>, headers: HeaderMap, Path(id): Path<String>| async move {
            s.handle(&headers, || (StatusCode::OK, json!({"authorization_id": id, "status": what}))).await
        }
    };
    Router::new()
        .route("/authorizations", post(authorize))
        .route("/authorizations/{id}/capture", post(settle("captured")))
        .route("/authorizations/{id}/void", post(settle("voided")))
        .with_state(sim.clone())
        .merge(admin(sim))
}

#[derive(Deserialize)]
struct ShipmentBody {
    country: String,
}

/// The shipping carrier's routes.
pub fn carrier(sim: Sim) -> Router {
    let book = |State(s): State<Sim>, headers: HeaderMap, Json(b): Json<ShipmentBody>| async move {
        s.handle(&headers, || {
            let n: u64 = rand::rng().random_range(10_000_000..100_000_000);
            (StatusCode::CREATED, json!({"tracking_number": format!("TRK{n}"), "country": b.country}))
        })
        .await
    };
    Router::new().route("/shipments", post(book)).with_state(sim.clone()).merge(admin(sim))
}

/// A simulated system bound to an address (port 0 picks one), ready to serve.
pub struct Server {
    pub sim: Sim,
    listener: TcpListener,
    router: Router,
}

impl Server {
    pub async fn bind(name: &'static str, addr: SocketAddr) -> std::io::Result<Server> {
        let sim = Sim::new(name);
        let router = match name {
            "carrier" => carrier(sim.clone()),
            _ => gateway(sim.clone()),
        };
        Ok(Server { sim, listener: TcpListener::bind(addr).await?, router })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        infra::http::serve(self.listener, self.router, shutdown).await
    }
}
