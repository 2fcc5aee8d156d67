//! The simulated shipping carrier: bookings, cancelled by the idempotency key of the call that
//! made them. A cancel by key that finds no booking tombstones the key, so the late booking is
//! refused (`409 {"error": "cancelled"}`).

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::{Json, Router};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::sim::{Ledger, Outcome, Sim, Stats, admin};

/// The operation names idempotency keys are scoped by.
const BOOK: &str = "book";
const CANCEL_BY_KEY: &str = "cancel_by_key";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BookingStatus {
    Booked,
    Cancelled,
}

/// A booking the carrier holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Booking {
    pub tracking_number: String,
    /// The Idempotency-Key of the call that made it.
    pub key: String,
    pub country: String,
    pub status: BookingStatus,
}

/// The carrier's bookings, in the order they were made.
#[derive(Default)]
pub(crate) struct Bookings {
    all: Vec<Booking>,
    by_number: HashMap<String, usize>,
    by_key: HashMap<String, usize>,
}

impl Bookings {
    /// A tracking number not yet given out.
    fn fresh_number(&self) -> String {
        loop {
            let n: u64 = rand::rng().random_range(10_000_000..100_000_000);
            let number = format!("TRK{n}");
            if !self.by_number.contains_key(&number) {
                return number;
            }
        }
    }

    fn book(&mut self, key: &str, country: String) -> Outcome {
        let number = self.fresh_number();
        let answer = json!({"tracking_number": number, "country": country});
        self.by_number.insert(number.clone(), self.all.len());
        self.by_key.insert(key.to_owned(), self.all.len());
        self.all.push(Booking { tracking_number: number, key: key.to_owned(), country, status: BookingStatus::Booked });
        Outcome::Applied(StatusCode::CREATED, answer)
    }

    pub(crate) fn count_into(&self, s: &mut Stats) {
        let count = |status| self.all.iter().filter(|b| b.status == status).count() as u64;
        s.booked = Some(count(BookingStatus::Booked));
        s.cancelled = Some(count(BookingStatus::Cancelled));
    }
}

/// Cancel the booking made with `key`, or, if there is none, answer `nothing_to_cancel`. Either
/// way a later booking with `key` is refused.
fn cancel_by_key(ledger: &mut Ledger, key: &str) -> Outcome {
    if key.is_empty() {
        return Outcome::refused(StatusCode::UNPROCESSABLE_ENTITY, "booking_key must not be empty");
    }
    let bookings = &mut ledger.carrier;
    let answer = match bookings.by_key.get(key).and_then(|&i| bookings.all.get_mut(i)) {
        None => json!({"status": "nothing_to_cancel"}),
        Some(b) => {
            b.status = BookingStatus::Cancelled;
            json!({"status": "cancelled", "tracking_number": b.tracking_number})
        }
    };
    ledger.tombstone(BOOK, key, "cancelled");
    Outcome::Applied(StatusCode::OK, answer)
}

#[derive(Deserialize)]
struct ShipmentBody {
    country: String,
}

#[derive(Deserialize)]
struct CancelByKeyBody {
    booking_key: String,
}

async fn book(State(s): State<Sim>, headers: HeaderMap, Json(b): Json<ShipmentBody>) -> Response {
    s.handle(&headers, BOOK, |l, key| l.carrier.book(key, b.country)).await
}

async fn cancel_key(State(s): State<Sim>, headers: HeaderMap, Json(b): Json<CancelByKeyBody>) -> Response {
    s.handle(&headers, CANCEL_BY_KEY, |l, _| cancel_by_key(l, &b.booking_key)).await
}

async fn list(State(s): State<Sim>) -> Json<Vec<Booking>> {
    Json(s.bookings())
}

impl Sim {
    /// The bookings the carrier holds, oldest first (none for a gateway).
    pub fn bookings(&self) -> Vec<Booking> {
        self.read(|l| l.carrier.all.clone())
    }
}

/// The shipping carrier's routes.
pub fn carrier(sim: Sim) -> Router {
    Router::new()
        .route("/shipments", post(book).get(list))
        .route("/shipments/cancel-by-key", post(cancel_key))
        .with_state(sim.clone())
        .merge(admin(sim))
}
