//! `saga-bench`: parse the flags, run, print the table (stdout, or stderr with `--json`) and,
//! with `--json`, one JSON object as the last line of stdout. Exit status: 0 a clean run, 1 the
//! run itself failed (the platform unreachable, ...), 2 bad flags, 3 a check found a violation.

use std::process::ExitCode;

use clap::Parser;
use saga_bench::{Args, report};

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("saga-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(saga_bench::run(&args)) {
        Ok(report) => {
            if args.json {
                eprint!("{}", report::table(&report));
                println!("{}", report.json());
            } else {
                print!("{}", report::table(&report));
            }
            if report.violations > 0 { ExitCode::from(3) } else { ExitCode::SUCCESS }
        }
        Err(e) => {
            eprintln!("saga-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
