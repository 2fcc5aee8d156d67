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
    Reply { message_type: &'a str, reply: &'a Reply },
    /// The deadline of attempt `attempt` of the awaited command passed.
    Timeout { attempt: u32 },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Send { step: &'static str, action: Action, command: Command, idempotency_key: String, attempt: u32 },
    Publish(Event),
    /// Arm the deadline of the command just sent (`attempt` picks the backoff).
    Wait { step: &'static str, action: Action, attempt: u32 },
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
            .map(|s| StepRecord { name: s.name.to_owned(), status: StepStatus::Pending, attempts: 0, compensation_attempts: 0, reason: None })
            .collect();
        let Some(first) = steps.first_mut() else {
            return Decision::Ignored(Ignored::Unexpected);
        };
        first.status = StepStatus::Running;
        first.attempts = 1;
        let state = SagaState { status: SagaStatus::Running, step: 0, action: Action::Do, attempt: 1, steps, failure_reason: None };
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
            (SagaStatus::Compensating, Action::Compensate) if def.compensation.is_some_and(|c| c.done == message_type) => {
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
                    return self.resend(s, &format!("compensation of {} timed out (attempt {attempt}); re-sending", def.name));
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
