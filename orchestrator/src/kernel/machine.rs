//! The transitions themselves: one method per kind of input, and the moves they share (send,
//! re-send, advance, compensate below a step, open an incident).

use contracts::{Reply, ReplyOutcome};
use uuid::Uuid;

use super::definition::{Action, SagaDefinition, StepDef, StepKind};
use super::state::{DeadLetter, Incident, SagaState, SagaStatus, StepRecord, StepStatus};
use super::{Decision, Effect, Ignored, Policy, Verb};

pub(super) struct Kernel<'a, D: SagaDefinition> {
    pub def: &'a D,
    pub policy: &'a Policy,
    pub saga_id: Uuid,
    pub data: &'a D::Data,
}

fn applied(state: SagaState, effects: Vec<Effect>, note: String) -> Decision {
    Decision::Applied { state, effects, note }
}

impl<D: SagaDefinition> Kernel<'_, D> {
    fn steps(&self) -> &'static [StepDef] {
        self.def.steps()
    }

    fn pivot(&self) -> Option<usize> {
        self.steps().iter().position(|s| s.kind == StepKind::Pivot)
    }

    pub fn start(&self) -> Decision {
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
            incident: None,
            cause: None,
        };
        let note = format!("started; {}", self.steps()[0].name);
        applied(state, self.send(0, Action::Do, 1), note)
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

    pub fn reply(&self, mut s: SagaState, message_type: &str, reply: &Reply) -> Decision {
        let i = s.step;
        let def = &self.steps()[i];
        match (s.status, s.action) {
            (SagaStatus::Running, Action::Do) if message_type == def.success => {
                s.incident = None;
                let note = format!("{} succeeded ({message_type})", def.name);
                self.advance(s, note)
            }
            (SagaStatus::Running, Action::Do) if def.failure == Some(message_type) => {
                s.incident = None;
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
                s.cause.get_or_insert_with(|| message_type.to_owned());
                let why = format!("{message_type}: {reason}");
                let note = format!("{} failed ({why})", def.name);
                self.compensate_below(s, i, why, note)
            }
            (SagaStatus::Compensating, Action::Compensate)
                if def.compensation.is_some_and(|c| c.done == message_type) =>
            {
                s.incident = None;
                s.steps[i].status = StepStatus::Compensated;
                let note = format!("{} compensated ({message_type})", def.name);
                let reason = s.failure_reason.clone().unwrap_or_default();
                self.compensate_below(s, i, reason, note)
            }
            _ => self.not_awaited(message_type),
        }
    }

    /// The awaited step succeeded: send the next one, or complete.
    fn advance(&self, mut s: SagaState, mut note: String) -> Decision {
        let i = s.step;
        s.steps[i].status = StepStatus::Succeeded;
        let next = i + 1;
        if next < s.steps.len() {
            s.step = next;
            s.attempt = 1;
            s.steps[next].status = StepStatus::Running;
            s.steps[next].attempts = 1;
            note.push_str(&format!("; {}", self.steps()[next].name));
            let effects = self.send(next, Action::Do, 1);
            return applied(s, effects, note);
        }
        s.status = SagaStatus::Completed;
        s.step = s.steps.len();
        note.push_str("; saga completed");
        let effects = vec![Effect::Publish(self.def.completed_event(self.saga_id, self.data)), Effect::ClearDeadline];
        applied(s, effects, note)
    }

    pub fn timeout(&self, s: SagaState) -> Decision {
        let i = s.step;
        let def = &self.steps()[i];
        let attempt = s.attempt;
        match (s.action, def.kind) {
            (Action::Do, StepKind::Compensatable) if attempt >= self.policy.max_attempts => {
                let mut s = s;
                let why = format!("{} timed out after {attempt} attempts", def.name);
                s.steps[i].status = StepStatus::TimedOut;
                s.steps[i].reason = Some(why.clone());
                s.cause.get_or_insert_with(|| "timeout".to_owned());
                let note = format!("{why}; outcome unknown, compensating it too");
                // `i + 1`: the timed-out step itself is compensated first.
                self.compensate_below(s, i + 1, why, note)
            }
            (Action::Do, StepKind::Pivot | StepKind::Retriable) if attempt >= self.policy.max_attempts_after_pivot => {
                let why = format!("{} unanswered after {attempt} attempts", def.name);
                self.open_incident(s, why, None)
            }
            (Action::Do, _) => self.resend(s, &format!("{} timed out (attempt {attempt}); re-sending", def.name)),
            (Action::Compensate, _) if attempt < self.policy.max_compensation_attempts => {
                self.resend(s, &format!("compensation of {} timed out (attempt {attempt}); re-sending", def.name))
            }
            (Action::Compensate, _) => self.compensation_failed(s),
        }
    }

    /// A compensation ran out of attempts: mark it, run the others, end FAILED.
    fn compensation_failed(&self, mut s: SagaState) -> Decision {
        let i = s.step;
        let def = &self.steps()[i];
        let command = def.compensation.map_or("?", |c| c.command);
        let why = format!("compensation {command} of {} timed out after {} attempts", def.name, s.attempt);
        s.steps[i].status = StepStatus::CompensationFailed;
        s.steps[i].reason = Some(why.clone());
        let reason = match &s.failure_reason {
            Some(r) => format!("{r}; {why}"),
            None => why.clone(),
        };
        s.failure_reason = Some(reason.clone());
        self.compensate_below(s, i, reason, why)
    }

    /// Send the awaited command again, one attempt more.
    fn resend(&self, mut s: SagaState, note: &str) -> Decision {
        let i = s.step;
        s.attempt += 1;
        match s.action {
            Action::Do => s.steps[i].attempts += 1,
            Action::Compensate => s.steps[i].compensation_attempts += 1,
        }
        let effects = self.send(i, s.action, s.attempt);
        applied(s, effects, note.to_owned())
    }

    /// Compensate the next step below `below` that needs it (one with a compensation that
    /// succeeded or whose outcome is unknown), or finish: COMPENSATED, or FAILED if a compensation
    /// failed.
    fn compensate_below(&self, mut s: SagaState, below: usize, reason: String, mut note: String) -> Decision {
        s.status = SagaStatus::Compensating;
        s.incident = None;
        if s.failure_reason.is_none() {
            s.failure_reason = Some(reason.clone());
        }
        let next = (0..below).rev().find(|&j| {
            self.steps()[j].compensation.is_some()
                && matches!(s.steps[j].status, StepStatus::Succeeded | StepStatus::TimedOut | StepStatus::Abandoned)
        });
        if let Some(j) = next {
            s.step = j;
            s.action = Action::Compensate;
            s.attempt = 1;
            s.steps[j].status = StepStatus::Compensating;
            s.steps[j].compensation_attempts = 1;
            note.push_str(&format!("; compensating {}", self.steps()[j].name));
            let effects = self.send(j, Action::Compensate, 1);
            return applied(s, effects, note);
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
        applied(s, vec![Effect::Publish(event), Effect::ClearDeadline], note)
    }

    /// Stop re-sending and wait for an operator; what the saga holds stays held.
    fn open_incident(&self, mut s: SagaState, reason: String, dead_letter: Option<DeadLetter>) -> Decision {
        let step = s.current_step_name().unwrap_or("?").to_owned();
        let note = format!("incident at {step}: {reason}; re-sends stop until an operator acts");
        s.incident = Some(Incident { step, reason, dead_letter });
        applied(s, vec![Effect::ClearDeadline], note)
    }

    /// A command of this saga was dead-lettered. The awaited command of the pivot or a step after
    /// it opens an incident; before the pivot, and for compensations, the deadlines decide.
    pub fn dead_lettered(&self, s: SagaState, d: &DeadLetter) -> Decision {
        if s.incident.is_some() {
            return Decision::Ignored(Ignored::InIncident);
        }
        let def = &self.steps()[s.step];
        let awaited = match s.action {
            Action::Do => Some(def.command),
            Action::Compensate => def.compensation.map(|c| c.command),
        };
        if awaited != Some(d.message_type.as_str()) {
            return Decision::Ignored(Ignored::Late);
        }
        if s.action == Action::Compensate || def.kind == StepKind::Compensatable {
            return Decision::Ignored(Ignored::Recoverable);
        }
        let reason = format!("{} was dead-lettered to {} ({})", d.message_type, d.queue, d.reason);
        self.open_incident(s, reason, Some(d.clone()))
    }

    pub fn operate(&self, s: SagaState, verb: Verb, actor: &str, note: &str) -> Decision {
        let by = if note.is_empty() { format!("by {actor}") } else { format!("by {actor}: {note}") };
        match verb {
            Verb::Retry => self.retry(s, &by),
            Verb::Compensate => self.give_up(s, &by),
            Verb::Resolve if note.trim().is_empty() => Decision::Refused("resolving needs a note".into()),
            Verb::Resolve => self.resolve(s, &by),
        }
    }

    /// Send the awaited command again now, in a fresh round of attempts.
    fn retry(&self, mut s: SagaState, by: &str) -> Decision {
        if s.status.is_terminal() {
            return Decision::Refused(format!("the saga is {}: there is nothing to retry", s.status));
        }
        let i = s.step;
        s.incident = None;
        s.attempt = 1;
        match s.action {
            Action::Do => s.steps[i].attempts += 1,
            Action::Compensate => s.steps[i].compensation_attempts += 1,
        }
        let what = match s.action {
            Action::Do => self.steps()[i].command,
            Action::Compensate => self.steps()[i].compensation.map_or("?", |c| c.command),
        };
        let effects = self.send(i, s.action, 1);
        applied(s, effects, format!("{what} sent again {by}"))
    }

    /// Give the saga up before its pivot succeeded: the awaited step (outcome unknown) and every
    /// completed one are compensated.
    fn give_up(&self, mut s: SagaState, by: &str) -> Decision {
        if s.status != SagaStatus::Running {
            return Decision::Refused(format!("the saga is {}: only a RUNNING saga can be compensated", s.status));
        }
        let i = s.step;
        let def = &self.steps()[i];
        if self.pivot().is_some_and(|p| i > p) {
            return Decision::Refused(format!(
                "the pivot has succeeded, so the saga goes through: retry {} or resolve it",
                def.name
            ));
        }
        if def.kind == StepKind::Pivot && def.compensation.is_none() {
            return Decision::Refused(format!(
                "{} v{} cannot cancel its pivot {}: retry it or resolve it",
                self.def.name(),
                self.def.version(),
                def.name
            ));
        }
        let why = format!("compensation requested {by}");
        s.incident = None;
        s.steps[i].status = StepStatus::Abandoned;
        s.steps[i].reason = Some(why.clone());
        s.cause.get_or_insert_with(|| "operator".to_owned());
        let note = format!("{} abandoned (outcome unknown) {by}", def.name);
        self.compensate_below(s, i + 1, why, note)
    }

    /// Close an incident (the step was done by hand) or a FAILED saga (what could not be
    /// compensated was undone by hand).
    fn resolve(&self, mut s: SagaState, by: &str) -> Decision {
        let resolved = format!("resolved by hand {by}");
        if s.status == SagaStatus::Failed {
            for r in s.steps.iter_mut().filter(|r| r.status == StepStatus::CompensationFailed) {
                r.status = StepStatus::Compensated;
                r.reason = Some(resolved.clone());
            }
            s.status = SagaStatus::Compensated;
            return applied(s, vec![Effect::ClearDeadline], format!("FAILED saga {resolved}; now COMPENSATED"));
        }
        if s.incident.take().is_none() {
            return Decision::Refused(format!("the saga is {} with no open incident: nothing to resolve", s.status));
        }
        let i = s.step;
        s.steps[i].reason = Some(resolved.clone());
        let note = format!("incident at {} {resolved}", self.steps()[i].name);
        match s.action {
            Action::Do => self.advance(s, note),
            Action::Compensate => {
                s.steps[i].status = StepStatus::Compensated;
                let reason = s.failure_reason.clone().unwrap_or_default();
                self.compensate_below(s, i, reason, note)
            }
        }
    }
}
