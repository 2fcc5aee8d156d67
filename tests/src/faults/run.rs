//! One scenario from start to end: a fresh platform (vhost, five databases, the broker users), the
//! cluster of binaries, the order stream, the faults, then settling, the end state, the audit, and
//! every process stopped with SIGTERM. Whatever happens, a [`Summary`] comes out: a step that
//! fails is its `error`, and the scenario fails.

use std::path::PathBuf;
use std::time::Instant;

use infra::amqp::Broker;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::cli::Profile;
use super::expect::{self, Evidence};
use super::inject::{self, Ctx, Faults};
use super::load::{Load, Stream, Tally};
use super::observe::{Meter, Sampler};
use super::replay::Duplicator;
use super::scenario::Scenario;
use super::settle::{self, Probe};
use super::summary::{self, Summary};
use crate::cluster::{Cluster, ClusterSpec, Program};
use crate::{Service, TestConfig, TestPlatform};

/// What every scenario of a run shares.
#[derive(Debug, Clone)]
pub struct Setup {
    pub profile: Profile,
    pub bin_dir: PathBuf,
    /// The run's directory; each scenario keeps its logs in a directory of its own below.
    pub log_dir: PathBuf,
    pub run_id: String,
}

/// Run `scenario` (the `index`th of the run) and judge it.
pub async fn scenario(scenario: Scenario, index: usize, setup: &Setup) -> Summary {
    let started = Instant::now();
    let dir = setup.log_dir.join(scenario.name());
    let mut summary =
        Summary { scenario: scenario.name().into(), logs: dir.display().to_string(), ..Summary::default() };
    let platform = TestPlatform::new(TestConfig::default()).await;
    let (orchestrators, participants) = scenario.instances();
    let spec =
        ClusterSpec::new(&setup.bin_dir).instances(orchestrators, participants).envs(&scenario.env()).log_dir(&dir);
    match Cluster::start(&platform, spec).await {
        Ok(cluster) => {
            if let Err(e) = drive(scenario, index, setup, &platform, cluster, &mut summary).await {
                summary.error.get_or_insert(format!("{e:#}"));
            }
        }
        Err(e) => summary.error = Some(format!("the binaries did not start: {e:#}")),
    }
    summary.panics = panics_logged(&dir);
    platform.shutdown().await;
    summary.elapsed_s = started.elapsed().as_secs_f64();
    summary.failures = summary::failures(&summary);
    summary.passed = summary.failures.is_empty();
    summary
}

/// Load, faults, settle, gather, stop.
async fn drive(
    scenario: Scenario,
    index: usize,
    setup: &Setup,
    platform: &TestPlatform,
    mut cluster: Cluster,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let (http, profile) = (platform.http.clone(), &setup.profile);
    let duplicator = match scenario {
        Scenario::Duplicates => Some(Duplicator::start(&platform.vhost.amqp_url).await?),
        _ => None,
    };
    let instances: Vec<String> = cluster.platform_ids().iter().map(|id| cluster.url_of(*id).to_owned()).collect();
    let mut sampler = Sampler::start(http.clone(), instances.clone());
    let orchestrators = cluster.urls(Service::Orchestrator);
    let load = Load::start(http.clone(), stream(scenario, setup, &orchestrators));
    tokio::time::sleep(profile.warmup).await;
    let mut meter = Meter::default();
    let rng = StdRng::seed_from_u64(profile.seed.wrapping_add(index as u64));
    let mut ctx = Ctx {
        cluster: &mut cluster,
        http: http.clone(),
        meter: &mut meter,
        rng,
        profile: profile.clone(),
        vhost: platform.vhost.name.clone(),
        duplicator: duplicator.as_ref(),
        out: Faults::default(),
    };
    if let Err(e) = inject::inject(scenario, &mut ctx).await {
        summary.error = Some(format!("injecting the faults: {e:#}"));
    }
    let faults = std::mem::take(&mut ctx.out);
    tokio::time::sleep(profile.tail).await;
    let tally = load.stop().await;
    let probe = Probe {
        http: http.clone(),
        orchestrator: orchestrators.first().cloned().unwrap_or_default(),
        instances,
        broker: Broker::new(&platform.vhost.amqp_url, 1, "saga-faults probe")?,
        roles: cluster.roles(),
    };
    let (drained, busy) = settle::settle(&probe, profile.settle_timeout).await;
    sampler.stop().await;
    drop(duplicator);
    summary.drain_s = drained.map(|d| d.as_secs_f64());
    if drained.is_none() {
        summary.notes.push(format!("still busy at the settle timeout: {busy:?}"));
    }
    let recorded = Recorded { meter, tally, faults, sampler };
    gather(scenario, &cluster, &probe, &recorded, summary).await?;
    stop(cluster, summary).await;
    Ok(())
}

/// The scenario's order stream, round-robin over `orchestrators`.
fn stream(scenario: Scenario, setup: &Setup, orchestrators: &[String]) -> Stream {
    let profile = &setup.profile;
    Stream {
        orchestrators: orchestrators.to_vec(),
        rate: profile.rate * scenario.rate_factor(),
        clients: profile.clients,
        max_orders: profile.max_orders,
        key_prefix: format!("faults-{}-{}", setup.run_id, scenario.name()),
    }
}

/// SIGTERM every process; a platform process that does not exit 0 is reported.
async fn stop(cluster: Cluster, summary: &mut Summary) {
    for stopped in cluster.stop().await {
        if stopped.status.is_none_or(|s| !s.success()) && stopped.program != Program::Outside {
            summary.unclean_exits.push(format!("{} ({:?})", stopped.name, stopped.status));
        }
    }
}

/// What the run recorded while it went.
struct Recorded {
    meter: Meter,
    tally: Tally,
    faults: Faults,
    sampler: Sampler,
}

/// The end state, the audit, the counters and the scenario's expectations.
async fn gather(
    scenario: Scenario,
    cluster: &Cluster,
    probe: &Probe,
    recorded: &Recorded,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let Recorded { meter, tally, faults, sampler } = recorded;
    summary.submitted = tally.submitted;
    summary.refused = tally.refused.clone();
    summary.failovers = tally.failovers;
    summary.notes.extend(faults.notes.iter().cloned());
    let sagas = settle::sagas(&probe.http, &probe.orchestrator).await?;
    summary::account(summary, &tally.accepted, &sagas);
    for row in sagas.iter().filter(|r| !matches!(r.status.as_str(), "COMPLETED" | "COMPENSATED") || r.incident).take(5)
    {
        summary.notes.push(format!("saga {} is {} (incident: {}): {}", row.id, row.status, row.incident, row.detail));
    }
    summary.dead_letters =
        settle::depth(&probe.broker, &probe.roles, |r| r == contracts::topology::QueueRole::DeadLetter).await?;
    let (audited, violations) = settle::audit(&probe.http, &probe.orchestrator).await?;
    (summary.audited, summary.violations) = (audited, violations);
    let running: Vec<(Service, String)> =
        Service::ALL.into_iter().flat_map(|s| cluster.urls(s).into_iter().map(move |u| (s, u))).collect();
    summary.counters = meter.total(&probe.http, &running).await;
    summary.duplicates_suppressed = (summary.counters.duplicate_deliveries + summary.counters.duplicate_replies) as u64;
    summary.outbox_peak = sampler.peak(None, None);
    let evidence = Evidence {
        windows: &faults.windows,
        tally,
        counters: summary.counters,
        counts: &faults.counts,
        outbox_peaks: faults.windows.iter().map(|w| sampler.peak(Some(w.from), Some(w.to))).collect(),
        orchestrators: cluster.ids(Service::Orchestrator).len(),
    };
    summary.checks = expect::checks(scenario, &evidence);
    summary.notes.push(format!(
        "{} failovers; {} dead letters; outbox peak {} rows; {} step timeouts, {} retry rounds, {} deferrals; \
         auditor checked {audited} sagas",
        tally.failovers,
        summary.dead_letters,
        summary.outbox_peak,
        summary.counters.step_timeouts,
        summary.counters.retried,
        summary.counters.deferred,
    ));
    Ok(())
}

/// Lines with `panicked` in every log of the scenario (every start of every instance).
fn panics_logged(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .map(|text| text.lines().filter(|l| l.contains("panicked")).count() as u64)
        .sum()
}
