//! The Prometheus registry of one process and the metric families the plumbing itself records.
//!
//! Naming contract: prefix `saga_`, `_total` for counters, `_seconds` for histograms, label values
//! from small fixed sets (queue names, reason codes, message types) and never a saga or message id.
//! Each process (and each app a test starts) owns its registry, so nothing is global.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Buckets for message handling and publish latency: 0.5 ms .. 10 s.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Shared metric families. Cheap to clone (every family is reference-counted).
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Deliveries taken from a queue. Labels: queue.
    pub consumed: IntCounterVec,
    /// Deliveries acknowledged after handling. Labels: queue.
    pub acked: IntCounterVec,
    /// Deliveries sent to a dead-letter queue. Labels: queue, reason.
    pub dead_lettered: IntCounterVec,
    /// Deliveries parked for a delayed retry round. Labels: queue.
    pub retried: IntCounterVec,
    /// Deliveries parked because a dependency was unavailable (no attempt spent). Labels: queue.
    pub deferred: IntCounterVec,
    /// Messages recognised as already handled (inbox hit). Labels: queue.
    pub duplicates: IntCounterVec,
    /// Time from delivery to outcome. Labels: queue.
    pub handle_seconds: HistogramVec,
    /// Outbox rows published and confirmed by the broker.
    pub outbox_published: IntCounter,
    /// Outbox publishes that failed (nack, return, broker error). Labels: reason.
    pub outbox_failures: IntCounterVec,
    /// Rows waiting in the outbox (sampled by the relay).
    pub outbox_pending: IntGauge,
    /// Time to publish one outbox batch and get its confirms.
    pub outbox_publish_seconds: Histogram,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()), labels)
                .expect("valid metric");
            registry.register(Box::new(h.clone())).expect("unique metric");
            h
        };
        let consumed = counter("saga_messages_consumed_total", "Deliveries taken from a queue.", &["queue"]);
        let acked = counter("saga_messages_acked_total", "Deliveries acknowledged after handling.", &["queue"]);
        let dead_lettered = counter(
            "saga_messages_dead_lettered_total",
            "Deliveries sent to their queue's dead-letter queue, by reason code.",
            &["queue", "reason"],
        );
        let retried =
            counter("saga_messages_retried_total", "Deliveries parked for a delayed retry round.", &["queue"]);
        let deferred = counter(
            "saga_messages_deferred_total",
            "Deliveries parked because a dependency was unavailable (circuit open); no attempt spent.",
            &["queue"],
        );
        let duplicates = counter(
            "saga_messages_duplicate_total",
            "Deliveries recognised as already handled (inbox hit); their stored reply is re-sent.",
            &["queue"],
        );
        let handle_seconds = histogram("saga_message_handle_seconds", "Time from delivery to outcome.", &["queue"]);
        let outbox_published = IntCounter::new("saga_outbox_published_total", "Outbox rows published and confirmed.")
            .expect("valid metric");
        registry.register(Box::new(outbox_published.clone())).expect("unique metric");
        let outbox_failures = counter(
            "saga_outbox_publish_failures_total",
            "Outbox publishes that failed, by reason (nack, returned, broker).",
            &["reason"],
        );
        let outbox_publish_seconds = Histogram::with_opts(
            HistogramOpts::new("saga_outbox_publish_seconds", "Time to publish one outbox batch and get its confirms.")
                .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        registry.register(Box::new(outbox_publish_seconds.clone())).expect("unique metric");
        let outbox_pending =
            IntGauge::new("saga_outbox_pending_rows", "Rows waiting in the outbox.").expect("valid metric");
        registry.register(Box::new(outbox_pending.clone())).expect("unique metric");
        Metrics {
            registry,
            consumed,
            acked,
            dead_lettered,
            retried,
            deferred,
            duplicates,
            handle_seconds,
            outbox_published,
            outbox_failures,
            outbox_pending,
            outbox_publish_seconds,
        }
    }

    /// Text exposition format of everything registered.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(error) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(%error, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
