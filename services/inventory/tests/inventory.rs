//! The inventory service on the real broker and database: all-or-nothing reservations, release,
//! commit, duplicates and races (stock moves once), a late reserve after its release, and the
//! read API.

use std::time::Duration;

use contracts::commands::{CommitInventory, ReleaseInventory, ReserveInventory};
use contracts::order::StockLine;
use contracts::topology::REPLIES_EXCHANGE;
use contracts::{Command, Reply};
use infra::amqp::{Broker, Publisher};
use infra::config::Settings;
use infra::testing::{Tap, TestDb, TestVhost, command, eventually, get_message, spawn_app};
use inventory::InventorySettings;
use serde_json::Value;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(15);

struct Env {
    _db: TestDb,
    _vhost: TestVhost,
    base: String,
    publisher: Publisher,
    broker: Broker,
}

async fn env() -> (Env, infra::CancellationToken, tokio::task::JoinHandle<std::io::Result<()>>) {
    let (vhost, db) = tokio::join!(TestVhost::create("inventory"), TestDb::create("inventory"));
    let app =
        inventory::build(InventorySettings::for_tests(Settings::for_tests("inventory", &vhost.amqp_url, &db.url)))
            .await
            .expect("inventory starts");
    let base = format!("http://{}", app.local_addr());
    let (token, handle) = spawn_app(app);
    let broker = Broker::new(&vhost.amqp_url, 1, "test").unwrap();
    let publisher = Publisher::new(broker.clone());
    (Env { _db: db, _vhost: vhost, base, publisher, broker }, token, handle)
}

async fn stock(base: &str, sku: &str) -> (i64, i64) {
    let v: Value = reqwest::get(format!("{base}/stock/{sku}")).await.unwrap().json().await.unwrap();
    (v["on_hand"].as_i64().unwrap(), v["reserved"].as_i64().unwrap())
}

fn reserve(order_id: Uuid, lines: &[(&str, u32)]) -> Command {
    let items = lines.iter().map(|(s, q)| StockLine { sku: (*s).into(), quantity: *q }).collect();
    Command::ReserveInventory(ReserveInventory { order_id, items })
}

fn key(id: Uuid, step: &str, action: &str) -> String {
    contracts::envelope::idempotency_key(id, step, action)
}

#[tokio::test]
async fn reserve_commit_release_and_a_duplicate_that_holds_once() {
    let (e, token, handle) = env().await;
    let mut replies = Tap::bind(&e.broker, REPLIES_EXCHANGE, "inventory.*").await;
    let id = Uuid::now_v7();
    let k = key(id, "reserve_inventory", "do");
    // Two lines of the same SKU add up.
    let cmd = reserve(id, &[("SKU-0001", 2), ("SKU-0002", 1), ("SKU-0001", 1)]);
    e.publisher.publish(&command(id, &cmd, &k)).await.unwrap();
    assert!(matches!(replies.next::<Reply>(WAIT).await.1, Reply::InventoryReserved(_)));
    e.publisher.publish(&command(id, &cmd, &k)).await.unwrap();
    assert!(matches!(replies.next::<Reply>(WAIT).await.1, Reply::InventoryReserved(_)));
    assert_eq!(stock(&e.base, "SKU-0001").await, (100_000, 3), "held once");
    let commit = Command::CommitInventory(CommitInventory { order_id: id });
    e.publisher.publish(&command(id, &commit, &key(id, "commit_inventory", "do"))).await.unwrap();
    assert!(matches!(replies.next::<Reply>(WAIT).await.1, Reply::InventoryCommitted(_)));
    assert_eq!(stock(&e.base, "SKU-0001").await, (99_997, 0));
    assert_eq!(stock(&e.base, "SKU-0002").await, (99_999, 0));
    // Releasing a committed order gives nothing back.
    let release = Command::ReleaseInventory(ReleaseInventory { order_id: id });
    e.publisher.publish(&command(id, &release, &key(id, "reserve_inventory", "compensate"))).await.unwrap();
    assert!(matches!(replies.next::<Reply>(WAIT).await.1, Reply::InventoryReleased(_)));
    assert_eq!(stock(&e.base, "SKU-0001").await, (99_997, 0));
    token.cancel();
    handle.await.unwrap().unwrap();
}

#[tokio::test]
async fn all_or_nothing_and_unknown_skus() {
    let (e, token, handle) = env().await;
    let mut replies = Tap::bind(&e.broker, REPLIES_EXCHANGE, "inventory.*").await;
    let id = Uuid::now_v7();
    e.publisher
        .publish(&command(
            id,
            &reserve(id, &[("SKU-0003", 1), ("SKU-0004", 100_001)]),
            &key(id, "reserve_inventory", "do"),
        ))
        .await
        .unwrap();
    match replies.next::<Reply>(WAIT).await.1 {
        Reply::InventoryRejected(r) => assert_eq!(r.code, "out_of_stock"),
        other => panic!("{other:?}"),
    }
    assert_eq!(stock(&e.base, "SKU-0003").await, (100_000, 0), "nothing held");
    let id = Uuid::now_v7();
    e.publisher.publish(&command(id, &reserve(id, &[("NOPE", 1)]), &key(id, "reserve_inventory", "do"))).await.unwrap();
    match replies.next::<Reply>(WAIT).await.1 {
        Reply::InventoryRejected(r) => assert_eq!(r.code, "unknown_sku"),
        other => panic!("{other:?}"),
    }
    token.cancel();
    handle.await.unwrap().unwrap();
}

#[tokio::test]
async fn concurrent_reservations_never_oversell() {
    let (e, token, handle) = env().await;
    let mut replies = Tap::bind(&e.broker, REPLIES_EXCHANGE, "inventory.*").await;
    let pool = infra::db::connect(&e._db.url, 1).await.unwrap();
    sqlx::query("UPDATE stock SET on_hand = 10 WHERE sku = 'SKU-0005'").execute(&pool).await.unwrap();
    let msgs: Vec<_> = (0..30)
        .map(|_| {
            let id = Uuid::now_v7();
            command(id, &reserve(id, &[("SKU-0005", 1)]), &key(id, "reserve_inventory", "do"))
        })
        .collect();
    for r in e.publisher.publish_batch(&msgs).await {
        r.unwrap();
    }
    let mut reserved = 0;
    for _ in 0..30 {
        if matches!(replies.next::<Reply>(WAIT).await.1, Reply::InventoryReserved(_)) {
            reserved += 1;
        }
    }
    assert_eq!(reserved, 10);
    assert_eq!(stock(&e.base, "SKU-0005").await, (10, 10));
    token.cancel();
    handle.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_reserve_after_its_release_is_refused_and_commit_of_nothing_is_dead_lettered() {
    let (e, token, handle) = env().await;
    let mut replies = Tap::bind(&e.broker, REPLIES_EXCHANGE, "inventory.*").await;
    let id = Uuid::now_v7();
    let release = Command::ReleaseInventory(ReleaseInventory { order_id: id });
    e.publisher.publish(&command(id, &release, &key(id, "reserve_inventory", "compensate"))).await.unwrap();
    assert!(matches!(replies.next::<Reply>(WAIT).await.1, Reply::InventoryReleased(_)));
    e.publisher
        .publish(&command(id, &reserve(id, &[("SKU-0006", 1)]), &key(id, "reserve_inventory", "do")))
        .await
        .unwrap();
    match replies.next::<Reply>(WAIT).await.1 {
        Reply::InventoryRejected(r) => assert_eq!(r.code, "released"),
        other => panic!("{other:?}"),
    }
    assert_eq!(stock(&e.base, "SKU-0006").await, (100_000, 0));
    let other = Uuid::now_v7();
    let commit = Command::CommitInventory(CommitInventory { order_id: other });
    e.publisher.publish(&command(other, &commit, &key(other, "commit_inventory", "do"))).await.unwrap();
    let dead = eventually("commit dead-lettered", WAIT, || get_message(&e.broker, "inventory.commands.dlq")).await;
    assert_eq!(dead.header_str("x-dead-letter-reason").as_deref(), Some("unknown_reservation"));
    token.cancel();
    handle.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_stock_api_lists_the_demo_catalog() {
    let (e, token, handle) = env().await;
    let all: Vec<Value> = reqwest::get(format!("{}/stock", e.base)).await.unwrap().json().await.unwrap();
    assert!(all.len() >= 10);
    assert!(all.iter().all(|s| s["on_hand"].as_i64().unwrap() >= 10_000 && s["reserved"] == 0));
    assert_eq!(all[0]["sku"], "SKU-0001");
    let missing = reqwest::get(format!("{}/stock/NOPE", e.base)).await.unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    assert_eq!(missing.headers()["content-type"], "application/problem+json");
    token.cancel();
    handle.await.unwrap().unwrap();
}

/// `GET /openapi.json` lists exactly what the router serves; the validator and Schemathesis pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_the_router_and_schemathesis_passes() {
    let (e, token, _handle) = env().await;
    let routes = [
        ("GET", "/stock"),
        ("GET", "/stock/{sku}"),
        ("GET", "/reservations"),
        ("GET", "/health/live"),
        ("GET", "/health/ready"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
    ];
    infra::openapi_checks::check_live_document(&e.base, &routes, None, 30).await;
    token.cancel();
}
