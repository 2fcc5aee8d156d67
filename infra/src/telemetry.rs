//! Tracing setup: human-readable lines by default, JSON with `LOG_FORMAT=json`; filter from
//! `RUST_LOG` (default `info`, with the chatty dependencies turned down).

use tracing_subscriber::EnvFilter;

/// Install the global subscriber once; later calls (tests start many apps) are no-ops.
pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,lapin=warn,amq_protocol=warn"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    let _ = if json { builder.json().flatten_event(true).try_init() } else { builder.try_init() };
}
