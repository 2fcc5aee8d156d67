//! Many sagas at once across several instances of every process, and broker connection loss:
//! every saga reaches a terminal state and stock is conserved.

use std::collections::HashMap;
use std::time::Duration;

use e2e::{Service, TestConfig, TestPlatform, order};
use futures_util::StreamExt;
use futures_util::stream;
use infra::testing::eventually;
use serde_json::Value;
use uuid::Uuid;

const SKUS: [&str; 4] = ["SKU-0001", "SKU-0002", "SKU-0003", "SKU-0004"];

/// Order `i` of the mix: mostly good, some declined (over the limit), some to Antarctica.
fn order_mix(i: usize) -> (String, u32, Value) {
    let sku = SKUS[i % SKUS.len()].to_owned();
    let quantity = 1 + (i % 3) as u32;
    let body = match i % 10 {
        7 => order(&sku, quantity, 2_000_000, "DE"),
        9 => order(&sku, quantity, 100, "AQ"),
        _ => order(&sku, quantity, 100, "DE"),
    };
    (sku, quantity, body)
}

async fn terminal_status(p: &TestPlatform, id: Uuid) -> String {
    eventually(&format!("saga {id} terminal"), Duration::from_secs(180), || async {
        let s = p.saga(id).await;
        let status = s["status"].as_str().unwrap_or("").to_owned();
        matches!(status.as_str(), "COMPLETED" | "COMPENSATED" | "FAILED").then_some(status)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_concurrent_orders_on_two_instances_of_everything_conserve_stock() {
    let p = TestPlatform::new(TestConfig::default()).await;
    p.start_all(2).await;
    let mut before = HashMap::new();
    for sku in SKUS {
        before.insert(sku.to_owned(), p.stock(sku).await);
    }
    let orchestrators = p.urls(Service::Orchestrator);
    let submitted: Vec<(Uuid, String, u32)> = stream::iter(0..500)
        .map(|i| {
            let base = orchestrators[i % orchestrators.len()].clone();
            let p = &p;
            async move {
                let (sku, quantity, body) = order_mix(i);
                let resp = p.submit_to(&base, &body, None).await;
                assert_eq!(resp.status().as_u16(), 202);
                let v: Value = resp.json().await.unwrap();
                (Uuid::parse_str(v["saga_id"].as_str().unwrap()).unwrap(), sku, quantity)
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let mut bought: HashMap<String, i64> = HashMap::new();
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    let statuses: Vec<String> = stream::iter(submitted.iter().map(|(id, _, _)| *id))
        .map(|id| terminal_status(&p, id))
        .buffered(32)
        .collect()
        .await;
    for ((_, sku, quantity), status) in submitted.iter().zip(&statuses) {
        *outcomes.entry(status.clone()).or_default() += 1;
        if status == "COMPLETED" {
            *bought.entry(sku.clone()).or_default() += i64::from(*quantity);
        }
    }
    assert_eq!(outcomes.get("FAILED"), None, "{outcomes:?}");
    assert_eq!(outcomes.get("COMPLETED"), Some(&400), "{outcomes:?}");
    assert_eq!(outcomes.get("COMPENSATED"), Some(&100), "{outcomes:?}");
    for sku in SKUS {
        let (on_hand, reserved) = p.stock(sku).await;
        let (on_hand0, reserved0) = before[sku];
        assert_eq!(reserved, reserved0, "{sku}: nothing left reserved");
        assert_eq!(
            on_hand,
            on_hand0 - bought.get(sku).copied().unwrap_or(0),
            "{sku}: on_hand dropped by exactly what completed orders bought"
        );
    }
    p.shutdown().await;
}

/// Close every connection of the vhost through the management API, as a broker restart would.
async fn kill_connections(p: &TestPlatform) -> usize {
    let api = p.vhost.api();
    let conns: Vec<Value> =
        serde_json::from_value(p.vhost.management(&format!("vhosts/{}/connections", p.vhost.name)).await).unwrap();
    for c in &conns {
        let name = c["name"].as_str().unwrap();
        let encoded: String = name
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect();
        p.http
            .delete(format!("{api}/api/connections/{encoded}"))
            .basic_auth("guest", Some("guest"))
            .send()
            .await
            .unwrap();
    }
    conns.len()
}

#[tokio::test]
async fn processes_recover_when_the_broker_drops_their_connections() {
    let p = TestPlatform::running(TestConfig::default()).await;
    let first = p.start_saga(&order("SKU-0011", 1, 100, "DE")).await;
    p.wait_for_status(first, "COMPLETED", Duration::from_secs(30)).await;
    // The management API lists connections a moment after they open.
    let killed = eventually("connections listed", Duration::from_secs(20), || async {
        let n = kill_connections(&p).await;
        (n >= 5).then_some(n)
    })
    .await;
    assert!(killed >= 5);
    // Accepted while the processes reconnect: stays in the outbox until a relay can publish.
    let ids: Vec<Uuid> = {
        let mut v = Vec::new();
        for _ in 0..5 {
            v.push(p.start_saga(&order("SKU-0011", 1, 100, "DE")).await);
        }
        v
    };
    for id in ids {
        p.wait_for_status(id, "COMPLETED", Duration::from_secs(60)).await;
    }
    p.shutdown().await;
}
