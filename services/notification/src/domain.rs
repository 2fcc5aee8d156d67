//! What to tell whom about an order event, without IO.

use contracts::Event;
use contracts::events::{OrderCompensated, OrderCompleted, OrderFailed};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub kind: &'static str,
    pub customer_id: String,
    pub message: String,
    pub reason: Option<String>,
}

pub fn notice(event: &Event) -> Notice {
    match event {
        Event::OrderCompleted(OrderCompleted { order_id, customer_id, total_cents, currency }) => Notice {
            kind: "confirmation",
            customer_id: customer_id.clone(),
            message: format!(
                "Your order {order_id} is confirmed: {}.{:02} {currency}.",
                total_cents / 100,
                total_cents % 100
            ),
            reason: None,
        },
        Event::OrderCompensated(OrderCompensated { order_id, customer_id, reason }) => Notice {
            kind: "cancellation",
            customer_id: customer_id.clone(),
            message: format!("Your order {order_id} was cancelled; nothing was charged."),
            reason: Some(reason.clone()),
        },
        Event::OrderFailed(OrderFailed { order_id, customer_id, reason }) => Notice {
            kind: "failure",
            customer_id: customer_id.clone(),
            message: format!("Order {order_id} needs an operator: a compensation could not be done."),
            reason: Some(reason.clone()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn each_event_has_its_notice() {
        let id = Uuid::nil();
        let n = notice(&Event::OrderCompleted(OrderCompleted {
            order_id: id,
            customer_id: "c".into(),
            total_cents: 3998,
            currency: "EUR".into(),
        }));
        assert_eq!((n.kind, n.reason), ("confirmation", None));
        assert!(n.message.contains("39.98 EUR"));
        let n = notice(&Event::OrderCompensated(OrderCompensated {
            order_id: id,
            customer_id: "c".into(),
            reason: "declined".into(),
        }));
        assert_eq!((n.kind, n.reason.as_deref()), ("cancellation", Some("declined")));
        let n =
            notice(&Event::OrderFailed(OrderFailed { order_id: id, customer_id: "c".into(), reason: "void".into() }));
        assert_eq!(n.kind, "failure");
    }
}
