//! Table-driven: each case is a sequence of inputs and the expected end (status, step
//! statuses, commands and events emitted along the way, ignores).

use super::*;
use crate::sagas::order::{ORDER_STEPS, OrderSaga};
use contracts::order::{Address, OrderItem, OrderRequest};
use contracts::replies::{Done, InventoryReserved, PaymentAuthorized, Rejected, ShipmentScheduled};
use contracts::{Command, Event, Message, Reply};

const POLICY: Policy = Policy { max_attempts: 3, max_compensation_attempts: 2, max_attempts_after_pivot: 4 };
const ORDER: OrderSaga = OrderSaga::LATEST;

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
    /// The participant's transport dead-lettered a command of this type.
    Dead(&'static str),
    /// An operator's verb, by `alice`, with a note.
    Op(Verb, &'static str),
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
        "shipping.scheduled" => {
            Reply::ShipmentScheduled(ShipmentScheduled { order_id: id, shipment_id: id, tracking_number: "t".into() })
        }
        "shipping.rejected" => Reply::ShipmentRejected(rejected),
        "shipping.cancelled" => Reply::ShipmentCancelled(done),
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
    /// Why each refused verb was refused.
    refused: Vec<String>,
    /// The events the engine would have appended (applied inputs, ignored replies), and the state
    /// after each: what the event store's fold is checked against.
    events: Vec<crate::history::Stored>,
    after: Vec<Option<SagaState>>,
}

/// Run `inputs` on the latest order saga, and check that its stream folds into the same state
/// from its start and from a snapshot after every event.
fn run(inputs: &[In]) -> Run {
    let r = run_on(&ORDER, inputs);
    let data = order();
    let fold = |from: Option<SagaState>, events: &[crate::history::Stored]| {
        crate::history::fold(ORDER.name(), ORDER.version(), Uuid::from_u128(7), Some(&data), from, events)
            .unwrap_or_else(|e| panic!("the stream of {inputs:?} does not fold: {e}"))
    };
    assert_eq!(fold(None, &r.events), r.state, "fold from the start of {inputs:?}");
    for k in 1..=r.events.len() {
        let snapshot = r.after[k - 1].clone();
        assert_eq!(fold(snapshot, &r.events[k..]), r.state, "fold from a snapshot at {k} of {inputs:?}");
    }
    r
}

/// Record an event the engine appends, with the state after it.
fn record(r: &mut Run, event: crate::history::Recorded) {
    let stored = crate::history::Stored {
        version: r.events.len() as i64 + 1,
        event_type: event.event_type.as_str().to_owned(),
        schema_version: event.schema_version(),
        payload: event.payload,
        at: chrono::DateTime::UNIX_EPOCH,
    };
    r.events.push(stored);
    r.after.push(r.state.clone());
}

/// [`run`] on any definition whose data is an order.
fn run_on<D: SagaDefinition<Data = OrderRequest>>(def: &D, inputs: &[In]) -> Run {
    let id = Uuid::from_u128(7);
    let data = order();
    let mut r = Run::default();
    let started = crate::history::Started {
        definition: def.name().to_owned(),
        definition_version: def.version(),
        order: serde_json::to_value(&data).unwrap(),
        total_cents: data.total_cents().unwrap(),
    };
    for input in inputs {
        let state = r.state.as_ref();
        let reply_value;
        let dead;
        let input = match *input {
            In::Start => Input::Start,
            In::R(ty) => {
                reply_value = body(ty, id);
                Input::Reply { message_type: ty, reply: &reply_value }
            }
            In::Timeout => Input::Timeout { attempt: state.map_or(0, |s| s.attempt) },
            In::StaleTimeout => Input::Timeout { attempt: state.map_or(0, |s| s.attempt) + 7 },
            In::Dead(ty) => {
                dead = DeadLetter {
                    queue: "x.commands.dlq".into(),
                    message_id: Uuid::nil(),
                    message_type: ty.into(),
                    reason: "refused".into(),
                };
                Input::DeadLettered(&dead)
            }
            In::Op(verb, note) => Input::Operator { verb, actor: "alice", note },
        };
        let event = crate::history::Recorded::input(&input, POLICY, Some(&started));
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
                record(&mut r, event);
            }
            Decision::Ignored(why) => {
                if let Input::Reply { message_type, .. } = input {
                    record(&mut r, crate::history::Recorded::ignored(message_type, why.as_str()));
                }
                r.ignored.push(why)
            }
            Decision::Refused(why) => r.refused.push(why),
        }
    }
    r
}

fn statuses(r: &Run) -> Vec<StepStatus> {
    r.state.as_ref().unwrap().steps.iter().map(|s| s.status).collect()
}

use In::{Dead, Op, R, StaleTimeout, Start, Timeout};
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
            name: "the pivot is re-sent up to its limit, never compensated; then an incident, and a late answer goes on",
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
                "payment.capture",
            ],
            // The fourth timeout opens the incident and clears the deadline; a fifth changes nothing.
            ignored: &[Ignored::InIncident],
        },
        Case {
            // capture_payment has no failure reply in ORDER_STEPS: the failure replies its
            // participants can still send are those of earlier steps, late after the pivot, and
            // they compensate nothing. A retriable step's own failure reply is in
            // `a_retriable_steps_own_failure_reply_re_sends_it_and_compensates_nothing`.
            name: "retriable steps are re-sent up to the limit, even after a failure reply",
            inputs: {
                let mut v = HAPPY[..4].to_vec();
                v.extend([
                    Timeout,
                    R("payment.declined"),
                    Timeout,
                    R("shipping.rejected"),
                    Timeout,
                    R("inventory.rejected"),
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
        assert!(r.refused.is_empty(), "{}: {:?}", c.name, r.refused);
        if s.status.is_terminal() {
            assert_eq!(s.current_step_name(), None, "{}", c.name);
            assert_eq!(s.incident, None, "{}", c.name);
        }
    }
}

/// A scenario with dead letters and operator verbs: like [`Case`], plus what each refusal says.
struct VerbCase {
    name: &'static str,
    inputs: Vec<In>,
    status: SagaStatus,
    steps: [StepStatus; 5],
    emitted: &'static [&'static str],
    ignored: &'static [Ignored],
    /// A word each refusal must contain, in order.
    refused: &'static [&'static str],
    /// The step of the incident open at the end, if any.
    incident: Option<&'static str>,
}

const UP_TO_CAPTURE: &[&str] = &["inventory.reserve", "payment.authorize", "shipping.schedule", "payment.capture"];

fn verb_cases() -> Vec<VerbCase> {
    let then = |base: &[In], extra: &[In]| -> Vec<In> { base.iter().chain(extra).copied().collect() };
    let failed_void = [
        Start,
        R("inventory.reserved"),
        R("payment.authorized"),
        R("shipping.rejected"),
        Timeout,
        Timeout,
        R("inventory.released"),
    ];
    vec![
        VerbCase {
            name: "a dead-lettered capture opens an incident: re-sends stop until an operator retries",
            inputs: then(
                &HAPPY[..4],
                &[Dead("payment.capture"), Timeout, Dead("payment.capture"), Op(Verb::Retry, "")],
            ),
            status: SagaStatus::Running,
            steps: [Succeeded, Succeeded, Succeeded, Running, Pending],
            emitted: &[
                "inventory.reserve",
                "payment.authorize",
                "shipping.schedule",
                "payment.capture",
                "payment.capture",
            ],
            ignored: &[Ignored::InIncident, Ignored::InIncident],
            refused: &[],
            incident: None,
        },
        VerbCase {
            name: "the incident stays open without an operator",
            inputs: then(&HAPPY[..4], &[Dead("payment.capture")]),
            status: SagaStatus::Running,
            steps: [Succeeded, Succeeded, Succeeded, Running, Pending],
            emitted: UP_TO_CAPTURE,
            ignored: &[],
            refused: &[],
            incident: Some("capture_payment"),
        },
        VerbCase {
            name: "a late success closes the incident and goes on",
            inputs: then(&HAPPY[..4], &[Dead("payment.capture"), R("payment.captured"), R("inventory.committed")]),
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
            refused: &[],
            incident: None,
        },
        VerbCase {
            name: "before the pivot a dead letter is recoverable (deadlines decide); another command's is late",
            inputs: vec![Start, Dead("inventory.reserve"), R("inventory.reserved"), Dead("inventory.reserve")],
            status: SagaStatus::Running,
            steps: [Succeeded, Running, Pending, Pending, Pending],
            emitted: &["inventory.reserve", "payment.authorize"],
            ignored: &[Ignored::Recoverable, Ignored::Late],
            refused: &[],
            incident: None,
        },
        VerbCase {
            name: "resolve: the step was done by hand, the saga goes on",
            inputs: then(
                &HAPPY[..4],
                &[
                    Dead("payment.capture"),
                    Op(Verb::Resolve, ""),
                    Op(Verb::Resolve, "captured in the console"),
                    R("inventory.committed"),
                ],
            ),
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
            refused: &["note"],
            incident: None,
        },
        VerbCase {
            name: "resolve without an incident is refused",
            inputs: vec![Start, Op(Verb::Resolve, "nothing wrong")],
            status: SagaStatus::Running,
            steps: [Running, Pending, Pending, Pending, Pending],
            emitted: &["inventory.reserve"],
            ignored: &[],
            refused: &["no open incident"],
            incident: None,
        },
        VerbCase {
            name: "compensate before the pivot: the awaited step is abandoned and compensated first",
            inputs: vec![
                Start,
                R("inventory.reserved"),
                Op(Verb::Compensate, "customer cancelled"),
                R("payment.authorized"),
                R("payment.voided"),
                R("inventory.released"),
            ],
            status: SagaStatus::Compensated,
            steps: [Compensated, Compensated, Pending, Pending, Pending],
            emitted: &[
                "inventory.reserve",
                "payment.authorize",
                "payment.void",
                "inventory.release",
                "order.compensated",
            ],
            ignored: &[Ignored::Late],
            refused: &[],
            incident: None,
        },
        VerbCase {
            name: "compensate at the pivot cancels the shipment, then voids and releases",
            inputs: vec![
                Start,
                R("inventory.reserved"),
                R("payment.authorized"),
                Timeout,
                Op(Verb::Compensate, "carrier lost the booking"),
                R("shipping.cancelled"),
                R("payment.voided"),
                R("inventory.released"),
            ],
            status: SagaStatus::Compensated,
            steps: [Compensated, Compensated, Compensated, Pending, Pending],
            emitted: &[
                "inventory.reserve",
                "payment.authorize",
                "shipping.schedule",
                "shipping.schedule",
                "shipping.cancel",
                "payment.void",
                "inventory.release",
                "order.compensated",
            ],
            ignored: &[],
            refused: &[],
            incident: None,
        },
        VerbCase {
            name: "after the pivot, compensate is refused; twice compensating is refused",
            inputs: then(&HAPPY[..4], &[Op(Verb::Compensate, "")]),
            status: SagaStatus::Running,
            steps: [Succeeded, Succeeded, Succeeded, Running, Pending],
            emitted: UP_TO_CAPTURE,
            ignored: &[],
            refused: &["pivot has succeeded"],
            incident: None,
        },
        VerbCase {
            name: "retry during compensation re-sends the compensation; compensate is refused then",
            inputs: vec![
                Start,
                R("inventory.reserved"),
                R("payment.declined"),
                Op(Verb::Retry, ""),
                Op(Verb::Compensate, ""),
            ],
            status: SagaStatus::Compensating,
            steps: [Compensating, Failed, Pending, Pending, Pending],
            emitted: &["inventory.reserve", "payment.authorize", "inventory.release", "inventory.release"],
            ignored: &[],
            refused: &["COMPENSATING"],
            incident: None,
        },
        VerbCase {
            name: "every verb on a COMPLETED saga is refused",
            inputs: then(HAPPY, &[Op(Verb::Retry, ""), Op(Verb::Compensate, ""), Op(Verb::Resolve, "x")]),
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
            refused: &["nothing to retry", "only a RUNNING saga", "nothing to resolve"],
            incident: None,
        },
        VerbCase {
            name: "resolve a FAILED saga: what failed was undone by hand, COMPENSATED, no second event",
            inputs: then(&failed_void, &[Op(Verb::Retry, ""), Op(Verb::Resolve, "voided in the gateway console")]),
            status: SagaStatus::Compensated,
            steps: [Compensated, Compensated, Failed, Pending, Pending],
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
            refused: &["FAILED"],
            incident: None,
        },
    ]
}

#[test]
fn dead_letters_and_operator_verbs() {
    for c in verb_cases() {
        let r = run(&c.inputs);
        let s = r.state.as_ref().unwrap_or_else(|| panic!("{}: no state", c.name));
        assert_eq!(s.status, c.status, "{}", c.name);
        assert_eq!(statuses(&r), c.steps, "{}", c.name);
        assert_eq!(r.emitted, c.emitted, "{}", c.name);
        assert_eq!(r.ignored, c.ignored, "{}", c.name);
        assert_eq!(r.refused.len(), c.refused.len(), "{}: {:?}", c.name, r.refused);
        for (got, want) in r.refused.iter().zip(c.refused) {
            assert!(got.contains(want), "{}: {got:?} should say {want:?}", c.name);
        }
        assert_eq!(s.incident.as_ref().map(|i| i.step.as_str()), c.incident, "{}", c.name);
    }
}

#[test]
fn an_incident_says_what_was_dead_lettered_or_how_often_it_was_sent() {
    let mut inputs = HAPPY[..4].to_vec();
    inputs.push(Dead("payment.capture"));
    let i = run(&inputs).state.unwrap().incident.unwrap();
    assert_eq!(i.step, "capture_payment");
    assert_eq!(i.reason, "payment.capture was dead-lettered to x.commands.dlq (refused)");
    assert_eq!(i.dead_letter.unwrap().message_type, "payment.capture");
    let i = run(&[Start, R("inventory.reserved"), R("payment.authorized"), Timeout, Timeout, Timeout, Timeout])
        .state
        .unwrap()
        .incident
        .unwrap();
    assert_eq!(
        (i.step.as_str(), i.reason.as_str()),
        ("schedule_shipment", "schedule_shipment unanswered after 4 attempts")
    );
    assert_eq!(i.dead_letter, None);
}

#[test]
fn a_retry_starts_a_fresh_round_of_attempts_with_the_same_key() {
    let mut inputs = HAPPY[..4].to_vec();
    inputs.extend([Timeout, Timeout, Timeout, Op(Verb::Retry, "gateway fixed")]);
    let r = run(&inputs);
    let s = r.state.unwrap();
    assert_eq!(s.incident, None);
    assert_eq!(s.attempt, 1, "a fresh round");
    assert_eq!(s.steps[3].attempts, 5, "the step's sends are still counted");
    assert_eq!(r.attempts[3..], [1, 2, 3, 4, 1]);
    assert!(r.keys[3..].iter().all(|k| k == &r.keys[3]));
}

#[test]
fn version_1_cannot_cancel_its_pivot() {
    let v1 = OrderSaga::VERSIONS[0];
    let r = run_on(&v1, &[Start, R("inventory.reserved"), R("payment.authorized"), Op(Verb::Compensate, "")]);
    assert_eq!(r.refused.len(), 1);
    assert!(r.refused[0].contains("order v1 cannot cancel its pivot"), "{:?}", r.refused);
    // Before the pivot it compensates like v2.
    let r = run_on(
        &v1,
        &[Start, R("inventory.reserved"), Op(Verb::Compensate, ""), R("payment.voided"), R("inventory.released")],
    );
    assert_eq!(r.state.unwrap().status, SagaStatus::Compensated);
}

#[test]
fn a_state_that_does_not_fit_its_definition_opens_an_incident_and_never_panics() {
    let s = run(&[Start, R("inventory.reserved")]).state.unwrap();
    let id = Uuid::from_u128(7);
    let rep = reply("payment.authorized", id);
    let inputs =
        [Input::Reply { message_type: "payment.authorized", reply: &rep }, Input::Timeout { attempt: s.attempt }];
    let mut short = s.clone();
    short.steps.truncate(2);
    let mut past = s.clone();
    past.step = 9;
    let mut renamed = s.clone();
    renamed.steps[1].name = "pay".into();
    for broken in [short, past, renamed] {
        for input in inputs {
            let Decision::Applied { state, effects, .. } =
                transition(&ORDER, &POLICY, id, &order(), Some(&broken), input)
            else {
                panic!("expected an incident for {broken:?}");
            };
            assert!(state.incident.is_some());
            assert_eq!(effects, vec![Effect::ClearDeadline]);
            let again = transition(&ORDER, &POLICY, id, &order(), Some(&state), input);
            assert_eq!(again, Decision::Ignored(Ignored::InIncident));
        }
        let verb = Input::Operator { verb: Verb::Retry, actor: "alice", note: "" };
        assert!(matches!(transition(&ORDER, &POLICY, id, &order(), Some(&broken), verb), Decision::Refused(_)));
    }
}

#[test]
fn an_unknown_definition_is_an_incident_once_and_refuses_verbs() {
    let s = run(&[Start]).state.unwrap();
    let timeout = Input::Timeout { attempt: 1 };
    let Decision::Applied { state, effects, note } = undriveable(&s, &timeout, "order v9 is unknown".into()) else {
        panic!("an incident");
    };
    assert_eq!(state.incident.as_ref().map(|i| i.reason.as_str()), Some("order v9 is unknown"));
    assert_eq!(effects, vec![Effect::ClearDeadline]);
    assert!(note.contains("reserve_inventory"));
    assert_eq!(undriveable(&state, &timeout, "x".into()), Decision::Ignored(Ignored::InIncident));
    let verb = Input::Operator { verb: Verb::Resolve, actor: "alice", note: "n" };
    assert!(matches!(undriveable(&s, &verb, "x".into()), Decision::Refused(_)));
}

#[test]
fn salvage_undoes_what_the_timeline_shows_held_and_nothing_past_the_pivot() {
    let id = Uuid::from_u128(7);
    let types = |s: &Salvage| -> Vec<&str> {
        s.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Send { command, .. } => Some(command.message_type()),
                _ => None,
            })
            .collect()
    };
    let sent = ["inventory.reserve", "payment.authorize"];
    let s = salvage(&ORDER, id, &sent, &["inventory.reserved"]);
    assert_eq!(types(&s), ["payment.void", "inventory.release"], "newest first; the unanswered authorize too");
    assert_eq!(s.effects.last(), Some(&Effect::ClearDeadline));
    let s = salvage(&ORDER, id, &sent, &["inventory.reserved", "payment.declined"]);
    assert_eq!(types(&s), ["inventory.release"], "a declined payment holds nothing");
    let s = salvage(&ORDER, id, &["inventory.reserve"], &["inventory.rejected"]);
    assert!(types(&s).is_empty());
    assert_eq!(s.note, "its timeline shows nothing held");
    let all = ["inventory.reserve", "payment.authorize", "shipping.schedule"];
    let s = salvage(&ORDER, id, &all, &["inventory.reserved", "payment.authorized"]);
    assert_eq!(types(&s), ["shipping.cancel", "payment.void", "inventory.release"]);
    let s = salvage(&ORDER, id, &all, &["inventory.reserved", "payment.authorized", "shipping.scheduled"]);
    assert!(types(&s).is_empty(), "past the pivot nothing is undone");
    assert!(s.note.contains("finish it by hand"));
    let s = salvage(&ORDER, id, &sent, &["inventory.reserved", "inventory.released"]);
    assert_eq!(types(&s), ["payment.void"], "what was compensated already is not sent again");
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
        &ORDER,
        &POLICY,
        id,
        &order(),
        None,
        Input::Reply { message_type: "inventory.reserved", reply: &rep },
    );
    assert_eq!(d, Decision::Ignored(Ignored::Unexpected));
    let d = transition(&ORDER, &POLICY, id, &order(), None, Input::Timeout { attempt: 1 });
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
    fn version(&self) -> u32 {
        1
    }
    fn undo(&self, saga_id: Uuid, step: &StepDef) -> Option<Command> {
        ORDER.undo(saga_id, step)
    }
    fn steps(&self) -> &'static [StepDef] {
        RETRIABLE_WITH_FAILURE
    }
    fn command(&self, saga_id: Uuid, step: &StepDef, action: Action, data: &OrderRequest) -> Command {
        ORDER.command(saga_id, step, action, data)
    }
    fn completed_event(&self, saga_id: Uuid, data: &OrderRequest) -> Event {
        ORDER.completed_event(saga_id, data)
    }
    fn compensated_event(&self, saga_id: Uuid, data: &OrderRequest, reason: &str) -> Event {
        ORDER.compensated_event(saga_id, data, reason)
    }
    fn failed_event(&self, saga_id: Uuid, data: &OrderRequest, reason: &str) -> Event {
        ORDER.failed_event(saga_id, data, reason)
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
        (vec![step("a", P, 0, true), step("b", R, 1, true)], E::CompensationOnRetriable("b")),
        (vec![step("a", C, 0, true), step("a", P, 1, false)], E::DuplicateStepName("a")),
        (vec![step("a", C, 0, true), step("b", P, 0, false)], E::TypeUsedTwice("a.c")),
    ];
    for (steps, want) in cases {
        assert_eq!(validate(&steps), Err(want.clone()), "{want}");
    }
    assert_eq!(validate(&[step("a", C, 0, true), step("b", P, 1, false), step("c", R, 2, false)]), Ok(()));
    assert_eq!(validate(ORDER_STEPS), Ok(()));
}

#[test]
fn how_a_saga_ended_is_a_bounded_label() {
    let outcome = |inputs: &[In]| run(inputs).state.unwrap().outcome().to_owned();
    assert_eq!(outcome(HAPPY), "completed");
    assert_eq!(outcome(&[Start, R("inventory.rejected")]), "inventory.rejected");
    assert_eq!(
        outcome(&[Start, R("inventory.reserved"), R("payment.declined"), R("inventory.released")]),
        "payment.declined"
    );
    assert_eq!(outcome(&[Start, Timeout, Timeout, Timeout, R("inventory.released")]), "timeout");
    assert_eq!(outcome(&[Start, Op(Verb::Compensate, "x"), R("inventory.released")]), "operator");
    assert_eq!(
        outcome(&[Start, R("inventory.reserved"), R("payment.declined"), Timeout, Timeout]),
        "compensation_failed"
    );
}
