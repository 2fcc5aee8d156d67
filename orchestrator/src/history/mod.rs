//! The event store: every saga's history as an append-only stream of events in `saga_events`,
//! the source of truth its state is folded from.
//!
//! An event records an input the kernel was given (the order that started the saga, a reply, a
//! passed deadline, a dead-lettered command, an operator's verb) with the retry limits that applied
//! then, or a fact that changed nothing (an ignored reply, a notice). Folding a stream through the
//! pure kernel ([`fold`]) gives the saga's state; the `sagas` row keeps a snapshot of it every
//! `ORCHESTRATOR_SNAPSHOT_EVERY` events, so loading folds at most that many.
//!
//! Appends state the stream version they expect (`sagas.version`); a concurrent append makes the
//! second one a [`Conflict`](crate::store::StoreError::Conflict) that the engine retries from a
//! fresh load. The sequencer ([`sequencer`]) gives committed events their global position and
//! queues them on `saga.events` through the outbox; `GET /events` ([`feed`]) serves them by
//! position. Old payload schemas are upcast when read ([`upcast`]).
//!
//! Layout: this file (the payloads, what is appended, what is read back); `fold`; `upcast`;
//! `sequencer`; `feed` (the SQL of the global feed and of a stream up to a time).

pub mod feed;
pub mod fold;
pub mod sequencer;
pub mod upcast;

use chrono::{DateTime, Utc};
use contracts::history::{EventType, current_schema};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use self::fold::{FoldError, catch_up, fold};
use crate::kernel::{DeadLetter, Input, Policy, Verb};

/// `saga.started` (schema 2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Started {
    pub definition: String,
    pub definition_version: u32,
    /// The order as submitted.
    pub order: Value,
    /// Sum of the order's lines, in minor units (added in schema 2).
    pub total_cents: i64,
}

/// `reply.received`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplyReceived {
    pub message_type: String,
    /// The reply's body as it arrived.
    pub reply: Value,
    pub policy: Policy,
}

/// `deadline.passed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadlinePassed {
    pub attempt: u32,
    pub policy: Policy,
}

/// `command.dead_lettered`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandDeadLettered {
    pub dead_letter: DeadLetter,
    pub policy: Policy,
}

/// `operator.acted`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatorActed {
    pub verb: Verb,
    pub actor: String,
    pub note: String,
    pub policy: Policy,
}

/// `saga.abandoned`: the saga could not be read and was ended FAILED.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaAbandoned {
    pub reason: String,
}

/// `reply.ignored`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplyIgnored {
    pub message_type: String,
    pub reason: String,
}

/// `notice.received`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoticeReceived {
    /// `waiting` or `dead_lettered`.
    pub kind: String,
    pub attention: String,
}

/// `timeline.recorded`: an entry from before the event store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineRecorded {
    pub kind: String,
}

/// An event about to be appended: its type and payload (current schema).
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub event_type: EventType,
    pub payload: Value,
}

impl Recorded {
    fn of<T: Serialize>(event_type: EventType, payload: &T) -> Recorded {
        // Payloads are plain structs of strings, numbers and JSON values: they always serialize.
        Recorded { event_type, payload: serde_json::to_value(payload).unwrap_or(Value::Null) }
    }

    /// The event that records `input` given to the kernel under `policy`. `started` is the
    /// payload of [`Input::Start`] (which carries no data of its own).
    pub fn input(input: &Input<'_>, policy: Policy, started: Option<&Started>) -> Recorded {
        match *input {
            Input::Start => Recorded::of(EventType::SagaStarted, &started),
            Input::Reply { message_type, reply } => {
                let p = ReplyReceived { message_type: message_type.to_owned(), reply: reply.to_json(), policy };
                Recorded::of(EventType::ReplyReceived, &p)
            }
            Input::Timeout { attempt } => Recorded::of(EventType::DeadlinePassed, &DeadlinePassed { attempt, policy }),
            Input::DeadLettered(d) => {
                Recorded::of(EventType::CommandDeadLettered, &CommandDeadLettered { dead_letter: d.clone(), policy })
            }
            Input::Operator { verb, actor, note } => {
                let p = OperatorActed { verb, actor: actor.to_owned(), note: note.to_owned(), policy };
                Recorded::of(EventType::OperatorActed, &p)
            }
        }
    }

    pub fn ignored(message_type: &str, reason: &str) -> Recorded {
        let p = ReplyIgnored { message_type: message_type.to_owned(), reason: reason.to_owned() };
        Recorded::of(EventType::ReplyIgnored, &p)
    }

    pub fn notice(kind: &str, attention: &str) -> Recorded {
        let p = NoticeReceived { kind: kind.to_owned(), attention: attention.to_owned() };
        Recorded::of(EventType::NoticeReceived, &p)
    }

    pub fn abandoned(reason: &str) -> Recorded {
        Recorded::of(EventType::SagaAbandoned, &SagaAbandoned { reason: reason.to_owned() })
    }

    pub fn schema_version(&self) -> i32 {
        i32::try_from(current_schema(self.event_type)).unwrap_or(1)
    }
}

/// An event read back from a stream, as stored (its payload not yet upcast).
#[derive(Debug, Clone, PartialEq, Deserialize, sqlx::FromRow)]
pub struct Stored {
    pub version: i64,
    #[serde(rename = "type")]
    #[sqlx(rename = "type")]
    pub event_type: String,
    pub schema_version: i32,
    pub payload: Value,
    pub at: DateTime<Utc>,
}
