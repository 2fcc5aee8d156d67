//! Inventory's read-only HTTP: `GET /stock` and `GET /stock/{sku}`.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use infra::http::Problem;
use serde::Serialize;
use sqlx::PgPool;

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct StockLevel {
    pub sku: String,
    pub on_hand: i64,
    pub reserved: i64,
}

pub fn router(pool: PgPool) -> Router {
    Router::new().route("/stock", get(all)).route("/stock/{sku}", get(one)).with_state(pool)
}

async fn all(State(pool): State<PgPool>) -> Response {
    match sqlx::query_as::<_, StockLevel>("SELECT sku, on_hand, reserved FROM stock ORDER BY sku")
        .fetch_all(&pool)
        .await
    {
        Ok(rows) => Json(rows).into_response(),
        Err(e) => Problem::internal(&e).into_response(),
    }
}

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
