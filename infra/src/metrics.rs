//! The Prometheus registry of one process and the metric families the plumbing itself records.
//!
//! Naming contract: prefix `saga_`, `_total` for counters, `_seconds` for histograms, label values
//! from small fixed sets (queue names, reason codes, message types) and never a saga or message id.
//! Each process (and each app a test starts) owns its registry, so nothing is global.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
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
    /// Age of the oldest row waiting in the outbox (sampled by the relay); 0 when empty.
    pub outbox_oldest_age_seconds: Gauge,
    /// Deliveries being handled now. Labels: queue.
    pub consumer_in_flight: IntGaugeVec,
    /// The consumer's prefetch (its most deliveries in flight). Labels: queue.
    pub consumer_prefetch: IntGaugeVec,
    /// HTTP requests answered. Labels: method, route (the template, `unmatched` for none), status
    /// (class: `2xx`, `4xx`, ...).
    pub http_requests: IntCounterVec,
    /// Time to answer an HTTP request. Labels: method, route.
    pub http_seconds: HistogramVec,
    /// Database pool connections. Labels: state (`in_use`, `idle`, `max`).
    pub db_pool: IntGaugeVec,
    /// Always 1. Labels: service, version.
    pub build_info: IntGaugeVec,
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
        let outbox_oldest_age_seconds = Gauge::new(
            "saga_outbox_oldest_pending_age_seconds",
            "Age of the oldest row waiting in the outbox; 0 when it is empty.",
        )
        .expect("valid metric");
        registry.register(Box::new(outbox_oldest_age_seconds.clone())).expect("unique metric");
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let consumer_in_flight = gauge(
            "saga_consumer_in_flight",
            "Deliveries a consumer is handling now (at most its prefetch).",
            &["queue"],
        );
        let consumer_prefetch = gauge("saga_consumer_prefetch", "A consumer's prefetch (basic.qos).", &["queue"]);
        let http_requests = counter(
            "saga_http_requests_total",
            "HTTP requests answered, by method, route template and status class.",
            &["method", "route", "status"],
        );
        let http_seconds =
            histogram("saga_http_request_duration_seconds", "Time to answer an HTTP request.", &["method", "route"]);
        let db_pool = gauge(
            "saga_db_pool_connections",
            "PostgreSQL pool connections: in_use, idle, and the pool's max.",
            &["state"],
        );
        let build_info = gauge("saga_build_info", "Always 1; the labels say what runs.", &["service", "version"]);
        // Counters with a known label set start at 0, so dashboards and alerts see them before
        // the first event (Prometheus' advice on missing metrics).
        for code in crate::amqp::PublishError::CODES {
            outbox_failures.with_label_values(&[code]);
        }
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
            outbox_oldest_age_seconds,
            consumer_in_flight,
            consumer_prefetch,
            http_requests,
            http_seconds,
            db_pool,
            build_info,
        }
    }

    /// Start a consumer's per-queue counters at 0.
    pub fn init_queue(&self, queue: &str) {
        for family in [&self.consumed, &self.acked, &self.retried, &self.deferred, &self.duplicates] {
            family.with_label_values(&[queue]);
        }
        self.consumer_in_flight.with_label_values(&[queue]);
    }

    /// Read the pool's connection counts into [`Metrics::db_pool`] (at scrape time).
    pub fn observe_pool(&self, pool: &sqlx::PgPool) {
        let (size, idle) = (i64::from(pool.size()), i64::try_from(pool.num_idle()).unwrap_or(i64::MAX));
        self.db_pool.with_label_values(&["in_use"]).set(size - idle);
        self.db_pool.with_label_values(&["idle"]).set(idle);
        self.db_pool.with_label_values(&["max"]).set(i64::from(pool.options().get_max_connections()));
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
