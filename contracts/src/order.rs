//! The order a client submits (`POST /orders`) and the value types commands carry about it.
//! With feature `openapi`, the types of the request derive `utoipa::ToSchema` (its shape only; the
//! orchestrator, which enforces the rules, adds them to its document).

use serde::{Deserialize, Serialize};

/// Body of `POST /orders`. Unknown fields are refused so a typo is an error, not a silent default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    pub customer_id: String,
    /// ISO 4217 code, e.g. `EUR`.
    pub currency: String,
    pub items: Vec<OrderItem>,
    #[serde(deserialize_with = "strict_address")]
    #[cfg_attr(feature = "openapi", schema(value_type = StrictAddress))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OrderItem {
    pub sku: String,
    #[serde(deserialize_with = "whole_number")]
    pub quantity: u32,
    /// Price of one unit in minor units of the order's currency (cents).
    #[serde(deserialize_with = "whole_number")]
    pub unit_price_cents: i64,
}

/// A whole number however JSON writes it: `3`, `3.0` or `3e0` are the same number (JSON Schema's
/// `integer` is any number without a fractional part, and the order's OpenAPI document says
/// `integer`); `3.5`, or one out of `T`'s range, is an error.
fn whole_number<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i128>,
{
    use serde::de::{Error, Unexpected, Visitor};
    struct Whole;
    impl Visitor<'_> for Whole {
        type Value = i128;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a whole number")
        }
        fn visit_i64<E: Error>(self, v: i64) -> Result<i128, E> {
            Ok(i128::from(v))
        }
        fn visit_u64<E: Error>(self, v: u64) -> Result<i128, E> {
            Ok(i128::from(v))
        }
        fn visit_f64<E: Error>(self, v: f64) -> Result<i128, E> {
            // Within ±2^64 every whole f64 converts exactly; beyond, no field's range reaches.
            if v.fract() == 0.0 && v.abs() < 18_446_744_073_709_551_616.0 {
                Ok(v as i128)
            } else {
                Err(E::invalid_value(Unexpected::Float(v), &self))
            }
        }
    }
    let n = d.deserialize_any(Whole)?;
    T::try_from(n).map_err(|_| D::Error::invalid_value(Unexpected::Other(&n.to_string()), &"a number in range"))
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
    let StrictAddress { name, line1, line2, city, postal_code, country } = StrictAddress::deserialize(d)?;
    Ok(Address { name, line1, line2, city, postal_code, country })
}

/// Where the order ships to, as `POST /orders` takes it: [`Address`] with unknown fields refused.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Address))]
#[serde(deny_unknown_fields)]
struct StrictAddress {
    /// The recipient.
    name: String,
    line1: String,
    #[serde(default)]
    line2: Option<String>,
    city: String,
    postal_code: String,
    /// ISO 3166-1 alpha-2, e.g. `DE`.
    country: String,
}

/// An item as inventory sees it: what to hold, no prices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLine {
    pub sku: String,
    pub quantity: u32,
}
