//! The orchestrator's HTTP surface, started in-process on its own vhost and database: the limits
//! every route has (public, operator and health routes alike).

use infra::testing::{TestDb, TestVhost, spawn_app};
use orchestrator::settings::OrchestratorSettings;
use reqwest::StatusCode;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// One orchestrator, running until dropped.
struct Running {
    base: String,
    http: reqwest::Client,
    token: CancellationToken,
    _db: TestDb,
    _vhost: TestVhost,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

async fn start(configure: impl FnOnce(&mut OrchestratorSettings)) -> Running {
    let (vhost, db) = tokio::join!(TestVhost::create("orch_api"), TestDb::create("orch_api"));
    let mut settings = OrchestratorSettings::for_tests(&vhost.amqp_url, &db.url);
    configure(&mut settings);
    let app = orchestrator::build(settings).await.expect("orchestrator starts");
    let base = format!("http://{}", app.local_addr());
    let (token, _handle) = spawn_app(app);
    Running { base, http: reqwest::Client::new(), token, _db: db, _vhost: vhost }
}

/// Status, content type and JSON body (`Null` if not JSON).
async fn answer(response: reqwest::Response) -> (StatusCode, String, Value) {
    let status = response.status();
    let content_type =
        response.headers().get("content-type").map(|v| v.to_str().unwrap_or_default().to_owned()).unwrap_or_default();
    let body = response.bytes().await.expect("body");
    (status, content_type, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn every_route_refuses_an_oversize_body_with_a_problem() {
    let o = start(|s| {
        s.common.http.max_body_bytes = 16 * 1024;
        s.max_body_bytes = 4 * 1024;
    })
    .await;
    let over_every_route = vec![b' '; 32 * 1024];
    for (method, path) in [
        (reqwest::Method::POST, "/orders"),
        (reqwest::Method::GET, "/sagas"),
        (reqwest::Method::POST, "/admin/dlq/inventory.commands.dlq/replay"),
        (reqwest::Method::GET, "/health/live"),
        (reqwest::Method::GET, "/metrics"),
    ] {
        let sent = o.http.request(method, format!("{}{path}", o.base)).body(over_every_route.clone());
        let (status, content_type, body) = answer(sent.send().await.expect("an answer")).await;
        assert_eq!(
            (status, content_type.as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, "application/problem+json"),
            "{path}"
        );
        assert_eq!(body["status"], 413, "{path}");
    }
    // POST /orders keeps its own, smaller limit (ORCHESTRATOR_MAX_BODY_BYTES).
    let over_orders = format!("{{\"customer_id\": \"{}\"}}", "x".repeat(8 * 1024));
    let sent = o.http.post(format!("{}/orders", o.base)).header("content-type", "application/json").body(over_orders);
    let (status, content_type, _) = answer(sent.send().await.expect("an answer")).await;
    assert_eq!((status, content_type.as_str()), (StatusCode::PAYLOAD_TOO_LARGE, "application/problem+json"));
    // Small requests pass.
    let live = o.http.get(format!("{}/health/live", o.base)).send().await.expect("an answer");
    assert_eq!(live.status(), StatusCode::OK);
}
