//! The order a client submits (`POST /orders`) and the value types commands carry about it.

use serde::{Deserialize, Serialize};

/// Body of `POST /orders`. Unknown fields are refused so a typo is an error, not a silent default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    pub customer_id: String,
    /// ISO 4217 code, e.g. `EUR`.
    pub currency: String,
    pub items: Vec<OrderItem>,
    #[serde(deserialize_with = "strict_address")]
    pub shipping_address: Address,
}

impl OrderRequest {
    /// Sum of quantity x unit price, in minor units; `None` on overflow.
    pub fn total_cents(&self) -> Option<i64> {
        self.items.iter().try_fold(0i64, |acc, item| {
            i64::from(item.quantity).checked_mul(item.unit_price_cents).and_then(|line| acc.checked_add(line))
        })
    }
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderItem {
    pub sku: String,
    pub quantity: u32,
    /// Price of one unit in minor units of the order's currency (cents).
    pub unit_price_cents: i64,
}

/// Where the order ships to. On the wire (inside `shipping.schedule`) unknown fields are ignored,
/// so a newer producer may add one without older consumers dead-lettering the command; in
/// `POST /orders` they are refused (see [`strict_address`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub name: String,
    pub line1: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, e.g. `DE`.
    pub country: String,
}

/// [`Address`] as `POST /orders` accepts it: unknown fields are an error there.
fn strict_address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Strict {
        name: String,
        line1: String,
        #[serde(default)]
        line2: Option<String>,
        city: String,
        postal_code: String,
        country: String,
    }
    let Strict { name, line1, line2, city, postal_code, country } = Strict::deserialize(d)?;
    Ok(Address { name, line1, line2, city, postal_code, country })
}

/// An item as inventory sees it: what to hold, no prices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLine {
    pub sku: String,
    pub quantity: u32,
}
