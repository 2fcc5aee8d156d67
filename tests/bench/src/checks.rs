//! What must hold after a run, checked on what the run saw and what the platform reports: every
//! accepted order ended as its kind says; stock is conserved (on hand dropped by exactly the
//! completed units, reservations back where they were); no payment was captured twice, none
//! was left open, none of a compensated order was captured. Pure functions over plain data.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use uuid::Uuid;

use crate::driver::{Outcome, Sample};
use crate::mix::Kind;
use crate::orders::StockLevel;
use crate::platform::{Authorization, GatewayStats};

/// One thing that does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// Orders never started, grouped by why (the first reason seen).
    NotStarted {
        count: usize,
        why: String,
    },
    WrongEnd {
        saga: Uuid,
        kind: Kind,
        got: String,
    },
    Unfinished {
        saga: Uuid,
        kind: Kind,
    },
    Stock {
        sku: String,
        on_hand: (i64, i64),
        expected_on_hand: i64,
        reserved: (i64, i64),
    },
    SkuMissing {
        sku: String,
    },
    CaptureCount {
        expected: u64,
        got: i64,
    },
    NotCaptured {
        order: Uuid,
    },
    CapturedTwice {
        order: Uuid,
        times: usize,
    },
    CapturedButCompensated {
        order: Uuid,
    },
    LeftAuthorized {
        order: Uuid,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::NotStarted { count, why } => write!(f, "{count} order(s) not accepted: {why}"),
            Violation::WrongEnd { saga, kind, got } => {
                write!(f, "saga {saga} ({}) ended {got}, expected {}", kind.name(), kind.expected_event())
            }
            Violation::Unfinished { saga, kind } => write!(f, "saga {saga} ({}) did not end in time", kind.name()),
            Violation::Stock { sku, on_hand, expected_on_hand, reserved } => write!(
                f,
                "stock of {sku}: on_hand {} -> {} (expected {expected_on_hand}), reserved {} -> {}",
                on_hand.0, on_hand.1, reserved.0, reserved.1
            ),
            Violation::SkuMissing { sku } => write!(f, "stock of {sku} is missing after the run"),
            Violation::CaptureCount { expected, got } => {
                write!(f, "the gateway captured {got} payment(s) during the run, expected {expected}")
            }
            Violation::NotCaptured { order } => write!(f, "completed order {order} has no captured payment"),
            Violation::CapturedTwice { order, times } => write!(f, "order {order} was captured {times} times"),
            Violation::CapturedButCompensated { order } => {
                write!(f, "compensated order {order} has a captured payment")
            }
            Violation::LeftAuthorized { order } => {
                write!(f, "compensated order {order} left an authorization open")
            }
        }
    }
}

/// Every accepted saga ended with its kind's event; orders that never started, grouped.
pub fn check_ends(samples: &[Sample]) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut not_started: BTreeMap<&str, usize> = BTreeMap::new();
    for s in samples {
        match (&s.outcome, s.saga) {
            (Outcome::NotStarted(why), _) => *not_started.entry(why.as_str()).or_default() += 1,
            (Outcome::Unfinished, Some(saga)) => out.push(Violation::Unfinished { saga, kind: s.kind }),
            (Outcome::Ended(event), Some(saga)) if event != s.kind.expected_event() => {
                out.push(Violation::WrongEnd { saga, kind: s.kind, got: event.clone() })
            }
            _ => {}
        }
    }
    out.extend(not_started.into_iter().map(|(why, count)| Violation::NotStarted { count, why: why.to_owned() }));
    out
}

/// Units each SKU lost to completed orders (one unit per order).
pub fn completed_units(samples: &[Sample]) -> BTreeMap<String, i64> {
    let mut units = BTreeMap::new();
    for s in samples {
        if let (Outcome::Ended(e), Some(sku)) = (&s.outcome, &s.sku)
            && e == "order.completed"
        {
            *units.entry(sku.clone()).or_default() += 1;
        }
    }
    units
}

/// On hand dropped by exactly the completed units; reserved back where it was.
pub fn check_stock(before: &[StockLevel], after: &[StockLevel], completed: &BTreeMap<String, i64>) -> Vec<Violation> {
    let after: HashMap<&str, &StockLevel> = after.iter().map(|l| (l.sku.as_str(), l)).collect();
    let mut out = Vec::new();
    for b in before {
        let Some(a) = after.get(b.sku.as_str()) else {
            out.push(Violation::SkuMissing { sku: b.sku.clone() });
            continue;
        };
        let expected_on_hand = b.on_hand - completed.get(&b.sku).copied().unwrap_or(0);
        if a.on_hand != expected_on_hand || a.reserved != b.reserved {
            out.push(Violation::Stock {
                sku: b.sku.clone(),
                on_hand: (b.on_hand, a.on_hand),
                expected_on_hand,
                reserved: (b.reserved, a.reserved),
            });
        }
    }
    for sku in completed.keys().filter(|sku| !before.iter().any(|b| &b.sku == *sku)) {
        out.push(Violation::SkuMissing { sku: sku.clone() });
    }
    out
}

/// The order an authorization belongs to, from its key `payment:<order id>:authorize`.
fn order_of(a: &Authorization) -> Option<Uuid> {
    a.key.strip_prefix("payment:")?.strip_suffix(":authorize").and_then(|id| Uuid::parse_str(id).ok())
}

/// Payments: captured once per completed order and only for those; compensated ones voided.
pub fn check_payments(
    before: &GatewayStats,
    after: &GatewayStats,
    authorizations: &[Authorization],
    samples: &[Sample],
) -> Vec<Violation> {
    let mut out = Vec::new();
    let ended = |event: &str| -> Vec<Uuid> {
        samples
            .iter()
            .filter(|s| matches!(&s.outcome, Outcome::Ended(e) if e == event))
            .filter_map(|s| s.saga)
            .collect()
    };
    let (completed, compensated) = (ended("order.completed"), ended("order.compensated"));
    let captured = |s: &GatewayStats| s.captured.unwrap_or(0) as i64;
    let got = captured(after) - captured(before);
    if got != completed.len() as i64 {
        out.push(Violation::CaptureCount { expected: completed.len() as u64, got });
    }
    let mut by_order: HashMap<Uuid, Vec<&str>> = HashMap::new();
    for a in authorizations {
        if let Some(order) = order_of(a) {
            by_order.entry(order).or_default().push(a.status.as_str());
        }
    }
    let count =
        |order: &Uuid, status: &str| by_order.get(order).map_or(0, |v| v.iter().filter(|s| **s == status).count());
    for order in completed {
        match count(&order, "captured") {
            0 => out.push(Violation::NotCaptured { order }),
            1 => {}
            times => out.push(Violation::CapturedTwice { order, times }),
        }
    }
    for order in compensated {
        if count(&order, "captured") > 0 {
            out.push(Violation::CapturedButCompensated { order });
        }
        if count(&order, "authorized") > 0 {
            out.push(Violation::LeftAuthorized { order });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(kind: Kind, id: u128, outcome: Outcome, sku: &str) -> Sample {
        let saga = (!matches!(outcome, Outcome::NotStarted(_))).then(|| Uuid::from_u128(id));
        Sample { kind, saga, sku: Some(sku.into()), outcome, latency: None }
    }

    fn ended(kind: Kind, id: u128, event: &str) -> Sample {
        sample(kind, id, Outcome::Ended(event.into()), "A")
    }

    fn level(sku: &str, on_hand: i64, reserved: i64) -> StockLevel {
        StockLevel { sku: sku.into(), on_hand, reserved }
    }

    fn auth(order: u128, status: &str) -> Authorization {
        Authorization { key: format!("payment:{}:authorize", Uuid::from_u128(order)), status: status.into() }
    }

    fn stats(captured: u64) -> GatewayStats {
        GatewayStats { captured: Some(captured), ..GatewayStats::default() }
    }

    #[test]
    fn ends_must_match_kinds() {
        let samples = vec![
            ended(Kind::Completed, 1, "order.completed"),
            ended(Kind::Declined, 2, "order.compensated"),
            ended(Kind::Unshippable, 3, "order.completed"),
            ended(Kind::Completed, 4, "order.failed"),
            sample(Kind::UnknownSku, 5, Outcome::Unfinished, "A"),
            sample(Kind::Completed, 6, Outcome::NotStarted("POST /orders answered 503".into()), "A"),
            sample(Kind::Completed, 7, Outcome::NotStarted("POST /orders answered 503".into()), "A"),
        ];
        let v = check_ends(&samples);
        assert_eq!(
            v,
            vec![
                Violation::WrongEnd {
                    saga: Uuid::from_u128(3),
                    kind: Kind::Unshippable,
                    got: "order.completed".into()
                },
                Violation::WrongEnd { saga: Uuid::from_u128(4), kind: Kind::Completed, got: "order.failed".into() },
                Violation::Unfinished { saga: Uuid::from_u128(5), kind: Kind::UnknownSku },
                Violation::NotStarted { count: 2, why: "POST /orders answered 503".into() },
            ]
        );
        assert!(check_ends(&samples[..2]).is_empty());
    }

    #[test]
    fn stock_must_drop_by_exactly_the_completed_units() {
        let samples = vec![
            sample(Kind::Completed, 1, Outcome::Ended("order.completed".into()), "A"),
            sample(Kind::Completed, 2, Outcome::Ended("order.completed".into()), "A"),
            sample(Kind::Declined, 3, Outcome::Ended("order.compensated".into()), "B"),
        ];
        let units = completed_units(&samples);
        assert_eq!(units, BTreeMap::from([("A".to_owned(), 2)]));
        let before = [level("A", 10, 1), level("B", 5, 0)];
        assert!(check_stock(&before, &[level("A", 8, 1), level("B", 5, 0)], &units).is_empty());
        let leaked = check_stock(&before, &[level("A", 9, 1), level("B", 5, 1)], &units);
        assert_eq!(leaked.len(), 2, "{leaked:?}");
        assert_eq!(
            leaked[0].to_string(),
            "stock of A: on_hand 10 -> 9 (expected 8), reserved 1 -> 1",
            "a completed order whose stock was not committed"
        );
        assert_eq!(check_stock(&before, &[level("A", 8, 1)], &units), vec![Violation::SkuMissing { sku: "B".into() }]);
    }

    #[test]
    fn payments_are_captured_once_per_completed_order_and_never_for_compensated_ones() {
        let samples = vec![
            ended(Kind::Completed, 1, "order.completed"),
            ended(Kind::Completed, 2, "order.completed"),
            ended(Kind::Unshippable, 3, "order.compensated"),
        ];
        let good = [auth(1, "captured"), auth(2, "captured"), auth(3, "voided"), auth(99, "authorized")];
        assert!(check_payments(&stats(5), &stats(7), &good, &samples).is_empty());

        let bad = [auth(1, "captured"), auth(1, "captured"), auth(3, "captured")];
        let v = check_payments(&stats(5), &stats(8), &bad, &samples);
        assert!(v.contains(&Violation::CaptureCount { expected: 2, got: 3 }), "{v:?}");
        assert!(v.contains(&Violation::CapturedTwice { order: Uuid::from_u128(1), times: 2 }), "{v:?}");
        assert!(v.contains(&Violation::NotCaptured { order: Uuid::from_u128(2) }), "{v:?}");
        assert!(v.contains(&Violation::CapturedButCompensated { order: Uuid::from_u128(3) }), "{v:?}");

        let open = [auth(1, "captured"), auth(2, "captured"), auth(3, "authorized")];
        let v = check_payments(&stats(0), &stats(2), &open, &samples);
        assert_eq!(v, vec![Violation::LeftAuthorized { order: Uuid::from_u128(3) }]);
    }
}
