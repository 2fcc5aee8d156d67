//! The floor: the thinnest code that does one 5-step saga's broker round trips and commits
//! ([`flow`] says exactly what, counted: 16 commits, 10 confirmed persistent publishes), run
//! in-process against the same broker (exchanges and queues named `floor.*`, in the platform's
//! vhost, deleted afterwards) and the same PostgreSQL (its own tables in a scratch database,
//! dropped afterwards). It is what the platform's figures are divided by.
//!
//! Layout: [`schema`] (database and tables), [`flow`] (the steps), this file (topology,
//! consumers, and the [`Target`] that starts a saga and waits for its end).

pub mod flow;
pub mod schema;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::driver::{Outcome, Run, Target};
use crate::mix::Kind;
use flow::{COMMANDS_EXCHANGE, Core, REPLIES_EXCHANGE};

/// The participant's queue (bound to `floor.commands`) and the orchestrator's (`floor.replies`).
pub const COMMANDS_QUEUE: &str = "floor.participant.commands";
pub const REPLIES_QUEUE: &str = "floor.orchestrator.replies";
/// Unacknowledged deliveries per consumer, like the platform's `PREFETCH` under load.
pub const PREFETCH: u16 = 64;

/// A running floor.
pub struct Floor {
    core: Arc<Core>,
    connection: Connection,
    consumers: Vec<JoinHandle<()>>,
}

/// `admin_url` with its database replaced by `database`.
pub fn database_url(admin_url: &str, database: &str) -> anyhow::Result<String> {
    let mut url = reqwest::Url::parse(admin_url).map_err(|e| anyhow::anyhow!("--postgres-admin-url: {e}"))?;
    url.set_path(&format!("/{database}"));
    Ok(url.to_string())
}

async fn declare(ch: &Channel) -> anyhow::Result<()> {
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    let mut classic = FieldTable::default();
    classic.insert("x-queue-type".into(), AMQPValue::LongString("classic".into()));
    for (exchange, queue) in [(COMMANDS_EXCHANGE, COMMANDS_QUEUE), (REPLIES_EXCHANGE, REPLIES_QUEUE)] {
        ch.exchange_declare(exchange.into(), ExchangeKind::Topic, durable, FieldTable::default()).await?;
        let options = QueueDeclareOptions { durable: true, ..Default::default() };
        ch.queue_declare(queue.into(), options, classic.clone()).await?;
        ch.queue_purge(queue.into(), Default::default()).await?;
        ch.queue_bind(queue.into(), exchange.into(), "#".into(), QueueBindOptions::default(), FieldTable::default())
            .await?;
    }
    Ok(())
}

async fn confirming(connection: &Connection) -> anyhow::Result<Channel> {
    let ch = connection.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(ch)
}

/// Consume `queue`, each delivery handled in its own task (at most [`PREFETCH`] at once).
async fn consume(
    connection: &Connection,
    core: Arc<Core>,
    queue: &str,
    is_reply: bool,
) -> anyhow::Result<JoinHandle<()>> {
    let ch = connection.create_channel().await?;
    ch.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
    let mut deliveries = ch
        .basic_consume(queue.into(), "saga-bench-floor".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await?;
    Ok(tokio::spawn(async move {
        while let Some(Ok(delivery)) = deliveries.next().await {
            let core = core.clone();
            tokio::spawn(async move { flow::on_delivery(&core, delivery, is_reply).await });
        }
        drop(ch);
    }))
}

impl Floor {
    /// Create the database (if missing) and tables, declare the topology, start the consumers.
    pub async fn start(
        amqp_url: &str,
        admin: &PgPool,
        admin_url: &str,
        database: &str,
        pool_size: u32,
    ) -> anyhow::Result<Floor> {
        schema::ensure_database(admin, database).await?;
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            .test_before_acquire(false)
            .connect(&database_url(admin_url, database)?)
            .await
            .map_err(|e| anyhow::anyhow!("floor database `{database}`: {e}"))?;
        schema::create_tables(&pool).await?;
        flow::prepare_all(&pool, pool_size).await?;
        let connection = Connection::connect(
            amqp_url,
            ConnectionProperties::default().with_connection_name("saga-bench-floor".into()),
        )
        .await?;
        declare(&connection.create_channel().await?).await?;
        let core = Arc::new(Core {
            pool,
            commands: confirming(&connection).await?,
            replies: confirming(&connection).await?,
            waiting: Mutex::new(HashMap::new()),
        });
        let consumers = vec![
            consume(&connection, core.clone(), COMMANDS_QUEUE, false).await?,
            consume(&connection, core.clone(), REPLIES_QUEUE, true).await?,
        ];
        Ok(Floor { core, connection, consumers })
    }

    /// Stop the consumers, delete the `floor.*` exchanges and queues, drop the tables.
    pub async fn stop(self) -> anyhow::Result<()> {
        for c in &self.consumers {
            c.abort();
        }
        let ch = self.connection.create_channel().await?;
        for queue in [COMMANDS_QUEUE, REPLIES_QUEUE] {
            ch.queue_delete(queue.into(), QueueDeleteOptions::default()).await?;
        }
        for exchange in [COMMANDS_EXCHANGE, REPLIES_EXCHANGE] {
            ch.exchange_delete(exchange.into(), ExchangeDeleteOptions::default()).await?;
        }
        let _ = self.connection.close(200, "saga-bench done".into()).await;
        schema::drop_tables(&self.core.pool).await?;
        self.core.pool.close().await;
        Ok(())
    }
}

impl Target for Floor {
    async fn run(&self, _kind: Kind, timeout: Duration) -> Run {
        let saga = Uuid::new_v4();
        let (tx, rx) = oneshot::channel();
        if let Ok(mut w) = self.core.waiting.lock() {
            w.insert(saga, tx);
        }
        let end = |outcome| Run { saga: Some(saga), sku: None, outcome, ended_at: Instant::now() };
        if let Err(e) = self.core.send_step(saga, 1).await {
            self.core.finish(saga, Err(e.clone()));
            return Run { saga: None, ..end(Outcome::NotStarted(format!("floor: {e}"))) };
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(()))) => end(Outcome::Ended("order.completed".into())),
            Ok(Ok(Err(e))) => end(Outcome::NotStarted(format!("floor: {e}"))),
            _ => {
                self.core.finish(saga, Err("timed out".into()));
                end(Outcome::Unfinished)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_database_sits_beside_the_admin_one() {
        assert_eq!(
            database_url("postgres://postgres@127.0.0.1:5432/postgres", "saga_floor").unwrap(),
            "postgres://postgres@127.0.0.1:5432/saga_floor"
        );
        assert_eq!(
            database_url("postgres://u:p@h/postgres?sslmode=disable", "f").unwrap(),
            "postgres://u:p@h/f?sslmode=disable"
        );
    }
}
