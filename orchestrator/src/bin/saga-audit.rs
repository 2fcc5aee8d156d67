//! `saga-audit`: ask a running orchestrator's consistency auditor (`GET /admin/audit/consistency`)
//! whether every participant and outside system agrees with the sagas, and print what it found.
//! Exit status: 0 when nothing disagrees, 1 when something does, 2 when the audit could not run.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use serde_json::Value;

/// Check that every participant and outside system agrees with the sagas.
#[derive(Debug, Parser)]
#[command(name = "saga-audit", version)]
struct Args {
    /// The orchestrator's base URL.
    #[arg(long, env = "SAGA_AUDIT_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An operator token (one of ORCHESTRATOR_ADMIN_TOKENS).
    #[arg(long, env = "SAGA_AUDIT_TOKEN", hide_env_values = true)]
    token: String,
    /// Only the sagas finished since this time (RFC 3339, e.g. 2026-12-01T12:00:00Z).
    #[arg(long)]
    since: Option<String>,
    /// Print the auditor's answer as JSON instead of a summary.
    #[arg(long)]
    json: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    match audit(&args).await {
        Ok(report) => print(&report, args.json),
        Err(e) => {
            eprintln!("saga-audit: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn audit(args: &Args) -> anyhow::Result<Value> {
    let mut url = reqwest::Url::parse(&format!("{}/admin/audit/consistency", args.url.trim_end_matches('/')))
        .context("--url is not a URL")?;
    if let Some(since) = &args.since {
        url.query_pairs_mut().append_pair("since", since);
    }
    let resp = reqwest::Client::new()
        .get(url)
        .bearer_auth(&args.token)
        .send()
        .await
        .with_context(|| format!("cannot reach the orchestrator at {}", args.url))?;
    let status = resp.status();
    let body: Value = resp.json().await.context("the orchestrator's answer is not JSON")?;
    if !status.is_success() {
        let detail = body["detail"].as_str().unwrap_or("no detail");
        anyhow::bail!("the orchestrator answered {status}: {detail}");
    }
    Ok(body)
}

fn print(report: &Value, json: bool) -> ExitCode {
    let violations = report["violations"].as_array().cloned().unwrap_or_default();
    if json {
        println!("{report}");
    } else {
        println!("checked {} terminal saga(s): {} violation(s)", report["checked"], violations.len());
        for v in &violations {
            let saga = v["saga_id"].as_str().unwrap_or("(catalog)");
            println!("  {:<28} {saga}  {}", v["kind"].as_str().unwrap_or("?"), v["detail"].as_str().unwrap_or(""));
        }
    }
    if violations.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) }
}
