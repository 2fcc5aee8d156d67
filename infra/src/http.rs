//! HTTP basics every process shares: `/health/live`, `/health/ready` (database and broker
//! reachable, plus any extra checks a process adds), `/metrics`, `application/problem+json` errors
//! (RFC 9457), a JSON extractor whose rejections are problems too, and serving with graceful
//! shutdown under the [`HttpLimits`] every route of every process has: a body size limit, a
//! request timeout and a concurrency limit, whose refusals are problems as well; and a span per
//! request ([`crate::telemetry::requests`]). The health routes carry their OpenAPI description;
//! [`crate::openapi`] assembles a process's document.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use axum::body::{Body, BodyDataStream};
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn, from_fn_with_state, map_response};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::amqp::Broker;
use crate::metrics::Metrics;
use crate::telemetry::requests;

/// An RFC 9457 problem. Client mistakes are 4xx with a `detail` that says what to fix; a 5xx never
/// carries internals (they go to the log).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(description = "An RFC 9457 problem (`application/problem+json`): what went wrong, and for \
                        validation problems, which fields.")]
pub struct Problem {
    #[serde(skip)]
    pub status: StatusCode,
    /// A URI naming the kind of problem, e.g. `urn:saga:problem:validation`.
    #[serde(rename = "type")]
    #[schema(example = "urn:saga:problem:validation")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code of the answer.
    #[serde(rename = "status")]
    #[schema(minimum = 400, maximum = 599)]
    pub status_code: u16,
    /// What happened in this case, and what to fix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Field-level errors for validation problems: `[{"field": "items[0].quantity", "message": "..."}]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Seconds after which the client may try again (a `Retry-After` header, not in the body).
    #[serde(skip)]
    pub retry_after: Option<u32>,
}

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// Where the field is, e.g. `items[0].quantity` or `shipping_address.country`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl Problem {
    pub fn new(status: StatusCode, kind: &str, title: &str) -> Self {
        Problem {
            status,
            kind: format!("urn:saga:problem:{kind}"),
            title: title.to_owned(),
            status_code: status.as_u16(),
            detail: None,
            errors: Vec::new(),
            retry_after: None,
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, "bad-request", "Bad request").detail(detail)
    }

    pub fn validation(errors: Vec<FieldError>) -> Self {
        let mut p = Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", "The request is not valid")
            .detail(format!("{} field(s) are invalid", errors.len()));
        p.errors = errors;
        p
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found").detail(detail)
    }

    /// A server-side failure; the cause is logged here, never sent.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "request failed");
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error")
            .detail("the server could not complete the request; it has been logged")
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable").detail(detail)
    }

    /// Ask the client to try again after `secs` seconds (`Retry-After`).
    pub fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        // Serializing strings and numbers cannot fail.
        let body = serde_json::to_string(&self).unwrap_or_default();
        let mut response = (self.status, [(header::CONTENT_TYPE, PROBLEM_JSON)], body).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        response
    }
}

/// The media type of [`Problem`] answers.
pub const PROBLEM_JSON: &str = "application/problem+json";

impl From<sqlx::Error> for Problem {
    /// A database that cannot be reached is `503` with `Retry-After`; any other database error
    /// is a `500` (logged).
    fn from(e: sqlx::Error) -> Self {
        if crate::db::is_unavailable(&e) {
            tracing::warn!(error = %e, "the database is unreachable; answering 503");
            return Problem::unavailable("the database cannot be reached; try again shortly")
                .retry_after(DB_RETRY_AFTER);
        }
        Problem::internal(&e)
    }
}

/// Seconds a client is asked to wait when the database cannot be reached.
pub const DB_RETRY_AFTER: u32 = 5;

/// `Json<T>` whose rejections (wrong content type, syntax error, missing field, body too large)
/// are `problem+json` with a detail that names the mistake.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_problem(rejection)),
        }
    }
}

fn json_problem(rejection: JsonRejection) -> Problem {
    let status = rejection.status();
    let detail = rejection.body_text();
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", "Expected application/json")
                .detail(detail)
        }
        JsonRejection::JsonDataError(_) => {
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-body", "The body does not match the schema")
                .detail(detail)
        }
        JsonRejection::JsonSyntaxError(_) => Problem::bad_request(detail),
        _ if status == StatusCode::PAYLOAD_TOO_LARGE => {
            Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", "Request body too large").detail(detail)
        }
        _ => Problem::new(status, "bad-request", "Bad request").detail(detail),
    }
}

/// A named readiness check: `Ok(detail)` when ready, `Err(detail)` when not.
pub type Check = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<Value, Value>> + Send>> + Send + Sync>;

/// What `/health/ready` looks at.
#[derive(Clone)]
pub struct Health {
    pub db: PgPool,
    pub broker: Broker,
    pub metrics: Metrics,
    pub extra: Vec<(&'static str, Check)>,
}

/// A readiness entry for an outside dependency: its breaker state and since when. An open breaker
/// does not make the process unready (it still takes messages; they wait), it is shown.
pub fn dependency_check(dependency: crate::resilience::Dependency) -> Check {
    Arc::new(move || {
        let status = dependency.status();
        Box::pin(async move { Ok(serde_json::to_value(status).unwrap_or(Value::Null)) })
    })
}

/// `/health/live`, `/health/ready` and `/metrics`, documented.
pub fn health_routes(health: Health) -> OpenApiRouter {
    OpenApiRouter::new().routes(routes!(live)).routes(routes!(ready)).routes(routes!(metrics)).with_state(health)
}

/// The answer of `/health/live`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Liveness {
    /// Always `live`.
    #[schema(pattern = "^live$")]
    pub status: &'static str,
}

/// The answer of `/health/ready`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` (`200`) or `not_ready` (`503`).
    #[schema(pattern = "^(ready|not_ready)$")]
    pub status: &'static str,
    /// One entry per check: `database` and `broker` (`ok` or `unreachable`), `tasks` (each
    /// background task: `status` `running` or `restarting`, `since`, `restarts`, `last_failure`),
    /// and a participant's outside dependency.
    #[schema(value_type = Object)]
    pub checks: serde_json::Map<String, Value>,
}

/// The process runs (it answers).
#[utoipa::path(get, path = "/health/live", tag = TAG_OPERATIONS,
    responses((status = 200, description = "The process is alive", body = Liveness)))]
async fn live() -> Json<Liveness> {
    Json(Liveness { status: "live" })
}

/// The process can do its work: database and broker reachable, every background task running.
#[utoipa::path(get, path = "/health/ready", tag = TAG_OPERATIONS,
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready: the failing checks say why", body = Readiness),
    ))]
async fn ready(State(h): State<Health>) -> Response {
    let mut checks = serde_json::Map::new();
    let mut ok = true;
    let db = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&h.db).await;
    checks.insert("database".into(), json!(if db.is_ok() { "ok" } else { "unreachable" }));
    ok &= db.is_ok();
    let broker = h.broker.is_reachable().await;
    checks.insert("broker".into(), json!(if broker { "ok" } else { "unreachable" }));
    ok &= broker;
    for (name, check) in &h.extra {
        match check().await {
            Ok(detail) => {
                checks.insert((*name).into(), detail);
            }
            Err(detail) => {
                ok = false;
                checks.insert((*name).into(), detail);
            }
        }
    }
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(Readiness { status: if ok { "ready" } else { "not_ready" }, checks })).into_response()
}

/// The process's metrics in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = TAG_OPERATIONS,
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", body = String,
               content_type = "text/plain")))]
async fn metrics(State(h): State<Health>) -> Response {
    h.metrics.observe_pool(&h.db);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], h.metrics.render()).into_response()
}

/// The OpenAPI tag of the routes every process has.
pub const TAG_OPERATIONS: &str = "operations";

/// What the fallback answers for a path no route serves.
pub const NO_SUCH_ENDPOINT: &str = "no such endpoint";

/// Unknown routes answer a problem, not an empty 404.
pub async fn fallback() -> Problem {
    Problem::not_found(NO_SUCH_ENDPOINT)
}

/// Limits every route of a process is served with (settings `HTTP_MAX_BODY_BYTES`,
/// `HTTP_REQUEST_TIMEOUT_MS`, `HTTP_CONCURRENCY_LIMIT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Largest request body in bytes; a larger one answers `413`. A route may accept less (the
    /// orchestrator's `POST /orders`), never more.
    pub max_body_bytes: usize,
    /// Longest a request may take, its wait for a concurrency slot included; then it answers
    /// [`TIMEOUT_STATUS`] and its handler is dropped.
    pub request_timeout: Duration,
    /// Requests handled at once; more wait for a slot, within `request_timeout`.
    pub concurrency: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits { max_body_bytes: 64 * 1024, request_timeout: Duration::from_secs(30), concurrency: 512 }
    }
}

/// What a request that ran out of time answers. Not `408`: that one says the *client* was slow
/// to send, and user agents may repeat it on their own; here the server was slow.
pub const TIMEOUT_STATUS: StatusCode = StatusCode::SERVICE_UNAVAILABLE;

/// `router` with the fallback and the [`HttpLimits`], as [`serve`] runs it (public for tests).
///
/// Requests beyond the concurrency limit wait rather than being shed: a burst is smoothed instead
/// of refused, health probes are not refused under load, and the wait is bounded anyway, since
/// the timeout wraps routing itself (the slot is taken inside it, when the route is polled ready).
/// Whatever body a handler leaves unread is read before the answer goes out, so that a refusal
/// keeps the connection usable ([`drain_unread_body`]). Refusals made below the handlers come as
/// bare statuses or plain text; they are turned into problems here, like every other error.
/// Outside all of it, every request has its span ([`requests`]).
pub fn limited(router: Router, limits: HttpLimits) -> Router {
    let drain_cap = limits.max_body_bytes.max(DRAIN_MIN_BYTES);
    let routed = router
        .fallback(fallback)
        .layer(from_fn(requests::route))
        .layer(RequestBodyLimitLayer::new(limits.max_body_bytes))
        .layer(from_fn_with_state(drain_cap, drain_unread_body))
        .layer(GlobalConcurrencyLimitLayer::new(limits.concurrency));
    Router::new()
        .fallback_service(routed)
        .layer(TimeoutLayer::with_status_code(TIMEOUT_STATUS, limits.request_timeout))
        .layer(map_response(move |response| bare_error_as_problem(response, limits)))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(requests::request_span::<Body>)
                .on_request(())
                .on_response(requests::response::<Body>)
                .on_failure(()),
        )
}

/// [`drain_unread_body`] reads and drops at most this much (or the body limit, if larger).
pub const DRAIN_MIN_BYTES: usize = 1 << 20;

/// Read to its end (up to `cap` bytes) whatever request body the handler left unread, before
/// answering. A refusal made before the body was read (a `413` on `Content-Length`, a `415`)
/// otherwise leaves it unread; hyper then closes the connection, without telling the client, so
/// the client may see a broken pipe instead of the answer, or lose its next request on the
/// connection. A body past `cap` is not read: the answer says `Connection: close`.
async fn drain_unread_body(State(cap): State<usize>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let shared = Arc::new(Mutex::new(body.into_data_stream()));
    let read_through = shared.clone();
    let passed = futures_util::stream::poll_fn(move |cx| match read_through.lock() {
        Ok(mut stream) => stream.poll_next_unpin(cx),
        Err(_) => Poll::Ready(None),
    });
    let mut response = next.run(Request::from_parts(parts, Body::from_stream(passed))).await;
    let rest = match shared.lock() {
        Ok(mut stream) => std::mem::replace(&mut *stream, Body::empty().into_data_stream()),
        Err(_) => Body::empty().into_data_stream(),
    };
    let drained = declared.is_none_or(|n| n <= cap as u64) && drain(rest, cap).await;
    if !drained {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Read `body` to its end, dropping it; `false` if it is longer than `cap` or breaks off.
async fn drain(mut body: BodyDataStream, cap: usize) -> bool {
    let mut read = 0usize;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(bytes) if read.saturating_add(bytes.len()) <= cap => read += bytes.len(),
            _ => return false,
        }
    }
    true
}

/// An error answer without a body type of its own (no `Content-Type`, or plain text), as the
/// limits and axum's built-in rejections make them, as `problem+json`; anything else unchanged.
async fn bare_error_as_problem(response: Response, limits: HttpLimits) -> Response {
    let status = response.status();
    let plain = match response.headers().get(header::CONTENT_TYPE) {
        None => true,
        Some(v) => v.to_str().is_ok_and(|t| t.starts_with("text/plain")),
    };
    if !(status.is_client_error() || status.is_server_error()) || !plain {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let mut problem = bare_problem(status, text, limits).into_response();
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.remove(header::CONTENT_LENGTH);
    problem.headers_mut().extend(parts.headers);
    problem
}

fn bare_problem(status: StatusCode, text: String, limits: HttpLimits) -> Problem {
    let title = status.canonical_reason().unwrap_or("Error");
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => Problem::new(status, "too-large", "Request body too large").detail(format!(
            "the body is larger than this endpoint accepts (none accepts over {} bytes)",
            limits.max_body_bytes
        )),
        TIMEOUT_STATUS if text.is_empty() => Problem::new(status, "timeout", "Request timed out").detail(format!(
            "the request did not complete within {} ms; it may still have taken effect",
            limits.request_timeout.as_millis()
        )),
        _ => {
            let kind: String = title
                .chars()
                .filter_map(|c| if c == ' ' { Some('-') } else { c.is_ascii_alphanumeric().then_some(c) })
                .collect();
            let detail = if text.is_empty() { title.to_owned() } else { text };
            Problem::new(status, &kind.to_ascii_lowercase(), title).detail(detail)
        }
    }
}

/// Serve until `shutdown` with the default [`HttpLimits`], then stop accepting and let open
/// requests finish.
pub async fn serve(listener: TcpListener, router: Router, shutdown: CancellationToken) -> std::io::Result<()> {
    serve_with(listener, router, HttpLimits::default(), shutdown).await
}

/// [`serve`] with the given limits.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, limited(router, limits))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
