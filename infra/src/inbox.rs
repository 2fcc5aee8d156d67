//! The inbox: proof that a message was handled, and the reply it produced.
//!
//! The dedupe key is a command's idempotency key (saga id + step + action, kept by every re-send)
//! or, for replies and events, the message id. [`record`] writes the inbox row and the reply's
//! outbox row in one statement inside the handler's transaction; if the key is already there it
//! writes nothing and says so, and the caller rolls back and re-sends [`stored_reply`].

use contracts::topology::REPLIES_EXCHANGE;
use contracts::{Meta, SCHEMA_VERSION};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::amqp::Outgoing;

/// What the inbox remembers of a handled message.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// Never handled here.
    New,
    /// Handled; this was the reply (re-send it).
    Replied(Box<Outgoing>),
    /// Handled; it needed no reply (an event).
    Handled,
}

/// Look `key` up. `duplicate` is the message being handled now (its id becomes the causation).
pub async fn lookup<'e>(db: impl PgExecutor<'e>, key: &str, duplicate: &Meta) -> Result<Seen, sqlx::Error> {
    type StoredReply = (Option<Uuid>, Option<String>, Option<Vec<u8>>);
    let row: Option<StoredReply> =
        sqlx::query_as("SELECT reply_message_id, reply_type, reply_body FROM inbox WHERE key = $1")
            .bind(key)
            .fetch_optional(db)
            .await?;
    Ok(match row {
        None => Seen::New,
        Some((Some(id), Some(ty), Some(body))) => {
            let mut meta = Meta::new(duplicate.saga_id, &ty).caused_by(duplicate.message_id);
            meta.message_id = id;
            meta = meta.traced();
            Seen::Replied(Box::new(Outgoing {
                exchange: REPLIES_EXCHANGE.to_owned(),
                routing_key: ty,
                mandatory: true,
                meta,
                body,
                extra_headers: Vec::new(),
            }))
        }
        Some(_) => Seen::Handled,
    })
}

/// Record `key` as handled, together with `reply` (also queued in the outbox, its `send` span
/// recorded). Returns `false` (and writes nothing) if the key was already recorded: the caller
/// must roll back.
pub async fn record(
    conn: &mut PgConnection,
    key: &str,
    handled: &Meta,
    reply: Option<&Outgoing>,
) -> Result<bool, sqlx::Error> {
    let recorded: i64 = match reply {
        None => {
            sqlx::query_scalar(
                "WITH i AS (INSERT INTO inbox (key, message_id, message_type, saga_id) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (key) DO NOTHING RETURNING 1) SELECT count(*) FROM i",
            )
            .bind(key)
            .bind(handled.message_id)
            .bind(&handled.message_type)
            .bind(handled.saga_id)
            .fetch_one(conn)
            .await?
        }
        Some(r) => {
            sqlx::query_scalar(
                "WITH i AS (
                    INSERT INTO inbox (key, message_id, message_type, saga_id, reply_message_id, reply_type, reply_body)
                    VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (key) DO NOTHING RETURNING 1
                 ), o AS (
                    INSERT INTO outbox (message_id, saga_id, exchange, routing_key, mandatory, message_type,
                                        causation_id, idempotency_key, attempt, traceparent, schema_version, created_at, body)
                    SELECT $5, $4, $8, $9, $10, $6, $11, NULL, $12, $13, $14, $15, $7 FROM i
                    RETURNING 1
                 )
                 SELECT count(*) FROM i CROSS JOIN (SELECT pg_notify('outbox', $16)) n",
            )
            .bind(key)
            .bind(handled.message_id)
            .bind(&handled.message_type)
            .bind(handled.saga_id)
            .bind(r.meta.message_id)
            .bind(&r.routing_key)
            .bind(&r.body)
            .bind(&r.exchange)
            .bind(&r.routing_key)
            .bind(r.mandatory)
            .bind(r.meta.causation_id)
            .bind(i32::try_from(r.meta.attempt).unwrap_or(i32::MAX))
            .bind(&r.meta.traceparent)
            .bind(i32::try_from(SCHEMA_VERSION).unwrap_or(1))
            .bind(r.meta.timestamp)
            .bind(crate::outbox::INSTANCE.as_str())
            .fetch_one(conn)
            .await?
        }
    };
    if let Some(r) = reply.filter(|_| recorded > 0) {
        crate::telemetry::sent(r);
    }
    Ok(recorded > 0)
}

/// Delete inbox rows older than `retention`, in batches; returns how many went. A message
/// redelivered after that finds no inbox row, so handlers stay idempotent on business keys too
/// (an existing reservation, payment or shipment is answered, not repeated).
pub async fn prune(pool: &sqlx::PgPool, retention: std::time::Duration) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let n = sqlx::query(
            "DELETE FROM inbox WHERE key IN (
                SELECT key FROM inbox WHERE received_at < now() - make_interval(secs => $1) LIMIT 5000)",
        )
        .bind(retention.as_secs_f64())
        .execute(pool)
        .await?
        .rows_affected();
        total += n;
        if n < 5000 {
            return Ok(total);
        }
    }
}

/// Prune the inbox every `every` until `shutdown`.
pub async fn retention_job(
    pool: sqlx::PgPool,
    retention: std::time::Duration,
    every: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        match prune(&pool, retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "pruned the inbox"),
            Err(error) => tracing::warn!(%error, "cannot prune the inbox; will try again"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {},
        }
    }
}
