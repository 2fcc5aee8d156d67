//! The saga engine: the pure kernel wrapped with IO. For every input (a new order, a reply, a
//! passed deadline) it locks the saga row, asks [`kernel::transition`] what to do, and writes the
//! new state, the timeline entry and the outgoing commands/events (outbox) in one transaction.
//!
//! Replies are deduplicated by message id (orchestrator inbox, same transaction); replies the
//! kernel ignores (late, unexpected, for a finished saga) are written to the timeline and counted.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use contracts::order::OrderRequest;
use contracts::topology::{COMMANDS_EXCHANGE, EVENTS_EXCHANGE, ORCHESTRATOR_QUEUE};
use contracts::{Message, Meta, Notice, Reply, ReplyOutcome};
use infra::amqp::{DeliveryHandler, Incoming, Outcome, Outgoing};
use infra::outbox::{self, OutboxWaker};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::kernel::{self, Decision, Effect, Input, Policy, SagaDefinition, SagaState};
use crate::metrics::SagaMetrics;
use crate::sagas::order::OrderSaga;
use crate::settings::OrchestratorSettings;
use crate::store::{self, Locked, SagaWrite, StoreError, TimelineEntry};

/// Why an input could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no saga {0}")]
    UnknownSaga(Uuid),
    #[error("saga {id} holds order data that cannot be read: {source}")]
    CorruptData {
        id: Uuid,
        #[source]
        source: serde_json::Error,
    },
    #[error("Idempotency-Key already used for saga {0} with a different order")]
    KeyConflict(Uuid),
    /// Something that cannot happen did (a kernel or storage invariant broke).
    #[error("invariant broken: {0}")]
    Invariant(String),
}

impl From<sqlx::Error> for EngineError {
    fn from(e: sqlx::Error) -> Self {
        EngineError::Store(StoreError::Db(e))
    }
}

/// The answer to `POST /orders`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub saga_id: Uuid,
    pub status: String,
    /// `false` when the Idempotency-Key named an existing saga.
    pub created: bool,
}

/// What caused a transition, for the timeline.
struct Cause<'a> {
    kind: &'static str,
    message_id: Option<Uuid>,
    message_type: Option<&'a str>,
}

/// Drives order sagas. Shared by the API, the reply consumer and the timeout scanner.
pub struct Engine {
    pub pool: PgPool,
    pub settings: Arc<OrchestratorSettings>,
    pub waker: OutboxWaker,
    pub metrics: SagaMetrics,
    pub plumbing: infra::metrics::Metrics,
    def: OrderSaga,
    policy: Policy,
}

impl Engine {
    pub fn new(
        pool: PgPool,
        settings: Arc<OrchestratorSettings>,
        waker: OutboxWaker,
        metrics: SagaMetrics,
        plumbing: infra::metrics::Metrics,
    ) -> Self {
        let policy = Policy {
            max_attempts: settings.max_attempts,
            max_compensation_attempts: settings.max_compensation_attempts,
        };
        Engine { pool, settings, waker, metrics, plumbing, def: OrderSaga, policy }
    }

    pub fn definition(&self) -> &OrderSaga {
        &self.def
    }

    /// Start a saga for a validated order. With an idempotency key, a second call returns the
    /// first call's saga, or [`EngineError::KeyConflict`] if the order differs.
    pub async fn start(&self, order: &OrderRequest, idempotency_key: Option<&str>) -> Result<Started, EngineError> {
        let data = serde_json::to_value(order)
            .map_err(|e| EngineError::Invariant(format!("order does not serialize: {e}")))?;
        if let Some(key) = idempotency_key
            && let Some(existing) = self.existing(key, &data).await?
        {
            return Ok(existing);
        }
        let saga_id = Uuid::now_v7();
        let Decision::Applied { state, effects, note } =
            kernel::transition(&self.def, &self.policy, saga_id, order, None, Input::Start)
        else {
            return Err(EngineError::Invariant("the kernel ignored the start of a new saga".into()));
        };
        let mut tx = self.pool.begin().await?;
        let cause = Cause { kind: "started", message_id: None, message_type: None };
        let inserted =
            self.persist(&mut tx, saga_id, &data, &state, &effects, &note, &cause, Some(idempotency_key), true).await?;
        if !inserted {
            // Lost a race with the same key.
            tx.rollback().await?;
            let key = idempotency_key.unwrap_or_default();
            return self
                .existing(key, &data)
                .await?
                .ok_or_else(|| EngineError::Invariant(format!("idempotency key {key} conflicted but names no saga")));
        }
        tx.commit().await?;
        self.waker.wake();
        self.metrics.started.with_label_values(&[self.def.name()]).inc();
        tracing::info!(saga_id = %saga_id, customer_id = %order.customer_id, "saga started");
        Ok(Started { saga_id, status: state.status.as_str().to_owned(), created: true })
    }

    async fn existing(&self, key: &str, data: &Value) -> Result<Option<Started>, EngineError> {
        match store::by_idempotency_key(&self.pool, key).await? {
            None => Ok(None),
            Some((id, _, stored)) if &stored != data => Err(EngineError::KeyConflict(id)),
            Some((id, status, _)) => Ok(Some(Started { saga_id: id, status, created: false })),
        }
    }

    /// Apply one reply. Duplicates (same message id) change nothing.
    pub async fn apply_reply(&self, meta: &Meta, reply: &Reply) -> Result<(), EngineError> {
        let mut tx = self.pool.begin().await?;
        let (fresh, saga) = store::dedupe_and_lock(&mut tx, meta.message_id, &meta.message_type, meta.saga_id).await?;
        if !fresh {
            tx.rollback().await?;
            self.metrics.replies_ignored.with_label_values(&["duplicate"]).inc();
            self.plumbing.duplicates.with_label_values(&[ORCHESTRATOR_QUEUE]).inc();
            tracing::info!("duplicate reply ignored");
            return Ok(());
        }
        let Some(saga) = saga else {
            tx.rollback().await?;
            return Err(EngineError::UnknownSaga(meta.saga_id));
        };
        let order = self.order_of(&saga)?;
        let decision = kernel::transition(
            &self.def,
            &self.policy,
            saga.id,
            &order,
            Some(&saga.state),
            Input::Reply { message_type: &meta.message_type, reply },
        );
        let cause = Cause { kind: "reply", message_id: Some(meta.message_id), message_type: Some(&meta.message_type) };
        match decision {
            Decision::Ignored(why) => {
                self.metrics.replies_ignored.with_label_values(&[why.as_str()]).inc();
                tracing::info!(reason = why.as_str(), "reply ignored");
                let note = format!("{} ignored ({})", meta.message_type, why.as_str());
                let entry = TimelineEntry {
                    kind: "ignored",
                    status: saga.state.status.as_str(),
                    step: saga.state.current_step_name(),
                    note: &note,
                    cause_message_id: cause.message_id,
                    cause_type: cause.message_type,
                    sent: json!([]),
                };
                store::note(&mut tx, saga.id, &entry).await?;
                tx.commit().await?;
            }
            Decision::Applied { state, effects, note } => {
                if let Some(step) = saga.state.current_step_name() {
                    let outcome = match reply.outcome() {
                        ReplyOutcome::Success => "success",
                        ReplyOutcome::Failure { .. } => "failure",
                    };
                    let waited = (Utc::now() - saga.updated_at).to_std().unwrap_or_default();
                    self.metrics.step_seconds.with_label_values(&[step, outcome]).observe(waited.as_secs_f64());
                }
                self.persist(&mut tx, saga.id, &saga.data, &state, &effects, &note, &cause, None, false).await?;
                tx.commit().await?;
                self.waker.wake();
                self.finished(&saga, &state);
                tracing::info!(status = state.status.as_str(), note = %note, "saga advanced");
            }
        }
        Ok(())
    }

    /// Record a participant's notice (a command waits, or was dead-lettered) on its saga: the
    /// status's `attention` and a timeline entry. Changes no saga state.
    pub async fn apply_notice(&self, meta: &Meta, notice: &Notice) -> Result<(), EngineError> {
        let mut tx = self.pool.begin().await?;
        let (fresh, saga) = store::dedupe_and_lock(&mut tx, meta.message_id, &meta.message_type, meta.saga_id).await?;
        let Some(saga) = saga.filter(|s| fresh && !s.state.status.is_terminal()) else {
            // A duplicate, a notice about a finished saga, or about no saga of ours: nothing to show.
            tx.commit().await?;
            return Ok(());
        };
        let (kind, attention) = match notice {
            Notice::Waiting(w) => ("waiting", format!("waiting: {} ({} in {})", w.reason, w.message_type, w.queue)),
            Notice::DeadLettered(d) => (
                "dead_lettered",
                format!("command {} is in {} ({}: {})", d.message_type, d.dead_letter_queue, d.reason, d.error),
            ),
        };
        let entry = TimelineEntry {
            kind,
            status: saga.state.status.as_str(),
            step: saga.state.current_step_name(),
            note: &attention,
            cause_message_id: Some(meta.message_id),
            cause_type: Some(&meta.message_type),
            sent: json!([]),
        };
        store::note(&mut tx, saga.id, &entry).await?;
        store::set_attention(&mut tx, saga.id, &attention).await?;
        tx.commit().await?;
        tracing::warn!(attention = %attention, "saga needs attention");
        Ok(())
    }

    /// Handle every saga whose deadline has passed (up to `limit`). Returns how many were due.
    pub async fn expire_due(&self, limit: i64) -> Result<usize, EngineError> {
        let due = store::due(&self.pool, limit).await?;
        for (id, _) in &due {
            match self.expire(*id).await {
                Ok(()) => {}
                Err(
                    error @ (EngineError::CorruptData { .. } | EngineError::Store(StoreError::CorruptState { .. })),
                ) => {
                    // Retrying cannot help: end it where an operator sees it.
                    tracing::error!(saga_id = %id, %error, "saga cannot be read; marking it FAILED");
                    if store::fail_unreadable(&self.pool, *id, &format!("saga cannot be read: {error}")).await? {
                        self.metrics.finished.with_label_values(&[self.def.name(), "FAILED"]).inc();
                    }
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
        let Some(saga) = store::lock_due(&mut tx, saga_id).await? else {
            // Moved on meanwhile, or another orchestrator has it.
            tx.rollback().await?;
            return Ok(());
        };
        let order = self.order_of(&saga)?;
        let attempt = saga.state.attempt;
        let decision =
            kernel::transition(&self.def, &self.policy, saga.id, &order, Some(&saga.state), Input::Timeout { attempt });
        match decision {
            Decision::Applied { state, effects, note } => {
                let step = saga.state.current_step_name().unwrap_or("none");
                self.metrics.timeouts.with_label_values(&[step]).inc();
                tracing::warn!(saga_id = %saga.id, step, attempt, note = %note, "step deadline passed");
                let cause = Cause { kind: "timeout", message_id: None, message_type: None };
                self.persist(&mut tx, saga.id, &saga.data, &state, &effects, &note, &cause, None, false).await?;
                tx.commit().await?;
                self.waker.wake();
                self.finished(&saga, &state);
            }
            Decision::Ignored(why) => {
                // A deadline the kernel has no use for: clear it so it is not scanned again.
                tracing::warn!(saga_id = %saga.id, reason = why.as_str(), "deadline ignored by the kernel; clearing it");
                sqlx::query("UPDATE sagas SET deadline = NULL WHERE id = $1").bind(saga.id).execute(&mut *tx).await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    fn order_of(&self, saga: &Locked) -> Result<OrderRequest, EngineError> {
        serde_json::from_value(saga.data.clone()).map_err(|source| EngineError::CorruptData { id: saga.id, source })
    }

    fn finished(&self, before: &Locked, after: &SagaState) {
        if after.status.is_terminal() && !before.state.status.is_terminal() {
            let labels = [self.def.name(), after.status.as_str()];
            self.metrics.finished.with_label_values(&labels).inc();
            let took = (Utc::now() - before.created_at).to_std().unwrap_or_default();
            self.metrics.duration_seconds.with_label_values(&labels).observe(took.as_secs_f64());
        }
    }

    /// Write a transition: saga row (insert or update), timeline entry, outbox rows. Returns
    /// `false` only when inserting and the idempotency key already exists.
    #[allow(clippy::too_many_arguments)]
    async fn persist(
        &self,
        tx: &mut PgConnection,
        saga_id: Uuid,
        data: &Value,
        state: &SagaState,
        effects: &[Effect],
        note: &str,
        cause: &Cause<'_>,
        idempotency_key: Option<Option<&str>>,
        insert: bool,
    ) -> Result<bool, EngineError> {
        let now = Utc::now();
        let mut deadline: Option<DateTime<Utc>> = None;
        let mut messages = Vec::new();
        let mut sent = Vec::new();
        for effect in effects {
            match effect {
                Effect::Send { command, idempotency_key, attempt, .. } => {
                    let mut meta = Meta::new(saga_id, command.message_type())
                        .with_idempotency_key(idempotency_key.clone())
                        .with_attempt(*attempt);
                    meta.causation_id = cause.message_id;
                    self.metrics.commands_sent.with_label_values(&[command.message_type()]).inc();
                    sent.push(json!({"message_id": meta.message_id, "type": meta.message_type, "attempt": attempt}));
                    messages.push(Outgoing::new(COMMANDS_EXCHANGE, true, meta, command));
                }
                Effect::Publish(event) => {
                    let mut meta = Meta::new(saga_id, event.message_type());
                    meta.causation_id = cause.message_id;
                    sent.push(json!({"message_id": meta.message_id, "type": meta.message_type}));
                    messages.push(Outgoing::new(EVENTS_EXCHANGE, false, meta, event));
                }
                Effect::Wait { attempt, .. } => {
                    let wait = self.settings.timeout_for(*attempt);
                    // Settings cap every timeout at 30 days, so this cannot overflow; saturate anyway.
                    let wait = chrono::Duration::from_std(wait).unwrap_or(chrono::TimeDelta::days(30));
                    deadline = Some(now.checked_add_signed(wait).unwrap_or(DateTime::<Utc>::MAX_UTC));
                }
                Effect::ClearDeadline => deadline = None,
            }
        }
        let write = SagaWrite {
            id: saga_id,
            definition: self.def.name(),
            state,
            data,
            deadline,
            idempotency_key: idempotency_key.flatten(),
        };
        let entry = TimelineEntry {
            kind: cause.kind,
            status: state.status.as_str(),
            step: state.current_step_name(),
            note,
            cause_message_id: cause.message_id,
            cause_type: cause.message_type,
            sent: Value::Array(sent),
        };
        if insert {
            if !store::insert(tx, &write, &entry).await? {
                return Ok(false);
            }
        } else {
            store::update(tx, &write, &entry).await?;
        }
        outbox::enqueue(tx, &messages).await?;
        Ok(true)
    }
}

/// The reply consumer: `orchestrator.replies` deliveries into [`Engine::apply_reply`].
pub struct ReplyHandler(pub Arc<Engine>);

impl DeliveryHandler for ReplyHandler {
    async fn handle(&self, incoming: &Incoming) -> Outcome {
        let is_notice = incoming.properties.kind().as_ref().is_some_and(|t| t.as_str().starts_with("notice."));
        if is_notice {
            return match incoming.decode::<Notice>() {
                Ok((meta, notice)) => match self.0.apply_notice(&meta, &notice).await {
                    Ok(()) => Outcome::Ack,
                    Err(e) => Outcome::Retry { reason: e.to_string() },
                },
                Err(e) => Outcome::DeadLetter { code: e.code(), error: e.to_string() },
            };
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
            Err(EngineError::UnknownSaga(id)) => {
                Outcome::DeadLetter { code: "unknown_saga", error: format!("no saga {id}") }
            }
            Err(e @ (EngineError::CorruptData { .. } | EngineError::Store(StoreError::CorruptState { .. }))) => {
                Outcome::DeadLetter { code: "corrupt_saga", error: e.to_string() }
            }
            Err(e) => Outcome::Retry { reason: e.to_string() },
        }
    }
}
