//! Applying one event to the projections: the position's dedupe record, the order summary and the
//! daily sales rows, in one transaction.
//!
//! Rules (the Read side invariants of ARCHITECTURE.md):
//! - a position already in `applied_events` is a [`Applied::Duplicate`]: nothing changes;
//! - within an order, only version `last + 1` is applied; a version at or below `last` is a
//!   duplicate (recorded as applied, changes nothing); a version past `last + 1` is a
//!   [`Applied::Gap`]: nothing is written, the caller brings it back later;
//! - a status change into `COMPLETED` counts the order completed (and its total as revenue) on the
//!   UTC day of the event; into `COMPENSATED`, a compensation on that day for the saga's failure
//!   reason; `saga.started` counts an order started.

use chrono::NaiveDate;
use sqlx::{PgConnection, PgPool};

use crate::event::Event;
use crate::metrics::OrdersMetrics;

/// What applying an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Applied; the order's status before it (`None` for its first event).
    Applied { previous_status: Option<String> },
    /// Its position (or its version of the order) was applied before.
    Duplicate,
    /// The order's stream has not reached it yet: `expected` is the next version it takes.
    Gap { expected: i64 },
}

/// The currency a daily row is counted under when the order's start is unknown (a saga from before
/// the event store).
pub const UNKNOWN_CURRENCY: &str = "unknown";
/// The reason a compensation is counted under when the saga gives none.
pub const UNKNOWN_REASON: &str = "unknown";

/// Apply `event` in one transaction on `pool`: at most five round trips (BEGIN, [`apply_in`]'s
/// three statements, COMMIT).
pub async fn apply(pool: &PgPool, event: &Event) -> Result<Applied, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let applied = apply_in(&mut tx, event).await?;
    match applied {
        Applied::Gap { .. } => tx.rollback().await?,
        _ => tx.commit().await?,
    }
    Ok(applied)
}

/// [`apply`], counted in `metrics` under `source` (`consumer` or `feed`): an applied event by its
/// type, a duplicate, a gap. A gap is counted when first seen: `first_check` is false when the
/// caller checks again an event that was a gap (the same gap).
pub async fn apply_counted(
    pool: &PgPool,
    metrics: &OrdersMetrics,
    event: &Event,
    source: &'static str,
    first_check: bool,
) -> Result<Applied, sqlx::Error> {
    let applied = apply(pool, event).await?;
    match &applied {
        Applied::Applied { .. } => metrics.applied.with_label_values(&[event.kind.label(), source]).inc(),
        Applied::Duplicate => metrics.duplicates.with_label_values(&[source]).inc(),
        Applied::Gap { .. } if first_check => metrics.gaps.with_label_values(&[source]).inc(),
        Applied::Gap { .. } => {}
    }
    Ok(applied)
}

/// Apply `event` inside the caller's transaction (rolled back by the caller on a gap): at most
/// three statements, the dedupe record, the order's row (read and locked) and one write of the
/// summary and the day's rows.
pub async fn apply_in(tx: &mut PgConnection, event: &Event) -> Result<Applied, sqlx::Error> {
    let recorded: Option<i64> = sqlx::query_scalar(
        "INSERT INTO applied_events (position, order_id, version, event_type) VALUES ($1, $2, $3, $4)
         ON CONFLICT (position) DO NOTHING RETURNING position",
    )
    .bind(event.position)
    .bind(event.order_id)
    .bind(event.version)
    .bind(event.kind.name())
    .fetch_optional(&mut *tx)
    .await?;
    if recorded.is_none() {
        return Ok(Applied::Duplicate);
    }
    // The summary row is the order's lock: concurrent events of one order serialize here, and an
    // order without a row can only be created by its version 1 (the primary key refuses another).
    let current: Option<(String, i64, Option<i64>, Option<String>)> = sqlx::query_as(
        "SELECT status, version, total_cents, currency FROM order_summaries WHERE order_id = $1 FOR UPDATE",
    )
    .bind(event.order_id)
    .fetch_optional(&mut *tx)
    .await?;
    let last = current.as_ref().map_or(0, |c| c.1);
    if event.version <= last {
        return Ok(Applied::Duplicate);
    }
    if event.version > last + 1 {
        return Ok(Applied::Gap { expected: last + 1 });
    }
    let previous_status = current.as_ref().map(|c| c.0.clone());
    let day: NaiveDate = event.recorded_at.date_naive();
    let (total, currency) = match (&event.started, &current) {
        (Some(s), _) => (Some(s.total_cents), Some(s.currency.clone())),
        (None, Some(c)) => (c.2, c.3.clone()),
        (None, None) => (None, None),
    };
    let currency = currency.unwrap_or_else(|| UNKNOWN_CURRENCY.to_owned());
    let started = i64::from(event.started.is_some());
    let entered = |status: &str| event.status == status && previous_status.as_deref() != Some(status);
    let completed = i64::from(entered("COMPLETED"));
    let compensated = entered("COMPENSATED");
    let reason = event.failure_reason.as_deref().unwrap_or(UNKNOWN_REASON);
    // One statement: the summary (the order's fields only from `saga.started`, kept otherwise),
    // then the day's sales when the event starts or completes an order, then the day's
    // compensations when it enters COMPENSATED. The tables are locked in this order as the
    // statement is analysed, the order [`reset`] takes them in.
    sqlx::query(
        "WITH summary AS (
             INSERT INTO order_summaries (order_id, customer_id, currency, total_cents, item_count, status, step,
                 failure_reason, created_at, updated_at, version, last_position)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10, $11)
             ON CONFLICT (order_id) DO UPDATE SET customer_id = COALESCE($2, order_summaries.customer_id),
                 currency = COALESCE($3, order_summaries.currency),
                 total_cents = COALESCE($4, order_summaries.total_cents),
                 item_count = COALESCE($5, order_summaries.item_count), status = $6, step = $7, failure_reason = $8,
                 updated_at = $9, version = $10, last_position = $11
         ), sales AS (
             INSERT INTO daily_sales (day, currency, orders_started, orders_completed, revenue_cents)
             SELECT $12, $13, $14, $15, $16 WHERE $14 + $15 > 0
             ON CONFLICT (day, currency) DO UPDATE SET orders_started = daily_sales.orders_started + $14,
                 orders_completed = daily_sales.orders_completed + $15,
                 revenue_cents = daily_sales.revenue_cents + $16
         )
         INSERT INTO daily_compensations (day, reason, compensations)
         SELECT $12, $17, 1 WHERE $18
         ON CONFLICT (day, reason) DO UPDATE SET compensations = daily_compensations.compensations + 1",
    )
    .bind(event.order_id)
    .bind(event.started.as_ref().map(|s| &s.customer_id))
    .bind(event.started.as_ref().map(|s| &s.currency))
    .bind(event.started.as_ref().map(|s| s.total_cents))
    .bind(event.started.as_ref().map(|s| s.item_count))
    .bind(&event.status)
    .bind(&event.step)
    .bind(&event.failure_reason)
    .bind(event.recorded_at)
    .bind(event.version)
    .bind(event.position)
    .bind(day)
    .bind(&currency)
    .bind(started)
    .bind(completed)
    .bind(completed * total.unwrap_or(0))
    .bind(reason)
    .bind(compensated)
    .execute(&mut *tx)
    .await?;
    Ok(Applied::Applied { previous_status })
}

/// Drop every projection row and dedupe record (the start of a rebuild), in one transaction. It
/// waits for the applies in flight and blocks new ones until it commits. Locks are taken in the
/// order everyone else takes them (the state row as the watermark does, then the tables in the
/// order [`apply_in`] writes them), so that it never deadlocks with them.
pub async fn reset(pool: &PgPool) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT watermark FROM projection_state FOR UPDATE").execute(&mut *tx).await?;
    sqlx::query(
        "LOCK TABLE applied_events, order_summaries, daily_sales, daily_compensations IN ACCESS EXCLUSIVE MODE",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query("TRUNCATE applied_events, order_summaries, daily_sales, daily_compensations").execute(&mut *tx).await?;
    sqlx::query("UPDATE projection_state SET watermark = 0, rebuilt_at = now(), rebuilds = rebuilds + 1")
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// Advance the watermark (every position up to it is applied) as far as the applied positions
/// allow; the new watermark. The state row is locked first (as [`reset`] locks it); then one
/// statement finds the first missing position after the watermark (the n-th applied position past
/// it is not watermark + n) and moves the watermark to just before it, or to the last applied
/// position when none is missing. The scan runs in position order and stops at the first hole.
pub async fn advance_watermark(pool: &PgPool) -> Result<i64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let watermark: i64 =
        sqlx::query_scalar("SELECT watermark FROM projection_state FOR UPDATE").fetch_one(&mut *tx).await?;
    let moved: Option<i64> = sqlx::query_scalar(
        "WITH next AS (
             SELECT COALESCE(
                 (SELECT $1 + run.n - 1
                  FROM (SELECT position, row_number() OVER (ORDER BY position) AS n
                        FROM applied_events WHERE position > $1) run
                  WHERE run.position <> $1 + run.n
                  ORDER BY run.position LIMIT 1),
                 (SELECT max(position) FROM applied_events WHERE position > $1),
                 $1
             ) AS watermark
         )
         UPDATE projection_state SET watermark = next.watermark FROM next WHERE next.watermark <> $1
         RETURNING projection_state.watermark",
    )
    .bind(watermark)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(moved.unwrap_or(watermark))
}

/// What the projections hold, row by row as JSON text, in a fixed order: the summaries by order,
/// the daily sales by day and currency, the daily compensations by day and reason, then the
/// applied positions (without their apply times). Projections of the same events have the same
/// rows, however they were built (how a rebuild is compared with a projection never rebuilt).
pub async fn rows(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    const TABLES: [&str; 4] = [
        "SELECT row_to_json(s)::text FROM (SELECT * FROM order_summaries ORDER BY order_id) s",
        "SELECT row_to_json(s)::text FROM (SELECT * FROM daily_sales ORDER BY day, currency) s",
        "SELECT row_to_json(s)::text FROM (SELECT * FROM daily_compensations ORDER BY day, reason) s",
        "SELECT row_to_json(s)::text FROM (SELECT position, order_id, version, event_type FROM applied_events \
         ORDER BY position) s",
    ];
    let mut rows = Vec::new();
    for sql in TABLES {
        rows.extend(sqlx::query_scalar::<_, String>(sql).fetch_all(pool).await?);
    }
    Ok(rows)
}
