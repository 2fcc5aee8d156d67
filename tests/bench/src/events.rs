//! The end of every saga, as the platform announces it: our own exclusive queue bound `order.*`
//! on `saga.events`, matched to the saga ids `POST /orders` answered (by `correlation_id`).
//! An event may arrive before its POST's answer; it waits in [`Ends`] until asked for.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use contracts::topology::EVENTS_EXCHANGE;
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use tokio::sync::oneshot;
use uuid::Uuid;

/// A saga's end: its event's type (`order.completed`, ...) and when we saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct End {
    pub event: String,
    pub at: Instant,
}

/// Who waits for which saga's end, and ends that came before anyone asked.
#[derive(Debug, Default)]
pub struct Ends {
    waiting: HashMap<Uuid, oneshot::Sender<End>>,
    early: HashMap<Uuid, End>,
}

impl Ends {
    /// An end arrived.
    pub fn arrive(&mut self, saga: Uuid, end: End) {
        match self.waiting.remove(&saga) {
            Some(tx) => {
                let _ = tx.send(end);
            }
            None => {
                self.early.insert(saga, end);
            }
        }
    }

    /// Wait for the end of `saga` (answered at once if it came already).
    pub fn wait(&mut self, saga: Uuid) -> oneshot::Receiver<End> {
        let (tx, rx) = oneshot::channel();
        match self.early.remove(&saga) {
            Some(end) => {
                let _ = tx.send(end);
            }
            None => {
                self.waiting.insert(saga, tx);
            }
        }
        rx
    }

    /// Stop waiting for `saga` (it timed out).
    pub fn forget(&mut self, saga: Uuid) {
        self.waiting.remove(&saga);
    }
}

/// The tap on `saga.events`. Dropping it closes its connection (the queue is exclusive).
pub struct EventTap {
    ends: Arc<Mutex<Ends>>,
    _connection: Connection,
}

impl EventTap {
    /// Declare and consume our queue; do it before the first order is sent.
    pub async fn bind(amqp_url: &str) -> anyhow::Result<EventTap> {
        let connection =
            Connection::connect(amqp_url, ConnectionProperties::default().with_connection_name("saga-bench".into()))
                .await
                .map_err(|e| anyhow::anyhow!("cannot connect to the broker at --amqp-url: {e}"))?;
        let ch = connection.create_channel().await?;
        let q = ch
            .queue_declare(
                "".into(),
                QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() },
                FieldTable::default(),
            )
            .await?;
        ch.queue_bind(
            q.name().clone(),
            EVENTS_EXCHANGE.into(),
            "order.*".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind to `{EVENTS_EXCHANGE}` (is the platform running?): {e}"))?;
        let mut consumer = ch
            .basic_consume(
                q.name().clone(),
                "saga-bench".into(),
                BasicConsumeOptions { no_ack: true, ..Default::default() },
                FieldTable::default(),
            )
            .await?;
        let ends: Arc<Mutex<Ends>> = Arc::default();
        let sink = ends.clone();
        tokio::spawn(async move {
            while let Some(Ok(d)) = consumer.next().await {
                let at = Instant::now();
                let saga = d.properties.correlation_id().as_ref().and_then(|c| Uuid::parse_str(c.as_str()).ok());
                if let (Some(saga), Ok(mut ends)) = (saga, sink.lock()) {
                    ends.arrive(saga, End { event: d.routing_key.to_string(), at });
                }
            }
            drop(ch);
        });
        Ok(EventTap { ends, _connection: connection })
    }

    /// Wait for the end of `saga`.
    pub fn wait(&self, saga: Uuid) -> oneshot::Receiver<End> {
        match self.ends.lock() {
            Ok(mut ends) => ends.wait(saga),
            // Poisoned only if a holder panicked; a receiver that never answers times out.
            Err(_) => oneshot::channel().1,
        }
    }

    pub fn forget(&self, saga: Uuid) {
        if let Ok(mut ends) = self.ends.lock() {
            ends.forget(saga);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_end_is_matched_whether_it_comes_before_or_after_the_wait() {
        let mut ends = Ends::default();
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let now = Instant::now();
        let mut before = ends.wait(a);
        ends.arrive(a, End { event: "order.completed".into(), at: now });
        ends.arrive(b, End { event: "order.compensated".into(), at: now });
        let mut after = ends.wait(b);
        assert_eq!(before.try_recv().unwrap().event, "order.completed");
        assert_eq!(after.try_recv().unwrap().event, "order.compensated");
        let mut never = ends.wait(Uuid::from_u128(3));
        assert!(never.try_recv().is_err());
    }
}
