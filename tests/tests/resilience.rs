//! Failing outside systems and dead letters, end to end: a gateway outage (the breaker opens,
//! sagas wait, nothing is lost), a flaky gateway and carrier (retries, no double charge), a poison
//! command (dead-lettered with its reasons, replayed by an operator, applied once), and the
//! operator API itself.

use std::time::Duration;

use contracts::Command;
use contracts::commands::AuthorizePayment;
use e2e::{Service, TestConfig, TestPlatform, metric, order};
use infra::amqp::{Broker, Publisher};
use infra::resilience::Policy;
use infra::testing::{command, eventually};
use lapin::BasicProperties;
use outside::Behaviour;
use serde_json::{Value, json};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(45);

async fn breaker(p: &TestPlatform) -> String {
    let v: Value =
        p.http.get(format!("{}/health/ready", p.url(Service::Payment))).send().await.unwrap().json().await.unwrap();
    v["checks"]["payment_gateway"]["breaker"].as_str().unwrap_or("").to_owned()
}

async fn payments_of(p: &TestPlatform, order_id: Uuid) -> i64 {
    let pool = infra::db::connect(p.database_url(Service::Payment), 1).await.unwrap();
    sqlx::query_scalar("SELECT count(*) FROM payments WHERE order_id = $1")
        .bind(order_id)
        .fetch_one(&pool)
        .await
        .unwrap()
}
#[tokio::test]
async fn a_gateway_outage_opens_the_breaker_sagas_wait_and_all_complete_after_recovery() {
    let config = TestConfig {
        step_timeout: Duration::from_secs(60),
        dependency_policy: Policy {
            breaker_failures: 3,
            // Long enough that the open period surely covers the checks below.
            breaker_open_min: Duration::from_secs(4),
            breaker_open_max: Duration::from_secs(4),
            attempts: 2,
            retry_base: Duration::from_millis(10),
            retry_max: Duration::from_millis(20),
        },
        retry_delay: Duration::from_millis(100),
        ..TestConfig::default()
    };
    let p = TestPlatform::running(config).await;
    p.gateway.set_behaviour(Behaviour { outage: true, ..Behaviour::default() });
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(p.start_saga(&order(&format!("SKU-000{}", 1 + i % 5), 1, 100, "DE")).await);
    }
    eventually("breaker open", WAIT, || async { (breaker(&p).await == "open").then_some(()) }).await;
    // While it is open, commands keep arriving and waiting, and none reaches the gateway.
    let calls_at_open = p.gateway.stats().calls;
    let payment = p.url(Service::Payment);
    let deferred_at_open = metric(&p.http, &payment, "saga_messages_deferred_total{queue=\"payment.commands\"}").await;
    eventually("commands deferred while open", WAIT, || async {
        let d = metric(&p.http, &payment, "saga_messages_deferred_total{queue=\"payment.commands\"}").await;
        (d >= deferred_at_open + 4.0).then_some(())
    })
    .await;
    assert_eq!(breaker(&p).await, "open", "still open: the checks above ran within its open period");
    assert_eq!(p.gateway.stats().calls, calls_at_open, "no call reached the gateway while its breaker was open");
    let saga = p
        .wait_for(ids[0], "saga shows why it waits", WAIT, |s| {
            s["attention"].as_str().is_some_and(|a| a.contains("payment_gateway circuit open since"))
        })
        .await;
    assert_eq!(saga["status"], "RUNNING");
    assert!(saga["timeline"].as_array().unwrap().iter().any(|e| e["kind"] == "waiting"));
    // Recovery: the breaker half-opens, a call succeeds, it closes; every saga completes.
    p.gateway.set_behaviour(Behaviour::default());
    for id in &ids {
        let s = p.wait_for_status(*id, "COMPLETED", WAIT).await;
        assert!(s["attention"].is_null());
        assert_eq!(payments_of(&p, *id).await, 1);
    }
    assert_eq!(breaker(&p).await, "closed");
    assert!(
        metric(
            &p.http,
            &payment,
            "saga_circuit_breaker_transitions_total{dependency=\"payment_gateway\",state=\"open\"}"
        )
        .await
            >= 1.0
    );
    assert!(
        metric(
            &p.http,
            &payment,
            "saga_circuit_breaker_transitions_total{dependency=\"payment_gateway\",state=\"closed\"}"
        )
        .await
            >= 1.0
    );
    assert_eq!(p.gateway.stats().operations, 16, "one authorization and one capture per order");
    p.shutdown().await;
}

#[tokio::test]
async fn a_flaky_gateway_and_carrier_still_end_every_saga_without_double_charges() {
    let p = TestPlatform::running(TestConfig { retry_delay: Duration::from_millis(50), ..TestConfig::default() }).await;
    let flaky = Behaviour { error_rate: 0.3, ..Behaviour::default() };
    p.gateway.set_behaviour(flaky.clone());
    p.carrier.set_behaviour(flaky);
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(p.start_saga(&order(&format!("SKU-000{}", 1 + i % 9), 1, 100, "DE")).await);
    }
    for id in &ids {
        p.wait_for_status(*id, "COMPLETED", WAIT).await;
        assert_eq!(payments_of(&p, *id).await, 1);
    }
    assert_eq!(p.gateway.stats().operations, 60, "one authorization and one capture per order, however often retried");
    assert_eq!(p.carrier.stats().operations, 30);
    assert!(p.gateway.stats().errors > 0);
    let retries =
        metric(&p.http, &p.url(Service::Payment), "saga_dependency_retries_total{dependency=\"payment_gateway\"}")
            .await;
    assert!(retries > 0.0, "retries are counted");
    p.shutdown().await;
}

#[tokio::test]
async fn a_poison_command_is_dead_lettered_with_its_reasons_and_an_operator_replay_applies_it_once() {
    let config = TestConfig {
        step_timeout: Duration::from_secs(120),
        max_step_timeout: Duration::from_secs(120),
        max_retry_rounds: 2,
        ..TestConfig::fast_dead_letters()
    };
    let p = TestPlatform::running(config).await;
    // Every authorization fails with a 500: transient, so retried in-process, then in delayed rounds.
    p.gateway.set_behaviour(Behaviour { failing_keys: vec![":authorize".into()], ..Behaviour::default() });
    let id = p.start_saga(&order("SKU-0003", 1, 100, "DE")).await;
    eventually("command dead-lettered", WAIT, || async {
        (p.dlq_depth("payment.commands.dlq").await == 1).then_some(())
    })
    .await;
    let page: Value = p.admin_get("/admin/dlq/payment.commands.dlq/messages").await.json().await.unwrap();
    let m = &page["items"][0];
    assert_eq!(m["type"], "payment.authorize");
    assert_eq!(m["saga_id"], id.to_string());
    assert_eq!(m["reason"], "retries_exhausted");
    assert_eq!(m["source_queue"], "payment.commands");
    assert_eq!(m["attempts"], 3, "the first delivery and two delayed rounds");
    assert!(m["error"].as_str().unwrap().contains("payment_gateway"));
    assert!(m["first_failure_at"].is_string() && m["last_failure_at"].is_string());
    assert_eq!(m["original_exchange"], "saga.commands");
    assert_eq!(m["original_routing_key"], "payment.authorize");
    let saga = p
        .wait_for(id, "saga shows its command in the DLQ", WAIT, |s| {
            s["attention"].as_str().is_some_and(|a| a.contains("payment.commands.dlq"))
        })
        .await;
    assert_eq!(saga["status"], "RUNNING");

    // The cause is fixed; an operator replays it; the saga completes.
    p.gateway.set_behaviour(Behaviour::default());
    let r: Value = p
        .admin_post("/admin/dlq/payment.commands.dlq/replay", json!({"filter": {"saga_id": id.to_string()}}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["replayed"], 1, "{r}");
    let saga = p.wait_for_status(id, "COMPLETED", WAIT).await;
    assert!(
        saga["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "operator" && e["note"].as_str().unwrap().contains("alice"))
    );
    // Replaying again finds nothing; a duplicate of the command (a second replay from elsewhere)
    // is recognised by payment's inbox and changes nothing.
    let again: Value =
        p.admin_post("/admin/dlq/payment.commands.dlq/replay", json!({"all": true})).await.json().await.unwrap();
    assert_eq!(again["replayed"], 0);
    let publisher = Publisher::new(Broker::new(&p.vhost.amqp_url, 1, "test").unwrap());
    let cmd = Command::AuthorizePayment(AuthorizePayment {
        order_id: id,
        customer_id: "c-42".into(),
        amount_cents: 100,
        currency: "EUR".into(),
    });
    publisher
        .publish(&command(id, &cmd, &contracts::envelope::idempotency_key(id, "authorize_payment", "do")))
        .await
        .unwrap();
    eventually("duplicate recognised", WAIT, || async {
        let d = metric(&p.http, &p.url(Service::Payment), "saga_messages_duplicate_total{queue=\"payment.commands\"}")
            .await;
        (d >= 1.0).then_some(())
    })
    .await;
    assert_eq!(payments_of(&p, id).await, 1);
    assert_eq!(p.gateway.stats().operations, 2, "authorized once, captured once");
    let audit: Value = p.admin_get("/admin/audit").await.json().await.unwrap();
    let entry = &audit["items"][0];
    assert_eq!((entry["actor"].as_str(), entry["action"].as_str()), (Some("alice"), Some("replay")));
    assert_eq!(entry["saga_id"], id.to_string());
    p.shutdown().await;
}

#[tokio::test]
async fn the_operator_api_refuses_strangers_pages_without_consuming_and_audits_discards() {
    let p = TestPlatform::running(TestConfig::default()).await;
    let base = p.url(Service::Orchestrator);
    for auth in [None, Some("Bearer wrong-token-123"), Some("alice-secret-token")] {
        let mut req = p.http.get(format!("{base}/admin/dlq"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "{auth:?}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    let r = p
        .http
        .post(format!("{base}/admin/dlq/payment.commands.dlq/discard"))
        .json(&json!({"all": true, "reason": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(p.admin_get("/admin/dlq/nope.dlq/messages").await.status().as_u16(), 404);

    // Three undecodable commands for payment.
    let publisher = Publisher::new(Broker::new(&p.vhost.amqp_url, 1, "test").unwrap());
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = Uuid::now_v7().to_string();
        let props = BasicProperties::default()
            .with_type("payment.authorize".into())
            .with_message_id(id.as_str().into())
            .with_correlation_id(Uuid::now_v7().to_string().into());
        publisher.publish_raw("saga.commands", "payment.authorize", true, props, b"{broken").await.unwrap();
        ids.push(id);
    }
    eventually("three dead letters", WAIT, || async { (p.dlq_depth("payment.commands.dlq").await == 3).then_some(()) })
        .await;
    let first: Value = p.admin_get("/admin/dlq/payment.commands.dlq/messages?limit=2").await.json().await.unwrap();
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    assert_eq!(first["next_offset"], 2);
    let second: Value =
        p.admin_get("/admin/dlq/payment.commands.dlq/messages?limit=2&offset=2").await.json().await.unwrap();
    assert_eq!(second["items"].as_array().unwrap().len(), 1);
    assert!(second["next_offset"].is_null());
    let listed: Vec<&str> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["items"].as_array().unwrap())
        .map(|m| m["message_id"].as_str().unwrap())
        .collect();
    let mut sorted = listed.clone();
    sorted.sort_unstable();
    let mut expected: Vec<&str> = ids.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(sorted, expected, "every dead letter listed once");
    assert_eq!(p.dlq_depth("payment.commands.dlq").await, 3, "listing consumed nothing");
    let again: Value = p.admin_get("/admin/dlq/payment.commands.dlq/messages?limit=3").await.json().await.unwrap();
    let relisted: Vec<&str> =
        again["items"].as_array().unwrap().iter().map(|m| m["message_id"].as_str().unwrap()).collect();
    assert_eq!(relisted, listed, "listing keeps the queue's order");
    let one: Value =
        p.admin_get(&format!("/admin/dlq/payment.commands.dlq/messages/{}", ids[1])).await.json().await.unwrap();
    assert_eq!(one["reason"], "invalid_body");
    assert_eq!(one["body"], "{broken");
    assert_eq!(p.admin_get("/admin/dlq/payment.commands.dlq/messages/nope").await.status().as_u16(), 404);
    assert_eq!(p.admin_get("/admin/dlq/payment.commands.dlq/messages?limit=0").await.status().as_u16(), 400);

    // A discard needs a reason and a selection.
    assert_eq!(
        p.admin_post("/admin/dlq/payment.commands.dlq/discard", json!({"message_id": ids[0]})).await.status().as_u16(),
        400
    );
    assert_eq!(
        p.admin_post("/admin/dlq/payment.commands.dlq/discard", json!({"reason": "junk"})).await.status().as_u16(),
        400
    );
    assert_eq!(
        p.admin_post("/admin/dlq/payment.commands.dlq/replay", json!({"bogus": 1})).await.status().as_u16(),
        400
    );
    let d: Value = p
        .admin_post("/admin/dlq/payment.commands.dlq/discard", json!({"message_id": ids[0], "reason": "test junk"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(d["discarded"], 1);
    assert_eq!(p.dlq_depth("payment.commands.dlq").await, 2);
    let audit: Value = p.admin_get("/admin/audit").await.json().await.unwrap();
    let e = &audit["items"][0];
    assert_eq!(
        (e["actor"].as_str(), e["action"].as_str(), e["reason"].as_str()),
        (Some("alice"), Some("discard"), Some("test junk"))
    );
    assert_eq!(e["message_id"], ids[0].as_str());
    let queues: Value = p.admin_get("/admin/dlq").await.json().await.unwrap();
    let consuming = contracts::topology::Topology::new(Default::default(), 3).dead_letter_queues().count();
    assert_eq!(consuming, 6, "orchestrator, three participants, notification, orders");
    assert_eq!(queues["queues"].as_array().unwrap().len(), consuming, "one DLQ per consuming queue");
    p.shutdown().await;
}
