//! Commands: what the orchestrator asks a participant to do. Published to `saga.commands` with
//! routing key = `type` = `<participant>.<verb>`, `mandatory` (an unroutable command is an error).
//!
//! Every command of one saga step keeps the same idempotency key across re-sends (see
//! [`crate::envelope::Meta::idempotency_key`]); participants deduplicate on it.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::order::{Address, StockLine};

crate::message_enum! {
    /// Every command of the platform.
    Command {
        /// Hold stock for all lines of an order, or for none.
        ReserveInventory(ReserveInventory) = "inventory.reserve",
        /// Compensation: give back what [`Command::ReserveInventory`] held. Unknown order: no-op success.
        ReleaseInventory(ReleaseInventory) = "inventory.release",
        /// Turn the held stock into a shipment: on_hand and reserved both drop.
        CommitInventory(CommitInventory) = "inventory.commit",
        /// Authorize (hold) the order total on the customer's payment method.
        AuthorizePayment(AuthorizePayment) = "payment.authorize",
        /// Compensation: void the authorization. Unknown or already voided: no-op success.
        VoidPayment(VoidPayment) = "payment.void",
        /// Capture the authorized amount.
        CapturePayment(CapturePayment) = "payment.capture",
        /// Book the shipment with the carrier: the saga's pivot.
        ScheduleShipment(ScheduleShipment) = "shipping.schedule",
        /// Cancel a booking whose outcome is unknown (the schedule was never answered), by the
        /// booking's key at the carrier; refuses a later schedule. Nothing booked: no-op success.
        /// Only an operator's `compensate` of a saga stuck at its pivot sends it.
        CancelShipment(CancelShipment) = "shipping.cancel",
    }
}

impl Command {
    /// The order (saga) this command is about.
    pub fn order_id(&self) -> Uuid {
        match self {
            Command::ReserveInventory(c) => c.order_id,
            Command::ReleaseInventory(c) => c.order_id,
            Command::CommitInventory(c) => c.order_id,
            Command::AuthorizePayment(c) => c.order_id,
            Command::VoidPayment(c) => c.order_id,
            Command::CapturePayment(c) => c.order_id,
            Command::ScheduleShipment(c) => c.order_id,
            Command::CancelShipment(c) => c.order_id,
        }
    }

    /// The participant that handles this command (the first part of its routing key).
    pub fn participant(&self) -> &'static str {
        use crate::Message;
        let ty = self.message_type();
        ty.split_once('.').map_or(ty, |(p, _)| p)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReserveInventory {
    pub order_id: Uuid,
    pub items: Vec<StockLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseInventory {
    pub order_id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitInventory {
    pub order_id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizePayment {
    pub order_id: Uuid,
    pub customer_id: String,
    pub amount_cents: i64,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoidPayment {
    pub order_id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturePayment {
    pub order_id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleShipment {
    pub order_id: Uuid,
    pub address: Address,
    pub items: Vec<StockLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelShipment {
    pub order_id: Uuid,
}
