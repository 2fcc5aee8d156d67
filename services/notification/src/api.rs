//! Notification's read-only HTTP: `GET /notifications?order_id=<uuid>`, oldest first.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use infra::http::Problem;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Notification {
    pub order_id: Uuid,
    pub kind: String,
    pub customer_id: String,
    pub message: String,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize)]
struct ByOrder {
    order_id: Uuid,
}

pub fn router(pool: PgPool) -> Router {
    Router::new().route("/notifications", get(by_order)).with_state(pool)
}

async fn by_order(State(pool): State<PgPool>, q: Result<Query<ByOrder>, QueryRejection>) -> Response {
    let Ok(Query(q)) = q else {
        return Problem::bad_request("query parameter order_id (a UUID) is required").into_response();
    };
    match sqlx::query_as::<_, Notification>(
        "SELECT order_id, kind, customer_id, message, reason, created_at FROM notifications WHERE order_id = $1 ORDER BY id",
    )
    .bind(q.order_id)
    .fetch_all(&pool)
    .await
    {
        Ok(rows) => Json(rows).into_response(),
        Err(e) => Problem::internal(&e).into_response(),
    }
}
