//! Criterion benches of the envelope (`cargo bench -p infra --bench codec`): `Meta` to AMQP
//! properties and headers (`Outgoing::properties`) and back (`Incoming::meta`), for a command
//! carrying every header (causation, traceparent, idempotency key).

use std::hint::black_box;

use contracts::commands::CommitInventory;
use contracts::{Command, Meta};
use criterion::{Criterion, criterion_group, criterion_main};
use infra::amqp::{Incoming, Outgoing};
use uuid::Uuid;

fn outgoing() -> Outgoing {
    let saga = Uuid::from_u128(7);
    let command = Command::CommitInventory(CommitInventory { order_id: saga });
    let meta = Meta::new(saga, "inventory.commit")
        .caused_by(Uuid::from_u128(8))
        .with_idempotency_key(contracts::envelope::idempotency_key(saga, "commit_inventory", "do"))
        .with_attempt(2);
    Outgoing::new(contracts::topology::COMMANDS_EXCHANGE, true, meta, &command)
}

fn envelope(c: &mut Criterion) {
    let out = outgoing();
    c.bench_function("meta/to AMQP properties", |b| b.iter(|| black_box(&out).properties()));
    let incoming = Incoming {
        exchange: out.exchange.clone(),
        routing_key: out.routing_key.clone(),
        redelivered: false,
        properties: out.properties(),
        body: out.body.clone(),
    };
    let back = incoming.meta().map(|m| (m.message_id, m.idempotency_key));
    assert_eq!(back.ok(), Some((out.meta.message_id, out.meta.idempotency_key.clone())), "a faithful round trip");
    c.bench_function("meta/from AMQP properties", |b| b.iter(|| black_box(&incoming).meta()));
}

criterion_group!(benches, envelope);
criterion_main!(benches);
