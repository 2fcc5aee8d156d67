//! The officially assigned ISO 3166-1 alpha-2 country codes: all 249 of them, sorted.
//!
//! Source: the ISO 3166 Maintenance Agency's list of officially assigned codes
//! (<https://www.iso.org/iso-3166-country-codes.html>), as shipped by Debian's `iso-codes` 4.15.0
//! (`iso_3166-1.json`) and cross-checked against the tz database's `iso3166.tab` (2025b).
//! Reserved, transitional and user-assigned codes (`EU`, `UK`, `XK`, `ZZ`, ...) are not in it.
//! When ISO assigns or withdraws a code, update [`ISO_3166_ALPHA2`]; the tests below pin its size.

/// Every officially assigned ISO 3166-1 alpha-2 code, uppercase, in ascending order (one line per
/// first letter), so [`is_iso_alpha2`] can binary-search it.
#[rustfmt::skip]
pub const ISO_3166_ALPHA2: &[&str] = &[
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ",
    "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM",
    "BN", "BO", "BQ", "BR", "BS", "BT", "BV", "BW", "BY", "BZ",
    "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN", "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ",
    "DE", "DJ", "DK", "DM", "DO", "DZ",
    "EC", "EE", "EG", "EH", "ER", "ES", "ET",
    "FI", "FJ", "FK", "FM", "FO", "FR",
    "GA", "GB", "GD", "GE", "GF", "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY",
    "HK", "HM", "HN", "HR", "HT", "HU",
    "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT",
    "JE", "JM", "JO", "JP",
    "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ",
    "LA", "LB", "LC", "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY",
    "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK", "ML", "MM", "MN", "MO",
    "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ",
    "NA", "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ",
    "OM",
    "PA", "PE", "PF", "PG", "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY",
    "QA",
    "RE", "RO", "RS", "RU", "RW",
    "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL",
    "SM", "SN", "SO", "SR", "SS", "ST", "SV", "SX", "SY", "SZ",
    "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO", "TR", "TT", "TV", "TW", "TZ",
    "UA", "UG", "UM", "US", "UY", "UZ",
    "VA", "VC", "VE", "VG", "VI", "VN", "VU",
    "WF", "WS",
    "YE", "YT",
    "ZA", "ZM", "ZW",
];

/// Whether `code` is an officially assigned ISO 3166-1 alpha-2 code. Case-sensitive: `de` is not.
pub fn is_iso_alpha2(code: &str) -> bool {
    ISO_3166_ALPHA2.binary_search(&code).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_the_249_official_codes_sorted_and_unique() {
        assert_eq!(ISO_3166_ALPHA2.len(), 249);
        assert!(ISO_3166_ALPHA2.windows(2).all(|w| w[0] < w[1]), "sorted and unique");
        for code in ISO_3166_ALPHA2 {
            assert!(code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase()), "{code:?}");
        }
    }

    #[test]
    fn real_codes_are_recognised_and_others_not() {
        for code in ["DE", "US", "AQ", "AD", "ZW"] {
            assert!(is_iso_alpha2(code), "{code}");
        }
        for code in ["ZZ", "XX", "UK", "EU", "de", "D", "DEU", ""] {
            assert!(!is_iso_alpha2(code), "{code:?}");
        }
    }
}
