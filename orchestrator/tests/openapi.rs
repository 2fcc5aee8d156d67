//! The orchestrator's OpenAPI document (`GET /openapi.json`), on a live orchestrator with its own
//! vhost and database: it lists exactly the routes the router serves, every error it declares is
//! `application/problem+json`, the operator routes carry the bearer scheme; `openapi-spec-validator`
//! accepts it, and Schemathesis, run against the live process with its default checks, finds
//! nothing (with dead letters in a queue, so that the dead-letter routes have messages to list, show,
//! replay and discard). Each case Schemathesis once found is kept below as a plain test.

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
    vhost: TestVhost,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

async fn start() -> Running {
    let (vhost, db) = tokio::join!(TestVhost::create("orch_openapi"), TestDb::create("orch_openapi"));
    let mut settings = OrchestratorSettings::for_tests(&vhost.amqp_url, &db.url);
    settings.admin_operators =
        orchestrator::admin::Operators::parse(&format!("alice={TOKEN}"), "ORCHESTRATOR_ADMIN_TOKENS")
            .expect("operators");
    let app = orchestrator::build(settings).await.expect("orchestrator starts");
    let base = format!("http://{}", app.local_addr());
    let (token, _handle) = spawn_app(app);
    Running { base, token, _db: db, vhost }
}

/// The orchestrator's API, as the README lists it.
const ROUTES: [(&str, &str); 18] = [
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
    ("GET", "/admin/audit/consistency"),
    ("GET", "/events"),
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
        let operator = path.starts_with("/admin/") || path == "/events";
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

/// Put a few dead letters in `queue`, as a participant's transport leaves them, so that the
/// dead-letter routes have messages to list, show, replay and discard.
async fn dead_letters(o: &Running, queue: &str, count: usize) {
    use contracts::envelope::headers;
    use infra::amqp::codec::{HeaderValue, with_headers};
    let broker = infra::amqp::Broker::new(&o.vhost.amqp_url, 1, "test").expect("a broker");
    let publisher = infra::amqp::Publisher::new(broker);
    for _ in 0..count {
        let props = lapin::BasicProperties::default()
            .with_message_id(uuid::Uuid::now_v7().to_string().into())
            .with_type("payment.capture".into())
            .with_correlation_id(uuid::Uuid::now_v7().to_string().into());
        let text = |s: &str| HeaderValue::Str(s.to_owned());
        let props = with_headers(
            props,
            &[
                (headers::DEAD_LETTER_REASON.into(), text("retries_exhausted")),
                (headers::DEAD_LETTER_QUEUE.into(), text("payment.commands")),
                (headers::ORIGINAL_EXCHANGE.into(), text("saga.commands")),
                (headers::ORIGINAL_ROUTING_KEY.into(), text("payment.capture")),
            ],
        );
        publisher.publish_raw("", queue, true, props, br#"{"order_id": "x"}"#).await.expect("a dead letter");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing() {
    let Some(tools) = python_tools() else { return };
    let o = start().await;
    dead_letters(&o, "payment.commands.dlq", 40).await;
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
        // The consistency auditor reads the participants, which this test does not run (a 503
        // here); tests/tests/audit.rs runs Schemathesis on it against a whole platform.
        "--exclude-path",
        "/admin/audit/consistency",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let base = o.base.clone();
    tokio::task::spawn_blocking(move || schemathesis(&tools, &base, &args)).await.expect("schemathesis ran");
}

/// A valid order whose first line is `line` (JSON text).
fn order_with_line(line: &str) -> String {
    format!(
        r#"{{"customer_id": "c-42", "currency": "EUR", "items": [{line}],
            "shipping_address": {{"name": "Ada", "line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"}}}}"#
    )
}

async fn post_order(o: &Running, body: String) -> (u16, Value) {
    let sent = reqwest::Client::new()
        .post(format!("{}/orders", o.base))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("an answer");
    let status = sent.status().as_u16();
    (status, sent.json().await.unwrap_or(Value::Null))
}

/// Found by Schemathesis: `"quantity": 9999.0` is an integer to JSON Schema, as the document says,
/// and was refused with `422`.
#[tokio::test]
async fn a_whole_number_written_with_a_fraction_is_taken() {
    let o = start().await;
    let line = r#"{"sku": "SKU-0001", "quantity": 9999.0, "unit_price_cents": 1.999e3}"#;
    let (status, body) = post_order(&o, order_with_line(line)).await;
    assert_eq!(status, 202, "{body}");
    let line = r#"{"sku": "SKU-0001", "quantity": 2.5, "unit_price_cents": 1999}"#;
    assert_eq!(post_order(&o, order_with_line(line)).await.0, 422);
}

/// Found by Schemathesis: a SKU of 64 characters (the document's `maxLength`) was refused when they
/// took more than 64 bytes.
#[tokio::test]
async fn an_id_of_64_wide_characters_is_taken() {
    let o = start().await;
    let sku = "𝕏".repeat(64);
    let line = format!(r#"{{"sku": "{sku}", "quantity": 1, "unit_price_cents": 1999}}"#);
    let (status, body) = post_order(&o, order_with_line(&line)).await;
    assert_eq!(status, 202, "{body}");
    let line = format!(r#"{{"sku": "{sku}𝕏", "quantity": 1, "unit_price_cents": 1999}}"#);
    let (status, body) = post_order(&o, order_with_line(&line)).await;
    assert_eq!((status, &body["errors"][0]["field"]), (422, &Value::from("items[0].sku")), "{body}");
}

/// Found by Schemathesis: the body of `retry` and `compensate` was documented as nullable, and
/// `null` is refused; it is optional (no body is no note), and never `null`.
#[tokio::test]
async fn a_verb_body_is_optional_and_never_null() {
    let o = start().await;
    let doc = fetch_document(&o.base).await;
    for verb in ["retry", "compensate"] {
        let body = &doc["paths"][format!("/admin/sagas/{{id}}/{verb}")]["post"]["requestBody"];
        assert_eq!(body["required"], false, "{verb}");
        let schema = &body["content"]["application/json"]["schema"];
        assert_eq!(schema["$ref"], "#/components/schemas/VerbBody", "{verb}: {schema}");
    }
    let url = format!("{}/admin/sagas/{}/retry", o.base, uuid::Uuid::nil());
    let client = reqwest::Client::new();
    let none = client.post(&url).bearer_auth(TOKEN).send().await.expect("an answer");
    assert_eq!(none.status().as_u16(), 404, "no body is no note: the saga is looked up");
    let null = client.post(&url).bearer_auth(TOKEN).header("content-type", "application/json").body("null");
    assert_eq!(null.send().await.expect("an answer").status().as_u16(), 400);
}

/// A NUL cannot be stored (PostgreSQL text refuses it): an operator's note with one is a `400`,
/// not a failed transaction (`500`), as is a discard's reason with one.
#[tokio::test]
async fn a_nul_in_an_operators_note_or_reason_is_a_400() {
    let o = start().await;
    let line = r#"{"sku": "SKU-0001", "quantity": 1, "unit_price_cents": 1999}"#;
    let (status, body) = post_order(&o, order_with_line(line)).await;
    assert_eq!(status, 202, "{body}");
    let saga = body["saga_id"].as_str().expect("a saga id").to_owned();
    let client = reqwest::Client::new();
    for verb in ["retry", "compensate", "resolve"] {
        let url = format!("{}/admin/sagas/{saga}/{verb}", o.base);
        let sent = client.post(&url).bearer_auth(TOKEN).json(&serde_json::json!({"note": "fixed\u{0}by hand"}));
        let answer = sent.send().await.expect("an answer");
        assert_eq!(answer.status().as_u16(), 400, "{verb}");
    }
    let url = format!("{}/admin/dlq/payment.commands.dlq/discard", o.base);
    let sent = client.post(&url).bearer_auth(TOKEN).json(&serde_json::json!({"all": true, "reason": "a\u{0}b"}));
    assert_eq!(sent.send().await.expect("an answer").status().as_u16(), 400);
}
