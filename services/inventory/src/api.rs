//! Inventory's read-only HTTP: `GET /stock` and `GET /stock/{sku}`, each with its OpenAPI
//! description (served at `/openapi.json`, see `infra::openapi`).

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use infra::http::Problem;
use infra::openapi::OpenApiRouter;
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;
use utoipa_axum::routes;

/// The stock of one SKU.
#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct StockLevel {
    pub sku: String,
    /// Units in the warehouse, reserved ones included.
    pub on_hand: i64,
    /// Units held for running sagas.
    pub reserved: i64,
}

const TAG: &str = "stock";

pub fn router(pool: PgPool) -> OpenApiRouter {
    OpenApiRouter::new().routes(routes!(all)).routes(routes!(one)).with_state(pool)
}

/// Every SKU's stock, by SKU.
#[utoipa::path(get, path = "/stock", tag = TAG,
    responses((status = 200, description = "Every SKU's stock, by SKU", body = [StockLevel])))]
async fn all(State(pool): State<PgPool>) -> Response {
    match sqlx::query_as::<_, StockLevel>("SELECT sku, on_hand, reserved FROM stock ORDER BY sku")
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
    match sqlx::query_as::<_, StockLevel>("SELECT sku, on_hand, reserved FROM stock WHERE sku = $1")
        .bind(&sku)
        .fetch_optional(&pool)
        .await
    {
        Ok(Some(row)) => Json(row).into_response(),
        Ok(None) => Problem::not_found(format!("no SKU {sku}")).into_response(),
        Err(e) => Problem::internal(&e).into_response(),
    }
}
