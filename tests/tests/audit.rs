//! The consistency auditor on a whole platform: after sagas that complete and compensate, every
//! participant and outside system agrees; a disagreement made by hand in a participant's table, a
//! reservation or a gateway hold for an order no saga knows, and a broken stock ledger are each
//! reported with their kind and counted in `saga_audit_violations`; a participant that cannot be
//! read is a `503`. The `saga-audit` binary says the same with its exit status, and Schemathesis
//! checks the endpoint against its OpenAPI description.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use e2e::{OPERATOR_TOKEN, Service, TestConfig, TestPlatform, metric, order};
use serde_json::{Value, json};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(45);

async fn audit(p: &TestPlatform, query: &str) -> (u16, Value) {
    let r = p.admin_get(&format!("/admin/audit/consistency{query}")).await;
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn kinds(report: &Value) -> Vec<String> {
    let mut k: Vec<String> =
        report["violations"].as_array().unwrap().iter().map(|v| v["kind"].as_str().unwrap().to_owned()).collect();
    k.sort();
    k
}

/// The `saga-audit` binary, built if needed.
fn saga_audit() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", "orchestrator", "--bin", "saga-audit"])
        .status()
        .expect("cargo build");
    assert!(status.success());
    let exe = std::env::current_exe().expect("test path");
    exe.parent().and_then(|deps| deps.parent()).expect("profile dir").join("saga-audit")
}

/// Run `saga-audit` against `url` (on a blocking thread: the platform it asks runs in this test's
/// runtime).
async fn run_saga_audit(bin: &Path, url: &str) -> (Option<i32>, String) {
    let (bin, url) = (bin.to_path_buf(), url.to_owned());
    tokio::task::spawn_blocking(move || saga_audit_blocking(&bin, &url)).await.expect("saga-audit thread")
}

fn saga_audit_blocking(bin: &Path, url: &str) -> (Option<i32>, String) {
    let out = Command::new(bin)
        .args(["--url", url])
        .env("SAGA_AUDIT_TOKEN", OPERATOR_TOKEN.trim_start_matches("Bearer "))
        .output()
        .expect("run saga-audit");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

async fn sagas(p: &TestPlatform) -> usize {
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(p.start_saga(&order(&format!("SKU-{:04}", 1 + i), 2, 150, "DE")).await);
    }
    ids.push(p.start_saga(&order("SKU-0001", 1, 100, "AQ")).await);
    ids.push(p.start_saga(&order("SKU-0002", 3, 500_000, "DE")).await);
    ids.push(p.start_saga(&order("SKU-9999", 1, 100, "DE")).await);
    for id in &ids {
        p.wait_for(*id, "a terminal status", WAIT, |s| {
            matches!(s["status"].as_str(), Some("COMPLETED" | "COMPENSATED"))
        })
        .await;
    }
    ids.len()
}

#[tokio::test]
async fn the_auditor_finds_a_consistent_platform_and_every_disagreement_made_by_hand() {
    let p = TestPlatform::running(TestConfig::default()).await;
    let checked = sagas(&p).await;
    let (status, report) = audit(&p, "").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["checked"], checked, "{report}");
    assert_eq!(report["violations"], json!([]), "{report}");
    let bin = tokio::task::spawn_blocking(saga_audit).await.expect("build saga-audit");
    let base = p.url(Service::Orchestrator);
    let (code, text) = run_saga_audit(&bin, &base).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains(&format!("checked {checked} terminal saga(s): 0 violation(s)")), "{text}");
    let (status, none) = audit(&p, "?since=2999-01-01T00:00:00Z").await;
    assert_eq!((status, none["checked"].as_u64()), (200, Some(0)));
    assert_eq!(audit(&p, "?since=yesterday").await.0, 400);

    // Disagreements, made by hand where each participant keeps its records.
    let completed: Value = p.get_json(&format!("{base}/sagas?status=COMPLETED&limit=1")).await;
    let done = Uuid::parse_str(completed["items"][0]["saga_id"].as_str().unwrap()).unwrap();
    let payment = sqlx::PgPool::connect(p.database_url(Service::Payment)).await.unwrap();
    sqlx::query("UPDATE payments SET status = 'authorized' WHERE order_id = $1")
        .bind(done)
        .execute(&payment)
        .await
        .unwrap();
    let inventory = sqlx::PgPool::connect(p.database_url(Service::Inventory)).await.unwrap();
    let stranger = Uuid::now_v7();
    sqlx::query("INSERT INTO reservations (order_id, sku, quantity, status) VALUES ($1, 'SKU-0012', 5, 'held')")
        .bind(stranger)
        .execute(&inventory)
        .await
        .unwrap();
    sqlx::query("UPDATE stock SET on_hand = on_hand - 1 WHERE sku = 'SKU-0011'").execute(&inventory).await.unwrap();
    let gateway = p.gateway_url();
    let hold = p
        .http
        .post(format!("{gateway}/authorizations"))
        .header("Idempotency-Key", format!("payment:{}:authorize", Uuid::now_v7()))
        .json(&json!({"amount_cents": 100, "currency": "EUR"}))
        .send()
        .await
        .unwrap();
    assert_eq!(hold.status().as_u16(), 201);
    let (status, report) = audit(&p, "").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        kinds(&report),
        [
            "held_for_unknown_saga",
            "held_for_unknown_saga",
            "payment_not_captured",
            "stock_not_conserved",
            "stock_reserved_mismatch"
        ],
        "{report}"
    );
    let about: Vec<&Value> =
        report["violations"].as_array().unwrap().iter().filter(|v| v["kind"] == "payment_not_captured").collect();
    assert_eq!(about[0]["saga_id"], done.to_string());
    let series = "saga_audit_violations{kind=\"held_for_unknown_saga\"}";
    assert_eq!(metric(&p.http, &base, series).await, 2.0);
    let (code, text) = run_saga_audit(&bin, &base).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("payment_not_captured") && text.contains(&done.to_string()), "{text}");

    // A participant that cannot be read: the audit cannot answer.
    p.stop(Service::Inventory).await;
    let (status, problem) = audit(&p, "").await;
    assert_eq!(status, 503, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("cannot read http://"), "{problem}");
    let (code, text) = run_saga_audit(&bin, &base).await;
    assert_eq!(code, Some(2), "{text}");
    payment.close().await;
    inventory.close().await;
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_checks_the_consistency_endpoint_against_a_whole_platform() {
    let Some(tools) = infra::openapi_checks::python_tools() else { return };
    let p = TestPlatform::running(TestConfig::default()).await;
    sagas(&p).await;
    let base = p.url(Service::Orchestrator);
    let args: Vec<String> = [
        "--header",
        &format!("Authorization: {OPERATOR_TOKEN}"),
        "--include-path",
        "/admin/audit/consistency",
        "--max-examples",
        "20",
        "--seed",
        "20261201",
        "--request-timeout",
        "20",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    tokio::task::spawn_blocking(move || infra::openapi_checks::schemathesis(&tools, &base, &args)).await.unwrap();
    p.shutdown().await;
}
