//! Shipping's read-only HTTP: `GET /shipments/{order_id}`.

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
pub struct Shipment {
    pub order_id: Uuid,
    pub shipment_id: Uuid,
    /// `None` until the carrier booked it.
    pub tracking_number: Option<String>,
    pub country: String,
    /// `booking`, `scheduled`, `rejected`, `cancelling` or `cancelled`.
    pub status: String,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub fn router(pool: PgPool) -> Router {
    Router::new().route("/shipments/{order_id}", get(one)).with_state(pool)
}

async fn one(State(pool): State<PgPool>, id: Result<Path<Uuid>, PathRejection>) -> Response {
    let Ok(Path(id)) = id else {
        return Problem::bad_request("order_id must be a UUID").into_response();
    };
    match sqlx::query_as::<_, Shipment>(
        "SELECT order_id, shipment_id, tracking_number, country, status, reason, created_at, updated_at
         FROM shipments WHERE order_id = $1",
    )
    .bind(id)
    .fetch_optional(&pool)
    .await
    {
        Ok(Some(s)) => Json(s).into_response(),
        Ok(None) => Problem::not_found(format!("no shipment for order {id}")).into_response(),
        Err(e) => Problem::internal(&e).into_response(),
    }
}
