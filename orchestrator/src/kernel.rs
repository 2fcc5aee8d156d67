//! The saga kernel: a pure state machine. `transition(definition, policy, saga, data, state,
//! input)` returns the next state and the effects to carry out (commands to send, events to
//! publish, a deadline to arm), or says why the input changes nothing. No IO, no clock, no
//! randomness: the engine does those, and the tables of tests below pin every transition.
//!
//! Semantics (compensatable / pivot / retriable):
//! - steps run in order; a success reply moves to the next step; after the last, COMPLETED;
//! - a business failure of a compensatable step or of the pivot compensates the completed
//!   compensatable steps in reverse order (COMPENSATING, then COMPENSATED);
//! - a compensatable step whose deadline passes is re-sent up to `max_attempts`, then treated as
//!   failed; since its outcome is unknown (the participant may have acted late), it is compensated
//!   too (every compensation is a no-op for something never done);
//! - the pivot and the steps after it are never compensated: a timeout re-sends them, forever
//!   (the engine caps the delay); the pivot because its outcome is unknown and cannot be undone,
//!   the retriable steps because they cannot fail for business reasons;
//! - a compensation whose deadline passes is re-sent up to `max_compensation_attempts`; then the
//!   step is marked `compensation_failed`, the remaining compensations still run, and the saga
//!   ends FAILED (an operator must look) instead of COMPENSATED;
//! - replies that do not match what the saga awaits are ignored and classified.

use std::fmt;
use std::str::FromStr;

use contracts::{Command, Event, Reply, ReplyOutcome};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SagaStatus {
    Running,
    Compensating,
    Completed,
    Compensated,
    Failed,
}

impl SagaStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SagaStatus::Running => "RUNNING",
            SagaStatus::Compensating => "COMPENSATING",
            SagaStatus::Completed => "COMPLETED",
            SagaStatus::Compensated => "COMPENSATED",
            SagaStatus::Failed => "FAILED",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, SagaStatus::Completed | SagaStatus::Compensated | SagaStatus::Failed)
    }
}

impl FromStr for SagaStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "RUNNING" => Ok(SagaStatus::Running),
            "COMPENSATING" => Ok(SagaStatus::Compensating),
            "COMPLETED" => Ok(SagaStatus::Completed),
            "COMPENSATED" => Ok(SagaStatus::Compensated),
            "FAILED" => Ok(SagaStatus::Failed),
            other => Err(format!("unknown saga status `{other}`")),
        }
    }
}

impl fmt::Display for SagaStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// Can be undone by its compensation; must come before the pivot.
    Compensatable,
    /// The go/no-go step: once it succeeded the saga goes through. At most one.
    Pivot,
    /// After the pivot; cannot fail for business reasons, retried until done.
    Retriable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Do,
    Compensate,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Do => "do",
            Action::Compensate => "compensate",
        }
    }
}

/// How a step is undone: the command and the reply that says it is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compensation {
    pub command: &'static str,
    pub done: &'static str,
}

/// One row of a saga definition's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepDef {
    pub name: &'static str,
    pub kind: StepKind,
    /// Message type of the command, e.g. `payment.authorize`.
    pub command: &'static str,
    /// Reply type meaning success.
    pub success: &'static str,
    /// Reply type meaning a business failure, if the step can fail.
    pub failure: Option<&'static str>,
    pub compensation: Option<Compensation>,
}

/// A saga definition: the table of steps, and how to build commands and events from its data.
pub trait SagaDefinition {
    type Data;
    fn name(&self) -> &'static str;
    fn steps(&self) -> &'static [StepDef];
    /// The command of `step` (or of its compensation); its type equals `step.command` (or
    /// `step.compensation.command`).
    fn command(&self, saga_id: Uuid, step: &StepDef, action: Action, data: &Self::Data) -> Command;
    fn completed_event(&self, saga_id: Uuid, data: &Self::Data) -> Event;
    fn compensated_event(&self, saga_id: Uuid, data: &Self::Data, reason: &str) -> Event;
    fn failed_event(&self, saga_id: Uuid, data: &Self::Data, reason: &str) -> Event;
}

/// A definition that breaks the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefinitionError {
    #[error("a saga needs at least one step")]
    NoSteps,
    #[error("step name `{0}` is used twice")]
    DuplicateStepName(&'static str),
    #[error("compensatable step `{0}` has no compensation")]
    CompensatableWithoutCompensation(&'static str),
    #[error("compensatable step `{0}` comes after the pivot")]
    CompensatableAfterPivot(&'static str),
    #[error("retriable step `{0}` comes before the pivot (or there is no pivot)")]
    RetriableBeforePivot(&'static str),
    #[error("more than one pivot step")]
    MoreThanOnePivot,
    #[error("step `{0}` is not compensatable and must not have a compensation")]
    CompensationOnNonCompensatable(&'static str),
    #[error("message type `{0}` is used by more than one step or reply")]
    TypeUsedTwice(&'static str),
}

/// Refuse a definition that breaks the rules.
pub fn validate(steps: &[StepDef]) -> Result<(), DefinitionError> {
    if steps.is_empty() {
        return Err(DefinitionError::NoSteps);
    }
    let mut names: Vec<&str> = Vec::new();
    let mut types: Vec<&'static str> = Vec::new();
    let mut pivot_seen = false;
    for s in steps {
        if names.contains(&s.name) {
            return Err(DefinitionError::DuplicateStepName(s.name));
        }
        names.push(s.name);
        let comp = s.compensation.iter().flat_map(|c| [c.command, c.done]);
        for t in [s.command, s.success].into_iter().chain(s.failure).chain(comp) {
            if types.contains(&t) {
                return Err(DefinitionError::TypeUsedTwice(t));
            }
            types.push(t);
        }
        match s.kind {
            StepKind::Compensatable => {
                if pivot_seen {
                    return Err(DefinitionError::CompensatableAfterPivot(s.name));
                }
                if s.compensation.is_none() {
                    return Err(DefinitionError::CompensatableWithoutCompensation(s.name));
                }
            }
            StepKind::Pivot => {
                if pivot_seen {
                    return Err(DefinitionError::MoreThanOnePivot);
                }
                pivot_seen = true;
            }
            StepKind::Retriable => {
                if !pivot_seen {
                    return Err(DefinitionError::RetriableBeforePivot(s.name));
                }
            }
        }
        if s.kind != StepKind::Compensatable && s.compensation.is_some() {
            return Err(DefinitionError::CompensationOnNonCompensatable(s.name));
        }
    }
    Ok(())
}

/// Retry limits, from configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Sends of a compensatable step before it counts as failed.
    pub max_attempts: u32,
    /// Sends of a compensation before it counts as failed.
    pub max_compensation_attempts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    Running,
    Succeeded,
    /// Refused for a business reason: nothing to undo.
    Failed,
    /// No answer within the attempts: outcome unknown, so it is compensated like a success.
    TimedOut,
    Compensating,
    Compensated,
    CompensationFailed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub name: String,
    pub status: StepStatus,
    pub attempts: u32,
    pub compensation_attempts: u32,
    pub reason: Option<String>,
}

/// Everything about one saga's progress; stored as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaState {
    pub status: SagaStatus,
    /// Index of the step awaited (forward) or being compensated; `steps.len()` once completed.
    pub step: usize,
    pub action: Action,
    /// Sends so far of the awaited command (1 = first send).
    pub attempt: u32,
    pub steps: Vec<StepRecord>,
    pub failure_reason: Option<String>,
}

impl SagaState {
    /// The step the saga is waiting on; `None` once it is finished.
    pub fn current_step_name(&self) -> Option<&str> {
        if self.status.is_terminal() {
            return None;
        }
        self.steps.get(self.step).map(|s| s.name.as_str())
    }
}

/// What happened to a saga.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    Start,
    Reply {
        message_type: &'a str,
        reply: &'a Reply,
    },
    /// The deadline of attempt `attempt` of the awaited command passed.
    Timeout {
        attempt: u32,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Send {
        step: &'static str,
        action: Action,
        command: Command,
        idempotency_key: String,
        attempt: u32,
    },
    Publish(Event),
    /// Arm the deadline of the command just sent (`attempt` picks the backoff).
    Wait {
        step: &'static str,
        action: Action,
        attempt: u32,
    },
    ClearDeadline,
}

/// Why an input changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// The saga is finished.
    Terminal,
    /// Start of a saga that exists.
    Duplicate,
    /// A reply of this definition, but not the one awaited now (an earlier step's, a re-sent
    /// command's second answer, an answer that came after its timeout).
    Late,
    /// A reply this definition does not know.
    Unexpected,
    /// A timeout of an attempt that is not the current one.
    Stale,
}

impl Ignored {
    pub fn as_str(self) -> &'static str {
        match self {
            Ignored::Terminal => "terminal",
            Ignored::Duplicate => "duplicate",
            Ignored::Late => "late",
            Ignored::Unexpected => "unexpected",
            Ignored::Stale => "stale",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Applied { state: SagaState, effects: Vec<Effect>, note: String },
    Ignored(Ignored),
}

/// The kernel.
pub fn transition<D: SagaDefinition>(
    def: &D,
    policy: &Policy,
    saga_id: Uuid,
    data: &D::Data,
    state: Option<&SagaState>,
    input: Input<'_>,
) -> Decision {
    let k = Kernel { def, policy, saga_id, data };
    match (state, input) {
        (None, Input::Start) => k.start(),
        (None, _) => Decision::Ignored(Ignored::Unexpected),
        (Some(_), Input::Start) => Decision::Ignored(Ignored::Duplicate),
        (Some(s), _) if s.status.is_terminal() => Decision::Ignored(Ignored::Terminal),
        (Some(s), Input::Reply { message_type, reply }) => k.reply(s.clone(), message_type, reply),
        (Some(s), Input::Timeout { attempt }) if attempt != s.attempt => {
            let _ = s;
            Decision::Ignored(Ignored::Stale)
        }
        (Some(s), Input::Timeout { .. }) => k.timeout(s.clone()),
    }
}

struct Kernel<'a, D: SagaDefinition> {
    def: &'a D,
    policy: &'a Policy,
    saga_id: Uuid,
    data: &'a D::Data,
}

impl<D: SagaDefinition> Kernel<'_, D> {
    fn steps(&self) -> &'static [StepDef] {
        self.def.steps()
    }

    fn start(&self) -> Decision {
        let mut steps: Vec<StepRecord> = self
            .steps()
            .iter()
            .map(|s| StepRecord {
                name: s.name.to_owned(),
                status: StepStatus::Pending,
                attempts: 0,
                compensation_attempts: 0,
                reason: None,
            })
            .collect();
        let Some(first) = steps.first_mut() else {
            return Decision::Ignored(Ignored::Unexpected);
        };
        first.status = StepStatus::Running;
        first.attempts = 1;
        let state = SagaState {
            status: SagaStatus::Running,
            step: 0,
            action: Action::Do,
            attempt: 1,
            steps,
            failure_reason: None,
        };
        let effects = self.send(0, Action::Do, 1);
        let note = format!("started; {}", self.steps()[0].name);
        Decision::Applied { state, effects, note }
    }

    /// Send (or re-send) the command of `step`/`action`, and arm its deadline.
    fn send(&self, step: usize, action: Action, attempt: u32) -> Vec<Effect> {
        let def = &self.steps()[step];
        let command = self.def.command(self.saga_id, def, action, self.data);
        vec![
            Effect::Send {
                step: def.name,
                action,
                command,
                idempotency_key: contracts::envelope::idempotency_key(self.saga_id, def.name, action.as_str()),
                attempt,
            },
            Effect::Wait { step: def.name, action, attempt },
        ]
    }

    fn knows(&self, message_type: &str) -> bool {
        self.steps().iter().any(|s| {
            s.success == message_type
                || s.failure == Some(message_type)
                || s.compensation.is_some_and(|c| c.done == message_type)
        })
    }

    fn not_awaited(&self, message_type: &str) -> Decision {
        Decision::Ignored(if self.knows(message_type) { Ignored::Late } else { Ignored::Unexpected })
    }

    fn reply(&self, mut s: SagaState, message_type: &str, reply: &Reply) -> Decision {
        let i = s.step;
        let Some(def) = self.steps().get(i) else {
            return Decision::Ignored(Ignored::Unexpected);
        };
        match (s.status, s.action) {
            (SagaStatus::Running, Action::Do) if message_type == def.success => {
                s.steps[i].status = StepStatus::Succeeded;
                let mut note = format!("{} succeeded ({message_type})", def.name);
                let effects = if i + 1 < s.steps.len() {
                    let next = i + 1;
                    s.step = next;
                    s.attempt = 1;
                    s.steps[next].status = StepStatus::Running;
                    s.steps[next].attempts = 1;
                    note.push_str(&format!("; {}", self.steps()[next].name));
                    self.send(next, Action::Do, 1)
                } else {
                    s.status = SagaStatus::Completed;
                    s.step = s.steps.len();
                    note.push_str("; saga completed");
                    vec![Effect::Publish(self.def.completed_event(self.saga_id, self.data)), Effect::ClearDeadline]
                };
                Decision::Applied { state: s, effects, note }
            }
            (SagaStatus::Running, Action::Do) if def.failure == Some(message_type) => {
                let reason = match reply.outcome() {
                    ReplyOutcome::Failure { reason } => reason,
                    ReplyOutcome::Success => String::new(),
                };
                if def.kind == StepKind::Retriable {
                    // Cannot fail for business reasons: treat as transient and try again.
                    s.steps[i].reason = Some(reason.clone());
                    return self.resend(s, &format!("{} answered {message_type} ({reason}); trying again", def.name));
                }
                s.steps[i].status = StepStatus::Failed;
                s.steps[i].reason = Some(reason.clone());
                let why = format!("{message_type}: {reason}");
                let note = format!("{} failed ({why})", def.name);
                self.compensate_below(s, i, why, note)
            }
            (SagaStatus::Compensating, Action::Compensate)
                if def.compensation.is_some_and(|c| c.done == message_type) =>
            {
                s.steps[i].status = StepStatus::Compensated;
                let note = format!("{} compensated ({message_type})", def.name);
                let reason = s.failure_reason.clone().unwrap_or_default();
                self.compensate_below(s, i, reason, note)
            }
            _ => self.not_awaited(message_type),
        }
    }

    fn timeout(&self, s: SagaState) -> Decision {
        let i = s.step;
        let Some(def) = self.steps().get(i) else {
            return Decision::Ignored(Ignored::Unexpected);
        };
        let attempt = s.attempt;
        match s.action {
            Action::Do => match def.kind {
                StepKind::Compensatable if attempt >= self.policy.max_attempts => {
                    let mut s = s;
                    let why = format!("{} timed out after {attempt} attempts", def.name);
                    s.steps[i].status = StepStatus::TimedOut;
                    s.steps[i].reason = Some(why.clone());
                    let note = format!("{why}; outcome unknown, compensating it too");
                    // `i + 1`: the timed-out step itself is compensated first.
                    self.compensate_below(s, i + 1, why, note)
                }
                _ => self.resend(s, &format!("{} timed out (attempt {attempt}); re-sending", def.name)),
            },
            Action::Compensate => {
                if attempt < self.policy.max_compensation_attempts {
                    return self
                        .resend(s, &format!("compensation of {} timed out (attempt {attempt}); re-sending", def.name));
                }
                let mut s = s;
                let command = def.compensation.map_or("?", |c| c.command);
                let why = format!("compensation {command} of {} timed out after {attempt} attempts", def.name);
                s.steps[i].status = StepStatus::CompensationFailed;
                s.steps[i].reason = Some(why.clone());
                let reason = match &s.failure_reason {
                    Some(r) => format!("{r}; {why}"),
                    None => why.clone(),
                };
                s.failure_reason = Some(reason.clone());
                self.compensate_below(s, i, reason, why)
            }
        }
    }

    /// Send the awaited command again, one attempt more.
    fn resend(&self, mut s: SagaState, note: &str) -> Decision {
        let i = s.step;
        s.attempt += 1;
        match s.action {
            Action::Do => s.steps[i].attempts = s.attempt,
            Action::Compensate => s.steps[i].compensation_attempts = s.attempt,
        }
        let effects = self.send(i, s.action, s.attempt);
        Decision::Applied { state: s, effects, note: note.to_owned() }
    }

    /// Compensate the next step below `below` that needs it (a succeeded or timed-out
    /// compensatable step), or finish: COMPENSATED, or FAILED if a compensation failed.
    fn compensate_below(&self, mut s: SagaState, below: usize, reason: String, mut note: String) -> Decision {
        s.status = SagaStatus::Compensating;
        if s.failure_reason.is_none() {
            s.failure_reason = Some(reason.clone());
        }
        let next = (0..below).rev().find(|&j| {
            self.steps()[j].kind == StepKind::Compensatable
                && matches!(s.steps[j].status, StepStatus::Succeeded | StepStatus::TimedOut)
        });
        if let Some(j) = next {
            s.step = j;
            s.action = Action::Compensate;
            s.attempt = 1;
            s.steps[j].status = StepStatus::Compensating;
            s.steps[j].compensation_attempts = 1;
            note.push_str(&format!("; compensating {}", self.steps()[j].name));
            let effects = self.send(j, Action::Compensate, 1);
            return Decision::Applied { state: s, effects, note };
        }
        let reason = s.failure_reason.clone().unwrap_or(reason);
        let failed = s.steps.iter().any(|r| r.status == StepStatus::CompensationFailed);
        let event = if failed {
            s.status = SagaStatus::Failed;
            note.push_str("; saga FAILED: a compensation could not be done");
            self.def.failed_event(self.saga_id, self.data, &reason)
        } else {
            s.status = SagaStatus::Compensated;
            note.push_str("; saga compensated");
            self.def.compensated_event(self.saga_id, self.data, &reason)
        };
        Decision::Applied { state: s, effects: vec![Effect::Publish(event), Effect::ClearDeadline], note }
    }
}

#[cfg(test)]
mod tests {
    //! Table-driven: each case is a sequence of inputs and the expected end (status, step
    //! statuses, commands and events emitted along the way, ignores).

    use super::*;
    use crate::sagas::order::{ORDER_STEPS, OrderSaga};
    use contracts::Message;
    use contracts::order::{Address, OrderItem, OrderRequest};
    use contracts::replies::{Done, InventoryReserved, PaymentAuthorized, Rejected, ShipmentScheduled};

    const POLICY: Policy = Policy { max_attempts: 3, max_compensation_attempts: 2 };

    fn order() -> OrderRequest {
        OrderRequest {
            customer_id: "c-1".into(),
            currency: "EUR".into(),
            items: vec![OrderItem { sku: "SKU-0001".into(), quantity: 1, unit_price_cents: 100 }],
            shipping_address: Address {
                name: "A".into(),
                line1: "L".into(),
                line2: None,
                city: "C".into(),
                postal_code: "P".into(),
                country: "DE".into(),
            },
        }
    }

    /// One input of a scenario.
    #[derive(Clone, Copy, Debug)]
    enum In {
        Start,
        R(&'static str),
        Timeout,
        /// A timeout for an attempt that is not the current one.
        StaleTimeout,
    }

    fn reply(ty: &str, id: Uuid) -> Reply {
        let rejected = Rejected { order_id: id, code: "x".into(), reason: "no".into() };
        let done = Done { order_id: id };
        match ty {
            "inventory.reserved" => Reply::InventoryReserved(InventoryReserved { order_id: id }),
            "inventory.rejected" => Reply::InventoryRejected(rejected),
            "inventory.released" => Reply::InventoryReleased(done),
            "inventory.committed" => Reply::InventoryCommitted(done),
            "payment.authorized" => {
                Reply::PaymentAuthorized(PaymentAuthorized { order_id: id, authorization_id: "a".into() })
            }
            "payment.declined" => Reply::PaymentDeclined(rejected),
            "payment.voided" => Reply::PaymentVoided(done),
            "payment.captured" => Reply::PaymentCaptured(done),
            "shipping.scheduled" => Reply::ShipmentScheduled(ShipmentScheduled {
                order_id: id,
                shipment_id: id,
                tracking_number: "t".into(),
            }),
            "shipping.rejected" => Reply::ShipmentRejected(rejected),
            other => panic!("no such reply {other}"),
        }
    }

    /// The body of a reply of type `ty`; a type that is not a [`Reply`] of the platform (a test
    /// table's own failure type, a notice) gets a rejection body, so it carries a reason.
    fn body(ty: &str, id: Uuid) -> Reply {
        if Reply::all_types().contains(&ty) {
            reply(ty, id)
        } else {
            Reply::PaymentDeclined(Rejected { order_id: id, code: "x".into(), reason: "no".into() })
        }
    }

    /// What a run of inputs produced.
    #[derive(Debug, Default)]
    struct Run {
        state: Option<SagaState>,
        /// Every command and event, in order, by type (re-sends included).
        emitted: Vec<String>,
        ignored: Vec<Ignored>,
        /// Idempotency keys of every send, in order.
        keys: Vec<String>,
        attempts: Vec<u32>,
    }

    fn run(inputs: &[In]) -> Run {
        run_on(&OrderSaga, inputs)
    }

    /// [`run`] on any definition whose data is an order.
    fn run_on<D: SagaDefinition<Data = OrderRequest>>(def: &D, inputs: &[In]) -> Run {
        let id = Uuid::from_u128(7);
        let data = order();
        let mut r = Run::default();
        for input in inputs {
            let state = r.state.as_ref();
            let reply_value;
            let input = match *input {
                In::Start => Input::Start,
                In::R(ty) => {
                    reply_value = body(ty, id);
                    Input::Reply { message_type: ty, reply: &reply_value }
                }
                In::Timeout => Input::Timeout { attempt: state.map_or(0, |s| s.attempt) },
                In::StaleTimeout => Input::Timeout { attempt: state.map_or(0, |s| s.attempt) + 7 },
            };
            match transition(def, &POLICY, id, &data, state, input) {
                Decision::Applied { state, effects, note } => {
                    assert!(!note.is_empty());
                    let waits = effects.iter().filter(|e| matches!(e, Effect::Wait { .. })).count();
                    let sends = effects.iter().filter(|e| matches!(e, Effect::Send { .. })).count();
                    assert_eq!(waits, sends, "every send arms a deadline");
                    if state.status.is_terminal() {
                        assert!(effects.contains(&Effect::ClearDeadline));
                    }
                    for e in effects {
                        match e {
                            Effect::Send { command, idempotency_key, attempt, .. } => {
                                r.emitted.push(command.message_type().to_owned());
                                r.keys.push(idempotency_key);
                                r.attempts.push(attempt);
                            }
                            Effect::Publish(ev) => r.emitted.push(ev.message_type().to_owned()),
                            Effect::Wait { .. } | Effect::ClearDeadline => {}
                        }
                    }
                    r.state = Some(state);
                }
                Decision::Ignored(why) => r.ignored.push(why),
            }
        }
        r
    }

    fn statuses(r: &Run) -> Vec<StepStatus> {
        r.state.as_ref().unwrap().steps.iter().map(|s| s.status).collect()
    }

    use In::{R, StaleTimeout, Start, Timeout};
    use StepStatus::*;

    const HAPPY: &[In] = &[
        Start,
        R("inventory.reserved"),
        R("payment.authorized"),
        R("shipping.scheduled"),
        R("payment.captured"),
        R("inventory.committed"),
    ];

    struct Case {
        name: &'static str,
        inputs: Vec<In>,
        status: SagaStatus,
        steps: [StepStatus; 5],
        emitted: &'static [&'static str],
        ignored: &'static [Ignored],
    }

    fn cases() -> Vec<Case> {
        let then = |extra: &[In]| -> Vec<In> { HAPPY.iter().copied().chain(extra.iter().copied()).collect() };
        vec![
            Case {
                name: "happy path",
                inputs: HAPPY.to_vec(),
                status: SagaStatus::Completed,
                steps: [Succeeded; 5],
                emitted: &[
                    "inventory.reserve",
                    "payment.authorize",
                    "shipping.schedule",
                    "payment.capture",
                    "inventory.commit",
                    "order.completed",
                ],
                ignored: &[],
            },
            Case {
                name: "out of stock: nothing to compensate",
                inputs: vec![Start, R("inventory.rejected")],
                status: SagaStatus::Compensated,
                steps: [Failed, Pending, Pending, Pending, Pending],
                emitted: &["inventory.reserve", "order.compensated"],
                ignored: &[],
            },
            Case {
                name: "payment declined: release the reservation",
                inputs: vec![Start, R("inventory.reserved"), R("payment.declined"), R("inventory.released")],
                status: SagaStatus::Compensated,
                steps: [Compensated, Failed, Pending, Pending, Pending],
                emitted: &["inventory.reserve", "payment.authorize", "inventory.release", "order.compensated"],
                ignored: &[],
            },
            Case {
                name: "shipping rejected: void, then release, in reverse order",
                inputs: vec![
                    Start,
                    R("inventory.reserved"),
                    R("payment.authorized"),
                    R("shipping.rejected"),
                    R("payment.voided"),
                    R("inventory.released"),
                ],
                status: SagaStatus::Compensated,
                steps: [Compensated, Compensated, Failed, Pending, Pending],
                emitted: &[
                    "inventory.reserve",
                    "payment.authorize",
                    "shipping.schedule",
                    "payment.void",
                    "inventory.release",
                    "order.compensated",
                ],
                ignored: &[],
            },
            Case {
                name: "a compensation reply out of order is late, the awaited one still counts",
                inputs: vec![
                    Start,
                    R("inventory.reserved"),
                    R("payment.authorized"),
                    R("shipping.rejected"),
                    R("inventory.released"),
                    R("payment.voided"),
                    R("inventory.released"),
                ],
                status: SagaStatus::Compensated,
                steps: [Compensated, Compensated, Failed, Pending, Pending],
                emitted: &[
                    "inventory.reserve",
                    "payment.authorize",
                    "shipping.schedule",
                    "payment.void",
                    "inventory.release",
                    "order.compensated",
                ],
                ignored: &[Ignored::Late],
            },
            Case {
                name: "duplicate and late replies while running",
                inputs: vec![
                    Start,
                    R("inventory.reserved"),
                    R("inventory.reserved"),
                    R("inventory.rejected"),
                    R("payment.captured"),
                ],
                status: SagaStatus::Running,
                steps: [Succeeded, Running, Pending, Pending, Pending],
                emitted: &["inventory.reserve", "payment.authorize"],
                ignored: &[Ignored::Late, Ignored::Late, Ignored::Late],
            },
            Case {
                name: "anything after the end is terminal",
                inputs: then(&[R("inventory.committed"), R("payment.declined"), Timeout, Start]),
                status: SagaStatus::Completed,
                steps: [Succeeded; 5],
                emitted: &[
                    "inventory.reserve",
                    "payment.authorize",
                    "shipping.schedule",
                    "payment.capture",
                    "inventory.commit",
                    "order.completed",
                ],
                ignored: &[Ignored::Terminal, Ignored::Terminal, Ignored::Terminal, Ignored::Duplicate],
            },
            Case {
                name: "start twice",
                inputs: vec![Start, Start],
                status: SagaStatus::Running,
                steps: [Running, Pending, Pending, Pending, Pending],
                emitted: &["inventory.reserve"],
                ignored: &[Ignored::Duplicate],
            },
            Case {
                name: "a timeout re-sends, a stale timeout is ignored",
                inputs: vec![Start, Timeout, StaleTimeout, R("inventory.reserved")],
                status: SagaStatus::Running,
                steps: [Succeeded, Running, Pending, Pending, Pending],
                emitted: &["inventory.reserve", "inventory.reserve", "payment.authorize"],
                ignored: &[Ignored::Stale],
            },
            Case {
                name: "payment silent: re-sent up to the limit, then voided (outcome unknown) and released",
                inputs: vec![
                    Start,
                    R("inventory.reserved"),
                    Timeout,
                    Timeout,
                    Timeout,
                    R("payment.voided"),
                    R("inventory.released"),
                ],
                status: SagaStatus::Compensated,
                steps: [Compensated, Compensated, Pending, Pending, Pending],
                emitted: &[
                    "inventory.reserve",
                    "payment.authorize",
                    "payment.authorize",
                    "payment.authorize",
                    "payment.void",
                    "inventory.release",
                    "order.compensated",
                ],
                ignored: &[],
            },
            Case {
                name: "a late success after the timeout is ignored; compensation goes on",
                inputs: vec![Start, Timeout, Timeout, Timeout, R("inventory.reserved"), R("inventory.released")],
                status: SagaStatus::Compensated,
                steps: [Compensated, Pending, Pending, Pending, Pending],
                emitted: &[
                    "inventory.reserve",
                    "inventory.reserve",
                    "inventory.reserve",
                    "inventory.release",
                    "order.compensated",
                ],
                ignored: &[Ignored::Late],
            },
            Case {
                name: "the pivot is re-sent forever, never compensated",
                inputs: vec![
                    Start,
                    R("inventory.reserved"),
                    R("payment.authorized"),
                    Timeout,
                    Timeout,
                    Timeout,
                    Timeout,
                    Timeout,
                    R("shipping.scheduled"),
                ],
                status: SagaStatus::Running,
                steps: [Succeeded, Succeeded, Succeeded, Running, Pending],
                emitted: &[
                    "inventory.reserve",
                    "payment.authorize",
                    "shipping.schedule",
                    "shipping.schedule",
                    "shipping.schedule",
                    "shipping.schedule",
                    "shipping.schedule",
                    "shipping.schedule",
                    "payment.capture",
                ],
                ignored: &[],
            },
            Case {
                // capture_payment has no failure reply in ORDER_STEPS: the failure replies its
                // participants can still send are those of earlier steps, late after the pivot, and
                // they compensate nothing. A retriable step's own failure reply is in
                // `a_retriable_steps_own_failure_reply_re_sends_it_and_compensates_nothing`.
                name: "retriable steps are re-sent forever, even after a failure reply",
                inputs: {
                    let mut v = HAPPY[..4].to_vec();
                    v.extend([
                        Timeout,
                        R("payment.declined"),
                        Timeout,
                        R("shipping.rejected"),
                        Timeout,
                        R("inventory.rejected"),
                        Timeout,
                        R("payment.captured"),
                        R("inventory.committed"),
                    ]);
                    v
                },
                status: SagaStatus::Completed,
                steps: [Succeeded; 5],
                emitted: &[
                    "inventory.reserve",
                    "payment.authorize",
                    "shipping.schedule",
                    "payment.capture",
                    "payment.capture",
                    "payment.capture",
                    "payment.capture",
                    "payment.capture",
                    "inventory.commit",
                    "order.completed",
                ],
                ignored: &[Ignored::Late, Ignored::Late, Ignored::Late],
            },
            Case {
                name: "a compensation that never answers: FAILED, the others still run",
                inputs: vec![Start, R("inventory.reserved"), R("payment.declined"), Timeout, Timeout],
                status: SagaStatus::Failed,
                steps: [CompensationFailed, Failed, Pending, Pending, Pending],
                emitted: &[
                    "inventory.reserve",
                    "payment.authorize",
                    "inventory.release",
                    "inventory.release",
                    "order.failed",
                ],
                ignored: &[],
            },
            Case {
                name: "void fails, release still done, saga FAILED",
                inputs: vec![
                    Start,
                    R("inventory.reserved"),
                    R("payment.authorized"),
                    R("shipping.rejected"),
                    Timeout,
                    Timeout,
                    R("inventory.released"),
                ],
                status: SagaStatus::Failed,
                steps: [Compensated, CompensationFailed, Failed, Pending, Pending],
                emitted: &[
                    "inventory.reserve",
                    "payment.authorize",
                    "shipping.schedule",
                    "payment.void",
                    "payment.void",
                    "inventory.release",
                    "order.failed",
                ],
                ignored: &[],
            },
            Case {
                name: "unknown-to-this-saga reply types are unexpected",
                inputs: vec![Start, R("payment.voided"), R("shipping.scheduled")],
                status: SagaStatus::Running,
                steps: [Running, Pending, Pending, Pending, Pending],
                emitted: &["inventory.reserve"],
                // payment.voided is a compensation reply of this saga: late; shipping.scheduled too.
                ignored: &[Ignored::Late, Ignored::Late],
            },
        ]
    }

    #[test]
    fn every_scenario_ends_where_it_should() {
        for c in cases() {
            let r = run(&c.inputs);
            let s = r.state.as_ref().unwrap_or_else(|| panic!("{}: no state", c.name));
            assert_eq!(s.status, c.status, "{}", c.name);
            assert_eq!(statuses(&r), c.steps, "{}", c.name);
            assert_eq!(r.emitted, c.emitted, "{}", c.name);
            assert_eq!(r.ignored, c.ignored, "{}", c.name);
            if s.status.is_terminal() {
                assert_eq!(s.current_step_name(), None, "{}", c.name);
            }
        }
    }

    #[test]
    fn re_sends_keep_the_idempotency_key_and_count_attempts() {
        let r = run(&[Start, Timeout, Timeout]);
        assert_eq!(r.keys.len(), 3);
        assert!(r.keys.iter().all(|k| k == &r.keys[0]));
        assert_eq!(r.keys[0], format!("{}:reserve_inventory:do", Uuid::from_u128(7)));
        assert_eq!(r.attempts, vec![1, 2, 3]);
        let s = r.state.unwrap();
        assert_eq!(s.attempt, 3);
        assert_eq!(s.steps[0].attempts, 3);
    }

    #[test]
    fn compensation_keys_differ_from_the_step_keys() {
        let r = run(&[Start, R("inventory.reserved"), R("payment.declined")]);
        assert_eq!(r.keys.last().unwrap(), &format!("{}:reserve_inventory:compensate", Uuid::from_u128(7)));
    }

    #[test]
    fn the_failure_reason_is_kept() {
        let r = run(&[Start, R("inventory.reserved"), R("payment.declined"), R("inventory.released")]);
        assert_eq!(r.state.unwrap().failure_reason.as_deref(), Some("payment.declined: no"));
        let r = run(&[Start, Timeout, Timeout, Timeout]);
        assert_eq!(r.state.unwrap().failure_reason.as_deref(), Some("reserve_inventory timed out after 3 attempts"));
    }

    #[test]
    fn inputs_without_a_saga_are_unexpected() {
        let id = Uuid::nil();
        let rep = reply("inventory.reserved", id);
        let d = transition(
            &OrderSaga,
            &POLICY,
            id,
            &order(),
            None,
            Input::Reply { message_type: "inventory.reserved", reply: &rep },
        );
        assert_eq!(d, Decision::Ignored(Ignored::Unexpected));
        let d = transition(&OrderSaga, &POLICY, id, &order(), None, Input::Timeout { attempt: 1 });
        assert_eq!(d, Decision::Ignored(Ignored::Unexpected));
    }

    #[test]
    fn state_round_trips_through_json() {
        let s = run(&[Start, R("inventory.reserved")]).state.unwrap();
        let back: SagaState = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        assert_eq!(serde_json::to_value(SagaStatus::Compensating).unwrap(), "COMPENSATING");
        assert_eq!("completed".parse::<SagaStatus>(), Ok(SagaStatus::Completed));
        assert!("DONE".parse::<SagaStatus>().is_err());
    }

    /// The order saga with a failure reply on its retriable `capture_payment`, a reply type no
    /// participant of the platform sends.
    const RETRIABLE_WITH_FAILURE: &[StepDef] = &[
        ORDER_STEPS[0],
        ORDER_STEPS[1],
        ORDER_STEPS[2],
        StepDef { failure: Some("payment.capture_refused"), ..ORDER_STEPS[3] },
        ORDER_STEPS[4],
    ];

    struct RetriableFails;

    impl SagaDefinition for RetriableFails {
        type Data = OrderRequest;
        fn name(&self) -> &'static str {
            "retriable_fails"
        }
        fn steps(&self) -> &'static [StepDef] {
            RETRIABLE_WITH_FAILURE
        }
        fn command(&self, saga_id: Uuid, step: &StepDef, action: Action, data: &OrderRequest) -> Command {
            OrderSaga.command(saga_id, step, action, data)
        }
        fn completed_event(&self, saga_id: Uuid, data: &OrderRequest) -> Event {
            OrderSaga.completed_event(saga_id, data)
        }
        fn compensated_event(&self, saga_id: Uuid, data: &OrderRequest, reason: &str) -> Event {
            OrderSaga.compensated_event(saga_id, data, reason)
        }
        fn failed_event(&self, saga_id: Uuid, data: &OrderRequest, reason: &str) -> Event {
            OrderSaga.failed_event(saga_id, data, reason)
        }
    }

    #[test]
    fn a_retriable_steps_own_failure_reply_re_sends_it_and_compensates_nothing() {
        assert_eq!(validate(RETRIABLE_WITH_FAILURE), Ok(()));
        let mut inputs = HAPPY[..4].to_vec();
        inputs.push(R("payment.capture_refused"));
        let r = run_on(&RetriableFails, &inputs);
        let s = r.state.as_ref().unwrap();
        assert_eq!(s.status, SagaStatus::Running);
        assert_eq!(s.current_step_name(), Some("capture_payment"));
        assert_eq!(s.steps[3].attempts, 2);
        assert_eq!(s.steps[3].reason.as_deref(), Some("no"));
        assert_eq!(r.emitted[3..], ["payment.capture", "payment.capture"]);
        assert_eq!(r.keys[3], r.keys[4], "the re-send keeps the idempotency key");
        inputs.extend([R("payment.captured"), R("inventory.committed")]);
        let r = run_on(&RetriableFails, &inputs);
        assert_eq!(r.state.unwrap().status, SagaStatus::Completed);
        assert!(!r.emitted.iter().any(|t| t.ends_with(".release") || t.ends_with(".void")), "{:?}", r.emitted);
        assert!(r.ignored.is_empty());
    }

    const fn step(name: &'static str, kind: StepKind, n: u8, comp: bool) -> StepDef {
        const CMDS: [&str; 6] = ["a.c", "b.c", "c.c", "d.c", "e.c", "f.c"];
        const OKS: [&str; 6] = ["a.ok", "b.ok", "c.ok", "d.ok", "e.ok", "f.ok"];
        const UNDO: [&str; 6] = ["a.undo", "b.undo", "c.undo", "d.undo", "e.undo", "f.undo"];
        const UNDONE: [&str; 6] = ["a.undone", "b.undone", "c.undone", "d.undone", "e.undone", "f.undone"];
        let i = n as usize;
        StepDef {
            name,
            kind,
            command: CMDS[i],
            success: OKS[i],
            failure: None,
            compensation: if comp { Some(Compensation { command: UNDO[i], done: UNDONE[i] }) } else { None },
        }
    }

    #[test]
    fn bad_definitions_are_refused() {
        use DefinitionError as E;
        use StepKind::{Compensatable as C, Pivot as P, Retriable as R};
        let cases: Vec<(Vec<StepDef>, DefinitionError)> = vec![
            (vec![], E::NoSteps),
            (vec![step("a", C, 0, false), step("b", P, 1, false)], E::CompensatableWithoutCompensation("a")),
            (vec![step("a", R, 0, false), step("b", P, 1, false)], E::RetriableBeforePivot("a")),
            (vec![step("a", C, 0, true), step("b", R, 1, false)], E::RetriableBeforePivot("b")),
            (vec![step("a", P, 0, false), step("b", C, 1, true)], E::CompensatableAfterPivot("b")),
            (vec![step("a", P, 0, false), step("b", P, 1, false)], E::MoreThanOnePivot),
            (vec![step("a", P, 0, true)], E::CompensationOnNonCompensatable("a")),
            (vec![step("a", C, 0, true), step("a", P, 1, false)], E::DuplicateStepName("a")),
            (vec![step("a", C, 0, true), step("b", P, 0, false)], E::TypeUsedTwice("a.c")),
        ];
        for (steps, want) in cases {
            assert_eq!(validate(&steps), Err(want.clone()), "{want}");
        }
        assert_eq!(validate(&[step("a", C, 0, true), step("b", P, 1, false), step("c", R, 2, false)]), Ok(()));
        assert_eq!(validate(ORDER_STEPS), Ok(()));
    }
}
