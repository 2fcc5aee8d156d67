//! The order saga. Read the table top-down: each step, its kind, its command, the replies that
//! end it, and how it is undone. Below the table, one small function per command.
//!
//! reserve inventory -> authorize payment (compensatable) -> schedule shipment (the pivot)
//! -> capture payment -> commit the reservation (retriable) -> `order.completed`.

use contracts::commands::{
    AuthorizePayment, CapturePayment, CommitInventory, ReleaseInventory, ReserveInventory, ScheduleShipment,
    VoidPayment,
};
use contracts::events::{OrderCompensated, OrderCompleted, OrderFailed};
use contracts::order::{OrderRequest, StockLine};
use contracts::{Command, Event};
use uuid::Uuid;

use crate::kernel::{Action, Compensation, SagaDefinition, StepDef, StepKind};

#[rustfmt::skip]
pub const ORDER_STEPS: &[StepDef] = &[
    StepDef { name: "reserve_inventory", kind: StepKind::Compensatable,
              command: "inventory.reserve", success: "inventory.reserved", failure: Some("inventory.rejected"),
              compensation: Some(Compensation { command: "inventory.release", done: "inventory.released" }) },
    StepDef { name: "authorize_payment", kind: StepKind::Compensatable,
              command: "payment.authorize", success: "payment.authorized", failure: Some("payment.declined"),
              compensation: Some(Compensation { command: "payment.void", done: "payment.voided" }) },
    StepDef { name: "schedule_shipment", kind: StepKind::Pivot,
              command: "shipping.schedule", success: "shipping.scheduled", failure: Some("shipping.rejected"),
              compensation: None },
    StepDef { name: "capture_payment", kind: StepKind::Retriable,
              command: "payment.capture", success: "payment.captured", failure: None,
              compensation: None },
    StepDef { name: "commit_inventory", kind: StepKind::Retriable,
              command: "inventory.commit", success: "inventory.committed", failure: None,
              compensation: None },
];

/// The order saga; its data is the order as the client submitted it.
#[derive(Debug, Clone, Copy, Default)]
pub struct OrderSaga;

impl SagaDefinition for OrderSaga {
    type Data = OrderRequest;

    fn name(&self) -> &'static str {
        "order"
    }

    fn steps(&self) -> &'static [StepDef] {
        ORDER_STEPS
    }

    fn command(&self, saga_id: Uuid, step: &StepDef, action: Action, order: &OrderRequest) -> Command {
        match (step.name, action) {
            ("reserve_inventory", Action::Do) => reserve(saga_id, order),
            ("reserve_inventory", Action::Compensate) => {
                Command::ReleaseInventory(ReleaseInventory { order_id: saga_id })
            }
            ("authorize_payment", Action::Do) => authorize(saga_id, order),
            ("authorize_payment", Action::Compensate) => Command::VoidPayment(VoidPayment { order_id: saga_id }),
            ("schedule_shipment", _) => schedule(saga_id, order),
            ("capture_payment", _) => Command::CapturePayment(CapturePayment { order_id: saga_id }),
            // commit_inventory, the last row of the table.
            _ => Command::CommitInventory(CommitInventory { order_id: saga_id }),
        }
    }

    fn completed_event(&self, saga_id: Uuid, order: &OrderRequest) -> Event {
        Event::OrderCompleted(OrderCompleted {
            order_id: saga_id,
            customer_id: order.customer_id.clone(),
            total_cents: total(order),
            currency: order.currency.clone(),
        })
    }

    fn compensated_event(&self, saga_id: Uuid, order: &OrderRequest, reason: &str) -> Event {
        Event::OrderCompensated(OrderCompensated {
            order_id: saga_id,
            customer_id: order.customer_id.clone(),
            reason: reason.to_owned(),
        })
    }

    fn failed_event(&self, saga_id: Uuid, order: &OrderRequest, reason: &str) -> Event {
        Event::OrderFailed(OrderFailed {
            order_id: saga_id,
            customer_id: order.customer_id.clone(),
            reason: reason.to_owned(),
        })
    }
}

/// The API refuses orders whose total overflows before a saga exists; saturating keeps this
/// total-function honest (and a saturated amount is declined by payment's limit anyway).
fn total(order: &OrderRequest) -> i64 {
    order.total_cents().unwrap_or(i64::MAX)
}

fn reserve(saga_id: Uuid, order: &OrderRequest) -> Command {
    let items = order.items.iter().map(|i| StockLine { sku: i.sku.clone(), quantity: i.quantity }).collect();
    Command::ReserveInventory(ReserveInventory { order_id: saga_id, items })
}

fn authorize(saga_id: Uuid, order: &OrderRequest) -> Command {
    Command::AuthorizePayment(AuthorizePayment {
        order_id: saga_id,
        customer_id: order.customer_id.clone(),
        amount_cents: total(order),
        currency: order.currency.clone(),
    })
}

fn schedule(saga_id: Uuid, order: &OrderRequest) -> Command {
    let items = order.items.iter().map(|i| StockLine { sku: i.sku.clone(), quantity: i.quantity }).collect();
    Command::ScheduleShipment(ScheduleShipment { order_id: saga_id, address: order.shipping_address.clone(), items })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::validate;
    use contracts::Message;
    use contracts::order::{Address, OrderItem};

    pub(crate) fn sample_order() -> OrderRequest {
        OrderRequest {
            customer_id: "c-42".into(),
            currency: "EUR".into(),
            items: vec![OrderItem { sku: "SKU-0001".into(), quantity: 2, unit_price_cents: 1999 }],
            shipping_address: Address {
                name: "Ada".into(),
                line1: "1 Main St".into(),
                line2: None,
                city: "Berlin".into(),
                postal_code: "10115".into(),
                country: "DE".into(),
            },
        }
    }

    #[test]
    fn the_order_saga_obeys_the_rules() {
        assert_eq!(validate(ORDER_STEPS), Ok(()));
    }

    #[test]
    fn every_step_builds_the_command_its_row_names() {
        let id = Uuid::now_v7();
        let order = sample_order();
        for step in ORDER_STEPS {
            assert_eq!(OrderSaga.command(id, step, Action::Do, &order).message_type(), step.command, "{}", step.name);
            if let Some(c) = step.compensation {
                assert_eq!(
                    OrderSaga.command(id, step, Action::Compensate, &order).message_type(),
                    c.command,
                    "{}",
                    step.name
                );
            }
        }
    }

    #[test]
    fn payment_is_for_the_order_total() {
        let cmd = OrderSaga.command(Uuid::nil(), &ORDER_STEPS[1], Action::Do, &sample_order());
        assert!(matches!(cmd, Command::AuthorizePayment(AuthorizePayment { amount_cents: 3998, .. })));
    }
}
