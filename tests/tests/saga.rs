//! End-to-end scenarios of the order saga: every outcome, idempotency, duplicates, dead letters,
//! timeouts. Each test runs its own platform (own vhost, own databases) and waits on conditions.

use std::time::Duration;

use contracts::commands::ReserveInventory;
use contracts::order::StockLine;
use contracts::replies::InventoryReserved;
use contracts::topology::{COMMANDS_EXCHANGE, EVENTS_EXCHANGE, REPLIES_EXCHANGE};
use contracts::{Command, Meta, Reply};
use e2e::{Service, TestConfig, TestPlatform, order, steps};
use infra::amqp::{Broker, Outgoing, Publisher};
use infra::testing::{Tap, eventually};
use lapin::BasicProperties;
use lapin::options::BasicGetOptions;
use serde_json::{Value, json};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

fn sent_types(saga: &Value) -> Vec<String> {
    saga["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["sent"].as_array().cloned().unwrap_or_default())
        .map(|m| m["type"].as_str().unwrap().to_owned())
        .collect()
}

async fn set_stock(p: &TestPlatform, sku: &str, on_hand: i64) {
    let pool = infra::db::connect(p.database_url(Service::Inventory), 1).await.unwrap();
    sqlx::query("UPDATE stock SET on_hand = $2 WHERE sku = $1").bind(sku).bind(on_hand).execute(&pool).await.unwrap();
}

async fn payment_status(p: &TestPlatform, order_id: Uuid) -> Option<String> {
    let resp = p.http.get(format!("{}/payments/{order_id}", p.url(Service::Payment))).send().await.unwrap();
    if resp.status().as_u16() == 404 {
        return None;
    }
    let v: Value = resp.json().await.unwrap();
    v["status"].as_str().map(str::to_owned)
}

async fn shipment_exists(p: &TestPlatform, order_id: Uuid) -> bool {
    let resp = p.http.get(format!("{}/shipments/{order_id}", p.url(Service::Shipping))).send().await.unwrap();
    resp.status().is_success()
}

#[tokio::test]
async fn happy_path_completes_every_step_and_moves_stock() {
    let p = TestPlatform::running(TestConfig::default()).await;
    let before = p.stock("SKU-0001").await;
    let broker = Broker::new(&p.vhost.amqp_url, 1, "test").unwrap();
    let mut commands = Tap::bind(&broker, COMMANDS_EXCHANGE, "#").await;
    let mut replies = Tap::bind(&broker, REPLIES_EXCHANGE, "#").await;
    let mut events = Tap::bind(&broker, EVENTS_EXCHANGE, "order.*").await;
    let id = p.start_saga(&order("SKU-0001", 2, 1999, "DE")).await;
    let saga = p.wait_for_status(id, "COMPLETED", WAIT).await;
    // Every message of the saga is a span of one W3C trace whose id is the saga id.
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(commands.next::<Command>(WAIT).await.0);
        seen.push(replies.next::<Reply>(WAIT).await.0);
    }
    seen.push(events.next::<contracts::Event>(WAIT).await.0);
    for meta in &seen {
        let tp = meta.traceparent.as_deref().unwrap_or_else(|| panic!("{} has no traceparent", meta.message_type));
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(parts.len(), 4, "{tp}");
        assert_eq!((parts[0], parts[1], parts[3]), ("00", id.simple().to_string().as_str(), "01"), "{tp}");
        assert_eq!(parts[2].len(), 16, "{tp}");
        assert_eq!(tp, contracts::envelope::traceparent(id, meta.message_id));
    }
    assert_eq!(
        steps(&saga),
        ["reserve_inventory", "authorize_payment", "schedule_shipment", "capture_payment", "commit_inventory"]
            .iter()
            .map(|s| (s.to_string(), "succeeded".to_string()))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        sent_types(&saga),
        [
            "inventory.reserve",
            "payment.authorize",
            "shipping.schedule",
            "payment.capture",
            "inventory.commit",
            "order.completed"
        ]
    );
    let timeline = saga["timeline"].as_array().unwrap();
    assert!(timeline.iter().all(|e| e["at"].is_string()));
    assert!(timeline[1..].iter().all(|e| e["caused_by"]["message_id"].is_string()), "every reply names its message");
    let after = p.stock("SKU-0001").await;
    assert_eq!(after, (before.0 - 2, before.1), "on_hand drops by what was bought, reserved is back");
    assert_eq!(payment_status(&p, id).await.as_deref(), Some("captured"));
    assert!(shipment_exists(&p, id).await);
    let notes = p.wait_for_notifications(id, WAIT).await;
    assert_eq!(notes[0]["kind"], "confirmation");
    p.shutdown().await;
}

#[tokio::test]
async fn insufficient_stock_ends_compensated_with_nothing_held() {
    let p = TestPlatform::running(TestConfig::default()).await;
    set_stock(&p, "SKU-0003", 1).await;
    let before = p.stock("SKU-0003").await;
    let id = p.start_saga(&order("SKU-0003", 2, 500, "DE")).await;
    let saga = p.wait_for_status(id, "COMPENSATED", WAIT).await;
    assert_eq!(steps(&saga)[0], ("reserve_inventory".into(), "failed".into()));
    assert!(saga["failure_reason"].as_str().unwrap().contains("inventory"), "{saga}");
    assert_eq!(sent_types(&saga), ["inventory.reserve", "order.compensated"]);
    assert_eq!(p.stock("SKU-0003").await, before);
    assert_eq!(payment_status(&p, id).await, None, "no payment was attempted");
    let notes = p.wait_for_notifications(id, WAIT).await;
    assert_eq!(notes[0]["kind"], "cancellation");
    assert!(notes[0]["reason"].is_string());
    p.shutdown().await;
}

#[tokio::test]
async fn declined_payment_releases_the_reservation() {
    let p = TestPlatform::running(TestConfig::default()).await;
    let before = p.stock("SKU-0002").await;
    // 10,000.01: one cent over the default limit.
    let id = p.start_saga(&order("SKU-0002", 1, 1_000_001, "DE")).await;
    let saga = p.wait_for_status(id, "COMPENSATED", WAIT).await;
    let s = steps(&saga);
    assert_eq!(s[0], ("reserve_inventory".into(), "compensated".into()));
    assert_eq!(s[1], ("authorize_payment".into(), "failed".into()));
    assert_eq!(sent_types(&saga), ["inventory.reserve", "payment.authorize", "inventory.release", "order.compensated"]);
    assert_eq!(p.stock("SKU-0002").await, before);
    assert_eq!(payment_status(&p, id).await.as_deref(), Some("declined"));
    p.shutdown().await;
}

#[tokio::test]
async fn unsupported_destination_compensates_in_reverse_order() {
    let p = TestPlatform::running(TestConfig::default()).await;
    let before = p.stock("SKU-0004").await;
    let id = p.start_saga(&order("SKU-0004", 3, 1000, "AQ")).await;
    let saga = p.wait_for_status(id, "COMPENSATED", WAIT).await;
    assert_eq!(
        sent_types(&saga),
        [
            "inventory.reserve",
            "payment.authorize",
            "shipping.schedule",
            "payment.void",
            "inventory.release",
            "order.compensated"
        ],
        "the payment is voided before the reservation is released"
    );
    assert_eq!(steps(&saga)[2], ("schedule_shipment".into(), "failed".into()));
    assert_eq!(p.stock("SKU-0004").await, before);
    assert_eq!(payment_status(&p, id).await.as_deref(), Some("voided"));
    assert!(!shipment_exists(&p, id).await);
    p.shutdown().await;
}

#[tokio::test]
async fn the_same_idempotency_key_returns_the_same_saga() {
    let p = TestPlatform::running(TestConfig::default()).await;
    let body = order("SKU-0005", 1, 100, "DE");
    let first = p.submit(&body, Some("order-abc-1")).await;
    assert_eq!(first.status().as_u16(), 202);
    let location = first.headers()["location"].to_str().unwrap().to_owned();
    let first: Value = first.json().await.unwrap();
    let second = p.submit(&body, Some("order-abc-1")).await;
    assert_eq!(second.status().as_u16(), 202);
    assert_eq!(second.headers()["location"].to_str().unwrap(), location);
    let second: Value = second.json().await.unwrap();
    assert_eq!(first["saga_id"], second["saga_id"]);
    let id = Uuid::parse_str(first["saga_id"].as_str().unwrap()).unwrap();
    p.wait_for_status(id, "COMPLETED", WAIT).await;
    // Another order under the same key is refused, not silently mapped.
    let other = p.submit(&order("SKU-0005", 2, 100, "DE"), Some("order-abc-1")).await;
    assert_eq!(other.status().as_u16(), 422);
    assert_eq!(other.headers()["content-type"], "application/problem+json");
    let list: Value = p
        .http
        .get(format!("{}/sagas?limit=10", p.url(Service::Orchestrator)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "one saga for one key");
    p.shutdown().await;
}

#[tokio::test]
async fn bad_requests_get_problem_details_and_never_a_500() {
    let p = TestPlatform::running(TestConfig::default()).await;
    let base = p.url(Service::Orchestrator);
    let post_raw = |body: &'static str, ct: &'static str| {
        p.http.post(format!("{base}/orders")).header("content-type", ct).body(body).send()
    };
    let cases: Vec<(reqwest::Response, u16)> = vec![
        (post_raw("{not json", "application/json").await.unwrap(), 400),
        (post_raw("{}", "application/json").await.unwrap(), 422),
        (post_raw("{}", "text/plain").await.unwrap(), 415),
        (p.submit(&order("SKU-0001", 0, 100, "DE"), None).await, 422),
        (p.submit(&order("SKU-0001", 1, 100, "Germany"), None).await, 422),
        (
            p.submit(&json!({"customer_id": "c", "currency": "EUR", "items": [], "shipping_address": {}}), None).await,
            422,
        ),
        (p.submit(&order("SKU-0001", 1, 100, "DE"), Some("has space")).await, 400),
        (
            p.http
                .post(format!("{base}/orders"))
                .header("content-type", "application/json")
                .body("x".repeat(200_000))
                .send()
                .await
                .unwrap(),
            413,
        ),
        (p.http.get(format!("{base}/sagas/not-a-uuid")).send().await.unwrap(), 400),
        (p.http.get(format!("{base}/sagas/{}", Uuid::now_v7())).send().await.unwrap(), 404),
        (p.http.get(format!("{base}/sagas?status=DONE")).send().await.unwrap(), 400),
        (p.http.get(format!("{base}/sagas?limit=0")).send().await.unwrap(), 400),
        (p.http.get(format!("{base}/sagas?cursor=zzz")).send().await.unwrap(), 400),
        (p.http.get(format!("{base}/nope")).send().await.unwrap(), 404),
    ];
    for (i, (resp, status)) in cases.into_iter().enumerate() {
        assert_eq!(resp.status().as_u16(), status, "case {i}");
        assert_eq!(resp.headers()["content-type"], "application/problem+json", "case {i}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["status"], status, "case {i}: {body}");
        assert!(body["title"].is_string() && body["detail"].is_string(), "case {i}: {body}");
    }
    let invalid: Value = p.submit(&order("SKU-0001", 0, 100, "DE"), None).await.json().await.unwrap();
    assert_eq!(invalid["errors"][0]["field"], "items[0].quantity");
    p.shutdown().await;
}

#[tokio::test]
async fn sagas_are_listed_oldest_first_and_paged() {
    let p = TestPlatform::running(TestConfig::default()).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(p.start_saga(&order("SKU-0006", 1, 100, "DE")).await);
    }
    for id in &ids {
        p.wait_for_status(*id, "COMPLETED", WAIT).await;
    }
    let base = p.url(Service::Orchestrator);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            None => format!("{base}/sagas?status=COMPLETED&limit=2"),
            Some(c) => format!("{base}/sagas?status=COMPLETED&limit=2&cursor={c}"),
        };
        let page: Value = p.http.get(url).send().await.unwrap().json().await.unwrap();
        for item in page["items"].as_array().unwrap() {
            assert_eq!(item["status"], "COMPLETED");
            seen.push(Uuid::parse_str(item["saga_id"].as_str().unwrap()).unwrap());
        }
        match page["next"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    let running: Value = p.http.get(format!("{base}/sagas?status=RUNNING")).send().await.unwrap().json().await.unwrap();
    assert_eq!(running["items"].as_array().unwrap().len(), 0);
    assert!(running["next"].is_null());
    p.shutdown().await;
}

/// A command with the platform's envelope, as the orchestrator would send it.
fn command(saga: Uuid, cmd: &Command, key: &str) -> Outgoing {
    use contracts::Message;
    let meta = Meta::new(saga, cmd.message_type()).with_idempotency_key(key);
    Outgoing::new(COMMANDS_EXCHANGE, true, meta, cmd)
}

#[tokio::test]
async fn a_duplicate_command_changes_nothing_and_duplicate_or_late_replies_are_ignored() {
    let p = TestPlatform::running(TestConfig::default()).await;
    let before = p.stock("SKU-0007").await;
    let id = p.start_saga(&order("SKU-0007", 4, 100, "DE")).await;
    p.wait_for_status(id, "COMPLETED", WAIT).await;
    let publisher = Publisher::new(Broker::new(&p.vhost.amqp_url, 1, "test").unwrap());

    // The reserve command again, same idempotency key, new message id: a re-send after a timeout.
    let reserve = Command::ReserveInventory(ReserveInventory {
        order_id: id,
        items: vec![StockLine { sku: "SKU-0007".into(), quantity: 4 }],
    });
    let key = contracts::envelope::idempotency_key(id, "reserve_inventory", "do");
    publisher.publish(&command(id, &reserve, &key)).await.unwrap();
    publisher.publish(&command(id, &reserve, &key)).await.unwrap();
    // A late reply with a new id, and an exact duplicate of it.
    let late = Reply::InventoryReserved(InventoryReserved { order_id: id });
    let late_msg = Outgoing::new(REPLIES_EXCHANGE, true, Meta::new(id, "inventory.reserved"), &late);
    publisher.publish(&late_msg).await.unwrap();
    publisher.publish(&late_msg).await.unwrap();

    let saga = p
        .wait_for(id, "late reply noted", WAIT, |s| {
            s["timeline"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["kind"] == "ignored" && e["caused_by"]["message_id"] == late_msg.meta.message_id.to_string())
        })
        .await;
    assert_eq!(saga["status"], "COMPLETED");
    let metrics =
        p.http.get(format!("{}/metrics", p.url(Service::Orchestrator))).send().await.unwrap().text().await.unwrap();
    // Inventory answered the re-sent command with its stored reply, which the orchestrator has
    // seen: duplicates; our own copy of the late reply: one more.
    let duplicate_count = eventually("duplicates counted", WAIT, || async {
        let m =
            p.http.get(format!("{}/metrics", p.url(Service::Orchestrator))).send().await.unwrap().text().await.unwrap();
        let n = metric(&m, "saga_replies_ignored_total{reason=\"duplicate\"}");
        (n >= 3.0).then_some(n)
    })
    .await;
    assert!(duplicate_count >= 3.0, "{metrics}");
    let inventory_metrics =
        p.http.get(format!("{}/metrics", p.url(Service::Inventory))).send().await.unwrap().text().await.unwrap();
    assert!(metric(&inventory_metrics, "saga_messages_duplicate_total{queue=\"inventory.commands\"}") >= 2.0);
    // Stock moved once.
    assert_eq!(p.stock("SKU-0007").await, (before.0 - 4, before.1));
    p.shutdown().await;
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(series).map(|v| v.trim().parse::<f64>().unwrap_or(0.0))).unwrap_or(0.0)
}

#[tokio::test]
async fn malformed_messages_land_in_their_own_dead_letter_queue_and_consumers_go_on() {
    let p = TestPlatform::running(TestConfig::default()).await;
    let broker = Broker::new(&p.vhost.amqp_url, 1, "test").unwrap();
    let publisher = Publisher::new(broker.clone());
    let props = |ty: &str| {
        BasicProperties::default()
            .with_type(ty.into())
            .with_message_id(Uuid::now_v7().to_string().into())
            .with_correlation_id(Uuid::now_v7().to_string().into())
    };
    publisher
        .publish_raw(REPLIES_EXCHANGE, "inventory.reserved", true, props("inventory.reserved"), b"{not json")
        .await
        .unwrap();
    publisher.publish_raw(COMMANDS_EXCHANGE, "payment.authorize", true, props("payment.explode"), b"{}").await.unwrap();
    publisher
        .publish_raw(
            COMMANDS_EXCHANGE,
            "inventory.reserve",
            true,
            BasicProperties::default().with_type("inventory.reserve".into()),
            b"{}",
        )
        .await
        .unwrap();
    let ch = broker.channel().await.unwrap();
    for (dlq, reason) in [
        ("orchestrator.replies.dlq", "invalid_body"),
        ("payment.commands.dlq", "unknown_type"),
        ("inventory.commands.dlq", "missing_field"),
    ] {
        let msg = eventually(&format!("{dlq} receives the bad message"), WAIT, || async {
            ch.basic_get(dlq.into(), BasicGetOptions { no_ack: true }).await.unwrap()
        })
        .await;
        let headers = msg.delivery.properties.headers().clone().unwrap();
        let got = headers.inner().get("x-dead-letter-reason").and_then(|v| v.as_long_string()).map(|s| s.to_string());
        assert_eq!(got.as_deref(), Some(reason), "{dlq}");
        assert!(headers.inner().contains_key("x-dead-letter-error"));
    }
    // Everyone is still consuming.
    let id = p.start_saga(&order("SKU-0001", 1, 100, "DE")).await;
    p.wait_for_status(id, "COMPLETED", WAIT).await;
    p.shutdown().await;
}

fn short_timeouts() -> TestConfig {
    TestConfig {
        step_timeout: Duration::from_millis(300),
        max_step_timeout: Duration::from_millis(600),
        max_attempts: 3,
        max_compensation_attempts: 3,
        ..TestConfig::default()
    }
}

#[tokio::test]
async fn a_silent_participant_before_the_pivot_leads_to_resends_then_compensation() {
    // The void must not run out of attempts while payment starts (fresh database, migrations).
    let p = TestPlatform::new(TestConfig { max_compensation_attempts: 1000, ..short_timeouts() }).await;
    for s in [Service::Orchestrator, Service::Inventory, Service::Shipping, Service::Notification] {
        p.start(s).await;
    }
    let before = p.stock("SKU-0008").await;
    let id = p.start_saga(&order("SKU-0008", 1, 100, "DE")).await;
    // Payment is down: authorize is re-sent up to the limit; its outcome is unknown, so the saga
    // compensates it too (void), and waits for payment to come back to answer.
    let saga = p
        .wait_for(id, "compensating the silent step", WAIT, |s| {
            s["status"] == "COMPENSATING" && s["current_step"] == "authorize_payment"
        })
        .await;
    assert_eq!(sent_types(&saga).iter().filter(|t| *t == "payment.authorize").count(), 3);
    assert!(saga["failure_reason"].as_str().unwrap().contains("timed out"), "{saga}");
    // Payment comes back and finds the three authorize commands and the void(s) queued, in
    // whatever order its consumers take them: either way nothing stays authorized.
    p.start(Service::Payment).await;
    let saga = p.wait_for_status(id, "COMPENSATED", WAIT).await;
    let sent = sent_types(&saga);
    assert!(sent.contains(&"payment.void".to_string()) && sent.contains(&"inventory.release".to_string()), "{sent:?}");
    let settled = eventually("payment settles voided", WAIT, || async {
        let s = payment_status(&p, id).await;
        (s.as_deref() == Some("voided")).then_some(s)
    })
    .await;
    assert_eq!(settled.as_deref(), Some("voided"));
    assert_eq!(p.stock("SKU-0008").await, before);
    p.shutdown().await;
}

#[tokio::test]
async fn after_the_pivot_commands_are_resent_with_backoff_until_answered() {
    let p = TestPlatform::new(TestConfig {
        step_timeout: Duration::from_millis(200),
        max_step_timeout: Duration::from_millis(1600),
        ..short_timeouts()
    })
    .await;
    for s in [Service::Orchestrator, Service::Inventory, Service::Payment, Service::Notification] {
        p.start(s).await;
    }
    let id = p.start_saga(&order("SKU-0009", 1, 100, "DE")).await;
    // Shipping (the pivot) is down: it is re-sent past the attempt limit, never compensated.
    let saga = p
        .wait_for(id, "pivot re-sent beyond max attempts", WAIT, |s| {
            s["current_step"] == "schedule_shipment" && s["attempts"].as_i64().unwrap_or(0) > 5
        })
        .await;
    // With backoff: the deadline doubles each attempt (200, 400, 800 ms...) up to the cap (1600).
    let timeouts: Vec<chrono::DateTime<chrono::Utc>> = saga["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "timeout" && e["step"] == "schedule_shipment")
        .map(|e| serde_json::from_value(e["at"].clone()).unwrap())
        .collect();
    let gaps: Vec<i64> = timeouts.windows(2).map(|w| (w[1] - w[0]).num_milliseconds()).collect();
    assert!(gaps.len() >= 4, "{gaps:?}");
    assert!((380..700).contains(&gaps[0]), "second deadline is 400 ms: {gaps:?}");
    assert!((780..1100).contains(&gaps[1]), "third is 800 ms: {gaps:?}");
    assert!(gaps[2..].iter().all(|g| (1580..2000).contains(g)), "then capped at 1600 ms: {gaps:?}");
    // Payment goes down too, then shipping comes back: the saga passes the pivot and waits on capture.
    p.stop(Service::Payment).await;
    p.start(Service::Shipping).await;
    let saga = p
        .wait_for(id, "capture re-sent beyond max attempts", WAIT, |s| {
            s["current_step"] == "capture_payment" && s["attempts"].as_i64().unwrap_or(0) > 3
        })
        .await;
    assert_eq!(saga["status"], "RUNNING");
    p.start(Service::Payment).await;
    let saga = p.wait_for_status(id, "COMPLETED", WAIT).await;
    assert_eq!(payment_status(&p, id).await.as_deref(), Some("captured"));
    assert!(sent_types(&saga).iter().filter(|t| *t == "payment.capture").count() > 3);
    p.shutdown().await;
}

#[tokio::test]
async fn a_compensation_that_cannot_be_done_ends_failed_and_visible() {
    let p = TestPlatform::new(short_timeouts()).await;
    for s in [Service::Orchestrator, Service::Inventory, Service::Shipping, Service::Notification] {
        p.start(s).await;
    }
    // Payment never answers: authorize times out, and so does its compensation (void).
    let id = p.start_saga(&order("SKU-0010", 1, 100, "DE")).await;
    let saga = p.wait_for_status(id, "FAILED", WAIT).await;
    assert!(saga["failure_reason"].as_str().unwrap().contains("void"), "{saga}");
    assert!(saga["deadline"].is_null());
    let notes = p.wait_for_notifications(id, WAIT).await;
    assert_eq!(notes[0]["kind"], "failure");
    let metrics =
        p.http.get(format!("{}/metrics", p.url(Service::Orchestrator))).send().await.unwrap().text().await.unwrap();
    assert_eq!(
        metric(&metrics, "saga_finished_total{definition=\"order\",reason=\"compensation_failed\",status=\"FAILED\"}"),
        1.0
    );
    p.shutdown().await;
}

#[tokio::test]
async fn quorum_queues_run_the_same_saga() {
    let p = TestPlatform::running(TestConfig {
        queue_type: contracts::topology::QueueType::Quorum,
        ..TestConfig::default()
    })
    .await;
    let ok = p.start_saga(&order("SKU-0012", 1, 100, "DE")).await;
    let ko = p.start_saga(&order("SKU-0012", 1, 100, "AQ")).await;
    p.wait_for_status(ok, "COMPLETED", WAIT).await;
    p.wait_for_status(ko, "COMPENSATED", WAIT).await;
    let q = p.vhost.management(&format!("queues/{}/payment.commands", p.vhost.name)).await;
    assert_eq!(q["type"], "quorum");
    assert_eq!(q["arguments"]["x-delivery-limit"], 20);
    p.shutdown().await;
}

#[tokio::test]
async fn a_saga_that_cannot_be_read_is_failed_visibly_instead_of_retried_forever() {
    let p = TestPlatform::new(short_timeouts()).await;
    for s in [Service::Orchestrator, Service::Inventory, Service::Shipping, Service::Notification] {
        p.start(s).await;
    }
    let before = p.stock("SKU-0012").await;
    let id = p.start_saga(&order("SKU-0012", 2, 100, "DE")).await;
    p.wait_for(id, "stock reserved, payment awaited", WAIT, |s| s["current_step"] == "authorize_payment").await;
    // Its state no longer decodes (a bug, or a hand edit), and its deadline passed.
    let db = sqlx::PgPool::connect(p.database_url(Service::Orchestrator)).await.unwrap();
    sqlx::query(
        "UPDATE sagas SET state = '{\"not\": \"a state\"}', deadline = now() - interval '1 second' WHERE id = $1",
    )
    .bind(id)
    .execute(&db)
    .await
    .unwrap();
    let saga = p.wait_for_status(id, "FAILED", WAIT).await;
    let reason = saga["failure_reason"].as_str().unwrap();
    assert!(reason.contains("cannot be read") && reason.contains("sent payment.void, inventory.release"), "{saga}");
    assert!(saga["deadline"].is_null());
    let last = saga["timeline"].as_array().unwrap().last().cloned().unwrap();
    assert_eq!((last["kind"].as_str(), last["status"].as_str()), (Some("failed"), Some("FAILED")), "{saga}");
    let sent: Vec<&str> = last["sent"].as_array().unwrap().iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(sent, ["payment.void", "inventory.release", "order.failed"]);
    // What it held is given back, and the customer is told.
    eventually("stock released", WAIT, || async { (p.stock("SKU-0012").await == before).then_some(()) }).await;
    let notes = p.wait_for_notifications(id, WAIT).await;
    assert_eq!(notes[0]["kind"], "failure");
    // The unanswered authorize, whenever payment comes, is refused: the void left a tombstone.
    p.start(Service::Payment).await;
    eventually("the void is applied", WAIT, || async {
        (payment_status(&p, id).await.as_deref() == Some("voided")).then_some(())
    })
    .await;
    assert_eq!(p.gateway.stats().authorized_open, Some(0));
    // Other sagas are not held up by it.
    let ok = p.start_saga(&order("SKU-0011", 1, 100, "DE")).await;
    p.wait_for_status(ok, "COMPLETED", WAIT).await;
    db.close().await;
    p.shutdown().await;
}
