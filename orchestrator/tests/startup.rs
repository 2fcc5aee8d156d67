//! Bad configuration stops the binary before it opens a socket, with a message naming the
//! variable; an unreachable dependency is a clear error too. Never a panic, never a secret.

use infra::testing::{assert_bad_settings_refused, run_binary};

const BIN: &str = env!("CARGO_BIN_EXE_orchestrator");

#[test]
fn each_bad_setting_is_named_and_nothing_panics() {
    assert_bad_settings_refused(
        BIN,
        &[
            ("ORCHESTRATOR_MAX_ATTEMPTS", "zero"),
            ("ORCHESTRATOR_MAX_ATTEMPTS", "0"),
            ("ORCHESTRATOR_STEP_TIMEOUT_MS", "0"),
            ("ORCHESTRATOR_MAX_STEP_TIMEOUT_MS", "1"),
            ("ORCHESTRATOR_HTTP_ADDR", "localhost"),
            ("QUEUE_TYPE", "stream"),
            ("AMQP_URL", "http://guest:hunter2@127.0.0.1/"),
            ("ORCHESTRATOR_DATABASE_URL", "mysql://x"),
            ("ORCHESTRATOR_ADMIN_TOKENS", "alice=short"),
            ("PREFETCH", "-1"),
            ("INBOX_RETENTION_HOURS", "0"),
            ("INBOX_RETENTION_HOURS", "18446744073709551615"),
            ("ORCHESTRATOR_STEP_TIMEOUT_MS", "10000000000000000"),
            ("ORCHESTRATOR_MAX_STEP_TIMEOUT_MS", "10000000000000000"),
            ("RETRY_DELAY_MS", "99999999999"),
            ("HTTP_MAX_BODY_BYTES", "1023"),
            ("ORCHESTRATOR_HTTP_MAX_BODY_BYTES", "64k"),
            ("HTTP_REQUEST_TIMEOUT_MS", "0"),
            ("HTTP_REQUEST_TIMEOUT_MS", "-5"),
            ("HTTP_CONCURRENCY_LIMIT", "0"),
            ("HTTP_CONCURRENCY_LIMIT", "100000000000"),
            // Larger than HTTP_MAX_BODY_BYTES (64 KiB by default), so it could never apply.
            ("ORCHESTRATOR_MAX_BODY_BYTES", "1048576"),
        ],
    );
}

#[test]
fn an_unreachable_database_is_a_clear_error() {
    let (code, text) =
        run_binary(BIN, &[("ORCHESTRATOR_DATABASE_URL", "postgres://postgres:hunter2@127.0.0.1:1/nowhere")]);
    assert_ne!(code, 0);
    assert!(text.contains("cannot connect to PostgreSQL"), "{text}");
    assert!(!text.contains("hunter2") && !text.contains("panicked"), "{text}");
}

#[tokio::test]
async fn a_database_that_refuses_connections_is_named_in_its_own_words() {
    // A role PostgreSQL admits no connection for: what a full server says ("too many clients")
    // reaches the operator the same way, not as a pool timeout.
    let role = infra::testing::unique_name("full");
    let admin = sqlx::PgPool::connect("postgres://postgres@127.0.0.1:5432/postgres").await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE ROLE \"{role}\" LOGIN CONNECTION LIMIT 0")))
        .execute(&admin)
        .await
        .unwrap();
    let url = format!("postgres://{role}@127.0.0.1:5432/postgres");
    let (code, text) =
        tokio::task::spawn_blocking(move || run_binary(BIN, &[("ORCHESTRATOR_DATABASE_URL", &url)])).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP ROLE \"{role}\""))).execute(&admin).await.unwrap();
    assert_ne!(code, 0);
    assert!(text.contains("too many connections for role"), "{text}");
    assert!(!text.contains("pool timed out") && !text.contains("panicked"), "{text}");
}
