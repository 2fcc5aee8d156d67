//! Shipping rules, without IO: which destinations can be served.

use std::collections::BTreeSet;

/// A refusal: stable code and readable reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub reason: String,
}

/// Every well-formed ISO 3166-1 alpha-2 code is served, except those in `unsupported`.
pub fn check_destination(country: &str, unsupported: &BTreeSet<String>) -> Option<Refusal> {
    if !(country.len() == 2 && country.bytes().all(|b| b.is_ascii_uppercase())) {
        return Some(Refusal {
            code: "invalid_destination",
            reason: format!("{country:?} is not an ISO 3166-1 alpha-2 code"),
        });
    }
    if unsupported.contains(country) {
        return Some(Refusal { code: "unsupported_destination", reason: format!("we do not ship to {country}") });
    }
    None
}

/// Parse `AQ, XX` into a set; every entry must be a well-formed code.
pub fn parse_countries(list: &str) -> Result<BTreeSet<String>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| {
            if c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()) {
                Ok(c.to_ascii_uppercase())
            } else {
                Err(format!("{c:?} is not a two-letter country code"))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn antarctica_is_refused_by_default_and_malformed_codes_always() {
        let unsupported = parse_countries("AQ").unwrap();
        assert_eq!(check_destination("DE", &unsupported), None);
        assert_eq!(check_destination("AQ", &unsupported).unwrap().code, "unsupported_destination");
        assert_eq!(check_destination("de", &unsupported).unwrap().code, "invalid_destination");
        assert_eq!(check_destination("DEU", &unsupported).unwrap().code, "invalid_destination");
    }

    #[test]
    fn country_lists_parse_or_say_why_not() {
        assert_eq!(parse_countries(" aq, XX ,").unwrap().into_iter().collect::<Vec<_>>(), vec!["AQ", "XX"]);
        assert_eq!(parse_countries("").unwrap().len(), 0);
        assert!(parse_countries("Antarctica").is_err());
    }
}
