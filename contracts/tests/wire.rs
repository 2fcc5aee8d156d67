//! Golden JSON fixtures for every message, and the generated RabbitMQ definitions and users files.
//!
//! Each fixture in `tests/fixtures/<type>.json` is the exact body a v1 producer writes. The test
//! decodes it, re-encodes it and compares, so a change to a wire type that would break a reader
//! in the field fails here first. Set `UPDATE_FIXTURES=1` to (re)write missing fixtures.

use std::path::PathBuf;

use contracts::commands::*;
use contracts::events::*;
use contracts::notices::{DeadLettered, Waiting};
use contracts::order::{Address, StockLine};
use contracts::replies::*;
use contracts::topology::{QueueType, Topology};
use contracts::{Command, DecodeError, Event, Message, Notice, Reply};
use uuid::Uuid;

fn order_id() -> Uuid {
    Uuid::parse_str("01936f3e-6a4b-7c2d-9e8f-0123456789ab").unwrap()
}

fn address() -> Address {
    Address {
        name: "Ada Lovelace".into(),
        line1: "1 Main St".into(),
        line2: None,
        city: "Berlin".into(),
        postal_code: "10115".into(),
        country: "DE".into(),
    }
}

fn lines() -> Vec<StockLine> {
    vec![StockLine { sku: "SKU-0001".into(), quantity: 2 }]
}

fn commands() -> Vec<Command> {
    let order_id = order_id();
    vec![
        Command::ReserveInventory(ReserveInventory { order_id, items: lines() }),
        Command::ReleaseInventory(ReleaseInventory { order_id }),
        Command::CommitInventory(CommitInventory { order_id }),
        Command::AuthorizePayment(AuthorizePayment {
            order_id,
            customer_id: "c-42".into(),
            amount_cents: 3998,
            currency: "EUR".into(),
        }),
        Command::VoidPayment(VoidPayment { order_id }),
        Command::CapturePayment(CapturePayment { order_id }),
        Command::ScheduleShipment(ScheduleShipment { order_id, address: address(), items: lines() }),
        Command::CancelShipment(CancelShipment { order_id }),
    ]
}

fn replies() -> Vec<Reply> {
    let order_id = order_id();
    let rejected = |code: &str| Rejected { order_id, code: code.into(), reason: format!("{code} (example)") };
    vec![
        Reply::InventoryReserved(InventoryReserved { order_id }),
        Reply::InventoryRejected(rejected("out_of_stock")),
        Reply::InventoryReleased(Done { order_id }),
        Reply::InventoryCommitted(Done { order_id }),
        Reply::PaymentAuthorized(PaymentAuthorized { order_id, authorization_id: "auth-1".into() }),
        Reply::PaymentDeclined(rejected("limit_exceeded")),
        Reply::PaymentVoided(Done { order_id }),
        Reply::PaymentCaptured(Done { order_id }),
        Reply::ShipmentScheduled(ShipmentScheduled {
            order_id,
            shipment_id: order_id,
            tracking_number: "TRK-1".into(),
        }),
        Reply::ShipmentRejected(rejected("unsupported_destination")),
        Reply::ShipmentCancelled(Done { order_id }),
    ]
}

fn events() -> Vec<Event> {
    let order_id = order_id();
    vec![
        Event::OrderCompleted(OrderCompleted {
            order_id,
            customer_id: "c-42".into(),
            total_cents: 3998,
            currency: "EUR".into(),
        }),
        Event::OrderCompensated(OrderCompensated {
            order_id,
            customer_id: "c-42".into(),
            reason: "payment declined".into(),
        }),
        Event::OrderFailed(OrderFailed { order_id, customer_id: "c-42".into(), reason: "void timed out".into() }),
    ]
}

fn notices() -> Vec<Notice> {
    let at = chrono::DateTime::parse_from_rfc3339("2026-11-25T10:00:00Z").unwrap().with_timezone(&chrono::Utc);
    vec![
        Notice::Waiting(Waiting {
            queue: "payment.commands".into(),
            message_id: order_id(),
            message_type: "payment.authorize".into(),
            reason: "payment_gateway circuit open since 2026-11-25T10:00:00Z".into(),
            since: at,
        }),
        Notice::DeadLettered(DeadLettered {
            queue: "payment.commands".into(),
            dead_letter_queue: "payment.commands.dlq".into(),
            message_id: order_id(),
            message_type: "payment.capture".into(),
            reason: "retries_exhausted".into(),
            error: "payment_gateway failed after 3 attempts".into(),
        }),
    ]
}

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(format!("{name}.json"))
}

fn check_golden<M: Message + PartialEq + std::fmt::Debug>(messages: Vec<M>) {
    let mut seen: Vec<&str> = messages.iter().map(|m| m.message_type()).collect();
    seen.sort_unstable();
    let mut all = M::all_types().to_vec();
    all.sort_unstable();
    assert_eq!(seen, all, "every message type needs a golden fixture");
    for message in messages {
        let ty = message.message_type();
        let path = fixture_path(ty);
        let encoded: serde_json::Value = serde_json::from_slice(&message.encode()).unwrap();
        if !path.exists() && std::env::var_os("UPDATE_FIXTURES").is_some() {
            std::fs::write(&path, serde_json::to_string_pretty(&encoded).unwrap() + "\n").unwrap();
        }
        let golden = std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()));
        let decoded = M::decode(ty, 1, &golden).unwrap_or_else(|e| panic!("{ty}: {e}"));
        assert_eq!(decoded, message, "{ty}: fixture decodes to a different value");
        let golden_value: serde_json::Value = serde_json::from_slice(&golden).unwrap();
        assert_eq!(encoded, golden_value, "{ty}: encoding drifted from the fixture");
    }
}

#[test]
fn commands_match_their_golden_fixtures() {
    check_golden(commands());
}

#[test]
fn replies_match_their_golden_fixtures() {
    check_golden(replies());
}

#[test]
fn events_match_their_golden_fixtures() {
    check_golden(events());
}

#[test]
fn notices_match_their_golden_fixtures() {
    check_golden(notices());
}

#[test]
fn unknown_type_missing_field_and_future_schema_are_refused() {
    assert!(matches!(Command::decode("inventory.explode", 1, b"{}"), Err(DecodeError::UnknownType(_))));
    assert!(matches!(Command::decode("inventory.release", 1, b"{}"), Err(DecodeError::Body { .. })));
    assert!(matches!(Command::decode("inventory.release", 1, b"not json"), Err(DecodeError::Body { .. })));
    let body = Command::ReleaseInventory(ReleaseInventory { order_id: order_id() }).encode();
    assert!(matches!(Command::decode("inventory.release", 99, &body), Err(DecodeError::UnsupportedSchemaVersion(99))));
    // A reply type is not a command.
    assert!(matches!(Command::decode("inventory.reserved", 1, &body), Err(DecodeError::UnknownType(_))));
}

#[test]
fn additive_fields_are_tolerated_by_readers() {
    let body = br#"{"order_id":"01936f3e-6a4b-7c2d-9e8f-0123456789ab","added_later":true}"#;
    assert!(Command::decode("inventory.release", 1, body).is_ok());
    // Nested values too: an address with a field added later still decodes.
    let schedule =
        Command::ScheduleShipment(ScheduleShipment { order_id: order_id(), address: address(), items: lines() });
    let mut json: serde_json::Value = serde_json::from_slice(&schedule.encode()).unwrap();
    json["address"]["state_code"] = "BE".into();
    let decoded = Command::decode("shipping.schedule", 1, json.to_string().as_bytes()).unwrap();
    assert_eq!(decoded, schedule);
}

#[test]
fn an_order_request_refuses_unknown_fields_at_every_level() {
    let order = serde_json::json!({"customer_id": "c-42", "currency": "EUR",
        "items": [{"sku": "SKU-0001", "quantity": 2, "unit_price_cents": 1999}],
        "shipping_address": {"name": "Ada", "line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"}});
    assert!(serde_json::from_value::<contracts::order::OrderRequest>(order.clone()).is_ok());
    for (pointer, field) in [("", "coupon"), ("/items/0", "colour"), ("/shipping_address", "state_code")] {
        let mut bad = order.clone();
        bad.pointer_mut(pointer).unwrap()[field] = "x".into();
        let err = serde_json::from_value::<contracts::order::OrderRequest>(bad).unwrap_err().to_string();
        assert!(err.contains(field), "{pointer}: {err}");
    }
}

/// Found by Schemathesis: `"quantity": 9999.0` is an integer as JSON Schema (and the order's
/// OpenAPI document) sees it, and was refused.
#[test]
fn an_order_request_takes_whole_numbers_however_written() {
    let order = |quantity: &str, price: &str| {
        let text = format!(
            r#"{{"customer_id": "c-42", "currency": "EUR",
                "items": [{{"sku": "SKU-0001", "quantity": {quantity}, "unit_price_cents": {price}}}],
                "shipping_address": {{"name": "Ada", "line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"}}}}"#
        );
        serde_json::from_str::<contracts::order::OrderRequest>(&text)
            .map(|o| (o.items[0].quantity, o.items[0].unit_price_cents))
    };
    assert_eq!(order("2", "1999").unwrap(), (2, 1999));
    assert_eq!(order("9999.0", "1.999e3").unwrap(), (9999, 1999));
    assert_eq!(order("-0.0", "-5.0").unwrap(), (0, -5));
    for (quantity, price) in
        [("2.5", "1"), ("1", "0.1"), ("-1", "1"), ("4294967296", "1"), ("1e300", "1"), ("\"2\"", "1")]
    {
        assert!(order(quantity, price).is_err(), "{quantity} {price}");
    }
}

#[test]
fn commands_route_to_their_participant() {
    for c in commands() {
        assert!(c.message_type().starts_with(c.participant()));
    }
}

/// `infra/deploy/rabbitmq/<name>` equals `generated` (written first with `UPDATE_FIXTURES=1`).
fn check_deploy_file(name: &str, generated: &serde_json::Value) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../infra/deploy/rabbitmq").join(name);
    let text = serde_json::to_string_pretty(generated).unwrap() + "\n";
    if std::env::var_os("UPDATE_FIXTURES").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
    }
    let on_disk = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_FIXTURES=1 to generate)", path.display()));
    let on_disk: serde_json::Value = serde_json::from_str(&on_disk).unwrap();
    assert_eq!(
        &on_disk, generated,
        "infra/deploy/rabbitmq/{name} drifted from contracts::topology; regenerate with UPDATE_FIXTURES=1 cargo test -p contracts"
    );
}

#[test]
fn deploy_definitions_file_equals_the_code() {
    check_deploy_file("definitions.json", &Topology::new(QueueType::Classic, 5).definitions_json("/"));
}

#[test]
fn deploy_users_file_equals_the_code() {
    check_deploy_file("users.json", &Topology::new(QueueType::Classic, 5).users_json("/"));
}
