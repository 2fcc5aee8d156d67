//! Events: facts about orders for anyone who cares, on `saga.events` with key `order.<fact>`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

crate::message_enum! {
    /// Every event of the platform.
    Event {
        /// The saga went through: payment captured, stock committed, shipment booked.
        OrderCompleted(OrderCompleted) = "order.completed",
        /// A step failed before the pivot and every completed step was undone.
        OrderCompensated(OrderCompensated) = "order.compensated",
        /// A compensation could not be done: an operator must look.
        OrderFailed(OrderFailed) = "order.failed",
    }
}

impl Event {
    pub fn order_id(&self) -> Uuid {
        match self {
            Event::OrderCompleted(e) => e.order_id,
            Event::OrderCompensated(e) => e.order_id,
            Event::OrderFailed(e) => e.order_id,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCompleted {
    pub order_id: Uuid,
    pub customer_id: String,
    pub total_cents: i64,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCompensated {
    pub order_id: Uuid,
    pub customer_id: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderFailed {
    pub order_id: Uuid,
    pub customer_id: String,
    pub reason: String,
}
