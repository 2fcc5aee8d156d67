//! The read side's own metric families, registered in the process's registry (see
//! `infra::metrics` for the naming contract: prefix `saga_`, bounded labels).

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

use crate::event::Kind;

/// Cheap to clone (every family is reference-counted).
#[derive(Clone)]
pub struct OrdersMetrics {
    /// Events applied to the projections. Labels: event_type (a known type, or `unknown`), source
    /// (`consumer` or `feed`).
    pub applied: IntCounterVec,
    /// Events recognised as applied before (position or version). Labels: source.
    pub duplicates: IntCounterVec,
    /// Events that arrived before an earlier version of their order (brought back later). Labels:
    /// source.
    pub gaps: IntCounterVec,
    /// Events behind the store's head: head minus the watermark (every position up to it applied).
    pub lag: IntGauge,
    /// The store's head as the feed last said.
    pub head: IntGauge,
    /// Every position up to this one is applied.
    pub watermark: IntGauge,
    /// Failed reads of the orchestrator's feed. Labels: reason (`unreachable`, `status`, `decode`).
    pub feed_errors: IntCounterVec,
    /// 1 while a rebuild runs.
    pub rebuild_running: IntGauge,
    /// The position the running (or last) rebuild has replayed up to.
    pub rebuild_position: IntGauge,
    /// The head the running (or last) rebuild replays up to.
    pub rebuild_target: IntGauge,
    /// Rebuilds ended. Labels: result (`done`, `failed`).
    pub rebuilds: IntCounterVec,
}

impl OrdersMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let counter = |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let m = OrdersMetrics {
            applied: counter(
                "saga_orders_events_applied_total",
                "History events applied to the read models",
                &["event_type", "source"],
            )?,
            duplicates: counter(
                "saga_orders_events_duplicate_total",
                "History events recognised as applied before",
                &["source"],
            )?,
            gaps: counter(
                "saga_orders_event_gaps_total",
                "History events that came before an earlier version of their order",
                &["source"],
            )?,
            lag: gauge("saga_orders_projection_lag_events", "Events behind the event store's head")?,
            head: gauge("saga_orders_projection_head_position", "The event store's head position, as last read")?,
            watermark: gauge("saga_orders_projection_watermark_position", "Every position up to this one is applied")?,
            feed_errors: counter("saga_orders_feed_errors_total", "Failed reads of the event feed", &["reason"])?,
            rebuild_running: gauge("saga_orders_rebuild_running", "1 while a rebuild runs")?,
            rebuild_position: gauge("saga_orders_rebuild_position", "Position the rebuild has replayed up to")?,
            rebuild_target: gauge("saga_orders_rebuild_target_position", "Head position the rebuild replays up to")?,
            rebuilds: counter("saga_orders_rebuilds_total", "Rebuilds ended", &["result"])?,
        };
        for source in ["consumer", "feed"] {
            m.duplicates.with_label_values(&[source]);
            m.gaps.with_label_values(&[source]);
            m.applied.with_label_values(&[Kind::Known(contracts::history::EventType::SagaStarted).label(), source]);
        }
        for reason in ["unreachable", "status", "decode"] {
            m.feed_errors.with_label_values(&[reason]);
        }
        for result in ["done", "failed"] {
            m.rebuilds.with_label_values(&[result]);
        }
        Ok(m)
    }
}
