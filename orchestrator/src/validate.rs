//! Validation of `POST /orders` bodies: every rule in one place, each failure naming its field.
//! Pure; the API turns the list into a 422 `problem+json`.

use contracts::countries::is_iso_alpha2;
use contracts::order::{Address, OrderRequest};
use infra::http::FieldError;

/// Limits that come from configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_items: usize,
}

pub const MAX_QUANTITY: u32 = 10_000;
pub const MAX_UNIT_PRICE_CENTS: i64 = 100_000_000;
pub const MAX_TEXT: usize = 200;
pub const MAX_ID: usize = 64;

/// All problems with `order`; empty when it is valid.
pub fn order(order: &OrderRequest, limits: Limits) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut err = |field: String, message: &str| errors.push(FieldError { field, message: message.to_owned() });
    id("customer_id", &order.customer_id, &mut err);
    if !(order.currency.len() == 3 && order.currency.bytes().all(|b| b.is_ascii_uppercase())) {
        err("currency".into(), "must be an ISO 4217 code: three uppercase letters, e.g. EUR");
    }
    if order.items.is_empty() {
        err("items".into(), "must hold at least one item");
    }
    if order.items.len() > limits.max_items {
        err("items".into(), &format!("must hold at most {} items", limits.max_items));
    }
    for (i, item) in order.items.iter().enumerate() {
        id(&format!("items[{i}].sku"), &item.sku, &mut err);
        if item.quantity == 0 || item.quantity > MAX_QUANTITY {
            err(format!("items[{i}].quantity"), &format!("must be between 1 and {MAX_QUANTITY}"));
        }
        if item.unit_price_cents < 0 || item.unit_price_cents > MAX_UNIT_PRICE_CENTS {
            err(format!("items[{i}].unit_price_cents"), &format!("must be between 0 and {MAX_UNIT_PRICE_CENTS}"));
        }
    }
    if order.total_cents().is_none() {
        err("items".into(), "order total is too large");
    }
    address(&order.shipping_address, &mut err);
    errors
}

fn id(field: &str, value: &str, err: &mut impl FnMut(String, &str)) {
    if value.trim().is_empty() {
        err(field.into(), "must not be empty");
    } else if value.chars().count() > MAX_ID {
        err(field.into(), &format!("must be at most {MAX_ID} characters"));
    } else if value.chars().any(char::is_control) {
        err(field.into(), "must not contain control characters");
    }
}

fn text(field: &str, value: &str, err: &mut impl FnMut(String, &str)) {
    if value.trim().is_empty() {
        err(field.into(), "must not be empty");
    } else {
        optional_text(field, value, err);
    }
}

/// Bounded, and free of control characters: they have no place in an address line, and NUL cannot
/// be stored at all (PostgreSQL text and JSONB refuse it).
fn optional_text(field: &str, value: &str, err: &mut impl FnMut(String, &str)) {
    if value.chars().count() > MAX_TEXT {
        err(field.into(), &format!("must be at most {MAX_TEXT} characters"));
    } else if value.chars().any(char::is_control) {
        err(field.into(), "must not contain control characters");
    }
}

fn address(a: &Address, err: &mut impl FnMut(String, &str)) {
    text("shipping_address.name", &a.name, err);
    text("shipping_address.line1", &a.line1, err);
    if let Some(line2) = &a.line2 {
        optional_text("shipping_address.line2", line2, err);
    }
    text("shipping_address.city", &a.city, err);
    text("shipping_address.postal_code", &a.postal_code, err);
    if !is_iso_alpha2(&a.country) {
        err(
            "shipping_address.country".into(),
            "must be an officially assigned ISO 3166-1 alpha-2 country code in uppercase, e.g. DE",
        );
    }
}

/// An `Idempotency-Key` header value: 1..=255 visible ASCII characters.
pub fn idempotency_key(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > 255 {
        return Err("Idempotency-Key must be 1 to 255 characters".into());
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("Idempotency-Key must be visible ASCII characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use contracts::order::OrderItem;

    fn valid() -> OrderRequest {
        OrderRequest {
            customer_id: "c-42".into(),
            currency: "EUR".into(),
            items: vec![OrderItem { sku: "SKU-0001".into(), quantity: 2, unit_price_cents: 1999 }],
            shipping_address: Address {
                name: "Ada Lovelace".into(),
                line1: "1 Main St".into(),
                line2: None,
                city: "Berlin".into(),
                postal_code: "10115".into(),
                country: "DE".into(),
            },
        }
    }

    const LIMITS: Limits = Limits { max_items: 3 };

    fn fields(o: &OrderRequest) -> Vec<String> {
        order(o, LIMITS).into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn a_valid_order_has_no_errors() {
        assert!(order(&valid(), LIMITS).is_empty());
    }

    #[test]
    fn each_rule_names_its_field() {
        type Case = (&'static str, fn(&mut OrderRequest));
        let cases: &[Case] = &[
            ("customer_id", |o| o.customer_id = " ".into()),
            ("customer_id", |o| o.customer_id = "x".repeat(65)),
            ("currency", |o| o.currency = "eur".into()),
            ("currency", |o| o.currency = "EURO".into()),
            ("items", |o| o.items.clear()),
            ("items", |o| o.items = vec![o.items[0].clone(); 4]),
            ("items[0].sku", |o| o.items[0].sku = String::new()),
            ("items[0].quantity", |o| o.items[0].quantity = 0),
            ("items[0].quantity", |o| o.items[0].quantity = MAX_QUANTITY + 1),
            ("items[0].unit_price_cents", |o| o.items[0].unit_price_cents = -1),
            ("shipping_address.name", |o| o.shipping_address.name = String::new()),
            ("shipping_address.line1", |o| o.shipping_address.line1 = "x".repeat(201)),
            ("shipping_address.name", |o| o.shipping_address.name = "\u{0}".into()),
            ("shipping_address.line1", |o| o.shipping_address.line1 = "1 Main St\nBerlin".into()),
            ("shipping_address.line2", |o| o.shipping_address.line2 = Some("x".repeat(201))),
            ("shipping_address.line2", |o| o.shipping_address.line2 = Some("Apt\u{0}2".into())),
            ("shipping_address.city", |o| o.shipping_address.city = "Ber\tlin".into()),
            ("shipping_address.postal_code", |o| o.shipping_address.postal_code = "10115\u{7f}".into()),
            ("shipping_address.city", |o| o.shipping_address.city = String::new()),
            ("shipping_address.postal_code", |o| o.shipping_address.postal_code = String::new()),
            ("shipping_address.country", |o| o.shipping_address.country = "Germany".into()),
            ("shipping_address.country", |o| o.shipping_address.country = "de".into()),
            ("shipping_address.country", |o| o.shipping_address.country = "ZZ".into()),
            ("shipping_address.country", |o| o.shipping_address.country = "XX".into()),
            ("shipping_address.country", |o| o.shipping_address.country = "UK".into()),
            ("shipping_address.country", |o| o.shipping_address.country = String::new()),
        ];
        for (field, mutate) in cases {
            let mut o = valid();
            mutate(&mut o);
            assert_eq!(fields(&o), vec![field.to_string()], "case {field}");
        }
    }

    /// Found by Schemathesis: ids were limited to 64 bytes, which the OpenAPI document (JSON
    /// Schema counts characters) cannot say; 64 characters of any width now pass, 65 do not.
    #[test]
    fn ids_are_counted_in_characters() {
        let mut o = valid();
        o.customer_id = "ü".repeat(MAX_ID);
        o.items[0].sku = "𝕏".repeat(MAX_ID);
        assert!(order(&o, LIMITS).is_empty());
        o.items[0].sku.push('𝕏');
        assert_eq!(fields(&o), vec!["items[0].sku".to_string()]);
    }

    #[test]
    fn unicode_that_is_not_control_passes() {
        let mut o = valid();
        o.shipping_address.name = "\u{202e}Ada 👩‍👩‍👧‍👦 Lovelace\u{200f}".into();
        o.shipping_address.line2 = Some(String::new());
        o.customer_id = "c-\u{feff}𝕏".into();
        assert!(order(&o, LIMITS).is_empty());
    }

    #[test]
    fn real_country_codes_pass_including_ones_shipping_may_refuse() {
        for country in ["DE", "US", "GB", "AQ"] {
            let mut o = valid();
            o.shipping_address.country = country.into();
            assert!(order(&o, LIMITS).is_empty(), "{country}");
        }
    }

    #[test]
    fn idempotency_keys_are_bounded_visible_ascii() {
        assert!(idempotency_key("order-123").is_ok());
        assert!(idempotency_key("").is_err());
        assert!(idempotency_key(&"k".repeat(256)).is_err());
        assert!(idempotency_key("has space").is_err());
    }
}
