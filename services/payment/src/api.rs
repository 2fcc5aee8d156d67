//! Payment's read-only HTTP: `GET /payments/{order_id}`.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use infra::http::Problem;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Payment {
    pub order_id: Uuid,
    pub customer_id: String,
    pub amount_cents: i64,
    pub currency: String,
    pub status: String,
    pub authorization_id: Option<String>,
    pub decline_code: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub fn router(pool: PgPool) -> Router {
    Router::new().route("/payments/{order_id}", get(one)).with_state(pool)
}

async fn one(State(pool): State<PgPool>, id: Result<Path<Uuid>, PathRejection>) -> Response {
    let Ok(Path(id)) = id else {
        return Problem::bad_request("order_id must be a UUID").into_response();
    };
    match sqlx::query_as::<_, Payment>(
        "SELECT order_id, customer_id, amount_cents, currency, status, authorization_id, decline_code, created_at, updated_at
         FROM payments WHERE order_id = $1",
    )
    .bind(id)
    .fetch_optional(&pool)
    .await
    {
        Ok(Some(p)) => Json(p).into_response(),
        Ok(None) => Problem::not_found(format!("no payment for order {id}")).into_response(),
        Err(e) => Problem::internal(&e).into_response(),
    }
}
