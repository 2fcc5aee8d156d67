//! What the processes say about themselves, from their `/metrics`: the counters the report adds
//! up over every instance ([`Counters`]; an instance about to be killed is read first, so what it
//! counted is not lost with it: [`Meter::retire`]), and a [`Sampler`] of the outbox backlog
//! (`saga_outbox_pending_rows`, summed over the instances) every quarter second.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::Service;

/// The sum of every series of metric `name` (optionally only those with `label="value"`) in a
/// Prometheus text exposition.
pub fn sum_series(text: &str, name: &str, label: Option<(&str, &str)>) -> f64 {
    let wanted = label.map(|(k, v)| format!("{k}=\"{v}\""));
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => r.split_once('}')?,
                None if rest.starts_with(' ') => ("", rest),
                None => return None,
            };
            if wanted.as_ref().is_some_and(|w| !labels.split(',').any(|l| l == w)) {
                return None;
            }
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}

/// Counters of the report, summed over instances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Counters {
    /// Deliveries participants recognised as already handled (`saga_messages_duplicate_total`).
    pub duplicate_deliveries: f64,
    /// Replies the orchestrators ignored as duplicates
    /// (`saga_replies_ignored_total{reason="duplicate"}`).
    pub duplicate_replies: f64,
    /// Step deadlines that passed (`saga_step_timeouts_total`).
    pub step_timeouts: f64,
    /// Deliveries parked for a delayed retry round, every process (`saga_messages_retried_total`).
    pub retried: f64,
    /// Deliveries parked while a breaker was open (`saga_messages_deferred_total`).
    pub deferred: f64,
}

impl Counters {
    /// What one process's exposition adds.
    pub fn of(service: Service, text: &str) -> Counters {
        let mut c = Counters {
            retried: sum_series(text, "saga_messages_retried_total", None),
            deferred: sum_series(text, "saga_messages_deferred_total", None),
            ..Counters::default()
        };
        if service == Service::Orchestrator {
            c.duplicate_replies = sum_series(text, "saga_replies_ignored_total", Some(("reason", "duplicate")));
            c.step_timeouts = sum_series(text, "saga_step_timeouts_total", None);
        } else {
            c.duplicate_deliveries = sum_series(text, "saga_messages_duplicate_total", None);
        }
        c
    }

    pub fn add(&mut self, o: Counters) {
        self.duplicate_deliveries += o.duplicate_deliveries;
        self.duplicate_replies += o.duplicate_replies;
        self.step_timeouts += o.step_timeouts;
        self.retried += o.retried;
        self.deferred += o.deferred;
    }
}

/// `GET /metrics` of one instance, if it answers.
pub async fn scrape(http: &reqwest::Client, base: &str) -> Option<String> {
    let r = http.get(format!("{base}/metrics")).timeout(Duration::from_secs(5)).send().await.ok()?;
    r.text().await.ok()
}

/// Counters of instances that were killed, read just before.
#[derive(Debug, Default)]
pub struct Meter {
    retired: Counters,
}

impl Meter {
    /// Read an instance about to be killed.
    pub async fn retire(&mut self, http: &reqwest::Client, service: Service, base: &str) {
        if let Some(text) = scrape(http, base).await {
            self.retired.add(Counters::of(service, &text));
        }
    }

    /// The retired counters plus those of `running` instances now.
    pub async fn total(&self, http: &reqwest::Client, running: &[(Service, String)]) -> Counters {
        let mut total = self.retired;
        for (service, base) in running {
            if let Some(text) = scrape(http, base).await {
                total.add(Counters::of(*service, &text));
            }
        }
        total
    }
}

/// Most samples kept: a day at four a second.
const MAX_SAMPLES: usize = 4 * 86_400;

/// Samples of the summed outbox backlog.
pub struct Sampler {
    samples: Arc<Mutex<Vec<(Instant, f64)>>>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Sampler {
    pub fn start(http: reqwest::Client, instances: Vec<String>) -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let (kept, token) = (samples.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(250));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            for _ in 0..MAX_SAMPLES {
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                let mut sum = 0.0;
                for base in &instances {
                    if let Some(text) = scrape(&http, base).await {
                        sum += sum_series(&text, "saga_outbox_pending_rows", None);
                    }
                }
                if let Ok(mut s) = kept.lock() {
                    s.push((Instant::now(), sum));
                }
            }
        });
        Sampler { samples, stop, task: Some(task) }
    }

    /// The largest backlog sampled within `[from, to]` (the whole run without bounds).
    pub fn peak(&self, from: Option<Instant>, to: Option<Instant>) -> f64 {
        let samples = self.samples.lock().map(|s| s.clone()).unwrap_or_default();
        samples
            .iter()
            .filter(|(at, _)| from.is_none_or(|f| *at >= f) && to.is_none_or(|t| *at <= t))
            .map(|(_, n)| *n)
            .fold(0.0, f64::max)
    }

    /// Stop sampling (the samples stay).
    pub async fn stop(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP saga_messages_duplicate_total Recognised as already handled.
# TYPE saga_messages_duplicate_total counter
saga_messages_duplicate_total{queue="payment.commands"} 3
saga_messages_duplicate_total{queue="payment.commands.retry"} 2
saga_messages_duplicate_totally_other 100
saga_replies_ignored_total{reason="duplicate"} 4
saga_replies_ignored_total{reason="late"} 6
saga_step_timeouts_total{step="authorize_payment"} 1
saga_step_timeouts_total{step="schedule_shipment"} 2
saga_outbox_pending_rows 7
"#;

    #[test]
    fn series_are_summed_by_name_and_label() {
        assert_eq!(sum_series(TEXT, "saga_messages_duplicate_total", None), 5.0);
        assert_eq!(sum_series(TEXT, "saga_replies_ignored_total", Some(("reason", "duplicate"))), 4.0);
        assert_eq!(sum_series(TEXT, "saga_replies_ignored_total", None), 10.0);
        assert_eq!(sum_series(TEXT, "saga_outbox_pending_rows", None), 7.0);
        assert_eq!(sum_series(TEXT, "saga_missing", None), 0.0);
        assert_eq!(sum_series("saga_x{a=\"1\"} not-a-number", "saga_x", None), 0.0);
    }

    #[test]
    fn the_orchestrator_counts_replies_and_participants_deliveries() {
        let o = Counters::of(Service::Orchestrator, TEXT);
        assert_eq!((o.duplicate_replies, o.duplicate_deliveries, o.step_timeouts), (4.0, 0.0, 3.0));
        let p = Counters::of(Service::Payment, TEXT);
        assert_eq!((p.duplicate_replies, p.duplicate_deliveries, p.step_timeouts), (0.0, 5.0, 0.0));
        let mut sum = o;
        sum.add(p);
        assert_eq!((sum.duplicate_replies, sum.duplicate_deliveries), (4.0, 5.0));
    }
}
