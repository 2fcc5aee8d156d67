//! The projections' life beside the live consumer: the lag poller (the store's head from the feed,
//! the watermark, catch-up of positions that never arrived), replays through the feed, and the
//! rebuild (drop the projections, replay from position 0).
//!
//! Every path applies events with [`projection::apply_counted`], so the live consumer, a catch-up
//! and a rebuild may run at once: the position dedupe and the per-order version check make each
//! event count once whoever applies it first.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use crate::feed::{Feed, FeedError};
use crate::metrics::OrdersMetrics;
use crate::projection::{self, Applied};

/// Why a replay stopped before the head.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Feed(#[from] FeedError),
    #[error("database error while applying: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the feed skipped an event: order {order_id} expects version {expected}, position {position} has {got}")]
    Gap { order_id: uuid::Uuid, position: i64, expected: i64, got: i64 },
    #[error("stopped by shutdown")]
    Cancelled,
}

/// What a replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct ReplayReport {
    /// Events applied.
    pub applied: u64,
    /// Events found applied already.
    pub duplicates: u64,
    /// The last position replayed.
    pub position: i64,
    /// The store's head when the replay ended.
    pub head: i64,
}

/// Where the rebuild stands.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct RebuildStatus {
    /// A rebuild runs now.
    pub running: bool,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The position replayed up to, and the head it replays to.
    pub position: i64,
    pub target: i64,
    /// What the last finished rebuild did, or why it failed.
    pub report: Option<ReplayReport>,
    pub error: Option<String>,
}

/// What the poller saw last.
#[derive(Debug, Clone, Default)]
struct Seen {
    head: Option<i64>,
    watermark: i64,
    feed_error: Option<String>,
}

/// The projections' state and the operations on them. Cheap to clone.
#[derive(Clone)]
pub struct Projector {
    pub pool: PgPool,
    pub feed: Feed,
    pub metrics: OrdersMetrics,
    /// Readiness fails when the lag is above this many events.
    pub lag_threshold: i64,
    seen: Arc<Mutex<Seen>>,
    /// Also the one "a rebuild runs" flag: `running`, set and checked under this lock.
    rebuild: Arc<Mutex<RebuildStatus>>,
    requested: Arc<Notify>,
}

impl Projector {
    pub fn new(pool: PgPool, feed: Feed, metrics: OrdersMetrics, lag_threshold: i64) -> Self {
        Projector {
            pool,
            feed,
            metrics,
            lag_threshold,
            seen: Arc::default(),
            rebuild: Arc::default(),
            requested: Arc::default(),
        }
    }

    /// Replay the feed from `after` until the head it reports (read again at the end of each
    /// page), applying what is not applied yet. `progress` is told each page's last position.
    pub async fn replay(
        &self,
        after: i64,
        token: &CancellationToken,
        progress: impl Fn(i64, i64),
    ) -> Result<ReplayReport, ReplayError> {
        let mut report = ReplayReport { position: after, ..Default::default() };
        loop {
            if token.is_cancelled() {
                return Err(ReplayError::Cancelled);
            }
            let page = match self.feed.page(report.position, None).await {
                Ok(page) => page,
                Err(e) => {
                    self.metrics.feed_errors.with_label_values(&[e.reason()]).inc();
                    return Err(e.into());
                }
            };
            report.head = page.head;
            let Some(last) = page.events.last().map(|e| e.position) else { return Ok(report) };
            for event in &page.events {
                match projection::apply_counted(&self.pool, &self.metrics, event, "feed", true).await? {
                    Applied::Applied { .. } => report.applied += 1,
                    Applied::Duplicate => report.duplicates += 1,
                    Applied::Gap { expected } => {
                        return Err(ReplayError::Gap {
                            order_id: event.order_id,
                            position: event.position,
                            expected,
                            got: event.version,
                        });
                    }
                }
            }
            report.position = last;
            progress(last, page.head);
            // Everything up to `last` is applied now (by us or before us); the watermark is moved
            // from the applied positions themselves, so a reset racing this replay cannot leave it
            // past what is applied.
            self.advance_watermark().await?;
            if last >= page.head {
                return Ok(report);
            }
        }
    }

    /// Drop the projections and replay from position 0 (the command and the operator endpoint).
    /// The live consumer keeps running: its events for orders not replayed yet wait (gap) and are
    /// brought back until the replay has passed them.
    pub async fn rebuild(&self, token: &CancellationToken) -> Result<ReplayReport, ReplayError> {
        let started = Instant::now();
        self.metrics.rebuild_running.set(1);
        self.metrics.rebuild_position.set(0);
        tracing::info!("rebuild: dropping the projections and replaying from position 0");
        let result = async {
            projection::reset(&self.pool).await?;
            self.replay(0, token, |position, head| {
                self.metrics.rebuild_position.set(position);
                self.metrics.rebuild_target.set(head);
                let mut status = lock(&self.rebuild);
                status.position = position;
                status.target = head;
            })
            .await
        }
        .await;
        self.metrics.rebuild_running.set(0);
        match &result {
            Ok(r) => {
                self.metrics.rebuilds.with_label_values(&["done"]).inc();
                tracing::info!(applied = r.applied, duplicates = r.duplicates, position = r.position, head = r.head,
                               elapsed = ?started.elapsed(), "rebuild done");
            }
            Err(error) => {
                self.metrics.rebuilds.with_label_values(&["failed"]).inc();
                tracing::error!(%error, "rebuild failed");
            }
        }
        result
    }

    /// Ask the rebuild job for a rebuild; `false` if one runs already.
    pub fn request_rebuild(&self) -> bool {
        let mut status = lock(&self.rebuild);
        if status.running {
            return false;
        }
        *status = RebuildStatus { running: true, started_at: Some(Utc::now()), ..Default::default() };
        drop(status);
        self.requested.notify_one();
        true
    }

    pub fn rebuild_status(&self) -> RebuildStatus {
        lock(&self.rebuild).clone()
    }

    fn rebuild_running(&self) -> bool {
        lock(&self.rebuild).running
    }

    /// The rebuild job: runs each requested rebuild until `token` is cancelled.
    pub async fn rebuild_job(self, token: CancellationToken) {
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = self.requested.notified() => {}
            }
            let result = self.rebuild(&token).await;
            let mut status = lock(&self.rebuild);
            status.running = false;
            status.finished_at = Some(Utc::now());
            match result {
                Ok(report) => status.report = Some(report),
                Err(e) => status.error = Some(e.to_string()),
            }
        }
    }

    /// Move the watermark as far as the applied positions allow; the new watermark.
    async fn advance_watermark(&self) -> Result<i64, sqlx::Error> {
        let watermark = projection::advance_watermark(&self.pool).await?;
        self.metrics.watermark.set(watermark);
        Ok(watermark)
    }

    /// One poll: the head from the feed, the watermark from the applied positions, the lag.
    pub async fn poll(&self) -> Result<(i64, i64), String> {
        let head = self.feed.page(0, Some(1)).await;
        let watermark = self.advance_watermark().await.map_err(|e| e.to_string())?;
        let mut seen = lock(&self.seen);
        seen.watermark = watermark;
        match head {
            Ok(page) => {
                seen.head = Some(page.head);
                seen.feed_error = None;
                self.metrics.head.set(page.head);
                self.metrics.lag.set((page.head - watermark).max(0));
                Ok((page.head, watermark))
            }
            Err(e) => {
                self.metrics.feed_errors.with_label_values(&[e.reason()]).inc();
                seen.feed_error = Some(e.to_string());
                Err(e.to_string())
            }
        }
    }

    /// The poller job: every `interval`, [`Projector::poll`]; when the watermark has stood below
    /// the head for `catch_up_after` (an event that never arrived, or history from before the
    /// queue existed), replay the feed from the watermark.
    pub async fn poll_job(self, interval: Duration, catch_up_after: Duration, token: CancellationToken) {
        let mut stuck: Option<(i64, Instant)> = None;
        loop {
            match self.poll().await {
                Ok((head, watermark)) if watermark < head && !self.rebuild_running() => {
                    let since = match stuck {
                        Some((w, since)) if w == watermark => since,
                        _ => Instant::now(),
                    };
                    stuck = Some((watermark, since));
                    if since.elapsed() >= catch_up_after {
                        tracing::info!(watermark, head, "catching up from the feed");
                        match self.replay(watermark, &token, |_, _| {}).await {
                            Ok(r) => tracing::info!(applied = r.applied, position = r.position, "caught up"),
                            Err(error) => tracing::warn!(%error, "catch-up stopped"),
                        }
                        stuck = None;
                    }
                }
                Ok(_) => stuck = None,
                Err(error) => tracing::warn!(%error, "cannot measure the lag"),
            }
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// The readiness entry: ready while the feed answers and the lag is at most the threshold.
    pub fn readiness(&self) -> Result<Value, Value> {
        let seen = lock(&self.seen).clone();
        let rebuilding = self.rebuild_running();
        let threshold = self.lag_threshold;
        match (seen.head, seen.feed_error) {
            (_, Some(error)) => Err(json!({"status": "feed_unreachable", "error": error, "watermark": seen.watermark,
                                          "rebuilding": rebuilding})),
            (None, None) => Err(json!({"status": "lag_unknown", "error": "the feed has not been read yet"})),
            (Some(head), None) => {
                let lag = (head - seen.watermark).max(0);
                let detail = json!({"lag": lag, "head": head, "watermark": seen.watermark, "threshold": threshold,
                                    "rebuilding": rebuilding});
                if lag > threshold { Err(detail) } else { Ok(detail) }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
