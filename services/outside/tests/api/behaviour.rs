//! The knobs: validation, outage, failing, refused and random errors (nothing applied), latency,
//! and answers lost after applying (`ambiguous_rate`, `ambiguous_mode`).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::spawn;

const AUTH: &str = "/authorizations";

fn auth_body() -> serde_json::Value {
    json!({"amount_cents": 1250, "currency": "EUR"})
}

#[tokio::test]
async fn behaviour_round_trips_and_bad_values_are_422() {
    let g = spawn("gateway").await;
    let all = json!({"latency_ms": 0, "error_rate": 0.25, "outage": false, "failing_keys": ["x"],
        "ambiguous_rate": 0.5, "ambiguous_mode": "drop", "refused_keys": ["y"]});
    assert_eq!(g.behave(all.clone()).await, (200, all.clone()));
    assert_eq!(g.get("/admin/behaviour").await, all);
    for bad in [
        json!({"error_rate": 1.5}),
        json!({"error_rate": -0.1}),
        json!({"ambiguous_rate": 1.01}),
        json!({"ambiguous_rate": -1}),
        json!({"ambiguous_mode": "sometimes"}),
        json!({"no_such_knob": true}),
        json!({"latency_ms": -5}),
    ] {
        let (status, body) = g.behave(bad.clone()).await;
        assert_eq!(status, 422, "{bad} -> {body}");
        assert!(body["error"].is_string(), "{body}");
    }
    assert_eq!(g.get("/admin/behaviour").await, all, "a refused behaviour changes nothing");
    let (status, body) = g.behave(json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(body["ambiguous_mode"], "mixed", "the default mode");
    assert_eq!(body["ambiguous_rate"], 0.0);
}

#[tokio::test]
async fn an_outage_answers_503_and_applies_nothing() {
    let g = spawn("gateway").await;
    g.behave(json!({"outage": true})).await;
    assert_eq!(g.post(AUTH, "o1:authorize", auth_body()).await, (503, json!({"error": "outage"})));
    g.behave(json!({})).await;
    g.authorize("o1:authorize").await;
    let s = g.sim.stats();
    assert_eq!((s.calls, s.errors, s.operations), (2, 1, 1));
}

#[tokio::test]
async fn failing_keys_and_error_rate_answer_500_and_apply_nothing() {
    let g = spawn("gateway").await;
    g.behave(json!({"failing_keys": ["poison"]})).await;
    assert_eq!(g.post(AUTH, "o-poison:authorize", auth_body()).await, (500, json!({"error": "failing key"})));
    g.authorize("o-fine:authorize").await;
    g.behave(json!({"error_rate": 1.0})).await;
    assert_eq!(g.post(AUTH, "o2:authorize", auth_body()).await, (500, json!({"error": "random error"})));
    let s = g.sim.stats();
    assert_eq!((s.calls, s.errors, s.operations, s.authorized_open), (3, 2, 1, Some(1)));
}

#[tokio::test]
async fn refused_keys_answer_422_and_apply_nothing_until_cleared() {
    let g = spawn("gateway").await;
    g.behave(json!({"refused_keys": ["incident"]})).await;
    let (status, body) = g.post(AUTH, "o-incident:authorize", auth_body()).await;
    assert_eq!((status, body["error"].clone()), (422, json!("refused")), "{body}");
    let (status, _) = g.post(AUTH, "o-incident:authorize", auth_body()).await;
    assert_eq!(status, 422, "a refusal is not recorded, and the knob still holds");
    let s = g.sim.stats();
    assert_eq!((s.calls, s.refused, s.errors, s.operations), (2, 2, 0, 0));
    assert!(g.sim.authorizations().is_empty());
    g.behave(json!({})).await;
    g.authorize("o-incident:authorize").await;
    assert_eq!(g.sim.stats().operations, 1);
}

#[tokio::test]
async fn latency_delays_every_keyed_call() {
    let g = spawn("gateway").await;
    g.behave(json!({"latency_ms": 150})).await;
    let start = Instant::now();
    g.authorize("o1:authorize").await;
    assert!(start.elapsed() >= Duration::from_millis(150), "{:?}", start.elapsed());
}

#[tokio::test]
async fn an_answer_lost_as_500_was_applied_and_a_retry_gets_the_stored_answer() {
    let g = spawn("gateway").await;
    g.behave(json!({"ambiguous_rate": 1.0, "ambiguous_mode": "error"})).await;
    let (status, body) = g.post(AUTH, "o1:authorize", auth_body()).await;
    assert_eq!((status, body), (500, json!({"error": "answer lost after applying"})));
    let held = g.sim.authorizations();
    assert_eq!(held.len(), 1, "applied although the answer was an error");
    let s = g.sim.stats();
    assert_eq!((s.operations, s.ambiguous, s.errors, s.authorized_open), (1, 1, 1, Some(1)));
    let (status, body) = g.post(AUTH, "o1:authorize", auth_body()).await;
    assert_eq!(status, 201, "a replay is answered, even at ambiguous_rate 1.0");
    assert_eq!(body["authorization_id"].as_str(), Some(held[0].authorization_id.as_str()));
    let s = g.sim.stats();
    assert_eq!((s.calls, s.operations, s.ambiguous), (2, 1, 1), "not applied twice");
}

#[tokio::test]
async fn a_dropped_answer_is_a_body_error_for_reqwest_and_a_retry_gets_the_stored_answer() {
    let g = spawn("gateway").await;
    g.behave(json!({"ambiguous_rate": 1.0, "ambiguous_mode": "drop"})).await;
    let resp = g
        .client
        .post(format!("{}{AUTH}", g.base))
        .header("Idempotency-Key", "o1:authorize")
        .json(&auth_body())
        .send()
        .await
        .expect("the status line arrives");
    assert_eq!(resp.status(), 200);
    let err = resp.bytes().await.expect_err("the body is cut off");
    assert!(err.is_body() || err.is_decode(), "a transport error while reading the body: {err:?}");
    assert!(!err.is_status() && !err.is_timeout());
    println!("reqwest reports a dropped answer as: {err} / {err:?}");
    let s = g.sim.stats();
    assert_eq!((s.operations, s.ambiguous, s.errors, s.authorized_open), (1, 1, 0, Some(1)));
    let id = g.authorize("o1:authorize").await;
    assert_eq!(id, g.sim.authorizations()[0].authorization_id);
    assert_eq!(g.sim.stats().operations, 1, "not applied twice");
}

#[tokio::test]
async fn mixed_mode_loses_answers_both_ways() {
    let g = spawn("gateway").await;
    g.behave(json!({"ambiguous_rate": 1.0})).await;
    let (mut errors, mut drops) = (0, 0);
    for n in 0..40 {
        let sent = g
            .client
            .post(format!("{}{AUTH}", g.base))
            .header("Idempotency-Key", format!("o{n}:authorize"))
            .json(&auth_body())
            .send()
            .await
            .expect("the status line arrives");
        match sent.status().as_u16() {
            500 => errors += 1,
            200 => {
                assert!(sent.bytes().await.is_err(), "a 200 under ambiguous_rate 1.0 is cut off");
                drops += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    // Even odds over 40 calls: all one way has probability 2^-39.
    assert!(errors > 0 && drops > 0, "errors {errors}, drops {drops}");
    let s = g.sim.stats();
    assert_eq!((s.operations, s.ambiguous, s.errors), (40, 40, errors));
}

#[tokio::test]
async fn an_undo_by_key_whose_answer_is_lost_was_applied_and_a_retry_gets_its_answer() {
    let c = spawn("carrier").await;
    let tracking = c.book("o1:schedule").await;
    c.behave(json!({"ambiguous_rate": 1.0, "ambiguous_mode": "error"})).await;
    let cancel = json!({"booking_key": "o1:schedule"});
    let (status, _) = c.post("/shipments/cancel-by-key", "o1:cancel", cancel.clone()).await;
    assert_eq!(status, 500);
    assert_eq!((c.sim.stats().booked, c.sim.stats().cancelled), (Some(0), Some(1)), "applied");
    let (status, body) = c.post("/shipments/cancel-by-key", "o1:cancel", cancel).await;
    assert_eq!((status, body), (200, json!({"status": "cancelled", "tracking_number": tracking})));
    assert_eq!(c.sim.stats().operations, 2);
}
