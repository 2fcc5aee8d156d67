//! A saga's state as a fold over its stream: each recorded input goes through the same decision
//! the engine made when it was appended ([`decide`]: the kernel on the definition version the saga
//! started on, with the retry limits recorded in the event), and facts that changed nothing are
//! skipped. Pure: no IO, no clock.

use contracts::Reply;
use contracts::history::EventType;
use contracts::order::OrderRequest;
use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

use super::upcast::{UpcastError, upcast};
use super::{CommandDeadLettered, DeadlinePassed, OperatorActed, ReplyReceived, SagaAbandoned, Stored};
use crate::kernel::{self, DeadLetter, Decision, Input, Policy, SagaState, SagaStatus};
use crate::sagas::order::OrderSaga;
use crate::store::Locked;

/// Why a stream cannot be folded.
#[derive(Debug, thiserror::Error)]
pub enum FoldError {
    #[error("event {version}: {source}")]
    Upcast {
        version: i64,
        #[source]
        source: UpcastError,
    },
    #[error("event {version} ({event_type}) has a payload that cannot be read: {source}")]
    Payload {
        version: i64,
        event_type: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("event {version}: the reply it records cannot be read: {source}")]
    Reply {
        version: i64,
        #[source]
        source: contracts::DecodeError,
    },
    #[error("the order cannot be read: {0}")]
    Order(#[source] serde_json::Error),
    #[error("event {version} was recorded before the event store: the saga's state then is not in its stream")]
    BeforeTheStore { version: i64 },
    #[error("event {version} ({event_type}) comes before the saga started")]
    NotStarted { version: i64, event_type: &'static str },
    #[error("event {version}: the kernel refused what it records ({why})")]
    Refused { version: i64, why: String },
}

/// What the engine decides for `input`: the kernel on `definition` v`version`, or, when this
/// build does not know that version, the incident [`kernel::undriveable`] opens.
pub fn decide(
    definition: &str,
    version: u32,
    policy: &Policy,
    saga_id: Uuid,
    order: Option<&OrderRequest>,
    state: Option<&SagaState>,
    input: Input<'_>,
) -> Decision {
    match (OrderSaga::find(definition, version), state) {
        (Some(def), state) => match order {
            Some(order) => kernel::transition(&def, policy, saga_id, order, state, input),
            None => Decision::Refused("the order cannot be read".into()),
        },
        (None, Some(state)) => {
            let why = format!("definition {definition} v{version} is unknown to this orchestrator");
            kernel::undriveable(state, &input, why)
        }
        (None, None) => Decision::Refused(format!("definition {definition} v{version} is unknown")),
    }
}

fn read<T: DeserializeOwned>(e: &Stored, t: EventType, payload: Value) -> Result<T, FoldError> {
    serde_json::from_value(payload).map_err(|source| FoldError::Payload {
        version: e.version,
        event_type: t.as_str(),
        source,
    })
}

/// Fold `events` (in stream order) onto `from` (a snapshot, or `None` for the stream's start).
/// Returns `None` when no event started the saga. `order` is `None` only for a definition this
/// build does not know (whose sagas are not driven, so their order is never read).
pub fn fold(
    definition: &str,
    version: u32,
    saga_id: Uuid,
    order: Option<&OrderRequest>,
    from: Option<SagaState>,
    events: &[Stored],
) -> Result<Option<SagaState>, FoldError> {
    let mut state = from;
    for e in events {
        let (t, payload) = upcast(&e.event_type, e.schema_version, e.payload.clone())
            .map_err(|source| FoldError::Upcast { version: e.version, source })?;
        let recorded = match t {
            EventType::SagaStarted => Recorded::Start,
            EventType::ReplyReceived => {
                let p: ReplyReceived = read(e, t, payload)?;
                let body = serde_json::to_vec(&p.reply).unwrap_or_default();
                let reply = contracts::Message::decode(&p.message_type, contracts::SCHEMA_VERSION, &body)
                    .map_err(|source| FoldError::Reply { version: e.version, source })?;
                Recorded::Reply(reply, p.policy)
            }
            EventType::DeadlinePassed => {
                let p: DeadlinePassed = read(e, t, payload)?;
                Recorded::Timeout(p.attempt, p.policy)
            }
            EventType::CommandDeadLettered => {
                let p: CommandDeadLettered = read(e, t, payload)?;
                Recorded::DeadLettered(p.dead_letter, p.policy)
            }
            EventType::OperatorActed => Recorded::Operator(read(e, t, payload)?),
            EventType::SagaAbandoned => {
                let p: SagaAbandoned = read(e, t, payload)?;
                if let Some(s) = state.as_mut() {
                    s.status = SagaStatus::Failed;
                    s.failure_reason = Some(p.reason);
                    s.incident = None;
                }
                continue;
            }
            EventType::ReplyIgnored | EventType::NoticeReceived => continue,
            EventType::TimelineRecorded => return Err(FoldError::BeforeTheStore { version: e.version }),
        };
        let (input, policy) = recorded.input();
        if state.is_none() && !matches!(input, Input::Start) {
            return Err(FoldError::NotStarted { version: e.version, event_type: t.as_str() });
        }
        match decide(definition, version, &policy, saga_id, order, state.as_ref(), input) {
            Decision::Applied { state: next, .. } => state = Some(next),
            Decision::Ignored(_) => {}
            Decision::Refused(why) => return Err(FoldError::Refused { version: e.version, why }),
        }
    }
    Ok(state)
}

/// A kernel input read back from an event, owning what [`Input`] borrows.
enum Recorded {
    Start,
    Reply(Reply, Policy),
    Timeout(u32, Policy),
    DeadLettered(DeadLetter, Policy),
    Operator(OperatorActed),
}

impl Recorded {
    fn input(&self) -> (Input<'_>, Policy) {
        // The start of a saga depends on no retry limit.
        const NONE: Policy = Policy { max_attempts: 0, max_compensation_attempts: 0, max_attempts_after_pivot: 0 };
        match self {
            Recorded::Start => (Input::Start, NONE),
            Recorded::Reply(reply, policy) => {
                (Input::Reply { message_type: contracts::Message::message_type(reply), reply }, *policy)
            }
            Recorded::Timeout(attempt, policy) => (Input::Timeout { attempt: *attempt }, *policy),
            Recorded::DeadLettered(dead, policy) => (Input::DeadLettered(dead), *policy),
            Recorded::Operator(p) => (Input::Operator { verb: p.verb, actor: &p.actor, note: &p.note }, p.policy),
        }
    }
}

/// Bring a loaded saga's state from its snapshot up to the head of its stream.
pub fn catch_up(saga: &mut Locked) -> Result<(), FoldError> {
    if saga.tail.is_empty() {
        return Ok(());
    }
    let order = order_of(&saga.definition, saga.definition_version, &saga.data)?;
    let tail = std::mem::take(&mut saga.tail);
    let (name, version) = (&saga.definition, saga.definition_version);
    let state = fold(name, version, saga.id, order.as_ref(), Some(saga.state.clone()), &tail)?;
    if let Some(state) = state {
        saga.state = state;
    }
    Ok(())
}

/// The order a saga of `definition` v`version` was started with; `None` when this build does not
/// know the definition (its order is never read then).
pub fn order_of(definition: &str, version: u32, data: &Value) -> Result<Option<OrderRequest>, FoldError> {
    match OrderSaga::find(definition, version) {
        Some(_) => serde_json::from_value(data.clone()).map(Some).map_err(FoldError::Order),
        None => Ok(None),
    }
}
