//! The faults, one function per scenario, injected while the orders flow. Each returns once its
//! faults are over and what it broke is back (a process started again and ready, the broker or the
//! database serving, the outside systems' knobs reset). What it did is left in [`Faults`]: notes in
//! words, the windows the report checks against (when the broker was stopped, when an
//! orchestrator was down) and the counts it read. Faults reach only the processes of the run's
//! cluster, the run's vhost, and the local broker and database (the [`shared`](super::shared)
//! guards start those again whatever happens).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use serde_json::{Value, json};

use super::cli::Profile;
use super::observe::Meter;
use super::replay::Duplicator;
use super::scenario::{SLOW_GATEWAY_LATENCY_MS, Scenario};
use super::shared::{self, Down, Shared};
use crate::Service;
use crate::cluster::{Cluster, Id};

/// Most kills, drops or replay rounds of one scenario, whatever its window.
const MAX_ROUNDS: usize = 200;

/// A stretch of time the report checks against.
#[derive(Debug, Clone)]
pub struct Window {
    pub what: String,
    /// The orchestrator instance it is about (its index among the orchestrators), if one.
    pub orchestrator: Option<usize>,
    pub from: Instant,
    pub to: Instant,
}

/// What the faults did.
#[derive(Debug, Default)]
pub struct Faults {
    pub notes: Vec<String>,
    pub windows: Vec<Window>,
    /// Counts read while injecting: `connections closed`, `replayed`, `gateway ambiguous`, ...
    pub counts: BTreeMap<&'static str, u64>,
}

/// What the faults act on.
pub struct Ctx<'a> {
    pub cluster: &'a mut Cluster,
    pub http: reqwest::Client,
    pub meter: &'a mut Meter,
    pub rng: StdRng,
    pub profile: Profile,
    pub vhost: String,
    pub duplicator: Option<&'a Duplicator>,
    pub out: Faults,
}

/// Inject `scenario`'s faults for the profile's window.
pub async fn inject(scenario: Scenario, ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let until = Instant::now() + ctx.profile.window;
    match scenario {
        Scenario::ParticipantKill => participant_kill(ctx, until).await,
        Scenario::OrchestratorKill => orchestrator_kill(ctx, until).await,
        Scenario::BrokerDrop => broker_drop(ctx, until).await,
        Scenario::BrokerStop => broker_stop(ctx).await,
        Scenario::PostgresRestart => postgres_restart(ctx).await,
        Scenario::Duplicates => duplicates(ctx, until).await,
        Scenario::SlowParticipant => slow_participant(ctx).await,
        Scenario::ParticipantDown => participant_down(ctx).await,
        Scenario::OutageAndCrash => outage_and_crash(ctx).await,
        Scenario::Ambiguous => ambiguous(ctx).await,
    }
}

impl Ctx<'_> {
    /// Wait a random moment of `lo..hi` seconds.
    async fn pause(&mut self, lo: f64, hi: f64) {
        let secs = self.rng.random_range(lo..hi.max(lo + 0.001));
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    }

    /// `kill -9` an instance, its counters read first.
    async fn crash(&mut self, id: Id) -> anyhow::Result<()> {
        if let Some(crate::cluster::Program::Platform(service)) = self.cluster.program(id) {
            let url = self.cluster.url_of(id).to_owned();
            self.meter.retire(&self.http, service, &url).await;
        }
        self.cluster.kill(id).await.map(|_| ())
    }

    /// `kill -9`, then start it again and wait until it is ready.
    async fn crash_and_restart(&mut self, id: Id) -> anyhow::Result<()> {
        self.crash(id).await?;
        self.cluster.restart(id).await
    }

    /// `PUT /admin/behaviour` on an outside system.
    async fn behave(&self, base: &str, knobs: Value) -> anyhow::Result<()> {
        let r = self.http.put(format!("{base}/admin/behaviour")).json(&knobs).send().await?;
        anyhow::ensure!(r.status().is_success(), "PUT {base}/admin/behaviour {knobs}: {}", r.status());
        Ok(())
    }

    fn note(&mut self, text: String) {
        self.out.notes.push(text);
    }
}

fn kill_counts(killed: &BTreeMap<String, u32>) -> String {
    killed.iter().map(|(name, n)| format!("{name} x{n}")).collect::<Vec<_>>().join(", ")
}

async fn participant_kill(ctx: &mut Ctx<'_>, until: Instant) -> anyhow::Result<()> {
    let mut participants = [Service::Inventory, Service::Payment, Service::Shipping, Service::Notification];
    let hard_stop = until + ctx.profile.window;
    let mut killed: BTreeMap<String, u32> = BTreeMap::new();
    for round in 0..MAX_ROUNDS {
        let each_once = killed.len() == participants.len();
        if (Instant::now() >= until && each_once) || Instant::now() >= hard_stop {
            break;
        }
        if round % participants.len() == 0 {
            participants.shuffle(&mut ctx.rng);
        }
        ctx.pause(0.3, 1.5).await;
        let service = participants[round % participants.len()];
        let id = *ctx.cluster.ids(service).choose(&mut ctx.rng).context("an instance")?;
        ctx.crash_and_restart(id).await?;
        *killed.entry(service.name().to_owned()).or_default() += 1;
    }
    ctx.note(format!("kill -9 and restart: {}", kill_counts(&killed)));
    Ok(())
}

async fn orchestrator_kill(ctx: &mut Ctx<'_>, until: Instant) -> anyhow::Result<()> {
    let orchestrators = ctx.cluster.ids(Service::Orchestrator);
    anyhow::ensure!(orchestrators.len() >= 2, "orchestrator-kill needs two orchestrators");
    let mut killed: BTreeMap<String, u32> = BTreeMap::new();
    for round in 0..MAX_ROUNDS {
        if Instant::now() >= until && round >= orchestrators.len() {
            break;
        }
        ctx.pause(1.0, 3.0).await;
        let which = round % orchestrators.len();
        let id = orchestrators[which];
        ctx.crash(id).await?;
        let from = Instant::now();
        ctx.pause(1.0, 3.0).await;
        ctx.cluster.restart(id).await?;
        let what = format!("{} was down", ctx.cluster.name(id));
        ctx.out.windows.push(Window { what, orchestrator: Some(which), from, to: Instant::now() });
        *killed.entry(ctx.cluster.name(id).to_owned()).or_default() += 1;
    }
    ctx.note(format!("kill -9, down 1-3 s, restarted: {}", kill_counts(&killed)));
    Ok(())
}

async fn broker_drop(ctx: &mut Ctx<'_>, until: Instant) -> anyhow::Result<()> {
    let (mut drops, mut closed) = (0u64, 0u64);
    for _ in 0..MAX_ROUNDS {
        if Instant::now() >= until && drops >= 2 {
            break;
        }
        ctx.pause(1.0, 3.0).await;
        let said = shared::close_connections(&ctx.vhost).await?;
        closed +=
            said.split_whitespace().skip_while(|w| *w != "Closed").nth(1).and_then(|n| n.parse().ok()).unwrap_or(0);
        drops += 1;
    }
    ctx.out.counts.insert("connections closed", closed);
    ctx.note(format!("the broker closed every connection of the vhost {drops} times ({closed} connections)"));
    Ok(())
}

async fn broker_stop(ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    ctx.pause(1.0, 2.0).await;
    let from = Instant::now();
    let down = Down::stop(Shared::Broker).await?;
    tokio::time::sleep(ctx.profile.broker_down).await;
    let to = Instant::now();
    down.start().await?;
    ctx.out.windows.push(Window { what: "the broker was stopped".into(), orchestrator: None, from, to });
    let stopped = to - from;
    ctx.note(format!("rabbitmqctl stop_app for {stopped:.1?}, start_app; serving again after {:.1?}", from.elapsed()));
    Ok(())
}

async fn postgres_restart(ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    ctx.pause(1.0, 2.0).await;
    let from = Instant::now();
    if ctx.profile.pg_down.is_zero() {
        shared::restart_postgres().await?;
    } else {
        let down = Down::stop(Shared::Postgres).await?;
        tokio::time::sleep(ctx.profile.pg_down).await;
        down.start().await?;
    }
    let to = Instant::now();
    ctx.out.windows.push(Window { what: "PostgreSQL was down".into(), orchestrator: None, from, to });
    ctx.note(format!("PostgreSQL stopped and started again: unavailable for about {:.1?}", to - from));
    Ok(())
}

async fn duplicates(ctx: &mut Ctx<'_>, until: Instant) -> anyhow::Result<()> {
    let dup = ctx.duplicator.context("the duplicator runs in this scenario")?;
    let (mut sent, mut failed) = (0, 0);
    for _ in 0..MAX_ROUNDS {
        if Instant::now() >= until {
            break;
        }
        ctx.pause(0.5, 2.0).await;
        let p = dup.replay_fresh(&mut ctx.rng, 0.3).await;
        (sent, failed) = (sent + p.sent, failed + p.failed);
    }
    // Late duplicates: most of these sagas have ended.
    let late = dup.replay_sample(&mut ctx.rng, 200).await;
    let (commands, replies) = dup.captured();
    ctx.out.counts.insert("republished", sent + late.sent);
    ctx.note(format!(
        "captured {commands} commands and {replies} replies; published again shuffled {sent} (30 % twice), \
         then {} late ones at random; {} publishes failed",
        late.sent,
        failed + late.failed
    ));
    Ok(())
}

async fn slow_participant(ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let gateway = ctx.cluster.gateway.clone();
    ctx.behave(&gateway, json!({"latency_ms": SLOW_GATEWAY_LATENCY_MS})).await?;
    tokio::time::sleep(ctx.profile.window).await;
    ctx.behave(&gateway, json!({})).await?;
    ctx.note(format!(
        "the gateway answered after {SLOW_GATEWAY_LATENCY_MS} ms for {:.0?} (step deadline {} ms)",
        ctx.profile.window,
        super::scenario::SHORT_STEP_TIMEOUT_MS
    ));
    Ok(())
}

async fn participant_down(ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    ctx.pause(1.0, 2.0).await;
    let payments = ctx.cluster.ids(Service::Payment);
    for id in &payments {
        ctx.crash(*id).await?;
    }
    let from = Instant::now();
    tokio::time::sleep(ctx.profile.window).await;
    for id in &payments {
        ctx.cluster.restart(*id).await?;
    }
    ctx.out.windows.push(Window { what: "payment was down".into(), orchestrator: None, from, to: Instant::now() });
    ctx.note(format!(
        "payment killed and kept down {:.1?} (step deadline {} ms), then started again",
        from.elapsed(),
        super::scenario::SHORT_STEP_TIMEOUT_MS
    ));
    Ok(())
}

async fn outage_and_crash(ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let gateway = ctx.cluster.gateway.clone();
    let start = Instant::now();
    ctx.behave(&gateway, json!({"outage": true})).await?;
    let window = ctx.profile.window.as_secs_f64();
    ctx.pause(window * 0.3, window * 0.6).await;
    let payment = *ctx.cluster.ids(Service::Payment).choose(&mut ctx.rng).context("a payment instance")?;
    ctx.crash_and_restart(payment).await?;
    let crashed_at = start.elapsed();
    tokio::time::sleep(ctx.profile.window.saturating_sub(start.elapsed())).await;
    ctx.behave(&gateway, json!({})).await?;
    ctx.note(format!(
        "gateway outage for {:.1?}; payment killed and restarted {crashed_at:.1?} into it",
        start.elapsed()
    ));
    Ok(())
}

async fn ambiguous(ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let systems = [ctx.cluster.gateway.clone(), ctx.cluster.carrier.clone()];
    for base in &systems {
        ctx.behave(base, json!({"ambiguous_rate": 0.3})).await?;
    }
    tokio::time::sleep(ctx.profile.window).await;
    let mut lost = Vec::new();
    for (base, name) in systems.iter().zip(["gateway ambiguous", "carrier ambiguous"]) {
        ctx.behave(base, json!({})).await?;
        let stats: Value = ctx.http.get(format!("{base}/admin/stats")).send().await?.json().await?;
        let n = stats["ambiguous"].as_u64().unwrap_or(0);
        ctx.out.counts.insert(name, n);
        lost.push(n);
    }
    ctx.note(format!(
        "for {:.0?} the gateway lost {} answers and the carrier {} after applying the call",
        ctx.profile.window, lost[0], lost[1]
    ));
    Ok(())
}
