//! Confirmed publishing. Channels are in confirm mode and reused; every publish waits for the
//! broker's confirm, and a nack, a return (unroutable `mandatory` message) or a broker error is
//! an error the caller must handle (the outbox keeps the row and tries again).

use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::join_all;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation};

use super::{Broker, Outgoing, TransportError};

/// Why a publish did not reach a queue.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the broker refused the message (nack)")]
    Nack,
    #[error("unroutable: the broker returned the message ({code} {text})")]
    Returned { code: u16, text: String },
    #[error("no confirm within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Transport(#[from] TransportError),
}

impl PublishError {
    /// Stable code for metrics and logs.
    /// Every [`PublishError::code`].
    pub const CODES: [&'static str; 4] = ["nack", "returned", "timeout", "broker"];

    pub fn code(&self) -> &'static str {
        match self {
            PublishError::Nack => "nack",
            PublishError::Returned { .. } => "returned",
            PublishError::Timeout(_) => "timeout",
            PublishError::Transport(_) => "broker",
        }
    }
}

/// Publishes with confirms over a small set of reused channels. Cheap to share behind an `Arc`.
pub struct Publisher {
    broker: Broker,
    idle: Mutex<Vec<Channel>>,
    max_idle: usize,
    confirm_timeout: Duration,
}

impl Publisher {
    pub fn new(broker: Broker) -> Self {
        Publisher { broker, idle: Mutex::new(Vec::new()), max_idle: 8, confirm_timeout: Duration::from_secs(10) }
    }

    async fn checkout(&self) -> Result<Channel, TransportError> {
        let reused = self.idle.lock().map(|mut idle| idle.pop()).unwrap_or(None);
        if let Some(ch) = reused.filter(|ch| ch.status().connected()) {
            return Ok(ch);
        }
        let ch = self.broker.channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await.map_err(TransportError::amqp("confirm.select"))?;
        Ok(ch)
    }

    fn checkin(&self, ch: Channel) {
        if !ch.status().connected() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.max_idle
        {
            idle.push(ch);
        }
    }

    /// Publish one message and wait for its confirm.
    pub async fn publish(&self, message: &Outgoing) -> Result<(), PublishError> {
        self.publish_batch(std::slice::from_ref(message)).await.pop().unwrap_or(Err(PublishError::Nack))
    }

    /// Publish a batch on one channel, pipelined, then wait for every confirm. One result per
    /// message, in order.
    pub async fn publish_batch(&self, messages: &[Outgoing]) -> Vec<Result<(), PublishError>> {
        let raw: Vec<_> = messages
            .iter()
            .map(|m| (m.exchange.as_str(), m.routing_key.as_str(), m.mandatory, m.properties(), m.body.as_slice()))
            .collect();
        self.publish_raw_batch(&raw).await
    }

    /// Publish already-built properties and body (used to forward a delivery unchanged).
    pub async fn publish_raw(
        &self,
        exchange: &str,
        routing_key: &str,
        mandatory: bool,
        properties: BasicProperties,
        body: &[u8],
    ) -> Result<(), PublishError> {
        self.publish_raw_batch(&[(exchange, routing_key, mandatory, properties, body)])
            .await
            .pop()
            .unwrap_or(Err(PublishError::Nack))
    }

    async fn publish_raw_batch(
        &self,
        messages: &[(&str, &str, bool, BasicProperties, &[u8])],
    ) -> Vec<Result<(), PublishError>> {
        let channel = match self.checkout().await {
            Ok(ch) => ch,
            Err(e) => {
                let msg = e.to_string();
                return messages
                    .iter()
                    .map(|_| Err(PublishError::Transport(TransportError::Connect(msg.clone()))))
                    .collect();
            }
        };
        let mut pending = Vec::with_capacity(messages.len());
        let mut healthy = true;
        for (exchange, routing_key, mandatory, properties, body) in messages {
            let options = BasicPublishOptions { mandatory: *mandatory, ..BasicPublishOptions::default() };
            let sent = channel
                .basic_publish((*exchange).into(), (*routing_key).into(), options, body, properties.clone())
                .await;
            if sent.is_err() {
                healthy = false;
            }
            pending.push(sent);
        }
        let timeout = self.confirm_timeout;
        let results = join_all(pending.into_iter().map(|sent| async move {
            let confirm = sent.map_err(TransportError::amqp("basic.publish"))?;
            let confirmation = tokio::time::timeout(timeout, confirm)
                .await
                .map_err(|_| PublishError::Timeout(timeout))?
                .map_err(TransportError::amqp("confirm"))?;
            match confirmation {
                Confirmation::Ack(None) => Ok(()),
                Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
                    Err(PublishError::Returned { code: returned.reply_code, text: returned.reply_text.to_string() })
                }
                Confirmation::Nack(None) => Err(PublishError::Nack),
                // The channel is always in confirm mode; an unconfirmed publish is not a success.
                Confirmation::NotRequested => Err(PublishError::Nack),
            }
        }))
        .await;
        if healthy && !results.iter().any(|r| matches!(r, Err(PublishError::Transport(_) | PublishError::Timeout(_)))) {
            self.checkin(channel);
        }
        results
    }
}
