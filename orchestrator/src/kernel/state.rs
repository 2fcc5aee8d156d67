//! A saga's progress as the kernel keeps it (stored as JSON in the saga row): its status, the
//! step it waits on, each step's record, and an open incident if it has one.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::definition::{Action, SagaDefinition};

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
    pub const ALL: [SagaStatus; 5] = [
        SagaStatus::Running,
        SagaStatus::Compensating,
        SagaStatus::Completed,
        SagaStatus::Compensated,
        SagaStatus::Failed,
    ];

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
        SagaStatus::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown saga status `{s}`"))
    }
}

impl fmt::Display for SagaStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
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
    /// Given up by an operator before it answered: outcome unknown, compensated like a success.
    Abandoned,
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

/// A command that a participant's transport moved to a dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The dead-letter queue it sits in, e.g. `payment.commands.dlq`.
    pub queue: String,
    pub message_id: Uuid,
    pub message_type: String,
    /// The transport's reason code, e.g. `capture_without_authorization`, `retries_exhausted`.
    pub reason: String,
}

/// A saga that cannot go on by itself: it stopped re-sending, keeps what it holds, and waits for an
/// operator (retry, compensate before the pivot, or resolve).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    pub step: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<DeadLetter>,
}

/// Everything about one saga's progress; stored as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaState {
    pub status: SagaStatus,
    /// Index of the step awaited (forward) or being compensated; `steps.len()` once completed.
    pub step: usize,
    pub action: Action,
    /// Sends so far of the awaited command in the current round (1 = first send); an operator's
    /// retry starts a new round at 1.
    pub attempt: u32,
    pub steps: Vec<StepRecord>,
    pub failure_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<Incident>,
    /// What started the compensation, as a bounded label: the failure reply's type (e.g.
    /// `payment.declined`), `timeout` or `operator`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

impl SagaState {
    /// A bounded label for how a finished saga ended: `completed`; `compensation_failed` for
    /// FAILED; for COMPENSATED, what started the compensation ([`SagaState::cause`]).
    pub fn outcome(&self) -> &str {
        match self.status {
            SagaStatus::Completed => "completed",
            SagaStatus::Failed => "compensation_failed",
            _ => self.cause.as_deref().unwrap_or("unknown"),
        }
    }

    /// The step the saga is waiting on; `None` once it is finished.
    pub fn current_step_name(&self) -> Option<&str> {
        if self.status.is_terminal() {
            return None;
        }
        self.steps.get(self.step).map(|s| s.name.as_str())
    }
}

/// Why `state` cannot be driven by `def` (its steps are not the definition's), or `None`. A saga
/// stores its definition's version, so this means a bug or a hand-edited row, never an upgrade.
pub fn incompatible<D: SagaDefinition>(def: &D, state: &SagaState) -> Option<String> {
    let stored: Vec<&str> = state.steps.iter().map(|s| s.name.as_str()).collect();
    let defined: Vec<&str> = def.steps().iter().map(|s| s.name).collect();
    if stored != defined {
        return Some(format!(
            "the stored steps {stored:?} are not those of {} v{} {defined:?}",
            def.name(),
            def.version()
        ));
    }
    if !state.status.is_terminal() && state.step >= defined.len() {
        return Some(format!("the stored step index {} is past the last step", state.step));
    }
    None
}
