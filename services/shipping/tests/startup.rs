//! Bad shipping settings stop the binary with a message naming the variable; never a panic.

#[test]
fn bad_destination_and_carrier_settings_are_refused() {
    let binary = env!("CARGO_BIN_EXE_shipping");
    infra::testing::assert_bad_settings_refused(
        binary,
        &[
            ("SHIPPING_UNSUPPORTED_COUNTRIES", "Antarctica"),
            ("SHIPPING_UNSUPPORTED_COUNTRIES", "AQ,ZZ"),
            ("SHIPPING_SUPPORTED_COUNTRIES", "DE,XX"),
            ("SHIPPING_SUPPORTED_COUNTRIES", ""),
            ("SHIPPING_CARRIER_TIMEOUT_MS", "x"),
            ("SHIPPING_RETRY_BASE_MS", "0"),
        ],
    );
    // A code that is not ISO 3166-1 is named in the message, not just the variable.
    for (var, value, bad) in
        [("SHIPPING_UNSUPPORTED_COUNTRIES", "AQ,ZZ", "\"ZZ\""), ("SHIPPING_SUPPORTED_COUNTRIES", "DE,XX", "\"XX\"")]
    {
        let (code, text) = infra::testing::run_binary(binary, &[(var, value)]);
        assert_ne!(code, 0, "{var}={value} must stop the process");
        assert!(text.contains(bad) && text.contains("ISO 3166-1"), "{var}={value}: the message names {bad}: {text}");
    }
}
