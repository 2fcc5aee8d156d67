//! The operator API, under `/admin` (bearer token from configuration; `401` without a valid one):
//!
//! - dead letters ([`dlq`]): `GET /admin/dlq`, `GET /admin/dlq/{queue}/messages?limit=&offset=`,
//!   `GET /admin/dlq/{queue}/messages/{message_id}`, `POST /admin/dlq/{queue}/replay`,
//!   `POST /admin/dlq/{queue}/discard`;
//! - saga verbs ([`sagas`]): `POST /admin/sagas/{id}/retry`, `POST /admin/sagas/{id}/compensate`,
//!   `POST /admin/sagas/{id}/resolve` (`{"note": "..."}`; `409` where the verb makes no sense);
//! - `GET /admin/audit?limit=&saga_id=`: every operator action, newest first.
//!
//! Layout: [`auth`] (operators and the bearer check), [`dlq`] (broker access), [`sagas`] (verbs,
//! through the engine); the audit trail itself is [`crate::audit`].

pub mod auth;
mod dlq;
mod sagas;

use std::sync::Arc;

pub use auth::{Actor, Operator, parse_operators};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use contracts::topology::Topology;
use infra::amqp::{Broker, Publisher};
use infra::http::Problem;
use serde::Deserialize;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::engine::Engine;

#[derive(Clone)]
pub struct Admin {
    pub pool: PgPool,
    pub broker: Broker,
    pub publisher: Arc<Publisher>,
    pub topology: Topology,
    pub operators: Arc<Vec<Operator>>,
    pub engine: Arc<Engine>,
}

pub fn router(admin: Admin) -> Router {
    Router::new()
        .route("/admin/dlq", get(dlq::list_queues))
        .route("/admin/dlq/{queue}/messages", get(dlq::list_messages))
        .route("/admin/dlq/{queue}/messages/{message_id}", get(dlq::one_message))
        .route("/admin/dlq/{queue}/replay", post(dlq::replay))
        .route("/admin/dlq/{queue}/discard", post(dlq::discard))
        .route("/admin/sagas/{id}/retry", post(sagas::retry))
        .route("/admin/sagas/{id}/compensate", post(sagas::compensate))
        .route("/admin/sagas/{id}/resolve", post(sagas::resolve))
        .route("/admin/audit", get(audit))
        .route_layer(middleware::from_fn_with_state(admin.operators.clone(), auth::authorize))
        .with_state(admin)
}

#[derive(Debug, Deserialize)]
struct AuditQuery {
    limit: Option<i64>,
    saga_id: Option<Uuid>,
}

async fn audit(State(admin): State<Admin>, q: Result<Query<AuditQuery>, QueryRejection>) -> Response {
    let Ok(Query(q)) = q else {
        return Problem::bad_request("limit must be a number and saga_id a UUID").into_response();
    };
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Problem::bad_request("limit must be between 1 and 500").into_response();
    }
    match crate::audit::list(&admin.pool, q.saga_id, limit).await {
        Ok(items) => Json(json!({"items": items})).into_response(),
        Err(e) => Problem::internal(&e).into_response(),
    }
}
