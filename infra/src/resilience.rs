//! Calls to outside systems, made safe: one circuit breaker per dependency per process (failsafe)
//! and in-process retries with capped, jittered exponential backoff (tokio-retry) for transient
//! failures only.
//!
//! [`Dependency::call`] gives one of three answers the caller maps to a message outcome:
//! - `Ok`: the call succeeded (possibly after retries);
//! - [`CallError::Open`]: the breaker is open; the call was not made. The message should wait
//!   (delayed requeue without spending an attempt) until the dependency recovers;
//! - [`CallError::Exhausted`]: transient failures outlasted the retries: a delayed retry round;
//! - [`CallError::Permanent`]: retrying cannot help (the dependency refused the request).
//!
//! Breaker state and transitions are logged and exported (`saga_circuit_breaker_state`,
//! `saga_circuit_breaker_transitions_total`, `saga_circuit_breaker_rejected_total`), retries
//! counted (`saga_dependency_retries_total`), and [`Dependency::status`] feeds `/health/ready`.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use failsafe::failure_policy::{self, ConsecutiveFailures};
use failsafe::futures::CircuitBreaker;
use failsafe::{Config, StateMachine};
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use serde::Serialize;
use tokio_retry::RetryIf;
use tokio_retry::strategy::{ExponentialBackoff, jitter};

/// Whether an error may pass if the call is tried again.
pub trait Transience {
    fn is_transient(&self) -> bool;
}

/// Breaker and retry settings of one dependency.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Consecutive transient failures that open the breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open the first time (then doubling, jittered) ...
    pub breaker_open_min: Duration,
    /// ... up to this.
    pub breaker_open_max: Duration,
    /// Calls per message, the first included (1 = no in-process retry).
    pub attempts: usize,
    /// First retry delay (then doubling, full jitter).
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            breaker_failures: 5,
            breaker_open_min: Duration::from_secs(2),
            breaker_open_max: Duration::from_secs(30),
            attempts: 3,
            retry_base: Duration::from_millis(50),
            retry_max: Duration::from_secs(1),
        }
    }
}

impl Policy {
    /// Read `<P>_BREAKER_FAILURES`, `<P>_BREAKER_OPEN_MS`, `<P>_BREAKER_OPEN_MAX_MS`,
    /// `<P>_RETRY_ATTEMPTS`, `<P>_RETRY_BASE_MS`, `<P>_RETRY_MAX_MS` (defaults: [`Policy::default`]).
    pub fn from_env(env: &crate::config::Env) -> Result<Self, crate::config::ConfigError> {
        let d = Policy::default();
        let ms = |d: Duration| d.as_millis() as u64;
        let p = Policy {
            breaker_failures: env.at_least("BREAKER_FAILURES", d.breaker_failures, 1)?,
            breaker_open_min: env.millis("BREAKER_OPEN_MS", ms(d.breaker_open_min))?,
            breaker_open_max: env.millis("BREAKER_OPEN_MAX_MS", ms(d.breaker_open_max))?,
            attempts: env.at_least("RETRY_ATTEMPTS", d.attempts, 1)?,
            retry_base: env.millis("RETRY_BASE_MS", ms(d.retry_base))?,
            retry_max: env.millis("RETRY_MAX_MS", ms(d.retry_max))?,
        };
        if p.breaker_open_max < p.breaker_open_min {
            return Err(env.invalid("BREAKER_OPEN_MAX_MS", "must not be smaller than BREAKER_OPEN_MS"));
        }
        if p.retry_max < p.retry_base {
            return Err(env.invalid("RETRY_MAX_MS", "must not be smaller than RETRY_BASE_MS"));
        }
        Ok(p)
    }

    /// The retry delays: `base * 2^n`, capped at `retry_max`, full jitter, `attempts - 1` of them.
    pub fn retry_delays(&self) -> impl Iterator<Item = Duration> + use<> {
        // ExponentialBackoff::from_millis(2) yields 2, 4, 8 ... ms; factor scales that to base, 2*base, ...
        let factor = (self.retry_base.as_millis() as u64 / 2).max(1);
        ExponentialBackoff::from_millis(2)
            .factor(factor)
            .max_delay(self.retry_max)
            .map(jitter)
            .take(self.attempts.saturating_sub(1))
    }
}

/// The state a breaker reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    fn gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }
}

/// A dependency's state for `/health/ready` and logs.
#[derive(Debug, Clone, Serialize)]
pub struct DependencyStatus {
    pub dependency: &'static str,
    pub breaker: BreakerState,
    pub since: DateTime<Utc>,
}

/// Metric families for dependencies; one set per process registry.
#[derive(Clone)]
pub struct ResilienceMetrics {
    state: IntGaugeVec,
    transitions: IntCounterVec,
    rejected: IntCounterVec,
    retries: IntCounterVec,
    calls: IntCounterVec,
}

impl ResilienceMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let counter = |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let state = IntGaugeVec::new(
            Opts::new("saga_circuit_breaker_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open."),
            &["dependency"],
        )?;
        registry.register(Box::new(state.clone()))?;
        Ok(ResilienceMetrics {
            state,
            transitions: counter(
                "saga_circuit_breaker_transitions_total",
                "Circuit breaker transitions, by the state entered.",
                &["dependency", "state"],
            )?,
            rejected: counter(
                "saga_circuit_breaker_rejected_total",
                "Calls not made because the breaker was open.",
                &["dependency"],
            )?,
            retries: counter(
                "saga_dependency_retries_total",
                "In-process retries of calls to a dependency.",
                &["dependency"],
            )?,
            calls: counter(
                "saga_dependency_calls_total",
                "Calls to a dependency by outcome (ok, transient, permanent).",
                &["dependency", "outcome"],
            )?,
        })
    }
}

impl ResilienceMetrics {
    /// Start a dependency's counters at 0.
    fn init(&self, dependency: &str) {
        for state in [BreakerState::Closed, BreakerState::HalfOpen, BreakerState::Open] {
            self.transitions.with_label_values(&[dependency, state.as_str()]);
        }
        for outcome in ["ok", "transient", "permanent"] {
            self.calls.with_label_values(&[dependency, outcome]);
        }
        self.rejected.with_label_values(&[dependency]);
        self.retries.with_label_values(&[dependency]);
    }
}

/// Observes the breaker: logs and counts transitions, remembers the state and since when.
#[derive(Clone)]
struct Observer {
    name: &'static str,
    current: Arc<Mutex<(BreakerState, DateTime<Utc>)>>,
    metrics: ResilienceMetrics,
}

impl Observer {
    fn enter(&self, state: BreakerState) {
        if let Ok(mut c) = self.current.lock() {
            if c.0 == state {
                return;
            }
            *c = (state, Utc::now());
        }
        match state {
            BreakerState::Open => tracing::warn!(dependency = self.name, "circuit breaker opened: calls fail fast"),
            BreakerState::HalfOpen => {
                tracing::info!(dependency = self.name, "circuit breaker half-open: trying a call")
            }
            BreakerState::Closed => {
                tracing::info!(dependency = self.name, "circuit breaker closed: dependency recovered")
            }
        }
        self.metrics.state.with_label_values(&[self.name]).set(state.gauge());
        self.metrics.transitions.with_label_values(&[self.name, state.as_str()]).inc();
    }
}

impl failsafe::Instrument for Observer {
    fn on_call_rejected(&self) {
        self.metrics.rejected.with_label_values(&[self.name]).inc();
    }
    fn on_open(&self) {
        self.enter(BreakerState::Open);
    }
    fn on_half_open(&self) {
        self.enter(BreakerState::HalfOpen);
    }
    fn on_closed(&self) {
        self.enter(BreakerState::Closed);
    }
}

/// What a protected call can end in, besides success.
#[derive(Debug, thiserror::Error)]
pub enum CallError<E> {
    #[error("{dependency} circuit open since {}", since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))]
    Open { dependency: &'static str, since: DateTime<Utc> },
    #[error("{dependency} failed after {attempts} attempts: {error}")]
    Exhausted { dependency: &'static str, attempts: usize, error: E },
    #[error("{dependency} refused the call: {error}")]
    Permanent { dependency: &'static str, error: E },
}

/// How long the breaker stays open, each time in a row: doubling from `breaker_open_min` to
/// `breaker_open_max`, with equal jitter (half fixed, half random). failsafe's own backoffs only
/// take whole seconds, so this is tokio-retry's backoff, which failsafe accepts as any iterator.
type OpenBackoff = std::iter::Map<ExponentialBackoff, fn(Duration) -> Duration>;

pub(crate) fn equal_jitter(d: Duration) -> Duration {
    d / 2 + jitter(d / 2)
}

fn open_backoff(policy: &Policy) -> OpenBackoff {
    let factor = (policy.breaker_open_min.as_millis() as u64 / 2).max(1);
    ExponentialBackoff::from_millis(2)
        .factor(factor)
        .max_delay(policy.breaker_open_max)
        .map(equal_jitter as fn(Duration) -> Duration)
}

type Breaker = StateMachine<ConsecutiveFailures<OpenBackoff>, Observer>;

/// One outside dependency of a process: its breaker, retry policy and metrics. Cheap to clone.
#[derive(Clone)]
pub struct Dependency {
    name: &'static str,
    policy: Policy,
    breaker: Breaker,
    observer: Observer,
}

impl Dependency {
    /// `name` is the metric label and log field (e.g. `payment_gateway`).
    pub fn new(name: &'static str, policy: Policy, metrics: ResilienceMetrics) -> Self {
        let observer = Observer { name, current: Arc::new(Mutex::new((BreakerState::Closed, Utc::now()))), metrics };
        observer.metrics.state.with_label_values(&[name]).set(0);
        observer.metrics.init(name);
        let breaker = Config::new()
            .failure_policy(failure_policy::consecutive_failures(policy.breaker_failures, open_backoff(&policy)))
            .instrument(observer.clone())
            .build();
        Dependency { name, policy, breaker, observer }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn status(&self) -> DependencyStatus {
        let (breaker, since) = self.observer.current.lock().map(|c| *c).unwrap_or((BreakerState::Closed, Utc::now()));
        DependencyStatus { dependency: self.name, breaker, since }
    }

    /// Call `op` through the breaker, retrying transient failures. Only transient failures count
    /// against the breaker; a permanent refusal means the dependency is up.
    pub async fn call<T, E, F, Fut>(&self, mut op: F) -> Result<T, CallError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Transience + std::fmt::Display,
    {
        let metrics = &self.observer.metrics;
        let mut tries = 0usize;
        let result = RetryIf::start(
            self.policy.retry_delays(),
            || {
                tries += 1;
                if tries > 1 {
                    metrics.retries.with_label_values(&[self.name]).inc();
                }
                self.breaker.call_with(|e: &E| e.is_transient(), op())
            },
            |e: &failsafe::Error<E>| matches!(e, failsafe::Error::Inner(inner) if inner.is_transient()),
        )
        .await;
        match result {
            Ok(v) => {
                metrics.calls.with_label_values(&[self.name, "ok"]).inc();
                Ok(v)
            }
            Err(failsafe::Error::Rejected) => {
                Err(CallError::Open { dependency: self.name, since: self.status().since })
            }
            Err(failsafe::Error::Inner(error)) if error.is_transient() => {
                metrics.calls.with_label_values(&[self.name, "transient"]).inc();
                tracing::warn!(dependency = self.name, attempts = tries, %error, "transient failures outlasted the retries");
                Err(CallError::Exhausted { dependency: self.name, attempts: tries, error })
            }
            Err(failsafe::Error::Inner(error)) => {
                metrics.calls.with_label_values(&[self.name, "permanent"]).inc();
                Err(CallError::Permanent { dependency: self.name, error })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E(bool);
    impl Transience for E {
        fn is_transient(&self) -> bool {
            self.0
        }
    }
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "transient={}", self.0)
        }
    }

    fn dep(policy: Policy) -> (Dependency, Registry) {
        let registry = Registry::new();
        (Dependency::new("test_dep", policy, ResilienceMetrics::register(&registry).unwrap()), registry)
    }

    fn fast() -> Policy {
        Policy {
            breaker_failures: 3,
            breaker_open_min: Duration::from_millis(100),
            breaker_open_max: Duration::from_millis(100),
            attempts: 3,
            retry_base: Duration::from_millis(1),
            retry_max: Duration::from_millis(2),
        }
    }

    #[test]
    fn retry_delays_are_capped_limited_and_jittered() {
        let p = Policy {
            attempts: 6,
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_millis(300),
            ..fast()
        };
        let d: Vec<Duration> = p.retry_delays().collect();
        assert_eq!(d.len(), 5);
        assert!(d.iter().all(|x| *x <= Duration::from_millis(300)), "{d:?}");
        assert_eq!(Policy { attempts: 1, ..p }.retry_delays().count(), 0);
    }

    #[tokio::test]
    async fn transient_failures_are_retried_and_permanent_ones_are_not() {
        let (d, _r) = dep(fast());
        let mut n = 0;
        let r: Result<u32, _> = d
            .call(|| {
                n += 1;
                let v = n;
                async move { if v < 3 { Err(E(true)) } else { Ok(v) } }
            })
            .await;
        assert_eq!(r.unwrap(), 3);
        let mut m = 0;
        let r: Result<u32, _> = d
            .call(|| {
                m += 1;
                async { Err(E(false)) }
            })
            .await;
        assert!(matches!(r, Err(CallError::Permanent { .. })));
        assert_eq!(m, 1, "a permanent refusal is not retried");
    }

    #[tokio::test]
    async fn the_breaker_opens_fails_fast_and_closes_after_a_success() {
        let (d, registry) = dep(fast());
        let r: Result<(), _> = d.call(|| async { Err(E(true)) }).await;
        assert!(matches!(r, Err(CallError::Exhausted { attempts: 3, .. })), "{r:?}");
        assert_eq!(d.status().breaker, BreakerState::Open);
        let mut calls = 0;
        let r: Result<(), _> = d
            .call(|| {
                calls += 1;
                async { Ok::<(), E>(()) }
            })
            .await;
        assert!(matches!(r, Err(CallError::Open { .. })));
        // The future was built but never polled by an open breaker; nothing reached the dependency.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let r = d.call(|| async { Ok::<(), E>(()) }).await;
        assert!(r.is_ok());
        assert_eq!(d.status().breaker, BreakerState::Closed);
        let text = {
            let mut buf = Vec::new();
            prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &registry.gather(), &mut buf).unwrap();
            String::from_utf8(buf).unwrap()
        };
        assert!(
            text.contains("saga_circuit_breaker_transitions_total{dependency=\"test_dep\",state=\"open\"} 1"),
            "{text}"
        );
        assert!(text.contains("saga_circuit_breaker_rejected_total{dependency=\"test_dep\"} 1"));
        let _ = calls;
    }

    /// Answer every request on a fresh port with `answer`, raw; then close the connection if `close`.
    async fn raw_server(answer: &'static [u8], close: bool) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                // The request body is `{}`: read it all, so closing sends a FIN, not a reset.
                while !request.ends_with(b"{}") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = socket.write_all(answer).await;
                if close {
                    let _ = socket.shutdown().await;
                } else {
                    while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
                }
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn an_answer_cut_off_is_transient_and_an_answer_that_is_not_json_is_permanent() {
        let once = Policy { attempts: 1, ..fast() };
        let cut = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"auth";
        let http = HttpDependency::new(&raw_server(cut, true).await, Duration::from_secs(5), dep(once).0).unwrap();
        let r = http.post("/x", "k", &serde_json::json!({})).await;
        assert!(matches!(r, Err(CallError::Exhausted { error: HttpError::Unreachable(_), .. })), "{r:?}");
        let garbage = b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nnot json!";
        let http = HttpDependency::new(&raw_server(garbage, false).await, Duration::from_secs(5), dep(once).0).unwrap();
        let r = http.post("/x", "k", &serde_json::json!({})).await;
        assert!(matches!(r, Err(CallError::Permanent { error: HttpError::Body(_), .. })), "{r:?}");
    }
}

/// Why an HTTP call to an outside system failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// No answer: connection refused or lost (also while the body was read), or a timeout.
    #[error("unreachable, timed out or cut off: {0}")]
    Unreachable(String),
    #[error("answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("answered something unreadable: {0}")]
    Body(String),
}

impl Transience for HttpError {
    /// Connection errors, timeouts, 5xx and 429 may pass; other answers will not.
    fn is_transient(&self) -> bool {
        match self {
            HttpError::Unreachable(_) => true,
            HttpError::Status { status, .. } => *status >= 500 || *status == 429,
            HttpError::Body(_) => false,
        }
    }
}

/// An outside HTTP system behind a [`Dependency`]: JSON calls with a timeout and an
/// `Idempotency-Key`, so a retried call is not applied twice by the other side.
#[derive(Clone)]
pub struct HttpDependency {
    client: reqwest::Client,
    base_url: String,
    dependency: Dependency,
}

impl HttpDependency {
    pub fn new(base_url: &str, timeout: Duration, dependency: Dependency) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        Ok(HttpDependency { client, base_url: base_url.trim_end_matches('/').to_owned(), dependency })
    }

    pub fn dependency(&self) -> &Dependency {
        &self.dependency
    }

    /// `POST {base}{path}` with `body`; the JSON answer of a 2xx. No answer, or an answer cut off
    /// while its body was read, is [`HttpError::Unreachable`]; a whole body that is not JSON is
    /// [`HttpError::Body`].
    pub async fn post(
        &self,
        path: &str,
        key: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, CallError<HttpError>> {
        let url = format!("{}{path}", self.base_url);
        self.dependency
            .call(|| async {
                let resp = self
                    .client
                    .post(&url)
                    .header("Idempotency-Key", key)
                    .json(body)
                    .send()
                    .await
                    .map_err(|e| HttpError::Unreachable(e.to_string()))?;
                let status = resp.status();
                if !status.is_success() {
                    let body = resp.text().await.unwrap_or_default();
                    return Err(HttpError::Status { status: status.as_u16(), body: body.chars().take(200).collect() });
                }
                // A connection lost while the body streams in is a transport failure (transient):
                // the other side may have applied the call, and a retry with the same key gets its
                // answer. Only a body that arrived whole but is not JSON is a permanent refusal.
                let bytes =
                    resp.bytes().await.map_err(|e| HttpError::Unreachable(format!("reading the answer: {e}")))?;
                serde_json::from_slice(&bytes).map_err(|e| HttpError::Body(e.to_string()))
            })
            .await
    }
}
