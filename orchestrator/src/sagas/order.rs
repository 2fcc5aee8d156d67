//! The order saga. Read the table top-down: each step, its kind, its command, the replies that
//! end it, and how it is undone. Below the table, one small function per command.
//!
//! reserve inventory -> authorize payment (compensatable) -> schedule shipment (the pivot)
//! -> capture payment -> commit the reservation (retriable) -> `order.completed`.
//!
//! Versions: a saga runs to its end on the version it started with. v1 could not cancel its pivot;
//! v2 (current) cancels a shipment whose scheduling was never answered (`shipping.cancel`), which
//! only an operator's `compensate` asks for. v1 stays known while sagas started on it may run.

use contracts::commands::{
    AuthorizePayment, CancelShipment, CapturePayment, CommitInventory, ReleaseInventory, ReserveInventory,
    ScheduleShipment, VoidPayment,
};
use contracts::events::{OrderCompensated, OrderCompleted, OrderFailed};
use contracts::order::{OrderRequest, StockLine};
use contracts::{Command, Event};
use uuid::Uuid;

use crate::kernel::{Action, Compensation, SagaDefinition, StepDef, StepKind};

/// The current table (v2).
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
              compensation: Some(Compensation { command: "shipping.cancel", done: "shipping.cancelled" }) },
    StepDef { name: "capture_payment", kind: StepKind::Retriable,
              command: "payment.capture", success: "payment.captured", failure: None,
              compensation: None },
    StepDef { name: "commit_inventory", kind: StepKind::Retriable,
              command: "inventory.commit", success: "inventory.committed", failure: None,
              compensation: None },
];

/// v1: the same steps, but a pivot that cannot be cancelled.
pub const ORDER_STEPS_V1: &[StepDef] =
    &[ORDER_STEPS[0], ORDER_STEPS[1], StepDef { compensation: None, ..ORDER_STEPS[2] }, ORDER_STEPS[3], ORDER_STEPS[4]];

/// The order saga, at one version; its data is the order as the client submitted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderSaga {
    version: u32,
    steps: &'static [StepDef],
}

impl OrderSaga {
    pub const NAME: &'static str = "order";
    /// The version new sagas start on.
    pub const LATEST: OrderSaga = OrderSaga { version: 2, steps: ORDER_STEPS };
    /// Every version this build can drive, oldest first.
    pub const VERSIONS: [OrderSaga; 2] = [OrderSaga { version: 1, steps: ORDER_STEPS_V1 }, OrderSaga::LATEST];

    /// The definition a stored saga names, if this build knows it.
    pub fn find(name: &str, version: u32) -> Option<OrderSaga> {
        (name == Self::NAME).then(|| Self::VERSIONS.into_iter().find(|d| d.version == version)).flatten()
    }
}

impl Default for OrderSaga {
    fn default() -> Self {
        OrderSaga::LATEST
    }
}

impl SagaDefinition for OrderSaga {
    type Data = OrderRequest;

    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn version(&self) -> u32 {
        self.version
    }

    fn steps(&self) -> &'static [StepDef] {
        self.steps
    }

    fn command(&self, saga_id: Uuid, step: &StepDef, action: Action, order: &OrderRequest) -> Command {
        match (step.name, action) {
            ("reserve_inventory", Action::Do) => reserve(saga_id, order),
            ("authorize_payment", Action::Do) => authorize(saga_id, order),
            ("schedule_shipment", Action::Do) => schedule(saga_id, order),
            ("capture_payment", _) => Command::CapturePayment(CapturePayment { order_id: saga_id }),
            ("commit_inventory", _) => Command::CommitInventory(CommitInventory { order_id: saga_id }),
            // Every compensation needs the order id only.
            _ => self.undo(saga_id, step).unwrap_or(Command::CommitInventory(CommitInventory { order_id: saga_id })),
        }
    }

    fn undo(&self, saga_id: Uuid, step: &StepDef) -> Option<Command> {
        let order_id = saga_id;
        match step.compensation?.command {
            "inventory.release" => Some(Command::ReleaseInventory(ReleaseInventory { order_id })),
            "payment.void" => Some(Command::VoidPayment(VoidPayment { order_id })),
            "shipping.cancel" => Some(Command::CancelShipment(CancelShipment { order_id })),
            _ => None,
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
    fn every_version_obeys_the_rules_and_is_found_by_its_number() {
        for def in OrderSaga::VERSIONS {
            assert_eq!(validate(def.steps()), Ok(()), "v{}", def.version());
            assert_eq!(OrderSaga::find("order", def.version()), Some(def));
        }
        assert_eq!(OrderSaga::find("order", 99), None);
        assert_eq!(OrderSaga::find("refund", 2), None);
        assert_eq!(OrderSaga::default(), OrderSaga::LATEST);
        let names = |d: OrderSaga| d.steps().iter().map(|s| s.name).collect::<Vec<_>>();
        assert_eq!(names(OrderSaga::VERSIONS[0]), names(OrderSaga::LATEST), "v2 only adds the pivot's cancel");
    }

    #[test]
    fn every_step_builds_the_command_its_row_names() {
        let id = Uuid::now_v7();
        let order = sample_order();
        for def in OrderSaga::VERSIONS {
            for step in def.steps() {
                assert_eq!(def.command(id, step, Action::Do, &order).message_type(), step.command, "{}", step.name);
                if let Some(c) = step.compensation {
                    let undo = def.command(id, step, Action::Compensate, &order);
                    assert_eq!(undo.message_type(), c.command, "{}", step.name);
                    assert_eq!(def.undo(id, step), Some(undo), "{}: built from the id alone", step.name);
                }
            }
        }
    }

    #[test]
    fn payment_is_for_the_order_total() {
        let cmd = OrderSaga::LATEST.command(Uuid::nil(), &ORDER_STEPS[1], Action::Do, &sample_order());
        assert!(matches!(cmd, Command::AuthorizePayment(AuthorizePayment { amount_cents: 3998, .. })));
    }
}
