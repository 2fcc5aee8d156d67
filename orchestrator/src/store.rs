//! Persistence of sagas: the `sagas` row (a snapshot of the state, the stream's version, and the
//! columns queries need), the append-only `saga_events` stream (the event store, see
//! [`history`](crate::history)), and the queries behind the status API and the timeout scanner.
//! Every append states the version it expects and fails with [`StoreError::Conflict`] when another
//! got there first. Every write happens inside the caller's transaction, with the outbox rows.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use infra::amqp::Outgoing;
use infra::outbox;
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor, Row};
use uuid::Uuid;

use crate::history::{Recorded, Stored};
use crate::kernel::SagaState;

/// A saga as the engine loads it: its snapshot and the events after it ([`Locked::tail`], folded
/// by [`history::catch_up`](crate::history::catch_up)).
#[derive(Debug, Clone)]
pub struct Locked {
    pub id: Uuid,
    /// The definition's name and the version the saga started on (and runs to its end on).
    pub definition: String,
    pub definition_version: u32,
    pub state: SagaState,
    pub data: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the awaited step (or compensation) was first sent.
    pub step_since: DateTime<Utc>,
    /// The stream's version: the number of events in it; the next append expects it.
    pub version: i64,
    /// The version `state` was snapshotted at.
    pub snapshot_version: i64,
    /// The events after the snapshot, oldest first (empty once folded).
    pub tail: Vec<Stored>,
}

#[derive(sqlx::FromRow)]
struct LockedRow {
    id: Uuid,
    definition: String,
    definition_version: i32,
    state: Value,
    data: Value,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    step_since: DateTime<Utc>,
    version: i64,
    snapshot_version: i64,
    tail: Value,
}

/// The events of saga `sagas.id` after its snapshot, as a JSON array (oldest first).
const TAIL: &str = "coalesce((SELECT jsonb_agg(jsonb_build_object('version', e.version, 'type', e.type,
                        'schema_version', e.schema_version, 'payload', e.payload, 'at', e.at) ORDER BY e.version)
                      FROM saga_events e WHERE e.saga_id = sagas.id AND e.version > sagas.snapshot_version), '[]')
                    AS tail";

static LOCKED_COLUMNS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "id, definition, definition_version, state, data, created_at, updated_at, step_since, version, snapshot_version, {TAIL}"
    )
});

/// A stored state that no longer decodes (a bug or a manual edit): the saga cannot be advanced.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error("saga {id} has a state that cannot be read: {source}")]
    CorruptState {
        id: Uuid,
        #[source]
        source: serde_json::Error,
    },
    /// Another append to the stream committed after this one's load: load again and decide again.
    #[error("saga {id} moved past version {expected} meanwhile")]
    Conflict { id: Uuid, expected: i64 },
}

impl LockedRow {
    fn into_locked(self) -> Result<Locked, StoreError> {
        let state =
            serde_json::from_value(self.state).map_err(|source| StoreError::CorruptState { id: self.id, source })?;
        let tail =
            serde_json::from_value(self.tail).map_err(|source| StoreError::CorruptState { id: self.id, source })?;
        Ok(Locked {
            id: self.id,
            definition: self.definition,
            definition_version: u32::try_from(self.definition_version).unwrap_or(0),
            state,
            data: self.data,
            created_at: self.created_at,
            updated_at: self.updated_at,
            step_since: self.step_since,
            version: self.version,
            snapshot_version: self.snapshot_version,
            tail,
        })
    }
}

/// Record a reply's message id in the inbox and load its saga, in one round trip. Returns
/// `(fresh, saga)`: `fresh` is false when the reply was seen before; `saga` is `None` when no
/// such saga exists (then `fresh` says nothing: the caller rolls back either way). No lock: the
/// append that follows expects the loaded version.
pub async fn dedupe_and_load(
    conn: &mut PgConnection,
    message_id: Uuid,
    message_type: &str,
    saga_id: Uuid,
) -> Result<(bool, Option<Locked>), StoreError> {
    #[derive(sqlx::FromRow)]
    struct Fresh {
        fresh: i64,
        #[sqlx(flatten)]
        saga: LockedRow,
    }
    // The inbox insert runs whether or not the saga exists (a data-modifying WITH always runs to
    // its end); a duplicate's transaction rolls back at once.
    let row: Option<Fresh> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH i AS (
            INSERT INTO inbox (key, message_id, message_type, saga_id) VALUES ($1, $2, $3, $4)
            ON CONFLICT (key) DO NOTHING RETURNING 1
         )
         SELECT (SELECT count(*) FROM i) AS fresh, {} FROM sagas WHERE id = $4",
        *LOCKED_COLUMNS
    )))
    .bind(message_id.to_string())
    .bind(message_id)
    .bind(message_type)
    .bind(saga_id)
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        None => Ok((true, None)),
        Some(r) if r.fresh == 0 => Ok((false, None)),
        Some(r) => Ok((true, Some(r.saga.into_locked()?))),
    }
}

/// Load a saga (no lock: the append that follows expects the loaded version); `None` if there is
/// no such saga.
pub async fn load(conn: &mut PgConnection, saga_id: Uuid) -> Result<Option<Locked>, StoreError> {
    let row: Option<LockedRow> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {} FROM sagas WHERE id = $1", *LOCKED_COLUMNS)))
            .bind(saga_id)
            .fetch_optional(&mut *conn)
            .await?;
    row.map(LockedRow::into_locked).transpose()
}

/// Lock a saga whose deadline has passed; `None` if it is not due any more or another
/// orchestrator holds it.
pub async fn lock_due(conn: &mut PgConnection, saga_id: Uuid) -> Result<Option<Locked>, StoreError> {
    let row: Option<LockedRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM sagas WHERE id = $1 AND deadline <= now() FOR UPDATE SKIP LOCKED",
        *LOCKED_COLUMNS
    )))
    .bind(saga_id)
    .fetch_optional(conn)
    .await?;
    row.map(LockedRow::into_locked).transpose()
}

/// Sagas whose deadline passed, oldest deadline first, with the attempt it belonged to.
pub async fn due<'e>(db: impl PgExecutor<'e>, limit: i64) -> Result<Vec<(Uuid, i32)>, sqlx::Error> {
    sqlx::query_as("SELECT id, attempt FROM sagas WHERE deadline <= now() ORDER BY deadline LIMIT $1")
        .bind(limit)
        .fetch_all(db)
        .await
}

/// The earliest pending deadline, to sleep until it.
pub async fn next_deadline<'e>(db: impl PgExecutor<'e>) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar("SELECT min(deadline) FROM sagas WHERE deadline IS NOT NULL").fetch_one(db).await
}

/// One event to append: what it records, and the timeline's readable facts about it.
#[derive(Debug, Clone)]
pub struct TimelineEntry<'a> {
    pub event: Recorded,
    pub kind: &'static str,
    pub status: &'a str,
    pub step: Option<&'a str>,
    pub failure_reason: Option<&'a str>,
    pub note: &'a str,
    pub cause_message_id: Option<Uuid>,
    pub cause_type: Option<&'a str>,
    pub sent: Value,
}

/// The columns of `saga_events` an append writes, in the order [`bind_entry`] binds them.
const EVENT_COLUMNS: &str = "saga_id, version, type, schema_version, payload, kind, status, step, failure_reason, note, cause_message_id, cause_type, sent";

/// `SELECT` list of the values of an appended event, from `src` (`id`, `version`) and parameters
/// from `$first` on.
fn event_values(first: usize) -> String {
    let p: Vec<String> = (first..first + 11).map(|i| format!("${i}")).collect();
    format!("id, version, {}", p.join(", "))
}

/// Bind an entry's eleven values (see [`event_values`]).
fn bind_entry<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    e: &'q TimelineEntry<'q>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    q.bind(e.event.event_type.as_str())
        .bind(e.event.schema_version())
        .bind(&e.event.payload)
        .bind(e.kind)
        .bind(e.status)
        .bind(e.step)
        .bind(e.failure_reason)
        .bind(e.note)
        .bind(e.cause_message_id)
        .bind(e.cause_type)
        .bind(&e.sent)
}

/// Columns of a saga row after a transition.
#[derive(Debug, Clone)]
pub struct SagaWrite<'a> {
    pub id: Uuid,
    pub definition: &'a str,
    pub definition_version: u32,
    pub state: &'a SagaState,
    pub data: &'a Value,
    pub deadline: Option<DateTime<Utc>>,
    pub idempotency_key: Option<&'a str>,
    /// The stream version the append expects (the loaded one).
    pub expected_version: i64,
    /// Write `state` as the new snapshot.
    pub snapshot: bool,
    /// The awaited step, its action or the status changed: its latency clock restarts.
    pub step_changed: bool,
}

impl SagaWrite<'_> {
    fn state_json(&self) -> Value {
        serde_json::to_value(self.state).unwrap_or(Value::Null)
    }
}

/// Insert a new saga (stream version 1, snapshotted) and its `saga.started` event. Returns `false`
/// (nothing written) when a saga with the same idempotency key exists.
pub async fn insert(conn: &mut PgConnection, s: &SagaWrite<'_>, e: &TimelineEntry<'_>) -> Result<bool, sqlx::Error> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH s AS (
                INSERT INTO sagas (id, definition, status, current_step, state, data, deadline, attempt, idempotency_key,
                                   failure_reason, finished_at, definition_version, version, snapshot_version)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, CASE WHEN $11 THEN now() END, $12, 1, 1)
                ON CONFLICT (idempotency_key) DO NOTHING
                RETURNING id, version
             )
             INSERT INTO saga_events ({EVENT_COLUMNS}) SELECT {} FROM s RETURNING saga_id",
            event_values(13)
        )
    });
    let q = sqlx::query(sqlx::AssertSqlSafe(SQL.as_str()))
        .bind(s.id)
        .bind(s.definition)
        .bind(s.state.status.as_str())
        .bind(s.state.current_step_name())
        .bind(s.state_json())
        .bind(s.data)
        .bind(s.deadline)
        .bind(i32::try_from(s.state.attempt).unwrap_or(i32::MAX))
        .bind(s.idempotency_key)
        .bind(&s.state.failure_reason)
        .bind(s.state.status.is_terminal())
        .bind(i32::try_from(s.definition_version).unwrap_or(i32::MAX));
    let inserted = bind_entry(q, e).fetch_optional(conn).await?;
    Ok(inserted.is_some())
}

/// Append a transition's event at `expected_version + 1`, write the saga's columns (and its
/// snapshot when asked) and queue `outgoing` in the outbox, all in one statement (one round
/// trip). [`StoreError::Conflict`] when the stream moved past the expected version: the caller
/// rolls back.
pub async fn update(
    conn: &mut PgConnection,
    s: &SagaWrite<'_>,
    e: &TimelineEntry<'_>,
    outgoing: &[Outgoing],
) -> Result<(), StoreError> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH s AS (
                UPDATE sagas SET status = $2, current_step = $3, deadline = $5, attempt = $6,
                                 failure_reason = $7, version = version + 1, updated_at = now(), attention = NULL,
                                 state = CASE WHEN $10 THEN $4 ELSE state END,
                                 snapshot_version = CASE WHEN $10 THEN version + 1 ELSE snapshot_version END,
                                 finished_at = CASE WHEN $8 THEN coalesce(finished_at, now()) END,
                                 incident_since = CASE WHEN $9 THEN coalesce(incident_since, now()) END,
                                 step_since = CASE WHEN $11 THEN now() ELSE step_since END
                WHERE id = $1 AND version = $12
                RETURNING id, version
             ), e AS (
                INSERT INTO saga_events ({EVENT_COLUMNS}) SELECT {} FROM s
             ), o AS ({})
             SELECT (SELECT count(*) FROM s) AS applied,
                    (SELECT count(pg_notify('{}', $13)) FROM (SELECT count(*) AS n FROM o) AS queued WHERE queued.n > 0)
                        AS notified",
            event_values(14),
            outbox::Batch::insert_sql(25),
            outbox::CHANNEL
        )
    });
    let q = sqlx::query(sqlx::AssertSqlSafe(SQL.as_str()))
        .bind(s.id)
        .bind(s.state.status.as_str())
        .bind(s.state.current_step_name())
        .bind(s.state_json())
        .bind(s.deadline)
        .bind(i32::try_from(s.state.attempt).unwrap_or(i32::MAX))
        .bind(&s.state.failure_reason)
        .bind(s.state.status.is_terminal())
        .bind(s.state.incident.is_some())
        .bind(s.snapshot)
        .bind(s.step_changed)
        .bind(s.expected_version)
        .bind(outbox::INSTANCE.as_str());
    let row = outbox::Batch::new(outgoing).bind(bind_entry(q, e)).fetch_one(conn).await?;
    if row.try_get::<i64, _>("applied")? == 0 {
        return Err(StoreError::Conflict { id: s.id, expected: s.expected_version });
    }
    outbox::Batch::sent(outgoing);
    Ok(())
}

/// Append an event that changes no state (an ignored reply, a notice) at `expected_version + 1`,
/// setting the saga's `attention` when one is given. [`StoreError::Conflict`] as for [`update`].
pub async fn note(
    conn: &mut PgConnection,
    saga_id: Uuid,
    expected_version: i64,
    e: &TimelineEntry<'_>,
    attention: Option<&str>,
) -> Result<(), StoreError> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH s AS (
                UPDATE sagas SET version = version + 1, attention = coalesce($3, attention)
                WHERE id = $1 AND version = $2
                RETURNING id, version
             )
             INSERT INTO saga_events ({EVENT_COLUMNS}) SELECT {} FROM s RETURNING version",
            event_values(4)
        )
    });
    let q = sqlx::query(sqlx::AssertSqlSafe(SQL.as_str())).bind(saga_id).bind(expected_version).bind(attention);
    let appended = bind_entry(q, e).fetch_optional(conn).await?;
    appended.map(|_| ()).ok_or(StoreError::Conflict { id: saga_id, expected: expected_version })
}

/// End a saga the engine cannot read (its stored state or order does not decode): `FAILED`, no
/// deadline, the reason in `failure_reason` and `attention`, and a `saga.abandoned` event listing
/// what was `sent` to undo what it held. One statement, which touches neither column it cannot
/// read. Returns whether the saga was still unfinished (the caller rolls back otherwise). The
/// caller holds the row lock ([`remains`]).
pub async fn fail_unreadable(
    conn: &mut PgConnection,
    saga_id: Uuid,
    reason: &str,
    sent: &Value,
) -> Result<bool, sqlx::Error> {
    let abandoned = Recorded::abandoned(reason);
    let n: i64 = sqlx::query_scalar(
        "WITH s AS (
            UPDATE sagas SET status = 'FAILED', deadline = NULL, failure_reason = $2, attention = $2,
                             finished_at = now(), updated_at = now(), version = version + 1, incident_since = NULL
            WHERE id = $1 AND status NOT IN ('COMPLETED', 'COMPENSATED', 'FAILED')
            RETURNING id, current_step, version
         ), e AS (
            INSERT INTO saga_events (saga_id, version, type, schema_version, payload, kind, status, step,
                                     failure_reason, note, sent)
            SELECT id, version, $4, $5, $6, 'failed', 'FAILED', current_step, $2, $2, $3 FROM s
         )
         SELECT count(*) FROM s",
    )
    .bind(saga_id)
    .bind(reason)
    .bind(sent)
    .bind(abandoned.event_type.as_str())
    .bind(abandoned.schema_version())
    .bind(&abandoned.payload)
    .fetch_one(conn)
    .await?;
    Ok(n > 0)
}

/// What is left of a saga that cannot be read: its definition, its order data as stored, and
/// from its timeline the types of the commands it sent and of the replies it applied. Locked.
#[derive(Debug, Clone)]
pub struct Remains {
    pub definition: String,
    pub definition_version: u32,
    pub data: Value,
    pub sent: Vec<String>,
    pub received: Vec<String>,
}

/// Lock an unfinished saga and read its [`Remains`]; `None` if it is finished or missing.
pub async fn remains(conn: &mut PgConnection, saga_id: Uuid) -> Result<Option<Remains>, sqlx::Error> {
    let row: Option<(String, i32, Value)> = sqlx::query_as(
        "SELECT definition, definition_version, data FROM sagas
         WHERE id = $1 AND status NOT IN ('COMPLETED', 'COMPENSATED', 'FAILED') FOR UPDATE",
    )
    .bind(saga_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((definition, version, data)) = row else { return Ok(None) };
    let (sent, received): (Vec<String>, Vec<String>) = sqlx::query_as(
        "SELECT coalesce((SELECT array_agg(m->>'type') FROM saga_events e, jsonb_array_elements(e.sent) m
                          WHERE e.saga_id = $1 AND m ? 'type'), '{}'),
                coalesce((SELECT array_agg(cause_type) FROM saga_events
                          WHERE saga_id = $1 AND kind = 'reply' AND cause_type IS NOT NULL), '{}')",
    )
    .bind(saga_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Some(Remains { definition, definition_version: u32::try_from(version).unwrap_or(0), data, sent, received }))
}

/// Move a due saga's deadline `by` into the future (its timeout could not be handled now).
pub async fn postpone<'e>(db: impl PgExecutor<'e>, saga_id: Uuid, by: std::time::Duration) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sagas SET deadline = now() + make_interval(secs => $2) WHERE id = $1 AND deadline IS NOT NULL")
        .bind(saga_id)
        .bind(by.as_secs_f64())
        .execute(db)
        .await?;
    Ok(())
}

/// The saga with this idempotency key: its id, status and order data.
pub async fn by_idempotency_key<'e>(
    db: impl PgExecutor<'e>,
    key: &str,
) -> Result<Option<(Uuid, String, Value)>, sqlx::Error> {
    sqlx::query_as("SELECT id, status, data FROM sagas WHERE idempotency_key = $1").bind(key).fetch_optional(db).await
}

/// A saga as the status API shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SagaView {
    pub id: Uuid,
    pub definition: String,
    pub definition_version: i32,
    pub status: String,
    pub current_step: Option<String>,
    pub state: Value,
    pub data: Value,
    pub version: i64,
    pub deadline: Option<DateTime<Utc>>,
    pub attempt: i32,
    pub failure_reason: Option<String>,
    pub attention: Option<String>,
    pub incident_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The events after the snapshot in `state` (a JSON array of [`Stored`]).
    pub tail: Value,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventView {
    pub version: i64,
    #[sqlx(rename = "type")]
    pub event_type: String,
    pub at: DateTime<Utc>,
    pub kind: String,
    pub status: String,
    pub step: Option<String>,
    pub note: String,
    pub cause_message_id: Option<Uuid>,
    pub cause_type: Option<String>,
    pub sent: Value,
}

static VIEW_COLUMNS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "id, definition, definition_version, status, current_step, state, data, version, deadline, attempt, \
         failure_reason, attention, incident_since, created_at, updated_at, finished_at, {TAIL}"
    )
});

pub async fn get<'e>(db: impl PgExecutor<'e>, id: Uuid) -> Result<Option<SagaView>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {} FROM sagas WHERE id = $1", *VIEW_COLUMNS)))
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Saga `id`'s timeline, oldest first; with `until`, only what was recorded by then.
pub async fn timeline<'e>(
    db: impl PgExecutor<'e>,
    id: Uuid,
    until: Option<DateTime<Utc>>,
) -> Result<Vec<EventView>, sqlx::Error> {
    sqlx::query_as(
        "SELECT version, type, at, kind, status, step, note, cause_message_id, cause_type, sent FROM saga_events
         WHERE saga_id = $1 AND ($2::timestamptz IS NULL OR at <= $2) ORDER BY version",
    )
    .bind(id)
    .bind(until)
    .fetch_all(db)
    .await
}

/// Which sagas a listing shows.
#[derive(Debug, Clone, Copy, Default)]
pub struct ListFilter<'a> {
    pub status: Option<&'a str>,
    /// `Some(true)`: only sagas with an open incident; `Some(false)`: only those without.
    pub incident: Option<bool>,
}

/// Sagas oldest first (ids are UUID v7, so id order is creation order), after `cursor`.
pub async fn list<'e>(
    db: impl PgExecutor<'e>,
    filter: ListFilter<'_>,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<SagaView>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM sagas
         WHERE ($1::text IS NULL OR status = $1) AND ($2::uuid IS NULL OR id > $2)
           AND ($4::bool IS NULL OR (incident_since IS NOT NULL) = $4)
         ORDER BY id LIMIT $3",
        *VIEW_COLUMNS
    )))
    .bind(filter.status)
    .bind(after)
    .bind(limit)
    .bind(filter.incident)
    .fetch_all(db)
    .await
}

/// What the unfinished sagas look like now, for gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, sqlx::FromRow)]
pub struct Census {
    pub running: i64,
    pub compensating: i64,
    /// Age of the oldest unfinished saga, in seconds (0 when there is none).
    pub oldest_age_seconds: f64,
    /// Sagas whose deadline has passed and that the scanner has not handled yet.
    pub past_deadline: i64,
    /// How long the oldest passed deadline has waited, in seconds (0 when none).
    pub scanner_lag_seconds: f64,
    pub incidents: i64,
}

/// Count the unfinished sagas (one statement over the status index).
pub async fn census<'e>(db: impl PgExecutor<'e>) -> Result<Census, sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'RUNNING') AS running,
                count(*) FILTER (WHERE status = 'COMPENSATING') AS compensating,
                coalesce(extract(epoch FROM now() - min(created_at))::float8, 0) AS oldest_age_seconds,
                count(*) FILTER (WHERE deadline < now()) AS past_deadline,
                coalesce(extract(epoch FROM now() - min(deadline) FILTER (WHERE deadline < now()))::float8, 0)
                    AS scanner_lag_seconds,
                count(*) FILTER (WHERE incident_since IS NOT NULL) AS incidents
         FROM sagas WHERE status IN ('RUNNING', 'COMPENSATING')",
    )
    .fetch_one(db)
    .await
}
