//! One floor saga's work, step by step. Per step:
//!
//! 1. orchestrator transaction: the saga row (inserted at step 1, updated after) and an outbox
//!    row, committed (commit 1);
//! 2. the command published persistent to `floor.commands` and confirmed (publish 1);
//! 3. the outbox row deleted (commit 2);
//! 4. participant transaction: inbox row, one business row, the reply's outbox row (commit 3);
//! 5. the reply published persistent to `floor.replies` and confirmed (publish 2); the command's
//!    delivery acked; the reply's delivery acked once the orchestrator has acted on it.
//!
//! After the fifth reply, one last saga-row update (commit 16). So: 16 commits, 10 confirmed
//! publishes, 10 acks per saga. Bodies are raw bytes (saga id, step, message id): no
//! serialization layer, no retries, no recovery. An error ends the saga as not started.

use std::collections::HashMap;
use std::sync::Mutex;

use lapin::options::{BasicAckOptions, BasicPublishOptions};
use lapin::{BasicProperties, Channel, Confirmation};
use sqlx::PgPool;
use tokio::sync::oneshot;
use uuid::Uuid;

pub const COMMANDS_EXCHANGE: &str = "floor.commands";
pub const REPLIES_EXCHANGE: &str = "floor.replies";
/// Steps of a saga, like the order saga's.
pub const STEPS: u8 = 5;

/// What the floor's consumers share.
pub struct Core {
    pub pool: PgPool,
    /// Confirm-mode channels, one per direction.
    pub commands: Channel,
    pub replies: Channel,
    /// Who waits for which saga's end.
    pub waiting: Mutex<HashMap<Uuid, oneshot::Sender<Result<(), String>>>>,
}

const INSERT_SAGA: &str = "INSERT INTO floor_sagas (id, step, status) VALUES ($1, $2, 'running')";
const UPDATE_SAGA: &str = "UPDATE floor_sagas SET step = $2, updated_at = now() WHERE id = $1";
const INSERT_OUTBOX: &str = "INSERT INTO floor_outbox (id, saga_id, body) VALUES ($1, $2, $3)";
const DELETE_OUTBOX: &str = "DELETE FROM floor_outbox WHERE id = $1";
const INSERT_INBOX: &str = "INSERT INTO floor_inbox (message_id) VALUES ($1)";
const INSERT_BUSINESS: &str = "INSERT INTO floor_business (id, saga_id, step) VALUES ($1, $2, $3)";
const INSERT_REPLY: &str = "INSERT INTO floor_replies_outbox (id, saga_id, body) VALUES ($1, $2, $3)";
const END_SAGA: &str = "UPDATE floor_sagas SET status = 'done', updated_at = now() WHERE id = $1";

/// Every statement the floor runs.
pub const STATEMENTS: [&str; 8] =
    [INSERT_SAGA, UPDATE_SAGA, INSERT_OUTBOX, DELETE_OUTBOX, INSERT_INBOX, INSERT_BUSINESS, INSERT_REPLY, END_SAGA];

/// Open all `size` connections of the pool and prepare every statement on each, before any saga:
/// preparing a statement is a transaction of its own on the server, which would otherwise be
/// counted among the first sagas' commits.
pub async fn prepare_all(pool: &PgPool, size: u32) -> anyhow::Result<()> {
    let mut connections = Vec::new();
    for _ in 0..size {
        connections.push(pool.acquire().await?);
    }
    for conn in &mut connections {
        for sql in STATEMENTS {
            sqlx::Executor::prepare(&mut **conn, sqlx::SqlSafeStr::into_sql_str(sql)).await?;
        }
    }
    Ok(())
}

/// A message: saga id, step, message id.
pub fn encode(saga: Uuid, step: u8, message: Uuid) -> Vec<u8> {
    let mut body = Vec::with_capacity(33);
    body.extend_from_slice(saga.as_bytes());
    body.push(step);
    body.extend_from_slice(message.as_bytes());
    body
}

pub fn decode(body: &[u8]) -> Option<(Uuid, u8, Uuid)> {
    let saga = Uuid::from_slice(body.get(..16)?).ok()?;
    let step = *body.get(16)?;
    let message = Uuid::from_slice(body.get(17..33)?).ok()?;
    Some((saga, step, message))
}

fn db(e: sqlx::Error) -> String {
    format!("database: {e}")
}

/// Publish persistent and wait for the broker's ack.
async fn publish(channel: &Channel, exchange: &str, body: &[u8]) -> Result<(), String> {
    let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
    let confirm = channel
        .basic_publish(
            exchange.into(),
            "floor.step".into(),
            options,
            body,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .map_err(|e| format!("publish: {e}"))?;
    match confirm.await.map_err(|e| format!("confirm: {e}"))? {
        Confirmation::Ack(None) => Ok(()),
        other => Err(format!("publish to {exchange} not confirmed: {other:?}")),
    }
}

impl Core {
    /// Orchestrator: record step `step` of `saga` with its command, send it, clear the outbox.
    pub async fn send_step(&self, saga: Uuid, step: u8) -> Result<(), String> {
        let message = Uuid::new_v4();
        let body = encode(saga, step, message);
        let mut tx = self.pool.begin().await.map_err(db)?;
        let saga_row = if step == 1 { sqlx::query(INSERT_SAGA) } else { sqlx::query(UPDATE_SAGA) };
        saga_row.bind(saga).bind(i32::from(step)).execute(&mut *tx).await.map_err(db)?;
        sqlx::query(INSERT_OUTBOX).bind(message).bind(saga).bind(&body).execute(&mut *tx).await.map_err(db)?;
        tx.commit().await.map_err(db)?;
        publish(&self.commands, COMMANDS_EXCHANGE, &body).await?;
        sqlx::query(DELETE_OUTBOX).bind(message).execute(&self.pool).await.map_err(db)?;
        Ok(())
    }

    /// Participant: do the step (inbox, business row, reply in the outbox), then reply.
    pub async fn handle_command(&self, body: &[u8]) -> Result<(), String> {
        let (saga, step, message) = decode(body).ok_or("undecodable command")?;
        let reply = Uuid::new_v4();
        let reply_body = encode(saga, step, reply);
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query(INSERT_INBOX).bind(message).execute(&mut *tx).await.map_err(db)?;
        sqlx::query(INSERT_BUSINESS)
            .bind(Uuid::new_v4())
            .bind(saga)
            .bind(i32::from(step))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query(INSERT_REPLY).bind(reply).bind(saga).bind(&reply_body).execute(&mut *tx).await.map_err(db)?;
        tx.commit().await.map_err(db)?;
        publish(&self.replies, REPLIES_EXCHANGE, &reply_body).await
    }

    /// Orchestrator: a reply moves the saga to its next step, or ends it.
    pub async fn handle_reply(&self, body: &[u8]) -> Result<Option<Uuid>, String> {
        let (saga, step, _) = decode(body).ok_or("undecodable reply")?;
        if step < STEPS {
            return self.send_step(saga, step + 1).await.map(|()| None);
        }
        sqlx::query(END_SAGA).bind(saga).execute(&self.pool).await.map_err(db)?;
        Ok(Some(saga))
    }

    /// Tell whoever waits for `saga` how it ended.
    pub fn finish(&self, saga: Uuid, result: Result<(), String>) {
        let waiter = self.waiting.lock().ok().and_then(|mut w| w.remove(&saga));
        if let Some(tx) = waiter {
            let _ = tx.send(result);
        }
    }
}

/// Handle one delivery of either queue, then ack it. A failure ends its saga (no retry).
pub async fn on_delivery(core: &Core, delivery: lapin::message::Delivery, is_reply: bool) {
    let body = &delivery.data;
    let result = if is_reply { core.handle_reply(body).await } else { core.handle_command(body).await.map(|()| None) };
    let ack = delivery.ack(BasicAckOptions::default()).await.map(|_| ()).map_err(|e| format!("ack: {e}"));
    let saga = decode(body).map(|(s, _, _)| s);
    match (result, ack, saga) {
        (Ok(Some(done)), Ok(()), _) => core.finish(done, Ok(())),
        (Ok(_), Ok(()), _) => {}
        (Err(e), _, Some(saga)) | (Ok(_), Err(e), Some(saga)) => core.finish(saga, Err(e)),
        (Err(e), _, None) | (Ok(_), Err(e), None) => eprintln!("saga-bench: floor: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip_and_short_ones_are_refused() {
        let (saga, message) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let body = encode(saga, 4, message);
        assert_eq!(body.len(), 33);
        assert_eq!(decode(&body), Some((saga, 4, message)));
        assert_eq!(decode(&body[..32]), None);
    }
}
