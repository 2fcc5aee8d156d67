//! A saga whose stored state or order cannot be read cannot be driven, but it may hold things: the
//! timeline still says which commands were sent and which replies came. [`salvage`] decides what to
//! undo from that alone (compensations need only the saga id), so the engine can end the saga
//! FAILED without leaving stock or a payment held.

use uuid::Uuid;

use super::Effect;
use super::definition::{Action, SagaDefinition, StepKind};

/// What to do with an unreadable saga.
#[derive(Debug, Clone, PartialEq)]
pub struct Salvage {
    /// Compensations to send (each once: nobody awaits their replies), then `ClearDeadline`.
    pub effects: Vec<Effect>,
    /// For the timeline and the failure reason.
    pub note: String,
}

/// Undo, newest first, every step with a compensation whose command was `sent` and that neither
/// failed nor was compensated per `received` (reply types). If the pivot succeeded nothing is
/// undone: the order goes through, and an operator must finish it by hand.
pub fn salvage<D: SagaDefinition>(def: &D, saga_id: Uuid, sent: &[&str], received: &[&str]) -> Salvage {
    let steps = def.steps();
    let past_pivot = steps.iter().any(|s| s.kind == StepKind::Pivot && received.contains(&s.success));
    let mut effects = Vec::new();
    let mut undone = Vec::new();
    if !past_pivot {
        for step in steps.iter().rev() {
            let Some(comp) = step.compensation else { continue };
            let failed = step.failure.is_some_and(|f| received.contains(&f));
            if !sent.contains(&step.command) || failed || received.contains(&comp.done) {
                continue;
            }
            let Some(command) = def.undo(saga_id, step) else { continue };
            undone.push(comp.command);
            effects.push(Effect::Send {
                step: step.name,
                action: Action::Compensate,
                command,
                idempotency_key: contracts::envelope::idempotency_key(saga_id, step.name, Action::Compensate.as_str()),
                attempt: 1,
            });
        }
    }
    effects.push(Effect::ClearDeadline);
    let note = match (past_pivot, undone.is_empty()) {
        (true, _) => "it passed its pivot, so nothing is undone: finish it by hand".to_owned(),
        (false, true) => "its timeline shows nothing held".to_owned(),
        (false, false) => format!("sent {} to undo what its timeline shows as held", undone.join(", ")),
    };
    Salvage { effects, note }
}
