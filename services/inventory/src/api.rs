//! Inventory's read-only HTTP: `GET /stock`, `GET /stock/{sku}` and `GET /reservations` (paged,
//! for the consistency auditor), each with its OpenAPI description (served at `/openapi.json`,
//! see `infra::openapi`).

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use infra::http::Problem;
use infra::openapi::OpenApiRouter;
use infra::paging::{Page, PageQuery, Paged};
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;
use utoipa_axum::routes;
use uuid::Uuid;

/// The stock of one SKU.
#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct StockLevel {
    pub sku: String,
    /// Units in the warehouse, reserved ones included.
    pub on_hand: i64,
    /// Units held for running sagas.
    pub reserved: i64,
    /// Units ever received (the initial stock): `on_hand` plus every committed quantity.
    pub received: i64,
}

/// One line of an order's reservation.
#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct ReservationLine {
    pub order_id: Uuid,
    pub sku: String,
    pub quantity: i64,
    /// `held` (for a running saga), `released` (compensated) or `committed` (shipped).
    #[schema(pattern = "^(held|released|committed)$")]
    pub status: String,
}

const TAG: &str = "stock";

pub fn router(pool: PgPool) -> OpenApiRouter {
    OpenApiRouter::new().routes(routes!(all)).routes(routes!(one)).routes(routes!(reservations)).with_state(pool)
}

/// Every SKU's stock, by SKU.
#[utoipa::path(get, path = "/stock", tag = TAG,
    responses((status = 200, description = "Every SKU's stock, by SKU", body = [StockLevel])))]
async fn all(State(pool): State<PgPool>) -> Response {
    match sqlx::query_as::<_, StockLevel>("SELECT sku, on_hand, reserved, received FROM stock ORDER BY sku")
        .fetch_all(&pool)
        .await
    {
        Ok(rows) => Json(rows).into_response(),
        Err(e) => Problem::internal(&e).into_response(),
    }
}

/// One SKU's stock.
#[utoipa::path(get, path = "/stock/{sku}", tag = TAG,
    params(("sku" = String, Path, description = "The SKU, e.g. `SKU-0001`")),
    responses(
        (status = 200, description = "The SKU's stock", body = StockLevel),
        (status = 404, description = "No such SKU", body = Problem, content_type = "application/problem+json"),
    ))]
async fn one(State(pool): State<PgPool>, Path(sku): Path<String>) -> Response {
    match sqlx::query_as::<_, StockLevel>("SELECT sku, on_hand, reserved, received FROM stock WHERE sku = $1")
        .bind(&sku)
        .fetch_optional(&pool)
        .await
    {
        Ok(Some(row)) => Json(row).into_response(),
        Ok(None) => Problem::not_found(format!("no SKU {sku}")).into_response(),
        Err(e) => Problem::internal(&e).into_response(),
    }
}

/// Every reservation line, a page of orders at a time (for the consistency auditor).
#[utoipa::path(get, path = "/reservations", tag = TAG, params(PageQuery),
    responses(
        (status = 200, description = "Every line of the page's orders, by order id and SKU", body = Page<ReservationLine>),
        (status = 400, description = "`after` is not a UUID or `limit` is out of range", body = Problem,
         content_type = "application/problem+json"),
    ))]
async fn reservations(State(pool): State<PgPool>, page: Paged) -> Response {
    let Paged { after, limit } = page;
    let rows = sqlx::query_as::<_, ReservationLine>(
        "WITH o AS (SELECT DISTINCT order_id FROM reservations WHERE $1::uuid IS NULL OR order_id > $1
                    ORDER BY order_id LIMIT $2)
         SELECT r.order_id, r.sku, r.quantity, r.status FROM reservations r JOIN o USING (order_id)
         ORDER BY r.order_id, r.sku",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(&pool)
    .await;
    match rows {
        Ok(items) => {
            let orders = items.iter().map(|r| r.order_id).collect::<std::collections::BTreeSet<_>>();
            let last = orders.last().copied();
            Json(Page::of(items, last, orders.len(), limit)).into_response()
        }
        Err(e) => Problem::internal(&e).into_response(),
    }
}
