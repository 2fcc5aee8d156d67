//! The live consumer of `orders.history`: decode, apply in one transaction, and tell the transport
//! what to do ([`Outcome`]); it never sees the channel.
//!
//! - not a history event, or one that breaks the contract: dead-letter with the reason
//!   (`malformed`, `invalid_event`);
//! - applied, or applied before (its position, or its version of the order): ack;
//! - a gap (an earlier version of its order is not applied yet, e.g. its delivery is still in
//!   flight beside this one, or a rebuild has not replayed it yet): checked again a few times
//!   over about half a second, then parked for a delayed round without spending an attempt
//!   ([`Outcome::Defer`]), as often as it takes: never dropped, never applied out of order;
//! - a database error: a delayed retry round.

use std::time::Duration;

use infra::amqp::{DeliveryHandler, Incoming, Outcome};
use sqlx::PgPool;

use crate::event::Event;
use crate::metrics::OrdersMetrics;
use crate::projection::{self, Applied};

/// How often a gap is checked again in-process before the event is parked, and the first pause.
const GAP_CHECKS: u32 = 5;
const GAP_FIRST_PAUSE: Duration = Duration::from_millis(20);

#[derive(Clone)]
pub struct HistoryHandler {
    pub pool: PgPool,
    pub metrics: OrdersMetrics,
}

impl DeliveryHandler for HistoryHandler {
    async fn handle(&self, message: &Incoming) -> Outcome {
        let event = match Event::decode(&message.body) {
            Ok(e) => e,
            Err(e) => return Outcome::DeadLetter { code: e.code(), error: e.to_string() },
        };
        let mut pause = GAP_FIRST_PAUSE;
        for check in 0..=GAP_CHECKS {
            match projection::apply_counted(&self.pool, &self.metrics, &event, "consumer", check == 0).await {
                Ok(Applied::Applied { .. }) => {
                    tracing::debug!(position = event.position, order_id = %event.order_id, version = event.version,
                                    event_type = event.kind.name(), "applied");
                    return Outcome::Ack;
                }
                Ok(Applied::Duplicate) => {
                    tracing::debug!(position = event.position, order_id = %event.order_id, "already applied");
                    return Outcome::Ack;
                }
                Ok(Applied::Gap { expected }) if check == GAP_CHECKS => {
                    return Outcome::Defer {
                        reason: format!(
                            "gap: order {} expects version {expected}, this event (position {}) is version {}",
                            event.order_id, event.position, event.version
                        ),
                    };
                }
                Ok(Applied::Gap { .. }) => {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Err(e) => return Outcome::Retry { reason: format!("cannot apply: {e}") },
            }
        }
        Outcome::Retry { reason: "unreachable: the gap loop ended".into() }
    }
}
