//! What a saga definition is: a table of steps ([`StepDef`]), each with its kind, command, replies
//! and compensation, and the rules a table must obey ([`validate`]).

use contracts::{Command, Event};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// Can be undone by its compensation; must come before the pivot.
    Compensatable,
    /// The go/no-go step: once it succeeded the saga goes through. At most one. It may name a
    /// compensation that cancels an attempt whose outcome is unknown (never one that succeeded).
    Pivot,
    /// After the pivot; cannot fail for business reasons, retried until done.
    Retriable,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Compensatable => "compensatable",
            StepKind::Pivot => "pivot",
            StepKind::Retriable => "retriable",
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
    /// Compensatable steps: how a success (or an unknown outcome) is undone. The pivot: how an
    /// attempt whose outcome is unknown is cancelled (only an operator asks for it).
    pub compensation: Option<Compensation>,
}

/// A saga definition: the table of steps, and how to build commands and events from its data.
/// A definition is versioned: a saga runs to its end on the version it started with, so a
/// changed table is a new version and the old one stays known while sagas still run on it.
pub trait SagaDefinition {
    type Data;
    fn name(&self) -> &'static str;
    fn version(&self) -> u32;
    fn steps(&self) -> &'static [StepDef];
    /// The command of `step` (or of its compensation); its type equals `step.command` (or
    /// `step.compensation.command`).
    fn command(&self, saga_id: Uuid, step: &StepDef, action: Action, data: &Self::Data) -> Command;
    /// The compensation of `step` built from the saga id alone, for a saga whose data cannot be
    /// read; `None` if it needs the data.
    fn undo(&self, saga_id: Uuid, step: &StepDef) -> Option<Command>;
    fn completed_event(&self, saga_id: Uuid, data: &Self::Data) -> Event;
    fn compensated_event(&self, saga_id: Uuid, data: &Self::Data, reason: &str) -> Event;
    fn failed_event(&self, saga_id: Uuid, data: &Self::Data, reason: &str) -> Event;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    #[error("retriable step `{0}` must not have a compensation")]
    CompensationOnRetriable(&'static str),
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
            StepKind::Compensatable if pivot_seen => return Err(DefinitionError::CompensatableAfterPivot(s.name)),
            StepKind::Compensatable if s.compensation.is_none() => {
                return Err(DefinitionError::CompensatableWithoutCompensation(s.name));
            }
            StepKind::Compensatable => {}
            StepKind::Pivot if pivot_seen => return Err(DefinitionError::MoreThanOnePivot),
            StepKind::Pivot => pivot_seen = true,
            StepKind::Retriable if !pivot_seen => return Err(DefinitionError::RetriableBeforePivot(s.name)),
            StepKind::Retriable if s.compensation.is_some() => {
                return Err(DefinitionError::CompensationOnRetriable(s.name));
            }
            StepKind::Retriable => {}
        }
    }
    Ok(())
}
