//! The orchestrator's own metric families, registered in the process registry next to the
//! plumbing's, and [`refresh`], the job that keeps the gauges read from the database (sagas in
//! flight, oldest age, passed deadlines, scanner lag, open incidents) and from the broker (the
//! depth of every queue, dead-letter and retry queues included) current. Labels: saga definition,
//! step name, final status and outcome reason, ignore reason, queue: all small sets.

use contracts::topology::Topology;
use infra::amqp::Broker;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use prometheus::{
    Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use sqlx::PgPool;

use crate::kernel::{Ignored, SagaDefinition, Verb};
use tokio_util::sync::CancellationToken;

/// Buckets for whole-saga and step durations: 1 ms .. 5 min.
const DURATION_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

#[derive(Clone)]
pub struct SagaMetrics {
    pub started: IntCounterVec,
    /// Labels: definition, status (COMPLETED / COMPENSATED / FAILED), reason (see
    /// [`crate::kernel::SagaState::outcome`]).
    pub finished: IntCounterVec,
    /// Labels: definition, status.
    pub duration_seconds: HistogramVec,
    /// Time from a command's send to its reply. Labels: step, outcome (success / failure).
    pub step_seconds: HistogramVec,
    /// Replies the kernel ignored. Labels: reason (duplicate / late / unexpected / terminal / stale).
    pub replies_ignored: IntCounterVec,
    /// Step deadlines that passed. Labels: step.
    pub timeouts: IntCounterVec,
    /// Commands sent (first sends and re-sends). Labels: type.
    pub commands_sent: IntCounterVec,
    /// Incidents opened. Labels: step.
    pub incidents: IntCounterVec,
    /// Sagas with an open incident now (read from the database; every orchestrator reports it).
    pub incidents_open: IntGauge,
    /// Operator verbs. Labels: verb (retry / compensate / resolve), outcome (applied / refused / error).
    pub operator_actions: IntCounterVec,
    /// Unfinished sagas. Labels: status (RUNNING / COMPENSATING).
    pub in_flight: IntGaugeVec,
    pub oldest_age_seconds: Gauge,
    pub past_deadline: IntGauge,
    pub scanner_lag_seconds: Gauge,
    /// Messages ready in each queue of the topology. Labels: queue.
    pub queue_messages: IntGaugeVec,
    /// Violations the last consistency audit found. Labels: kind.
    pub audit_violations: IntGaugeVec,
    pub audit_runs: IntCounter,
    /// Appends that lost to a concurrent append to the same stream (and were decided again).
    pub append_conflicts: IntCounter,
    /// Events the sequencer numbered and queued on `saga.events`. Labels: type.
    pub history_sequenced: IntCounterVec,
    /// The highest global position numbered.
    pub history_head: IntGauge,
}

impl SagaMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let counter = |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| -> Result<HistogramVec, prometheus::Error> {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(DURATION_BUCKETS.to_vec()), labels)?;
            registry.register(Box::new(h.clone()))?;
            Ok(h)
        };
        Ok(SagaMetrics {
            started: counter("saga_started_total", "Sagas started.", &["definition"])?,
            finished: counter(
                "saga_finished_total",
                "Sagas that reached a terminal status (COMPLETED, COMPENSATED, FAILED), by what ended them.",
                &["definition", "status", "reason"],
            )?,
            duration_seconds: histogram(
                "saga_duration_seconds",
                "Time from a saga's start to its terminal status.",
                &["definition", "status"],
            )?,
            step_seconds: histogram(
                "saga_step_seconds",
                "Time from a step's command to its reply.",
                &["step", "outcome"],
            )?,
            replies_ignored: counter(
                "saga_replies_ignored_total",
                "Replies that changed nothing: duplicates, late or unexpected replies, replies to finished sagas.",
                &["reason"],
            )?,
            timeouts: counter("saga_step_timeouts_total", "Step deadlines that passed.", &["step"])?,
            commands_sent: counter(
                "saga_commands_sent_total",
                "Commands queued for sending, re-sends included.",
                &["type"],
            )?,
            incidents: counter(
                "saga_incidents_opened_total",
                "Incidents opened: a saga stopped and waits for an operator.",
                &["step"],
            )?,
            incidents_open: {
                let g = IntGauge::new("saga_incidents_open", "Sagas with an open incident (from the database).")?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            operator_actions: counter(
                "saga_operator_actions_total",
                "Operator verbs on sagas, by verb and outcome (applied, refused, error).",
                &["verb", "outcome"],
            )?,
            in_flight: {
                let g =
                    IntGaugeVec::new(Opts::new("saga_sagas_in_flight", "Unfinished sagas, by status."), &["status"])?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            oldest_age_seconds: gauge(
                registry,
                Gauge::new("saga_oldest_in_flight_age_seconds", "Age of the oldest unfinished saga; 0 when none.")?,
            )?,
            past_deadline: {
                let g = IntGauge::new(
                    "saga_sagas_past_deadline",
                    "Unfinished sagas whose step deadline has passed and is not handled yet.",
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            scanner_lag_seconds: gauge(
                registry,
                Gauge::new("saga_scanner_lag_seconds", "How long the oldest passed deadline has waited; 0 when none.")?,
            )?,
            queue_messages: {
                let g = IntGaugeVec::new(
                    Opts::new("saga_queue_messages", "Messages ready in a queue (consuming, .dlq and .retry)."),
                    &["queue"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            audit_violations: {
                let g = IntGaugeVec::new(
                    Opts::new("saga_audit_violations", "Violations the last consistency audit found, by kind."),
                    &["kind"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            audit_runs: {
                let c = IntCounter::new("saga_audit_runs_total", "Consistency audits run.")?;
                registry.register(Box::new(c.clone()))?;
                c
            },
            append_conflicts: {
                let c = IntCounter::new(
                    "saga_append_conflicts_total",
                    "Event appends that found their stream moved on meanwhile, and were decided again.",
                )?;
                registry.register(Box::new(c.clone()))?;
                c
            },
            history_sequenced: counter(
                "saga_history_events_total",
                "Events given their global position and queued on saga.events, by type.",
                &["type"],
            )?,
            history_head: {
                let g = IntGauge::new("saga_history_head_position", "The highest global position in the event store.")?;
                registry.register(Box::new(g.clone()))?;
                g
            },
        })
    }
}

impl SagaMetrics {
    /// Start the counters whose label sets a definition fixes at 0 (its steps, its commands, every
    /// ignore reason and verb), so dashboards and alerts see them before the first event.
    pub fn init<D: SagaDefinition>(&self, def: &D) {
        self.started.with_label_values(&[def.name()]);
        for step in def.steps() {
            self.timeouts.with_label_values(&[step.name]);
            self.incidents.with_label_values(&[step.name]);
            for command in std::iter::once(step.command).chain(step.compensation.map(|c| c.command)) {
                self.commands_sent.with_label_values(&[command]);
            }
        }
        for reason in Ignored::ALL {
            self.replies_ignored.with_label_values(&[reason.as_str()]);
        }
        for t in contracts::history::EventType::ALL {
            self.history_sequenced.with_label_values(&[t.as_str()]);
        }
        for verb in [Verb::Retry, Verb::Compensate, Verb::Resolve] {
            for outcome in ["applied", "refused", "error"] {
                self.operator_actions.with_label_values(&[verb.as_str(), outcome]);
            }
        }
    }
}

fn gauge(registry: &Registry, g: Gauge) -> Result<Gauge, prometheus::Error> {
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}

/// Where [`refresh`] reads its gauges from.
#[derive(Clone)]
pub struct GaugeSources {
    pub pool: PgPool,
    pub broker: Broker,
    pub topology: Topology,
}

/// Refresh the gauges read from the database and the broker every `every`, until `shutdown`.
pub async fn refresh(
    sources: GaugeSources,
    metrics: SagaMetrics,
    every: std::time::Duration,
    shutdown: CancellationToken,
) {
    loop {
        match crate::store::census(&sources.pool).await {
            Ok(c) => {
                metrics.in_flight.with_label_values(&["RUNNING"]).set(c.running);
                metrics.in_flight.with_label_values(&["COMPENSATING"]).set(c.compensating);
                metrics.oldest_age_seconds.set(c.oldest_age_seconds);
                metrics.past_deadline.set(c.past_deadline);
                metrics.scanner_lag_seconds.set(c.scanner_lag_seconds);
                metrics.incidents_open.set(c.incidents);
            }
            Err(error) => tracing::debug!(%error, "cannot count the sagas"),
        }
        if let Err(error) = queue_depths(&sources, &metrics).await {
            tracing::debug!(%error, "cannot read the queue depths");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {},
        }
    }
}

/// Read every queue's depth with a passive declare (which needs no permission on the queue). A
/// queue that does not exist yet (its process never started) is skipped; its failed declare
/// closes the channel, so the next queue gets a fresh one.
async fn queue_depths(sources: &GaugeSources, metrics: &SagaMetrics) -> Result<(), String> {
    let opts = QueueDeclareOptions { passive: true, ..Default::default() };
    let mut channel = None;
    for q in &sources.topology.queues {
        let ch = match channel.take() {
            Some(ch) => ch,
            None => sources.broker.channel().await.map_err(|e| e.to_string())?,
        };
        match ch.queue_declare(q.name.as_str().into(), opts, FieldTable::default()).await {
            Ok(info) => {
                let depth = i64::from(info.message_count());
                metrics.queue_messages.with_label_values(&[q.name.as_str()]).set(depth);
                channel = Some(ch);
            }
            Err(e) => tracing::debug!(queue = %q.name, error = %e, "no depth for this queue"),
        }
    }
    if let Some(ch) = channel {
        let _ = ch.close(200, "done".into()).await;
    }
    Ok(())
}
