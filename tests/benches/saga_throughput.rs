//! Load generator: order sagas end to end, at several concurrency levels.
//!
//! `cargo bench -p e2e --bench saga_throughput` starts the whole platform in this process (the
//! same `build` functions the binaries run, one instance each, on a throwaway vhost and
//! databases), then for each level of in-flight sagas submits orders over HTTP, keeps that many in
//! flight, and times each saga from `POST /orders` to its `order.*` event on `saga.events`
//! (observed on a queue of our own, so no polling). Prints sagas/s and latency percentiles.
//!
//! Knobs (environment): `SAGA_BENCH_SAGAS` sagas per level (default 400), `SAGA_BENCH_LEVELS`
//! comma-separated in-flight levels (default `1,16,64`), `SAGA_BENCH_WARMUP` (default 50).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use contracts::topology::EVENTS_EXCHANGE;
use e2e::{Service, TestConfig, TestPlatform, order};
use futures_util::StreamExt;
use infra::amqp::Broker;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::Value;
use tokio::sync::{Semaphore, oneshot};
use uuid::Uuid;

/// Who waits for which saga's end, and ends that came before anyone waited.
#[derive(Default)]
struct Ends {
    waiting: HashMap<Uuid, oneshot::Sender<Instant>>,
    early: HashMap<Uuid, Instant>,
}

type Waiters = Arc<Mutex<Ends>>;

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; any other argument is a filter we do not use.
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let sagas = env_num("SAGA_BENCH_SAGAS", 400);
    let warmup = env_num("SAGA_BENCH_WARMUP", 50);
    let levels: Vec<usize> = std::env::var("SAGA_BENCH_LEVELS")
        .unwrap_or_else(|_| "1,16,64".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let platform = TestPlatform::new(TestConfig { prefetch: 64, ..TestConfig::default() }).await;
    platform.start_all(1).await;

    // Our own queue on saga.events: the end of every saga.
    let broker = Broker::new(&platform.vhost.amqp_url, 1, "bench")?;
    let ch = broker.channel().await?;
    let q = ch
        .queue_declare("".into(), QueueDeclareOptions { exclusive: true, ..Default::default() }, FieldTable::default())
        .await?;
    ch.queue_bind(
        q.name().clone(),
        EVENTS_EXCHANGE.into(),
        "order.*".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let mut events = ch
        .basic_consume(
            q.name().clone(),
            "".into(),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?;
    let waiters: Waiters = Arc::default();
    let w = waiters.clone();
    tokio::spawn(async move {
        while let Some(Ok(d)) = events.next().await {
            let at = Instant::now();
            let id = d.properties.correlation_id().as_ref().and_then(|c| Uuid::parse_str(c.as_str()).ok());
            let (Some(id), Ok(mut ends)) = (id, w.lock()) else { continue };
            match ends.waiting.remove(&id) {
                Some(tx) => {
                    let _ = tx.send(at);
                }
                None => {
                    ends.early.insert(id, at);
                }
            }
        }
    });

    let base = platform.url(Service::Orchestrator);
    println!(
        "saga_throughput: {sagas} sagas per level after {warmup} warm-up sagas; 5-step order saga, all participants in-process"
    );
    println!("{:>9} {:>10} {:>9} {:>9} {:>9} {:>9}", "in-flight", "sagas/s", "p50 ms", "p90 ms", "p99 ms", "max ms");
    for level in levels {
        drive(&platform, &base, &waiters, level, warmup).await?;
        let started = Instant::now();
        let mut latencies = drive(&platform, &base, &waiters, level, sagas).await?;
        let elapsed = started.elapsed();
        latencies.sort_unstable();
        let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0;
        println!(
            "{:>9} {:>10.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            level,
            sagas as f64 / elapsed.as_secs_f64(),
            pct(0.5),
            pct(0.9),
            pct(0.99),
            pct(1.0)
        );
    }
    platform.shutdown().await;
    Ok(())
}

/// Run `count` sagas with at most `level` in flight; returns each one's latency.
async fn drive(
    platform: &TestPlatform,
    base: &str,
    waiters: &Waiters,
    level: usize,
    count: usize,
) -> anyhow::Result<Vec<Duration>> {
    let permits = Arc::new(Semaphore::new(level));
    let mut handles = Vec::with_capacity(count);
    for i in 0..count {
        let permit = permits.clone().acquire_owned().await?;
        let http = platform.http.clone();
        let url = format!("{base}/orders");
        let waiters = waiters.clone();
        let sku = format!("SKU-{:04}", 1 + i % 10);
        handles.push(tokio::spawn(async move {
            let _permit = permit;
            let start = Instant::now();
            let resp = http.post(&url).json(&order(&sku, 1, 100, "DE")).send().await?;
            anyhow::ensure!(resp.status().as_u16() == 202, "POST /orders answered {}", resp.status());
            let body: Value = resp.json().await?;
            let id = body["saga_id"]
                .as_str()
                .and_then(|s| Uuid::parse_str(s).ok())
                .ok_or_else(|| anyhow::anyhow!("no saga_id"))?;
            let (tx, rx) = oneshot::channel();
            {
                let mut ends = waiters.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                match ends.early.remove(&id) {
                    Some(at) => {
                        let _ = tx.send(at);
                    }
                    None => {
                        ends.waiting.insert(id, tx);
                    }
                }
            }
            let done = match tokio::time::timeout(Duration::from_secs(60), rx).await {
                Ok(Ok(at)) => at,
                _ => anyhow::bail!("saga {id} did not finish in 60 s"),
            };
            Ok::<Duration, anyhow::Error>(done.duration_since(start))
        }));
    }
    let mut latencies = Vec::with_capacity(count);
    for h in handles {
        latencies.push(h.await??);
    }
    Ok(latencies)
}
