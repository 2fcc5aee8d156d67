//! What clients see while PostgreSQL cannot be reached (a network partition between the
//! orchestrator and a real PostgreSQL, made with a TCP proxy): `POST /orders` and `GET /sagas/...`
//! answer `503` problem+json with `Retry-After`, never a `500`; readiness says the database is
//! the dependency that is down; once it is back, orders are taken again and nothing accepted
//! before was lost.

use std::time::Duration;

use infra::testing::{TcpProxy, TestDb, TestVhost, eventually, spawn_app};
use orchestrator::settings::OrchestratorSettings;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

fn order() -> Value {
    json!({
        "customer_id": "c-1",
        "currency": "EUR",
        "items": [{"sku": "SKU-0001", "quantity": 1, "unit_price_cents": 100}],
        "shipping_address": {"name": "A", "line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"}
    })
}

#[tokio::test]
async fn while_the_database_is_unreachable_clients_get_503_with_retry_after_and_nothing_is_lost() {
    let (vhost, db) = tokio::join!(TestVhost::create("orch_outage"), TestDb::create("orch_outage"));
    let proxy = TcpProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let url = db.url.replace("127.0.0.1:5432", &proxy.addr.to_string());
    assert_ne!(url, db.url, "the database URL goes through the proxy");
    let app = orchestrator::build(OrchestratorSettings::for_tests(&vhost.amqp_url, &url)).await.expect("starts");
    let base = format!("http://{}", app.local_addr());
    let (token, handle) = spawn_app(app);
    let http = reqwest::Client::new();
    let before = http.post(format!("{base}/orders")).json(&order()).send().await.unwrap();
    assert_eq!(before.status().as_u16(), 202);
    let saga: Value = before.json().await.unwrap();
    let saga_id = saga["saga_id"].as_str().unwrap().to_owned();

    proxy.cut();
    for (what, request) in [
        ("POST /orders", http.post(format!("{base}/orders")).json(&order())),
        ("GET /sagas/{id}", http.get(format!("{base}/sagas/{saga_id}"))),
        ("GET /sagas", http.get(format!("{base}/sagas"))),
    ] {
        let r = request.send().await.unwrap();
        assert_eq!(r.status().as_u16(), 503, "{what}");
        assert_eq!(r.headers()["retry-after"], "5", "{what}");
        assert_eq!(r.headers()["content-type"], "application/problem+json", "{what}");
        let problem: Value = r.json().await.unwrap();
        assert!(problem["detail"].as_str().unwrap().contains("database cannot be reached"), "{what}: {problem}");
    }
    let ready = http.get(format!("{base}/health/ready")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    let checks: Value = ready.json().await.unwrap();
    assert_eq!(checks["checks"]["database"], "unreachable", "{checks}");
    assert_eq!(checks["checks"]["broker"], "ok", "{checks}");

    proxy.restore().await;
    eventually("orders are taken again", WAIT, || async {
        let r = http.post(format!("{base}/orders")).json(&order()).send().await.ok()?;
        (r.status().as_u16() == 202).then_some(())
    })
    .await;
    let kept: Value = http.get(format!("{base}/sagas/{saga_id}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(kept["saga_id"], saga_id, "the saga accepted before the outage is still there");
    token.cancel();
    handle.await.unwrap().unwrap();
}
