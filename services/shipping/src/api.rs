//! Shipping's read-only HTTP: `GET /shipments/{order_id}`, with its OpenAPI description (served
//! at `/openapi.json`, see `infra::openapi`).

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use infra::http::Problem;
use infra::openapi::OpenApiRouter;
use infra::paging::{Page, PageQuery, Paged};
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;
use utoipa_axum::routes;
use uuid::Uuid;

#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
/// A shipment: a booking at the carrier and what became of it.
pub struct Shipment {
    pub order_id: Uuid,
    pub shipment_id: Uuid,
    /// `None` until the carrier booked it.
    pub tracking_number: Option<String>,
    pub country: String,
    /// `booking`, `scheduled`, `rejected`, `cancelling` or `cancelled`.
    #[schema(pattern = "^(booking|scheduled|rejected|cancelling|cancelled)$")]
    pub status: String,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub fn router(pool: PgPool) -> OpenApiRouter {
    OpenApiRouter::new().routes(routes!(one)).routes(routes!(list)).with_state(pool)
}

/// The shipment of one order.
#[utoipa::path(get, path = "/shipments/{order_id}", tag = "shipments",
    params(("order_id" = Uuid, Path, description = "The order's id (its saga id)")),
    responses(
        (status = 200, description = "The shipment", body = Shipment),
        (status = 400, description = "`order_id` is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No shipment for this order", body = Problem, content_type = "application/problem+json"),
    ))]
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

/// Every shipment, by order id, a page at a time (for the consistency auditor).
#[utoipa::path(get, path = "/shipments", tag = "shipments", params(PageQuery),
    responses(
        (status = 200, description = "Every shipment, by order id", body = Page<Shipment>),
        (status = 400, description = "`after` is not a UUID or `limit` is out of range", body = Problem,
         content_type = "application/problem+json"),
    ))]
async fn list(State(pool): State<PgPool>, page: Paged) -> Response {
    let Paged { after, limit } = page;
    let rows = sqlx::query_as::<_, Shipment>(
        "SELECT order_id, shipment_id, tracking_number, country, status, reason, created_at, updated_at
         FROM shipments WHERE $1::uuid IS NULL OR order_id > $1 ORDER BY order_id LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(&pool)
    .await;
    match rows {
        Ok(items) => {
            let (last, count) = (items.last().map(|p| p.order_id), items.len());
            Json(Page::of(items, last, count, limit)).into_response()
        }
        Err(e) => Problem::internal(&e).into_response(),
    }
}
