//! The operator's verbs on one saga: `POST /admin/sagas/{id}/retry`, `/compensate`, `/resolve`,
//! each with an optional JSON body `{"note": "..."}` (required, and not blank, for `resolve`).
//! `200` with the saga's new status; `404` for no such saga; `409` problem+json where the verb
//! makes no sense for the saga as it is (the detail says why). Applied verbs are audited and
//! written to the saga's timeline by the engine.

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use infra::http::Problem;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::{Actor, Admin};
use crate::engine::EngineError;
use crate::kernel::Verb;

/// Longest operator note.
const MAX_NOTE: usize = 2000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerbBody {
    #[serde(default)]
    note: String,
}

pub(super) async fn retry(
    s: State<Admin>,
    a: Extension<Actor>,
    id: Result<Path<Uuid>, PathRejection>,
    b: Bytes,
) -> Response {
    act(s, a, id, b, Verb::Retry).await
}

pub(super) async fn compensate(
    s: State<Admin>,
    a: Extension<Actor>,
    id: Result<Path<Uuid>, PathRejection>,
    b: Bytes,
) -> Response {
    act(s, a, id, b, Verb::Compensate).await
}

pub(super) async fn resolve(
    s: State<Admin>,
    a: Extension<Actor>,
    id: Result<Path<Uuid>, PathRejection>,
    b: Bytes,
) -> Response {
    act(s, a, id, b, Verb::Resolve).await
}

/// The note of a verb's body: empty body or `{}` is no note.
fn note(body: &[u8]) -> Result<String, Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(String::new());
    }
    let VerbBody { note } = serde_json::from_slice(body)
        .map_err(|e| Problem::bad_request(format!("the body must be {{\"note\": \"...\"}}: {e}")))?;
    let note = note.trim().to_owned();
    if note.chars().count() > MAX_NOTE {
        return Err(Problem::bad_request(format!("the note must be at most {MAX_NOTE} characters")));
    }
    Ok(note)
}

async fn act(
    State(admin): State<Admin>,
    Extension(Actor(actor)): Extension<Actor>,
    id: Result<Path<Uuid>, PathRejection>,
    body: Bytes,
    verb: Verb,
) -> Response {
    let Ok(Path(id)) = id else { return Problem::bad_request("the saga id must be a UUID").into_response() };
    let note = match note(&body) {
        Ok(n) => n,
        Err(p) => return p.into_response(),
    };
    if verb == Verb::Resolve && note.is_empty() {
        return Problem::bad_request("resolve needs a `note`: what was done by hand").into_response();
    }
    match admin.engine.operate(id, verb, &actor, &note).await {
        Ok(state) => Json(json!({
            "saga_id": id,
            "verb": verb.as_str(),
            "status": state.status,
            "current_step": state.current_step_name(),
            "incident": state.incident,
        }))
        .into_response(),
        Err(EngineError::UnknownSaga(_)) => Problem::not_found(format!("no saga {id}")).into_response(),
        Err(EngineError::Refused(why)) => {
            Problem::new(StatusCode::CONFLICT, "verb-not-applicable", "The saga's state does not allow this")
                .detail(why)
                .into_response()
        }
        Err(e) => Problem::internal(&e).into_response(),
    }
}
