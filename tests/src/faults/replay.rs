//! The duplicating publisher of the `duplicates` scenario. Two queues of its own (exclusive,
//! connected as guest on the run's vhost) are bound `#` to `saga.commands` and `saga.replies`, so
//! it sees a copy of every command and every reply. Each message is kept once, by message id (its
//! own publications come back through the same queues and are not kept again). Later it publishes
//! what it kept to the same exchange with the same routing key, properties and headers, body
//! untouched: true duplicates, shuffled, some twice, late, out of order with the originals and
//! with each other. Every publication waits for the broker's confirm.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use contracts::topology::{COMMANDS_EXCHANGE, REPLIES_EXCHANGE};
use futures_util::StreamExt;
use infra::amqp::{Broker, Publisher};
use lapin::BasicProperties;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use tokio::task::JoinHandle;

/// One captured message, as it was published.
#[derive(Debug, Clone)]
struct Captured {
    exchange: String,
    routing_key: String,
    properties: BasicProperties,
    body: Vec<u8>,
}

#[derive(Debug, Default)]
struct Store {
    seen: HashSet<String>,
    /// Captured since the last [`Duplicator::replay_fresh`].
    fresh: Vec<Captured>,
    all: Vec<Captured>,
    commands: u64,
    replies: u64,
}

/// Most messages kept (about 100 MB of bodies and properties at most); later ones are not kept.
const MAX_KEPT: usize = 100_000;

impl Store {
    /// Keep a message the first time its id is seen, up to [`MAX_KEPT`].
    fn capture(&mut self, message: Captured) {
        let Some(id) = message.properties.message_id().as_ref().map(|id| id.to_string()) else { return };
        if self.seen.len() >= MAX_KEPT || !self.seen.insert(id) {
            return;
        }
        if message.exchange == COMMANDS_EXCHANGE {
            self.commands += 1;
        } else {
            self.replies += 1;
        }
        self.fresh.push(message.clone());
        self.all.push(message);
    }
}

/// What one round published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Published {
    pub sent: u64,
    pub failed: u64,
}

/// The running capture, and the publisher.
pub struct Duplicator {
    store: Arc<Mutex<Store>>,
    publisher: Publisher,
    broker: Broker,
    consumers: Vec<JoinHandle<()>>,
}

impl Drop for Duplicator {
    fn drop(&mut self) {
        for c in &self.consumers {
            c.abort();
        }
        self.broker.close();
    }
}

impl Duplicator {
    /// Bind the capture queues and start keeping what arrives.
    pub async fn start(amqp_url: &str) -> anyhow::Result<Duplicator> {
        let broker = Broker::new(amqp_url, 2, "saga-faults duplicator")?;
        let store = Arc::new(Mutex::new(Store::default()));
        let mut consumers = Vec::new();
        for exchange in [COMMANDS_EXCHANGE, REPLIES_EXCHANGE] {
            let channel = broker.channel().await?;
            let exclusive = QueueDeclareOptions { exclusive: true, ..Default::default() };
            let q = channel.queue_declare("".into(), exclusive, FieldTable::default()).await?;
            let bind = QueueBindOptions::default();
            channel.queue_bind(q.name().clone(), exchange.into(), "#".into(), bind, FieldTable::default()).await?;
            let no_ack = BasicConsumeOptions { no_ack: true, ..Default::default() };
            let mut consumer =
                channel.basic_consume(q.name().clone(), "".into(), no_ack, FieldTable::default()).await?;
            let store = store.clone();
            consumers.push(tokio::spawn(async move {
                let _channel = channel;
                // Ends when its channel closes or the duplicator is dropped (the task is aborted).
                while let Some(Ok(delivery)) = consumer.next().await {
                    let message = Captured {
                        exchange: delivery.exchange.to_string(),
                        routing_key: delivery.routing_key.to_string(),
                        properties: delivery.properties.clone(),
                        body: delivery.data.clone(),
                    };
                    if let Ok(mut s) = store.lock() {
                        s.capture(message);
                    }
                }
            }));
        }
        Ok(Duplicator { store, publisher: Publisher::new(broker.clone()), broker, consumers })
    }

    /// Publish again, shuffled, what was captured since the last call; a `twice` share of them
    /// twice.
    pub async fn replay_fresh(&self, rng: &mut StdRng, twice: f64) -> Published {
        let mut batch = self.store.lock().map(|mut s| std::mem::take(&mut s.fresh)).unwrap_or_default();
        let again: Vec<Captured> = batch.iter().filter(|_| rng.random_bool(twice.clamp(0.0, 1.0))).cloned().collect();
        batch.extend(again);
        batch.shuffle(rng);
        self.publish(&batch).await
    }

    /// Publish again a random sample of `n` of everything captured (late duplicates, most of them
    /// of sagas that have ended).
    pub async fn replay_sample(&self, rng: &mut StdRng, n: usize) -> Published {
        let all = self.store.lock().map(|s| s.all.clone()).unwrap_or_default();
        let sample: Vec<Captured> = all.choose_multiple(rng, n).cloned().collect();
        self.publish(&sample).await
    }

    /// Commands and replies captured so far.
    pub fn captured(&self) -> (u64, u64) {
        self.store.lock().map(|s| (s.commands, s.replies)).unwrap_or_default()
    }

    async fn publish(&self, batch: &[Captured]) -> Published {
        let mut p = Published::default();
        for m in batch {
            let sent =
                self.publisher.publish_raw(&m.exchange, &m.routing_key, false, m.properties.clone(), &m.body).await;
            if sent.is_ok() {
                p.sent += 1;
            } else {
                p.failed += 1;
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(exchange: &str, id: Option<&str>) -> Captured {
        let mut properties = BasicProperties::default();
        if let Some(id) = id {
            properties = properties.with_message_id(id.into());
        }
        Captured { exchange: exchange.into(), routing_key: "k".into(), properties, body: b"{}".to_vec() }
    }

    #[test]
    fn each_message_is_kept_once_by_id_and_counted_by_exchange() {
        let mut s = Store::default();
        s.capture(message(COMMANDS_EXCHANGE, Some("a")));
        s.capture(message(COMMANDS_EXCHANGE, Some("a")));
        s.capture(message(REPLIES_EXCHANGE, Some("b")));
        s.capture(message(REPLIES_EXCHANGE, None));
        assert_eq!((s.commands, s.replies, s.all.len(), s.fresh.len()), (1, 1, 2, 2));
    }
}
