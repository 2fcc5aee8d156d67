//! The platform under test, through its public APIs only: `POST /orders` on the orchestrator,
//! `GET /stock` on inventory, `GET /admin/stats` and `GET /authorizations` on the simulated
//! gateway; and [`PlatformTarget`], which runs one saga and waits for its event.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use uuid::Uuid;

use crate::driver::{Outcome, Run, Target};
use crate::events::EventTap;
use crate::mix::Kind;
use crate::orders::{self, Catalog, StockLevel};

/// The gateway's counters (`GET /admin/stats`), the part the checks read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct GatewayStats {
    #[serde(default)]
    pub authorized_open: Option<u64>,
    #[serde(default)]
    pub captured: Option<u64>,
    #[serde(default)]
    pub voided: Option<u64>,
}

/// One authorization the gateway holds (`GET /authorizations`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Authorization {
    /// The Idempotency-Key of the call that made it: `payment:<order id>:authorize`.
    pub key: String,
    /// `authorized`, `captured` or `voided`.
    pub status: String,
}

/// HTTP clients of the platform's public APIs.
#[derive(Debug, Clone)]
pub struct PlatformClient {
    http: reqwest::Client,
    orchestrator: String,
    inventory: String,
    gateway: Option<String>,
}

impl PlatformClient {
    pub fn new(orchestrator: &str, inventory: &str, gateway: Option<&str>) -> anyhow::Result<PlatformClient> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
        let trim = |s: &str| s.trim_end_matches('/').to_owned();
        Ok(PlatformClient {
            http,
            orchestrator: trim(orchestrator),
            inventory: trim(inventory),
            gateway: gateway.map(trim),
        })
    }

    pub fn has_gateway(&self) -> bool {
        self.gateway.is_some()
    }

    /// `POST /orders`: the new saga's id, or why not.
    pub async fn submit(&self, order: &contracts::order::OrderRequest) -> Result<Uuid, String> {
        let resp = self
            .http
            .post(format!("{}/orders", self.orchestrator))
            .json(order)
            .send()
            .await
            .map_err(|e| format!("POST /orders: {e}"))?;
        let status = resp.status();
        if status.as_u16() != 202 {
            let body = resp.text().await.unwrap_or_default();
            return Err(format!("POST /orders answered {status}: {}", body.chars().take(200).collect::<String>()));
        }
        #[derive(Deserialize)]
        struct Accepted {
            saga_id: Uuid,
        }
        resp.json::<Accepted>().await.map(|a| a.saga_id).map_err(|e| format!("POST /orders: no saga_id: {e}"))
    }

    /// Inventory's `GET /stock`.
    pub async fn stock(&self) -> anyhow::Result<Vec<StockLevel>> {
        self.get_json(&format!("{}/stock", self.inventory), "inventory's GET /stock (--inventory-url)").await
    }

    /// The gateway's `GET /admin/stats`; `None` without a gateway.
    pub async fn gateway_stats(&self) -> anyhow::Result<Option<GatewayStats>> {
        match &self.gateway {
            None => Ok(None),
            Some(g) => {
                self.get_json(&format!("{g}/admin/stats"), "the gateway's GET /admin/stats (--gateway-url)").await
            }
        }
    }

    /// The gateway's `GET /authorizations`; empty without a gateway.
    pub async fn authorizations(&self) -> anyhow::Result<Vec<Authorization>> {
        match &self.gateway {
            None => Ok(Vec::new()),
            Some(g) => {
                self.get_json(&format!("{g}/authorizations"), "the gateway's GET /authorizations (--gateway-url)").await
            }
        }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str, what: &str) -> anyhow::Result<T> {
        let resp = self.http.get(url).send().await.map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
        anyhow::ensure!(resp.status().is_success(), "{what} answered {}", resp.status());
        resp.json().await.map_err(|e| anyhow::anyhow!("{what}: unexpected answer: {e}"))
    }
}

/// Runs sagas on the platform: picks the order, submits it, waits for its event.
pub struct PlatformTarget {
    pub client: PlatformClient,
    pub tap: EventTap,
    pub catalog: Mutex<Catalog>,
}

impl PlatformTarget {
    fn sku_for(&self, kind: Kind) -> Option<String> {
        let mut catalog = self.catalog.lock().ok()?;
        match kind {
            Kind::Completed => catalog.take(),
            Kind::UnknownSku => Some(orders::UNKNOWN_SKU.to_owned()),
            Kind::Declined | Kind::Unshippable => catalog.any(),
        }
    }
}

impl Target for PlatformTarget {
    async fn run(&self, kind: Kind, timeout: Duration) -> Run {
        let not_started =
            |why: String| Run { saga: None, sku: None, outcome: Outcome::NotStarted(why), ended_at: Instant::now() };
        let Some(sku) = self.sku_for(kind) else {
            return not_started("inventory has no stock left for another order".into());
        };
        let saga = match self.client.submit(&orders::order(kind, &sku)).await {
            Ok(id) => id,
            Err(why) => return not_started(why),
        };
        match tokio::time::timeout(timeout, self.tap.wait(saga)).await {
            Ok(Ok(end)) => {
                Run { saga: Some(saga), sku: Some(sku), outcome: Outcome::Ended(end.event), ended_at: end.at }
            }
            _ => {
                self.tap.forget(saga);
                Run { saga: Some(saga), sku: Some(sku), outcome: Outcome::Unfinished, ended_at: Instant::now() }
            }
        }
    }
}
