//! How a participant handles a message: decode, deduplicate, apply, reply, all in one transaction.
//!
//! [`Processor`] is the [`DeliveryHandler`] every participant runs. For each delivery it
//! 1. decodes metadata and body (a message that cannot be decoded is dead-lettered at once, with
//!    a reason code);
//! 2. looks the dedupe key (idempotency key, else message id) up in the inbox: a duplicate
//!    re-sends the stored reply and changes nothing;
//! 3. opens a transaction, lets the [`MessageHandler`] apply the business change, then records the
//!    inbox row and queues the reply in the outbox in one statement, and commits;
//! 4. wakes the outbox relay and returns [`Outcome::Ack`].
//!
//! Two deliveries of one command racing each other both reach step 3; the inbox's primary key lets
//! exactly one commit, and the other rolls back and re-sends the winner's reply.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use contracts::topology::REPLIES_EXCHANGE;
use contracts::{Message, Meta, Reply};
use sqlx::{PgConnection, PgPool};

use crate::amqp::{DeliveryHandler, Incoming, Outcome, Outgoing, Publisher};
use crate::inbox::{self, Seen};
use crate::metrics::Metrics;
use crate::outbox::OutboxWaker;

/// Why a handler could not apply a message. A business refusal is not an error: it is a reply
/// (e.g. `payment.declined`) that drives compensation.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// May pass (database unavailable, dependency down): the message takes a delayed retry round.
    #[error("transient failure: {0}")]
    Transient(String),
    /// Will never pass (a command this participant does not handle, data it cannot accept): the
    /// message goes to the dead-letter queue with this code.
    #[error("permanent failure ({code}): {message}")]
    Permanent { code: &'static str, message: String },
    /// A dependency is unavailable (its circuit is open): the message waits, spending no attempt.
    #[error("waiting: {0}")]
    Unavailable(String),
    /// The database aborted the transaction to break a deadlock or a serialization conflict with
    /// a concurrent one: run it again at once.
    #[error("transaction conflict: {0}")]
    Conflict(String),
}

impl From<sqlx::Error> for HandlerError {
    fn from(e: sqlx::Error) -> Self {
        let code = e.as_database_error().and_then(|d| d.code().map(|c| c.into_owned()));
        match code.as_deref() {
            // deadlock_detected, serialization_failure
            Some("40P01" | "40001") => HandlerError::Conflict(e.to_string()),
            _ => HandlerError::Transient(format!("database: {e}")),
        }
    }
}

/// Times a transaction aborted by a conflict is run again before the message takes a delayed
/// retry round.
const CONFLICT_RETRIES: usize = 3;

impl<E: std::fmt::Display> From<crate::resilience::CallError<E>> for HandlerError {
    fn from(e: crate::resilience::CallError<E>) -> Self {
        use crate::resilience::CallError;
        match e {
            CallError::Open { .. } => HandlerError::Unavailable(e.to_string()),
            CallError::Exhausted { .. } => HandlerError::Transient(e.to_string()),
            CallError::Permanent { .. } => {
                HandlerError::Permanent { code: "dependency_refused", message: e.to_string() }
            }
        }
    }
}

/// The business part of a participant: one call per message, inside the transaction that will
/// also record the inbox row and the reply. Returns the reply to send (commands) or `None`
/// (events). Must not commit, and must not talk to the broker.
pub trait MessageHandler<M>: Send + Sync + 'static {
    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        meta: &'a Meta,
        message: M,
    ) -> impl Future<Output = Result<Option<Reply>, HandlerError>> + Send + 'a;
}

/// The [`DeliveryHandler`] of a participant queue carrying messages of type `M`.
pub struct Processor<M, H> {
    pub pool: PgPool,
    pub publisher: Arc<Publisher>,
    pub waker: OutboxWaker,
    pub metrics: Metrics,
    pub queue: String,
    pub handler: H,
    _message: PhantomData<fn() -> M>,
}

impl<M, H> Processor<M, H> {
    pub fn new(
        pool: PgPool,
        publisher: Arc<Publisher>,
        waker: OutboxWaker,
        metrics: Metrics,
        queue: &str,
        handler: H,
    ) -> Self {
        Processor { pool, publisher, waker, metrics, queue: queue.to_owned(), handler, _message: PhantomData }
    }
}

/// The reply message for `reply`, answering the message described by `to`.
pub fn reply_message(to: &Meta, reply: &Reply) -> Outgoing {
    let meta = Meta::new(to.saga_id, reply.message_type()).caused_by(to.message_id);
    Outgoing::new(REPLIES_EXCHANGE, true, meta, reply)
}

impl<M, H> Processor<M, H>
where
    M: Message + Clone + Send + 'static,
    H: MessageHandler<M>,
{
    async fn process(&self, incoming: &Incoming) -> Result<Outcome, HandlerError> {
        let (meta, message) = match incoming.decode::<M>() {
            Ok(decoded) => decoded,
            Err(e) => {
                return Ok(Outcome::DeadLetter { code: e.code(), error: e.to_string() });
            }
        };
        let key = meta.dedupe_key();
        if let Some(outcome) = self.duplicate(&key, &meta).await? {
            return Ok(outcome);
        }
        let mut conflicts = 0;
        loop {
            match self.apply(&key, &meta, message.clone()).await {
                Err(HandlerError::Conflict(e)) if conflicts < CONFLICT_RETRIES => {
                    conflicts += 1;
                    tracing::info!(error = %e, conflicts, "transaction conflict; running it again");
                }
                Err(HandlerError::Conflict(e)) => return Err(HandlerError::Transient(e)),
                other => return other,
            }
        }
    }

    /// One transaction: the handler's change, the inbox row and the reply.
    async fn apply(&self, key: &str, meta: &Meta, message: M) -> Result<Outcome, HandlerError> {
        let mut tx = self.pool.begin().await?;
        let reply = self.handler.handle(&mut tx, meta, message).await?;
        let outgoing = reply.as_ref().map(|r| reply_message(meta, r));
        if !inbox::record(&mut tx, key, meta, outgoing.as_ref()).await? {
            // Another delivery of the same command committed first.
            tx.rollback().await?;
            return Ok(self.duplicate(key, meta).await?.unwrap_or(Outcome::Ack));
        }
        tx.commit().await?;
        if let Some(r) = &outgoing {
            tracing::info!(reply = %r.meta.message_type, reply_id = %r.meta.message_id, "handled");
            self.waker.wake();
        } else {
            tracing::info!("handled");
        }
        Ok(Outcome::Ack)
    }

    /// `Some(outcome)` if `key` was handled before: its stored reply is re-sent.
    async fn duplicate(&self, key: &str, meta: &Meta) -> Result<Option<Outcome>, HandlerError> {
        match inbox::lookup(&self.pool, key, meta).await? {
            Seen::New => Ok(None),
            Seen::Handled => {
                self.metrics.duplicates.with_label_values(&[&self.queue]).inc();
                tracing::info!(key, "duplicate; already handled");
                Ok(Some(Outcome::Ack))
            }
            Seen::Replied(stored) => {
                self.metrics.duplicates.with_label_values(&[&self.queue]).inc();
                tracing::info!(key, reply_id = %stored.meta.message_id, "duplicate; re-sending the stored reply");
                match self.publisher.publish(&stored).await {
                    Ok(()) => Ok(Some(Outcome::Ack)),
                    Err(e) => Err(HandlerError::Transient(format!("re-sending stored reply: {e}"))),
                }
            }
        }
    }
}

impl<M, H> DeliveryHandler for Processor<M, H>
where
    M: Message + Clone + Send + 'static,
    H: MessageHandler<M>,
{
    async fn handle(&self, incoming: &Incoming) -> Outcome {
        match self.process(incoming).await {
            Ok(outcome) => outcome,
            Err(HandlerError::Transient(reason)) => Outcome::Retry { reason },
            Err(HandlerError::Permanent { code, message }) => Outcome::DeadLetter { code, error: message },
            Err(HandlerError::Unavailable(reason)) => Outcome::Defer { reason },
            Err(HandlerError::Conflict(reason)) => Outcome::Retry { reason },
        }
    }
}
