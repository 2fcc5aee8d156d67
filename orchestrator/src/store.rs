//! Persistence of sagas: the `sagas` row (state under a row lock, version counted), the
//! append-only `saga_events` timeline, and the queries behind the status API and the timeout
//! scanner. Every write happens inside the caller's transaction, together with the outbox rows.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use infra::amqp::Outgoing;
use infra::outbox;
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::kernel::SagaState;

/// A saga row as the engine needs it, locked for update.
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
}

const LOCKED_COLUMNS: &str = "id, definition, definition_version, state, data, created_at, updated_at, step_since";

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
}

impl LockedRow {
    fn into_locked(self) -> Result<Locked, StoreError> {
        let state =
            serde_json::from_value(self.state).map_err(|source| StoreError::CorruptState { id: self.id, source })?;
        Ok(Locked {
            id: self.id,
            definition: self.definition,
            definition_version: u32::try_from(self.definition_version).unwrap_or(0),
            state,
            data: self.data,
            created_at: self.created_at,
            updated_at: self.updated_at,
            step_since: self.step_since,
        })
    }
}

/// Record a reply's message id in the inbox and lock its saga, in one round trip. Returns
/// `(fresh, saga)`: `fresh` is false when the reply was seen before; `saga` is `None` when no
/// such saga exists (then `fresh` says nothing: the caller rolls back either way).
pub async fn dedupe_and_lock(
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
    // its end); a duplicate locks the row for nothing, and its transaction rolls back at once.
    let row: Option<Fresh> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH i AS (
            INSERT INTO inbox (key, message_id, message_type, saga_id) VALUES ($1, $2, $3, $4)
            ON CONFLICT (key) DO NOTHING RETURNING 1
         )
         SELECT (SELECT count(*) FROM i) AS fresh, {LOCKED_COLUMNS} FROM sagas WHERE id = $4 FOR UPDATE"
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

/// Lock a saga for update, waiting for whoever holds it; `None` if there is no such saga.
pub async fn lock(conn: &mut PgConnection, saga_id: Uuid) -> Result<Option<Locked>, StoreError> {
    let row: Option<LockedRow> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {LOCKED_COLUMNS} FROM sagas WHERE id = $1 FOR UPDATE")))
            .bind(saga_id)
            .fetch_optional(&mut *conn)
            .await?;
    row.map(LockedRow::into_locked).transpose()
}

/// Lock a saga whose deadline has passed; `None` if it is not due any more or another
/// orchestrator holds it.
pub async fn lock_due(conn: &mut PgConnection, saga_id: Uuid) -> Result<Option<Locked>, StoreError> {
    let row: Option<LockedRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {LOCKED_COLUMNS} FROM sagas WHERE id = $1 AND deadline <= now() FOR UPDATE SKIP LOCKED"
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

/// One timeline entry.
#[derive(Debug, Clone)]
pub struct TimelineEntry<'a> {
    pub kind: &'static str,
    pub status: &'a str,
    pub step: Option<&'a str>,
    pub note: &'a str,
    pub cause_message_id: Option<Uuid>,
    pub cause_type: Option<&'a str>,
    pub sent: Value,
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
}

impl SagaWrite<'_> {
    fn state_json(&self) -> Value {
        serde_json::to_value(self.state).unwrap_or(Value::Null)
    }
}

/// Insert a new saga and its first timeline entry. Returns `false` (nothing written) when a saga
/// with the same idempotency key exists.
pub async fn insert(conn: &mut PgConnection, s: &SagaWrite<'_>, e: &TimelineEntry<'_>) -> Result<bool, sqlx::Error> {
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "WITH s AS (
            INSERT INTO sagas (id, definition, status, current_step, state, data, deadline, attempt, idempotency_key,
                               failure_reason, finished_at, definition_version)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, CASE WHEN $11 THEN now() END, $18)
            ON CONFLICT (idempotency_key) DO NOTHING
            RETURNING id
         )
         INSERT INTO saga_events (saga_id, kind, status, step, note, cause_message_id, cause_type, sent)
         SELECT id, $12, $3, $13, $14, $15, $16, $17 FROM s
         RETURNING saga_id",
    )
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
    .bind(e.kind)
    .bind(e.step)
    .bind(e.note)
    .bind(e.cause_message_id)
    .bind(e.cause_type)
    .bind(&e.sent)
    .bind(i32::try_from(s.definition_version).unwrap_or(i32::MAX))
    .fetch_optional(conn)
    .await?;
    Ok(inserted.is_some())
}

/// Write a locked saga's new state, append its timeline entry and queue `outgoing` in the outbox,
/// all in one statement (one round trip).
pub async fn update(
    conn: &mut PgConnection,
    s: &SagaWrite<'_>,
    e: &TimelineEntry<'_>,
    outgoing: &[Outgoing],
) -> Result<(), sqlx::Error> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH s AS (
                UPDATE sagas SET status = $2, current_step = $3, state = $4, deadline = $5, attempt = $6,
                                 failure_reason = $7, version = version + 1, updated_at = now(), attention = NULL,
                                 finished_at = CASE WHEN $8 THEN coalesce(finished_at, now()) END,
                                 incident_since = CASE WHEN $15 THEN coalesce(incident_since, now()) END,
                                 step_since = CASE WHEN current_step IS DISTINCT FROM $3
                                                     OR state->>'action' IS DISTINCT FROM $4->>'action'
                                                     OR state->>'status' IS DISTINCT FROM $4->>'status'
                                                   THEN now() ELSE step_since END
                WHERE id = $1
                RETURNING id
             ), e AS (
                INSERT INTO saga_events (saga_id, kind, status, step, note, cause_message_id, cause_type, sent)
                SELECT id, $9, $2, $10, $11, $12, $13, $14 FROM s
             ), o AS ({})
             SELECT pg_notify('{}', $16) FROM (SELECT count(*) AS n FROM o) AS queued WHERE queued.n > 0",
            outbox::Batch::insert_sql(17),
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
        .bind(e.kind)
        .bind(e.step)
        .bind(e.note)
        .bind(e.cause_message_id)
        .bind(e.cause_type)
        .bind(&e.sent)
        .bind(s.state.incident.is_some())
        .bind(outbox::INSTANCE.as_str());
    outbox::Batch::new(outgoing).bind(q).execute(conn).await?;
    outbox::Batch::sent(outgoing);
    Ok(())
}

/// Append a timeline entry without changing the saga (an ignored reply).
pub async fn note(conn: &mut PgConnection, saga_id: Uuid, e: &TimelineEntry<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO saga_events (saga_id, kind, status, step, note, cause_message_id, cause_type, sent)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(saga_id)
    .bind(e.kind)
    .bind(e.status)
    .bind(e.step)
    .bind(e.note)
    .bind(e.cause_message_id)
    .bind(e.cause_type)
    .bind(&e.sent)
    .execute(conn)
    .await?;
    Ok(())
}

/// End a saga the engine cannot read (its stored state or order does not decode): `FAILED`, no
/// deadline, the reason in `failure_reason` and `attention`, and a timeline entry listing what was
/// `sent` to undo what it held. One statement, which touches neither column it cannot read.
/// Returns whether the saga was still unfinished (the caller rolls back otherwise).
pub async fn fail_unreadable(
    conn: &mut PgConnection,
    saga_id: Uuid,
    reason: &str,
    sent: &Value,
) -> Result<bool, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(
        "WITH s AS (
            UPDATE sagas SET status = 'FAILED', deadline = NULL, failure_reason = $2, attention = $2,
                             finished_at = now(), updated_at = now(), version = version + 1, incident_since = NULL
            WHERE id = $1 AND status NOT IN ('COMPLETED', 'COMPENSATED', 'FAILED')
            RETURNING id, current_step
         ), e AS (
            INSERT INTO saga_events (saga_id, kind, status, step, note, sent)
            SELECT id, 'failed', 'FAILED', current_step, $2, $3 FROM s
         )
         SELECT count(*) FROM s",
    )
    .bind(saga_id)
    .bind(reason)
    .bind(sent)
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

/// Say why a saga is stuck (cleared by its next transition).
pub async fn set_attention(conn: &mut PgConnection, saga_id: Uuid, attention: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sagas SET attention = $2 WHERE id = $1").bind(saga_id).bind(attention).execute(conn).await?;
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
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventView {
    pub at: DateTime<Utc>,
    pub kind: String,
    pub status: String,
    pub step: Option<String>,
    pub note: String,
    pub cause_message_id: Option<Uuid>,
    pub cause_type: Option<String>,
    pub sent: Value,
}

const VIEW_COLUMNS: &str = "id, definition, definition_version, status, current_step, state, data, version, deadline, \
                            attempt, failure_reason, attention, incident_since, created_at, updated_at, finished_at";

pub async fn get<'e>(db: impl PgExecutor<'e>, id: Uuid) -> Result<Option<SagaView>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {VIEW_COLUMNS} FROM sagas WHERE id = $1")))
        .bind(id)
        .fetch_optional(db)
        .await
}

pub async fn timeline<'e>(db: impl PgExecutor<'e>, id: Uuid) -> Result<Vec<EventView>, sqlx::Error> {
    sqlx::query_as(
        "SELECT at, kind, status, step, note, cause_message_id, cause_type, sent FROM saga_events
         WHERE saga_id = $1 ORDER BY id",
    )
    .bind(id)
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
        "SELECT {VIEW_COLUMNS} FROM sagas
         WHERE ($1::text IS NULL OR status = $1) AND ($2::uuid IS NULL OR id > $2)
           AND ($4::bool IS NULL OR (incident_since IS NOT NULL) = $4)
         ORDER BY id LIMIT $3"
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
