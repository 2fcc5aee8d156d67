//! The saga engine: the pure kernel wrapped with IO. For every input (a new order, a reply, a
//! notice, a passed deadline, an operator's verb) it loads the saga (snapshot plus the events
//! after it, folded), asks [`kernel::transition`] what to do with the definition version the saga
//! started on, and appends the event at the version it loaded, with the saga's columns and the
//! outgoing commands/events (outbox), in one statement. When another append got there first, it
//! loads and decides again ([`Engine::retrying`]).
//!
//! Layout: this file (starting sagas, [`Engine::decide`], persistence of a transition);
//! `replies` (the reply consumer: replies and notices); `timeouts` (deadlines, and sagas that
//! cannot be read); `operator` (the operator's verbs).

mod operator;
mod replies;
mod timeouts;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use contracts::order::OrderRequest;
use contracts::topology::{COMMANDS_EXCHANGE, EVENTS_EXCHANGE};
use contracts::{Message, Meta};
use infra::amqp::Outgoing;
use infra::outbox::{self, OutboxWaker};
pub use replies::ReplyHandler;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use tokio_retry::RetryIf;
use tokio_retry::strategy::{ExponentialBackoff, jitter};
use uuid::Uuid;

use crate::history::sequencer::SequencerWaker;
use crate::history::{self, FoldError, Recorded};
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
    /// An operator's verb that makes no sense for the saga as it is.
    #[error("refused: {0}")]
    Refused(String),
    /// No known definition can drive the saga now (its version is unknown here, or its state does
    /// not fit): a reply for it is not consumed, so it can be applied once that is fixed.
    #[error("saga {0} cannot be driven by this orchestrator now (see its incident)")]
    Undriveable(Uuid),
    /// The saga's stream cannot be folded into a state.
    #[error("saga {id}: its history cannot be folded: {source}")]
    History {
        id: Uuid,
        #[source]
        source: FoldError,
    },
    /// Something that cannot happen did (a kernel or storage invariant broke).
    #[error("invariant broken: {0}")]
    Invariant(String),
}

impl EngineError {
    /// The saga's stored state or order cannot be read: retrying cannot help.
    pub fn is_unreadable(&self) -> bool {
        matches!(
            self,
            EngineError::CorruptData { .. }
                | EngineError::History { .. }
                | EngineError::Store(StoreError::CorruptState { .. })
        )
    }

    /// Another append to the saga's stream won: loading and deciding again will do.
    pub fn is_conflict(&self) -> bool {
        matches!(self, EngineError::Store(StoreError::Conflict { .. }))
    }
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

impl Cause<'_> {
    const fn of(kind: &'static str) -> Cause<'static> {
        Cause { kind, message_id: None, message_type: None }
    }
}

/// Drives order sagas. Shared by the API, the reply consumer, the timeout scanner and the
/// operator API.
pub struct Engine {
    pub pool: PgPool,
    pub settings: Arc<OrchestratorSettings>,
    pub waker: OutboxWaker,
    pub metrics: SagaMetrics,
    pub plumbing: infra::metrics::Metrics,
    pub sequencer: SequencerWaker,
    policy: Policy,
}

/// How many times an input is decided again after losing to a concurrent append to its stream.
pub const CONFLICT_RETRIES: usize = 8;

impl Engine {
    pub fn new(
        pool: PgPool,
        settings: Arc<OrchestratorSettings>,
        waker: OutboxWaker,
        metrics: SagaMetrics,
        plumbing: infra::metrics::Metrics,
        sequencer: SequencerWaker,
    ) -> Self {
        let policy = Policy {
            max_attempts: settings.max_attempts,
            max_compensation_attempts: settings.max_compensation_attempts,
            max_attempts_after_pivot: settings.max_attempts_after_pivot,
        };
        Engine { pool, settings, waker, metrics, plumbing, sequencer, policy }
    }

    /// The definition new sagas start on.
    pub fn latest(&self) -> OrderSaga {
        OrderSaga::LATEST
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
        let def = self.latest();
        let Decision::Applied { state, effects, note } =
            kernel::transition(&def, &self.policy, saga_id, order, None, Input::Start)
        else {
            return Err(EngineError::Invariant("the kernel ignored the start of a new saga".into()));
        };
        let planned = self.plan(saga_id, &effects, &Cause::of("started"));
        let write = SagaWrite {
            id: saga_id,
            definition: def.name(),
            definition_version: def.version(),
            state: &state,
            data: &data,
            deadline: planned.deadline,
            idempotency_key,
            expected_version: 0,
            snapshot: true,
            step_changed: true,
        };
        let started = history::Started {
            definition: def.name().to_owned(),
            definition_version: def.version(),
            order: data.clone(),
            total_cents: order.total_cents().unwrap_or_default(),
        };
        let event = Recorded::input(&Input::Start, self.policy, Some(&started));
        let mut tx = self.pool.begin().await?;
        if !store::insert(&mut tx, &write, &planned.entry(&state, &note, &Cause::of("started"), event)).await? {
            // Lost a race with the same key.
            tx.rollback().await?;
            let key = idempotency_key.unwrap_or_default();
            return self
                .existing(key, &data)
                .await?
                .ok_or_else(|| EngineError::Invariant(format!("idempotency key {key} conflicted but names no saga")));
        }
        outbox::enqueue(&mut tx, &planned.messages).await?;
        tx.commit().await?;
        self.wake();
        self.metrics.started.with_label_values(&[def.name()]).inc();
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

    /// Wake the outbox relay and the history sequencer: a transaction that queued messages and
    /// appended events committed.
    fn wake(&self) {
        self.waker.wake();
        self.sequencer.wake();
    }

    /// Run `attempt` again (up to [`CONFLICT_RETRIES`] times, after a short jittered pause) while
    /// it fails because another append to the saga's stream won; count each conflict.
    async fn retrying<T, F, Fut>(&self, mut attempt: F) -> Result<T, EngineError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, EngineError>>,
    {
        let pauses = ExponentialBackoff::from_millis(2).max_delay(Duration::from_millis(50)).map(jitter);
        RetryIf::start(pauses.take(CONFLICT_RETRIES), &mut attempt, |e: &EngineError| {
            let conflict = e.is_conflict();
            if conflict {
                self.metrics.append_conflicts.inc();
            }
            conflict
        })
        .await
    }

    /// A loaded saga, its state folded up to the head of its stream.
    fn caught_up(&self, saga: Option<Locked>) -> Result<Option<Locked>, EngineError> {
        let Some(mut saga) = saga else { return Ok(None) };
        history::catch_up(&mut saga).map_err(|source| EngineError::History { id: saga.id, source })?;
        Ok(Some(saga))
    }

    /// Run `input` against a loaded saga on the definition version it started on, and append what
    /// the kernel decided (event, saga columns, outbox) in `tx` at the version it was loaded at.
    /// The caller commits, and deals with an ignored input or a refused verb its own way.
    async fn decide(
        &self,
        tx: &mut PgConnection,
        saga: &Locked,
        input: Input<'_>,
        cause: &Cause<'_>,
    ) -> Result<Decision, EngineError> {
        // A saga no definition here knows is not driven: its order is not read (it may not even be).
        let order = match OrderSaga::find(&saga.definition, saga.definition_version) {
            Some(_) => Some(self.order_of(saga)?),
            None => None,
        };
        let (name, version) = (&saga.definition, saga.definition_version);
        let decision =
            history::fold::decide(name, version, &self.policy, saga.id, order.as_ref(), Some(&saga.state), input);
        if let Decision::Applied { state, effects, note } = &decision {
            let planned = self.plan(saga.id, effects, cause);
            let next = saga.version + 1;
            let write = SagaWrite {
                id: saga.id,
                definition: &saga.definition,
                definition_version: saga.definition_version,
                state,
                data: &saga.data,
                deadline: planned.deadline,
                idempotency_key: None,
                expected_version: saga.version,
                snapshot: state.status.is_terminal()
                    || next - saga.snapshot_version >= i64::from(self.settings.snapshot_every),
                step_changed: state.current_step_name() != saga.state.current_step_name()
                    || state.action != saga.state.action
                    || state.status != saga.state.status,
            };
            let event = Recorded::input(&input, self.policy, None);
            store::update(tx, &write, &planned.entry(state, note, cause, event), &planned.messages).await?;
            self.observe(saga, state);
        }
        Ok(decision)
    }

    fn order_of(&self, saga: &Locked) -> Result<OrderRequest, EngineError> {
        serde_json::from_value(saga.data.clone()).map_err(|source| EngineError::CorruptData { id: saga.id, source })
    }

    /// Count what a transition finished or opened.
    fn observe(&self, before: &Locked, after: &SagaState) {
        if after.status.is_terminal() && !before.state.status.is_terminal() {
            let labels = [before.definition.as_str(), after.status.as_str()];
            let outcome = [labels[0], labels[1], after.outcome()];
            self.metrics.finished.with_label_values(&outcome).inc();
            let took = (Utc::now() - before.created_at).to_std().unwrap_or_default();
            self.metrics.duration_seconds.with_label_values(&labels).observe(took.as_secs_f64());
        }
        if let (Some(incident), None) = (&after.incident, &before.state.incident) {
            self.metrics.incidents.with_label_values(&[incident.step.as_str()]).inc();
            tracing::warn!(saga_id = %before.id, step = %incident.step, reason = %incident.reason, "incident opened");
        }
    }

    /// Turn a transition's effects into outbox messages, a deadline and the timeline's `sent`.
    fn plan(&self, saga_id: Uuid, effects: &[Effect], cause: &Cause<'_>) -> Planned {
        let now = Utc::now();
        let mut planned = Planned { messages: Vec::new(), sent: Vec::new(), deadline: None };
        for effect in effects {
            match effect {
                Effect::Send { command, idempotency_key, attempt, .. } => {
                    let mut meta = Meta::new(saga_id, command.message_type())
                        .with_idempotency_key(idempotency_key.clone())
                        .with_attempt(*attempt);
                    meta.causation_id = cause.message_id;
                    self.metrics.commands_sent.with_label_values(&[command.message_type()]).inc();
                    planned
                        .sent
                        .push(json!({"message_id": meta.message_id, "type": meta.message_type, "attempt": attempt}));
                    planned.messages.push(Outgoing::new(COMMANDS_EXCHANGE, true, meta, command));
                }
                Effect::Publish(event) => {
                    let mut meta = Meta::new(saga_id, event.message_type());
                    meta.causation_id = cause.message_id;
                    planned.sent.push(json!({"message_id": meta.message_id, "type": meta.message_type}));
                    planned.messages.push(Outgoing::new(EVENTS_EXCHANGE, false, meta, event));
                }
                Effect::Wait { attempt, .. } => {
                    let wait = self.settings.timeout_for(*attempt);
                    // Settings cap every timeout at 30 days, so this cannot overflow; saturate anyway.
                    let wait = chrono::Duration::from_std(wait).unwrap_or(chrono::TimeDelta::days(30));
                    planned.deadline = Some(now.checked_add_signed(wait).unwrap_or(DateTime::<Utc>::MAX_UTC));
                }
                Effect::ClearDeadline => planned.deadline = None,
            }
        }
        planned
    }
}

/// A transition's effects, ready to write.
struct Planned {
    messages: Vec<Outgoing>,
    sent: Vec<Value>,
    deadline: Option<DateTime<Utc>>,
}

impl Planned {
    fn entry<'a>(&self, state: &'a SagaState, note: &'a str, cause: &Cause<'a>, event: Recorded) -> TimelineEntry<'a> {
        TimelineEntry {
            event,
            kind: cause.kind,
            status: state.status.as_str(),
            step: state.current_step_name(),
            failure_reason: state.failure_reason.as_deref(),
            note,
            cause_message_id: cause.message_id,
            cause_type: cause.message_type,
            sent: Value::Array(self.sent.clone()),
        }
    }
}
