//! The operator API, under `/admin` (bearer token from configuration; `401` without a valid one):
//!
//! - dead letters ([`dlq`]): `GET /admin/dlq`, `GET /admin/dlq/{queue}/messages?limit=&offset=`,
//!   `GET /admin/dlq/{queue}/messages/{message_id}`, `POST /admin/dlq/{queue}/replay`,
//!   `POST /admin/dlq/{queue}/discard`;
//! - saga verbs ([`sagas`]): `POST /admin/sagas/{id}/retry`, `POST /admin/sagas/{id}/compensate`,
//!   `POST /admin/sagas/{id}/resolve` (`{"note": "..."}`; `409` where the verb makes no sense);
//! - `GET /admin/audit?limit=&saga_id=`: every operator action, newest first;
//! - `GET /admin/audit/consistency?since=` ([`consistency`]): run the consistency auditor;
//! - `GET /events?after=&limit=` ([`events`]): the event store's global feed.
//!
//! Layout: [`dlq`] (broker access), [`sagas`] (verbs, through the engine), `events` (the feed);
//! the bearer check is [`infra::operators`], the audit trail itself [`crate::audit`]. Each handler
//! carries its OpenAPI description; [`router`] adds what every operator route shares (the bearer
//! scheme, `401`, the names of the dead-letter queues).

mod consistency;
mod dlq;
mod events;
mod sagas;

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use contracts::topology::Topology;
use infra::amqp::{Broker, Publisher};
use infra::http::Problem;
use infra::openapi::{OpenApiRouter, operations_mut};
pub use infra::operators::{Actor, Operator, Operators};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use utoipa::openapi::path::ParameterIn;
use utoipa::openapi::{OpenApi, RefOr, schema::Schema};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;
use uuid::Uuid;

use crate::engine::Engine;

const TAG: &str = "operator";

#[derive(Clone)]
pub struct Admin {
    pub pool: PgPool,
    pub broker: Broker,
    pub publisher: Arc<Publisher>,
    pub topology: Topology,
    pub operators: Operators,
    pub engine: Arc<Engine>,
    pub auditor: crate::auditor::Auditor,
}

pub fn router(admin: Admin) -> OpenApiRouter {
    let queues: Vec<String> = admin.topology.dead_letter_queues().map(|q| q.name.clone()).collect();
    let mut api = OpenApiRouter::new()
        .routes(routes!(dlq::list_queues))
        .routes(routes!(dlq::list_messages))
        .routes(routes!(dlq::one_message))
        .routes(routes!(dlq::replay))
        .routes(routes!(dlq::discard))
        .routes(routes!(sagas::retry))
        .routes(routes!(sagas::compensate))
        .routes(routes!(sagas::resolve))
        .routes(routes!(audit))
        .routes(routes!(consistency::consistency))
        .routes(routes!(events::feed))
        .route_layer(middleware::from_fn_with_state(admin.operators.clone(), infra::operators::authorize))
        .with_state(admin);
    operators_only(api.get_openapi_mut(), &queues);
    sagas::optional_notes(api.get_openapi_mut());
    api
}

/// What [`infra::operators::authorize`] adds to every operator route (the bearer token, and `401`
/// without it), and the dead-letter queues a `{queue}` may name.
fn operators_only(doc: &mut OpenApi, queues: &[String]) {
    infra::operators::document(doc, "ORCHESTRATOR_ADMIN_TOKENS");
    for operation in operations_mut(doc) {
        let queue_parameters = operation.parameters.iter_mut().flatten();
        for parameter in queue_parameters.filter(|p| p.name == "queue" && matches!(p.parameter_in, ParameterIn::Path)) {
            if let Some(RefOr::T(Schema::Object(schema))) = parameter.schema.as_mut() {
                schema.enum_values = Some(queues.iter().map(|q| Value::from(q.as_str())).collect());
            }
        }
    }
}

/// The query of `GET /admin/audit`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    /// Actions per answer, newest first.
    #[param(minimum = 1, maximum = 500, default = 50)]
    limit: Option<i64>,
    /// Only the actions about this saga.
    saga_id: Option<Uuid>,
}

/// The answer of `GET /admin/audit`.
#[derive(Debug, Serialize, ToSchema)]
struct AuditPage {
    items: Vec<crate::audit::Row>,
}

/// Every operator action (replay, discard, and the saga verbs), newest first.
#[utoipa::path(get, path = "/admin/audit", tag = TAG,
    params(AuditQuery),
    responses(
        (status = 200, description = "The newest actions, newest first", body = AuditPage),
        (status = 400, description = "`limit` is not 1-500, or `saga_id` not a UUID", body = Problem,
         content_type = "application/problem+json"),
    ))]
async fn audit(State(admin): State<Admin>, q: Result<Query<AuditQuery>, QueryRejection>) -> Response {
    let Ok(Query(q)) = q else {
        return Problem::bad_request("limit must be a number and saga_id a UUID").into_response();
    };
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Problem::bad_request("limit must be between 1 and 500").into_response();
    }
    match crate::audit::list(&admin.pool, q.saga_id, limit).await {
        Ok(items) => Json(AuditPage { items }).into_response(),
        Err(e) => Problem::internal(&e).into_response(),
    }
}
