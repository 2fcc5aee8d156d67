//! The command line: flags, their defaults, and the parsers of the values that are not plain
//! numbers (durations, the mix). A bad flag is a clear error from clap, never a panic.

use std::time::Duration;

use clap::Parser;

use crate::mix::Mix;

/// `saga-bench`: drive a running platform over its public API, time every saga from
/// `POST /orders` to its `order.*` event, check what it did, and (with `--baseline`) measure the
/// floor beside it.
#[derive(Debug, Clone, Parser)]
#[command(name = "saga-bench", version, about, long_about = None)]
pub struct Args {
    /// The orchestrator's HTTP API.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,

    /// The broker (its vhost is the platform's): `saga.events` is observed there, and the floor
    /// declares its `floor.*` exchanges and queues there.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub amqp_url: String,

    /// The RabbitMQ management API (message counters of the vhost); the user and password of
    /// `--amqp-url` are used.
    #[arg(long, default_value = "http://127.0.0.1:15672")]
    pub rabbitmq_api: String,

    /// Inventory's HTTP API (`GET /stock`, before and after).
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    pub inventory_url: String,

    /// The payment gateway's HTTP API (`GET /admin/stats`, `GET /authorizations`), to check that
    /// no payment was captured twice.
    #[arg(long, default_value = "http://127.0.0.1:8091", conflicts_with = "no_gateway_check")]
    pub gateway_url: String,

    /// Skip the gateway checks (a platform that does not talk to the simulated gateway).
    #[arg(long)]
    pub no_gateway_check: bool,

    /// PostgreSQL as an administrator: `pg_stat_database`, and creating the floor's database.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub postgres_admin_url: String,

    /// The platform's databases, comma-separated: their commits are summed.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "saga_orchestrator,saga_inventory,saga_payment,saga_shipping,saga_notification"
    )]
    pub databases: Vec<String>,

    /// Closed loop: keep this many sagas in flight (the default, 16).
    #[arg(long, conflicts_with = "rate", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: Option<u32>,

    /// Open loop: start this many sagas per second, whatever is in flight; latency counts from
    /// each saga's scheduled start.
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// Measure this many sagas (default 1000).
    #[arg(long, conflicts_with = "duration", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    /// Measure for this long instead, e.g. `30s`, `2m`, `1500ms`.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Sagas run first and not measured (they are checked).
    #[arg(long, default_value_t = 100)]
    pub warmup: u64,

    /// What the orders are, as category=weight pairs: `completed`, `unknown_sku` (alias
    /// `out_of_stock`), `declined`, `unshippable`. Weights are normalised.
    #[arg(long, default_value = "completed=1", value_parser = parse_mix)]
    pub mix: Mix,

    /// A saga that has not ended this long after its start is unfinished.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub saga_timeout: Duration,

    /// Wait this long before each reading of the broker's and the database's counters: the
    /// management API refreshes every 5 s, and an idle PostgreSQL backend reports its commits
    /// within 10 s.
    #[arg(long, default_value = "11s", value_parser = parse_duration)]
    pub settle: Duration,

    /// Also measure the floor (the thinnest code doing one saga's round trips and commits), in
    /// this run, after the platform, with the same load; print ratios.
    #[arg(long)]
    pub baseline: bool,

    /// The floor's scratch database (created if missing; its tables are dropped afterwards).
    #[arg(long, default_value = "saga_floor")]
    pub floor_database: String,

    /// Connections of the floor's pool.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub floor_pool: u32,

    /// Print the report as one JSON object on the last line of stdout (the table goes to stderr).
    #[arg(long)]
    pub json: bool,
}

/// How sagas are started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// A fixed number in flight: a new one starts when one ends.
    Closed { concurrency: u32 },
    /// A fixed rate of starts per second.
    Open { rate: f64 },
}

/// When the measured phase ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Count(u64),
    Duration(Duration),
}

impl Args {
    pub fn load(&self) -> Load {
        match (self.rate, self.concurrency) {
            (Some(rate), _) => Load::Open { rate },
            (None, c) => Load::Closed { concurrency: c.unwrap_or(16) },
        }
    }

    pub fn stop(&self) -> Stop {
        match (self.duration, self.count) {
            (Some(d), _) => Stop::Duration(d),
            (None, c) => Stop::Count(c.unwrap_or(1000)),
        }
    }
}

/// `30s`, `2m`, `1500ms`, `1h`, or a bare number of seconds; fractions allowed (`0.5s`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("`{s}` is not a duration (e.g. 30s, 2m, 1500ms)"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit `{other}` in `{s}` (use ms, s, m or h)")),
    };
    if !seconds.is_finite() || seconds <= 0.0 || seconds > 7.0 * 86_400.0 {
        return Err(format!("`{s}` must be more than 0 and at most a week"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// A positive, finite number of orders per second.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= 1_000_000.0 => Ok(r),
        _ => Err(format!("`{s}` is not a rate: give orders per second, more than 0")),
    }
}

fn parse_mix(s: &str) -> Result<Mix, String> {
    s.parse::<Mix>().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0.5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        for bad in ["", "s", "0s", "-1s", "10x", "1.2.3s", "99999h", "abc"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn rates_must_be_positive_and_finite() {
        assert_eq!(parse_rate("12.5"), Ok(12.5));
        for bad in ["0", "-3", "inf", "NaN", "fast"] {
            assert!(parse_rate(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn load_and_stop_default_to_a_closed_loop_of_1000() {
        let a = Args::try_parse_from(["saga-bench"]).unwrap();
        assert_eq!(a.load(), Load::Closed { concurrency: 16 });
        assert_eq!(a.stop(), Stop::Count(1000));
        let a = Args::try_parse_from(["saga-bench", "--rate", "50", "--duration", "10s"]).unwrap();
        assert_eq!(a.load(), Load::Open { rate: 50.0 });
        assert_eq!(a.stop(), Stop::Duration(Duration::from_secs(10)));
        assert_eq!(a.databases.len(), 5);
    }

    #[test]
    fn contradictory_or_bad_flags_are_errors_not_panics() {
        for bad in [
            vec!["--rate", "5", "--concurrency", "3"],
            vec!["--count", "5", "--duration", "3s"],
            vec!["--concurrency", "0"],
            vec!["--count", "0"],
            vec!["--mix", "completed=0.5,teleported=0.5"],
            vec!["--duration", "soon"],
            vec!["--no-gateway-check", "--gateway-url", "http://x"],
        ] {
            let argv = std::iter::once("saga-bench").chain(bad.iter().copied());
            assert!(Args::try_parse_from(argv).is_err(), "{bad:?} must be refused");
        }
    }
}
