//! `GET /events?after=<position>&limit=`: the event store's global feed, in position order, for
//! subscribers catching up and read models rebuilding from zero.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use contracts::history::FeedPage;
use infra::http::Problem;
use serde::Deserialize;
use utoipa::IntoParams;

use super::{Admin, TAG};
use crate::history::feed;

/// Most events per page.
const MAX_LIMIT: i64 = 1000;

/// The query of `GET /events`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct FeedQuery {
    /// Events after this global position (0: from the first).
    #[param(minimum = 0, default = 0)]
    after: Option<i64>,
    /// Events per page.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<i64>,
}

/// The global feed: every event of every order's stream with a position after `after`, oldest
/// first, and the store's head. Events get their position once committed; positions have no
/// gaps, so a reader that has seen position `n` has seen everything before it.
#[utoipa::path(get, path = "/events", tag = TAG,
    params(FeedQuery),
    responses(
        (status = 200, description = "A page of events in position order, and the head", body = FeedPage),
        (status = 400, description = "`after` is not a whole number >= 0, or `limit` not 1-1000", body = Problem,
         content_type = "application/problem+json"),
    ))]
pub(super) async fn feed(State(admin): State<Admin>, q: Result<Query<FeedQuery>, QueryRejection>) -> Response {
    let Ok(Query(q)) = q else {
        return Problem::bad_request("after and limit must be whole numbers").into_response();
    };
    let after = q.after.unwrap_or(0);
    if after < 0 {
        return Problem::bad_request("after must be 0 or more").into_response();
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Problem::bad_request(format!("limit must be between 1 and {MAX_LIMIT}")).into_response();
    }
    let page = async {
        let head = feed::head(&admin.pool).await?;
        let rows = feed::after(&admin.pool, after, limit).await?;
        Ok::<_, sqlx::Error>((head, rows))
    };
    match page.await {
        Ok((head, rows)) => {
            let events = rows.iter().filter_map(|r| r.position.map(|p| r.to_history(p).0)).collect();
            Json(FeedPage { events, head }).into_response()
        }
        Err(e) => Problem::from(e).into_response(),
    }
}
