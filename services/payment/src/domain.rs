//! Payment rules, without IO: when an authorization is declined, and the payment's state machine:
//! what each command does given what is stored.
//!
//! ```text
//! (none) --authorize--> authorizing --gateway ok--> authorized --capture--> capturing --> captured
//!    |                      |  \--gateway refused--> declined        \
//!    |                      \------------void------------\           \--void: refused (after capture)
//!    \--limit/currency--> declined                        v
//! (none) --void (tombstone)--> voiding --gateway voided (by the authorization's key)--> voided
//! ```
//!
//! `authorizing`, `voiding` and `capturing` are intents: committed before the gateway is called,
//! so a crash leaves a state the next delivery (or a compensation) finishes from.

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

/// The code of a declined authorize that arrived after its order's void.
pub const VOIDED_BEFORE_AUTHORIZATION: &str = "voided_before_authorization";

/// A payment row as the rules need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub status: String,
    pub authorization_id: Option<String>,
    pub decline_code: Option<String>,
}

/// What `payment.authorize` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnAuthorize {
    /// Nothing stored: check the limits, then record the intent and call the gateway.
    Start,
    /// An intent is stored (a crash or a failed call before): call the gateway again.
    Resume,
    Authorized(String),
    Declined(String),
    /// A row that breaks the state machine.
    Inconsistent(String),
}

pub fn on_authorize(stored: Option<&Stored>) -> OnAuthorize {
    let Some(s) = stored else { return OnAuthorize::Start };
    match (s.status.as_str(), &s.authorization_id) {
        ("authorizing", _) => OnAuthorize::Resume,
        ("declined", _) => OnAuthorize::Declined(s.decline_code.clone().unwrap_or_else(|| "declined".into())),
        ("voiding" | "voided", None) => OnAuthorize::Declined(VOIDED_BEFORE_AUTHORIZATION.into()),
        (_, Some(id)) => OnAuthorize::Authorized(id.clone()),
        (other, None) => OnAuthorize::Inconsistent(format!("{other} without an authorization id")),
    }
}

/// What `payment.void` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnVoid {
    /// Nothing stored: leave a tombstone (so a late authorize is refused) and still void at the
    /// gateway by the authorization's key, in case it holds something.
    Tombstone,
    /// Record the intent (`voiding`) and void at the gateway by the authorization's key.
    Void,
    /// Voided already, or nothing was held (declined).
    Done,
    /// Captured (or being captured): money moved, a void cannot undo it.
    AfterCapture,
}

pub fn on_void(stored: Option<&Stored>) -> OnVoid {
    match stored.map(|s| s.status.as_str()) {
        None => OnVoid::Tombstone,
        Some("authorizing" | "authorized" | "voiding") => OnVoid::Void,
        Some("voided" | "declined") => OnVoid::Done,
        Some(_) => OnVoid::AfterCapture,
    }
}

/// What `payment.capture` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnCapture {
    /// Record the intent (`capturing`) if it is not there yet, and capture this authorization.
    Capture(String),
    Done,
    /// Nothing authorized to capture.
    NotAuthorized(String),
}

pub fn on_capture(stored: Option<&Stored>) -> OnCapture {
    match stored {
        Some(s) if s.status == "captured" => OnCapture::Done,
        Some(Stored { status, authorization_id: Some(id), .. }) if status == "authorized" || status == "capturing" => {
            OnCapture::Capture(id.clone())
        }
        Some(s) => OnCapture::NotAuthorized(s.status.clone()),
        None => OnCapture::NotAuthorized("unknown".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(status: &str, auth: Option<&str>) -> Stored {
        Stored { status: status.into(), authorization_id: auth.map(Into::into), decline_code: None }
    }

    #[test]
    fn limits_and_formats() {
        assert_eq!(decline(1_000_000, "EUR", 1_000_000), None);
        let d = decline(1_000_001, "EUR", 1_000_000).unwrap();
        assert_eq!(d.code, "limit_exceeded");
        assert_eq!(d.reason, "amount 10000.01 exceeds the limit of 10000.00");
        assert_eq!(decline(0, "EUR", 10).unwrap().code, "invalid_amount");
        assert_eq!(decline(5, "eur", 10).unwrap().code, "invalid_currency");
    }

    #[test]
    fn authorize_never_authorizes_twice_nor_after_a_void() {
        assert_eq!(on_authorize(None), OnAuthorize::Start);
        assert_eq!(on_authorize(Some(&row("authorizing", None))), OnAuthorize::Resume);
        assert_eq!(on_authorize(Some(&row("authorized", Some("a")))), OnAuthorize::Authorized("a".into()));
        assert_eq!(on_authorize(Some(&row("captured", Some("a")))), OnAuthorize::Authorized("a".into()));
        assert_eq!(
            on_authorize(Some(&row("voiding", None))),
            OnAuthorize::Declined(VOIDED_BEFORE_AUTHORIZATION.into())
        );
        assert_eq!(on_authorize(Some(&row("voided", None))), OnAuthorize::Declined(VOIDED_BEFORE_AUTHORIZATION.into()));
        let declined = Stored { decline_code: Some("limit_exceeded".into()), ..row("declined", None) };
        assert_eq!(on_authorize(Some(&declined)), OnAuthorize::Declined("limit_exceeded".into()));
        assert!(matches!(on_authorize(Some(&row("authorized", None))), OnAuthorize::Inconsistent(_)));
    }

    #[test]
    fn void_reaches_the_gateway_whatever_is_stored_until_it_is_done() {
        assert_eq!(on_void(None), OnVoid::Tombstone);
        for s in ["authorizing", "authorized", "voiding"] {
            assert_eq!(on_void(Some(&row(s, None))), OnVoid::Void, "{s}");
        }
        assert_eq!(on_void(Some(&row("voided", None))), OnVoid::Done);
        assert_eq!(on_void(Some(&row("declined", None))), OnVoid::Done);
        assert_eq!(on_void(Some(&row("capturing", Some("a")))), OnVoid::AfterCapture);
        assert_eq!(on_void(Some(&row("captured", Some("a")))), OnVoid::AfterCapture);
    }

    #[test]
    fn capture_only_what_is_authorized() {
        assert_eq!(on_capture(Some(&row("authorized", Some("a")))), OnCapture::Capture("a".into()));
        assert_eq!(on_capture(Some(&row("capturing", Some("a")))), OnCapture::Capture("a".into()));
        assert_eq!(on_capture(Some(&row("captured", Some("a")))), OnCapture::Done);
        assert_eq!(on_capture(Some(&row("voided", Some("a")))), OnCapture::NotAuthorized("voided".into()));
        assert_eq!(on_capture(None), OnCapture::NotAuthorized("unknown".into()));
    }
}
