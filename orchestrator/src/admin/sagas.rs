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
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::{OpenApi, Required};
use uuid::Uuid;

use super::{Actor, Admin, TAG};
use crate::api::IncidentView;
use crate::engine::EngineError;
use crate::kernel::{SagaStatus, Verb};
use crate::openapi::SagaStatusName;

/// Longest operator note.
const MAX_NOTE: usize = 2000;

/// The body of a verb (optional for `retry` and `compensate`: no body, or `{}`, is no note).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct VerbBody {
    /// Why, or what was done by hand; audited and written to the saga's timeline.
    #[serde(default)]
    #[schema(max_length = 2000, pattern = r"^[^\u0000]*$")]
    note: String,
}

/// The body of `resolve`: the note is required.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct ResolveBody {
    /// What was done by hand; audited and written to the saga's timeline.
    #[schema(
        max_length = 2000,
        pattern = r"^[^\u0000]*[^\u0000\u0009-\u000d\u0085\u0020\u00a0\u1680\u2000-\u200a\u2028-\u2029\u202f\u205f\u3000][^\u0000]*$"
    )]
    note: String,
}

/// What a verb did.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct VerbApplied {
    saga_id: Uuid,
    /// `retry`, `compensate` or `resolve`.
    verb: &'static str,
    /// The saga's status now.
    #[schema(value_type = SagaStatusName)]
    status: SagaStatus,
    current_step: Option<String>,
    /// The incident still open, if any.
    incident: Option<IncidentView>,
}

/// In `doc`, the bodies of `retry` and `compensate` are optional (no body, or only whitespace, is
/// no note).
pub(super) fn optional_notes(doc: &mut OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        if !(path.ends_with("/retry") || path.ends_with("/compensate")) {
            continue;
        }
        if let Some(body) = item.post.as_mut().and_then(|o| o.request_body.as_mut()) {
            body.required = Some(Required::False);
        }
    }
}

/// Send the awaited command (or compensation) again now, in a fresh round of attempts, and close
/// the incident.
#[utoipa::path(post, path = "/admin/sagas/{id}/retry", tag = TAG,
    params(("id" = Uuid, Path, description = "The saga's id")),
    request_body(content = VerbBody, content_type = "application/json", description = "Optional: a note"),
    responses(
        (status = 200, description = "Applied", body = VerbApplied),
        (status = 400, description = "The id is not a UUID, or the body is not `{\"note\": \"...\"}`", body = Problem,
         content_type = "application/problem+json"),
        (status = 404, description = "No such saga", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The saga is finished, or its definition is unknown here", body = Problem,
         content_type = "application/problem+json"),
    ))]
pub(super) async fn retry(
    s: State<Admin>,
    a: Extension<Actor>,
    id: Result<Path<Uuid>, PathRejection>,
    b: Bytes,
) -> Response {
    act(s, a, id, b, Verb::Retry).await
}

/// Give up a saga that has not passed its pivot: the awaited step is compensated first, then the
/// completed steps in reverse; it ends `COMPENSATED`.
#[utoipa::path(post, path = "/admin/sagas/{id}/compensate", tag = TAG,
    params(("id" = Uuid, Path, description = "The saga's id")),
    request_body(content = VerbBody, content_type = "application/json", description = "Optional: a note"),
    responses(
        (status = 200, description = "Applied", body = VerbApplied),
        (status = 400, description = "The id is not a UUID, or the body is not `{\"note\": \"...\"}`", body = Problem,
         content_type = "application/problem+json"),
        (status = 404, description = "No such saga", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The pivot succeeded, the saga is compensating or finished, or its version \
                                      cannot cancel its pivot", body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn compensate(
    s: State<Admin>,
    a: Extension<Actor>,
    id: Result<Path<Uuid>, PathRejection>,
    b: Bytes,
) -> Response {
    act(s, a, id, b, Verb::Compensate).await
}

/// After fixing by hand: close an incident (the step counts as done and the saga goes on), or end
/// a `FAILED` saga `COMPENSATED`.
#[utoipa::path(post, path = "/admin/sagas/{id}/resolve", tag = TAG,
    params(("id" = Uuid, Path, description = "The saga's id")),
    request_body(content = ResolveBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Applied", body = VerbApplied),
        (status = 400, description = "The id is not a UUID, or the body is not `{\"note\": \"...\"}` with a note",
         body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such saga", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "No open incident, and not `FAILED`", body = Problem,
         content_type = "application/problem+json"),
    ))]
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
    // PostgreSQL text cannot hold it: refused here rather than failing the verb's transaction.
    if note.contains('\0') {
        return Err(Problem::bad_request("the note must not contain NUL (U+0000)"));
    }
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
        Ok(state) => Json(VerbApplied {
            saga_id: id,
            verb: verb.as_str(),
            status: state.status,
            current_step: state.current_step_name().map(str::to_owned),
            incident: state.incident.as_ref().map(|i| IncidentView::from_kernel(i, None)),
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::PartialSchema;

    #[test]
    fn the_resolve_note_pattern_is_not_blank_and_free_of_nul() {
        let schema = serde_json::to_value(ResolveBody::schema()).expect("a schema");
        assert_eq!(schema["properties"]["note"]["pattern"], crate::openapi::not_blank());
    }

    #[test]
    fn a_note_is_optional_trimmed_bounded_and_free_of_nul() {
        assert_eq!(note(b"").ok(), Some(String::new()));
        assert_eq!(note(b" {\"note\": \" gateway fixed \"} ").ok(), Some("gateway fixed".into()));
        assert!(note(b"null").is_err());
        assert!(note(b"{\"note\": \"a\\u0000b\"}").is_err());
        assert!(note(format!("{{\"note\": \"{}\"}}", "x".repeat(MAX_NOTE + 1)).as_bytes()).is_err());
    }
}
