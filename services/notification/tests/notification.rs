//! The notification service on the real broker and database: one record per event, however often
//! it is delivered; the read API and its bad-query answer.

use std::time::Duration;

use contracts::events::{OrderCompensated, OrderCompleted};
use contracts::topology::EVENTS_EXCHANGE;
use contracts::{Event, Meta};
use infra::amqp::{Broker, Outgoing, Publisher};
use infra::config::Settings;
use infra::testing::{TestDb, TestVhost, eventually, spawn_app};
use notification::NotificationSettings;
use serde_json::Value;
use uuid::Uuid;

#[tokio::test]
async fn records_each_event_once_and_answers_by_order() {
    let (vhost, db) = tokio::join!(TestVhost::create("notification"), TestDb::create("notification"));
    let app = notification::build(NotificationSettings::for_tests(Settings::for_tests(
        "notification",
        &vhost.amqp_url,
        &db.url,
    )))
    .await
    .expect("notification starts");
    let base = format!("http://{}", app.local_addr());
    let (token, handle) = spawn_app(app);
    let publisher = Publisher::new(Broker::new(&vhost.amqp_url, 1, "test").unwrap());

    let id = Uuid::now_v7();
    let done = Event::OrderCompleted(OrderCompleted {
        order_id: id,
        customer_id: "c-1".into(),
        total_cents: 3998,
        currency: "EUR".into(),
    });
    let msg = Outgoing::new(EVENTS_EXCHANGE, false, Meta::new(id, "order.completed"), &done);
    publisher.publish(&msg).await.unwrap();
    publisher.publish(&msg).await.unwrap();
    let other = Uuid::now_v7();
    let cancelled = Event::OrderCompensated(OrderCompensated {
        order_id: other,
        customer_id: "c-1".into(),
        reason: "payment.declined: over the limit".into(),
    });
    publisher
        .publish(&Outgoing::new(EVENTS_EXCHANGE, false, Meta::new(other, "order.compensated"), &cancelled))
        .await
        .unwrap();

    let get = |o: Uuid| {
        let base = base.clone();
        async move {
            reqwest::get(format!("{base}/notifications?order_id={o}"))
                .await
                .unwrap()
                .json::<Vec<Value>>()
                .await
                .unwrap()
        }
    };
    let c = eventually("cancellation recorded", Duration::from_secs(15), || async {
        let n = get(other).await;
        (!n.is_empty()).then_some(n)
    })
    .await;
    assert_eq!(c[0]["kind"], "cancellation");
    assert_eq!(c[0]["reason"], "payment.declined: over the limit");
    // Wait until the second copy was recognised as a duplicate, then count.
    eventually("duplicate recognised", Duration::from_secs(15), || async {
        let m = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
        m.contains("saga_messages_duplicate_total{queue=\"notification.events\"} 1").then_some(())
    })
    .await;
    let n = get(id).await;
    assert_eq!(n.len(), 1, "one confirmation for two deliveries: {n:?}");
    assert_eq!(n[0]["kind"], "confirmation");
    for bad in ["", "?order_id=", "?order_id=42"] {
        let r = reqwest::get(format!("{base}/notifications{bad}")).await.unwrap();
        assert_eq!(r.status().as_u16(), 400, "{bad}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    token.cancel();
    handle.await.unwrap().unwrap();
}

/// `GET /openapi.json` lists exactly what the router serves; the validator and Schemathesis pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_the_router_and_schemathesis_passes() {
    let (vhost, db) = tokio::join!(TestVhost::create("notification"), TestDb::create("notification"));
    let settings = NotificationSettings::for_tests(Settings::for_tests("notification", &vhost.amqp_url, &db.url));
    let app = notification::build(settings).await.expect("notification starts");
    let base = format!("http://{}", app.local_addr());
    let (token, _handle) = spawn_app(app);
    let routes = [
        ("GET", "/notifications"),
        ("GET", "/health/live"),
        ("GET", "/health/ready"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
    ];
    infra::openapi_checks::check_live_document(&base, &routes, None, 30).await;
    token.cancel();
}
