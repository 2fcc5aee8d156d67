//! Bad payment settings stop the binary with a message naming the variable; never a panic.

#[test]
fn bad_gateway_and_breaker_settings_are_refused() {
    infra::testing::assert_bad_settings_refused(
        env!("CARGO_BIN_EXE_payment"),
        &[
            ("PAYMENT_LIMIT_CENTS", "-5"),
            ("PAYMENT_GATEWAY_TIMEOUT_MS", "0"),
            ("PAYMENT_BREAKER_FAILURES", "0"),
            ("PAYMENT_BREAKER_OPEN_MS", "0"),
            ("PAYMENT_BREAKER_OPEN_MAX_MS", "10"),
            ("PAYMENT_RETRY_ATTEMPTS", "0"),
            ("PAYMENT_RETRY_MAX_MS", "1"),
        ],
    );
}
