//! Where the auditor reads: the orchestrator's own sagas (its database), each participant through
//! its read API (`GET /reservations`, `GET /stock`, `GET /payments`, `GET /shipments`, paged; never
//! its tables), and the outside systems' listings (`GET /authorizations` at the gateway,
//! `GET /shipments` at the carrier), whose idempotency keys name the order.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sqlx::PgPool;
use uuid::Uuid;

use super::rules::{Holding, Outside, Records, Reservation, Stock};
use crate::kernel::SagaStatus;

/// Where each source answers. An empty outside URL skips that comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditUrls {
    pub inventory: String,
    pub payment: String,
    pub shipping: String,
    pub gateway: Option<String>,
    pub carrier: Option<String>,
}

/// A source the auditor could not read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read the sagas: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot read {url}: {error}")]
    Http { url: String, error: String },
}

#[derive(Deserialize)]
struct Page<T> {
    items: Vec<T>,
    next: Option<Uuid>,
}

#[derive(Deserialize)]
struct Keyed {
    key: String,
    status: String,
}

/// Reads every source.
#[derive(Debug, Clone)]
pub struct Sources {
    pub http: reqwest::Client,
    pub urls: AuditUrls,
}

impl Sources {
    async fn get<T: DeserializeOwned>(&self, url: &str) -> Result<T, SourceError> {
        let fail = |error: String| SourceError::Http { url: url.to_owned(), error };
        let resp = self.http.get(url).send().await.map_err(|e| fail(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(fail(format!("answered {}", resp.status())));
        }
        resp.json().await.map_err(|e| fail(e.to_string()))
    }

    /// Every item of a paged listing.
    async fn all<T: DeserializeOwned>(&self, base: &str, path: &str) -> Result<Vec<T>, SourceError> {
        let mut items = Vec::new();
        let mut after: Option<Uuid> = None;
        loop {
            let url = match after {
                None => format!("{base}{path}?limit=1000"),
                Some(a) => format!("{base}{path}?limit=1000&after={a}"),
            };
            let page: Page<T> = self.get(&url).await?;
            items.extend(page.items);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(items),
            }
        }
    }

    /// An outside system's records, by the order its key names (`<what>:<order id>:<action>`).
    async fn outside(&self, base: Option<&str>, path: &str) -> Result<Option<Vec<Outside>>, SourceError> {
        let Some(base) = base else { return Ok(None) };
        let rows: Vec<Keyed> = self.get(&format!("{base}{path}")).await?;
        let by_order = |k: &Keyed| {
            let id = k.key.split(':').nth(1).and_then(|s| Uuid::parse_str(s).ok())?;
            Some(Outside { order_id: id, status: k.status.clone() })
        };
        Ok(Some(rows.iter().filter_map(by_order).collect()))
    }

    /// Everything, for the sagas finished since `since` (all terminal sagas without it).
    pub async fn read(&self, pool: &PgPool, since: Option<DateTime<Utc>>) -> Result<Records, SourceError> {
        let rows: Vec<(Uuid, String, Option<DateTime<Utc>>)> =
            sqlx::query_as("SELECT id, status, finished_at FROM sagas").fetch_all(pool).await?;
        let mut records = Records::default();
        for (id, status, finished) in rows {
            records.known.insert(id);
            let Ok(status) = status.parse::<SagaStatus>() else { continue };
            let recent = since.is_none_or(|s| finished.is_some_and(|f| f >= s));
            if !status.is_terminal() || recent {
                records.sagas.insert(id, status);
            }
        }
        let u = &self.urls;
        let stock_url = format!("{}/stock", u.inventory);
        let (lines, stock, payments, shipments, authorizations, bookings) = tokio::try_join!(
            self.all::<ReservationRow>(&u.inventory, "/reservations"),
            self.get::<Vec<StockRow>>(&stock_url),
            self.all::<StatusRow>(&u.payment, "/payments"),
            self.all::<StatusRow>(&u.shipping, "/shipments"),
            self.outside(u.gateway.as_deref(), "/authorizations"),
            self.outside(u.carrier.as_deref(), "/shipments"),
        )?;
        records.reservations = lines.into_iter().map(ReservationRow::into_reservation).collect();
        records.stock = stock.into_iter().map(StockRow::into_stock).collect();
        records.payments = payments.into_iter().map(StatusRow::into_holding).collect();
        records.shipments = shipments.into_iter().map(StatusRow::into_holding).collect();
        records.authorizations = authorizations;
        records.bookings = bookings;
        Ok(records)
    }
}

#[derive(Deserialize)]
struct ReservationRow {
    order_id: Uuid,
    sku: String,
    quantity: i64,
    status: String,
}

impl ReservationRow {
    fn into_reservation(self) -> Reservation {
        Reservation { order_id: self.order_id, sku: self.sku, quantity: self.quantity, status: self.status }
    }
}

#[derive(Deserialize)]
struct StockRow {
    sku: String,
    on_hand: i64,
    reserved: i64,
    received: i64,
}

impl StockRow {
    fn into_stock(self) -> Stock {
        Stock { sku: self.sku, on_hand: self.on_hand, reserved: self.reserved, received: self.received }
    }
}

/// A payment or a shipment: the fields the rules need (the rest is ignored).
#[derive(Deserialize)]
struct StatusRow {
    order_id: Uuid,
    status: String,
}

impl StatusRow {
    fn into_holding(self) -> Holding {
        Holding { order_id: self.order_id, status: self.status }
    }
}
