//! The fault-injection suite, `saga-faults`: the six binaries as separate OS processes
//! ([`crate::cluster`]) on a fresh vhost and databases per scenario, a steady stream of orders that
//! complete and compensate, the faults of the scenario, then wait until every saga has ended and
//! every queue and outbox is empty (bounded), and ask the consistency auditor. Each scenario prints
//! what the clients saw, how the sagas ended, the duplicates the processes suppressed, the
//! auditor's violations and the time to drain; it passes with nothing stuck, missing, failed,
//! waiting for an operator or inconsistent ([`summary::failures`]).
//!
//! Layout: [`cli`] (flags, scenario selection, the quick and full profiles), [`scenario`] (the
//! scenarios and their settings), [`load`] (the order stream), [`inject`] (the faults, one function
//! per scenario), [`shared`] (stopping and starting the machine's broker and database, with a guard
//! that starts them again), [`replay`] (the duplicating publisher), [`observe`] (the processes'
//! metrics), [`settle`] (quiet, the end state, the audit), [`expect`] (each scenario's own
//! expectations), [`summary`] (accounting, the pass rule, the table), [`run`] (one scenario end to
//! end). The binary, `src/bin/saga-faults.rs`, calls [`main`].

pub mod cli;
pub mod expect;
pub mod inject;
pub mod load;
pub mod observe;
pub mod replay;
pub mod run;
pub mod scenario;
pub mod settle;
pub mod shared;
pub mod summary;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use cli::{Args, Profile};
use run::Setup;
use scenario::Scenario;
use summary::Summary;

/// Run what `args` asks; the exit status: 0 every scenario passed, 1 one did not (or the run could
/// not start), 2 bad flags, 130 interrupted (the broker and the database are started again first).
pub async fn main(args: Args) -> ExitCode {
    if args.list {
        for s in Scenario::ALL {
            println!("{:<18} {}", s.name(), s.about());
        }
        return ExitCode::SUCCESS;
    }
    let scenarios = match cli::select(&args.scenarios) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("saga-faults: {e}");
            return ExitCode::from(2);
        }
    };
    let setup = match setup(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("saga-faults: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    tokio::select! {
        summaries = run_all(&scenarios, &setup, args.json) => report(&summaries, args.json),
        signal = interrupted() => {
            eprintln!("saga-faults: {signal}: stopped (processes killed; broker and database started if they were down)");
            ExitCode::from(130)
        }
    }
}

/// The profile, where the binaries are (all six must be there), where the logs go.
fn setup(args: &Args) -> anyhow::Result<Setup> {
    let profile = Profile::from_args(args, rand::random());
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => crate::cluster::bin_dir()?,
    };
    for binary in ["outside", "orchestrator", "inventory", "payment", "shipping", "notification"] {
        let path = bin_dir.join(binary);
        anyhow::ensure!(
            path.is_file(),
            "{} is missing: build the binaries first (cargo build --bins, --release for target/release)",
            path.display()
        );
    }
    let run_id = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let log_dir = match &args.log_dir {
        Some(d) => d.join(&run_id),
        None => default_log_root(&bin_dir).join(&run_id),
    };
    std::fs::create_dir_all(&log_dir).with_context(|| format!("create {}", log_dir.display()))?;
    Ok(Setup { profile, bin_dir, log_dir, run_id })
}

/// `target/saga-faults` for binaries in `target/<profile>`.
fn default_log_root(bin_dir: &Path) -> PathBuf {
    bin_dir.parent().map_or_else(|| std::env::temp_dir().join("saga-faults"), |t| t.join("saga-faults"))
}

async fn run_all(scenarios: &[Scenario], setup: &Setup, json: bool) -> Vec<Summary> {
    let p = &setup.profile;
    eprintln!(
        "saga-faults: {} scenario(s), seed {}, faults for {:?} at {} orders/s (at most {} per scenario), logs in {}",
        scenarios.len(),
        p.seed,
        p.window,
        p.rate,
        p.max_orders,
        setup.log_dir.display()
    );
    let shared: Vec<&str> = scenarios.iter().filter(|s| s.touches_shared_services()).map(|s| s.name()).collect();
    if !shared.is_empty() {
        eprintln!(
            "saga-faults: {} stop the machine's shared broker or database: other tests break meanwhile",
            shared.join(", ")
        );
    }
    let mut summaries = Vec::new();
    for (i, s) in scenarios.iter().enumerate() {
        eprintln!("==> {}: {}", s.name(), s.about());
        let summary = run::scenario(*s, i, setup).await;
        eprintln!(
            "    {} in {:.0} s: {} accepted, {} completed, {} compensated{}",
            if summary.passed { "passed" } else { "FAILED" },
            summary.elapsed_s,
            summary.accepted,
            summary.completed,
            summary.compensated,
            summary.failures.iter().map(|f| format!("; {f}")).collect::<String>()
        );
        if json {
            println!("{}", serde_json::to_string(&summary).unwrap_or_default());
        }
        summaries.push(summary);
    }
    summaries
}

/// Print the table (to standard error with `--json`); the exit status.
fn report(summaries: &[Summary], json: bool) -> ExitCode {
    let table = summary::table(summaries);
    if json {
        eprintln!("\n{table}");
    } else {
        println!("\n{table}");
    }
    let failed: Vec<&str> = summaries.iter().filter(|s| !s.passed).map(|s| s.scenario.as_str()).collect();
    if failed.is_empty() {
        eprintln!("saga-faults: every scenario passed");
        ExitCode::SUCCESS
    } else {
        eprintln!("saga-faults: FAILED: {}", failed.join(", "));
        ExitCode::FAILURE
    }
}

/// The first of Ctrl-C and SIGTERM.
async fn interrupted() -> &'static str {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "interrupted";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "interrupted",
        _ = term.recv() => "terminated",
    }
}
