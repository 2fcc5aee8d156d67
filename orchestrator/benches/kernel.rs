//! Criterion benches of the kernel's transition function on the order saga (`cargo bench -p
//! orchestrator --bench kernel`): a whole happy saga's inputs (start and five success replies),
//! and one reply (the payment authorization, from the state that awaits it).

use std::hint::black_box;

use contracts::Reply;
use contracts::order::{Address, OrderItem, OrderRequest};
use contracts::replies::{Done, InventoryReserved, PaymentAuthorized, ShipmentScheduled};
use criterion::{Criterion, criterion_group, criterion_main};
use orchestrator::kernel::{Decision, Input, Policy, SagaState, transition};
use orchestrator::sagas::order::OrderSaga;
use uuid::Uuid;

const POLICY: Policy = Policy { max_attempts: 3, max_compensation_attempts: 10, max_attempts_after_pivot: 5 };

fn order() -> OrderRequest {
    OrderRequest {
        customer_id: "c-42".into(),
        currency: "EUR".into(),
        items: vec![OrderItem { sku: "SKU-0001".into(), quantity: 1, unit_price_cents: 100 }],
        shipping_address: Address {
            name: "Ada Lovelace".into(),
            line1: "1 Main St".into(),
            line2: None,
            city: "Berlin".into(),
            postal_code: "10115".into(),
            country: "DE".into(),
        },
    }
}

/// The five success replies of a happy saga, in order, with their types.
fn happy_replies(id: Uuid) -> Vec<(&'static str, Reply)> {
    vec![
        ("inventory.reserved", Reply::InventoryReserved(InventoryReserved { order_id: id })),
        (
            "payment.authorized",
            Reply::PaymentAuthorized(PaymentAuthorized { order_id: id, authorization_id: "auth-1".into() }),
        ),
        (
            "shipping.scheduled",
            Reply::ShipmentScheduled(ShipmentScheduled { order_id: id, shipment_id: id, tracking_number: "T1".into() }),
        ),
        ("payment.captured", Reply::PaymentCaptured(Done { order_id: id })),
        ("inventory.committed", Reply::InventoryCommitted(Done { order_id: id })),
    ]
}

fn applied(d: Decision) -> SagaState {
    match d {
        Decision::Applied { state, .. } => state,
        other => panic!("the happy path applies every input, got {other:?}"),
    }
}

/// Start, then every reply: the state after each.
fn whole_saga(id: Uuid, data: &OrderRequest, replies: &[(&'static str, Reply)]) -> SagaState {
    let def = OrderSaga::LATEST;
    let mut state = applied(transition(&def, &POLICY, id, data, None, Input::Start));
    for (message_type, reply) in replies {
        state = applied(transition(&def, &POLICY, id, data, Some(&state), Input::Reply { message_type, reply }));
    }
    state
}

fn kernel(c: &mut Criterion) {
    let id = Uuid::from_u128(7);
    let data = order();
    let replies = happy_replies(id);
    c.bench_function("transition/whole happy saga (start + 5 replies)", |b| {
        b.iter(|| whole_saga(black_box(id), black_box(&data), black_box(&replies)))
    });

    let def = OrderSaga::LATEST;
    let awaiting_payment = whole_saga(id, &data, &replies[..1]);
    let (message_type, reply) = &replies[1];
    c.bench_function("transition/one reply (payment.authorized)", |b| {
        b.iter(|| {
            let input = Input::Reply { message_type, reply: black_box(reply) };
            transition(&def, &POLICY, id, black_box(&data), Some(black_box(&awaiting_payment)), input)
        })
    });
}

criterion_group!(benches, kernel);
criterion_main!(benches);
