//! Simulated outside systems: the payment gateway and the shipping carrier the participants call
//! over HTTP. They are real HTTP servers with knobs an operator (or a test) turns at run time, so
//! failures can be produced on demand, including the hard one: an operation applied whose answer
//! is lost.
//!
//! Layout: `sim` (knobs, the gate every keyed call passes, idempotency, tombstones, stats),
//! `gateway` and `carrier` (each system's holdings and routes), `lost` (a dropped answer).
//!
//! # Idempotency
//!
//! Every `POST` carries an `Idempotency-Key` header (`400` without one). Keys are scoped per
//! operation (authorize, capture, void, void-by-key, book, cancel-by-key). The first answer of
//! an applied operation (a 2xx) is recorded under its key; a repeat gets that answer again and
//! applies nothing. Refusals (`404`, `409`, `422`) and knob failures are not recorded: a repeat is
//! decided afresh. An operation undone by key before it was applied leaves a tombstone: its late
//! call is refused `409` and applies nothing, and so is a repeat of an applied one undone by key.
//! A call is gated, applied and recorded in one critical section: concurrent repeats of a key
//! never apply twice.
//!
//! # Knobs: `GET/PUT /admin/behaviour`
//!
//! `{"latency_ms": 0, "error_rate": 0.0, "outage": false, "failing_keys": [], "ambiguous_rate":
//! 0.0, "ambiguous_mode": "mixed", "refused_keys": []}`; every field is optional, and unknown
//! fields, a bad mode or a rate outside 0.0..=1.0 are refused `422`. Each keyed call waits
//! `latency_ms`, then the first of these that applies answers it, applying nothing:
//! - `outage`: `503 {"error": "outage"}`;
//! - `failing_keys`: a key containing one of them: `500 {"error": "failing key"}` (a poison request);
//! - `refused_keys`: a key containing one of them: `422 {"error": "refused", "detail"}` (a
//!   permanent refusal);
//! - `error_rate`: that share of calls: `500 {"error": "random error"}`.
//!
//! Otherwise a tombstoned key is refused `409`, a seen key gets its first answer, and a new one
//! is applied. Then `ambiguous_rate` loses that share of the answers of operations just applied
//! (and recorded): `ambiguous_mode` `"error"` answers `500 {"error": "answer lost after
//! applying"}`, `"drop"` answers `200` and drops the connection halfway through the body (see
//! `lost`), `"mixed"` (the default) does either with even odds. Replays are never lost, so a
//! retry with the same key recovers the first answer, whatever the rate.
//!
//! # `GET /admin/stats`
//!
//! `calls` (keyed calls received), `errors` (answered 5xx, the ambiguous `500`s included, dropped
//! connections not), `operations` (applied and recorded), `ambiguous` (applied, answer lost),
//! `refused` (by `refused_keys`); the gateway adds `authorized_open`, `captured`, `voided`, the
//! carrier `booked` (currently) and `cancelled` (each a count of holdings by status).
//!
//! # Gateway
//!
//! - `POST /authorizations` `{"amount_cents", "currency"}` -> `201 {"authorization_id",
//!   "amount_cents", "currency"}`; key tombstoned -> `409 {"error": "voided"}`.
//! - `POST /authorizations/{id}/capture` -> `200 {"authorization_id", "status": "captured"}`;
//!   unknown `404`; voided `409 {"error": "voided"}`; captured under another key `409 {"error":
//!   "already_captured"}`.
//! - `POST /authorizations/{id}/void` -> `200 {"authorization_id", "status": "voided"}` (also if
//!   already voided); unknown `404`; captured `409 {"error": "captured"}`.
//! - `POST /authorizations/void-by-key` `{"authorization_key": K}` -> `200 {"status": "voided",
//!   "authorization_id"}` if the authorization made with key K is authorized or voided, `200
//!   {"status": "nothing_to_void"}` if there is none; either way K is tombstoned for authorize.
//!   Captured -> `409 {"error": "captured"}` (no tombstone); empty K -> `422`.
//! - `GET /authorizations` -> `200 [{"authorization_id", "key", "amount_cents", "currency",
//!   "status": "authorized" | "captured" | "voided"}]`, oldest first.
//!
//! # Carrier
//!
//! - `POST /shipments` `{"country"}` -> `201 {"tracking_number", "country"}`; key tombstoned ->
//!   `409 {"error": "cancelled"}`.
//! - `POST /shipments/cancel-by-key` `{"booking_key": K}` -> `200 {"status": "cancelled",
//!   "tracking_number"}` or `200 {"status": "nothing_to_cancel"}`; either way K is tombstoned for
//!   booking; empty K -> `422`.
//! - `GET /shipments` -> `200 [{"tracking_number", "key", "country", "status": "booked" |
//!   "cancelled"}]`, oldest first.
//!
//! Both also serve `/health/live` and `/health/ready`. From Rust, [`Sim`] offers the same:
//! `set_behaviour`, `stats`, `authorizations`, `bookings`.

mod carrier;
mod gateway;
mod lost;
mod sim;

use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use carrier::{Booking, BookingStatus, carrier};
pub use gateway::{Authorization, AuthorizationStatus, gateway};
pub use sim::{AmbiguousMode, Behaviour, BehaviourError, Sim, Stats};

/// Default port of the simulated payment gateway (`OUTSIDE_GATEWAY_ADDR`).
pub const DEFAULT_GATEWAY_PORT: u16 = 8091;
/// Default port of the simulated carrier (`OUTSIDE_CARRIER_ADDR`).
pub const DEFAULT_CARRIER_PORT: u16 = 8092;

/// A simulated system bound to an address (port 0 picks one), ready to serve.
pub struct Server {
    pub sim: Sim,
    listener: TcpListener,
    router: Router,
}

impl Server {
    /// `name` `"carrier"` serves a carrier, anything else a payment gateway.
    pub async fn bind(name: &'static str, addr: SocketAddr) -> std::io::Result<Server> {
        let sim = Sim::new(name);
        let router = if sim.is_carrier() { carrier(sim.clone()) } else { gateway(sim.clone()) };
        Ok(Server { sim, listener: TcpListener::bind(addr).await?, router })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        infra::http::serve(self.listener, self.router, shutdown).await
    }
}
