//! The orchestrator's HTTP API (axum): `POST /orders`, `GET /sagas/{id}`,
//! `GET /sagas?status=&incident=`. Errors are `application/problem+json`; a client mistake is
//! always a 4xx.

use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use contracts::order::OrderRequest;
use infra::http::{ApiJson, Problem};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::engine::{Engine, EngineError};
use crate::kernel::{SagaDefinition, SagaState, SagaStatus};
use crate::sagas::order::OrderSaga;
use crate::store::{self, EventView, ListFilter, SagaView};
use crate::validate::{self, Limits};

pub fn router(engine: Arc<Engine>) -> Router {
    let body_limit = engine.settings.max_body_bytes;
    Router::new()
        .route("/orders", post(submit_order))
        .route("/sagas", get(list_sagas))
        .route("/sagas/{id}", get(get_saga))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(engine)
}

/// `POST /orders`: validate, start the saga, answer `202` with its id and `Location`.
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
            let mut response =
                (StatusCode::ACCEPTED, Json(json!({"saga_id": started.saga_id, "status": started.status})))
                    .into_response();
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
        Err(e) => Problem::internal(&e).into_response(),
    }
}

/// `GET /sagas/{id}`: where the saga is and how it got there.
async fn get_saga(State(engine): State<Arc<Engine>>, id: Result<Path<Uuid>, PathRejection>) -> Response {
    let Ok(Path(id)) = id else {
        return Problem::bad_request("the saga id must be a UUID").into_response();
    };
    let saga = match store::get(&engine.pool, id).await {
        Ok(Some(s)) => s,
        Ok(None) => return Problem::not_found(format!("no saga {id}")).into_response(),
        Err(e) => return Problem::internal(&e).into_response(),
    };
    let timeline = match store::timeline(&engine.pool, id).await {
        Ok(t) => t,
        Err(e) => return Problem::internal(&e).into_response(),
    };
    let mut body = summary(&saga);
    if let Value::Object(map) = &mut body {
        map.insert("order".into(), saga.data.clone());
        map.insert("version".into(), json!(saga.version));
        map.insert("timeline".into(), Value::Array(timeline.iter().map(event_json).collect()));
    }
    Json(body).into_response()
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    status: Option<String>,
    incident: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

/// `GET /sagas?status=RUNNING&incident=true&limit=50&cursor=...`: oldest first, paged.
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
            let items: Vec<Value> = rows.iter().map(summary).collect();
            Json(json!({"items": items, "next": next})).into_response()
        }
        Err(e) => Problem::internal(&e).into_response(),
    }
}

/// The fields both the list and the detail show.
fn summary(s: &SagaView) -> Value {
    let state: Option<SagaState> = serde_json::from_value(s.state.clone()).ok();
    let def = u32::try_from(s.definition_version).ok().and_then(|v| OrderSaga::find(&s.definition, v));
    let kinds = def.map(|d| d.steps()).unwrap_or_default();
    let steps: Vec<Value> = state
        .as_ref()
        .map(|st| {
            st.steps
                .iter()
                .map(|r| {
                    let kind = kinds.iter().find(|d| d.name == r.name).map(|d| d.kind.as_str());
                    json!({
                        "name": r.name,
                        "kind": kind,
                        "status": r.status,
                        "attempts": r.attempts,
                        "compensation_attempts": r.compensation_attempts,
                        "reason": r.reason,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let incident = state
        .as_ref()
        .and_then(|st| st.incident.as_ref())
        .map(|i| json!({"step": i.step, "reason": i.reason, "since": s.incident_since, "dead_letter": i.dead_letter}));
    json!({
        "saga_id": s.id,
        "definition": s.definition,
        "definition_version": s.definition_version,
        "status": s.status,
        "current_step": s.current_step,
        "deadline": s.deadline,
        "attempts": s.attempt,
        "failure_reason": s.failure_reason,
        "attention": s.attention,
        "incident": incident,
        "created_at": s.created_at,
        "updated_at": s.updated_at,
        "finished_at": s.finished_at,
        "steps": steps,
    })
}

fn event_json(e: &EventView) -> Value {
    let caused_by = e.cause_message_id.map(|id| json!({"message_id": id, "type": e.cause_type}));
    json!({
        "at": e.at,
        "kind": e.kind,
        "status": e.status,
        "step": e.step,
        "note": e.note,
        "caused_by": caused_by,
        "sent": e.sent,
    })
}
