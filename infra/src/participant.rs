//! How a participant handles a message: decode, deduplicate, apply, reply, in one transaction, or
//! in two around an outside call.
//!
//! [`Processor`] is the [`DeliveryHandler`] every participant runs. For each delivery it
//! 1. decodes metadata and body (a message that cannot be decoded is dead-lettered at once, with
//!    a reason code);
//! 2. opens a transaction and lets the handler decide ([`CallingHandler::begin`]). Either it
//!    answers at once (the business change, the inbox row and the reply commit together), or it
//!    records the *intent* of an outside call (with the key the outside system dedupes on) and the
//!    transaction commits with no inbox row;
//! 3. for an intent: calls the outside system with no transaction open
//!    ([`CallingHandler::call`]), then records the result, the inbox row and the reply in a second
//!    transaction ([`CallingHandler::finish`]);
//! 4. wakes the outbox relay and returns [`Outcome::Ack`].
//!
//! The dedupe key (idempotency key, else message id) is checked where the inbox row is written:
//! if it is there already, the transaction rolls back and the stored reply is re-sent.
//!
//! A crash or a failed call between the two transactions leaves the intent committed and the
//! message unacknowledged (or parked for a retry round): its redelivery finds the intent and makes
//! the same call again, which the outside system answers from its idempotency key; a compensation
//! that arrives meanwhile sees the intent and undoes it by that key. No database connection, row
//! lock or advisory lock is held while an outside system thinks.
//!
//! Two deliveries of one command racing each other may both finish; the inbox's primary key lets
//! exactly one commit, and the other rolls back and re-sends the winner's reply.

use std::convert::Infallible;
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

/// The business part of a participant that needs no outside call: one call per message, inside
/// the transaction that will also record the inbox row and the reply. Returns the reply to send
/// (commands) or `None` (events). Must not commit, and must not talk to the broker.
pub trait MessageHandler<M>: Send + Sync + 'static {
    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        meta: &'a Meta,
        message: M,
    ) -> impl Future<Output = Result<Option<Reply>, HandlerError>> + Send + 'a;
}

/// What [`CallingHandler::begin`] decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Step<C> {
    /// Answered in this transaction: the reply (or `None`, for events).
    Reply(Option<Reply>),
    /// The intent of outside call `C` is recorded in this transaction; make the call after it
    /// commits.
    Call(C),
}

/// The business part of a participant whose commands reach an outside system: decide in a first
/// transaction (answer, or record the intent of a call), call with no transaction open, record
/// the result in a second transaction. None of the three talks to the broker or commits.
pub trait CallingHandler<M>: Send + Sync + 'static {
    /// An outside call, as recorded in the intent (it carries its idempotency key).
    type Call: Clone + Send + Sync + 'static;
    /// The outside system's answer (a refusal included, if the handler turns it into a reply).
    type Answer: Clone + Send + Sync + 'static;

    fn begin<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        meta: &'a Meta,
        message: M,
    ) -> impl Future<Output = Result<Step<Self::Call>, HandlerError>> + Send + 'a;

    /// Make the call. An error leaves the intent in place for the message's next delivery.
    fn call<'a>(&'a self, call: &'a Self::Call)
    -> impl Future<Output = Result<Self::Answer, HandlerError>> + Send + 'a;

    /// Record the answer; returns the reply.
    fn finish<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        meta: &'a Meta,
        call: Self::Call,
        answer: Self::Answer,
    ) -> impl Future<Output = Result<Option<Reply>, HandlerError>> + Send + 'a;
}

/// A [`MessageHandler`] as a [`CallingHandler`] that never calls out.
pub struct Local<H>(pub H);

impl<M: Send + 'static, H: MessageHandler<M>> CallingHandler<M> for Local<H> {
    type Call = Infallible;
    type Answer = Infallible;

    async fn begin(&self, tx: &mut PgConnection, meta: &Meta, message: M) -> Result<Step<Infallible>, HandlerError> {
        self.0.handle(tx, meta, message).await.map(Step::Reply)
    }

    async fn call(&self, call: &Infallible) -> Result<Infallible, HandlerError> {
        match *call {}
    }

    async fn finish(
        &self,
        _: &mut PgConnection,
        _: &Meta,
        _: Infallible,
        answer: Infallible,
    ) -> Result<Option<Reply>, HandlerError> {
        match answer {}
    }
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

/// What the first transaction left to do.
enum Begun<C> {
    Done(Outcome),
    Call(C),
}

impl<M, H> Processor<M, H>
where
    M: Message + Clone + Send + Sync + 'static,
    H: CallingHandler<M>,
{
    async fn process(&self, incoming: &Incoming) -> Result<Outcome, HandlerError> {
        let (meta, message) = match incoming.decode::<M>() {
            Ok(decoded) => decoded,
            Err(e) => {
                return Ok(Outcome::DeadLetter { code: e.code(), error: e.to_string() });
            }
        };
        // No inbox lookup first: the inbox row is written in the same transaction as the answer,
        // and a duplicate finds its key there, rolls back and re-sends the stored reply. That saves
        // a round trip on every command at the cost of redoing a duplicate's work (rare), which
        // rolls back; handlers answer a command already applied without applying it again.
        let key = meta.dedupe_key();
        let call = match conflicts_retried(|| self.begin(&key, &meta, message.clone())).await? {
            Begun::Done(outcome) => return Ok(outcome),
            Begun::Call(call) => call,
        };
        let answer = self.handler.call(&call).await?;
        conflicts_retried(|| self.finish(&key, &meta, call.clone(), answer.clone())).await
    }

    /// The first transaction: an answer (committed with its inbox row), or a committed intent.
    async fn begin(&self, key: &str, meta: &Meta, message: M) -> Result<Begun<H::Call>, HandlerError> {
        let mut tx = self.pool.begin().await?;
        match self.handler.begin(&mut tx, meta, message).await? {
            Step::Reply(reply) => Ok(Begun::Done(self.settle(tx, key, meta, reply).await?)),
            Step::Call(call) => {
                tx.commit().await?;
                tracing::info!("intent recorded; calling the outside system");
                Ok(Begun::Call(call))
            }
        }
    }

    /// The second transaction: the answer recorded, with the inbox row and the reply.
    async fn finish(&self, key: &str, meta: &Meta, call: H::Call, answer: H::Answer) -> Result<Outcome, HandlerError> {
        let mut tx = self.pool.begin().await?;
        let reply = self.handler.finish(&mut tx, meta, call, answer).await?;
        self.settle(tx, key, meta, reply).await
    }

    /// Record the inbox row and queue the reply in `tx`, and commit.
    async fn settle(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
        key: &str,
        meta: &Meta,
        reply: Option<Reply>,
    ) -> Result<Outcome, HandlerError> {
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

/// Run `attempt` again at once when the database aborted it for a deadlock or a serialization
/// conflict, up to [`CONFLICT_RETRIES`] times; then the message takes a delayed retry round.
async fn conflicts_retried<T, F, Fut>(mut attempt: F) -> Result<T, HandlerError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, HandlerError>>,
{
    let mut conflicts = 0;
    loop {
        match attempt().await {
            Err(HandlerError::Conflict(e)) if conflicts < CONFLICT_RETRIES => {
                conflicts += 1;
                tracing::info!(error = %e, conflicts, "transaction conflict; running it again");
            }
            Err(HandlerError::Conflict(e)) => return Err(HandlerError::Transient(e)),
            other => return other,
        }
    }
}

impl<M, H> DeliveryHandler for Processor<M, H>
where
    M: Message + Clone + Send + Sync + 'static,
    H: CallingHandler<M>,
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
