//! Replies: what a participant answers to a command. Published to `saga.replies` with routing key
//! = `type` = `<participant>.<outcome>`; `correlation_id` is the saga id and `causation_id` the
//! command's message id.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

crate::message_enum! {
    /// Every reply of the platform.
    Reply {
        InventoryReserved(InventoryReserved) = "inventory.reserved",
        /// Business failure: not enough stock (or unknown SKU). Drives compensation.
        InventoryRejected(Rejected) = "inventory.rejected",
        InventoryReleased(Done) = "inventory.released",
        InventoryCommitted(Done) = "inventory.committed",
        PaymentAuthorized(PaymentAuthorized) = "payment.authorized",
        /// Business failure: the payment was declined. Drives compensation.
        PaymentDeclined(Rejected) = "payment.declined",
        PaymentVoided(Done) = "payment.voided",
        PaymentCaptured(Done) = "payment.captured",
        ShipmentScheduled(ShipmentScheduled) = "shipping.scheduled",
        /// Business failure: the destination cannot be served. Drives compensation.
        ShipmentRejected(Rejected) = "shipping.rejected",
        /// The booking is cancelled (or there was none) and a late schedule will be refused.
        ShipmentCancelled(Done) = "shipping.cancelled",
    }
}

/// Whether a reply means the step succeeded or failed for a business reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyOutcome {
    Success,
    Failure { reason: String },
}

impl Reply {
    pub fn outcome(&self) -> ReplyOutcome {
        match self {
            Reply::InventoryRejected(r) | Reply::PaymentDeclined(r) | Reply::ShipmentRejected(r) => {
                ReplyOutcome::Failure { reason: r.reason.clone() }
            }
            _ => ReplyOutcome::Success,
        }
    }

    /// The order (saga) this reply is about.
    pub fn order_id(&self) -> Uuid {
        match self {
            Reply::InventoryReserved(r) => r.order_id,
            Reply::PaymentAuthorized(r) => r.order_id,
            Reply::ShipmentScheduled(r) => r.order_id,
            Reply::InventoryRejected(r) | Reply::PaymentDeclined(r) | Reply::ShipmentRejected(r) => r.order_id,
            Reply::InventoryReleased(r)
            | Reply::InventoryCommitted(r)
            | Reply::PaymentVoided(r)
            | Reply::PaymentCaptured(r)
            | Reply::ShipmentCancelled(r) => r.order_id,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryReserved {
    pub order_id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentAuthorized {
    pub order_id: Uuid,
    pub authorization_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentScheduled {
    pub order_id: Uuid,
    pub shipment_id: Uuid,
    pub tracking_number: String,
}

/// A business refusal, with a human-readable reason and a stable machine code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    pub order_id: Uuid,
    /// Stable code, e.g. `out_of_stock`, `limit_exceeded`, `unsupported_destination`.
    pub code: String,
    pub reason: String,
}

/// A step or compensation that has nothing to report but that it is done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    pub order_id: Uuid,
}
