//! `saga-faults`: the fault-injection suite. Starts the six binaries as OS processes on a fresh
//! vhost and databases per scenario, drives orders, injects the scenario's faults, settles, audits,
//! and prints a table (`--json`: one JSON object per scenario). `saga-faults --help` lists the
//! flags; `--list` the scenarios. The logic is in `e2e::faults`.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    // The harness's own process logs nothing (its in-process helpers would write to standard
    // output, where --json prints); the processes it starts write their own log files.
    let _ = tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::default());
    e2e::faults::main(e2e::faults::cli::Args::parse()).await
}
