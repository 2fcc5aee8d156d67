//! Shipping rules, without IO: which destinations can be served, and the shipment's state
//! machine: what each command does given what is stored.
//!
//! ```text
//! (none) --schedule--> booking --carrier booked--> scheduled
//!    |                    |  \--carrier refused--> rejected
//!    |                    \--cancel--> cancelling --carrier cancelled (by the booking's key)--> cancelled
//! (none) --cancel (tombstone)--> cancelling
//! ```
//!
//! `booking` and `cancelling` are intents, committed before the carrier is called.

use std::collections::BTreeSet;

use contracts::countries::{ISO_3166_ALPHA2, is_iso_alpha2};
use uuid::Uuid;

/// A shipment row as the rules need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub status: String,
    pub shipment_id: Uuid,
    pub tracking_number: Option<String>,
    pub country: String,
    pub reason: Option<String>,
}

/// What `shipping.schedule` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnSchedule {
    /// Nothing stored: check the destination, then record the intent and book.
    Start,
    /// An intent is stored: book again (the carrier answers from the booking's key).
    Resume {
        country: String,
    },
    Scheduled {
        shipment_id: Uuid,
        tracking_number: String,
    },
    Rejected {
        code: &'static str,
        reason: String,
    },
    Inconsistent(String),
}

pub fn on_schedule(stored: Option<&Stored>) -> OnSchedule {
    let Some(s) = stored else { return OnSchedule::Start };
    match (s.status.as_str(), &s.tracking_number) {
        ("booking", _) => OnSchedule::Resume { country: s.country.clone() },
        ("scheduled", Some(t)) => OnSchedule::Scheduled { shipment_id: s.shipment_id, tracking_number: t.clone() },
        ("rejected", _) => OnSchedule::Rejected {
            code: "carrier_refused",
            reason: s.reason.clone().unwrap_or_else(|| "the carrier refused the booking".into()),
        },
        ("cancelling" | "cancelled", _) => {
            OnSchedule::Rejected { code: "cancelled", reason: "the shipment was cancelled before it was booked".into() }
        }
        (other, _) => {
            OnSchedule::Inconsistent(format!("shipment {} is {other} without a tracking number", s.shipment_id))
        }
    }
}

/// What `shipping.cancel` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnCancel {
    /// Nothing stored: leave a tombstone (a late schedule is refused) and still cancel at the
    /// carrier by the booking's key.
    Tombstone,
    /// Record the intent (`cancelling`) and cancel at the carrier by the booking's key.
    Cancel,
    /// Cancelled already, or nothing was booked (rejected).
    Done,
}

pub fn on_cancel(stored: Option<&Stored>) -> OnCancel {
    match stored.map(|s| s.status.as_str()) {
        None => OnCancel::Tombstone,
        Some("cancelled" | "rejected") => OnCancel::Done,
        Some(_) => OnCancel::Cancel,
    }
}

/// A refusal: stable code and readable reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub reason: String,
}

/// Anything that is not an officially assigned ISO 3166-1 alpha-2 code (`ZZ`, `de`, `Germany`)
/// is `invalid_destination`; a real code in `refused` is `unsupported_destination`; the rest is served.
pub fn check_destination(country: &str, refused: &BTreeSet<String>) -> Option<Refusal> {
    if !is_iso_alpha2(country) {
        return Some(Refusal {
            code: "invalid_destination",
            reason: format!("{country:?} is not an ISO 3166-1 alpha-2 code"),
        });
    }
    if refused.contains(country) {
        return Some(Refusal { code: "unsupported_destination", reason: format!("we do not ship to {country}") });
    }
    None
}

/// Parse `aq, FR` into a set of uppercase codes; every entry must be an ISO 3166-1 alpha-2 code.
pub fn parse_countries(list: &str) -> Result<BTreeSet<String>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| {
            let code = c.to_ascii_uppercase();
            if is_iso_alpha2(&code) {
                Ok(code)
            } else {
                Err(format!("{c:?} is not an ISO 3166-1 alpha-2 country code"))
            }
        })
        .collect()
}

/// Parse the supported list: `*` is every ISO 3166-1 code, otherwise as [`parse_countries`], and
/// it must name at least one country.
pub fn parse_supported(list: &str) -> Result<BTreeSet<String>, String> {
    if list.trim() == "*" {
        return Ok(ISO_3166_ALPHA2.iter().map(|c| (*c).to_owned()).collect());
    }
    let supported = parse_countries(list)?;
    if supported.is_empty() {
        return Err("must list at least one ISO 3166-1 alpha-2 code, or `*` for all of them".into());
    }
    Ok(supported)
}

/// The ISO codes shipping refuses: those outside `supported` plus those in `unsupported`. Errors
/// when nothing would be left to ship to.
pub fn refused_countries(
    supported: &BTreeSet<String>,
    unsupported: &BTreeSet<String>,
) -> Result<BTreeSet<String>, String> {
    if supported.iter().all(|c| unsupported.contains(c)) {
        return Err("excludes every supported country: nothing would be left to ship to".into());
    }
    Ok(ISO_3166_ALPHA2
        .iter()
        .filter(|c| !supported.contains(**c) || unsupported.contains(**c))
        .map(|c| (*c).to_owned())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(status: &str, tracking: Option<&str>) -> Stored {
        Stored {
            status: status.into(),
            shipment_id: Uuid::nil(),
            tracking_number: tracking.map(Into::into),
            country: "DE".into(),
            reason: None,
        }
    }

    #[test]
    fn schedule_books_once_and_never_after_a_cancel() {
        assert_eq!(on_schedule(None), OnSchedule::Start);
        assert_eq!(on_schedule(Some(&row("booking", None))), OnSchedule::Resume { country: "DE".into() });
        assert_eq!(
            on_schedule(Some(&row("scheduled", Some("T")))),
            OnSchedule::Scheduled { shipment_id: Uuid::nil(), tracking_number: "T".into() }
        );
        for s in ["cancelling", "cancelled"] {
            assert!(matches!(on_schedule(Some(&row(s, None))), OnSchedule::Rejected { code: "cancelled", .. }), "{s}");
        }
        assert!(matches!(
            on_schedule(Some(&row("rejected", None))),
            OnSchedule::Rejected { code: "carrier_refused", .. }
        ));
        assert!(matches!(on_schedule(Some(&row("scheduled", None))), OnSchedule::Inconsistent(_)));
    }

    #[test]
    fn cancel_reaches_the_carrier_whatever_is_stored_until_it_is_done() {
        assert_eq!(on_cancel(None), OnCancel::Tombstone);
        for s in ["booking", "scheduled", "cancelling"] {
            assert_eq!(on_cancel(Some(&row(s, None))), OnCancel::Cancel, "{s}");
        }
        assert_eq!(on_cancel(Some(&row("cancelled", None))), OnCancel::Done);
        assert_eq!(on_cancel(Some(&row("rejected", None))), OnCancel::Done);
    }

    fn refused(supported: &str, unsupported: &str) -> BTreeSet<String> {
        refused_countries(&parse_supported(supported).unwrap(), &parse_countries(unsupported).unwrap()).unwrap()
    }

    #[test]
    fn antarctica_is_refused_by_default_and_non_iso_codes_always() {
        let refused = refused("*", "AQ");
        assert_eq!(refused.iter().collect::<Vec<_>>(), vec!["AQ"]);
        assert_eq!(check_destination("DE", &refused), None);
        assert_eq!(check_destination("US", &refused), None);
        assert_eq!(check_destination("AQ", &refused).unwrap().code, "unsupported_destination");
        for code in ["ZZ", "XX", "UK", "de", "DEU", "Germany", ""] {
            assert_eq!(check_destination(code, &refused).unwrap().code, "invalid_destination", "{code:?}");
        }
    }

    #[test]
    fn only_supported_countries_minus_unsupported_ones_are_served() {
        let refused = refused("de, fr,AT", "AT");
        assert_eq!(refused.len(), 249 - 2);
        assert_eq!(check_destination("DE", &refused), None);
        assert_eq!(check_destination("FR", &refused), None);
        assert_eq!(check_destination("AT", &refused).unwrap().code, "unsupported_destination");
        assert_eq!(check_destination("US", &refused).unwrap().code, "unsupported_destination");
        assert_eq!(check_destination("ZZ", &refused).unwrap().code, "invalid_destination");
    }

    #[test]
    fn country_lists_parse_or_say_why_not() {
        assert_eq!(parse_countries(" aq, FR ,").unwrap().into_iter().collect::<Vec<_>>(), vec!["AQ", "FR"]);
        assert_eq!(parse_countries("").unwrap().len(), 0);
        for bad in ["Antarctica", "AQ,ZZ", "XX", "*"] {
            let message = parse_countries(bad).unwrap_err();
            assert!(message.contains("is not an ISO 3166-1 alpha-2"), "{bad}: {message}");
        }
        assert!(parse_countries("AQ,ZZ").unwrap_err().contains("\"ZZ\""));
        assert_eq!(parse_supported(" * ").unwrap().len(), 249);
        assert_eq!(parse_supported("DE").unwrap().into_iter().collect::<Vec<_>>(), vec!["DE"]);
        assert!(parse_supported("").is_err());
        assert!(parse_supported("*,DE").is_err());
        assert!(parse_supported("DE,ZZ").unwrap_err().contains("\"ZZ\""));
        let de = parse_supported("DE").unwrap();
        assert!(refused_countries(&de, &de).is_err());
    }
}
