//! Supervised background work. Every long-running task of a process (consumers, the outbox relay,
//! the timeout scanner, housekeeping) runs under a [`Supervisor`]: when it panics, or returns
//! while the process is not shutting down, it is started again after a capped, jittered,
//! exponential back-off (tokio-retry's), the restart is logged and counted
//! (`saga_task_restarts_total{task}`), and `/health/ready` answers 503 naming the task until it
//! runs again (`saga_task_up{task}` is 0 meanwhile). A task that ran a while before it failed starts
//! its back-off over.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use serde::Serialize;
use serde_json::{Value, json};
use tokio_retry::strategy::ExponentialBackoff;
use tokio_util::sync::CancellationToken;

/// How a supervised task is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskState {
    /// `running`, or `restarting` (down, waiting out its back-off).
    pub status: &'static str,
    pub since: DateTime<Utc>,
    pub restarts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
}

/// Restarts failed tasks and reports them. Cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    tasks: Arc<Mutex<BTreeMap<String, TaskState>>>,
    restarts: IntCounterVec,
    up: IntGaugeVec,
    backoff: (Duration, Duration),
}

/// A run shorter than this that fails keeps growing the back-off; a longer one resets it.
const STABLE: Duration = Duration::from_secs(30);

impl Supervisor {
    /// A supervisor whose metrics live in `registry`; back-off from 100 ms to 30 s.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let restarts = IntCounterVec::new(
            Opts::new("saga_task_restarts_total", "Background tasks restarted after a panic or an early return."),
            &["task"],
        )?;
        let up = IntGaugeVec::new(
            Opts::new("saga_task_up", "1 while a background task runs, 0 while it restarts."),
            &["task"],
        )?;
        registry.register(Box::new(restarts.clone()))?;
        registry.register(Box::new(up.clone()))?;
        let backoff = (Duration::from_millis(100), Duration::from_secs(30));
        Ok(Supervisor { tasks: Arc::default(), restarts, up, backoff })
    }

    /// The same supervisor with another back-off range (tests).
    pub fn with_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff = (min, max);
        self
    }

    fn set(&self, name: &str, status: &'static str, failure: Option<String>) {
        let Ok(mut tasks) = self.tasks.lock() else { return };
        let entry = tasks.entry(name.to_owned()).or_insert_with(|| TaskState {
            status,
            since: Utc::now(),
            restarts: 0,
            last_failure: None,
        });
        if entry.status != status {
            entry.status = status;
            entry.since = Utc::now();
        }
        if failure.is_some() {
            entry.restarts += 1;
            entry.last_failure = failure;
        }
        self.up.with_label_values(&[name]).set(i64::from(status == "running"));
    }

    fn delays(&self) -> impl Iterator<Item = Duration> + use<> {
        let (min, max) = self.backoff;
        let factor = (min.as_millis() as u64 / 2).max(1);
        ExponentialBackoff::from_millis(2).factor(factor).max_delay(max).map(crate::resilience::equal_jitter)
    }

    /// Run `task(shutdown)` until `shutdown` is cancelled, starting it again whenever it panics or
    /// returns before that.
    pub async fn supervise<F, Fut>(&self, name: &str, shutdown: CancellationToken, mut task: F)
    where
        F: FnMut(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut delays = self.delays();
        self.restarts.with_label_values(&[name]);
        loop {
            self.set(name, "running", None);
            let started = Instant::now();
            let outcome = tokio::spawn(task(shutdown.clone())).await;
            if shutdown.is_cancelled() {
                return;
            }
            let failure = match outcome {
                Ok(()) => "returned while the process was running".to_owned(),
                Err(e) if e.is_panic() => format!("panicked: {}", panic_message(e.into_panic())),
                Err(e) => format!("was cancelled: {e}"),
            };
            if started.elapsed() >= STABLE {
                delays = self.delays();
            }
            let delay = delays.next().unwrap_or(self.backoff.1);
            tracing::error!(task = name, %failure, restart_in = ?delay, "background task failed; restarting it");
            self.restarts.with_label_values(&[name]).inc();
            self.set(name, "restarting", Some(failure));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {},
            }
        }
    }

    /// Every task's state, and whether all of them run (for `/health/ready`).
    pub fn report(&self) -> Result<Value, Value> {
        let tasks = self.tasks.lock().map(|t| t.clone()).unwrap_or_default();
        let all_up = tasks.values().all(|t| t.status == "running");
        let detail = json!(tasks);
        if all_up { Ok(detail) } else { Err(detail) }
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_task_that_panics_or_returns_is_restarted_counted_and_reported() {
        let registry = Registry::new();
        let sup =
            Supervisor::new(&registry).unwrap().with_backoff(Duration::from_millis(20), Duration::from_millis(40));
        let runs = Arc::new(AtomicU32::new(0));
        let shutdown = CancellationToken::new();
        let (r, s) = (runs.clone(), sup.clone());
        let handle = tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                s.supervise("flaky", shutdown, move |token| {
                    let n = r.fetch_add(1, Ordering::SeqCst);
                    async move {
                        match n {
                            0 => panic!("boom"),
                            1 => {}
                            _ => token.cancelled().await,
                        }
                    }
                })
                .await
            }
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while runs.load(Ordering::SeqCst) < 3 {
            assert!(Instant::now() < deadline, "the task was not restarted twice");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let report = loop {
            if let Ok(r) = sup.report() {
                break r;
            }
            assert!(Instant::now() < deadline, "never reported running again");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert_eq!(report["flaky"]["restarts"], 2, "{report}");
        assert_eq!(report["flaky"]["last_failure"], "returned while the process was running");
        let text = {
            let mut buf = Vec::new();
            prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &registry.gather(), &mut buf).unwrap();
            String::from_utf8(buf).unwrap()
        };
        assert!(text.contains("saga_task_restarts_total{task=\"flaky\"} 2"), "{text}");
        assert!(text.contains("saga_task_up{task=\"flaky\"} 1"), "{text}");
        shutdown.cancel();
        handle.await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 3, "no restart after shutdown");
    }

    #[tokio::test]
    async fn a_task_down_makes_the_report_not_ready_and_says_why() {
        let registry = Registry::new();
        let sup = Supervisor::new(&registry).unwrap().with_backoff(Duration::from_secs(60), Duration::from_secs(60));
        let shutdown = CancellationToken::new();
        let s = sup.clone();
        let handle = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { s.supervise("relay", shutdown, |_| async { panic!("disk on fire") }).await }
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        let report = loop {
            if let Err(r) = sup.report() {
                break r;
            }
            assert!(Instant::now() < deadline, "never reported down");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert_eq!(report["relay"]["status"], "restarting");
        assert_eq!(report["relay"]["last_failure"], "panicked: disk on fire");
        shutdown.cancel();
        handle.await.unwrap();
    }
}
