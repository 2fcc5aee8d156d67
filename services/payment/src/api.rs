//! Payment's read-only HTTP: `GET /payments/{order_id}`, with its OpenAPI description (served at
//! `/openapi.json`, see `infra::openapi`).

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
/// A payment: an authorization and what became of it.
pub struct Payment {
    pub order_id: Uuid,
    pub customer_id: String,
    pub amount_cents: i64,
    pub currency: String,
    /// `authorizing`, `authorized`, `capturing`, `captured`, `voiding`, `voided` or `declined`;
    /// the `-ing` ones are intents whose gateway call has not been recorded yet.
    #[schema(pattern = "^(authorizing|authorized|capturing|captured|voiding|voided|declined)$")]
    pub status: String,
    pub authorization_id: Option<String>,
    pub decline_code: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub fn router(pool: PgPool) -> OpenApiRouter {
    OpenApiRouter::new().routes(routes!(one)).routes(routes!(list)).with_state(pool)
}

/// The payment of one order.
#[utoipa::path(get, path = "/payments/{order_id}", tag = "payments",
    params(("order_id" = Uuid, Path, description = "The order's id (its saga id)")),
    responses(
        (status = 200, description = "The payment", body = Payment),
        (status = 400, description = "`order_id` is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No payment for this order", body = Problem, content_type = "application/problem+json"),
    ))]
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

/// Every payment, by order id, a page at a time (for the consistency auditor).
#[utoipa::path(get, path = "/payments", tag = "payments", params(PageQuery),
    responses(
        (status = 200, description = "Every payment, by order id", body = Page<Payment>),
        (status = 400, description = "`after` is not a UUID or `limit` is out of range", body = Problem,
         content_type = "application/problem+json"),
    ))]
async fn list(State(pool): State<PgPool>, page: Paged) -> Response {
    let Paged { after, limit } = page;
    let rows = sqlx::query_as::<_, Payment>(
        "SELECT order_id, customer_id, amount_cents, currency, status, authorization_id, decline_code, created_at, updated_at
         FROM payments WHERE $1::uuid IS NULL OR order_id > $1 ORDER BY order_id LIMIT $2",
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
