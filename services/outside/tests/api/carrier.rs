//! The shipping carrier: booking, cancel by key with its tombstone, listing and stats.

use serde_json::json;

use crate::helpers::spawn;

#[tokio::test]
async fn booking_answers_201_and_a_repeated_key_gets_the_first_answer() {
    let c = spawn("carrier").await;
    let (status, first) = c.post("/shipments", "o1:schedule", json!({"country": "NL"})).await;
    assert_eq!(status, 201);
    assert_eq!(first["country"], "NL");
    assert!(first["tracking_number"].as_str().is_some_and(|t| t.starts_with("TRK")), "{first}");
    let (status, again) = c.post("/shipments", "o1:schedule", json!({"country": "DE"})).await;
    assert_eq!((status, &again), (201, &first));
    let stats = c.sim.stats();
    assert_eq!((stats.calls, stats.operations, stats.booked, stats.cancelled), (2, 1, Some(1), Some(0)));
    let json = c.stats().await;
    assert!(json.get("authorized_open").is_none() && json.get("voided").is_none(), "no gateway fields: {json}");
}

#[tokio::test]
async fn cancel_by_key_before_the_booking_tombstones_the_key_and_the_late_one_is_refused() {
    let c = spawn("carrier").await;
    let (status, body) = c.post("/shipments/cancel-by-key", "o1:cancel", json!({"booking_key": "o1:schedule"})).await;
    assert_eq!((status, body), (200, json!({"status": "nothing_to_cancel"})));
    let (status, body) = c.post("/shipments", "o1:schedule", json!({"country": "NL"})).await;
    assert_eq!((status, body), (409, json!({"error": "cancelled"})));
    assert!(c.sim.bookings().is_empty());
    let stats = c.sim.stats();
    assert_eq!((stats.operations, stats.booked, stats.cancelled), (1, Some(0), Some(0)));
    c.book("o2:schedule").await;
}

#[tokio::test]
async fn cancel_by_key_after_the_booking_cancels_it_and_its_repeat_is_refused() {
    let c = spawn("carrier").await;
    let tracking = c.book("o1:schedule").await;
    let (status, body) = c.post("/shipments/cancel-by-key", "o1:cancel", json!({"booking_key": "o1:schedule"})).await;
    assert_eq!((status, body), (200, json!({"status": "cancelled", "tracking_number": tracking})));
    let (status, body) = c.post("/shipments/cancel-by-key", "o1:cancel", json!({"booking_key": "o1:schedule"})).await;
    assert_eq!((status, body["status"].clone()), (200, json!("cancelled")), "the cancel's own key replays");
    let (status, body) = c.post("/shipments", "o1:schedule", json!({"country": "NL"})).await;
    assert_eq!((status, body), (409, json!({"error": "cancelled"})));
    let stats = c.sim.stats();
    assert_eq!((stats.operations, stats.booked, stats.cancelled), (2, Some(0), Some(1)));
    let list = c.get("/shipments").await;
    assert_eq!(
        list,
        json!([{"tracking_number": tracking, "key": "o1:schedule", "country": "NL", "status": "cancelled"}])
    );
}

#[tokio::test]
async fn cancel_by_key_with_an_empty_key_is_422() {
    let c = spawn("carrier").await;
    let (status, _) = c.post("/shipments/cancel-by-key", "o1:cancel", json!({"booking_key": ""})).await;
    assert_eq!(status, 422);
    assert_eq!(c.sim.stats().operations, 0);
}
