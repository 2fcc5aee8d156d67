//! The orchestrator's HTTP API (axum): `POST /orders`, `GET /sagas/{id}` (with `?at=`: as it was
//! then, folded from its events), `GET /sagas?status=&incident=`. Errors are `application/problem+json`; a client mistake is
//! always a 4xx. Each handler carries its OpenAPI description (`#[utoipa::path]`), registered with
//! it by `routes!`; the answers are typed, so their schemas are the ones serialized.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use contracts::order::OrderRequest;
use infra::http::{ApiJson, Problem};
use infra::openapi::OpenApiRouter;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;
use uuid::Uuid;

use crate::engine::{Engine, EngineError};
use crate::history;
use crate::kernel::{Incident, SagaDefinition, SagaState, SagaStatus, StepStatus};
use crate::openapi::{SagaStatusName, StepKindName, StepStatusName};
use crate::sagas::order::OrderSaga;
use crate::store::{self, EventView, ListFilter, SagaView, StoreError};
use crate::validate::{self, Limits};

const TAG_ORDERS: &str = "orders";
const TAG_SAGAS: &str = "sagas";

pub fn router(engine: Arc<Engine>) -> OpenApiRouter {
    let body_limit = engine.settings.max_body_bytes;
    let limits = Limits { max_items: engine.settings.max_items };
    let mut api = OpenApiRouter::new()
        .routes(routes!(submit_order))
        .routes(routes!(list_sagas))
        .routes(routes!(get_saga))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(engine);
    crate::openapi::order_rules(api.get_openapi_mut(), limits);
    api
}

/// The answer to `POST /orders`.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderAccepted {
    pub saga_id: Uuid,
    #[schema(value_type = SagaStatusName)]
    pub status: String,
}

/// Submit an order: validate it, start its saga, answer `202` with the saga's id and `Location`.
#[utoipa::path(post, path = "/orders", tag = TAG_ORDERS,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$",
            description = "1-255 visible ASCII characters. The same key with the same order answers the \
                           saga it started (`Idempotent-Replayed: true`); with another order, `422`.")),
    request_body(content = OrderRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "The saga started (or, for a repeated Idempotency-Key, had started)",
         body = OrderAccepted,
         headers(("Location" = String, description = "`/sagas/<saga_id>`"),
                 ("Idempotent-Replayed" = String, description = "`true` when the Idempotency-Key named an existing saga"))),
        (status = 400, description = "Malformed JSON, or an Idempotency-Key that is not 1-255 visible ASCII characters",
         body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than `ORCHESTRATOR_MAX_BODY_BYTES`",
         body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not `application/json`", body = Problem,
         content_type = "application/problem+json"),
        (status = 422, description = "The body does not match the schema, breaks a rule (`errors` names each \
                                      field), or reuses an Idempotency-Key of another order",
         body = Problem, content_type = "application/problem+json"),
    ))]
async fn submit_order(State(engine): State<Arc<Engine>>, headers: HeaderMap, body: ApiJson<OrderRequest>) -> Response {
    let ApiJson(order) = body;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => match v.to_str() {
            Ok(k) => match validate::idempotency_key(k) {
                Ok(()) => Some(k.to_owned()),
                Err(msg) => return Problem::bad_request(msg).into_response(),
            },
            Err(_) => return Problem::bad_request("Idempotency-Key must be visible ASCII characters").into_response(),
        },
    };
    let errors = validate::order(&order, Limits { max_items: engine.settings.max_items });
    if !errors.is_empty() {
        return Problem::validation(errors).into_response();
    }
    match engine.start(&order, key.as_deref()).await {
        Ok(started) => {
            let location = format!("/sagas/{}", started.saga_id);
            let accepted = OrderAccepted { saga_id: started.saga_id, status: started.status };
            let mut response = (StatusCode::ACCEPTED, Json(accepted)).into_response();
            if let Ok(v) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, v);
            }
            if !started.created {
                response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
            }
            response
        }
        Err(EngineError::KeyConflict(id)) => {
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "idempotency-key-reused", "Idempotency-Key reused")
                .detail(format!("this Idempotency-Key was already used for saga {id} with a different order"))
                .into_response()
        }
        Err(e) => engine_problem(e).into_response(),
    }
}

/// The answer to an engine error: a database that cannot be reached is `503` with `Retry-After`.
fn engine_problem(e: EngineError) -> Problem {
    match e {
        EngineError::Store(StoreError::Db(db)) => Problem::from(db),
        other => Problem::internal(&other),
    }
}

/// The query of `GET /sagas/{id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SagaQuery {
    /// Time travel: the saga as it was at this moment (RFC 3339, e.g. `2026-12-01T14:00:00Z`),
    /// folded from its events recorded by then.
    #[param(value_type = Option<String>, format = DateTime)]
    at: Option<String>,
}

/// One saga: where it is, and how it got there; with `?at=`, where it was then.
#[utoipa::path(get, path = "/sagas/{id}", tag = TAG_SAGAS,
    params(("id" = Uuid, Path, description = "The saga's id"), SagaQuery),
    responses(
        (status = 200, description = "The saga (as of `at`, when given)", body = SagaDetail),
        (status = 400, description = "The id is not a UUID, or `at` not an RFC 3339 time", body = Problem,
         content_type = "application/problem+json"),
        (status = 404, description = "No such saga (at `at`: it had not started yet)", body = Problem,
         content_type = "application/problem+json"),
        (status = 409, description = "`at` is before the event store recorded the saga's history", body = Problem,
         content_type = "application/problem+json"),
    ))]
async fn get_saga(
    State(engine): State<Arc<Engine>>,
    id: Result<Path<Uuid>, PathRejection>,
    query: Result<Query<SagaQuery>, QueryRejection>,
) -> Response {
    let Ok(Path(id)) = id else {
        return Problem::bad_request("the saga id must be a UUID").into_response();
    };
    let Ok(Query(q)) = query else {
        return Problem::bad_request("at must be an RFC 3339 time").into_response();
    };
    if let Some(at) = q.at.as_deref() {
        return match DateTime::parse_from_rfc3339(at) {
            Ok(at) => as_of(&engine, id, at.with_timezone(&Utc)).await,
            Err(_) => Problem::bad_request("at must be an RFC 3339 time, e.g. 2026-12-01T14:00:00Z").into_response(),
        };
    }
    let saga = match store::get(&engine.pool, id).await {
        Ok(Some(s)) => s,
        Ok(None) => return Problem::not_found(format!("no saga {id}")).into_response(),
        Err(e) => return Problem::from(e).into_response(),
    };
    let timeline = match store::timeline(&engine.pool, id, None).await {
        Ok(t) => t,
        Err(e) => return Problem::from(e).into_response(),
    };
    let detail = SagaDetail {
        summary: summary(&saga),
        order: saga.data.clone(),
        version: saga.version,
        as_of: None,
        timeline: timeline.iter().map(timeline_entry).collect(),
    };
    Json(detail).into_response()
}

/// `GET /sagas/{id}?at=`: the saga folded from the events recorded by `at`.
async fn as_of(engine: &Engine, id: Uuid, at: DateTime<Utc>) -> Response {
    let read = async {
        let rows = history::feed::stream_until(&engine.pool, id, at).await?;
        let timeline = store::timeline(&engine.pool, id, Some(at)).await?;
        Ok::<_, sqlx::Error>((rows, timeline))
    };
    let (rows, timeline) = match read.await {
        Ok(read) => read,
        Err(e) => return Problem::from(e).into_response(),
    };
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return Problem::not_found(format!("saga {id} had not started at {at}")).into_response();
    };
    let stored: Vec<_> = rows.iter().map(|r| r.stored()).collect();
    let started = match history::upcast::upcast(&first.event_type, first.schema_version, first.payload.clone())
        .map_err(|e| e.to_string())
        .and_then(|(_, p)| serde_json::from_value::<history::Started>(p).map_err(|e| e.to_string()))
    {
        Ok(started) => started,
        Err(why) => {
            return Problem::new(StatusCode::CONFLICT, "history-unreadable", "The saga's history cannot be folded")
                .detail(format!("its first event does not record its start: {why}"))
                .into_response();
        }
    };
    let (name, version) = (started.definition.as_str(), started.definition_version);
    let folded = history::fold::order_of(name, version, &started.order)
        .and_then(|order| history::fold(name, version, id, order.as_ref(), None, &stored));
    let state = match folded {
        Ok(Some(state)) => state,
        Ok(None) => return Problem::not_found(format!("saga {id} had not started at {at}")).into_response(),
        Err(e) => {
            return Problem::new(StatusCode::CONFLICT, "history-unreadable", "The saga's history cannot be folded")
                .detail(format!("as of {at}: {e}"))
                .into_response();
        }
    };
    let view = SagaView {
        id,
        definition: started.definition.clone(),
        definition_version: i32::try_from(version).unwrap_or(i32::MAX),
        status: state.status.as_str().to_owned(),
        current_step: state.current_step_name().map(str::to_owned),
        state: serde_json::to_value(&state).unwrap_or(Value::Null),
        data: started.order.clone(),
        version: last.version,
        deadline: None,
        attempt: i32::try_from(state.attempt).unwrap_or(i32::MAX),
        failure_reason: state.failure_reason.clone(),
        attention: None,
        incident_since: None,
        created_at: first.at,
        updated_at: last.at,
        finished_at: state.status.is_terminal().then_some(last.at),
        tail: Value::Array(Vec::new()),
    };
    let detail = SagaDetail {
        summary: summary(&view),
        order: started.order,
        version: last.version,
        as_of: Some(at),
        timeline: timeline.iter().map(timeline_entry).collect(),
    };
    Json(detail).into_response()
}

/// The query of `GET /sagas`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only sagas with this status.
    #[param(value_type = Option<SagaStatusName>)]
    status: Option<String>,
    /// `true`: only sagas with an open incident; `false`: only those without.
    #[param(value_type = Option<bool>)]
    incident: Option<String>,
    /// Sagas per page.
    #[param(minimum = 1, maximum = 500, default = 50)]
    limit: Option<i64>,
    /// Where the page starts: the `next` of the page before (empty: the first page).
    #[param(pattern = "^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$")]
    cursor: Option<String>,
}

/// Sagas, oldest first, a page at a time, optionally by status and by whether an incident is open.
#[utoipa::path(get, path = "/sagas", tag = TAG_SAGAS,
    params(ListQuery),
    responses(
        (status = 200, description = "A page of sagas; `next` is the cursor of the next page, `null` on the last",
         body = SagaPage),
        (status = 400, description = "A query parameter is not valid", body = Problem,
         content_type = "application/problem+json"),
    ))]
async fn list_sagas(State(engine): State<Arc<Engine>>, query: Result<Query<ListQuery>, QueryRejection>) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return Problem::bad_request(e.body_text()).into_response(),
    };
    let status = match q.status.as_deref().map(str::parse::<SagaStatus>) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(_)) => {
            return Problem::bad_request("status must be one of RUNNING, COMPENSATING, COMPLETED, COMPENSATED, FAILED")
                .into_response();
        }
    };
    let incident = match q.incident.as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Problem::bad_request("incident must be true or false").into_response(),
    };
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Problem::bad_request("limit must be between 1 and 500").into_response();
    }
    let after = match q.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => match Uuid::parse_str(c) {
            Ok(id) => Some(id),
            Err(_) => return Problem::bad_request("cursor is not one this API handed out").into_response(),
        },
    };
    let filter = ListFilter { status: status.map(SagaStatus::as_str), incident };
    match store::list(&engine.pool, filter, after, limit + 1).await {
        Ok(mut rows) => {
            let next = if rows.len() as i64 > limit {
                rows.truncate(limit as usize);
                rows.last().map(|r| r.id.to_string())
            } else {
                None
            };
            Json(SagaPage { items: rows.iter().map(summary).collect(), next }).into_response()
        }
        Err(e) => Problem::from(e).into_response(),
    }
}

/// A page of `GET /sagas`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SagaPage {
    pub items: Vec<SagaSummary>,
    /// The `cursor` of the next page; `null` on the last.
    pub next: Option<String>,
}

/// What both the list and the detail show of a saga.
#[derive(Debug, Serialize, ToSchema)]
pub struct SagaSummary {
    pub saga_id: Uuid,
    /// The saga definition's name, e.g. `order`.
    pub definition: String,
    /// The definition version it started on, and runs to its end on.
    pub definition_version: i32,
    #[schema(value_type = SagaStatusName)]
    pub status: String,
    /// The step awaited or being compensated.
    pub current_step: Option<String>,
    /// When the awaited answer is due; `null` while nothing is awaited.
    pub deadline: Option<DateTime<Utc>>,
    /// Sends so far of the awaited command in the current round.
    pub attempts: i32,
    pub failure_reason: Option<String>,
    /// Why it is waiting, if it is (a dead-lettered command, an open breaker).
    pub attention: Option<String>,
    /// The open incident, if any.
    pub incident: Option<IncidentView>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub steps: Vec<StepView>,
}

/// One step of a saga.
#[derive(Debug, Serialize, ToSchema)]
pub struct StepView {
    pub name: String,
    /// `null` if this orchestrator does not know the saga's definition version.
    #[schema(value_type = Option<StepKindName>)]
    pub kind: Option<&'static str>,
    #[schema(value_type = StepStatusName)]
    pub status: StepStatus,
    pub attempts: u32,
    pub compensation_attempts: u32,
    pub reason: Option<String>,
}

/// An incident: the saga waits for an operator.
#[derive(Debug, Serialize, ToSchema)]
pub struct IncidentView {
    pub step: String,
    pub reason: String,
    pub since: Option<DateTime<Utc>>,
    /// The dead-lettered command that opened it, if one did.
    pub dead_letter: Option<DeadLetterView>,
}

impl IncidentView {
    pub fn from_kernel(i: &Incident, since: Option<DateTime<Utc>>) -> IncidentView {
        IncidentView {
            step: i.step.clone(),
            reason: i.reason.clone(),
            since,
            dead_letter: i.dead_letter.as_ref().map(|d| DeadLetterView {
                queue: d.queue.clone(),
                message_id: d.message_id,
                message_type: d.message_type.clone(),
                reason: d.reason.clone(),
            }),
        }
    }
}

/// A command in a dead-letter queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterView {
    /// The dead-letter queue, e.g. `payment.commands.dlq`.
    pub queue: String,
    pub message_id: Uuid,
    pub message_type: String,
    /// The transport's reason code, e.g. `retries_exhausted`.
    pub reason: String,
}

/// `GET /sagas/{id}`: the summary, the order, and the timeline.
#[derive(Debug, Serialize, ToSchema)]
pub struct SagaDetail {
    #[serde(flatten)]
    pub summary: SagaSummary,
    /// The order as submitted.
    #[schema(value_type = Object)]
    pub order: Value,
    /// The saga's stream version: how many events it has (had, as of `as_of`).
    pub version: i64,
    /// With `?at=`: the moment this answer describes (no deadline or attention then: those are
    /// not part of the history).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of: Option<DateTime<Utc>>,
    /// Oldest first.
    pub timeline: Vec<TimelineEntry>,
}

/// One entry of a saga's timeline: one event of its stream.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineEntry {
    /// The event's version in the saga's stream (1 for its start).
    pub version: i64,
    /// The event's type, e.g. `saga.started`, `reply.received`, `deadline.passed`.
    pub event_type: String,
    pub at: DateTime<Utc>,
    /// What happened, e.g. `started`, `reply`, `timeout`, `operator`.
    pub kind: String,
    /// The saga's status after it.
    pub status: String,
    pub step: Option<String>,
    pub note: String,
    /// The message that caused it, if one did.
    pub caused_by: Option<CausedBy>,
    /// The messages it sent.
    #[schema(value_type = Vec<SentMessage>)]
    pub sent: Value,
}

/// The message a timeline entry answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct CausedBy {
    pub message_id: Uuid,
    #[serde(rename = "type")]
    pub message_type: Option<String>,
}

/// A message a timeline entry sent (its schema only: the entries are stored as JSON).
#[derive(Debug, Serialize, ToSchema)]
pub struct SentMessage {
    pub message_id: Uuid,
    /// The message type, e.g. `payment.authorize` or `order.completed`.
    #[serde(rename = "type")]
    pub message_type: String,
    /// Commands only: which send of it this is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
}

/// The saga's state now: its snapshot with the events after it folded; `None` if that cannot be
/// read (the saga is then shown without its steps).
fn current_state(s: &SagaView) -> Option<SagaState> {
    let snapshot: SagaState = serde_json::from_value(s.state.clone()).ok()?;
    let tail: Vec<history::Stored> = serde_json::from_value(s.tail.clone()).ok()?;
    if tail.is_empty() {
        return Some(snapshot);
    }
    let version = u32::try_from(s.definition_version).ok()?;
    let order = history::fold::order_of(&s.definition, version, &s.data).ok()?;
    history::fold(&s.definition, version, s.id, order.as_ref(), Some(snapshot), &tail).ok().flatten()
}

fn summary(s: &SagaView) -> SagaSummary {
    let state = current_state(s);
    let def = u32::try_from(s.definition_version).ok().and_then(|v| OrderSaga::find(&s.definition, v));
    let kinds = def.map(|d| d.steps()).unwrap_or_default();
    let steps = state
        .as_ref()
        .map(|st| {
            st.steps
                .iter()
                .map(|r| StepView {
                    name: r.name.clone(),
                    kind: kinds.iter().find(|d| d.name == r.name).map(|d| d.kind.as_str()),
                    status: r.status,
                    attempts: r.attempts,
                    compensation_attempts: r.compensation_attempts,
                    reason: r.reason.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    let incident =
        state.as_ref().and_then(|st| st.incident.as_ref()).map(|i| IncidentView::from_kernel(i, s.incident_since));
    SagaSummary {
        saga_id: s.id,
        definition: s.definition.clone(),
        definition_version: s.definition_version,
        status: s.status.clone(),
        current_step: s.current_step.clone(),
        deadline: s.deadline,
        attempts: s.attempt,
        failure_reason: s.failure_reason.clone(),
        attention: s.attention.clone(),
        incident,
        created_at: s.created_at,
        updated_at: s.updated_at,
        finished_at: s.finished_at,
        steps,
    }
}

fn timeline_entry(e: &EventView) -> TimelineEntry {
    TimelineEntry {
        version: e.version,
        event_type: e.event_type.clone(),
        at: e.at,
        kind: e.kind.clone(),
        status: e.status.clone(),
        step: e.step.clone(),
        note: e.note.clone(),
        caused_by: e.cause_message_id.map(|id| CausedBy { message_id: id, message_type: e.cause_type.clone() }),
        sent: e.sent.clone(),
    }
}
