//! `GET /admin/audit/consistency?since=<RFC 3339>`: run the consistency auditor (see
//! [`crate::auditor`]) and answer `{"checked": <sagas>, "violations": [{"saga_id", "kind",
//! "detail"}, ...]}`; `503` when a participant or an outside system cannot be read.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use infra::http::Problem;
use serde::Deserialize;
use utoipa::IntoParams;

use super::{Admin, TAG};
use crate::auditor::Report;

/// The query of `GET /admin/audit/consistency`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ConsistencyQuery {
    /// Only the sagas finished since this time (RFC 3339); every terminal saga without it.
    since: Option<DateTime<Utc>>,
}

/// Does every participant, and every outside system, agree with the sagas?
#[utoipa::path(get, path = "/admin/audit/consistency", tag = TAG,
    params(ConsistencyQuery),
    responses(
        (status = 200, description = "What the audit checked and found", body = Report),
        (status = 400, description = "`since` is not an RFC 3339 time", body = Problem,
         content_type = "application/problem+json"),
        (status = 503, description = "A participant or an outside system could not be read", body = Problem,
         content_type = "application/problem+json"),
    ))]
pub(super) async fn consistency(
    State(admin): State<Admin>,
    query: Result<Query<ConsistencyQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return Problem::bad_request("`since` must be an RFC 3339 time, e.g. 2026-12-01T12:00:00Z").into_response();
    };
    match admin.auditor.run(q.since).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => Problem::unavailable(e.to_string()).into_response(),
    }
}
