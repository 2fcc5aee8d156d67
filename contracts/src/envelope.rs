//! The metadata every message carries, and the names it travels under.
//!
//! On the wire: AMQP properties `message_id` (UUID v7), `correlation_id` (saga id), `type`,
//! `timestamp` (seconds), `content_type: application/json`, `delivery_mode: 2`; and the headers
//! named in [`headers`]. The body is the JSON of the payload alone.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Header names. Plain snake case so they read well in the management console.
pub mod headers {
    /// Message id of the message that caused this one (a reply's command, a command's reply).
    pub const CAUSATION_ID: &str = "causation_id";
    /// Body schema version, an integer; see [`crate::SCHEMA_VERSION`].
    pub const SCHEMA_VERSION: &str = "schema_version";
    /// W3C trace context.
    pub const TRACEPARENT: &str = "traceparent";
    /// Dedupe key of a command: `<saga id>:<step>:<action>`; kept by every re-send.
    pub const IDEMPOTENCY_KEY: &str = "idempotency_key";
    /// Our own delivery attempt counter (1 = first). Never rely on `x-death` counts.
    pub const ATTEMPT: &str = "attempt";
    /// How many times the transport has tried to handle this delivery (1 = first). Counted by us,
    /// not by the broker's `x-death`, and carried through delayed retry rounds.
    pub const DELIVERY_ATTEMPT: &str = "x-delivery-attempt";
    /// How many times a message was deferred (parked because a dependency was unavailable).
    /// Deferrals do not count as delivery attempts.
    pub const DEFERRED: &str = "x-deferred";
    /// Set on a message an operator replayed from a dead-letter queue: that queue's name.
    pub const REPLAYED_FROM: &str = "replayed-from";
    /// Who replayed it, and when (RFC 3339).
    pub const REPLAYED_BY: &str = "x-replayed-by";
    pub const REPLAYED_AT: &str = "x-replayed-at";
    /// The last transient error, on a message parked for a delayed retry.
    pub const LAST_ERROR: &str = "x-last-error";
    /// Why a message was dead-lettered: a stable code such as `undecodable`.
    pub const DEAD_LETTER_REASON: &str = "x-dead-letter-reason";
    /// Human-readable error that sent the message to its dead-letter queue.
    pub const DEAD_LETTER_ERROR: &str = "x-dead-letter-error";
    /// The queue the message was consumed from when it was dead-lettered.
    pub const DEAD_LETTER_QUEUE: &str = "x-dead-letter-queue";
    /// RFC 3339 time of the first failure of this message.
    pub const FIRST_FAILURE_AT: &str = "x-first-failure-at";
    /// RFC 3339 time of the last failure of this message.
    pub const LAST_FAILURE_AT: &str = "x-last-failure-at";
    /// The exchange the message was originally published to (for replay).
    pub const ORIGINAL_EXCHANGE: &str = "x-original-exchange";
    /// The routing key the message was originally published with (for replay).
    pub const ORIGINAL_ROUTING_KEY: &str = "x-original-routing-key";
}

/// `content_type` of every message.
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// Everything about a message that is not its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Unique per message (UUID v7). A re-sent stored reply keeps its id.
    pub message_id: Uuid,
    /// The saga (order) this message belongs to; the AMQP `correlation_id`.
    pub saga_id: Uuid,
    /// The AMQP `type`, equal to the routing key, e.g. `payment.authorize`.
    pub message_type: String,
    pub timestamp: DateTime<Utc>,
    pub causation_id: Option<Uuid>,
    pub schema_version: u32,
    pub traceparent: Option<String>,
    /// Commands only: the dedupe key participants record in their inbox.
    pub idempotency_key: Option<String>,
    /// Delivery attempt of this message, 1 for the first; a re-sent command counts up.
    pub attempt: u32,
}

/// The W3C trace context (`version-traceid-spanid-flags`, sampled) of a message of saga
/// `saga_id` with id `message_id`. Neither id may be all zeros in W3C; UUIDs made here never are,
/// and a zero span falls back to 1.
pub fn traceparent(saga_id: Uuid, message_id: Uuid) -> String {
    let span = (message_id.as_u128() as u64).max(1);
    format!("00-{}-{span:016x}-01", saga_id.simple())
}

impl Meta {
    /// Metadata for a brand-new message of `message_type` in saga `saga_id`.
    pub fn new(saga_id: Uuid, message_type: &str) -> Self {
        Meta {
            message_id: Uuid::now_v7(),
            saga_id,
            message_type: message_type.to_owned(),
            timestamp: Utc::now(),
            causation_id: None,
            schema_version: crate::SCHEMA_VERSION,
            traceparent: None,
            idempotency_key: None,
            attempt: 1,
        }
        .traced()
    }

    /// Set the W3C `traceparent` for this message: one trace per saga, whose trace id is the
    /// saga id, and one span per message, whose span id is the low 64 bits of the message id.
    /// A tracing backend then shows a saga as one trace, each message a span in it.
    pub fn traced(mut self) -> Self {
        self.traceparent = Some(traceparent(self.saga_id, self.message_id));
        self
    }

    pub fn caused_by(mut self, message_id: Uuid) -> Self {
        self.causation_id = Some(message_id);
        self
    }

    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    pub fn with_traceparent(mut self, traceparent: Option<String>) -> Self {
        self.traceparent = traceparent;
        self
    }

    /// The key a participant deduplicates this message on: the idempotency key if the message
    /// carries one, else its message id.
    pub fn dedupe_key(&self) -> String {
        self.idempotency_key.clone().unwrap_or_else(|| self.message_id.to_string())
    }
}

/// Idempotency key of one action of one saga step, e.g. `0190...:authorize_payment:do`.
pub fn idempotency_key(saga_id: Uuid, step: &str, action: &str) -> String {
    format!("{saga_id}:{step}:{action}")
}

/// Why a message could not be turned into a typed value. Each variant maps to a stable
/// dead-letter reason code ([`DecodeError::code`]).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("message has no `type` property")]
    MissingType,
    #[error("unknown message type `{0}`")]
    UnknownType(String),
    #[error("missing or invalid property or header `{0}`")]
    MissingField(&'static str),
    #[error("unsupported schema version {0}")]
    UnsupportedSchemaVersion(u32),
    #[error("body of `{message_type}` is not valid: {source}")]
    Body {
        message_type: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl DecodeError {
    /// Stable reason code for the dead-letter headers and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::MissingType => "missing_type",
            DecodeError::UnknownType(_) => "unknown_type",
            DecodeError::MissingField(_) => "missing_field",
            DecodeError::UnsupportedSchemaVersion(_) => "unsupported_schema_version",
            DecodeError::Body { .. } => "invalid_body",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_a_span_of_its_saga_trace() {
        let saga = Uuid::parse_str("0191d6a1-7c2e-7b3a-9f00-0123456789ab").unwrap();
        let meta = Meta::new(saga, "payment.authorize");
        let expected = format!("00-0191d6a17c2e7b3a9f000123456789ab-{:016x}-01", meta.message_id.as_u128() as u64);
        assert_eq!(meta.traceparent.as_deref(), Some(expected.as_str()));
        // W3C forbids an all-zero span id.
        assert_eq!(traceparent(saga, Uuid::nil()), "00-0191d6a17c2e7b3a9f000123456789ab-0000000000000001-01");
    }
}
