//! The steady stream of orders: concurrent clients, each on its own clock (together `rate` orders a
//! second), send `POST /orders` round-robin across the orchestrator instances, until stopped or
//! until `max_orders` were sent. The mix completes and compensates: 7 in 10 complete, and one each
//! goes to an unserved destination (`AQ`), is over payment's limit, or names an unknown SKU.
//!
//! Every order carries an `Idempotency-Key`. An orchestrator that cannot be reached (or does not
//! answer in time) is not an answer: the client sends the same order with the same key to the next
//! instance, as a load balancer would, and counts a failover; when no instance answers the order
//! is refused as `unreachable`. Any HTTP answer but `202` is a refusal, counted by status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// What an order is meant to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Complete,
    /// To `AQ`, which shipping does not serve: payment voided, reservation released.
    Unshippable,
    /// Over payment's limit: reservation released.
    Declined,
    /// A SKU inventory does not know: nothing held.
    UnknownSku,
}

impl Kind {
    /// The kind of the `i`th order.
    pub fn for_index(i: u64) -> Kind {
        match i % 10 {
            7 => Kind::Unshippable,
            8 => Kind::Declined,
            9 => Kind::UnknownSku,
            _ => Kind::Complete,
        }
    }

    /// Must its saga end compensated, whatever the faults?
    pub fn must_compensate(self) -> bool {
        self != Kind::Complete
    }

    /// The `i`th order, of this kind.
    pub fn order(self, i: u64) -> Value {
        let sku = format!("SKU-{:04}", 1 + i % 12);
        match self {
            Kind::Complete => crate::order(&sku, 1, 250, "DE"),
            Kind::Unshippable => crate::order(&sku, 1, 250, "AQ"),
            // Payment's default limit is 1,000,000 cents.
            Kind::Declined => crate::order(&sku, 1, 1_000_001, "DE"),
            Kind::UnknownSku => crate::order("SKU-FAULTS-UNKNOWN", 1, 250, "DE"),
        }
    }
}

/// An order an orchestrator accepted.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub saga_id: Uuid,
    pub kind: Kind,
    /// Which orchestrator instance answered (its index in the stream's list).
    pub orchestrator: usize,
    /// When the `202` came.
    pub at: Instant,
}

/// What the clients saw.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub submitted: u64,
    pub accepted: Vec<Accepted>,
    /// Refusals by HTTP status (`"503"`), or `unreachable` when no instance answered.
    pub refused: BTreeMap<String, u64>,
    /// Orders sent again to another instance because one could not be reached.
    pub failovers: u64,
}

impl Tally {
    pub fn merge(&mut self, other: Tally) {
        self.submitted += other.submitted;
        self.accepted.extend(other.accepted);
        for (status, n) in other.refused {
            *self.refused.entry(status).or_default() += n;
        }
        self.failovers += other.failovers;
    }

    /// Orders accepted within `[from, to]`, by any orchestrator or by instance `by`.
    pub fn accepted_between(&self, from: Instant, to: Instant, by: Option<usize>) -> usize {
        let by_it = |a: &&Accepted| by.is_none_or(|o| a.orchestrator == o);
        self.accepted.iter().filter(|a| a.at >= from && a.at <= to).filter(by_it).count()
    }
}

/// The running clients.
pub struct Load {
    stop: CancellationToken,
    clients: Vec<JoinHandle<Tally>>,
}

/// Where and how fast to send.
#[derive(Debug, Clone)]
pub struct Stream {
    pub orchestrators: Vec<String>,
    pub rate: f64,
    pub clients: usize,
    pub max_orders: u64,
    /// Prefix of the idempotency keys (unique per run and scenario).
    pub key_prefix: String,
}

impl Load {
    pub fn start(http: reqwest::Client, stream: Stream) -> Load {
        let stop = CancellationToken::new();
        let next = Arc::new(AtomicU64::new(0));
        let stream = Arc::new(stream);
        let clients = stream.clients.max(1);
        let period = Duration::from_secs_f64(clients as f64 / stream.rate.max(0.01));
        let clients = (0..clients)
            .map(|c| {
                let offset = period.mul_f64(c as f64 / clients as f64);
                let client = Client { http: http.clone(), stream: stream.clone(), next: next.clone() };
                tokio::spawn(client.run(offset, period, stop.clone()))
            })
            .collect();
        Load { stop, clients }
    }

    /// Stop sending; what every client saw.
    pub async fn stop(self) -> Tally {
        self.stop.cancel();
        let mut tally = Tally::default();
        for client in self.clients {
            if let Ok(t) = client.await {
                tally.merge(t);
            }
        }
        tally
    }
}

struct Client {
    http: reqwest::Client,
    stream: Arc<Stream>,
    next: Arc<AtomicU64>,
}

impl Client {
    async fn run(self, offset: Duration, period: Duration, stop: CancellationToken) -> Tally {
        let mut tally = Tally::default();
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticks.tick() => {}
            }
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.stream.max_orders {
                break;
            }
            self.submit(i, &mut tally).await;
        }
        tally
    }

    /// Send order `i`, failing over to the next instance while none answers.
    async fn submit(&self, i: u64, tally: &mut Tally) {
        let kind = Kind::for_index(i);
        let order = kind.order(i);
        let key = format!("{}-{i}", self.stream.key_prefix);
        let n = self.stream.orchestrators.len().max(1);
        tally.submitted += 1;
        for attempt in 0..n {
            let orchestrator = (i as usize + attempt) % n;
            let base = &self.stream.orchestrators[orchestrator];
            let sent = self
                .http
                .post(format!("{base}/orders"))
                .header("Idempotency-Key", &key)
                .timeout(Duration::from_secs(15))
                .json(&order)
                .send()
                .await;
            let Ok(response) = sent else {
                if attempt + 1 < n {
                    tally.failovers += 1;
                }
                continue;
            };
            let status = response.status().as_u16();
            let saga_id = match status {
                202 => response.json::<Value>().await.ok().and_then(|v| v["saga_id"].as_str()?.parse::<Uuid>().ok()),
                _ => None,
            };
            match saga_id {
                Some(saga_id) => tally.accepted.push(Accepted { saga_id, kind, orchestrator, at: Instant::now() }),
                None if status == 202 => *tally.refused.entry("202 without a saga id".into()).or_default() += 1,
                None => *tally.refused.entry(status.to_string()).or_default() += 1,
            }
            return;
        }
        *tally.refused.entry("unreachable".into()).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_completes_seven_in_ten_and_compensates_three_ways() {
        let kinds: Vec<Kind> = (0..10).map(Kind::for_index).collect();
        assert_eq!(kinds.iter().filter(|k| **k == Kind::Complete).count(), 7);
        for k in [Kind::Unshippable, Kind::Declined, Kind::UnknownSku] {
            assert_eq!(kinds.iter().filter(|x| **x == k).count(), 1);
            assert!(k.must_compensate());
        }
        assert_eq!(Kind::Unshippable.order(3)["shipping_address"]["country"], "AQ");
        assert!(Kind::Declined.order(3)["items"][0]["unit_price_cents"].as_i64() > Some(1_000_000));
        assert_eq!(Kind::UnknownSku.order(3)["items"][0]["sku"], "SKU-FAULTS-UNKNOWN");
    }

    #[test]
    fn tallies_merge_and_count_a_window() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let accepted =
            |ms, orchestrator| Accepted { saga_id: Uuid::now_v7(), kind: Kind::Complete, orchestrator, at: at(ms) };
        let mut a = Tally { submitted: 3, accepted: vec![accepted(10, 0), accepted(50, 1)], ..Tally::default() };
        a.refused.insert("503".into(), 1);
        let mut b = Tally { submitted: 2, accepted: vec![accepted(90, 0)], failovers: 2, ..Tally::default() };
        b.refused.insert("503".into(), 1);
        a.merge(b);
        assert_eq!((a.submitted, a.accepted.len(), a.failovers), (5, 3, 2));
        assert_eq!(a.refused["503"], 2);
        assert_eq!(a.accepted_between(at(40), at(95), None), 2);
        assert_eq!(a.accepted_between(at(40), at(95), Some(0)), 1);
        assert_eq!(a.accepted_between(at(0), at(20), Some(1)), 0);
    }
}
