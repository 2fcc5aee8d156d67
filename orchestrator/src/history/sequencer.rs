//! The history sequencer: gives committed events their global position and queues each on
//! `saga.events` (key `history.<type>`) through the outbox, in one transaction per batch.
//!
//! Why positions are not taken at append time: a sequence value is taken before its transaction
//! commits, so a reader could see position 11 commit before 10 and skip 10 for ever. The sequencer
//! numbers only what has committed, under a transaction-level advisory lock (one sequencer at a
//! time across orchestrators), continuing from the highest position: positions become visible in
//! order, without gaps. Within a saga, an append only succeeds after the one before it committed,
//! so numbering in row order keeps each stream's order.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use contracts::Meta;
use contracts::topology::EVENTS_EXCHANGE;
use infra::amqp::Outgoing;
use infra::outbox::{self, OutboxWaker};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::feed::{COLUMNS, Row};
use crate::metrics::SagaMetrics;

/// Most events numbered in one transaction.
const BATCH: i64 = 500;

/// The advisory lock that keeps one sequencer at a time ("saga_history" in ASCII).
const LOCK_KEY: i64 = 0x7361_6761_6869_7374;

/// Wakes this process's sequencer right after a commit that appended events. Cheap to clone.
#[derive(Clone, Default)]
pub struct SequencerWaker(Arc<Notify>);

impl SequencerWaker {
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

/// The sequencer's job.
#[derive(Clone)]
pub struct Sequencer {
    pub pool: PgPool,
    pub waker: SequencerWaker,
    pub outbox: OutboxWaker,
    pub metrics: SagaMetrics,
    /// How often it looks without being woken (for events other orchestrators appended).
    pub interval: Duration,
}

impl Sequencer {
    /// Number and queue batches until none is left, then wait for a wake-up or the interval; stop
    /// when `shutdown` fires.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            loop {
                match self.sequence().await {
                    Ok(0) => break,
                    Ok(_) => self.outbox.wake(),
                    Err(error) => {
                        tracing::warn!(%error, "cannot number new events; trying again shortly");
                        break;
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.waker.0.notified() => {}
                () = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    /// Number one batch of committed events and queue them; returns how many. Four round trips:
    /// the lock, numbering (one statement that reads the head and the oldest unnumbered rows and
    /// returns them numbered), the outbox insert, the commit.
    pub async fn sequence(&self) -> Result<usize, sqlx::Error> {
        static NUMBER: LazyLock<String> = LazyLock::new(|| {
            let returning: Vec<String> = COLUMNS.split(", ").map(|c| format!("e.{c}")).collect();
            format!(
                "WITH head AS (SELECT coalesce(max(position), 0) AS h FROM saga_events),
                      next AS (SELECT id, row_number() OVER (ORDER BY id) AS n
                               FROM (SELECT id FROM saga_events WHERE position IS NULL ORDER BY id LIMIT $1) AS pending)
                 UPDATE saga_events e SET position = head.h + next.n FROM head, next WHERE e.id = next.id
                 RETURNING {}",
                returning.join(", ")
            )
        });
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(LOCK_KEY).execute(&mut *tx).await?;
        let mut rows: Vec<Row> =
            sqlx::query_as(sqlx::AssertSqlSafe(NUMBER.as_str())).bind(BATCH).fetch_all(&mut *tx).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        rows.sort_by_key(|r| r.position);
        let head = rows.last().and_then(|r| r.position).unwrap_or_default();
        let messages: Vec<Outgoing> =
            rows.iter().map(|row| self.message(row, row.position.unwrap_or_default())).collect();
        outbox::enqueue(&mut tx, &messages).await?;
        tx.commit().await?;
        for m in &messages {
            let t = m.routing_key.strip_prefix(contracts::history::ROUTING_PREFIX).unwrap_or(&m.routing_key);
            self.metrics.history_sequenced.with_label_values(&[t]).inc();
        }
        self.metrics.history_head.set(head);
        Ok(rows.len())
    }

    fn message(&self, row: &Row, position: i64) -> Outgoing {
        let (event, error) = row.to_history(position);
        if let Some(error) = error {
            tracing::error!(saga_id = %row.saga_id, position, %error, "event published as stored: this build cannot upcast it");
        }
        let mut meta = Meta::new(row.saga_id, event.routing_key());
        meta.causation_id = row.cause_message_id;
        // Not a span of the saga's trace: the sequencer publishes after the fact, under no span of
        // the flow, and the event's own cause is in its metadata.
        meta.traceparent = None;
        Outgoing::new(EVENTS_EXCHANGE, false, meta, &event)
    }
}
