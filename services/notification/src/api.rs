//! Notification's read-only HTTP: `GET /notifications?order_id=<uuid>`, oldest first, with its
//! OpenAPI description (served at `/openapi.json`, see `infra::openapi`).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use infra::http::Problem;
use infra::openapi::OpenApiRouter;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;
use uuid::Uuid;

/// What the customer was told about an order.
#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct Notification {
    pub order_id: Uuid,
    /// `confirmation`, `cancellation` or `failure`.
    #[schema(pattern = "^(confirmation|cancellation|failure)$")]
    pub kind: String,
    pub customer_id: String,
    pub message: String,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ByOrder {
    /// The order's id (its saga id).
    order_id: Uuid,
}

pub fn router(pool: PgPool) -> OpenApiRouter {
    OpenApiRouter::new().routes(routes!(by_order)).with_state(pool)
}

/// The notifications of one order, oldest first.
#[utoipa::path(get, path = "/notifications", tag = "notifications",
    params(ByOrder),
    responses(
        (status = 200, description = "The order's notifications, oldest first (none: `[]`)", body = [Notification]),
        (status = 400, description = "`order_id` is missing or not a UUID", body = Problem, content_type = "application/problem+json"),
    ))]
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
