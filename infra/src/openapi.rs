//! OpenAPI documents. Every process serves `GET /openapi.json`: the OpenAPI 3.1 document of its
//! own routes, generated from the [`OpenApiRouter`] that routes them. utoipa-axum's `routes!`
//! registers a handler together with its `#[utoipa::path]` description, so the router and the
//! document are one value until [`split`] takes them apart: a route cannot be served undocumented,
//! nor documented and not served (the workspace's `clippy.toml` forbids `OpenApiRouter`'s
//! undocumented pass-throughs such as `route`).
//!
//! On top of what each route says, [`split`] adds what the layers every route runs under answer
//! ([`crate::http::limited`]): `413` (body too large), `503` (timed out), `500`, and `400` for a
//! path parameter that cannot be read, all as [`Problem`]s.

use axum::body::Bytes;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::{Content, Info, OpenApi, Ref, RefOr, ResponseBuilder};
use utoipa::{PartialSchema, ToSchema};
pub use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::{FieldError, PROBLEM_JSON, Problem, TAG_OPERATIONS};

/// Where every process serves its document.
pub const OPENAPI_PATH: &str = "/openapi.json";

/// The serialized document, shared by every request for it.
#[derive(Clone)]
struct Document(Bytes);

/// The OpenAPI 3.1 document of this process: every route it serves, with its parameters, bodies
/// and answers.
#[utoipa::path(get, path = "/openapi.json", tag = TAG_OPERATIONS,
    responses((status = 200, description = "This document (OpenAPI 3.1)", body = Object,
               content_type = "application/json")))]
async fn openapi_json(Extension(Document(json)): Extension<Document>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], json).into_response()
}

/// The router of `api` plus `GET /openapi.json`, which answers the document of both.
pub fn documented(api: OpenApiRouter, service: &str) -> Result<Router, serde_json::Error> {
    let (router, doc) = split(api, service);
    let json = Bytes::from(doc.to_json()?);
    Ok(router.layer(Extension(Document(json))))
}

/// The router of `api` with the `GET /openapi.json` route, and the complete document: `api`'s
/// own, titled for `service`, with [`OPENAPI_PATH`] and the answers every route may give.
/// `GET /openapi.json` answers only once the router has the document as an extension (see
/// [`documented`]).
pub fn split(api: OpenApiRouter, service: &str) -> (Router, OpenApi) {
    let (router, mut doc) = api.routes(routes!(openapi_json)).split_for_parts();
    doc.info = Info::builder()
        .title(format!("saga platform: {service}"))
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(format!(
            "The HTTP API of the {service} process. Errors are `application/problem+json` \
             (RFC 9457)."
        )))
        .build();
    add_common_answers(&mut doc);
    (router, doc)
}

/// Every operation of `doc`, mutably.
pub fn operations_mut(doc: &mut OpenApi) -> impl Iterator<Item = &mut Operation> {
    doc.paths.paths.values_mut().flat_map(path_operations_mut)
}

fn path_operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// The answers the layers around every route give, on every operation; and `400` on those with a
/// path parameter (axum refuses one that is not valid UTF-8 once percent-decoded).
fn add_common_answers(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.schemas.insert(Problem::name().into_owned(), Problem::schema());
    components.schemas.insert(FieldError::name().into_owned(), FieldError::schema());
    for operation in operations_mut(doc) {
        let has_path_parameter =
            operation.parameters.iter().flatten().any(|p| matches!(p.parameter_in, ParameterIn::Path));
        if has_path_parameter {
            may_answer_problem(operation, 400, "A path parameter cannot be read");
        }
        may_answer_problem(operation, 413, "The body is larger than this endpoint accepts");
        may_answer_problem(operation, 500, "The server failed; the cause is logged, not sent");
        may_answer_problem(
            operation,
            503,
            "Timed out (`urn:saga:problem:timeout`): the request did not complete within \
             `HTTP_REQUEST_TIMEOUT_MS`, and may still have taken effect",
        );
    }
}

/// Declare that `operation` may answer `status` with a [`Problem`]: a new answer with
/// `description`, or the problem media type added to the answer it already declares.
pub fn may_answer_problem(operation: &mut Operation, status: u16, description: &str) {
    let problem = Content::new(Some(Ref::from_schema_name(Problem::name())));
    let answers = &mut operation.responses.responses;
    match answers.get_mut(&status.to_string()) {
        Some(RefOr::T(answer)) => {
            answer.content.entry(PROBLEM_JSON.to_owned()).or_insert(problem);
        }
        Some(RefOr::Ref(_)) => {}
        None => {
            let answer = ResponseBuilder::new().description(description).content(PROBLEM_JSON, problem).build();
            answers.insert(status.to_string(), RefOr::T(answer));
        }
    }
}
