//! The orders a run sends: one [`OrderRequest`] per [`Kind`], and the catalog they draw SKUs
//! from, so completed orders never ask for more than inventory has.

use contracts::order::{Address, OrderItem, OrderRequest};

use crate::mix::Kind;

/// A SKU no inventory carries: inventory refuses the reservation (`unknown_sku`).
pub const UNKNOWN_SKU: &str = "SAGA-BENCH-NO-SUCH-SKU";
/// One unit over payment's default limit of 10,000.00 (`limit_exceeded`).
pub const OVER_LIMIT_CENTS: i64 = 1_000_001;
/// The price of a unit of an order meant to complete.
pub const UNIT_PRICE_CENTS: i64 = 100;
/// A destination shipping refuses by default (`SHIPPING_UNSUPPORTED_COUNTRIES=AQ`).
pub const UNSHIPPABLE_COUNTRY: &str = "AQ";

/// A stock level as inventory's `GET /stock` answers it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct StockLevel {
    pub sku: String,
    pub on_hand: i64,
    pub reserved: i64,
}

/// The order of `kind`, one unit of `sku` (ignored for an unknown-SKU order).
pub fn order(kind: Kind, sku: &str) -> OrderRequest {
    let (sku, price, country) = match kind {
        Kind::Completed => (sku, UNIT_PRICE_CENTS, "DE"),
        Kind::UnknownSku => (UNKNOWN_SKU, UNIT_PRICE_CENTS, "DE"),
        Kind::Declined => (sku, OVER_LIMIT_CENTS, "DE"),
        Kind::Unshippable => (sku, UNIT_PRICE_CENTS, UNSHIPPABLE_COUNTRY),
    };
    OrderRequest {
        customer_id: "saga-bench".into(),
        currency: "EUR".into(),
        items: vec![OrderItem { sku: sku.to_owned(), quantity: 1, unit_price_cents: price }],
        shipping_address: Address {
            name: "Ada Lovelace".into(),
            line1: "1 Main St".into(),
            line2: None,
            city: "Berlin".into(),
            postal_code: "10115".into(),
            country: country.into(),
        },
    }
}

/// The SKUs orders draw from, round robin, with the units still free for completed orders.
#[derive(Debug, Clone)]
pub struct Catalog {
    skus: Vec<(String, i64)>,
    next: usize,
}

impl Catalog {
    /// The catalog as inventory reports it; a SKU counts with its available units.
    pub fn from_stock(levels: &[StockLevel]) -> Catalog {
        let skus = levels.iter().map(|l| (l.sku.clone(), (l.on_hand - l.reserved).max(0))).collect();
        Catalog { skus, next: 0 }
    }

    /// A SKU for an order that will complete, taking one unit from the catalog; `None` once
    /// every SKU is used up.
    pub fn take(&mut self) -> Option<String> {
        for _ in 0..self.skus.len() {
            let i = self.advance();
            if let Some((sku, free)) = self.skus.get_mut(i)
                && *free > 0
            {
                *free -= 1;
                return Some(sku.clone());
            }
        }
        None
    }

    /// A SKU for an order that will be compensated (its reservation, if any, is released).
    pub fn any(&mut self) -> Option<String> {
        if self.skus.is_empty() {
            return None;
        }
        let i = self.advance();
        self.skus.get(i).map(|(sku, _)| sku.clone())
    }

    fn advance(&mut self) -> usize {
        let i = self.next % self.skus.len().max(1);
        self.next = self.next.wrapping_add(1);
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(sku: &str, on_hand: i64, reserved: i64) -> StockLevel {
        StockLevel { sku: sku.into(), on_hand, reserved }
    }

    #[test]
    fn each_kind_is_refused_for_its_own_reason() {
        assert_eq!(order(Kind::Completed, "A").items[0].sku, "A");
        assert_eq!(order(Kind::UnknownSku, "A").items[0].sku, UNKNOWN_SKU);
        assert!(order(Kind::Declined, "A").total_cents().unwrap() > 1_000_000);
        assert_eq!(order(Kind::Unshippable, "A").shipping_address.country, "AQ");
        assert_eq!(order(Kind::Completed, "A").total_cents(), Some(UNIT_PRICE_CENTS));
    }

    #[test]
    fn completed_orders_only_take_free_units() {
        let mut c = Catalog::from_stock(&[level("A", 2, 1), level("B", 1, 1), level("C", 1, 0)]);
        let mut taken = vec![c.take(), c.take(), c.take()];
        taken.sort();
        assert_eq!(taken, vec![None, Some("A".to_owned()), Some("C".to_owned())]);
        assert!(c.any().is_some(), "compensated orders still find a SKU");
        assert_eq!(Catalog::from_stock(&[]).any(), None);
    }
}
