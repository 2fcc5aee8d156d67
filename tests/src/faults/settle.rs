//! After the faults: wait until the platform is quiet, then read its end state.
//!
//! Quiet means: no saga `RUNNING` or `COMPENSATING`; every consuming and retry queue of the roles
//! the cluster runs empty (dead-letter queues are counted, not waited for); no delivery in flight and every
//! outbox empty in every instance (`saga_consumer_in_flight`, `saga_outbox_pending_rows`); all of
//! it seen twice, a second apart (the outbox gauge is sampled each second). Late duplicates still
//! queued when the last saga ended are thus handled before the audit reads the participants.
//! Then: every saga the orchestrators hold (status, incident, what it waits for), the dead
//! letters, and the consistency auditor's report.

use std::time::{Duration, Instant};

use contracts::topology::{Queue, QueueRole, QueueType, Role, Topology};
use infra::amqp::Broker;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde_json::Value;
use uuid::Uuid;

use super::observe::{scrape, sum_series};
use crate::cluster::CLUSTER_TOKEN;

/// Where to look.
pub struct Probe {
    pub http: reqwest::Client,
    /// An orchestrator's base URL.
    pub orchestrator: String,
    /// Every platform instance's base URL.
    pub instances: Vec<String>,
    /// Guest on the run's vhost.
    pub broker: Broker,
    /// The roles the cluster runs: only their queues are waited on and counted.
    pub roles: Vec<Role>,
}

/// What is still going on.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Busy {
    /// Sagas running or compensating (up to a page of each).
    pub unfinished: u64,
    /// Messages ready in consuming and retry queues.
    pub queued: u64,
    pub in_flight: f64,
    pub outbox: f64,
}

impl Busy {
    pub fn is_quiet(&self) -> bool {
        self.unfinished == 0 && self.queued == 0 && self.in_flight == 0.0 && self.outbox == 0.0
    }
}

/// How long settling took (`None`: not quiet within `timeout`), and the last look.
pub async fn settle(probe: &Probe, timeout: Duration) -> (Option<Duration>, Busy) {
    let start = Instant::now();
    let mut quiet_since: Option<Instant> = None;
    let mut last = Busy::default();
    while start.elapsed() < timeout {
        match look(probe).await {
            Ok(busy) if busy.is_quiet() => {
                let since = *quiet_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= Duration::from_secs(1) {
                    return (Some(since.duration_since(start)), busy);
                }
                last = busy;
            }
            Ok(busy) => {
                quiet_since = None;
                last = busy;
            }
            Err(_) => quiet_since = None,
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    (None, last)
}

/// One look at everything that must be done.
async fn look(probe: &Probe) -> anyhow::Result<Busy> {
    let mut busy = Busy::default();
    for status in ["RUNNING", "COMPENSATING"] {
        let page = get(&probe.http, &format!("{}/sagas?status={status}&limit=500", probe.orchestrator)).await?;
        busy.unfinished += page["items"].as_array().map_or(0, |a| a.len() as u64);
    }
    busy.queued = depth(&probe.broker, &probe.roles, |role| role != QueueRole::DeadLetter).await?;
    for base in &probe.instances {
        let text = scrape(&probe.http, base).await.ok_or_else(|| anyhow::anyhow!("{base}/metrics does not answer"))?;
        busy.in_flight += sum_series(&text, "saga_consumer_in_flight", None);
        busy.outbox += sum_series(&text, "saga_outbox_pending_rows", None);
    }
    Ok(busy)
}

/// Messages ready in the queues of `roles` (see [`queues_of`]) whose queue role `wanted` accepts.
pub async fn depth(broker: &Broker, roles: &[Role], wanted: impl Fn(QueueRole) -> bool) -> anyhow::Result<u64> {
    let channel = broker.channel().await?;
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    let mut sum = 0;
    for q in queues_of(&Topology::new(QueueType::Classic, 5), roles).iter().filter(|q| wanted(q.role)) {
        let declared = channel.queue_declare(q.name.as_str().into(), passive, FieldTable::default()).await?;
        sum += u64::from(declared.message_count());
    }
    let _ = channel.close(200, "done".into()).await;
    Ok(sum)
}

/// The queues of `roles`: among the queues each role declares, its consuming queue and those
/// that belong to it (its `.dlq` and `.retry`). A queue of a role the cluster does not run (the
/// read side's `orders.history`, where the history the orchestrator publishes rests) is no work
/// of the cluster's.
pub fn queues_of(topology: &Topology, roles: &[Role]) -> Vec<Queue> {
    roles
        .iter()
        .flat_map(|&role| {
            let part = topology.for_role(role);
            part.queues.into_iter().filter(move |q| q.owner.as_deref().unwrap_or(&q.name) == role.queue())
        })
        .collect()
}

async fn get(http: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    let r = http.get(url).timeout(Duration::from_secs(10)).send().await?;
    anyhow::ensure!(r.status().is_success(), "GET {url}: {}", r.status());
    Ok(r.json().await?)
}

/// A saga as the list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaRow {
    pub id: Uuid,
    pub status: String,
    pub incident: bool,
    /// Where it stands, for the report: current step, attention, failure reason.
    pub detail: String,
}

/// Every saga the orchestrators hold, page by page (at most 1,000 pages).
pub async fn sagas(http: &reqwest::Client, orchestrator: &str) -> anyhow::Result<Vec<SagaRow>> {
    let mut rows = Vec::new();
    let mut cursor = String::new();
    for _ in 0..1000 {
        let page = get(http, &format!("{orchestrator}/sagas?limit=500&cursor={cursor}")).await?;
        for item in page["items"].as_array().into_iter().flatten() {
            let id = item["saga_id"].as_str().and_then(|s| s.parse().ok());
            let Some(id) = id else { anyhow::bail!("a saga without an id: {item}") };
            let detail = format!(
                "step {}, attention {}, failure {}",
                item["current_step"], item["attention"], item["failure_reason"]
            );
            let status = item["status"].as_str().unwrap_or("?").to_owned();
            rows.push(SagaRow { id, status, incident: !item["incident"].is_null(), detail });
        }
        match page["next"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => return Ok(rows),
        }
    }
    anyhow::bail!("more than 1,000 pages of sagas")
}

/// The consistency auditor's answer: sagas checked, violations.
pub async fn audit(http: &reqwest::Client, orchestrator: &str) -> anyhow::Result<(u64, Vec<Value>)> {
    let r = http
        .get(format!("{orchestrator}/admin/audit/consistency"))
        .bearer_auth(CLUSTER_TOKEN)
        .timeout(Duration::from_secs(60))
        .send()
        .await?;
    let status = r.status();
    let report: Value = r.json().await?;
    anyhow::ensure!(status.is_success(), "the auditor answered {status}: {report}");
    let violations = report["violations"].as_array().cloned().unwrap_or_default();
    Ok((report["checked"].as_u64().unwrap_or(0), violations))
}

#[cfg(test)]
mod tests {
    use super::*;
    use contracts::topology::ORDERS_QUEUE;

    #[test]
    fn the_queues_of_the_platform_roles_are_every_queue_but_the_read_sides() {
        let topology = Topology::new(QueueType::Classic, 5);
        let platform = [Role::Orchestrator, Role::Inventory, Role::Payment, Role::Shipping, Role::Notification];
        let mut got: Vec<String> = queues_of(&topology, &platform).into_iter().map(|q| q.name).collect();
        let mut want: Vec<String> = topology
            .queues
            .iter()
            .filter(|q| q.name != ORDERS_QUEUE && q.owner.as_deref() != Some(ORDERS_QUEUE))
            .map(|q| q.name.clone())
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got, want);
        let every: Vec<String> = queues_of(&topology, &Role::ALL).into_iter().map(|q| q.name).collect();
        assert_eq!(every.len(), topology.queues.len(), "each queue is one role's: {every:?}");
    }
}
