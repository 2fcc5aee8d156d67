//! The span of every HTTP request, on every route of every process ([`crate::http::limited`]
//! puts a tower-http `TraceLayer` outside everything else, so the wait for a concurrency slot and
//! the refusals of the limits are inside it).
//!
//! The span is `http_request` with the OpenTelemetry HTTP server attributes as fields:
//! `http.request.method`, `url.path` (never the query), `http.route` (the route template, from
//! [`route`] once routing matched) and `http.response.status_code`. When spans are exported it is
//! named `<method> <route>` (kind server), and a 5xx answer marks it as an error.

use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::http;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Span;
use tracing::field::Empty;

use super::exporting;

/// `make_span_with` of the trace layer.
pub fn request_span<B>(request: &http::Request<B>) -> Span {
    let method = request.method().as_str();
    let span = tracing::info_span!(
        "http_request",
        http.request.method = method,
        url.path = request.uri().path(),
        http.route = Empty,
        http.response.status_code = Empty,
        otel.name = Empty,
        otel.kind = Empty,
        otel.status_code = Empty,
    );
    if exporting() {
        span.record("otel.name", method);
        span.record("otel.kind", "server");
    }
    span
}

/// `on_response` of the trace layer: the status, and the error mark of a 5xx.
pub fn response<B>(response: &http::Response<B>, _latency: Duration, span: &Span) {
    let status = response.status();
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() && exporting() {
        span.record("otel.status_code", "error");
    }
}

/// Middleware on the routes: the matched route template on the request span, and its name.
pub async fn route(request: Request, next: Next) -> Response {
    if let Some(route) = request.extensions().get::<MatchedPath>() {
        let span = Span::current();
        span.record("http.route", route.as_str());
        if exporting() {
            span.record("otel.name", format!("{} {}", request.method(), route.as_str()).as_str());
        }
    }
    next.run(request).await
}
