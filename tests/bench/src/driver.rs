//! Runs a phase of sagas against a [`Target`] (the platform, or the floor): a closed loop keeps
//! `concurrency` in flight, an open loop starts them at a rate. Every saga becomes a [`Sample`].

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use uuid::Uuid;

use crate::cli::{Load, Stop};
use crate::mix::{Kind, Mix};
use crate::schedule::OpenLoop;

/// How one saga ended, as the generator saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its `order.*` event arrived: `order.completed`, `order.compensated`, `order.failed`.
    Ended(String),
    /// Accepted, but no end within the saga timeout.
    Unfinished,
    /// Never started: `POST /orders` refused or failed, no stock left, a floor error.
    NotStarted(String),
}

/// What a target answers for one saga.
#[derive(Debug, Clone)]
pub struct Run {
    pub saga: Option<Uuid>,
    /// The SKU of its one item, when it has one from the catalog.
    pub sku: Option<String>,
    pub outcome: Outcome,
    pub ended_at: Instant,
}

/// Something sagas can be run against.
pub trait Target: Send + Sync + 'static {
    /// Start one saga of `kind` and wait (at most `timeout`) for its end.
    fn run(&self, kind: Kind, timeout: Duration) -> impl Future<Output = Run> + Send;
}

/// One saga of a phase.
#[derive(Debug, Clone)]
pub struct Sample {
    pub kind: Kind,
    pub saga: Option<Uuid>,
    pub sku: Option<String>,
    pub outcome: Outcome,
    /// From the start (closed loop) or the scheduled start (open loop) to the end; `None` if it
    /// did not end.
    pub latency: Option<Duration>,
}

/// A phase: how sagas start, when it stops, and the indices its kinds are drawn from.
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    pub load: Load,
    pub stop: Stop,
    pub timeout: Duration,
    /// Index of the phase's first saga in the mix (warm-up and measurement draw on after another).
    pub first_index: u64,
}

/// Every saga of a phase, and the wall time from its first start to its last end.
#[derive(Debug, Clone)]
pub struct PhaseResult {
    pub samples: Vec<Sample>,
    pub elapsed: Duration,
}

/// Run `phase` against `target`, ticking `progress` once per saga.
pub async fn drive<T: Target>(target: Arc<T>, mix: &Mix, phase: Phase, progress: &ProgressBar) -> PhaseResult {
    let origin = Instant::now();
    let samples = match phase.load {
        Load::Closed { concurrency } => closed(target, mix, phase, concurrency, origin, progress).await,
        Load::Open { rate } => open(target, mix, phase, OpenLoop { origin, rate }, progress).await,
    };
    let last = samples.iter().filter_map(|(s, end)| s.latency.map(|_| *end)).max().unwrap_or_else(Instant::now);
    PhaseResult { samples: samples.into_iter().map(|(s, _)| s).collect(), elapsed: last.duration_since(origin) }
}

fn sample(kind: Kind, run: Run, started: Instant) -> (Sample, Instant) {
    let latency = matches!(run.outcome, Outcome::Ended(_)).then(|| run.ended_at.saturating_duration_since(started));
    (Sample { kind, saga: run.saga, sku: run.sku, outcome: run.outcome, latency }, run.ended_at)
}

async fn closed<T: Target>(
    target: Arc<T>,
    mix: &Mix,
    phase: Phase,
    concurrency: u32,
    origin: Instant,
    progress: &ProgressBar,
) -> Vec<(Sample, Instant)> {
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (target, next, mix, progress) = (target.clone(), next.clone(), mix.clone(), progress.clone());
        workers.push(tokio::spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let more = match phase.stop {
                    Stop::Count(n) => i < n,
                    Stop::Duration(d) => origin.elapsed() < d,
                };
                if !more {
                    return done;
                }
                let kind = mix.kind_for(phase.first_index + i);
                let started = Instant::now();
                let run = target.run(kind, phase.timeout).await;
                done.push(sample(kind, run, started));
                progress.inc(1);
            }
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        // A worker only ends by returning; a panic in a target would be a bug, and loses its samples.
        all.extend(w.await.unwrap_or_default());
    }
    all
}

async fn open<T: Target>(
    target: Arc<T>,
    mix: &Mix,
    phase: Phase,
    clock: OpenLoop,
    progress: &ProgressBar,
) -> Vec<(Sample, Instant)> {
    let mut running = Vec::new();
    let mut i = 0;
    while clock.includes(i, phase.stop) {
        tokio::time::sleep_until(clock.due(i).into()).await;
        let kind = mix.kind_for(phase.first_index + i);
        let (target, progress) = (target.clone(), progress.clone());
        running.push(tokio::spawn(async move {
            let run = target.run(kind, phase.timeout).await;
            progress.inc(1);
            sample(kind, run, clock.due(i))
        }));
        i += 1;
    }
    let mut all = Vec::with_capacity(running.len());
    for r in running {
        if let Ok(s) = r.await {
            all.push(s);
        }
    }
    all
}
