//! The real binaries, as `infra/dev up` runs them: six processes configured only through
//! environment variables, on this test's own vhost and databases. An order submitted over HTTP
//! completes across them, and SIGTERM stops every one of them cleanly (exit status 0). Under
//! outside calls whose answers are lost after they were applied, and `kill -9` of payment and
//! shipping in the middle of the work, every saga ends, nothing stays held at the gateway, nothing
//! is captured or booked twice, and what the outside systems hold matches the sagas.
//!
//! With `LOG_FORMAT=json` and `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at an in-test receiver, every
//! line a binary writes is one JSON object (message lines carry the message's four fields), and an
//! order is one trace across the five processes: the request that started it at the root, each
//! message's handling under the send span of the process that sent it, flushed at SIGTERM. No log
//! file holds an ANSI escape.
//!
//! The other end-to-end tests start the same `build` functions in-process (faster, and they can
//! stop and start single services); this one proves the `main.rs` wiring, the environment
//! configuration and the signal handling that only a real process has (and a process of its own
//! per service, which one global tracing subscriber per process needs).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use e2e::otlp::{OtlpReceiver, ReceivedSpan};
use e2e::{Service, TestConfig, TestPlatform, order};
use infra::testing::eventually;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::Value;
use uuid::Uuid;

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

/// The six binaries running on one test platform's vhost and databases.
struct Cluster {
    /// `outside` first, then [`Service::ALL`] in order.
    procs: Vec<Proc>,
    envs: Vec<Vec<(String, String)>>,
    /// Base URLs of the five platform processes, in [`Service::ALL`] order.
    urls: Vec<String>,
    gateway: String,
    carrier: String,
    dir: PathBuf,
}

impl Cluster {
    /// Start every binary with `extra` environment on top of the wiring, and wait until ready.
    async fn start(p: &TestPlatform, extra: &[(String, String)]) -> Cluster {
        tokio::task::spawn_blocking(build_binaries).await.expect("build");
        let dir = std::env::temp_dir().join(format!("saga-processes-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("log dir");
        let (gateway, carrier) = (free_port(), free_port());
        let mut envs = vec![vec![
            env("OUTSIDE_GATEWAY_ADDR", format!("127.0.0.1:{gateway}")),
            env("OUTSIDE_CARRIER_ADDR", format!("127.0.0.1:{carrier}")),
        ]];
        let mut urls = Vec::new();
        for service in Service::ALL {
            let (prefix, port) = (service.name().to_uppercase(), free_port());
            let mut e = vec![
                env("AMQP_URL", p.amqp_url(service)),
                env(&format!("{prefix}_DATABASE_URL"), p.database_url(service)),
                env(&format!("{prefix}_HTTP_ADDR"), format!("127.0.0.1:{port}")),
                env("PAYMENT_GATEWAY_URL", format!("http://127.0.0.1:{gateway}")),
                env("SHIPPING_CARRIER_URL", format!("http://127.0.0.1:{carrier}")),
                env("ORCHESTRATOR_ADMIN_TOKENS", "ops=a-long-enough-operator-token"),
                // Small pools: PostgreSQL's 100 connections are shared with the rest of the suite.
                env("DB_POOL_SIZE", "4"),
                env("PREFETCH", "4"),
            ];
            e.extend_from_slice(extra);
            envs.push(e);
            urls.push(format!("http://127.0.0.1:{port}"));
        }
        let names = std::iter::once("outside").chain(Service::ALL.map(Service::name));
        let procs = names.zip(&envs).map(|(name, e)| spawn(name, e, &dir)).collect();
        let cluster = Cluster {
            procs,
            envs,
            urls,
            gateway: format!("http://127.0.0.1:{gateway}"),
            carrier: format!("http://127.0.0.1:{carrier}"),
            dir,
        };
        for i in 0..Service::ALL.len() {
            cluster.ready(p, i).await;
        }
        cluster
    }

    async fn ready(&self, p: &TestPlatform, i: usize) {
        let url = &self.urls[i];
        eventually("ready", WAIT, || async {
            let r = p.http.get(format!("{url}/health/ready")).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
    }

    fn index(service: Service) -> usize {
        Service::ALL.iter().position(|s| *s == service).expect("a service")
    }

    /// `kill -9` a platform process, start it again with the same environment, wait until ready.
    async fn crash_and_restart(&mut self, p: &TestPlatform, service: Service) {
        let i = Self::index(service);
        let proc = &mut self.procs[i + 1];
        let pid = proc.child.id().to_string();
        assert!(Command::new("kill").args(["-KILL", &pid]).status().expect("run kill").success());
        let status = exit_status(&mut proc.child, Duration::from_secs(10)).await;
        assert!(!status.success(), "{} was killed", service.name());
        self.procs[i + 1] = spawn(service.name(), &self.envs[i + 1], &self.dir);
        self.ready(p, i).await;
    }

    /// SIGTERM every process (participants first, then the orchestrator, then the simulators):
    /// each stops its intake, drains, and exits 0. Returns what each wrote, by name.
    async fn stop(mut self) -> Vec<(&'static str, String)> {
        let mut logs = Vec::new();
        for proc in self.procs.iter_mut().rev() {
            let pid = proc.child.id().to_string();
            let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
            assert!(sent.success(), "kill -TERM {pid}");
            let status = exit_status(&mut proc.child, Duration::from_secs(30)).await;
            let log = std::fs::read_to_string(&proc.log).unwrap_or_default();
            assert!(status.success(), "{} exited with {status} after SIGTERM:\n{log}", proc.name);
            assert!(!log.contains("panicked"), "{}:\n{log}", proc.name);
            logs.push((proc.name, log));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        logs
    }
}

#[tokio::test]
async fn the_binaries_run_a_saga_and_stop_cleanly_on_sigterm() {
    let p = TestPlatform::new(TestConfig::default()).await;
    let cluster = Cluster::start(&p, &[]).await;
    let orchestrator = &cluster.urls[0];
    let r = p.submit_to(orchestrator, &order("SKU-0003", 1, 250, "DE"), None).await;
    assert_eq!(r.status().as_u16(), 202);
    let id = r.json::<Value>().await.expect("json")["saga_id"].as_str().expect("saga_id").to_owned();
    let saga = eventually("saga completes across the processes", WAIT, || async {
        let s: Value = p.http.get(format!("{orchestrator}/sagas/{id}")).send().await.ok()?.json().await.ok()?;
        (s["status"] == "COMPLETED").then_some(s)
    })
    .await;
    assert_eq!(saga["steps"].as_array().expect("steps").len(), 5);
    for (name, log) in cluster.stop().await {
        assert!(!log.contains('\u{1b}'), "{name} wrote ANSI escapes to a file that is not a terminal:\n{log}");
    }
    p.shutdown().await;
}

#[tokio::test]
async fn an_order_is_one_trace_across_the_binaries_and_every_log_line_is_json() {
    let p = TestPlatform::new(TestConfig::default()).await;
    let otlp = OtlpReceiver::start().await;
    let traced = [
        env("LOG_FORMAT", "json"),
        env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint()),
        // No batch leaves on the processor's timer: what arrives was flushed at SIGTERM.
        env("OTEL_BSP_SCHEDULE_DELAY", "3600000"),
        // No re-send by the timeout scanner on a slow machine: one send per command.
        env("ORCHESTRATOR_STEP_TIMEOUT_MS", "60000"),
    ];
    let cluster = Cluster::start(&p, &traced).await;
    let orchestrator = cluster.urls[0].clone();
    let notification = cluster.urls[Cluster::index(Service::Notification)].clone();
    let r = p.submit_to(&orchestrator, &order("SKU-0003", 1, 250, "DE"), None).await;
    assert_eq!(r.status().as_u16(), 202);
    let id =
        r.json::<Value>().await.expect("json")["saga_id"].as_str().expect("saga_id").parse::<Uuid>().expect("a UUID");
    let saga = eventually("saga completes across the processes", WAIT, || async {
        let s = p.get_json(&format!("{orchestrator}/sagas/{id}")).await;
        (s["status"] == "COMPLETED").then_some(s)
    })
    .await;
    eventually("the customer is notified", WAIT, || async {
        let n = p.get_json(&format!("{notification}/notifications?order_id={id}")).await;
        (!n.as_array()?.is_empty()).then_some(())
    })
    .await;
    assert!(otlp.trace(id).is_empty(), "spans left before shutdown despite OTEL_BSP_SCHEDULE_DELAY");
    let logs = cluster.stop().await;
    assert_one_trace(&otlp.trace(id), &saga);
    assert_json_lines(&logs, id);
    p.shutdown().await;
}

/// The spans of one saga form one tree: the `POST /orders` request at its root, every command and
/// event the orchestrator sent a `send` span with the message's span id, handled under it by the
/// process it was meant for, and every reply's handling under its participant's `send` span.
fn assert_one_trace(trace: &[ReceivedSpan], saga: &Value) {
    let shown = trace
        .iter()
        .map(|s| format!("{:>12} {:<28} {:016x} <- {:?}", s.service, s.name, s.span_id, s.parent_span_id))
        .collect::<Vec<_>>()
        .join("\n");
    for service in Service::ALL {
        assert!(trace.iter().any(|s| s.service == service.name()), "no span of {}:\n{shown}", service.name());
    }
    let roots: Vec<&ReceivedSpan> = trace.iter().filter(|s| s.parent_span_id.is_none()).collect();
    assert_eq!(roots.len(), 1, "one root:\n{shown}");
    assert_eq!((roots[0].service.as_str(), roots[0].name.as_str()), ("orchestrator", "POST /orders"), "{shown}");
    assert_eq!(roots[0].kind, SpanKind::Server);
    let by_id: std::collections::HashMap<u64, &ReceivedSpan> = trace.iter().map(|s| (s.span_id, s)).collect();
    for span in trace {
        let parent = span.parent_span_id.map(|id| by_id.get(&id));
        assert!(!matches!(parent, Some(None)), "the parent of {} is not in the trace:\n{shown}", span.name);
    }
    let sent = saga["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .flat_map(|e| e["sent"].as_array().cloned().unwrap_or_default());
    for message in sent {
        let (id, kind) = (message["message_id"].as_str().expect("id"), message["type"].as_str().expect("type"));
        let span_id = Uuid::parse_str(id).expect("a UUID").as_u128() as u64;
        let send = by_id.get(&span_id).unwrap_or_else(|| panic!("no send span of {kind} {id}:\n{shown}"));
        assert_eq!(
            (send.service.as_str(), send.name.clone(), send.kind),
            ("orchestrator", format!("send {kind}"), SpanKind::Producer)
        );
        let handler =
            if kind.starts_with("order.") { "notification" } else { kind.split('.').next().unwrap_or_default() };
        let handled = trace.iter().any(|s| {
            s.parent_span_id == Some(span_id)
                && s.service == handler
                && s.kind == SpanKind::Consumer
                && s.name == format!("process {kind}")
        });
        assert!(handled, "{handler} handled {kind} under its send span:\n{shown}");
    }
    for reply in trace.iter().filter(|s| s.service == "orchestrator" && s.kind == SpanKind::Consumer) {
        let send = reply.parent_span_id.and_then(|id| by_id.get(&id)).expect("a parent");
        assert_ne!(send.service, "orchestrator", "{shown}");
        assert_eq!((send.kind, send.name.replacen("send", "process", 1)), (SpanKind::Producer, reply.name.clone()));
        assert_eq!(
            reply.attributes.get("saga_id").map(String::as_str),
            Some(saga["saga_id"].as_str().unwrap_or_default())
        );
    }
}

/// Every line of every platform process is one JSON object; those written while handling a
/// message carry its queue, id, type and saga; each process wrote some about this saga.
fn assert_json_lines(logs: &[(&'static str, String)], saga: Uuid) {
    for (name, log) in logs {
        assert!(!log.contains('\u{1b}'), "{name} wrote ANSI escapes to a file that is not a terminal:\n{log}");
        if *name == "outside" {
            continue;
        }
        let mut about_saga = 0;
        for line in log.lines().filter(|l| !l.trim().is_empty()) {
            let value: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {line}"));
            assert!(value.is_object(), "{name}: not one object: {line}");
            let span = &value["span"];
            if span["name"] == "message" {
                for field in ["queue", "message_id", "message_type", "saga_id"] {
                    assert!(span[field].as_str().is_some_and(|v| !v.is_empty()), "{name}: no {field}: {line}");
                }
                about_saga += usize::from(span["saga_id"] == saga.to_string());
            }
        }
        assert!(about_saga > 0, "{name} wrote no line about the saga's messages:\n{log}");
    }
}

/// The order for the `i`th saga of the crash test: most complete; every eighth (from 3) goes
/// to a destination shipping does not serve, every eighth (from 6) is over payment's limit.
fn mixed_order(i: usize) -> Value {
    match i % 8 {
        3 => order("SKU-0001", 1, 300, "AQ"),
        6 => order("SKU-0002", 3, 500_000, "DE"),
        _ => order(&format!("SKU-{:04}", 1 + i % 12), 1, 250, "DE"),
    }
}

#[tokio::test]
async fn lost_outside_answers_and_kill_9_of_payment_and_shipping_leave_nothing_held_or_doubled() {
    let p = TestPlatform::new(TestConfig::default()).await;
    let mut cluster = Cluster::start(&p, &[env("RETRY_DELAY_MS", "200")]).await;
    // Slow enough that a crash finds calls in flight; lossy enough that answers go missing.
    let lossy = serde_json::json!({"ambiguous_rate": 0.3, "latency_ms": 100});
    for sim in [&cluster.gateway, &cluster.carrier] {
        let r = p.http.put(format!("{sim}/admin/behaviour")).json(&lossy).send().await.expect("PUT behaviour");
        assert!(r.status().is_success());
    }
    let orchestrator = cluster.urls[0].clone();
    let mut ids = Vec::new();
    for i in 0..48 {
        let r = p.submit_to(&orchestrator, &mixed_order(i), None).await;
        assert_eq!(r.status().as_u16(), 202);
        ids.push(r.json::<Value>().await.expect("json")["saga_id"].as_str().expect("saga_id").to_owned());
    }
    // Crash payment and shipping while they work, each time once its outside system saw more calls.
    for (service, sim, calls) in [
        (Service::Payment, cluster.gateway.clone(), 4),
        (Service::Shipping, cluster.carrier.clone(), 4),
        (Service::Payment, cluster.gateway.clone(), 30),
        (Service::Shipping, cluster.carrier.clone(), 20),
    ] {
        eventually("the outside system is busy", WAIT, || async {
            (p.get_json(&format!("{sim}/admin/stats")).await["calls"].as_u64()? >= calls).then_some(())
        })
        .await;
        cluster.crash_and_restart(&p, service).await;
    }
    let mut finished = std::collections::BTreeMap::<String, u64>::new();
    for id in &ids {
        let status = eventually("every saga ends", Duration::from_secs(120), || async {
            let s = p.get_json(&format!("{orchestrator}/sagas/{id}")).await;
            let st = s["status"].as_str()?.to_owned();
            matches!(st.as_str(), "COMPLETED" | "COMPENSATED" | "FAILED").then_some(st)
        })
        .await;
        *finished.entry(status).or_default() += 1;
    }
    let completed = finished.get("COMPLETED").copied().unwrap_or(0);
    assert_eq!(finished.get("FAILED"), None, "{finished:?}");
    assert_eq!(completed, 36, "{finished:?}");
    let gateway = p.get_json(&format!("{}/admin/stats", cluster.gateway)).await;
    let carrier = p.get_json(&format!("{}/admin/stats", cluster.carrier)).await;
    assert!(gateway["ambiguous"].as_u64() > Some(0) && carrier["ambiguous"].as_u64() > Some(0), "{gateway} {carrier}");
    assert_eq!(gateway["authorized_open"], 0, "no hold left on a card: {gateway}");
    assert_eq!(gateway["captured"], completed, "{gateway}");
    assert_eq!(carrier["booked"], completed, "{carrier}");
    assert_eq!(carrier["cancelled"], 0, "{carrier}");
    // One authorization per order that reached payment, each captured at most once.
    let auths = p.get_json(&format!("{}/authorizations", cluster.gateway)).await;
    let auths = auths.as_array().expect("a list");
    let keys: std::collections::BTreeSet<&str> = auths.iter().filter_map(|a| a["key"].as_str()).collect();
    assert_eq!(keys.len(), auths.len(), "one authorization per key");
    assert!(auths.len() <= ids.len() - 6, "orders over the limit never reached the gateway");
    cluster.stop().await;
    p.shutdown().await;
}

/// `infra/dev up`, stopped with SIGTERM (so it stops its processes) if the test ends early.
struct DevUp(Child);

impl Drop for DevUp {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
            for _ in 0..200 {
                if !matches!(self.0.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[tokio::test]
async fn infra_dev_up_restarts_a_process_that_dies_and_stops_everything_on_sigterm() {
    tokio::task::spawn_blocking(build_binaries).await.expect("build");
    let p = TestPlatform::new(TestConfig::default()).await;
    let state = std::env::temp_dir().join(format!("saga-dev-up-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&state).expect("state dir");
    let (gateway, carrier) = (free_port(), free_port());
    let mut envs = vec![
        env("DEV_NO_BUILD", "1"),
        env("DEV_BIN_DIR", bin_dir().display().to_string()),
        env("DEV_STATE_DIR", state.display().to_string()),
        env("AMQP_URL", p.vhost.amqp_url.clone()),
        env("OUTSIDE_GATEWAY_ADDR", format!("127.0.0.1:{gateway}")),
        env("OUTSIDE_CARRIER_ADDR", format!("127.0.0.1:{carrier}")),
        env("PAYMENT_GATEWAY_URL", format!("http://127.0.0.1:{gateway}")),
        env("SHIPPING_CARRIER_URL", format!("http://127.0.0.1:{carrier}")),
    ];
    let mut urls = Vec::new();
    for service in Service::ALL {
        let (prefix, port) = (service.name().to_uppercase(), free_port());
        envs.push(env(&format!("{prefix}_DATABASE_URL"), p.database_url(service)));
        envs.push(env(&format!("{prefix}_HTTP_ADDR"), format!("127.0.0.1:{port}")));
        urls.push(format!("http://127.0.0.1:{port}"));
    }
    let output = state.join("up.out");
    let out = std::fs::File::create(&output).expect("output file");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/dev");
    let mut up = DevUp(
        Command::new(&script)
            .arg("up")
            .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("output"))
            .stderr(out)
            .spawn()
            .expect("start infra/dev up"),
    );
    let said = || std::fs::read_to_string(&output).unwrap_or_default();
    eventually("infra/dev up says the platform is ready", WAIT, || async { said().contains("is ready").then_some(()) })
        .await;
    let payment = Cluster::index(Service::Payment);
    let pid_file = state.join("pids/payment.pid");
    let pid = std::fs::read_to_string(&pid_file).expect("payment's pid").trim().to_owned();
    assert!(Command::new("kill").args(["-KILL", &pid]).status().expect("kill").success());
    eventually("the restart is announced", WAIT, || async {
        said().contains("payment (killed by SIGKILL) ended; restarting payment in 1s").then_some(())
    })
    .await;
    eventually("payment is back", WAIT, || async {
        let again = std::fs::read_to_string(&pid_file).ok()?.trim().to_owned();
        let r = p.http.get(format!("{}/health/ready", urls[payment])).send().await.ok()?;
        (again != pid && !again.is_empty() && r.status().is_success()).then_some(())
    })
    .await;
    let r = p.submit_to(&urls[0], &order("SKU-0004", 1, 250, "DE"), None).await;
    assert_eq!(r.status().as_u16(), 202);
    let id = r.json::<Value>().await.expect("json")["saga_id"].as_str().expect("saga_id").to_owned();
    eventually("the saga completes after the restart", WAIT, || async {
        (p.get_json(&format!("{}/sagas/{id}", urls[0])).await["status"] == "COMPLETED").then_some(())
    })
    .await;
    let up_pid = up.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &up_pid]).status().expect("kill").success());
    let status = exit_status(&mut up.0, Duration::from_secs(60)).await;
    assert_eq!(status.code(), Some(143), "{}", said());
    for url in &urls {
        assert!(p.http.get(format!("{url}/health/live")).send().await.is_err(), "{url} still answers after SIGTERM");
    }
    let _ = std::fs::remove_dir_all(&state);
    p.shutdown().await;
}
