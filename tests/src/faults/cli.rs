//! The command line of `saga-faults`: the flags, the scenario selection (`--scenario NAME`,
//! repeatable or comma-separated, `all`, or none for all), durations (`500ms`, `30s`, `5m`, `1h`,
//! or plain seconds), and the [`Profile`] they make: how long, how fast and how hard a run is.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use super::scenario::Scenario;

/// Fault-injection suite: the six binaries as OS processes on a fresh vhost and databases, a
/// steady stream of orders, the faults of each scenario, then settle and audit. Exit status 0 when
/// every scenario passed, 1 when one failed, 2 for bad flags.
#[derive(Debug, Parser)]
#[command(name = "saga-faults", version)]
pub struct Args {
    /// A scenario to run (repeatable, or comma-separated); `all` (the default) runs every one.
    #[arg(long = "scenario", value_name = "NAME")]
    pub scenarios: Vec<String>,
    /// A short run for the test suite: a few hundred orders at most per scenario, short faults.
    #[arg(long)]
    pub quick: bool,
    /// Print one JSON object per scenario on standard output (the table goes to standard error).
    #[arg(long)]
    pub json: bool,
    /// Most orders per scenario.
    #[arg(long)]
    pub count: Option<u64>,
    /// How long each scenario injects its faults (the orders flow a little longer), e.g. `5m`.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Orders per second, spread over the clients.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Concurrent clients submitting orders.
    #[arg(long)]
    pub clients: Option<usize>,
    /// How long the broker stays stopped in `broker-stop`.
    #[arg(long, value_parser = parse_duration)]
    pub broker_down: Option<Duration>,
    /// How long PostgreSQL stays stopped in `postgres-restart` (`0s`: `pg_ctlcluster restart`).
    #[arg(long, value_parser = parse_duration)]
    pub pg_down: Option<Duration>,
    /// How long to wait, after the faults, for every saga to end and every queue to empty.
    #[arg(long, value_parser = parse_duration)]
    pub settle_timeout: Option<Duration>,
    /// Seed of the random moments and choices (printed; the default draws one).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Where the six binaries are (default: beside this one).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Where each run keeps its processes' logs (default: `target/saga-faults/<run>`).
    #[arg(long)]
    pub log_dir: Option<PathBuf>,
    /// List the scenarios and exit.
    #[arg(long)]
    pub list: bool,
}

/// Timings and load of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Orders flow this long before the first fault.
    pub warmup: Duration,
    /// How long faults are injected.
    pub window: Duration,
    /// Orders flow this long after the faults.
    pub tail: Duration,
    pub settle_timeout: Duration,
    pub broker_down: Duration,
    pub pg_down: Duration,
    pub rate: f64,
    pub clients: usize,
    pub max_orders: u64,
    pub seed: u64,
}

impl Profile {
    /// The quick profile (`--quick`) or the full one, with the flags given on top.
    pub fn from_args(args: &Args, drawn_seed: u64) -> Profile {
        let base = if args.quick {
            Profile {
                warmup: Duration::from_secs(2),
                window: Duration::from_secs(10),
                tail: Duration::from_secs(2),
                settle_timeout: Duration::from_secs(120),
                broker_down: Duration::from_secs(8),
                // Longer than the 5 s a request waits for a pooled connection: clients see 503s.
                pg_down: Duration::from_secs(8),
                rate: 12.0,
                clients: 6,
                max_orders: 300,
                seed: drawn_seed,
            }
        } else {
            Profile {
                warmup: Duration::from_secs(5),
                window: Duration::from_secs(60),
                tail: Duration::from_secs(5),
                settle_timeout: Duration::from_secs(300),
                broker_down: Duration::from_secs(30),
                pg_down: Duration::from_secs(10),
                rate: 20.0,
                clients: 8,
                max_orders: 5000,
                seed: drawn_seed,
            }
        };
        Profile {
            window: args.duration.unwrap_or(base.window),
            settle_timeout: args.settle_timeout.unwrap_or(base.settle_timeout),
            broker_down: args.broker_down.unwrap_or(base.broker_down),
            pg_down: args.pg_down.unwrap_or(base.pg_down),
            rate: args.rate.filter(|r| r.is_finite() && *r > 0.0).unwrap_or(base.rate),
            clients: args.clients.filter(|c| *c > 0).unwrap_or(base.clients),
            max_orders: args.count.unwrap_or(base.max_orders),
            seed: args.seed.unwrap_or(base.seed),
            ..base
        }
    }
}

/// The scenarios named, in order, each once; none or `all` is every scenario.
pub fn select(names: &[String]) -> Result<Vec<Scenario>, String> {
    let mut chosen: Vec<Scenario> = Vec::new();
    let split = names.iter().flat_map(|n| n.split(',')).map(str::trim).filter(|n| !n.is_empty());
    for name in split {
        let add: Vec<Scenario> = if name == "all" {
            Scenario::ALL.to_vec()
        } else {
            let known = Scenario::ALL.map(Scenario::name).join(", ");
            vec![Scenario::from_name(name).ok_or_else(|| format!("unknown scenario `{name}` (known: {known}, all)"))?]
        };
        for s in add {
            if !chosen.contains(&s) {
                chosen.push(s);
            }
        }
    }
    Ok(if chosen.is_empty() { Scenario::ALL.to_vec() } else { chosen })
}

/// `500ms`, `30s`, `5m`, `1h`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("`{text}` is not a duration (e.g. 500ms, 30s, 5m, 1h)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("`{text}`: unknown unit `{unit}` (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("`{text}` is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn selection_keeps_order_drops_repeats_and_expands_all() {
        assert_eq!(select(&[]).unwrap(), Scenario::ALL.to_vec());
        assert_eq!(select(&names(&["all"])).unwrap(), Scenario::ALL.to_vec());
        assert_eq!(
            select(&names(&["duplicates", "broker-stop,duplicates", " ambiguous "])).unwrap(),
            vec![Scenario::Duplicates, Scenario::BrokerStop, Scenario::Ambiguous]
        );
        let with_all = select(&names(&["ambiguous", "all"])).unwrap();
        assert_eq!(with_all[0], Scenario::Ambiguous);
        assert_eq!(with_all.len(), Scenario::ALL.len());
    }

    #[test]
    fn an_unknown_scenario_is_refused_with_the_known_names() {
        let err = select(&names(&["participant-kill", "chaos-monkey"])).unwrap_err();
        assert!(err.contains("chaos-monkey") && err.contains("broker-drop") && err.contains("all"), "{err}");
        assert!(select(&names(&[","])).is_ok_and(|s| s.len() == Scenario::ALL.len()));
    }

    #[test]
    fn durations_take_units_and_refuse_garbage() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("8"), Ok(Duration::from_secs(8)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        for bad in ["", "s", "ten", "5 parsecs", "-3s", "1e400s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_quick_profile_is_bounded_and_flags_override_it() {
        let quick = Args::parse_from(["saga-faults", "--quick"]);
        let p = Profile::from_args(&quick, 7);
        assert!(p.max_orders <= 300 && p.window <= Duration::from_secs(15) && p.broker_down < Duration::from_secs(30));
        assert_eq!(p.seed, 7);
        let args = Args::parse_from(["saga-faults", "--quick", "--count", "50", "--duration", "3s", "--seed", "9"]);
        let p = Profile::from_args(&args, 7);
        assert_eq!((p.max_orders, p.window, p.seed), (50, Duration::from_secs(3), 9));
        let soak = Profile::from_args(&Args::parse_from(["saga-faults", "--rate", "0", "--clients", "0"]), 1);
        assert_eq!(soak.broker_down, Duration::from_secs(30));
        assert!(soak.rate > 0.0 && soak.clients > 0, "nonsense falls back to the profile's");
    }
}
