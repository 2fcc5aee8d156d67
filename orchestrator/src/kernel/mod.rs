//! The saga kernel: a pure state machine. `transition(definition, policy, saga, data, state,
//! input)` returns the next state and the effects to carry out (commands to send, events to
//! publish, a deadline to arm), says why the input changes nothing, or refuses an operator's verb.
//! No IO, no clock, no randomness: the engine does those, and the tables of tests pin every
//! transition.
//!
//! Semantics (compensatable / pivot / retriable):
//! - steps run in order; a success reply moves to the next step; after the last, COMPLETED;
//! - a business failure of a compensatable step or of the pivot compensates the completed
//!   compensatable steps in reverse order (COMPENSATING, then COMPENSATED);
//! - a compensatable step whose deadline passes is re-sent up to `max_attempts`, then treated as
//!   failed; since its outcome is unknown (the participant may have acted late), it is compensated
//!   too (every compensation is a no-op for something never done);
//! - the pivot and the steps after it are never compensated automatically: a timeout re-sends them
//!   up to `max_attempts_after_pivot`; then, or as soon as their command is dead-lettered, the saga
//!   opens an **incident**: it stops re-sending, keeps what it holds, and waits for an operator;
//! - a compensation whose deadline passes is re-sent up to `max_compensation_attempts`; then the
//!   step is marked `compensation_failed`, the remaining compensations still run, and the saga
//!   ends FAILED (an operator must look) instead of COMPENSATED;
//! - operator verbs: `retry` sends the awaited command again in a fresh round; `compensate` gives
//!   up a saga that has not passed its pivot (the awaited step, outcome unknown, is compensated
//!   too: for the pivot, by its cancel command); `resolve` closes an incident (the operator did the
//!   step by hand: it counts as succeeded) or a FAILED saga (the operator undid by hand what could
//!   not be compensated: COMPENSATED). A verb that makes no sense for the state is refused;
//! - replies that do not match what the saga awaits are ignored and classified.
//!
//! Layout: [`definition`](self::definition) (step tables and their rules), [`state`](self::state)
//! (what is stored), `machine` (the transitions), [`salvage`](self::salvage) (a saga whose state
//! cannot be read).

mod definition;
mod machine;
mod salvage;
mod state;
#[cfg(test)]
mod tests;

use contracts::{Command, Event, Reply};
pub use definition::{Action, Compensation, DefinitionError, SagaDefinition, StepDef, StepKind, validate};
pub use salvage::{Salvage, salvage};
pub use state::{DeadLetter, Incident, SagaState, SagaStatus, StepRecord, StepStatus, incompatible};
use uuid::Uuid;

/// Retry limits, from configuration. Recorded with every event a limit can decide, so a fold
/// replays the limits that applied then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Policy {
    /// Sends of a compensatable step before it counts as failed.
    pub max_attempts: u32,
    /// Sends of a compensation before it counts as failed.
    pub max_compensation_attempts: u32,
    /// Sends of the pivot or of a step after it before the saga opens an incident.
    pub max_attempts_after_pivot: u32,
}

/// What an operator asks of a saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verb {
    Retry,
    Compensate,
    Resolve,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Retry => "retry",
            Verb::Compensate => "compensate",
            Verb::Resolve => "resolve",
        }
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
    /// A participant's transport moved a command of this saga to a dead-letter queue.
    DeadLettered(&'a DeadLetter),
    /// An operator's verb, with who asked and why.
    Operator {
        verb: Verb,
        actor: &'a str,
        note: &'a str,
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
    /// A dead letter the saga recovers from by itself (its deadline re-sends or compensates).
    Recoverable,
    /// An incident is open already.
    InIncident,
}

impl Ignored {
    pub const ALL: [Ignored; 7] = [
        Ignored::Terminal,
        Ignored::Duplicate,
        Ignored::Late,
        Ignored::Unexpected,
        Ignored::Stale,
        Ignored::Recoverable,
        Ignored::InIncident,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Ignored::Terminal => "terminal",
            Ignored::Duplicate => "duplicate",
            Ignored::Late => "late",
            Ignored::Unexpected => "unexpected",
            Ignored::Stale => "stale",
            Ignored::Recoverable => "recoverable",
            Ignored::InIncident => "in_incident",
        }
    }
}

// A decision lives for one transition and is matched once; boxing the state would only add an
// allocation per input.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Applied {
        state: SagaState,
        effects: Vec<Effect>,
        note: String,
    },
    Ignored(Ignored),
    /// An operator's verb that makes no sense for the saga as it is, and why.
    Refused(String),
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
    let k = machine::Kernel { def, policy, saga_id, data };
    let Some(s) = state else {
        return match input {
            Input::Start => k.start(),
            Input::Operator { .. } => Decision::Refused("there is no such saga".into()),
            _ => Decision::Ignored(Ignored::Unexpected),
        };
    };
    let operator = matches!(input, Input::Operator { .. });
    if matches!(input, Input::Start) {
        return Decision::Ignored(Ignored::Duplicate);
    }
    if s.status.is_terminal() && !operator {
        return Decision::Ignored(Ignored::Terminal);
    }
    if let Some(why) = incompatible(def, s) {
        return undriveable(s, &input, why);
    }
    let s = s.clone();
    match input {
        Input::Start => Decision::Ignored(Ignored::Duplicate),
        Input::Reply { message_type, reply } => k.reply(s, message_type, reply),
        Input::Timeout { attempt } if attempt != s.attempt => Decision::Ignored(Ignored::Stale),
        // An incident stops re-sends: no deadline is armed, and a late one changes nothing.
        Input::Timeout { .. } if s.incident.is_some() => Decision::Ignored(Ignored::InIncident),
        Input::Timeout { .. } => k.timeout(s),
        Input::DeadLettered(d) => k.dead_lettered(s, d),
        Input::Operator { verb, actor, note } => k.operate(s, verb, actor, note),
    }
}

/// The decision for a saga that no known definition can drive (its definition version is unknown
/// to this build, or its stored steps are not its definition's): an incident, opened once; every
/// operator verb is refused, since nothing here knows what its steps mean.
pub fn undriveable(s: &SagaState, input: &Input<'_>, why: String) -> Decision {
    match input {
        Input::Operator { .. } => Decision::Refused(format!("{why}: this orchestrator cannot drive the saga")),
        Input::Start => Decision::Ignored(Ignored::Duplicate),
        _ if s.status.is_terminal() => Decision::Ignored(Ignored::Terminal),
        _ if s.incident.is_some() => Decision::Ignored(Ignored::InIncident),
        _ => {
            let mut s = s.clone();
            let step = s.current_step_name().unwrap_or("?").to_owned();
            let note = format!("incident at {step}: {why}");
            s.incident = Some(Incident { step, reason: why, dead_letter: None });
            Decision::Applied { state: s, effects: vec![Effect::ClearDeadline], note }
        }
    }
}
