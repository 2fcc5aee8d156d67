//! Notices: what the transport of a participant tells the orchestrator about a command it could
//! not handle yet, on `saga.replies` with key `notice.<what>`. They change no saga state; they make
//! a saga's status say why it is stuck ("waiting: payment gateway circuit open since ...",
//! "command payment.capture is in payment.commands.dlq").

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

crate::message_enum! {
    /// Every notice of the platform.
    Notice {
        /// A command is waiting (parked for a delayed requeue) because a dependency is unavailable.
        Waiting(Waiting) = "notice.waiting",
        /// A command was moved to its queue's dead-letter queue.
        DeadLettered(DeadLettered) = "notice.dead_lettered",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    pub queue: String,
    pub message_id: Uuid,
    pub message_type: String,
    pub reason: String,
    pub since: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLettered {
    pub queue: String,
    pub dead_letter_queue: String,
    pub message_id: Uuid,
    pub message_type: String,
    /// Stable reason code, e.g. `retries_exhausted`.
    pub reason: String,
    pub error: String,
}
