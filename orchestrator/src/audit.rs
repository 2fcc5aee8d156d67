//! The operator audit trail (`operator_audit`, append-only): who replayed or discarded which dead
//! letter, and who retried, compensated or resolved which saga, when and why. Rows are written in
//! the transaction of the action they record.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// One operator action, as recorded.
#[derive(Debug, Clone)]
pub struct Action<'a> {
    pub actor: &'a str,
    /// `replay`, `discard`, `retry`, `compensate` or `resolve`.
    pub action: &'static str,
    /// The dead-letter queue, for dead-letter actions.
    pub queue: Option<&'a str>,
    pub message_id: Option<&'a str>,
    pub message_type: Option<&'a str>,
    pub saga_id: Option<Uuid>,
    /// The operator's note or reason.
    pub reason: Option<&'a str>,
    pub detail: Value,
}

pub async fn record(conn: &mut PgConnection, a: &Action<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO operator_audit (actor, action, queue, message_id, message_type, saga_id, reason, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(a.actor)
    .bind(a.action)
    .bind(a.queue)
    .bind(a.message_id)
    .bind(a.message_type)
    .bind(a.saga_id)
    .bind(a.reason)
    .bind(&a.detail)
    .execute(conn)
    .await?;
    Ok(())
}

/// One operator action, as `GET /admin/audit` shows it.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = AuditEntry)]
pub struct Row {
    pub at: DateTime<Utc>,
    /// The operator's name (from `ORCHESTRATOR_ADMIN_TOKENS`).
    pub actor: String,
    /// `replay`, `discard`, `retry`, `compensate` or `resolve`.
    pub action: String,
    pub queue: Option<String>,
    pub message_id: Option<String>,
    pub message_type: Option<String>,
    pub saga_id: Option<Uuid>,
    /// The operator's note or reason.
    pub reason: Option<String>,
    #[schema(value_type = Object)]
    pub detail: Value,
}

/// The newest `limit` actions, newest first, optionally about one saga.
pub async fn list<'e>(db: impl PgExecutor<'e>, saga_id: Option<Uuid>, limit: i64) -> Result<Vec<Row>, sqlx::Error> {
    sqlx::query_as(
        "SELECT at, actor, action, queue, message_id, message_type, saga_id, reason, detail FROM operator_audit
         WHERE ($1::uuid IS NULL OR saga_id = $1) ORDER BY id DESC LIMIT $2",
    )
    .bind(saga_id)
    .bind(limit)
    .fetch_all(db)
    .await
}
