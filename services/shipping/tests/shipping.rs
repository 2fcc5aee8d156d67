//! The shipping service on the real broker and database: schedule, refuse unsupported or
//! non-ISO 3166-1 destinations, one shipment per order whatever the duplicates.

use std::time::Duration;

use contracts::commands::ScheduleShipment;
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
