//! `infra::resilience::HttpDependency` against the simulator: a dropped answer is transient (the
//! retry with the same key recovers it), a refusal is permanent.

use std::time::Duration;

use infra::resilience::{CallError, Dependency, HttpDependency, HttpError, Policy, ResilienceMetrics};
use serde_json::json;

use crate::helpers::{TestSim, spawn};

/// A client with `attempts` calls per `post`, fast retries, and a breaker that stays closed.
fn client(sim: &TestSim, attempts: usize) -> HttpDependency {
    let policy = Policy {
        breaker_failures: 100,
        breaker_open_min: Duration::from_millis(100),
        breaker_open_max: Duration::from_millis(100),
        attempts,
        retry_base: Duration::from_millis(1),
        retry_max: Duration::from_millis(2),
    };
    let registry = prometheus::Registry::new();
    let dependency = Dependency::new("gateway", policy, ResilienceMetrics::register(&registry).expect("metrics"));
    HttpDependency::new(&sim.base, Duration::from_secs(5), dependency).expect("client")
}

fn auth_body() -> serde_json::Value {
    json!({"amount_cents": 1250, "currency": "EUR"})
}

#[tokio::test]
async fn a_dropped_answer_is_retried_and_the_retry_gets_the_stored_answer() {
    let g = spawn("gateway").await;
    g.behave(json!({"ambiguous_rate": 1.0, "ambiguous_mode": "drop"})).await;
    let answer = client(&g, 3).post("/authorizations", "o1:authorize", &auth_body()).await.expect("recovered");
    let held = g.sim.authorizations();
    assert_eq!(held.len(), 1);
    assert_eq!(answer["authorization_id"].as_str(), Some(held[0].authorization_id.as_str()));
    let s = g.sim.stats();
    assert_eq!((s.calls, s.operations, s.ambiguous), (2, 1, 1), "dropped once, replayed once, applied once");
}

#[tokio::test]
async fn a_dropped_answer_without_retries_is_exhausted_not_permanent() {
    let g = spawn("gateway").await;
    g.behave(json!({"ambiguous_rate": 1.0, "ambiguous_mode": "drop"})).await;
    let http = client(&g, 1);
    let err = http.post("/authorizations", "o1:authorize", &auth_body()).await.expect_err("the answer is lost");
    assert!(
        matches!(err, CallError::Exhausted { error: HttpError::Unreachable(_), .. }),
        "a dropped answer is transient: {err:?}"
    );
    g.behave(json!({})).await;
    let answer = http.post("/authorizations", "o1:authorize", &auth_body()).await.expect("the stored answer");
    assert_eq!(answer["authorization_id"].as_str(), Some(g.sim.authorizations()[0].authorization_id.as_str()));
    assert_eq!(g.sim.stats().operations, 1);
}

#[tokio::test]
async fn an_ambiguous_500_is_retried_and_the_retry_gets_the_stored_answer() {
    let g = spawn("gateway").await;
    g.behave(json!({"ambiguous_rate": 1.0, "ambiguous_mode": "error"})).await;
    let answer = client(&g, 3).post("/authorizations", "o1:authorize", &auth_body()).await.expect("recovered");
    assert_eq!(answer["authorization_id"].as_str(), Some(g.sim.authorizations()[0].authorization_id.as_str()));
    assert_eq!(g.sim.stats().operations, 1);
}

#[tokio::test]
async fn a_refused_key_and_a_tombstone_are_permanent() {
    let g = spawn("gateway").await;
    let http = client(&g, 3);
    g.behave(json!({"refused_keys": ["incident"]})).await;
    let err = http.post("/authorizations", "o-incident:authorize", &auth_body()).await.expect_err("refused");
    assert!(matches!(err, CallError::Permanent { error: HttpError::Status { status: 422, .. }, .. }), "{err:?}");
    g.behave(json!({})).await;
    http.post("/authorizations/void-by-key", "o2:void", &json!({"authorization_key": "o2:authorize"}))
        .await
        .expect("nothing to void");
    let err = http.post("/authorizations", "o2:authorize", &auth_body()).await.expect_err("tombstoned");
    assert!(matches!(err, CallError::Permanent { error: HttpError::Status { status: 409, .. }, .. }), "{err:?}");
    assert_eq!(g.sim.stats().calls, 3, "permanent refusals are not retried");
}
