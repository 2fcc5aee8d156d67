//! What a scenario showed, and whether it passed: the [`Summary`] (what the clients saw, how every
//! saga ended, what the processes counted, the auditor's violations, how long draining took), the
//! accounting of accepted orders against the sagas the orchestrators hold ([`account`]), the pass
//! rule ([`failures`]), and the table ([`table`]). Pure: no IO.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::load::Accepted;
use super::observe::Counters;
use super::settle::SagaRow;

/// An expectation of one scenario (e.g. "orders were accepted while the broker was stopped").
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub what: String,
    pub ok: bool,
}

/// One scenario's result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub scenario: String,
    pub passed: bool,
    /// Why it did not pass (empty when it did).
    pub failures: Vec<String>,
    /// Orders sent.
    pub submitted: u64,
    /// Orders answered `202`.
    pub accepted: u64,
    /// Orders refused, by HTTP status, or `unreachable`.
    pub refused: BTreeMap<String, u64>,
    /// Orders sent again to another orchestrator because one could not be reached.
    pub failovers: u64,
    /// Sagas the orchestrators hold, by how they ended.
    pub completed: u64,
    pub compensated: u64,
    pub failed: u64,
    /// Sagas still running or compensating after settling.
    pub stuck: u64,
    /// Accepted orders whose saga the orchestrators do not hold.
    pub missing: u64,
    /// Sagas held whose `POST /orders` answer never reached the client.
    pub unacknowledged: u64,
    /// Orders meant to be compensated (`AQ`, over the limit, unknown SKU) that completed.
    pub wrong_outcome: u64,
    /// Sagas with an incident open (waiting for an operator).
    pub incidents_open: u64,
    /// Messages left in dead-letter queues.
    pub dead_letters: u64,
    /// Duplicate deliveries and replies the processes recognised and did not apply.
    pub duplicates_suppressed: u64,
    pub counters: Counters,
    /// Largest outbox backlog sampled (rows, summed over the processes).
    pub outbox_peak: f64,
    /// Terminal sagas the auditor checked, and what it found.
    pub audited: u64,
    pub violations: Vec<Value>,
    /// From the end of the faults and of the load to quiet; `None`: not quiet in time.
    pub drain_s: Option<f64>,
    pub elapsed_s: f64,
    /// Lines with `panicked` in the processes' logs.
    pub panics: u64,
    /// Processes that did not exit 0 on SIGTERM at the end.
    pub unclean_exits: Vec<String>,
    pub checks: Vec<Check>,
    /// What the scenario did and saw, in words.
    pub notes: Vec<String>,
    /// Where the processes' logs are.
    pub logs: String,
    /// Why the scenario could not run to its end, if it could not.
    pub error: Option<String>,
}

/// Fill in how the sagas ended, against the orders the clients saw accepted.
pub fn account(s: &mut Summary, accepted: &[Accepted], sagas: &[SagaRow]) {
    let by_id: HashMap<Uuid, &SagaRow> = sagas.iter().map(|r| (r.id, r)).collect();
    s.accepted = accepted.len() as u64;
    for row in sagas {
        match row.status.as_str() {
            "COMPLETED" => s.completed += 1,
            "COMPENSATED" => s.compensated += 1,
            "FAILED" => s.failed += 1,
            _ => s.stuck += 1,
        }
        s.incidents_open += u64::from(row.incident);
    }
    let mut known = std::collections::HashSet::new();
    for a in accepted {
        known.insert(a.saga_id);
        match by_id.get(&a.saga_id) {
            None => s.missing += 1,
            Some(row) if a.kind.must_compensate() && row.status == "COMPLETED" => s.wrong_outcome += 1,
            Some(_) => {}
        }
    }
    s.unacknowledged = sagas.iter().filter(|r| !known.contains(&r.id)).count() as u64;
}

/// The pass rule: every accepted order has a saga and every saga ended, none `FAILED`, no
/// incident open, the platform quiet in time, no auditor violation, no compensating order
/// completed, no server error but `503`, no panic, a clean exit of every process on SIGTERM, and
/// the scenario's own expectations. Empty: passed.
pub fn failures(s: &Summary) -> Vec<String> {
    let mut f = Vec::new();
    if let Some(e) = &s.error {
        f.push(format!("did not run to its end: {e}"));
    }
    let counts = [
        (s.accepted == 0, "no order was accepted".to_owned()),
        (s.stuck > 0, format!("{} saga(s) still unfinished after settling", s.stuck)),
        (s.drain_s.is_none(), "not quiet within the settle timeout".to_owned()),
        (s.missing > 0, format!("{} accepted order(s) have no saga", s.missing)),
        (s.failed > 0, format!("{} saga(s) FAILED", s.failed)),
        (s.incidents_open > 0, format!("{} incident(s) left open", s.incidents_open)),
        (!s.violations.is_empty(), format!("{} auditor violation(s)", s.violations.len())),
        (s.wrong_outcome > 0, format!("{} order(s) meant to be compensated completed", s.wrong_outcome)),
        (s.panics > 0, format!("{} panic line(s) in the processes' logs", s.panics)),
        (!s.unclean_exits.is_empty(), format!("unclean exit on SIGTERM: {}", s.unclean_exits.join(", "))),
    ];
    f.extend(counts.into_iter().filter(|(bad, _)| *bad).map(|(_, why)| why));
    for (status, n) in &s.refused {
        if status.starts_with('5') && status != "503" {
            f.push(format!("{n} order(s) answered {status}"));
        }
    }
    f.extend(s.checks.iter().filter(|c| !c.ok).map(|c| format!("expected: {}", c.what)));
    f
}

/// `503:12 unreachable:3`, or `0`.
pub fn refused_text(refused: &BTreeMap<String, u64>) -> String {
    let parts: Vec<String> = refused.iter().filter(|(_, n)| **n > 0).map(|(k, n)| format!("{k}:{n}")).collect();
    if parts.is_empty() { "0".into() } else { parts.join(" ") }
}

/// The table: a row per scenario, then each scenario's notes and failures.
pub fn table(summaries: &[Summary]) -> String {
    let header = [
        "scenario",
        "submitted",
        "accepted",
        "refused",
        "completed",
        "compensated",
        "failed",
        "stuck",
        "incidents",
        "dup suppressed",
        "violations",
        "drain",
        "result",
    ];
    let rows: Vec<Vec<String>> = summaries.iter().map(row).collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    out += &line(widths.iter().map(|w| "-".repeat(*w)).collect());
    for r in rows {
        out += &line(r);
    }
    for s in summaries {
        out += &format!("\n{} ({}): logs in {}\n", s.scenario, if s.passed { "passed" } else { "FAILED" }, s.logs);
        for n in &s.notes {
            out += &format!("  - {n}\n");
        }
        for f in &s.failures {
            out += &format!("  ! {f}\n");
        }
    }
    out
}

fn row(s: &Summary) -> Vec<String> {
    vec![
        s.scenario.clone(),
        s.submitted.to_string(),
        s.accepted.to_string(),
        refused_text(&s.refused),
        s.completed.to_string(),
        s.compensated.to_string(),
        s.failed.to_string(),
        s.stuck.to_string(),
        s.incidents_open.to_string(),
        format!(
            "{} ({} deliveries, {} replies)",
            s.duplicates_suppressed, s.counters.duplicate_deliveries, s.counters.duplicate_replies
        ),
        s.violations.len().to_string(),
        s.drain_s.map_or("not in time".into(), |d| format!("{d:.1} s")),
        if s.passed { "pass".into() } else { "FAIL".into() },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::load::Kind;
    use std::time::Instant;

    fn saga(status: &str, incident: bool) -> SagaRow {
        SagaRow { id: Uuid::now_v7(), status: status.into(), incident, detail: String::new() }
    }

    fn accepted(row: &SagaRow, kind: Kind) -> Accepted {
        Accepted { saga_id: row.id, kind, orchestrator: 0, at: Instant::now() }
    }

    fn clean() -> Summary {
        Summary { accepted: 3, drain_s: Some(1.0), ..Summary::default() }
    }

    #[test]
    fn accounting_matches_accepted_orders_with_the_sagas_held() {
        let rows = vec![
            saga("COMPLETED", false),
            saga("COMPENSATED", false),
            saga("COMPLETED", false),
            saga("RUNNING", true),
            saga("FAILED", false),
        ];
        let mut accepted_orders = vec![
            accepted(&rows[0], Kind::Complete),
            accepted(&rows[1], Kind::Complete),
            accepted(&rows[2], Kind::Unshippable),
            accepted(&rows[3], Kind::Complete),
        ];
        accepted_orders.push(Accepted {
            saga_id: Uuid::now_v7(),
            kind: Kind::Declined,
            orchestrator: 0,
            at: Instant::now(),
        });
        let mut s = Summary::default();
        account(&mut s, &accepted_orders, &rows);
        assert_eq!((s.accepted, s.completed, s.compensated, s.failed, s.stuck), (5, 2, 1, 1, 1));
        assert_eq!((s.missing, s.unacknowledged, s.wrong_outcome, s.incidents_open), (1, 1, 1, 1));
    }

    #[test]
    fn a_clean_scenario_passes() {
        let mut s = clean();
        s.refused.insert("503".into(), 7);
        s.refused.insert("unreachable".into(), 1);
        s.checks.push(Check { what: "something held".into(), ok: true });
        assert_eq!(failures(&s), Vec::<String>::new());
    }

    #[test]
    fn every_breach_of_the_rule_fails_and_says_why() {
        type Breach = fn(&mut Summary);
        let cases: Vec<(Breach, &str)> = vec![
            (|s| s.stuck = 2, "2 saga(s) still unfinished"),
            (|s| s.drain_s = None, "not quiet"),
            (|s| s.missing = 1, "have no saga"),
            (|s| s.failed = 1, "FAILED"),
            (|s| s.incidents_open = 1, "incident"),
            (|s| s.violations.push(serde_json::json!({"kind": "x"})), "violation"),
            (|s| s.wrong_outcome = 1, "meant to be compensated"),
            (|s| s.accepted = 0, "no order was accepted"),
            (|s| s.panics = 1, "panic"),
            (|s| s.unclean_exits.push("payment-1".into()), "payment-1"),
            (
                |s| {
                    s.refused.insert("500".into(), 1);
                },
                "answered 500",
            ),
            (|s| s.error = Some("rabbitmqctl failed".into()), "rabbitmqctl failed"),
            (|s| s.checks.push(Check { what: "the outbox held rows".into(), ok: false }), "outbox held"),
        ];
        for (breach, says) in cases {
            let mut s = clean();
            breach(&mut s);
            let f = failures(&s);
            assert_eq!(f.len(), 1, "{f:?}");
            assert!(f[0].contains(says), "{f:?} should say {says}");
        }
    }

    #[test]
    fn the_table_has_a_row_per_scenario_and_lists_failures() {
        let mut a = clean();
        a.scenario = "broker-drop".into();
        a.passed = true;
        a.refused.insert("503".into(), 2);
        let mut b = clean();
        b.scenario = "ambiguous".into();
        b.failed = 1;
        b.failures = failures(&b);
        b.drain_s = None;
        let t = table(&[a, b]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("| scenario") && lines[2].contains("broker-drop"), "{t}");
        assert!(lines[2].contains("503:2") && lines[2].contains("pass"), "{t}");
        assert!(lines[3].contains("ambiguous") && lines[3].contains("FAIL") && lines[3].contains("not in time"), "{t}");
        assert!(t.contains("! 1 saga(s) FAILED"), "{t}");
        assert_eq!(refused_text(&BTreeMap::new()), "0");
    }
}
