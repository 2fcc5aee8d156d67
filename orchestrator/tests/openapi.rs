//! The orchestrator's OpenAPI document (`GET /openapi.json`), on a live orchestrator with its own
//! vhost and database: it lists exactly the routes the router serves, every error it declares is
//! `application/problem+json`, the operator routes carry the bearer scheme; `openapi-spec-validator`
//! accepts it, and Schemathesis, run against the live process with its default checks, finds
//! nothing. Each case Schemathesis once found is kept below as a plain test.

use std::collections::BTreeSet;

use infra::openapi_checks::{
    assert_served_as_documented, fetch_document, operations, python_tools, schemathesis, validate_spec,
};
use infra::testing::{TestDb, TestVhost, spawn_app};
use orchestrator::settings::OrchestratorSettings;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "openapi-operator-token";

/// One orchestrator with an operator, running until dropped.
struct Running {
    base: String,
    token: CancellationToken,
    _db: TestDb,
    _vhost: TestVhost,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

async fn start() -> Running {
    let (vhost, db) = tokio::join!(TestVhost::create("orch_openapi"), TestDb::create("orch_openapi"));
    let mut settings = OrchestratorSettings::for_tests(&vhost.amqp_url, &db.url);
    settings.admin_operators = orchestrator::admin::parse_operators(&format!("alice={TOKEN}")).expect("operators");
    let app = orchestrator::build(settings).await.expect("orchestrator starts");
    let base = format!("http://{}", app.local_addr());
    let (token, _handle) = spawn_app(app);
    Running { base, token, _db: db, _vhost: vhost }
}

/// The orchestrator's API, as the README lists it.
const ROUTES: [(&str, &str); 16] = [
    ("GET", "/health/live"),
    ("GET", "/health/ready"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("POST", "/orders"),
    ("GET", "/sagas"),
    ("GET", "/sagas/{id}"),
    ("GET", "/admin/dlq"),
    ("GET", "/admin/dlq/{queue}/messages"),
    ("GET", "/admin/dlq/{queue}/messages/{message_id}"),
    ("POST", "/admin/dlq/{queue}/replay"),
    ("POST", "/admin/dlq/{queue}/discard"),
    ("POST", "/admin/sagas/{id}/retry"),
    ("POST", "/admin/sagas/{id}/compensate"),
    ("POST", "/admin/sagas/{id}/resolve"),
    ("GET", "/admin/audit"),
];

/// `(METHOD, path, operation)` for every operation of `doc`.
fn each_operation(doc: &Value) -> Vec<(String, String, Value)> {
    operations(doc)
        .into_iter()
        .map(|(method, path)| {
            let operation = doc["paths"][&path][method.to_ascii_lowercase()].clone();
            (method, path, operation)
        })
        .collect()
}

#[tokio::test]
async fn the_document_lists_exactly_the_routes_the_router_serves() {
    let o = start().await;
    let doc = fetch_document(&o.base).await;
    let expected: BTreeSet<(String, String)> = ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    assert_eq!(operations(&doc), expected);
    assert_served_as_documented(&o.base, &doc, Some(TOKEN)).await;
}

#[tokio::test]
async fn every_error_is_a_problem_and_operator_routes_need_the_bearer_token() {
    let o = start().await;
    let doc = fetch_document(&o.base).await;
    assert_eq!(doc["components"]["securitySchemes"]["operator_token"]["scheme"], "bearer");
    for (method, path, operation) in each_operation(&doc) {
        let operator = path.starts_with("/admin/");
        let security = &operation["security"];
        if operator {
            assert_eq!(security, &serde_json::json!([{"operator_token": []}]), "{method} {path}");
        } else {
            assert!(security.is_null(), "{method} {path}");
        }
        let answers = operation["responses"].as_object().expect("responses");
        let mut errors: Vec<&str> = vec!["413", "500", "503"];
        if operator {
            errors.push("401");
        }
        for status in errors {
            assert!(answers.contains_key(status), "{method} {path} does not declare {status}");
        }
        for (status, answer) in answers.iter().filter(|(s, _)| s.starts_with('4') || s.starts_with('5')) {
            let problem = &answer["content"]["application/problem+json"]["schema"]["$ref"];
            assert_eq!(problem, "#/components/schemas/Problem", "{method} {path} {status}");
        }
    }
    let post_orders = &doc["paths"]["/orders"]["post"];
    let key = post_orders["parameters"].as_array().expect("parameters").iter().find(|p| p["in"] == "header");
    assert_eq!(key.map(|k| k["name"].clone()), Some("Idempotency-Key".into()));
    for status in ["400", "413", "415", "422"] {
        assert!(post_orders["responses"].get(status).is_some(), "POST /orders {status}");
    }
}

#[tokio::test]
async fn the_document_carries_the_order_rules() {
    let o = start().await;
    let doc = fetch_document(&o.base).await;
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["OrderRequest"]["additionalProperties"], false);
    assert_eq!(schemas["Address"]["additionalProperties"], false);
    assert_eq!(schemas["OrderRequest"]["properties"]["items"]["maxItems"], 100);
    assert_eq!(schemas["OrderItem"]["properties"]["quantity"]["maximum"], orchestrator::validate::MAX_QUANTITY);
    let countries = schemas["Address"]["properties"]["country"]["enum"].as_array().map(Vec::len);
    assert_eq!(countries, Some(contracts::countries::ISO_3166_ALPHA2.len()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_spec_validator_accepts_the_document() {
    let Some(tools) = python_tools() else { return };
    let o = start().await;
    let doc = fetch_document(&o.base).await;
    tokio::task::spawn_blocking(move || validate_spec(&tools, &doc)).await.expect("the validator ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing() {
    let Some(tools) = python_tools() else { return };
    let o = start().await;
    let args: Vec<String> = [
        "--header",
        &format!("Authorization: Bearer {TOKEN}"),
        "--max-examples",
        "25",
        "--seed",
        "20261201",
        "--request-timeout",
        "10",
        "--workers",
        "2",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let base = o.base.clone();
    tokio::task::spawn_blocking(move || schemathesis(&tools, &base, &args)).await.expect("schemathesis ran");
}
