//! HTTP request metrics, as a middleware on every route of a process: requests by method, route
//! template (axum's `MatchedPath`, never the raw path, so the label stays bounded; `unmatched` for
//! a request no route took) and status class, and a latency histogram.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::metrics::Metrics;

/// Middleware: time the request and count its answer.
pub async fn track(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let response = next.run(request).await;
    let class = format!("{}xx", response.status().as_u16() / 100);
    metrics.http_requests.with_label_values(&[&method, &route, &class]).inc();
    metrics.http_seconds.with_label_values(&[&method, &route]).observe(started.elapsed().as_secs_f64());
    response
}
