//! The read models over HTTP, with their OpenAPI description: `GET /orders/{id}`,
//! `GET /orders?customer_id=&status=&after=&limit=` (keyset paging by order id),
//! `GET /reports/daily?from=&to=`; and the operator's `POST /admin/rebuild` and
//! `GET /admin/rebuild` (bearer token, see [`infra::operators`]).

use std::collections::BTreeMap;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, middleware};
use chrono::{DateTime, Days, NaiveDate, Utc};
use infra::http::Problem;
use infra::openapi::OpenApiRouter;
use infra::operators::Operators;
use infra::paging::Page;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;
use uuid::Uuid;

use crate::event::STATUSES;
use crate::projector::{Projector, RebuildStatus};

/// An order as the read side knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, ToSchema)]
pub struct OrderSummary {
    pub order_id: Uuid,
    /// `null` for an order whose history did not start with `saga.started` (from before the
    /// event store); so are `currency`, `total_cents` and `item_count`.
    pub customer_id: Option<String>,
    pub currency: Option<String>,
    pub total_cents: Option<i64>,
    /// Units ordered (the sum of the items' quantities).
    pub item_count: Option<i64>,
    #[schema(pattern = "^(RUNNING|COMPENSATING|COMPLETED|COMPENSATED|FAILED)$")]
    pub status: String,
    pub step: Option<String>,
    pub failure_reason: Option<String>,
    /// When the first event of the order was recorded.
    pub created_at: DateTime<Utc>,
    /// When the last applied event was recorded.
    pub updated_at: DateTime<Utc>,
    /// The stream version of the last applied event.
    pub version: i64,
    /// Its global position.
    pub last_position: i64,
}

const SUMMARY_COLUMNS: &str = "order_id, customer_id, currency, total_cents, item_count, status, step, failure_reason, \
                               created_at, updated_at, version, last_position";

#[derive(Clone)]
struct ApiState {
    projector: Projector,
}

pub fn router(projector: Projector, operators: Operators) -> OpenApiRouter {
    let state = ApiState { projector };
    let public = OpenApiRouter::new()
        .routes(routes!(one))
        .routes(routes!(list))
        .routes(routes!(daily))
        .with_state(state.clone());
    let mut admin = OpenApiRouter::new()
        .routes(routes!(rebuild, rebuild_status))
        .route_layer(middleware::from_fn_with_state(operators, infra::operators::authorize))
        .with_state(state);
    infra::operators::document(admin.get_openapi_mut(), "ORDERS_ADMIN_TOKENS");
    public.merge(admin)
}

/// One order's summary.
#[utoipa::path(get, path = "/orders/{id}", tag = "orders",
    params(("id" = Uuid, Path, description = "The order's id (its saga id)")),
    responses(
        (status = 200, description = "The order's summary", body = OrderSummary),
        (status = 400, description = "`id` is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order (or not projected yet)", body = Problem,
         content_type = "application/problem+json"),
    ))]
async fn one(State(s): State<ApiState>, id: Result<Path<Uuid>, PathRejection>) -> Response {
    let Ok(Path(id)) = id else {
        return Problem::bad_request("the order id in the path must be a UUID").into_response();
    };
    let sql = format!("SELECT {SUMMARY_COLUMNS} FROM order_summaries WHERE order_id = $1");
    match sqlx::query_as::<_, OrderSummary>(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&s.projector.pool).await {
        Ok(Some(o)) => Json(o).into_response(),
        Ok(None) => Problem::not_found(format!("no order {id}")).into_response(),
        Err(e) => Problem::from(e).into_response(),
    }
}

/// Which orders: filters and the page.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only this customer's orders.
    #[param(min_length = 1, max_length = 200)]
    customer_id: Option<String>,
    /// Only orders in this status.
    #[param(value_type = Option<String>, pattern = "^(RUNNING|COMPENSATING|COMPLETED|COMPENSATED|FAILED)$")]
    status: Option<String>,
    /// Orders after this order id (the previous page's `next`).
    #[param(value_type = Option<Uuid>)]
    after: Option<String>,
    /// Most orders per page, 1-1000 (default 100).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

/// Orders by order id (which orders them by time: ids are UUID v7), a page at a time.
#[utoipa::path(get, path = "/orders", tag = "orders", params(ListQuery),
    responses(
        (status = 200, description = "A page of orders", body = Page<OrderSummary>),
        (status = 400, description = "A parameter is not valid: the detail says which and why", body = Problem,
         content_type = "application/problem+json"),
    ))]
async fn list(State(s): State<ApiState>, query: Result<Query<ListQuery>, QueryRejection>) -> Response {
    let Ok(Query(q)) = query else {
        return Problem::bad_request("the query string cannot be read").into_response();
    };
    let after = match q.after.as_deref().map(str::parse::<Uuid>).transpose() {
        Ok(a) => a,
        Err(_) => {
            return Problem::bad_request("`after` must be an order id (a UUID), the previous page's `next`")
                .into_response();
        }
    };
    let limit = match q.limit.as_deref().map(str::parse::<i64>).transpose() {
        Ok(l) if (1..=1000).contains(&l.unwrap_or(100)) => l.unwrap_or(100),
        _ => return Problem::bad_request("`limit` must be a whole number between 1 and 1000").into_response(),
    };
    if let Some(status) = &q.status
        && !STATUSES.contains(&status.as_str())
    {
        return Problem::bad_request(format!("`status` must be one of {}", STATUSES.join(", "))).into_response();
    }
    if let Some(c) = &q.customer_id
        && (c.is_empty() || c.len() > 200)
    {
        return Problem::bad_request("`customer_id` must be 1 to 200 characters").into_response();
    }
    let sql = format!(
        "SELECT {SUMMARY_COLUMNS} FROM order_summaries
         WHERE ($1::text IS NULL OR customer_id = $1) AND ($2::text IS NULL OR status = $2)
           AND ($3::uuid IS NULL OR order_id > $3)
         ORDER BY order_id LIMIT $4"
    );
    let rows = sqlx::query_as::<_, OrderSummary>(sqlx::AssertSqlSafe(sql))
        .bind(&q.customer_id)
        .bind(&q.status)
        .bind(after)
        .bind(limit)
        .fetch_all(&s.projector.pool)
        .await;
    match rows {
        Ok(items) => {
            let (last, count) = (items.last().map(|o| o.order_id), items.len());
            Json(Page::of(items, last, count, limit)).into_response()
        }
        Err(e) => Problem::from(e).into_response(),
    }
}

/// Which days.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DailyQuery {
    /// First day (UTC, `YYYY-MM-DD`), default 29 days before `to`.
    #[param(value_type = Option<String>, format = Date)]
    from: Option<String>,
    /// Last day (UTC, `YYYY-MM-DD`), default today. At most 366 days from `from`.
    #[param(value_type = Option<String>, format = Date)]
    to: Option<String>,
}

/// The most days one report covers.
pub const MAX_REPORT_DAYS: u64 = 366;

/// One UTC day of sales.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct DailySales {
    /// The day (UTC), `YYYY-MM-DD`.
    pub day: NaiveDate,
    /// Orders started that day (whatever became of them).
    pub orders_started: i64,
    /// Orders completed that day.
    pub orders_completed: i64,
    /// The total of the orders completed that day, per currency (minor units).
    pub revenue_cents: BTreeMap<String, i64>,
    /// Orders compensated that day, per reason (the saga's failure reason).
    pub compensations: BTreeMap<String, i64>,
}

/// The daily sales report.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DailyReport {
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// Every day from `from` to `to`, in order (days without orders have zeros).
    pub days: Vec<DailySales>,
}

fn parse_day(name: &str, value: Option<&str>) -> Result<Option<NaiveDate>, Problem> {
    value
        .map(|v| {
            NaiveDate::parse_from_str(v, "%Y-%m-%d")
                .map_err(|_| Problem::bad_request(format!("`{name}` must be a date as YYYY-MM-DD, got {v:?}")))
        })
        .transpose()
}

/// Orders started and completed, revenue and compensations per UTC day.
#[utoipa::path(get, path = "/reports/daily", tag = "reports", params(DailyQuery),
    responses(
        (status = 200, description = "One entry per day of the range", body = DailyReport),
        (status = 400, description = "A date is not `YYYY-MM-DD`, `from` is after `to`, or the range is over 366 days",
         body = Problem, content_type = "application/problem+json"),
    ))]
async fn daily(State(s): State<ApiState>, query: Result<Query<DailyQuery>, QueryRejection>) -> Response {
    let Ok(Query(q)) = query else {
        return Problem::bad_request("the query string cannot be read").into_response();
    };
    let (from, to) = match (parse_day("from", q.from.as_deref()), parse_day("to", q.to.as_deref())) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(p), _) | (_, Err(p)) => return p.into_response(),
    };
    let to = to.unwrap_or_else(|| Utc::now().date_naive());
    let Some(from) = from.or_else(|| to.checked_sub_days(Days::new(29))) else {
        return Problem::bad_request("`to` is too early").into_response();
    };
    if from > to {
        return Problem::bad_request(format!("`from` ({from}) is after `to` ({to})")).into_response();
    }
    if to.signed_duration_since(from).num_days() >= MAX_REPORT_DAYS as i64 {
        return Problem::bad_request(format!("the range covers more than {MAX_REPORT_DAYS} days")).into_response();
    }
    let pool = &s.projector.pool;
    let sales = sqlx::query_as::<_, (NaiveDate, String, i64, i64, i64)>(
        "SELECT day, currency, orders_started, orders_completed, revenue_cents FROM daily_sales
         WHERE day BETWEEN $1 AND $2",
    )
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await;
    let compensations = sqlx::query_as::<_, (NaiveDate, String, i64)>(
        "SELECT day, reason, compensations FROM daily_compensations WHERE day BETWEEN $1 AND $2",
    )
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await;
    let (sales, compensations) = match (sales, compensations) {
        (Ok(s), Ok(c)) => (s, c),
        (Err(e), _) | (_, Err(e)) => return Problem::from(e).into_response(),
    };
    let mut days: BTreeMap<NaiveDate, DailySales> = from
        .iter_days()
        .take_while(|d| *d <= to)
        .map(|day| {
            let empty = DailySales {
                day,
                orders_started: 0,
                orders_completed: 0,
                revenue_cents: BTreeMap::new(),
                compensations: BTreeMap::new(),
            };
            (day, empty)
        })
        .collect();
    for (day, currency, started, completed, revenue) in sales {
        if let Some(d) = days.get_mut(&day) {
            d.orders_started += started;
            d.orders_completed += completed;
            if completed > 0 {
                *d.revenue_cents.entry(currency).or_default() += revenue;
            }
        }
    }
    for (day, reason, n) in compensations {
        if let Some(d) = days.get_mut(&day) {
            *d.compensations.entry(reason).or_default() += n;
        }
    }
    Json(DailyReport { from, to, days: days.into_values().collect() }).into_response()
}

/// Drop the projections and replay the history from position 0 through the orchestrator's feed,
/// in the background; the live consumer keeps running. `GET /admin/rebuild` follows it.
#[utoipa::path(post, path = "/admin/rebuild", tag = "operator",
    responses(
        (status = 202, description = "The rebuild started", body = RebuildStatus),
        (status = 409, description = "A rebuild runs already", body = Problem, content_type = "application/problem+json"),
    ))]
async fn rebuild(State(s): State<ApiState>) -> Response {
    if !s.projector.request_rebuild() {
        return Problem::new(StatusCode::CONFLICT, "conflict", "Conflict")
            .detail("a rebuild runs already: GET /admin/rebuild follows it")
            .into_response();
    }
    (StatusCode::ACCEPTED, Json(s.projector.rebuild_status())).into_response()
}

/// Where the running (or last) rebuild stands.
#[utoipa::path(get, path = "/admin/rebuild", tag = "operator",
    responses((status = 200, description = "The rebuild's state", body = RebuildStatus)))]
async fn rebuild_status(State(s): State<ApiState>) -> Json<RebuildStatus> {
    Json(s.projector.rebuild_status())
}
