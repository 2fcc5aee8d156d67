//! The real binaries, as `infra/dev up` runs them: six processes configured only through
//! environment variables, on this test's own vhost and databases. An order submitted over HTTP
//! completes across them, and SIGTERM stops every one of them cleanly (exit status 0).
//!
//! The other end-to-end tests start the same `build` functions in-process (faster, and they can
//! stop and start single services); this one proves the `main.rs` wiring, the environment
//! configuration and the signal handling that only a real process has.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use e2e::{Service, TestConfig, TestPlatform, order};
use infra::testing::eventually;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

/// A child process that is killed if the test fails before it is stopped.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where cargo put this package's binaries: next to the `deps` directory holding this test.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent().and_then(|deps| deps.parent()).expect("target profile directory").to_path_buf()
}

/// Build the six binaries (a no-op when `cargo nextest run --workspace` already did).
fn build_binaries() {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--bins", "--quiet"]);
    for p in ["orchestrator", "inventory", "payment", "shipping", "notification", "outside"] {
        cmd.args(["-p", p]);
    }
    if bin_dir().file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("run cargo build");
    assert!(status.success(), "cargo build --bins failed");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port").local_addr().expect("addr").port()
}

fn spawn(name: &'static str, envs: &[(String, String)], dir: &std::path::Path) -> Proc {
    let log = dir.join(format!("{name}.log"));
    let out = std::fs::File::create(&log).expect("log file");
    let err = out.try_clone().expect("log file");
    let child = Command::new(bin_dir().join(name))
        .env_clear()
        .env("RUST_LOG", "info")
        .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    Proc { name, child, log }
}

/// The child's exit status, checked until `within` has passed.
async fn exit_status(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            return status;
        }
        assert!(tokio::time::Instant::now() < deadline, "the process did not exit within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn env(k: &str, v: impl Into<String>) -> (String, String) {
    (k.to_owned(), v.into())
}

#[tokio::test]
async fn the_binaries_run_a_saga_and_stop_cleanly_on_sigterm() {
    tokio::task::spawn_blocking(build_binaries).await.expect("build");
    let p = TestPlatform::new(TestConfig::default()).await;
    let dir = std::env::temp_dir().join(format!("saga-processes-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("log dir");

    let (gateway, carrier) = (free_port(), free_port());
    let mut procs = vec![spawn(
        "outside",
        &[
            env("OUTSIDE_GATEWAY_ADDR", format!("127.0.0.1:{gateway}")),
            env("OUTSIDE_CARRIER_ADDR", format!("127.0.0.1:{carrier}")),
        ],
        &dir,
    )];
    let mut urls = Vec::new();
    for service in Service::ALL {
        let (name, prefix) = (service.name(), service.name().to_uppercase());
        let port = free_port();
        let mut envs = vec![
            env("AMQP_URL", p.vhost.amqp_url.clone()),
            env(&format!("{prefix}_DATABASE_URL"), p.database_url(service)),
            env(&format!("{prefix}_HTTP_ADDR"), format!("127.0.0.1:{port}")),
            env("PAYMENT_GATEWAY_URL", format!("http://127.0.0.1:{gateway}")),
            env("SHIPPING_CARRIER_URL", format!("http://127.0.0.1:{carrier}")),
        ];
        if service == Service::Orchestrator {
            envs.push(env("ORCHESTRATOR_ADMIN_TOKENS", "ops=a-long-enough-operator-token"));
        }
        procs.push(spawn(name, &envs, &dir));
        urls.push(format!("http://127.0.0.1:{port}"));
    }
    for url in &urls {
        eventually("ready", WAIT, || async {
            let r = p.http.get(format!("{url}/health/ready")).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
    }

    let orchestrator = &urls[0];
    let r = p.submit_to(orchestrator, &order("SKU-0003", 1, 250, "DE"), None).await;
    assert_eq!(r.status().as_u16(), 202);
    let id = r.json::<Value>().await.expect("json")["saga_id"].as_str().expect("saga_id").to_owned();
    let saga = eventually("saga completes across the processes", WAIT, || async {
        let s: Value = p.http.get(format!("{orchestrator}/sagas/{id}")).send().await.ok()?.json().await.ok()?;
        (s["status"] == "COMPLETED").then_some(s)
    })
    .await;
    assert_eq!(saga["steps"].as_array().expect("steps").len(), 5);

    // SIGTERM every process (participants first, then the orchestrator, then the simulators):
    // each stops its intake, drains, and exits 0.
    for proc in procs.iter_mut().rev() {
        let pid = proc.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
        assert!(sent.success(), "kill -TERM {pid}");
        let status = exit_status(&mut proc.child, Duration::from_secs(30)).await;
        let log = std::fs::read_to_string(&proc.log).unwrap_or_default();
        assert!(status.success(), "{} exited with {status} after SIGTERM:\n{log}", proc.name);
        assert!(!log.contains("panicked"), "{}:\n{log}", proc.name);
    }
    let _ = std::fs::remove_dir_all(&dir);
    p.shutdown().await;
}
