//! The consistency rules, without IO: given the sagas and what every participant and outside
//! system says it holds, the list of disagreements. Each rule is one small function over
//! [`Records`]; [`check`] runs them all.
//!
//! - A COMPLETED saga holds exactly: its reservation committed (every line), its payment
//!   captured, its shipment scheduled; the gateway captured its authorization, the carrier booked
//!   its shipment.
//! - A COMPENSATED (or FAILED) saga holds nothing: no reservation held or committed, no payment
//!   authorized or captured (a decline or a void is fine), no shipment booked; the same at the
//!   gateway and the carrier.
//! - Nothing is held for a saga that is unknown.
//! - Stock is conserved: per SKU, `reserved` is the sum of held reservations and
//!   `on_hand + committed == received`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use uuid::Uuid;

use crate::kernel::SagaStatus;

/// A reservation line as inventory reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub order_id: Uuid,
    pub sku: String,
    pub quantity: i64,
    /// `held`, `released` or `committed`.
    pub status: String,
}

/// A SKU's stock as inventory reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stock {
    pub sku: String,
    pub on_hand: i64,
    pub reserved: i64,
    /// Units ever received (the initial stock).
    pub received: i64,
}

/// A participant's record about an order (payment or shipment): its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    pub order_id: Uuid,
    pub status: String,
}

/// An outside system's record (an authorization at the gateway, a booking at the carrier): the
/// order it belongs to (from its idempotency key) and its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outside {
    pub order_id: Uuid,
    pub status: String,
}

/// Everything the auditor read.
#[derive(Debug, Clone, Default)]
pub struct Records {
    /// The sagas to check (terminal ones are checked; running ones only excuse what they hold).
    pub sagas: BTreeMap<Uuid, SagaStatus>,
    /// Every saga the orchestrator knows (those not in `sagas` included, when checking "since").
    pub known: BTreeSet<Uuid>,
    pub reservations: Vec<Reservation>,
    pub stock: Vec<Stock>,
    pub payments: Vec<Holding>,
    pub shipments: Vec<Holding>,
    /// `None` when the gateway was not asked (not configured).
    pub authorizations: Option<Vec<Outside>>,
    pub bookings: Option<Vec<Outside>>,
}

/// One disagreement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub saga_id: Option<Uuid>,
    /// A stable code, e.g. `payment_not_captured`.
    pub kind: &'static str,
    pub detail: String,
}

fn violation(saga_id: Option<Uuid>, kind: &'static str, detail: String) -> Violation {
    Violation { saga_id, kind, detail }
}

/// Run every rule.
pub fn check(r: &Records) -> Vec<Violation> {
    let mut v = Vec::new();
    for (&id, &status) in &r.sagas {
        match status {
            SagaStatus::Completed => completed(r, id, &mut v),
            SagaStatus::Compensated | SagaStatus::Failed => undone(r, id, status, &mut v),
            SagaStatus::Running | SagaStatus::Compensating => {}
        }
    }
    orphans(r, &mut v);
    stock(r, &mut v);
    v
}

fn statuses<'a>(items: impl Iterator<Item = (Uuid, &'a str)>, id: Uuid) -> Vec<&'a str> {
    items.filter(|(o, _)| *o == id).map(|(_, s)| s).collect()
}

fn holdings(h: &[Holding], id: Uuid) -> Vec<&str> {
    statuses(h.iter().map(|x| (x.order_id, x.status.as_str())), id)
}

fn outside(o: &Option<Vec<Outside>>, id: Uuid) -> Option<Vec<&str>> {
    o.as_ref().map(|list| statuses(list.iter().map(|x| (x.order_id, x.status.as_str())), id))
}

fn reservation_statuses(r: &Records, id: Uuid) -> Vec<&str> {
    statuses(r.reservations.iter().map(|x| (x.order_id, x.status.as_str())), id)
}

/// A COMPLETED saga: exactly one of each effect, applied.
fn completed(r: &Records, id: Uuid, v: &mut Vec<Violation>) {
    let lines = reservation_statuses(r, id);
    if lines.is_empty() || lines.iter().any(|s| *s != "committed") {
        v.push(violation(Some(id), "reservation_not_committed", format!("reservation lines: {lines:?}")));
    }
    let expect = |what: &[&str], want: &str| what.len() == 1 && what[0] == want;
    let pay = holdings(&r.payments, id);
    if !expect(&pay, "captured") {
        v.push(violation(Some(id), "payment_not_captured", format!("payments: {pay:?}")));
    }
    let ship = holdings(&r.shipments, id);
    if !expect(&ship, "scheduled") {
        v.push(violation(Some(id), "shipment_not_scheduled", format!("shipments: {ship:?}")));
    }
    if let Some(auth) = outside(&r.authorizations, id).filter(|a| !expect(a, "captured")) {
        v.push(violation(Some(id), "gateway_not_captured_once", format!("gateway authorizations: {auth:?}")));
    }
    if let Some(book) = outside(&r.bookings, id).filter(|b| !expect(b, "booked")) {
        v.push(violation(Some(id), "carrier_not_booked_once", format!("carrier bookings: {book:?}")));
    }
}

/// A COMPENSATED or FAILED saga: nothing may stay applied.
fn undone(r: &Records, id: Uuid, status: SagaStatus, v: &mut Vec<Violation>) {
    let lines = reservation_statuses(r, id);
    if lines.iter().any(|s| *s != "released") {
        v.push(violation(Some(id), "stock_still_held", format!("{status} but reservation lines: {lines:?}")));
    }
    let pay = holdings(&r.payments, id);
    if pay.iter().any(|s| !matches!(*s, "declined" | "voided")) {
        v.push(violation(Some(id), "payment_not_undone", format!("{status} but payments: {pay:?}")));
    }
    let ship = holdings(&r.shipments, id);
    if ship.iter().any(|s| !matches!(*s, "rejected" | "cancelled")) {
        v.push(violation(Some(id), "shipment_not_undone", format!("{status} but shipments: {ship:?}")));
    }
    if let Some(auth) = outside(&r.authorizations, id).filter(|a| a.iter().any(|s| *s != "voided")) {
        v.push(violation(Some(id), "gateway_hold_left", format!("{status} but gateway authorizations: {auth:?}")));
    }
    if let Some(book) = outside(&r.bookings, id).filter(|b| b.iter().any(|s| *s != "cancelled")) {
        v.push(violation(Some(id), "carrier_booking_left", format!("{status} but carrier bookings: {book:?}")));
    }
}

/// Something held for an order no saga of ours knows.
fn orphans(r: &Records, v: &mut Vec<Violation>) {
    let unknown = |id: &Uuid| !r.known.contains(id) && !r.sagas.contains_key(id);
    let mut report = |id: Uuid, what: String| v.push(violation(Some(id), "held_for_unknown_saga", what));
    for x in r.reservations.iter().filter(|x| unknown(&x.order_id) && x.status == "held") {
        report(x.order_id, format!("inventory holds {} x {}", x.quantity, x.sku));
    }
    let active_payment = |s: &str| matches!(s, "authorizing" | "authorized" | "capturing" | "captured" | "voiding");
    for x in r.payments.iter().filter(|x| unknown(&x.order_id) && active_payment(&x.status)) {
        report(x.order_id, format!("payment is {}", x.status));
    }
    for x in r.shipments.iter().filter(|x| unknown(&x.order_id) && matches!(x.status.as_str(), "booking" | "scheduled"))
    {
        report(x.order_id, format!("shipment is {}", x.status));
    }
    for x in r.authorizations.iter().flatten().filter(|x| unknown(&x.order_id) && x.status != "voided") {
        report(x.order_id, format!("the gateway's authorization is {}", x.status));
    }
    for x in r.bookings.iter().flatten().filter(|x| unknown(&x.order_id) && x.status == "booked") {
        report(x.order_id, "the carrier holds a booking".into());
    }
}

/// Per SKU: reserved is what is held; nothing appeared or vanished.
fn stock(r: &Records, v: &mut Vec<Violation>) {
    let mut held: BTreeMap<&str, i64> = BTreeMap::new();
    let mut committed: BTreeMap<&str, i64> = BTreeMap::new();
    for x in &r.reservations {
        match x.status.as_str() {
            "held" => *held.entry(&x.sku).or_default() += x.quantity,
            "committed" => *committed.entry(&x.sku).or_default() += x.quantity,
            _ => {}
        }
    }
    for s in &r.stock {
        let (h, c) =
            (held.get(s.sku.as_str()).copied().unwrap_or(0), committed.get(s.sku.as_str()).copied().unwrap_or(0));
        if s.reserved != h {
            v.push(violation(
                None,
                "stock_reserved_mismatch",
                format!("{}: reserved {} but held lines sum to {h}", s.sku, s.reserved),
            ));
        }
        if s.on_hand + c != s.received {
            let detail = format!("{}: on hand {} + committed {c} != received {}", s.sku, s.on_hand, s.received);
            v.push(violation(None, "stock_not_conserved", detail));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn held(o: u128, status: &str) -> Holding {
        Holding { order_id: id(o), status: status.into() }
    }

    fn out(o: u128, status: &str) -> Outside {
        Outside { order_id: id(o), status: status.into() }
    }

    fn line(o: u128, q: i64, status: &str) -> Reservation {
        Reservation { order_id: id(o), sku: "A".into(), quantity: q, status: status.into() }
    }

    /// Saga 1 completed, saga 2 compensated after its payment was authorized, saga 3 running.
    fn consistent() -> Records {
        Records {
            sagas: [(id(1), SagaStatus::Completed), (id(2), SagaStatus::Compensated), (id(3), SagaStatus::Running)]
                .into(),
            known: [id(1), id(2), id(3)].into(),
            reservations: vec![line(1, 2, "committed"), line(2, 1, "released"), line(3, 4, "held")],
            stock: vec![Stock { sku: "A".into(), on_hand: 98, reserved: 4, received: 100 }],
            payments: vec![held(1, "captured"), held(2, "voided"), held(3, "authorizing")],
            shipments: vec![held(1, "scheduled")],
            authorizations: Some(vec![out(1, "captured"), out(2, "voided"), out(3, "authorized")]),
            bookings: Some(vec![out(1, "booked")]),
        }
    }

    fn kinds(r: &Records) -> Vec<&'static str> {
        check(r).into_iter().map(|v| v.kind).collect()
    }

    #[test]
    fn a_consistent_platform_has_no_violation() {
        assert_eq!(check(&consistent()), vec![]);
        assert_eq!(check(&Records { authorizations: None, bookings: None, ..consistent() }), vec![]);
    }

    #[test]
    fn every_disagreement_has_its_kind() {
        let mut r = consistent();
        r.payments[0].status = "authorized".into();
        r.authorizations =
            Some(vec![out(1, "captured"), out(1, "captured"), out(2, "authorized"), out(3, "authorized")]);
        r.shipments.push(held(2, "scheduled"));
        r.reservations[1].status = "held".into();
        r.stock[0].reserved = 7;
        assert_eq!(
            kinds(&r),
            [
                "payment_not_captured",
                "gateway_not_captured_once",
                "stock_still_held",
                "shipment_not_undone",
                "gateway_hold_left",
                "stock_reserved_mismatch"
            ]
        );
        let mut r = consistent();
        r.reservations.push(line(9, 1, "held"));
        r.stock[0].reserved = 5;
        r.bookings = Some(vec![out(1, "booked"), out(9, "booked")]);
        r.stock[0].on_hand = 97;
        assert_eq!(kinds(&r), ["held_for_unknown_saga", "held_for_unknown_saga", "stock_not_conserved"]);
    }

    #[test]
    fn a_failed_saga_that_still_holds_something_is_loud() {
        let mut r = consistent();
        r.sagas.insert(id(3), SagaStatus::Failed);
        assert_eq!(kinds(&r), ["stock_still_held", "payment_not_undone", "gateway_hold_left"]);
    }

    #[test]
    fn a_completed_saga_missing_an_effect_is_reported() {
        let mut r = consistent();
        r.shipments.clear();
        r.bookings = Some(vec![]);
        r.reservations[0].status = "held".into();
        r.stock[0].reserved = 6;
        r.stock[0].on_hand = 100;
        let got = check(&r);
        let k: Vec<_> = got.iter().map(|v| v.kind).collect();
        assert_eq!(k, ["reservation_not_committed", "shipment_not_scheduled", "carrier_not_booked_once"]);
        assert!(got.iter().all(|v| v.saga_id == Some(id(1))));
    }
}
