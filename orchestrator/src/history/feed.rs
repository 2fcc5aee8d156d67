//! Reading the store: events as subscribers see them ([`HistoryEvent`], payload upcast), the
//! global feed by position (`GET /events`), and one saga's stream up to a moment (time travel).

use chrono::{DateTime, Utc};
use contracts::history::{EventMetadata, EventType, HistoryEvent};
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

use super::Stored;
use super::upcast::upcast;

/// The columns [`Row`] reads.
pub(super) const COLUMNS: &str = "id, position, saga_id, version, type, schema_version, payload, cause_message_id, at, \
                                  status, step, failure_reason, note";

/// An event row with what subscribers see of it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Row {
    pub id: i64,
    pub position: Option<i64>,
    pub saga_id: Uuid,
    pub version: i64,
    #[sqlx(rename = "type")]
    pub event_type: String,
    pub schema_version: i32,
    pub payload: Value,
    pub cause_message_id: Option<Uuid>,
    pub at: DateTime<Utc>,
    pub status: String,
    pub step: Option<String>,
    pub failure_reason: Option<String>,
    pub note: String,
}

impl Row {
    /// The event as subscribers see it at `position`, its payload upcast to the current schema.
    /// A type or payload this build cannot read goes out as stored, and the error says why.
    pub fn to_history(&self, position: i64) -> (HistoryEvent, Option<String>) {
        let (event_type, schema_version, payload, error) =
            match upcast(&self.event_type, self.schema_version, self.payload.clone()) {
                Ok((t, p)) => (t, contracts::history::current_schema(t), p, None),
                Err(e) => {
                    let t = EventType::parse(&self.event_type).unwrap_or(EventType::TimelineRecorded);
                    (t, u32::try_from(self.schema_version).unwrap_or(0), self.payload.clone(), Some(e.to_string()))
                }
            };
        let event = HistoryEvent {
            position,
            order_id: self.saga_id,
            version: self.version,
            event_type,
            schema_version,
            payload,
            metadata: EventMetadata {
                causation_id: self.cause_message_id,
                correlation_id: self.saga_id,
                recorded_at: self.at,
            },
            status: self.status.clone(),
            step: self.step.clone(),
            failure_reason: self.failure_reason.clone(),
            note: self.note.clone(),
        };
        (event, error)
    }

    pub fn stored(&self) -> Stored {
        Stored {
            version: self.version,
            event_type: self.event_type.clone(),
            schema_version: self.schema_version,
            payload: self.payload.clone(),
            at: self.at,
        }
    }
}

/// Events with a position after `after`, in position order, at most `limit`.
pub async fn after<'e>(db: impl PgExecutor<'e>, after: i64, limit: i64) -> Result<Vec<Row>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM saga_events WHERE position > $1 ORDER BY position LIMIT $2"
    )))
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// The highest position numbered so far (0 for none).
pub async fn head<'e>(db: impl PgExecutor<'e>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT coalesce(max(position), 0)::int8 FROM saga_events").fetch_one(db).await
}

/// Saga `id`'s events recorded at or before `at`, in stream order.
pub async fn stream_until<'e>(db: impl PgExecutor<'e>, id: Uuid, at: DateTime<Utc>) -> Result<Vec<Row>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM saga_events WHERE saga_id = $1 AND at <= $2 ORDER BY version"
    )))
    .bind(id)
    .bind(at)
    .fetch_all(db)
    .await
}
