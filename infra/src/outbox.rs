//! The transactional outbox and its relay.
//!
//! Writers call [`enqueue`] inside the transaction that changes their state; the rows become
//! visible on commit, and a `NOTIFY outbox` (sent by the same statement, delivered on commit)
//! wakes the relays of every process on this database. After committing, a writer in this
//! process also calls [`OutboxWaker::wake`] so the local relay starts at once.
//!
//! The [`Relay`] claims rows with `FOR UPDATE SKIP LOCKED` (several relays may run), only a
//! saga's oldest row (so a saga's messages go out in order), publishes the batch with confirms,
//! deletes what the broker confirmed, and puts back what failed with a backoff, so one bad row
//! never stalls the rest. It also polls slowly, because `LISTEN` misses notifications sent while
//! it reconnects.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use contracts::Meta;
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::amqp::{Outgoing, Publisher};
use crate::metrics::Metrics;

/// The `LISTEN`/`NOTIFY` channel the relays wait on.
pub const CHANNEL: &str = "outbox";

/// This process's id in the `NOTIFY` payload. A relay ignores the notifications of its own
/// process: the [`OutboxWaker`] woke it already, right after the commit, so without this every
/// commit would cost a second, empty drain. (Instances that share one test process share the id;
/// each still wakes its own relay.)
pub static INSTANCE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| Uuid::new_v4().simple().to_string());

/// Queue `messages` in the outbox inside the caller's transaction (one statement, one round trip),
/// and record each one's `send` span ([`crate::telemetry::sent`]).
pub async fn enqueue(conn: &mut PgConnection, messages: &[Outgoing]) -> Result<(), sqlx::Error> {
    if messages.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "WITH ins AS ({}) SELECT pg_notify('{CHANNEL}', $1) FROM (SELECT count(*) FROM ins) AS done",
        Batch::insert_sql(2)
    );
    Batch::new(messages).bind(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(INSTANCE.as_str())).execute(conn).await?;
    Batch::sent(messages);
    Ok(())
}

/// Messages bound as the column arrays of one outbox `INSERT`, for a writer that queues them in
/// the same statement as its own change (a data-modifying CTE), saving a round trip. The statement
/// must also `NOTIFY` [`CHANNEL`] with [`INSTANCE`] when it queued anything, as [`enqueue`] does,
/// and the caller records the sends with [`Batch::sent`] once the statement succeeded.
pub struct Batch(Columns);

impl Batch {
    /// How many parameters [`Batch::insert_sql`] takes.
    pub const PARAMS: usize = 13;

    pub fn new(messages: &[Outgoing]) -> Self {
        let mut c = Columns::default();
        for m in messages {
            c.push(m);
        }
        Batch(c)
    }

    /// `INSERT INTO outbox ... RETURNING 1` on parameters `$first` to `$first + 12` (bound by
    /// [`Batch::bind`], in this order after the caller's own); inserts nothing for no messages.
    pub fn insert_sql(first: usize) -> String {
        let p: Vec<String> = (first..first + Self::PARAMS).map(|i| format!("${i}")).collect();
        format!(
            "INSERT INTO outbox (message_id, saga_id, exchange, routing_key, mandatory, message_type, causation_id,
                                 idempotency_key, attempt, traceparent, schema_version, created_at, body)
             SELECT m, s, e, r, md, t, c, k, a, tp, v, ts, b
             FROM UNNEST({}::uuid[], {}::uuid[], {}::text[], {}::text[], {}::bool[], {}::text[], {}::uuid[],
                         {}::text[], {}::int4[], {}::text[], {}::int4[], {}::timestamptz[], {}::bytea[])
                  WITH ORDINALITY AS u(m, s, e, r, md, t, c, k, a, tp, v, ts, b, n)
             ORDER BY n
             RETURNING 1",
            p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11], p[12]
        )
    }

    /// Bind the column arrays after the parameters `q` already has.
    pub fn bind<'q>(
        self,
        q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        let c = self.0;
        q.bind(c.message_id)
            .bind(c.saga_id)
            .bind(c.exchange)
            .bind(c.routing_key)
            .bind(c.mandatory)
            .bind(c.message_type)
            .bind(c.causation_id)
            .bind(c.idempotency_key)
            .bind(c.attempt)
            .bind(c.traceparent)
            .bind(c.schema_version)
            .bind(c.created_at)
            .bind(c.body)
    }

    /// Record each queued message's `send` span.
    pub fn sent(messages: &[Outgoing]) {
        for m in messages {
            crate::telemetry::sent(m);
        }
    }
}

/// Column arrays for `UNNEST`.
#[derive(Default)]
struct Columns {
    message_id: Vec<Uuid>,
    saga_id: Vec<Uuid>,
    exchange: Vec<String>,
    routing_key: Vec<String>,
    mandatory: Vec<bool>,
    message_type: Vec<String>,
    causation_id: Vec<Option<Uuid>>,
    idempotency_key: Vec<Option<String>>,
    attempt: Vec<i32>,
    traceparent: Vec<Option<String>>,
    schema_version: Vec<i32>,
    created_at: Vec<DateTime<Utc>>,
    body: Vec<Vec<u8>>,
}

impl Columns {
    fn push(&mut self, m: &Outgoing) {
        self.message_id.push(m.meta.message_id);
        self.saga_id.push(m.meta.saga_id);
        self.exchange.push(m.exchange.clone());
        self.routing_key.push(m.routing_key.clone());
        self.mandatory.push(m.mandatory);
        self.message_type.push(m.meta.message_type.clone());
        self.causation_id.push(m.meta.causation_id);
        self.idempotency_key.push(m.meta.idempotency_key.clone());
        self.attempt.push(i32::try_from(m.meta.attempt).unwrap_or(i32::MAX));
        self.traceparent.push(m.meta.traceparent.clone());
        self.schema_version.push(i32::try_from(m.meta.schema_version).unwrap_or(1));
        self.created_at.push(m.meta.timestamp);
        self.body.push(m.body.clone());
    }
}

/// Wakes this process's relay right after a commit that queued messages. Cheap to clone.
#[derive(Clone, Default)]
pub struct OutboxWaker(Arc<Notify>);

impl OutboxWaker {
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    message_id: Uuid,
    saga_id: Uuid,
    exchange: String,
    routing_key: String,
    mandatory: bool,
    message_type: String,
    causation_id: Option<Uuid>,
    idempotency_key: Option<String>,
    attempt: i32,
    traceparent: Option<String>,
    schema_version: i32,
    created_at: DateTime<Utc>,
    body: Vec<u8>,
    publish_attempts: i32,
    /// The saga has a later row queued behind this one (ready for the next batch).
    more: bool,
}

impl Row {
    fn to_outgoing(&self) -> Outgoing {
        Outgoing {
            exchange: self.exchange.clone(),
            routing_key: self.routing_key.clone(),
            mandatory: self.mandatory,
            meta: Meta {
                message_id: self.message_id,
                saga_id: self.saga_id,
                message_type: self.message_type.clone(),
                timestamp: self.created_at,
                causation_id: self.causation_id,
                schema_version: u32::try_from(self.schema_version).unwrap_or(1),
                traceparent: self.traceparent.clone(),
                idempotency_key: self.idempotency_key.clone(),
                attempt: u32::try_from(self.attempt).unwrap_or(1),
            },
            body: self.body.clone(),
            extra_headers: Vec::new(),
        }
    }
}

/// Publishes the outbox. One per process; several processes may share a database.
#[derive(Clone)]
pub struct Relay {
    pub pool: PgPool,
    pub publisher: Arc<Publisher>,
    pub waker: OutboxWaker,
    pub metrics: Metrics,
    pub batch_size: i64,
    pub poll_interval: Duration,
}

impl Relay {
    /// Run until `shutdown`; the batch in hand is finished first.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut listener = match PgListener::connect_with(&self.pool).await {
            Ok(mut l) => match l.listen(CHANNEL).await {
                Ok(()) => Some(l),
                Err(error) => {
                    tracing::warn!(%error, "outbox relay cannot LISTEN; polling only");
                    None
                }
            },
            Err(error) => {
                tracing::warn!(%error, "outbox relay cannot connect a listener; polling only");
                None
            }
        };
        let mut last_sample = Instant::now() - self.poll_interval;
        loop {
            self.drain().await;
            if last_sample.elapsed() >= self.poll_interval {
                self.sample_pending().await;
                last_sample = Instant::now();
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.waker.0.notified() => {},
                _ = tokio::time::sleep(self.poll_interval) => {},
                n = recv(&mut listener) => {
                    if let Err(error) = n {
                        // The listener reconnects on its next use; while the database is away,
                        // wait a poll interval instead of spinning on the same error.
                        tracing::warn!(%error, "outbox listener failed; it reconnects, polling covers the gap");
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = self.waker.0.notified() => {},
                            _ = tokio::time::sleep(self.poll_interval) => {},
                        }
                    }
                },
            }
        }
        // Publish what the last in-flight work committed before stopping.
        self.drain().await;
        tracing::info!("outbox relay stopped");
    }

    /// Publish until the outbox has nothing ready.
    pub async fn drain(&self) {
        loop {
            match self.publish_batch().await {
                // A batch holds at most one row per saga (its oldest), so a saga with several
                // queued rows needs several batches: keep going while more is known to be ready.
                // Rows committed after this batch's snapshot come with a wake-up of their own.
                Ok(true) => continue,
                Ok(false) => return,
                Err(error) => {
                    tracing::warn!(%error, "outbox batch failed; will try again");
                    return;
                }
            }
        }
    }

    /// Claim, publish and settle one batch. Returns whether more rows are known to be ready now
    /// (the batch was full, or a saga in it has a row queued behind the one published).
    async fn publish_batch(&self) -> Result<bool, sqlx::Error> {
        // Deleting published rows need not wait for the disk: if this commit is lost in a crash,
        // the rows are published again, and every consumer deduplicates. Saves an fsync per batch.
        let mut tx = self.pool.begin_with("BEGIN; SET LOCAL synchronous_commit = off").await?;
        let rows: Vec<Row> = sqlx::query_as(
            "DELETE FROM outbox WHERE id IN (
                SELECT o.id FROM outbox o
                WHERE o.next_attempt_at <= now()
                  AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.saga_id = o.saga_id AND p.id < o.id)
                ORDER BY o.id
                LIMIT $1
                FOR UPDATE SKIP LOCKED)
             RETURNING id, message_id, saga_id, exchange, routing_key, mandatory, message_type, causation_id,
                       idempotency_key, attempt, traceparent, schema_version, created_at, body, publish_attempts,
                       EXISTS (SELECT 1 FROM outbox n WHERE n.saga_id = outbox.saga_id AND n.id > outbox.id) AS more",
        )
        .bind(self.batch_size)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(false);
        }
        let more = rows.len() as i64 >= self.batch_size || rows.iter().any(|r| r.more);
        let mut rows = rows;
        rows.sort_by_key(|r| r.id);
        let started = Instant::now();
        let messages: Vec<Outgoing> = rows.iter().map(Row::to_outgoing).collect();
        let results = self.publisher.publish_batch(&messages).await;
        self.metrics.outbox_publish_seconds.observe(started.elapsed().as_secs_f64());
        for (row, result) in rows.iter().zip(&results) {
            match result {
                Ok(()) => self.metrics.outbox_published.inc(),
                Err(error) => {
                    self.metrics.outbox_failures.with_label_values(&[error.code()]).inc();
                    tracing::warn!(saga_id = %row.saga_id, message_id = %row.message_id, message_type = %row.message_type,
                                   attempts = row.publish_attempts + 1, %error, "outbox publish failed; row kept for a later try");
                    // Put the row back, same id (so per-saga order holds), with a backoff.
                    let backoff_ms = 100_i64 << row.publish_attempts.clamp(0, 6);
                    sqlx::query(
                        "INSERT INTO outbox (id, message_id, saga_id, exchange, routing_key, mandatory, message_type, causation_id,
                                             idempotency_key, attempt, traceparent, schema_version, created_at, body,
                                             publish_attempts, next_attempt_at, last_error)
                         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15, now() + make_interval(secs => $16::float8 / 1000), $17)",
                    )
                    .bind(row.id)
                    .bind(row.message_id)
                    .bind(row.saga_id)
                    .bind(&row.exchange)
                    .bind(&row.routing_key)
                    .bind(row.mandatory)
                    .bind(&row.message_type)
                    .bind(row.causation_id)
                    .bind(&row.idempotency_key)
                    .bind(row.attempt)
                    .bind(&row.traceparent)
                    .bind(row.schema_version)
                    .bind(row.created_at)
                    .bind(&row.body)
                    .bind(row.publish_attempts + 1)
                    .bind(backoff_ms as f64)
                    .bind(error.to_string())
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(more)
    }

    async fn sample_pending(&self) {
        let sampled = sqlx::query_as::<_, (i64, f64)>(
            "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at))::float8, 0) FROM outbox",
        )
        .fetch_one(&self.pool)
        .await;
        match sampled {
            Ok((n, age)) => {
                self.metrics.outbox_pending.set(n);
                self.metrics.outbox_oldest_age_seconds.set(age.max(0.0));
            }
            Err(error) => tracing::debug!(%error, "cannot sample the outbox"),
        }
    }
}

/// Wait for a notification from another process (this process's own commits wake the relay
/// through its [`OutboxWaker`]); never resolves without a listener (polling then does the work).
async fn recv(listener: &mut Option<PgListener>) -> Result<(), sqlx::Error> {
    let Some(l) = listener else { return std::future::pending().await };
    loop {
        if l.recv().await?.payload() != INSTANCE.as_str() {
            return Ok(());
        }
    }
}
