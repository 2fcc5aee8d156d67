//! The figures of a phase (counts, throughput, latency percentiles, costs per saga), the report
//! of a run (the platform's figures, the floor's, their ratios, the violations), and how it is
//! printed: a table for people, one JSON object for tools.

use std::fmt::Write;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::driver::{Outcome, PhaseResult};
use crate::probes::Counters;
use crate::probes::procs::Usage;

/// What one process group cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessFigures {
    pub name: String,
    /// Most processes of the group seen at once (0: none found on this machine).
    pub processes: usize,
    pub cpu_s_per_saga: f64,
    pub peak_rss_mib: f64,
    /// Whether its CPU counts in `cpu_s_per_saga` of the whole.
    pub in_total: bool,
}

/// The figures of one measured phase.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figures {
    /// Orders the phase tried: the sum of the next five.
    pub submitted: u64,
    pub completed: u64,
    pub compensated: u64,
    pub failed: u64,
    pub unfinished: u64,
    /// Orders refused by `POST /orders` (or never sent: no stock left).
    pub not_accepted: u64,
    /// From the phase's first start to its last end.
    pub elapsed_s: f64,
    /// Ended sagas (completed, compensated, failed) per second of `elapsed_s`.
    pub sagas_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    pub broker_published_per_saga: Option<f64>,
    pub broker_delivered_per_saga: Option<f64>,
    pub db_commits_per_saga: Option<f64>,
    /// CPU of the groups marked `in_total`, per ended saga.
    pub cpu_s_per_saga: Option<f64>,
    pub processes: Vec<ProcessFigures>,
}

impl Figures {
    /// Figures from a phase's samples, the counters around it and what the processes used.
    pub fn new(phase: &PhaseResult, before: Counters, after: Counters, usage: &[Usage]) -> Figures {
        let count = |event: &str| {
            phase.samples.iter().filter(|s| matches!(&s.outcome, Outcome::Ended(e) if e == event)).count() as u64
        };
        let (completed, compensated, failed) =
            (count("order.completed"), count("order.compensated"), count("order.failed"));
        let unfinished = phase.samples.iter().filter(|s| s.outcome == Outcome::Unfinished).count() as u64;
        let not_accepted = phase.samples.iter().filter(|s| matches!(s.outcome, Outcome::NotStarted(_))).count() as u64;
        let ended = completed + compensated + failed;
        let per_saga = |x: f64| (ended > 0).then(|| x / ended as f64);
        let lat = Percentiles::of(phase.samples.iter().filter_map(|s| s.latency));
        let elapsed_s = phase.elapsed.as_secs_f64();
        let delta = |f: fn(&Counters) -> Option<u64>| match (f(&before), f(&after)) {
            (Some(b), Some(a)) => per_saga(a.saturating_sub(b) as f64),
            _ => None,
        };
        let total_cpu: f64 = usage.iter().filter(|u| u.in_total).map(|u| u.cpu_s).sum();
        Figures {
            submitted: phase.samples.len() as u64,
            completed,
            compensated,
            failed,
            unfinished,
            not_accepted,
            elapsed_s,
            sagas_per_s: if elapsed_s > 0.0 { ended as f64 / elapsed_s } else { 0.0 },
            p50_ms: lat.p50_ms,
            p90_ms: lat.p90_ms,
            p99_ms: lat.p99_ms,
            max_ms: lat.max_ms,
            mean_ms: lat.mean_ms,
            broker_published_per_saga: delta(|c| c.broker.map(|b| b.published)),
            broker_delivered_per_saga: delta(|c| c.broker.map(|b| b.delivered)),
            db_commits_per_saga: delta(|c| c.commits.map(|n| n.max(0) as u64)),
            cpu_s_per_saga: usage.iter().any(|u| u.in_total && u.processes > 0).then(|| per_saga(total_cpu)).flatten(),
            processes: usage
                .iter()
                .map(|u| ProcessFigures {
                    name: u.label.clone(),
                    processes: u.processes,
                    cpu_s_per_saga: per_saga(u.cpu_s).unwrap_or(0.0),
                    peak_rss_mib: u.peak_rss_bytes as f64 / (1024.0 * 1024.0),
                    in_total: u.in_total,
                })
                .collect(),
        }
    }
}

/// Latency percentiles in milliseconds (all 0 with no latency).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Percentiles {
    /// Recorded in microseconds, 3 significant digits (HdrHistogram).
    pub fn of(latencies: impl Iterator<Item = Duration>) -> Percentiles {
        let Ok(mut hist) = Histogram::<u64>::new(3) else { return Percentiles::default() };
        for l in latencies {
            let _ = hist.record(u64::try_from(l.as_micros()).unwrap_or(u64::MAX).max(1));
        }
        if hist.is_empty() {
            return Percentiles::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            p50_ms: ms(hist.value_at_quantile(0.5)),
            p90_ms: ms(hist.value_at_quantile(0.9)),
            p99_ms: ms(hist.value_at_quantile(0.99)),
            max_ms: ms(hist.max()),
            mean_ms: hist.mean() / 1000.0,
        }
    }
}

/// The platform over the floor: above 1 the platform is slower, costlier or has more latency,
/// except `sagas_per_s`, where below 1 it is slower.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ratios {
    pub sagas_per_s: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
    pub cpu_per_saga: Option<f64>,
}

impl Ratios {
    pub fn new(platform: &Figures, floor: &Figures) -> Ratios {
        let r = |p: f64, f: f64| (f > 0.0).then(|| p / f);
        let cpu = match (platform.cpu_s_per_saga, floor.cpu_s_per_saga) {
            (Some(p), Some(f)) => r(p, f),
            _ => None,
        };
        Ratios {
            sagas_per_s: r(platform.sagas_per_s, floor.sagas_per_s),
            p50: r(platform.p50_ms, floor.p50_ms),
            p90: r(platform.p90_ms, floor.p90_ms),
            p99: r(platform.p99_ms, floor.p99_ms),
            max: r(platform.max_ms, floor.max_ms),
            cpu_per_saga: cpu,
        }
    }
}

/// How the run was driven.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSettings {
    /// `closed` or `open`.
    pub load: &'static str,
    pub concurrency: Option<u32>,
    pub rate: Option<f64>,
    pub count: Option<u64>,
    pub duration_s: Option<f64>,
    pub warmup: u64,
    pub mix: String,
}

/// Everything a run found. Serialised flat: the platform's figures at the top level.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub platform: Figures,
    /// How many things did not hold (0 for a clean run); what they are in `violation_list`.
    pub violations: usize,
    pub violation_list: Vec<String>,
    pub settings: RunSettings,
    pub floor: Option<Figures>,
    pub ratios: Option<Ratios>,
}

impl Report {
    pub fn new(settings: RunSettings, platform: Figures, violations: Vec<String>, floor: Option<Figures>) -> Report {
        let ratios = floor.as_ref().map(|f| Ratios::new(&platform, f));
        Report { platform, violations: violations.len(), violation_list: violations, settings, floor, ratios }
    }

    /// The one-line JSON object.
    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

fn num(x: f64, decimals: usize) -> String {
    format!("{x:.decimals$}")
}

fn opt(x: Option<f64>, decimals: usize) -> String {
    x.map_or_else(|| "-".to_owned(), |x| num(x, decimals))
}

/// The table: one row per figure, a column for the platform and, with a floor, for the floor and
/// the ratio; then the processes; then the violations.
pub fn table(r: &Report) -> String {
    let mut out = String::new();
    let s = &r.settings;
    let load = match (s.concurrency, s.rate) {
        (Some(c), _) => format!("closed loop, {c} in flight"),
        (_, Some(rate)) => format!("open loop, {rate} sagas/s"),
        _ => s.load.to_owned(),
    };
    let _ = writeln!(out, "saga-bench: {load}, warm-up {}, mix {}", s.warmup, s.mix);
    let (p, f, ratios) = (&r.platform, r.floor.as_ref(), r.ratios.as_ref());
    let _ = writeln!(
        out,
        "{:<26}{:>12}{}",
        "",
        "platform",
        if f.is_some() { format!("{:>12}{:>10}", "floor", "ratio") } else { String::new() }
    );
    for (name, pv, fv, ratio) in rows(p, f, ratios) {
        let mut line = format!("{name:<26}{pv:>12}");
        if let Some(fv) = fv {
            let _ = write!(line, "{fv:>12}{:>10}", ratio.map_or_else(String::new, |x| format!("{x:.2}x")));
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    processes(&mut out, "platform", &p.processes);
    if let Some(f) = f {
        processes(&mut out, "floor", &f.processes);
    }
    violations(&mut out, &r.violation_list);
    out
}

/// A table row: name, the platform's value, the floor's, the ratio.
type Row = (&'static str, String, Option<String>, Option<f64>);

fn rows(p: &Figures, f: Option<&Figures>, ratios: Option<&Ratios>) -> Vec<Row> {
    vec![
        ("submitted", p.submitted.to_string(), f.map(|f| f.submitted.to_string()), None),
        ("completed", p.completed.to_string(), f.map(|f| f.completed.to_string()), None),
        ("compensated", p.compensated.to_string(), f.map(|f| f.compensated.to_string()), None),
        ("failed", p.failed.to_string(), f.map(|f| f.failed.to_string()), None),
        ("unfinished", p.unfinished.to_string(), f.map(|f| f.unfinished.to_string()), None),
        ("not accepted", p.not_accepted.to_string(), f.map(|f| f.not_accepted.to_string()), None),
        ("sagas/s", num(p.sagas_per_s, 1), f.map(|f| num(f.sagas_per_s, 1)), ratios.and_then(|x| x.sagas_per_s)),
        ("latency p50 ms", num(p.p50_ms, 1), f.map(|f| num(f.p50_ms, 1)), ratios.and_then(|x| x.p50)),
        ("latency p90 ms", num(p.p90_ms, 1), f.map(|f| num(f.p90_ms, 1)), ratios.and_then(|x| x.p90)),
        ("latency p99 ms", num(p.p99_ms, 1), f.map(|f| num(f.p99_ms, 1)), ratios.and_then(|x| x.p99)),
        ("latency max ms", num(p.max_ms, 1), f.map(|f| num(f.max_ms, 1)), ratios.and_then(|x| x.max)),
        ("broker msgs/saga", opt(p.broker_published_per_saga, 1), f.map(|f| opt(f.broker_published_per_saga, 1)), None),
        (
            "broker deliveries/saga",
            opt(p.broker_delivered_per_saga, 1),
            f.map(|f| opt(f.broker_delivered_per_saga, 1)),
            None,
        ),
        ("db commits/saga", opt(p.db_commits_per_saga, 1), f.map(|f| opt(f.db_commits_per_saga, 1)), None),
        (
            "cpu ms/saga",
            opt(p.cpu_s_per_saga.map(|c| c * 1000.0), 2),
            f.map(|f| opt(f.cpu_s_per_saga.map(|c| c * 1000.0), 2)),
            ratios.and_then(|x| x.cpu_per_saga),
        ),
    ]
}

fn processes(out: &mut String, label: &str, procs: &[ProcessFigures]) {
    let _ = writeln!(out, "\n{:<26}{:>6}{:>14}{:>14}", format!("{label}: process"), "n", "cpu ms/saga", "peak RSS MiB");
    for p in procs {
        let name = if p.in_total { p.name.clone() } else { format!("({})", p.name) };
        let _ =
            writeln!(out, "{name:<26}{:>6}{:>14.2}{:>14.1}", p.processes, p.cpu_s_per_saga * 1000.0, p.peak_rss_mib);
    }
}

/// At most this many violations are listed in the table (all are in the JSON).
const LISTED: usize = 20;

fn violations(out: &mut String, list: &[String]) {
    if list.is_empty() {
        let _ = writeln!(out, "\nchecks: every order ended as expected, stock conserved, no payment captured twice");
        return;
    }
    let _ = writeln!(out, "\nVIOLATIONS ({}):", list.len());
    for v in list.iter().take(LISTED) {
        let _ = writeln!(out, "  - {v}");
    }
    if list.len() > LISTED {
        let _ = writeln!(out, "  ... and {} more (see --json)", list.len() - LISTED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::Sample;
    use crate::mix::Kind;
    use crate::probes::broker::BrokerCounters;

    fn figures(sagas_per_s: f64, p50_ms: f64, cpu: Option<f64>) -> Figures {
        Figures {
            submitted: 100,
            completed: 90,
            compensated: 10,
            failed: 0,
            unfinished: 0,
            not_accepted: 0,
            elapsed_s: 2.0,
            sagas_per_s,
            p50_ms,
            p90_ms: p50_ms * 2.0,
            p99_ms: p50_ms * 3.0,
            max_ms: p50_ms * 4.0,
            mean_ms: p50_ms,
            broker_published_per_saga: Some(11.0),
            broker_delivered_per_saga: Some(12.0),
            db_commits_per_saga: Some(20.5),
            cpu_s_per_saga: cpu,
            processes: vec![ProcessFigures {
                name: "orchestrator".into(),
                processes: 1,
                cpu_s_per_saga: 0.00125,
                peak_rss_mib: 42.0,
                in_total: true,
            }],
        }
    }

    fn settings() -> RunSettings {
        RunSettings {
            load: "closed",
            concurrency: Some(16),
            rate: None,
            count: Some(100),
            duration_s: None,
            warmup: 10,
            mix: "completed=0.9,declined=0.1".into(),
        }
    }

    #[test]
    fn percentiles_come_from_the_histogram_in_milliseconds() {
        let p = Percentiles::of((1..=100).map(Duration::from_millis));
        assert!((p.p50_ms - 50.0).abs() < 0.1 && (p.p90_ms - 90.0).abs() < 0.1, "{p:?}");
        assert!((p.p99_ms - 99.0).abs() < 0.1 && (p.max_ms - 100.0).abs() < 0.1, "{p:?}");
        assert!((p.mean_ms - 50.5).abs() < 0.1, "{p:?}");
        assert_eq!(Percentiles::of(std::iter::empty()), Percentiles::default());
    }

    #[test]
    fn figures_count_outcomes_and_divide_costs_by_ended_sagas() {
        let s = |outcome: Outcome, ms: Option<u64>| Sample {
            kind: Kind::Completed,
            saga: None,
            sku: None,
            outcome,
            latency: ms.map(Duration::from_millis),
        };
        let phase = PhaseResult {
            samples: vec![
                s(Outcome::Ended("order.completed".into()), Some(10)),
                s(Outcome::Ended("order.compensated".into()), Some(30)),
                s(Outcome::Unfinished, None),
                s(Outcome::NotStarted("503".into()), None),
            ],
            elapsed: Duration::from_secs(1),
        };
        let at = |published, commits| Counters { broker: Some(BrokerCounters { published, delivered: 0 }), commits };
        let usage = [Usage { label: "x".into(), in_total: true, processes: 2, cpu_s: 0.5, peak_rss_bytes: 1 << 20 }];
        let f = Figures::new(&phase, at(100, Some(7)), at(120, None), &usage);
        assert_eq!((f.submitted, f.completed, f.compensated, f.unfinished, f.not_accepted), (4, 1, 1, 1, 1));
        assert_eq!(f.sagas_per_s, 2.0);
        assert_eq!((f.broker_published_per_saga, f.db_commits_per_saga), (Some(10.0), None));
        assert_eq!(f.cpu_s_per_saga, Some(0.25));
        assert_eq!((f.processes[0].peak_rss_mib, f.processes[0].processes), (1.0, 2));
    }

    #[test]
    fn the_table_shows_the_platform_alone_or_beside_the_floor_with_ratios() {
        let alone = Report::new(settings(), figures(100.0, 20.0, Some(0.004)), vec![], None);
        let t = table(&alone);
        assert!(t.contains("closed loop, 16 in flight, warm-up 10, mix completed=0.9,declined=0.1"), "{t}");
        assert!(t.lines().any(|l| l == format!("{:<26}{:>12}", "sagas/s", "100.0")), "{t}");
        assert!(t.lines().any(|l| l == format!("{:<26}{:>12}", "cpu ms/saga", "4.00")), "{t}");
        assert!(t.contains("no payment captured twice"), "{t}");
        assert!(!t.contains("floor"), "{t}");

        let v: Vec<String> = (0..25).map(|i| format!("problem {i}")).collect();
        let both =
            Report::new(settings(), figures(100.0, 20.0, Some(0.004)), v, Some(figures(400.0, 5.0, Some(0.001))));
        let t = table(&both);
        let line = |name: &str| t.lines().find(|l| l.starts_with(name)).unwrap_or_default().to_owned();
        assert_eq!(line("sagas/s"), format!("{:<26}{:>12}{:>12}{:>10}", "sagas/s", "100.0", "400.0", "0.25x"));
        assert_eq!(
            line("latency p50 ms"),
            format!("{:<26}{:>12}{:>12}{:>10}", "latency p50 ms", "20.0", "5.0", "4.00x")
        );
        assert_eq!(line("cpu ms/saga"), format!("{:<26}{:>12}{:>12}{:>10}", "cpu ms/saga", "4.00", "1.00", "4.00x"));
        assert!(t.contains("VIOLATIONS (25):") && t.contains("  - problem 19") && !t.contains("problem 20"), "{t}");
        assert!(t.contains("... and 5 more"), "{t}");
    }

    #[test]
    fn the_json_is_one_line_with_the_platform_figures_at_the_top() {
        let r = Report::new(settings(), figures(100.0, 20.0, None), vec!["x".into()], Some(figures(50.0, 10.0, None)));
        let line = r.json();
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        for key in [
            "submitted",
            "completed",
            "compensated",
            "failed",
            "unfinished",
            "sagas_per_s",
            "p50_ms",
            "p90_ms",
            "p99_ms",
            "max_ms",
        ] {
            assert!(v[key].is_number(), "{key} in {line}");
        }
        assert_eq!(v["violations"], 1);
        assert_eq!(v["ratios"]["sagas_per_s"], 2.0);
        assert_eq!(v["ratios"]["cpu_per_saga"], serde_json::Value::Null);
        assert_eq!(v["floor"]["sagas_per_s"], 50.0);
    }
}
