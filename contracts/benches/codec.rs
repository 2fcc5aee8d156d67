//! Criterion benches of message bodies (`cargo bench -p contracts --bench codec`): encode and
//! decode of the largest command (`shipping.schedule`, with an address and items) and of a
//! reply (`payment.authorized`).

use std::hint::black_box;

use contracts::commands::ScheduleShipment;
use contracts::order::{Address, StockLine};
use contracts::replies::PaymentAuthorized;
use contracts::{Command, Message, Reply, SCHEMA_VERSION};
use criterion::{Criterion, criterion_group, criterion_main};
use uuid::Uuid;

fn schedule() -> Command {
    Command::ScheduleShipment(ScheduleShipment {
        order_id: Uuid::from_u128(7),
        address: Address {
            name: "Ada Lovelace".into(),
            line1: "1 Main St".into(),
            line2: Some("Flat 2".into()),
            city: "Berlin".into(),
            postal_code: "10115".into(),
            country: "DE".into(),
        },
        items: (1..=3).map(|i| StockLine { sku: format!("SKU-{i:04}"), quantity: i }).collect(),
    })
}

fn authorized() -> Reply {
    Reply::PaymentAuthorized(PaymentAuthorized { order_id: Uuid::from_u128(7), authorization_id: "auth-0190".into() })
}

fn bodies(c: &mut Criterion) {
    let command = schedule();
    let command_body = command.encode();
    c.bench_function("command/encode shipping.schedule", |b| b.iter(|| black_box(&command).encode()));
    c.bench_function("command/decode shipping.schedule", |b| {
        b.iter(|| Command::decode("shipping.schedule", SCHEMA_VERSION, black_box(&command_body)))
    });
    let reply = authorized();
    let reply_body = reply.encode();
    c.bench_function("reply/encode payment.authorized", |b| b.iter(|| black_box(&reply).encode()));
    c.bench_function("reply/decode payment.authorized", |b| {
        b.iter(|| Reply::decode("payment.authorized", SCHEMA_VERSION, black_box(&reply_body)))
    });
}

criterion_group!(benches, bodies);
criterion_main!(benches);
