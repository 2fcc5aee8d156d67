//! Deadlines: every saga whose deadline passed gets a `Timeout` input (re-send, compensate,
//! incident or FAILED, as the kernel decides). A saga whose stored state or order cannot be read
//! is salvaged instead: what its timeline shows as held is compensated, `order.failed` is
//! published, and it ends FAILED.

use contracts::events::OrderFailed;
use contracts::topology::EVENTS_EXCHANGE;
use contracts::{Event, Message, Meta};
use infra::amqp::Outgoing;
use infra::outbox;
use uuid::Uuid;

use super::{Cause, Engine, EngineError};
use crate::kernel::{self, Decision, Input};
use crate::sagas::order::OrderSaga;
use crate::store;

impl Engine {
    /// Handle every saga whose deadline has passed (up to `limit`). Returns how many were due.
    pub async fn expire_due(&self, limit: i64) -> Result<usize, EngineError> {
        let due = store::due(&self.pool, limit).await?;
        for (id, _) in &due {
            match self.expire(*id).await {
                Ok(()) => {}
                Err(error) if error.is_unreadable() => {
                    // Retrying cannot help: undo what it holds and end it where an operator sees it.
                    tracing::error!(saga_id = %id, %error, "saga cannot be read; salvaging it");
                    self.salvage(*id, &format!("saga cannot be read: {error}")).await?;
                }
                Err(error) => {
                    // Try again after a scan interval, not at once (which would spin).
                    tracing::error!(saga_id = %id, %error, "cannot handle step timeout; will retry");
                    if let Err(error) = store::postpone(&self.pool, *id, self.settings.scan_interval).await {
                        tracing::warn!(saga_id = %id, %error, "cannot postpone the deadline");
                    }
                }
            }
        }
        Ok(due.len())
    }

    async fn expire(&self, saga_id: Uuid) -> Result<(), EngineError> {
        let mut tx = self.pool.begin().await?;
        let Some(saga) = self.caught_up(store::lock_due(&mut tx, saga_id).await?)? else {
            // Moved on meanwhile, or another orchestrator has it.
            tx.rollback().await?;
            return Ok(());
        };
        let attempt = saga.state.attempt;
        let step = saga.state.current_step_name().unwrap_or("none").to_owned();
        match self.decide(&mut tx, &saga, Input::Timeout { attempt }, &Cause::of("timeout")).await? {
            Decision::Applied { note, .. } => {
                self.metrics.timeouts.with_label_values(&[&step]).inc();
                tracing::warn!(saga_id = %saga.id, step, attempt, note = %note, "step deadline passed");
                tx.commit().await?;
                self.wake();
            }
            Decision::Ignored(why) => {
                // A deadline the kernel has no use for: clear it so it is not scanned again.
                tracing::warn!(saga_id = %saga.id, reason = why.as_str(), "deadline ignored by the kernel; clearing it");
                sqlx::query("UPDATE sagas SET deadline = NULL WHERE id = $1").bind(saga.id).execute(&mut *tx).await?;
                tx.commit().await?;
            }
            Decision::Refused(why) => return Err(EngineError::Invariant(format!("a timeout was refused: {why}"))),
        }
        Ok(())
    }

    /// End an unreadable saga: compensate what its timeline shows as held (see
    /// [`kernel::salvage`]), publish `order.failed`, mark it FAILED; one transaction.
    pub async fn salvage(&self, saga_id: Uuid, reason: &str) -> Result<(), EngineError> {
        let mut tx = self.pool.begin().await?;
        let Some(remains) = store::remains(&mut tx, saga_id).await? else {
            tx.rollback().await?;
            return Ok(());
        };
        let def = OrderSaga::find(&remains.definition, remains.definition_version).unwrap_or(OrderSaga::LATEST);
        let sent: Vec<&str> = remains.sent.iter().map(String::as_str).collect();
        let received: Vec<&str> = remains.received.iter().map(String::as_str).collect();
        let salvage = kernel::salvage(&def, saga_id, &sent, &received);
        let reason = format!("{reason}; {}", salvage.note);
        let mut planned = self.plan(saga_id, &salvage.effects, &Cause::of("failed"));
        let customer_id = remains.data.get("customer_id").and_then(|c| c.as_str()).unwrap_or_default().to_owned();
        let event = Event::OrderFailed(OrderFailed { order_id: saga_id, customer_id, reason: reason.clone() });
        let meta = Meta::new(saga_id, event.message_type());
        planned.sent.push(serde_json::json!({"message_id": meta.message_id, "type": meta.message_type}));
        planned.messages.push(Outgoing::new(EVENTS_EXCHANGE, false, meta, &event));
        if !store::fail_unreadable(&mut tx, saga_id, &reason, &serde_json::Value::Array(planned.sent)).await? {
            tx.rollback().await?;
            return Ok(());
        }
        outbox::enqueue(&mut tx, &planned.messages).await?;
        tx.commit().await?;
        self.wake();
        self.metrics.finished.with_label_values(&[remains.definition.as_str(), "FAILED", "unreadable"]).inc();
        tracing::error!(saga_id = %saga_id, %reason, "unreadable saga ended FAILED");
        Ok(())
    }
}
