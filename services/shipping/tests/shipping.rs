//! The shipping service on the real broker and database: schedule, refuse unsupported or
//! non-ISO 3166-1 destinations, one shipment per order whatever the duplicates; cancel by the
//! booking's key, before or after the carrier booked, and refuse the late schedule; a carrier
//! refusal is a rejection; a lost answer is recovered.

use std::time::Duration;

use contracts::commands::{CancelShipment, ScheduleShipment};
use contracts::order::{Address, StockLine};
use contracts::topology::REPLIES_EXCHANGE;
use contracts::{Command, Reply};
use infra::amqp::{Broker, Publisher};
use infra::config::Settings;
use infra::testing::{Tap, TestDb, TestVhost, command, spawn_app};
use shipping::ShippingSettings;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(15);

fn schedule(order_id: Uuid, country: &str) -> Command {
    Command::ScheduleShipment(ScheduleShipment {
        order_id,
        address: Address {
            name: "A".into(),
            line1: "1 Main St".into(),
            line2: None,
            city: "Berlin".into(),
            postal_code: "10115".into(),
            country: country.into(),
        },
        items: vec![StockLine { sku: "SKU-0001".into(), quantity: 1 }],
    })
}

#[tokio::test]
async fn schedules_once_and_refuses_what_it_cannot_serve() {
    let (vhost, db) = tokio::join!(TestVhost::create("shipping"), TestDb::create("shipping"));
    let carrier = outside::Server::bind("carrier", "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let carrier_url = format!("http://{}", carrier.local_addr());
    tokio::spawn(carrier.run(infra::CancellationToken::new()));
    let app = shipping::build(ShippingSettings::for_tests(
        Settings::for_tests("shipping", &vhost.amqp_url, &db.url),
        &carrier_url,
    ))
    .await
    .expect("shipping starts");
    let base = format!("http://{}", app.local_addr());
    let (token, handle) = spawn_app(app);
    let broker = Broker::new(&vhost.amqp_url, 1, "test").unwrap();
    let publisher = Publisher::new(broker.clone());
    let mut replies = Tap::bind(&broker, REPLIES_EXCHANGE, "shipping.*").await;

    let id = Uuid::now_v7();
    let k = contracts::envelope::idempotency_key(id, "schedule_shipment", "do");
    publisher.publish(&command(id, &schedule(id, "DE"), &k)).await.unwrap();
    let Reply::ShipmentScheduled(first) = replies.next::<Reply>(WAIT).await.1 else { panic!("not scheduled") };
    // A duplicate with another key (a bug upstream) still books nothing new.
    publisher.publish(&command(id, &schedule(id, "DE"), "other-key")).await.unwrap();
    let Reply::ShipmentScheduled(second) = replies.next::<Reply>(WAIT).await.1 else { panic!("not scheduled") };
    assert_eq!(first.shipment_id, second.shipment_id);
    let shipment: serde_json::Value =
        reqwest::get(format!("{base}/shipments/{id}")).await.unwrap().json().await.unwrap();
    assert_eq!(shipment["tracking_number"], first.tracking_number.as_str());

    for (country, code) in
        [("AQ", "unsupported_destination"), ("ZZ", "invalid_destination"), ("Germany", "invalid_destination")]
    {
        let id = Uuid::now_v7();
        publisher
            .publish(&command(
                id,
                &schedule(id, country),
                &contracts::envelope::idempotency_key(id, "schedule_shipment", "do"),
            ))
            .await
            .unwrap();
        match replies.next::<Reply>(WAIT).await.1 {
            Reply::ShipmentRejected(r) => assert_eq!(r.code, code, "{country}"),
            other => panic!("{country}: {other:?}"),
        }
        assert_eq!(reqwest::get(format!("{base}/shipments/{id}")).await.unwrap().status().as_u16(), 404);
    }
    token.cancel();
    handle.await.unwrap().unwrap();
}

struct Env {
    _db: TestDb,
    _vhost: TestVhost,
    carrier: outside::Sim,
    publisher: Publisher,
    replies: Tap,
    token: infra::CancellationToken,
    handle: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn env() -> Env {
    let (vhost, db) = tokio::join!(TestVhost::create("shipping"), TestDb::create("shipping"));
    let carrier = outside::Server::bind("carrier", "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let carrier_url = format!("http://{}", carrier.local_addr());
    let sim = carrier.sim.clone();
    tokio::spawn(carrier.run(infra::CancellationToken::new()));
    let settings = ShippingSettings::for_tests(Settings::for_tests("shipping", &vhost.amqp_url, &db.url), &carrier_url);
    let app = shipping::build(settings).await.expect("shipping starts");
    let (token, handle) = spawn_app(app);
    let broker = Broker::new(&vhost.amqp_url, 1, "test").unwrap();
    let replies = Tap::bind(&broker, REPLIES_EXCHANGE, "shipping.*").await;
    Env { _db: db, _vhost: vhost, carrier: sim, publisher: Publisher::new(broker), replies, token, handle }
}

impl Env {
    async fn send(&mut self, id: Uuid, c: &Command, action: &str) -> Reply {
        let k = contracts::envelope::idempotency_key(id, "schedule_shipment", action);
        self.publisher.publish(&command(id, c, &k)).await.unwrap();
        self.replies.next::<Reply>(WAIT).await.1
    }

    async fn stop(self) {
        self.token.cancel();
        self.handle.await.unwrap().unwrap();
    }
}

fn cancel(order_id: Uuid) -> Command {
    Command::CancelShipment(CancelShipment { order_id })
}

#[tokio::test]
async fn a_cancel_reaches_the_carrier_by_key_before_or_after_the_booking_and_refuses_the_late_schedule() {
    let mut e = env().await;
    // After: the booking exists (the saga never learnt it), the cancel undoes it.
    let booked = Uuid::now_v7();
    assert!(matches!(e.send(booked, &schedule(booked, "DE"), "do").await, Reply::ShipmentScheduled(_)));
    assert_eq!(e.carrier.stats().booked, Some(1));
    assert!(matches!(e.send(booked, &cancel(booked), "compensate").await, Reply::ShipmentCancelled(_)));
    let stats = e.carrier.stats();
    assert_eq!((stats.booked, stats.cancelled), (Some(0), Some(1)), "{stats:?}");
    // Before: nothing booked yet; the cancel leaves tombstones here and at the carrier.
    let late = Uuid::now_v7();
    assert!(matches!(e.send(late, &cancel(late), "compensate").await, Reply::ShipmentCancelled(_)));
    match e.send(late, &schedule(late, "DE"), "do").await {
        Reply::ShipmentRejected(r) => assert_eq!(r.code, "cancelled"),
        other => panic!("{other:?}"),
    }
    assert_eq!(e.carrier.stats().booked, Some(0), "the late schedule booked nothing");
    e.stop().await;
}

#[tokio::test]
async fn a_carrier_refusal_rejects_and_a_lost_answer_books_once() {
    let mut e = env().await;
    let refused = Uuid::now_v7();
    e.carrier.set_behaviour(outside::Behaviour { refused_keys: vec![refused.to_string()], ..Default::default() });
    match e.send(refused, &schedule(refused, "DE"), "do").await {
        Reply::ShipmentRejected(r) => assert_eq!(r.code, "carrier_refused"),
        other => panic!("{other:?}"),
    }
    e.carrier.set_behaviour(outside::Behaviour { ambiguous_rate: 1.0, ..Default::default() });
    for _ in 0..3 {
        let id = Uuid::now_v7();
        assert!(matches!(e.send(id, &schedule(id, "FR"), "do").await, Reply::ShipmentScheduled(_)));
    }
    let stats = e.carrier.stats();
    assert_eq!((stats.booked, stats.ambiguous, stats.operations), (Some(3), 3, 3), "{stats:?}");
    e.stop().await;
}

/// `GET /openapi.json` lists exactly what the router serves; the validator and Schemathesis pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_the_router_and_schemathesis_passes() {
    let (vhost, db) = tokio::join!(TestVhost::create("shipping"), TestDb::create("shipping"));
    let carrier = outside::Server::bind("carrier", "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let carrier_url = format!("http://{}", carrier.local_addr());
    tokio::spawn(carrier.run(infra::CancellationToken::new()));
    let settings = ShippingSettings::for_tests(Settings::for_tests("shipping", &vhost.amqp_url, &db.url), &carrier_url);
    let app = shipping::build(settings).await.expect("shipping starts");
    let base = format!("http://{}", app.local_addr());
    let (token, _handle) = spawn_app(app);
    let routes = [
        ("GET", "/shipments/{order_id}"),
        ("GET", "/shipments"),
        ("GET", "/health/live"),
        ("GET", "/health/ready"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
    ];
    infra::openapi_checks::check_live_document(&base, &routes, None, 30).await;
    token.cancel();
}
