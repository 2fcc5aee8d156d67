//! Sagas that cannot go on by themselves, end to end: a refused command after the pivot opens an
//! incident (no more re-sends, everything stays held, visible in the status, the listing and the
//! metrics); operators retry, resolve, or give a saga up before its pivot (the shipment is
//! cancelled by its key, then payment voided and stock released); verbs that make no sense are
//! refused; a definition version the orchestrator does not know is an incident, not a panic.

use std::time::Duration;

use e2e::{Service, TestConfig, TestPlatform, metric, order};
use infra::testing::eventually;
use outside::Behaviour;
use serde_json::{Value, json};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(45);

async fn incident(p: &TestPlatform, id: Uuid) -> Value {
    p.wait_for(id, "an incident", WAIT, |s| !s["incident"].is_null()).await
}

async fn verb(p: &TestPlatform, id: Uuid, verb: &str, body: Value) -> (u16, Value) {
    let r = p.admin_post(&format!("/admin/sagas/{id}/{verb}"), body).await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_refused_capture_opens_an_incident_that_holds_everything_until_an_operator_retries() {
    let p = TestPlatform::running(TestConfig::fast_dead_letters()).await;
    let base = p.url(Service::Orchestrator);
    p.gateway.set_behaviour(Behaviour { refused_keys: vec![":capture".into()], ..Behaviour::default() });
    let before = p.stock("SKU-0004").await;
    let id = p.start_saga(&order("SKU-0004", 2, 150, "DE")).await;
    let saga = incident(&p, id).await;
    let i = &saga["incident"];
    assert_eq!(i["step"], "capture_payment", "{saga}");
    assert_eq!(i["dead_letter"]["queue"], "payment.commands.dlq");
    assert_eq!(i["dead_letter"]["reason"], "capture_refused");
    assert!(i["since"].is_string() && i["reason"].as_str().unwrap().contains("payment.capture"), "{i}");
    assert_eq!(saga["status"], "RUNNING");
    assert!(saga["deadline"].is_null(), "re-sends stop: no deadline armed");
    // Everything stays held: stock reserved, the authorization open at the gateway.
    assert_eq!(p.stock("SKU-0004").await, (before.0, before.1 + 2));
    assert_eq!(p.gateway.stats().authorized_open, Some(1));
    let listed = p.get_json(&format!("{base}/sagas?incident=true")).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(listed["items"][0]["saga_id"], id.to_string());
    let none = p.get_json(&format!("{base}/sagas?incident=false")).await;
    assert!(none["items"].as_array().unwrap().is_empty());
    let bad = p.http.get(format!("{base}/sagas?incident=maybe")).send().await.unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    let opened = "saga_incidents_opened_total{step=\"capture_payment\"}";
    assert_eq!(metric(&p.http, &base, opened).await, 1.0);
    eventually("the open-incidents gauge", WAIT, || async {
        (metric(&p.http, &base, "saga_incidents_open").await == 1.0).then_some(())
    })
    .await;

    // Verbs that make no sense here are refused, and nothing changes.
    let (status, problem) = verb(&p, id, "compensate", json!({"note": "undo it"})).await;
    assert_eq!(status, 409, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("pivot has succeeded"), "{problem}");
    assert_eq!(verb(&p, id, "resolve", json!({})).await.0, 400, "resolve needs a note");
    assert_eq!(verb(&p, id, "retry", json!({"bogus": 1})).await.0, 400);
    assert_eq!(verb(&p, Uuid::now_v7(), "retry", json!({})).await.0, 404);
    let anonymous = p.http.post(format!("{base}/admin/sagas/{id}/retry")).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);

    // The cause is fixed; an operator retries; the saga completes and the hold is captured once.
    p.gateway.set_behaviour(Behaviour::default());
    let (status, body) = verb(&p, id, "retry", json!({"note": "gateway fixed"})).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["incident"].is_null());
    let saga = p.wait_for_status(id, "COMPLETED", WAIT).await;
    let stats = p.gateway.stats();
    assert_eq!((stats.captured, stats.authorized_open), (Some(1), Some(0)), "{stats:?}");
    let timeline = saga["timeline"].as_array().unwrap();
    assert!(
        timeline
            .iter()
            .any(|e| e["kind"] == "operator" && e["note"].as_str().unwrap().contains("by alice: gateway fixed"))
    );
    assert!(timeline.iter().any(|e| e["kind"] == "incident"), "the incident is on the timeline");
    let audit: Value = p.admin_get(&format!("/admin/audit?saga_id={id}")).await.json().await.unwrap();
    let actions: Vec<&str> = audit["items"].as_array().unwrap().iter().map(|a| a["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["retry"], "only applied verbs are audited");
    assert_eq!(
        metric(&p.http, &base, "saga_operator_actions_total{outcome=\"refused\",verb=\"compensate\"}").await,
        1.0
    );
    eventually("the gauge drops", WAIT, || async {
        (metric(&p.http, &base, "saga_incidents_open").await == 0.0).then_some(())
    })
    .await;
    p.shutdown().await;
}

#[tokio::test]
async fn resolving_an_incident_counts_the_step_as_done_by_hand() {
    let p = TestPlatform::running(TestConfig::fast_dead_letters()).await;
    p.gateway.set_behaviour(Behaviour { refused_keys: vec![":capture".into()], ..Behaviour::default() });
    let id = p.start_saga(&order("SKU-0005", 1, 150, "DE")).await;
    incident(&p, id).await;
    let (status, body) = verb(&p, id, "resolve", json!({"note": "captured in the gateway console"})).await;
    assert_eq!(status, 200, "{body}");
    let saga = p.wait_for_status(id, "COMPLETED", WAIT).await;
    let capture = saga["steps"].as_array().unwrap().iter().find(|s| s["name"] == "capture_payment").cloned().unwrap();
    assert_eq!(capture["status"], "succeeded");
    assert!(capture["reason"].as_str().unwrap().contains("resolved by hand by alice"), "{capture}");
    let (status, problem) = verb(&p, id, "resolve", json!({"note": "again"})).await;
    assert_eq!(status, 409, "{problem}");
    p.shutdown().await;
}

#[tokio::test]
async fn an_operator_gives_up_a_saga_stuck_at_its_pivot_and_the_shipment_is_cancelled_by_key() {
    let p = TestPlatform::running(TestConfig::fast_dead_letters()).await;
    p.carrier.set_behaviour(Behaviour { failing_keys: vec![":book".into()], ..Behaviour::default() });
    let before = p.stock("SKU-0006").await;
    let id = p.start_saga(&order("SKU-0006", 3, 150, "DE")).await;
    let saga = incident(&p, id).await;
    assert_eq!(saga["incident"]["step"], "schedule_shipment", "{saga}");
    assert_eq!(saga["incident"]["dead_letter"]["reason"], "retries_exhausted");
    let (status, body) = verb(&p, id, "compensate", json!({"note": "customer cancelled"})).await;
    assert_eq!(status, 200, "{body}");
    let saga = p.wait_for_status(id, "COMPENSATED", WAIT).await;
    let names: Vec<(String, String)> = e2e::steps(&saga);
    assert_eq!(names[2], ("schedule_shipment".into(), "compensated".into()), "{saga}");
    assert!(saga["failure_reason"].as_str().unwrap().contains("customer cancelled"));
    assert_eq!(p.stock("SKU-0006").await, before, "stock released");
    let stats = p.gateway.stats();
    assert_eq!((stats.authorized_open, stats.voided), (Some(0), Some(1)), "{stats:?}");
    // The dead-lettered schedule replayed late is refused: nothing gets booked.
    p.carrier.set_behaviour(Behaviour::default());
    let r: Value =
        p.admin_post("/admin/dlq/shipping.commands.dlq/replay", json!({"all": true})).await.json().await.unwrap();
    assert_eq!(r["replayed"], 1, "{r}");
    let shipment: Value = eventually("the late schedule is answered", WAIT, || async {
        let v = p.get_json(&format!("{}/shipments/{id}", p.url(Service::Shipping))).await;
        (v["status"] == "cancelled").then_some(v)
    })
    .await;
    assert!(shipment["tracking_number"].is_null());
    let saga = p
        .wait_for(id, "the late reply is ignored", WAIT, |s| {
            s["timeline"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["kind"] == "ignored" && e["note"].as_str().unwrap().contains("shipping.rejected"))
        })
        .await;
    assert_eq!(saga["status"], "COMPENSATED");
    assert_eq!(p.carrier.stats().booked, Some(0));
    p.shutdown().await;
}

#[tokio::test]
async fn a_definition_version_this_orchestrator_does_not_know_is_an_incident_not_a_panic() {
    let p = TestPlatform::new(TestConfig {
        step_timeout: Duration::from_millis(500),
        max_step_timeout: Duration::from_secs(2),
        ..TestConfig::default()
    })
    .await;
    p.start(Service::Orchestrator).await;
    let id = p.start_saga(&order("SKU-0007", 1, 150, "DE")).await;
    // Written by a newer orchestrator, say; this one cannot know what its steps mean.
    let db = sqlx::PgPool::connect(p.database_url(Service::Orchestrator)).await.unwrap();
    sqlx::query("UPDATE sagas SET definition_version = 99 WHERE id = $1").bind(id).execute(&db).await.unwrap();
    let saga = incident(&p, id).await;
    assert!(saga["incident"]["reason"].as_str().unwrap().contains("order v99 is unknown"), "{saga}");
    assert!(saga["deadline"].is_null());
    let (status, problem) = verb(&p, id, "retry", json!({})).await;
    assert_eq!(status, 409, "{problem}");
    // A reply that comes meanwhile is not consumed: it waits in delayed rounds.
    p.start(Service::Inventory).await;
    let base = p.url(Service::Orchestrator);
    eventually("the reply is parked", WAIT, || async {
        let parked = metric(&p.http, &base, "saga_messages_retried_total{queue=\"orchestrator.replies\"}").await;
        (parked >= 1.0).then_some(())
    })
    .await;
    // Back on a version it knows (the newer orchestrator was rolled back), the parked reply is
    // applied when it comes back, and the saga goes on by itself.
    sqlx::query("UPDATE sagas SET definition_version = 2 WHERE id = $1").bind(id).execute(&db).await.unwrap();
    let saga = p.wait_for(id, "the saga moves on", WAIT, |s| s["current_step"] == "authorize_payment").await;
    assert!(saga["incident"].is_null(), "{saga}");
    for s in [Service::Payment, Service::Shipping, Service::Notification] {
        p.start(s).await;
    }
    p.wait_for_status(id, "COMPLETED", WAIT).await;
    db.close().await;
    p.shutdown().await;
}
