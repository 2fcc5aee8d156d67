//! The payment gateway: authorize, capture, void by id, void by key with its tombstone, listing,
//! stats, and one apply per key under concurrency.

use serde_json::{Value, json};

use crate::helpers::spawn;

fn gateway_counts(stats: &Value) -> (u64, u64, u64) {
    let n = |f: &str| stats[f].as_u64().unwrap_or_else(|| panic!("{f} in {stats}"));
    (n("authorized_open"), n("captured"), n("voided"))
}

#[tokio::test]
async fn authorize_answers_201_and_a_repeated_key_gets_the_first_answer() {
    let g = spawn("gateway").await;
    let (status, first) =
        g.post("/authorizations", "o1:authorize", json!({"amount_cents": 1250, "currency": "EUR"})).await;
    assert_eq!(status, 201);
    assert_eq!(first["amount_cents"], 1250);
    assert_eq!(first["currency"], "EUR");
    let (status, again) =
        g.post("/authorizations", "o1:authorize", json!({"amount_cents": 1, "currency": "USD"})).await;
    assert_eq!((status, &again), (201, &first), "a repeat gets the first answer");
    let stats = g.sim.stats();
    assert_eq!((stats.calls, stats.operations, stats.errors), (2, 1, 0));
    assert_eq!(stats.authorized_open, Some(1));
    assert_eq!(g.sim.authorizations().len(), 1);
}

#[tokio::test]
async fn a_call_without_an_idempotency_key_is_400_and_not_counted() {
    let g = spawn("gateway").await;
    let resp = g
        .client
        .post(format!("{}/authorizations", g.base))
        .json(&json!({"amount_cents": 1, "currency": "EUR"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!((g.sim.stats().calls, g.sim.stats().operations), (0, 0));
}

#[tokio::test]
async fn capture_is_200_once_and_409_under_another_key_and_a_captured_one_cannot_be_voided() {
    let g = spawn("gateway").await;
    let id = g.authorize("o1:authorize").await;
    let (status, body) = g.post(&format!("/authorizations/{id}/capture"), "o1:capture", json!({})).await;
    assert_eq!((status, body), (200, json!({"authorization_id": id, "status": "captured"})));
    let (status, _) = g.post(&format!("/authorizations/{id}/capture"), "o1:capture", json!({})).await;
    assert_eq!(status, 200, "the same key replays");
    let (status, body) = g.post(&format!("/authorizations/{id}/capture"), "other:capture", json!({})).await;
    assert_eq!((status, body), (409, json!({"error": "already_captured"})));
    let (status, body) = g.post(&format!("/authorizations/{id}/void"), "o1:void", json!({})).await;
    assert_eq!((status, body), (409, json!({"error": "captured"})));
    let (status, body) =
        g.post("/authorizations/void-by-key", "o1:void2", json!({"authorization_key": "o1:authorize"})).await;
    assert_eq!((status, body), (409, json!({"error": "captured"})));
    assert_eq!(gateway_counts(&g.stats().await), (0, 1, 0));
    assert_eq!(g.sim.stats().operations, 2, "authorize and capture; refusals apply nothing");
}

#[tokio::test]
async fn capture_or_void_of_an_unknown_authorization_is_404() {
    let g = spawn("gateway").await;
    let (status, _) = g.post("/authorizations/auth-nope/capture", "k1", json!({})).await;
    assert_eq!(status, 404);
    let (status, _) = g.post("/authorizations/auth-nope/void", "k2", json!({})).await;
    assert_eq!(status, 404);
    assert_eq!(g.sim.stats().operations, 0);
}

#[tokio::test]
async fn a_voided_authorization_cannot_be_captured_and_voids_again_harmlessly() {
    let g = spawn("gateway").await;
    let id = g.authorize("o1:authorize").await;
    let (status, body) = g.post(&format!("/authorizations/{id}/void"), "o1:void", json!({})).await;
    assert_eq!((status, body), (200, json!({"authorization_id": id, "status": "voided"})));
    let (status, body) = g.post(&format!("/authorizations/{id}/capture"), "o1:capture", json!({})).await;
    assert_eq!((status, body), (409, json!({"error": "voided"})));
    let (status, _) = g.post(&format!("/authorizations/{id}/void"), "o1:void-again", json!({})).await;
    assert_eq!(status, 200, "voiding a voided authorization is done already");
    assert_eq!(gateway_counts(&g.stats().await), (0, 0, 1));
}

#[tokio::test]
async fn void_by_key_before_the_authorization_tombstones_the_key_and_the_late_one_is_refused() {
    let g = spawn("gateway").await;
    let (status, body) =
        g.post("/authorizations/void-by-key", "o1:void", json!({"authorization_key": "o1:authorize"})).await;
    assert_eq!((status, body), (200, json!({"status": "nothing_to_void"})));
    let (status, body) =
        g.post("/authorizations", "o1:authorize", json!({"amount_cents": 1250, "currency": "EUR"})).await;
    assert_eq!((status, body), (409, json!({"error": "voided"})));
    let (status, body) =
        g.post("/authorizations/void-by-key", "o1:void", json!({"authorization_key": "o1:authorize"})).await;
    assert_eq!((status, body), (200, json!({"status": "nothing_to_void"})), "the void's own key replays");
    assert!(g.sim.authorizations().is_empty(), "the late authorization applied nothing");
    assert_eq!(gateway_counts(&g.stats().await), (0, 0, 0));
    assert_eq!(g.sim.stats().operations, 1, "only the void by key");
    let id = g.authorize("o2:authorize").await;
    assert!(!id.is_empty(), "another key is not affected");
}

#[tokio::test]
async fn void_by_key_after_the_authorization_voids_it_and_its_repeat_is_refused() {
    let g = spawn("gateway").await;
    let id = g.authorize("o1:authorize").await;
    assert_eq!(gateway_counts(&g.stats().await), (1, 0, 0));
    let (status, body) =
        g.post("/authorizations/void-by-key", "o1:void", json!({"authorization_key": "o1:authorize"})).await;
    assert_eq!((status, body), (200, json!({"status": "voided", "authorization_id": id})));
    assert_eq!(gateway_counts(&g.stats().await), (0, 0, 1));
    let (status, body) =
        g.post("/authorizations/void-by-key", "o1:void-2", json!({"authorization_key": "o1:authorize"})).await;
    assert_eq!((status, body["status"].clone()), (200, json!("voided")), "an already voided one is voided");
    let (status, body) =
        g.post("/authorizations", "o1:authorize", json!({"amount_cents": 1250, "currency": "EUR"})).await;
    assert_eq!((status, body), (409, json!({"error": "voided"})), "a late repeat of the authorization is refused");
    let (status, body) = g.post(&format!("/authorizations/{id}/capture"), "o1:capture", json!({})).await;
    assert_eq!((status, body), (409, json!({"error": "voided"})));
    assert_eq!(g.sim.authorizations().len(), 1);
}

#[tokio::test]
async fn void_by_key_with_an_empty_key_is_422() {
    let g = spawn("gateway").await;
    let (status, _) = g.post("/authorizations/void-by-key", "o1:void", json!({"authorization_key": ""})).await;
    assert_eq!(status, 422);
    assert_eq!(g.sim.stats().operations, 0);
}

#[tokio::test]
async fn the_listing_shows_what_the_gateway_holds() {
    let g = spawn("gateway").await;
    let a = g.authorize("a:authorize").await;
    let b = g.authorize("b:authorize").await;
    g.post(&format!("/authorizations/{b}/capture"), "b:capture", json!({})).await;
    let list = g.get("/authorizations").await;
    assert_eq!(
        list,
        json!([
            {"authorization_id": a, "key": "a:authorize", "amount_cents": 1250, "currency": "EUR", "status": "authorized"},
            {"authorization_id": b, "key": "b:authorize", "amount_cents": 1250, "currency": "EUR", "status": "captured"},
        ])
    );
    let stats = g.stats().await;
    assert!(stats.get("booked").is_none() && stats.get("cancelled").is_none(), "no carrier fields: {stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_repeats_of_a_key_apply_once() {
    let g = spawn("gateway").await;
    g.behave(json!({"latency_ms": 20})).await;
    let calls =
        (0..16).map(|_| g.post("/authorizations", "same:authorize", json!({"amount_cents": 5, "currency": "EUR"})));
    let answers = futures_util::future::join_all(calls).await;
    let ids: std::collections::HashSet<String> =
        answers.iter().map(|(s, b)| format!("{s} {}", b["authorization_id"])).collect();
    assert_eq!(ids.len(), 1, "every call got the one first answer: {ids:?}");
    assert_eq!((g.sim.stats().calls, g.sim.stats().operations), (16, 1));
    assert_eq!(g.sim.authorizations().len(), 1);
}
