//! The simulated payment gateway: authorizations, captured or voided by id, or voided by the
//! idempotency key of the call that made them. A void by key that finds no authorization
//! tombstones the key, so the late authorization is refused (`409 {"error": "voided"}`).

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::sim::{Ledger, Outcome, Sim, Stats, admin};

/// The operation names idempotency keys are scoped by.
const AUTHORIZE: &str = "authorize";
const CAPTURE: &str = "capture";
const VOID: &str = "void";
const VOID_BY_KEY: &str = "void_by_key";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthorizationStatus {
    Authorized,
    Captured,
    Voided,
}

/// An authorization the gateway holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authorization {
    pub authorization_id: String,
    /// The Idempotency-Key of the call that made it.
    pub key: String,
    pub amount_cents: i64,
    pub currency: String,
    pub status: AuthorizationStatus,
}

/// The gateway's authorizations, in the order they were made.
#[derive(Default)]
pub(crate) struct Authorizations {
    all: Vec<Authorization>,
    by_id: HashMap<String, usize>,
    by_key: HashMap<String, usize>,
}

impl Authorizations {
    fn authorize(&mut self, key: &str, amount_cents: i64, currency: String) -> Outcome {
        let id = format!("auth-{}", uuid::Uuid::now_v7().simple());
        let answer = json!({"authorization_id": id, "amount_cents": amount_cents, "currency": currency});
        let status = AuthorizationStatus::Authorized;
        self.by_id.insert(id.clone(), self.all.len());
        self.by_key.insert(key.to_owned(), self.all.len());
        self.all.push(Authorization { authorization_id: id, key: key.to_owned(), amount_cents, currency, status });
        Outcome::Applied(StatusCode::CREATED, answer)
    }

    fn capture(&mut self, id: &str) -> Outcome {
        let Some(a) = self.by_id.get(id).and_then(|&i| self.all.get_mut(i)) else {
            return Outcome::refused(StatusCode::NOT_FOUND, "unknown authorization");
        };
        match a.status {
            AuthorizationStatus::Voided => Outcome::refused(StatusCode::CONFLICT, "voided"),
            // A repeat of the capturing call is replayed before it gets here: this is another key.
            AuthorizationStatus::Captured => Outcome::refused(StatusCode::CONFLICT, "already_captured"),
            AuthorizationStatus::Authorized => {
                a.status = AuthorizationStatus::Captured;
                Outcome::Applied(StatusCode::OK, json!({"authorization_id": id, "status": "captured"}))
            }
        }
    }

    /// Void the authorization at `index`: `200` if authorized or already voided, `409` if captured.
    fn void_at(&mut self, index: usize) -> Outcome {
        let Some(a) = self.all.get_mut(index) else {
            return Outcome::refused(StatusCode::NOT_FOUND, "unknown authorization");
        };
        if a.status == AuthorizationStatus::Captured {
            return Outcome::refused(StatusCode::CONFLICT, "captured");
        }
        a.status = AuthorizationStatus::Voided;
        Outcome::Applied(StatusCode::OK, json!({"authorization_id": a.authorization_id, "status": "voided"}))
    }

    fn void(&mut self, id: &str) -> Outcome {
        match self.by_id.get(id) {
            Some(&i) => self.void_at(i),
            None => Outcome::refused(StatusCode::NOT_FOUND, "unknown authorization"),
        }
    }

    pub(crate) fn count_into(&self, s: &mut Stats) {
        let count = |status| self.all.iter().filter(|a| a.status == status).count() as u64;
        s.authorized_open = Some(count(AuthorizationStatus::Authorized));
        s.captured = Some(count(AuthorizationStatus::Captured));
        s.voided = Some(count(AuthorizationStatus::Voided));
    }
}

/// Void the authorization made with `key`, or, if there is none, answer `nothing_to_void`. Either
/// way (unless it was captured) a later authorization with `key` is refused.
fn void_by_key(ledger: &mut Ledger, key: &str) -> Outcome {
    if key.is_empty() {
        return Outcome::refused(StatusCode::UNPROCESSABLE_ENTITY, "authorization_key must not be empty");
    }
    let answer = match ledger.gateway.by_key.get(key).copied() {
        None => json!({"status": "nothing_to_void"}),
        Some(i) => match ledger.gateway.void_at(i) {
            Outcome::Applied(_, body) => json!({"status": "voided", "authorization_id": body["authorization_id"]}),
            refused => return refused,
        },
    };
    ledger.tombstone(AUTHORIZE, key, "voided");
    Outcome::Applied(StatusCode::OK, answer)
}

#[derive(Deserialize)]
struct AuthorizeBody {
    amount_cents: i64,
    currency: String,
}

#[derive(Deserialize)]
struct VoidByKeyBody {
    authorization_key: String,
}

async fn authorize(State(s): State<Sim>, headers: HeaderMap, Json(b): Json<AuthorizeBody>) -> Response {
    s.handle(&headers, AUTHORIZE, |l, key| l.gateway.authorize(key, b.amount_cents, b.currency)).await
}

async fn capture(State(s): State<Sim>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    s.handle(&headers, CAPTURE, |l, _| l.gateway.capture(&id)).await
}

async fn void(State(s): State<Sim>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    s.handle(&headers, VOID, |l, _| l.gateway.void(&id)).await
}

async fn void_key(State(s): State<Sim>, headers: HeaderMap, Json(b): Json<VoidByKeyBody>) -> Response {
    s.handle(&headers, VOID_BY_KEY, |l, _| void_by_key(l, &b.authorization_key)).await
}

async fn list(State(s): State<Sim>) -> Json<Vec<Authorization>> {
    Json(s.authorizations())
}

impl Sim {
    /// The authorizations the gateway holds, oldest first (none for a carrier).
    pub fn authorizations(&self) -> Vec<Authorization> {
        self.read(|l| l.gateway.all.clone())
    }
}

/// The payment gateway's routes.
pub fn gateway(sim: Sim) -> Router {
    Router::new()
        .route("/authorizations", post(authorize).get(list))
        .route("/authorizations/void-by-key", post(void_key))
        .route("/authorizations/{id}/capture", post(capture))
        .route("/authorizations/{id}/void", post(void))
        .with_state(sim.clone())
        .merge(admin(sim))
}
