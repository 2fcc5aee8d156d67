//! Bad shipping settings stop the binary with a message naming the variable; never a panic.

#[test]
fn bad_destination_and_carrier_settings_are_refused() {
    infra::testing::assert_bad_settings_refused(
        env!("CARGO_BIN_EXE_shipping"),
        &[
            ("SHIPPING_UNSUPPORTED_COUNTRIES", "Antarctica"),
            ("SHIPPING_CARRIER_TIMEOUT_MS", "x"),
            ("SHIPPING_RETRY_BASE_MS", "0"),
        ],
    );
}
