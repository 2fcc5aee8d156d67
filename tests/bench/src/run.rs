//! A whole run: the platform measured and checked, then (with `--baseline`) the floor measured
//! the same way; the report.
//!
//! A measurement is: warm-up sagas; a pause for the counters to settle; counters read; the
//! process sampler started; the measured sagas; the sampler stopped; a pause; counters read.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use sqlx::PgPool;

use crate::checks;
use crate::cli::{Args, Load, Stop};
use crate::driver::{self, Phase, PhaseResult, Sample, Target};
use crate::events::EventTap;
use crate::floor::Floor;
use crate::mix::Mix;
use crate::orders::Catalog;
use crate::platform::{PlatformClient, PlatformTarget};
use crate::probes::broker::BrokerProbe;
use crate::probes::database::{DatabaseProbe, admin_pool};
use crate::probes::procs::{Group, Sampler, Select};
use crate::probes::{Counters, Probes};
use crate::report::{Figures, Report, RunSettings};

/// The executables of the platform (`infra/dev up` runs them under these names).
pub const PLATFORM_EXECUTABLES: [&str; 7] =
    ["orchestrator", "inventory", "payment", "shipping", "notification", "orders", "outside"];

/// The platform's processes, the broker and the database count in its CPU; the generator does not.
pub fn platform_groups() -> Vec<Group> {
    let mut groups: Vec<Group> = PLATFORM_EXECUTABLES.iter().map(|e| Group::named(e, e, true)).collect();
    groups.extend(shared_groups());
    groups.push(Group { label: "saga-bench".into(), select: Select::Pid(std::process::id()), in_total: false });
    groups
}

/// The floor runs inside the generator: its CPU counts, with the broker's and the database's.
pub fn floor_groups() -> Vec<Group> {
    let mut groups =
        vec![Group { label: "saga-bench (floor)".into(), select: Select::Pid(std::process::id()), in_total: true }];
    groups.extend(shared_groups());
    groups
}

fn shared_groups() -> Vec<Group> {
    vec![Group::named("rabbitmq (beam.smp)", "beam.smp", true), Group::named("postgres", "postgres", true)]
}

fn bar(label: &str, stop: Stop) -> ProgressBar {
    let (bar, template) = match stop {
        Stop::Count(n) => {
            (ProgressBar::new(n), "{prefix:>18} [{bar:40}] {pos}/{len} sagas, {per_sec}, {elapsed}".to_owned())
        }
        Stop::Duration(d) => (
            ProgressBar::no_length(),
            format!("{{prefix:>18}} {{spinner}} {{pos}} sagas, {{per_sec}}, {{elapsed}} of {}s", d.as_secs()),
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label.to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

async fn settle(label: &str, pause: Duration) {
    let spinner =
        ProgressBar::new_spinner().with_message(format!("{label}: waiting {}s for the counters", pause.as_secs()));
    spinner.enable_steady_tick(Duration::from_millis(200));
    tokio::time::sleep(pause).await;
    spinner.finish_and_clear();
}

/// Figures of the measured phase, and every sample (warm-up included) for the checks.
pub struct Measured {
    pub figures: Figures,
    pub samples: Vec<Sample>,
}

/// Warm up, then measure `target` under the run's load.
pub async fn measure<T: Target>(
    target: Arc<T>,
    mix: &Mix,
    args: &Args,
    probes: &Probes,
    groups: Vec<Group>,
    label: &str,
) -> Measured {
    let (load, timeout) = (args.load(), args.saga_timeout);
    let mut samples = Vec::new();
    if args.warmup > 0 {
        let stop = Stop::Count(args.warmup);
        let progress = bar(&format!("{label} warm-up"), stop);
        let warm = driver::drive(target.clone(), mix, Phase { load, stop, timeout, first_index: 0 }, &progress).await;
        progress.finish_and_clear();
        samples.extend(warm.samples);
    }
    settle(label, args.settle).await;
    let before = probes.read().await;
    let sampler = Sampler::start(groups);
    let progress = bar(label, args.stop());
    let phase = Phase { load, stop: args.stop(), timeout, first_index: args.warmup };
    let result: PhaseResult = driver::drive(target, mix, phase, &progress).await;
    let usage = sampler.finish().await;
    progress.finish_and_clear();
    settle(label, args.settle).await;
    let after: Counters = probes.read().await;
    let figures = Figures::new(&result, before, after, &usage);
    samples.extend(result.samples);
    Measured { figures, samples }
}

fn settings(args: &Args) -> RunSettings {
    let (concurrency, rate) = match args.load() {
        Load::Closed { concurrency } => (Some(concurrency), None),
        Load::Open { rate } => (None, Some(rate)),
    };
    let (count, duration_s) = match args.stop() {
        Stop::Count(n) => (Some(n), None),
        Stop::Duration(d) => (None, Some(d.as_secs_f64())),
    };
    RunSettings {
        load: if rate.is_some() { "open" } else { "closed" },
        concurrency,
        rate,
        count,
        duration_s,
        warmup: args.warmup,
        mix: args.mix.to_string(),
    }
}

/// Run everything the flags ask for.
pub async fn run(args: &Args) -> anyhow::Result<Report> {
    let gateway = (!args.no_gateway_check).then_some(args.gateway_url.as_str());
    let client = PlatformClient::new(&args.url, &args.inventory_url, gateway)?;
    let stock_before = client.stock().await?;
    let gateway_before = client.gateway_stats().await?;
    let admin = admin_pool(&args.postgres_admin_url).await?;
    let broker = BrokerProbe::new(&args.rabbitmq_api, &args.amqp_url)?;
    let probes =
        Probes { broker: broker.clone(), database: DatabaseProbe::new(admin.clone(), args.databases.clone()).await? };
    let tap = EventTap::bind(&args.amqp_url).await?;
    let catalog = Mutex::new(Catalog::from_stock(&stock_before));
    let target = Arc::new(PlatformTarget { client: client.clone(), tap, catalog });
    let measured = measure(target, &args.mix, args, &probes, platform_groups(), "platform").await;

    let mut violations: Vec<String> = checks::check_ends(&measured.samples).iter().map(ToString::to_string).collect();
    let stock_after = client.stock().await?;
    let units = checks::completed_units(&measured.samples);
    violations.extend(checks::check_stock(&stock_before, &stock_after, &units).iter().map(ToString::to_string));
    if let (Some(before), Some(after)) = (gateway_before, client.gateway_stats().await?) {
        let auths = client.authorizations().await?;
        violations
            .extend(checks::check_payments(&before, &after, &auths, &measured.samples).iter().map(ToString::to_string));
    }
    let floor = match args.baseline {
        false => None,
        true => Some(run_floor(args, &admin, broker, &mut violations).await?),
    };
    Ok(Report::new(settings(args), measured.figures, violations, floor))
}

/// The floor, measured like the platform; its own failures are violations too.
async fn run_floor(
    args: &Args,
    admin: &PgPool,
    broker: BrokerProbe,
    violations: &mut Vec<String>,
) -> anyhow::Result<Figures> {
    let database = DatabaseProbe::new(admin.clone(), vec![args.floor_database.clone()]);
    let floor =
        Floor::start(&args.amqp_url, admin, &args.postgres_admin_url, &args.floor_database, args.floor_pool).await?;
    let floor = Arc::new(floor);
    let measured = match database.await {
        Ok(database) => {
            let probes = Probes { broker, database };
            let mix: Mix = "completed=1".parse()?;
            Ok(measure(floor.clone(), &mix, args, &probes, floor_groups(), "floor").await)
        }
        Err(e) => Err(e),
    };
    match Arc::try_unwrap(floor) {
        Ok(floor) => floor.stop().await?,
        Err(_) => eprintln!("saga-bench: the floor is still in use; its exchanges, queues and tables are left"),
    }
    let measured = measured?;
    violations.extend(checks::check_ends(&measured.samples).iter().map(|v| format!("floor: {v}")));
    Ok(measured.figures)
}
