//! Paging by id for the read APIs that list everything (the consistency auditor reads whole
//! tables through them): `?after=<id>&limit=<n>` (read and checked by the [`Paged`] extractor),
//! answered with `{"items": [...], "next": <id or null>}`.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::http::Problem;

/// Which page: the items after an id.
#[derive(Debug, Clone, Copy, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items after this id (the previous page's `next`).
    pub after: Option<Uuid>,
    /// Most items per page, 1-1000 (default 500).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

impl PageQuery {
    /// The page size, or a `400` problem saying what is allowed.
    pub fn limit(&self) -> Result<i64, Problem> {
        let limit = self.limit.unwrap_or(500);
        if (1..=1000).contains(&limit) {
            Ok(limit)
        } else {
            Err(Problem::bad_request("`limit` must be between 1 and 1000"))
        }
    }
}

/// `?after=&limit=` read and checked; a query that is not one is a `400` problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paged {
    pub after: Option<Uuid>,
    pub limit: i64,
}

impl<S: Send + Sync> FromRequestParts<S> for Paged {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let Query(q) = Query::<PageQuery>::from_request_parts(parts, state)
            .await
            .map_err(|_| Problem::bad_request("`after` must be a UUID and `limit` a number"))?;
        Ok(Paged { after: q.after, limit: q.limit()? })
    }
}

/// A page of items, and where the next one starts.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The `after` of the next page; `null` on the last one.
    pub next: Option<Uuid>,
}

impl<T> Page<T> {
    /// A page of `items`, which hold `ids` of which at most `limit` were asked for: there may be
    /// a next page when the page is full.
    pub fn of(items: Vec<T>, last_id: Option<Uuid>, count: usize, limit: i64) -> Self {
        let next = (count as i64 >= limit).then_some(last_id).flatten();
        Page { items, next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_page_points_at_the_next_and_a_short_one_does_not() {
        let id = Uuid::from_u128(3);
        assert_eq!(Page::of(vec![1, 2], Some(id), 2, 2).next, Some(id));
        assert_eq!(Page::of(vec![1], Some(id), 1, 2).next, None);
        assert_eq!(PageQuery::default().limit().unwrap(), 500);
        assert!(PageQuery { limit: Some(0), ..Default::default() }.limit().is_err());
        assert!(PageQuery { limit: Some(1001), ..Default::default() }.limit().is_err());
    }
}
