//! The reply consumer: `orchestrator.replies` deliveries into the engine. Replies are deduplicated
//! by message id (orchestrator inbox, same transaction as the transition); replies the kernel
//! ignores are appended to the saga's stream (`reply.ignored`) and counted. Notices say why a command is stuck: a
//! dead-lettered command of the pivot or a later step opens an incident, anything else is shown as
//! the saga's `attention`.

use std::sync::Arc;

use chrono::Utc;
use contracts::topology::ORCHESTRATOR_QUEUE;
use contracts::{Meta, Notice, Reply, ReplyOutcome};
use infra::amqp::{DeliveryHandler, Incoming, Outcome};
use serde_json::json;
use uuid::Uuid;

use super::{Cause, Engine, EngineError};
use crate::history::Recorded;
use crate::kernel::{DeadLetter, Decision, Ignored, Input};
use crate::store::{self, Locked, TimelineEntry};

impl Engine {
    /// Apply one reply. Duplicates (same message id) change nothing.
    pub async fn apply_reply(&self, meta: &Meta, reply: &Reply) -> Result<(), EngineError> {
        self.retrying(|| self.try_apply_reply(meta, reply)).await
    }

    async fn try_apply_reply(&self, meta: &Meta, reply: &Reply) -> Result<(), EngineError> {
        let mut tx = self.pool.begin().await?;
        let (fresh, saga) = store::dedupe_and_load(&mut tx, meta.message_id, &meta.message_type, meta.saga_id).await?;
        if !fresh {
            tx.rollback().await?;
            self.metrics.replies_ignored.with_label_values(&["duplicate"]).inc();
            self.plumbing.duplicates.with_label_values(&[ORCHESTRATOR_QUEUE]).inc();
            tracing::info!("duplicate reply ignored");
            return Ok(());
        }
        let Some(saga) = self.caught_up(saga)? else {
            tx.rollback().await?;
            return Err(EngineError::UnknownSaga(meta.saga_id));
        };
        let cause = Cause { kind: "reply", message_id: Some(meta.message_id), message_type: Some(&meta.message_type) };
        let input = Input::Reply { message_type: &meta.message_type, reply };
        match self.decide(&mut tx, &saga, input, &cause).await? {
            Decision::Ignored(Ignored::InIncident) => {
                // Only a saga no definition here can drive ignores a reply for its incident: keep
                // the reply out of the inbox, so its next delivery is applied once that is fixed.
                tx.rollback().await?;
                return Err(EngineError::Undriveable(saga.id));
            }
            Decision::Applied { state, note, .. } => {
                tx.commit().await?;
                self.observe_step(&saga, reply);
                self.wake();
                tracing::info!(status = state.status.as_str(), note = %note, "saga advanced");
            }
            Decision::Ignored(why) => {
                let note = format!("{} ignored ({})", meta.message_type, why.as_str());
                let event = Recorded::ignored(&meta.message_type, why.as_str());
                store::note(&mut tx, saga.id, saga.version, &entry(&saga, "ignored", &note, meta, event), None).await?;
                tx.commit().await?;
                self.sequencer.wake();
                self.metrics.replies_ignored.with_label_values(&[why.as_str()]).inc();
                tracing::info!(reason = why.as_str(), "reply ignored");
            }
            Decision::Refused(why) => return Err(EngineError::Invariant(format!("a reply was refused: {why}"))),
        }
        Ok(())
    }

    fn observe_step(&self, saga: &Locked, reply: &Reply) {
        if let Some(step) = saga.state.current_step_name() {
            let outcome = match reply.outcome() {
                ReplyOutcome::Success => "success",
                ReplyOutcome::Failure { .. } => "failure",
            };
            let waited = (Utc::now() - saga.step_since).to_std().unwrap_or_default();
            self.metrics.step_seconds.with_label_values(&[step, outcome]).observe(waited.as_secs_f64());
        }
    }

    /// Record a participant's notice (a command waits, or was dead-lettered) on its saga. A
    /// dead-lettered command the saga cannot recover from by itself opens an incident; otherwise
    /// the notice becomes the status's `attention` and a timeline entry, changing no state.
    pub async fn apply_notice(&self, meta: &Meta, notice: &Notice) -> Result<(), EngineError> {
        self.retrying(|| self.try_apply_notice(meta, notice)).await
    }

    async fn try_apply_notice(&self, meta: &Meta, notice: &Notice) -> Result<(), EngineError> {
        let mut tx = self.pool.begin().await?;
        let (fresh, saga) = store::dedupe_and_load(&mut tx, meta.message_id, &meta.message_type, meta.saga_id).await?;
        let saga = self.caught_up(saga)?;
        let Some(saga) = saga.filter(|s| fresh && !s.state.status.is_terminal()) else {
            // A duplicate, a notice about a finished saga, or about no saga of ours: nothing to show.
            tx.commit().await?;
            return Ok(());
        };
        if let Notice::DeadLettered(d) = notice {
            let dead = DeadLetter {
                queue: d.dead_letter_queue.clone(),
                message_id: d.message_id,
                message_type: d.message_type.clone(),
                reason: d.reason.clone(),
            };
            let cause =
                Cause { kind: "incident", message_id: Some(meta.message_id), message_type: Some(&meta.message_type) };
            if let Decision::Applied { .. } = self.decide(&mut tx, &saga, Input::DeadLettered(&dead), &cause).await? {
                tx.commit().await?;
                self.wake();
                return Ok(());
            }
        }
        let (kind, attention) = match notice {
            Notice::Waiting(w) => ("waiting", format!("waiting: {} ({} in {})", w.reason, w.message_type, w.queue)),
            Notice::DeadLettered(d) => (
                "dead_lettered",
                format!("command {} is in {} ({}: {})", d.message_type, d.dead_letter_queue, d.reason, d.error),
            ),
        };
        let event = Recorded::notice(kind, &attention);
        store::note(&mut tx, saga.id, saga.version, &entry(&saga, kind, &attention, meta, event), Some(&attention))
            .await?;
        tx.commit().await?;
        self.sequencer.wake();
        tracing::warn!(attention = %attention, "saga needs attention");
        Ok(())
    }
}

/// An event that changes nothing, caused by the message `meta` describes.
fn entry<'a>(
    saga: &'a Locked,
    kind: &'static str,
    note: &'a str,
    meta: &'a Meta,
    event: Recorded,
) -> TimelineEntry<'a> {
    TimelineEntry {
        event,
        kind,
        status: saga.state.status.as_str(),
        step: saga.state.current_step_name(),
        failure_reason: saga.state.failure_reason.as_deref(),
        note,
        cause_message_id: Some(meta.message_id),
        cause_type: Some(&meta.message_type),
        sent: json!([]),
    }
}

/// The reply consumer: `orchestrator.replies` deliveries into [`Engine::apply_reply`] and
/// [`Engine::apply_notice`].
pub struct ReplyHandler(pub Arc<Engine>);

impl ReplyHandler {
    async fn notice(&self, incoming: &Incoming) -> Outcome {
        match incoming.decode::<Notice>() {
            Ok((meta, notice)) => match self.0.apply_notice(&meta, &notice).await {
                Ok(()) => Outcome::Ack,
                // An unreadable saga is ended by the scanner; the notice has nothing left to say.
                Err(e) if e.is_unreadable() => Outcome::Ack,
                Err(e) => Outcome::Retry { reason: e.to_string() },
            },
            Err(e) => Outcome::DeadLetter { code: e.code(), error: e.to_string() },
        }
    }
}

impl DeliveryHandler for ReplyHandler {
    async fn handle(&self, incoming: &Incoming) -> Outcome {
        let is_notice = incoming.properties.kind().as_ref().is_some_and(|t| t.as_str().starts_with("notice."));
        if is_notice {
            return self.notice(incoming).await;
        }
        let (meta, reply) = match incoming.decode::<Reply>() {
            Ok(decoded) => decoded,
            Err(e) => return Outcome::DeadLetter { code: e.code(), error: e.to_string() },
        };
        if reply.order_id() != meta.saga_id {
            return Outcome::DeadLetter {
                code: "saga_mismatch",
                error: format!("correlation_id {} but body order_id {}", meta.saga_id, reply.order_id()),
            };
        }
        match self.0.apply_reply(&meta, &reply).await {
            Ok(()) => Outcome::Ack,
            Err(EngineError::UnknownSaga(id)) => unknown(id),
            // Parked for delayed rounds, then its dead-letter queue, where an operator can replay it.
            Err(e @ EngineError::Undriveable(_)) => Outcome::Retry { reason: e.to_string() },
            Err(e) if e.is_unreadable() => Outcome::DeadLetter { code: "corrupt_saga", error: e.to_string() },
            Err(e) => Outcome::Retry { reason: e.to_string() },
        }
    }
}

fn unknown(id: Uuid) -> Outcome {
    Outcome::DeadLetter { code: "unknown_saga", error: format!("no saga {id}") }
}
