//! The order's history as it leaves the orchestrator's event store: one [`HistoryEvent`] per
//! stored event, published on `saga.events` with key `history.<event type>` (e.g.
//! `history.saga.started`) in stream order per order, and served by the orchestrator's global
//! feed `GET /events?after=<position>&limit=` ([`FeedPage`]).
//!
//! Every event carries its order's stream `version` (1, 2, 3 ... without gaps) and its global
//! `position` in the store (1, 2, 3 ... without gaps, in commit order), so a subscriber detects a
//! duplicate (a position it has applied) and a gap (a version past the next one it expects).
//!
//! Payloads are upcast to the schema this build writes before they leave the store: a subscriber
//! sees only the current version of each type ([`current_schema`]). The readable facts every event
//! carries whatever its type (`status`, `step`, `failure_reason`, `note`) are the saga as it was
//! right after the event, so a read model needs no knowledge of the saga's kernel.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::DecodeError;

/// The prefix of the routing key (and AMQP `type`) of a history message.
pub const ROUTING_PREFIX: &str = "history.";

/// The kinds of event an order's stream holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EventType {
    /// The saga started. Payload: `definition`, `definition_version`, `order` (the submitted
    /// [`OrderRequest`](crate::order::OrderRequest)), `total_cents` (since schema 2).
    #[serde(rename = "saga.started")]
    SagaStarted,
    /// A participant's reply that moved the saga. Payload: `message_type`, `reply`, `policy`.
    #[serde(rename = "reply.received")]
    ReplyReceived,
    /// A reply that changed nothing (late, duplicate answer, finished saga). Payload:
    /// `message_type`, `reason`.
    #[serde(rename = "reply.ignored")]
    ReplyIgnored,
    /// The awaited command's deadline passed. Payload: `attempt`, `policy`.
    #[serde(rename = "deadline.passed")]
    DeadlinePassed,
    /// A command of the saga was dead-lettered and the saga acted on it. Payload: `dead_letter`,
    /// `policy`.
    #[serde(rename = "command.dead_lettered")]
    CommandDeadLettered,
    /// A participant said a command waits, or was dead-lettered, changing nothing. Payload:
    /// `kind`, `attention`.
    #[serde(rename = "notice.received")]
    NoticeReceived,
    /// An operator's verb. Payload: `verb`, `actor`, `note`, `policy`.
    #[serde(rename = "operator.acted")]
    OperatorActed,
    /// The saga could not be read and was ended FAILED. Payload: `reason`, `sent`.
    #[serde(rename = "saga.abandoned")]
    SagaAbandoned,
    /// A timeline entry written before the event store existed: readable facts only (`kind`), no
    /// input to fold. Such a saga's state before the store is its first snapshot.
    #[serde(rename = "timeline.recorded")]
    TimelineRecorded,
}

impl EventType {
    pub const ALL: [EventType; 9] = [
        EventType::SagaStarted,
        EventType::ReplyReceived,
        EventType::ReplyIgnored,
        EventType::DeadlinePassed,
        EventType::CommandDeadLettered,
        EventType::NoticeReceived,
        EventType::OperatorActed,
        EventType::SagaAbandoned,
        EventType::TimelineRecorded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::SagaStarted => "saga.started",
            EventType::ReplyReceived => "reply.received",
            EventType::ReplyIgnored => "reply.ignored",
            EventType::DeadlinePassed => "deadline.passed",
            EventType::CommandDeadLettered => "command.dead_lettered",
            EventType::NoticeReceived => "notice.received",
            EventType::OperatorActed => "operator.acted",
            EventType::SagaAbandoned => "saga.abandoned",
            EventType::TimelineRecorded => "timeline.recorded",
        }
    }

    /// The routing key (and AMQP `type`) of its history message.
    pub fn routing_key(self) -> &'static str {
        match self {
            EventType::SagaStarted => "history.saga.started",
            EventType::ReplyReceived => "history.reply.received",
            EventType::ReplyIgnored => "history.reply.ignored",
            EventType::DeadlinePassed => "history.deadline.passed",
            EventType::CommandDeadLettered => "history.command.dead_lettered",
            EventType::NoticeReceived => "history.notice.received",
            EventType::OperatorActed => "history.operator.acted",
            EventType::SagaAbandoned => "history.saga.abandoned",
            EventType::TimelineRecorded => "history.timeline.recorded",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// The payload schema version this build writes for each type (readers upcast older ones).
pub fn current_schema(t: EventType) -> u32 {
    match t {
        EventType::SagaStarted => 2,
        _ => 1,
    }
}

/// Who caused an event, what it belongs to, and when it was recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventMetadata {
    /// The message (reply, notice) or request that caused it, when there was one.
    pub causation_id: Option<Uuid>,
    /// The saga, which is also the order and the stream.
    pub correlation_id: Uuid,
    pub recorded_at: DateTime<Utc>,
}

/// One event of an order's stream, as subscribers and the feed see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryEvent {
    /// Global position in the store: 1, 2, 3 ... in commit order, no gaps.
    pub position: i64,
    /// The order (stream) id.
    pub order_id: Uuid,
    /// Version within the order's stream: 1, 2, 3 ... no gaps.
    pub version: i64,
    pub event_type: EventType,
    /// The payload's schema version (always [`current_schema`] of the type once upcast).
    pub schema_version: u32,
    /// What the event records (see [`EventType`] for each type's fields).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub payload: Value,
    pub metadata: EventMetadata,
    /// The saga's status right after the event (`RUNNING`, `COMPENSATING`, `COMPLETED`,
    /// `COMPENSATED`, `FAILED`).
    pub status: String,
    /// The step it awaits then, if any.
    pub step: Option<String>,
    /// Why it failed, once it has.
    pub failure_reason: Option<String>,
    /// What happened, in words.
    pub note: String,
}

impl HistoryEvent {
    /// The routing key it is published with.
    pub fn routing_key(&self) -> &'static str {
        self.event_type.routing_key()
    }

    /// Decode a history message body.
    pub fn decode(body: &[u8]) -> Result<HistoryEvent, DecodeError> {
        serde_json::from_slice(body).map_err(|e| DecodeError::Body { message_type: "history", source: e })
    }
}

const ROUTING_KEYS: [&str; 9] = [
    "history.saga.started",
    "history.reply.received",
    "history.reply.ignored",
    "history.deadline.passed",
    "history.command.dead_lettered",
    "history.notice.received",
    "history.operator.acted",
    "history.saga.abandoned",
    "history.timeline.recorded",
];

impl crate::Message for HistoryEvent {
    fn message_type(&self) -> &'static str {
        self.routing_key()
    }

    fn encode(&self) -> Vec<u8> {
        // A struct of strings, numbers and JSON values always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn decode(message_type: &str, _schema_version: u32, body: &[u8]) -> Result<Self, DecodeError> {
        if !ROUTING_KEYS.contains(&message_type) {
            return Err(DecodeError::UnknownType(message_type.to_owned()));
        }
        HistoryEvent::decode(body)
    }

    fn all_types() -> &'static [&'static str] {
        &ROUTING_KEYS
    }
}

/// One page of the global feed (`GET /events?after=<position>&limit=`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FeedPage {
    /// Events with `position > after`, in position order, at most `limit`.
    pub events: Vec<HistoryEvent>,
    /// The highest position in the store now (0 when it is empty): how far a reader has to go.
    pub head: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_keys_are_the_prefix_and_the_type() {
        use crate::Message;
        assert_eq!(HistoryEvent::all_types(), EventType::ALL.map(EventType::routing_key));
        for t in EventType::ALL {
            assert_eq!(t.routing_key(), format!("{ROUTING_PREFIX}{}", t.as_str()));
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            let json = serde_json::to_value(t).unwrap();
            assert_eq!(json, Value::String(t.as_str().into()));
        }
    }
}
