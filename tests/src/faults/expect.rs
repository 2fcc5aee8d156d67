//! What each scenario must have shown beyond the common pass rule, judged from what the run
//! recorded: orders accepted while the broker was stopped and the outbox holding them; an
//! orchestrator's partner taking orders while it was down, and the restarted one taking orders
//! again; the fault really happening (connections closed, duplicates published and suppressed,
//! step deadlines passed, commands deferred by an open breaker, answers lost). Pure: no IO.

use std::collections::BTreeMap;
use std::time::Instant;

use super::inject::Window;
use super::load::Tally;
use super::observe::Counters;
use super::scenario::Scenario;
use super::summary::Check;

/// What the run recorded.
pub struct Evidence<'a> {
    pub windows: &'a [Window],
    pub tally: &'a Tally,
    pub counters: Counters,
    pub counts: &'a BTreeMap<&'static str, u64>,
    /// Per window, the largest outbox backlog sampled in it.
    pub outbox_peaks: Vec<f64>,
    /// Orchestrator instances.
    pub orchestrators: usize,
}

fn check(ok: bool, what: String) -> Check {
    Check { what, ok }
}

/// The scenario's own expectations.
pub fn checks(scenario: Scenario, ev: &Evidence) -> Vec<Check> {
    let count = |k: &str| ev.counts.get(k).copied().unwrap_or(0);
    let c = ev.counters;
    match scenario {
        Scenario::BrokerStop => broker_stopped(ev),
        Scenario::OrchestratorKill => orchestrators_took_over(ev),
        Scenario::BrokerDrop => {
            vec![check(
                count("connections closed") > 0,
                format!("connections closed ({})", count("connections closed")),
            )]
        }
        Scenario::Duplicates => vec![
            check(count("republished") > 0, format!("duplicates published ({})", count("republished"))),
            check(
                c.duplicate_deliveries + c.duplicate_replies > 0.0,
                format!(
                    "duplicates suppressed ({} deliveries, {} replies)",
                    c.duplicate_deliveries, c.duplicate_replies
                ),
            ),
        ],
        Scenario::SlowParticipant | Scenario::ParticipantDown => {
            vec![check(c.step_timeouts > 0.0, format!("step deadlines passed ({})", c.step_timeouts))]
        }
        Scenario::OutageAndCrash => {
            vec![check(c.deferred > 0.0, format!("commands waited on the open breaker ({} deferrals)", c.deferred))]
        }
        Scenario::Ambiguous => {
            let lost = count("gateway ambiguous") + count("carrier ambiguous");
            vec![check(lost > 0, format!("answers lost after applying ({lost})"))]
        }
        Scenario::ParticipantKill | Scenario::PostgresRestart => Vec::new(),
    }
}

fn broker_stopped(ev: &Evidence) -> Vec<Check> {
    let mut out = Vec::new();
    for (w, peak) in ev.windows.iter().zip(&ev.outbox_peaks) {
        let accepted = ev.tally.accepted_between(w.from, w.to, None);
        out.push(check(accepted > 0, format!("orders accepted while the {} ({accepted})", w.what)));
        out.push(check(*peak > 0.0, format!("saga_outbox_pending_rows rose while the {} (peak {peak})", w.what)));
    }
    if out.is_empty() {
        out.push(check(false, "the broker was stopped".into()));
    }
    out
}

fn orchestrators_took_over(ev: &Evidence) -> Vec<Check> {
    let mut out = Vec::new();
    let later = Instant::now() + std::time::Duration::from_secs(3600);
    for w in ev.windows {
        let Some(down) = w.orchestrator else { continue };
        let others: usize = (0..ev.orchestrators)
            .filter(|o| *o != down)
            .map(|o| ev.tally.accepted_between(w.from, w.to, Some(o)))
            .sum();
        out.push(check(others > 0, format!("the other orchestrator took orders while {} ({others})", w.what)));
        let resumed = ev.tally.accepted_between(w.to, later, Some(down));
        out.push(check(resumed > 0, format!("orders accepted by the restarted one after {} ({resumed})", w.what)));
    }
    if out.is_empty() {
        out.push(check(false, "an orchestrator was killed".into()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::load::{Accepted, Kind};
    use std::time::Duration;
    use uuid::Uuid;

    fn tally(at: &[(Instant, usize)]) -> Tally {
        let accepted = at
            .iter()
            .map(|(at, o)| Accepted { saga_id: Uuid::now_v7(), kind: Kind::Complete, orchestrator: *o, at: *at })
            .collect();
        Tally { accepted, ..Tally::default() }
    }

    fn evidence<'a>(windows: &'a [Window], tally: &'a Tally, counts: &'a BTreeMap<&'static str, u64>) -> Evidence<'a> {
        Evidence {
            windows,
            tally,
            counters: Counters::default(),
            counts,
            outbox_peaks: vec![0.0; windows.len()],
            orchestrators: 2,
        }
    }

    #[test]
    fn a_broker_stop_needs_orders_accepted_and_the_outbox_holding_them() {
        let t0 = Instant::now();
        let w = [Window {
            what: "the broker was stopped".into(),
            orchestrator: None,
            from: t0,
            to: t0 + Duration::from_secs(8),
        }];
        let t = tally(&[(t0 + Duration::from_secs(1), 0)]);
        let counts = BTreeMap::new();
        let mut ev = evidence(&w, &t, &counts);
        let got = checks(Scenario::BrokerStop, &ev);
        assert_eq!(got.iter().map(|c| c.ok).collect::<Vec<_>>(), [true, false], "{got:?}");
        ev.outbox_peaks = vec![12.0];
        assert!(checks(Scenario::BrokerStop, &ev).iter().all(|c| c.ok));
        assert!(!checks(Scenario::BrokerStop, &evidence(&[], &t, &counts))[0].ok, "no stop, no pass");
    }

    #[test]
    fn a_killed_orchestrator_is_covered_by_the_other_and_resumes() {
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        let w = [Window { what: "orchestrator-1 was down".into(), orchestrator: Some(0), from: s(1), to: s(3) }];
        let counts = BTreeMap::new();
        let covered = tally(&[(s(2), 1), (s(4), 0)]);
        assert!(checks(Scenario::OrchestratorKill, &evidence(&w, &covered, &counts)).iter().all(|c| c.ok));
        let never_back = tally(&[(s(2), 1), (s(4), 1)]);
        let got = checks(Scenario::OrchestratorKill, &evidence(&w, &never_back, &counts));
        assert_eq!(got.iter().map(|c| c.ok).collect::<Vec<_>>(), [true, false], "{got:?}");
    }

    #[test]
    fn the_fault_must_have_happened() {
        let t = Tally::default();
        let mut counts = BTreeMap::new();
        assert!(!checks(Scenario::Ambiguous, &evidence(&[], &t, &counts))[0].ok);
        counts.insert("carrier ambiguous", 3);
        assert!(checks(Scenario::Ambiguous, &evidence(&[], &t, &counts))[0].ok);
        let mut ev = evidence(&[], &t, &counts);
        assert!(!checks(Scenario::SlowParticipant, &ev)[0].ok);
        ev.counters.step_timeouts = 4.0;
        assert!(checks(Scenario::ParticipantDown, &ev)[0].ok);
        assert!(checks(Scenario::ParticipantKill, &ev).is_empty());
    }
}
