//! Every type that crosses the wire, and the broker topology as data.
//!
//! Layout:
//! - [`order`]: the order a client submits over HTTP (`POST /orders`) and the value types it is made of.
//! - [`countries`]: the officially assigned ISO 3166-1 alpha-2 country codes.
//! - [`commands`]: what the orchestrator asks participants to do (`saga.commands`, key `<participant>.<verb>`).
//! - [`replies`]: what participants answer (`saga.replies`, key `<participant>.<outcome>`).
//! - [`events`]: facts for anyone (`saga.events`, key `order.<fact>`).
//! - [`history`]: the order's history as the orchestrator's event store publishes it (`saga.events`,
//!   key `history.<event type>`) and serves it (`GET /events`).
//! - [`notices`]: what a participant's transport tells the orchestrator about a stuck command
//!   (`saga.replies`, key `notice.<what>`).
//! - [`envelope`]: the metadata every message carries (AMQP properties and headers) and the header names.
//! - [`topology`]: exchanges, queues, bindings and dead-letter routes as data, and the
//!   `definitions.json` the RabbitMQ management console imports.
//!
//! This crate knows nothing of tokio, lapin, sqlx or axum: it is plain data plus serde.

pub mod commands;
pub mod countries;
pub mod envelope;
pub mod events;
pub mod history;
pub mod notices;
pub mod order;
pub mod replies;
pub mod topology;

pub use commands::Command;
pub use envelope::{DecodeError, Meta};
pub use events::Event;
pub use notices::Notice;
pub use replies::{Reply, ReplyOutcome};

/// The schema version this build writes. Readers accept every version up to and including it.
pub const SCHEMA_VERSION: u32 = 1;

/// A message body that can be sent: it knows its AMQP `type` (which is also its routing key) and
/// how to turn itself into bytes and back.
pub trait Message: Sized {
    /// The AMQP `type` property and routing key, e.g. `inventory.reserve`.
    fn message_type(&self) -> &'static str;
    /// JSON body bytes.
    fn encode(&self) -> Vec<u8>;
    /// Decode a body of the given `type` and schema version.
    fn decode(message_type: &str, schema_version: u32, body: &[u8]) -> Result<Self, DecodeError>;
    /// Every `type` this enum knows, for documentation, topology and tests.
    fn all_types() -> &'static [&'static str];
}

/// Builds an enum of messages where each variant wraps one payload struct, with its `type` string.
/// Generates [`Message`] for it, so the table of `type` strings lives in one place.
macro_rules! message_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident($payload:ty) = $ty:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vmeta])* $variant($payload),)+
        }

        impl $name {
            /// The body as a JSON value (what [`Message::encode`](crate::Message::encode) writes),
            /// without going through bytes.
            pub fn to_json(&self) -> serde_json::Value {
                // Plain structs of strings and numbers always serialize.
                match self { $(Self::$variant(p) => serde_json::to_value(p),)+ }.unwrap_or_default()
            }
        }

        impl $crate::Message for $name {
            fn message_type(&self) -> &'static str {
                match self { $(Self::$variant(_) => $ty,)+ }
            }

            fn encode(&self) -> Vec<u8> {
                let encoded = match self { $(Self::$variant(p) => serde_json::to_vec(p),)+ };
                // Serializing plain structs of strings and numbers to a Vec cannot fail.
                encoded.unwrap_or_default()
            }

            fn decode(message_type: &str, schema_version: u32, body: &[u8]) -> Result<Self, $crate::DecodeError> {
                if schema_version == 0 || schema_version > $crate::SCHEMA_VERSION {
                    return Err($crate::DecodeError::UnsupportedSchemaVersion(schema_version));
                }
                match message_type {
                    $($ty => serde_json::from_slice(body)
                        .map(Self::$variant)
                        .map_err(|e| $crate::DecodeError::Body { message_type: $ty, source: e }),)+
                    other => Err($crate::DecodeError::UnknownType(other.to_owned())),
                }
            }

            fn all_types() -> &'static [&'static str] {
                &[$($ty,)+]
            }
        }
    };
}
pub(crate) use message_enum;
