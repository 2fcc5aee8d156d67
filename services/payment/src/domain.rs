//! Payment rules, without IO: when an authorization is declined.

/// A refusal: stable code and readable reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decline {
    pub code: &'static str,
    pub reason: String,
}

/// `None` if the amount may be authorized.
pub fn decline(amount_cents: i64, currency: &str, limit_cents: i64) -> Option<Decline> {
    if !(currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase())) {
        return Some(Decline {
            code: "invalid_currency",
            reason: format!("currency {currency:?} is not an ISO 4217 code"),
        });
    }
    if amount_cents <= 0 {
        return Some(Decline { code: "invalid_amount", reason: format!("amount {amount_cents} must be positive") });
    }
    if amount_cents > limit_cents {
        return Some(Decline {
            code: "limit_exceeded",
            reason: format!("amount {} exceeds the limit of {}", cents(amount_cents), cents(limit_cents)),
        });
    }
    None
}

/// `123456` -> `1234.56`.
pub fn cents(v: i64) -> String {
    format!("{}.{:02}", v / 100, (v % 100).abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_formats() {
        assert_eq!(decline(1_000_000, "EUR", 1_000_000), None);
        let d = decline(1_000_001, "EUR", 1_000_000).unwrap();
        assert_eq!(d.code, "limit_exceeded");
        assert_eq!(d.reason, "amount 10000.01 exceeds the limit of 10000.00");
        assert_eq!(decline(0, "EUR", 10).unwrap().code, "invalid_amount");
        assert_eq!(decline(5, "eur", 10).unwrap().code, "invalid_currency");
    }
}
