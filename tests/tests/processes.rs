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
//! per service, which one global tracing subscriber per process needs). The harness that runs the
//! binaries is `e2e::cluster`, shared with the fault suite (`saga-faults`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use e2e::cluster::{Cluster, ClusterSpec, Stopped, bin_dir, free_port, wait_exit};
use e2e::otlp::{OtlpReceiver, ReceivedSpan};
use e2e::{Service, TestConfig, TestPlatform, order};
use infra::testing::eventually;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::Value;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);

/// Where the binaries are, built (a no-op when `cargo nextest run --workspace` already did).
async fn binaries() -> PathBuf {
    let dir = bin_dir().expect("the target directory");
    let build = dir.clone();
    tokio::task::spawn_blocking(move || e2e::cluster::build_binaries(&build)).await.expect("build").expect("built");
    dir
}

fn env(k: &str, v: impl Into<String>) -> (String, String) {
    (k.to_owned(), v.into())
}

/// One instance of each binary on the platform, with `extra` environment.
async fn start(p: &TestPlatform, extra: &[(String, String)]) -> Cluster {
    Cluster::start(p, ClusterSpec::new(binaries().await).envs(extra)).await.expect("the binaries start")
}

/// SIGTERM every process: each stops its intake, drains, and exits 0 without a panic. Returns
/// what each wrote, by binary.
async fn stop(cluster: Cluster) -> Vec<(&'static str, String)> {
    let mut logs = Vec::new();
    for Stopped { name, program, status, log } in cluster.stop().await {
        assert!(status.is_some_and(|s| s.success()), "{name} exited with {status:?} after SIGTERM:\n{log}");
        assert!(!log.contains("panicked"), "{name}:\n{log}");
        logs.push((program.binary(), log));
    }
    logs
}

#[tokio::test]
async fn the_binaries_run_a_saga_and_stop_cleanly_on_sigterm() {
    let p = TestPlatform::new(TestConfig::default()).await;
    let cluster = start(&p, &[]).await;
    let orchestrator = &cluster.url(Service::Orchestrator);
    let r = p.submit_to(orchestrator, &order("SKU-0003", 1, 250, "DE"), None).await;
    assert_eq!(r.status().as_u16(), 202);
    let id = r.json::<Value>().await.expect("json")["saga_id"].as_str().expect("saga_id").to_owned();
    let saga = eventually("saga completes across the processes", WAIT, || async {
        let s: Value = p.http.get(format!("{orchestrator}/sagas/{id}")).send().await.ok()?.json().await.ok()?;
        (s["status"] == "COMPLETED").then_some(s)
    })
    .await;
    assert_eq!(saga["steps"].as_array().expect("steps").len(), 5);
    for (name, log) in stop(cluster).await {
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
    let cluster = start(&p, &traced).await;
    let orchestrator = cluster.url(Service::Orchestrator);
    let notification = cluster.url(Service::Notification);
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
    let logs = stop(cluster).await;
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
    let mut cluster = start(&p, &[env("RETRY_DELAY_MS", "200")]).await;
    // Slow enough that a crash finds calls in flight; lossy enough that answers go missing.
    let lossy = serde_json::json!({"ambiguous_rate": 0.3, "latency_ms": 100});
    for sim in [&cluster.gateway, &cluster.carrier] {
        let r = p.http.put(format!("{sim}/admin/behaviour")).json(&lossy).send().await.expect("PUT behaviour");
        assert!(r.status().is_success());
    }
    let orchestrator = cluster.url(Service::Orchestrator);
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
        let instance = cluster.ids(service)[0];
        cluster.crash_and_restart(instance).await.expect("killed and started again");
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
    stop(cluster).await;
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
    let bin_dir = binaries().await;
    let p = TestPlatform::new(TestConfig::default()).await;
    let state = std::env::temp_dir().join(format!("saga-dev-up-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&state).expect("state dir");
    let (gateway, carrier) = (free_port().expect("a port"), free_port().expect("a port"));
    let mut envs = vec![
        env("DEV_NO_BUILD", "1"),
        env("DEV_BIN_DIR", bin_dir.display().to_string()),
        env("DEV_STATE_DIR", state.display().to_string()),
        env("AMQP_URL", p.vhost.amqp_url.clone()),
        env("OUTSIDE_GATEWAY_ADDR", format!("127.0.0.1:{gateway}")),
        env("OUTSIDE_CARRIER_ADDR", format!("127.0.0.1:{carrier}")),
        env("PAYMENT_GATEWAY_URL", format!("http://127.0.0.1:{gateway}")),
        env("SHIPPING_CARRIER_URL", format!("http://127.0.0.1:{carrier}")),
    ];
    let mut urls = Vec::new();
    for service in Service::ALL {
        let (prefix, port) = (service.name().to_uppercase(), free_port().expect("a port"));
        envs.push(env(&format!("{prefix}_DATABASE_URL"), p.database_url(service)));
        envs.push(env(&format!("{prefix}_HTTP_ADDR"), format!("127.0.0.1:{port}")));
        urls.push(format!("http://127.0.0.1:{port}"));
    }
    // The read side (`up` starts it last, reading the orchestrator's feed): its own database and
    // port; its feed token and orchestrator URL are what infra/dev derives.
    let orders_db = infra::testing::TestDb::create("orders").await;
    let orders_port = free_port().expect("a port");
    envs.push(env("ORDERS_DATABASE_URL", orders_db.url.clone()));
    envs.push(env("ORDERS_HTTP_ADDR", format!("127.0.0.1:{orders_port}")));
    urls.push(format!("http://127.0.0.1:{orders_port}"));
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
    let payment = Service::ALL.iter().position(|s| *s == Service::Payment).expect("payment");
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
    let status = wait_exit(&mut up.0, Duration::from_secs(60)).await.expect("infra/dev up exits");
    assert_eq!(status.code(), Some(143), "{}", said());
    for url in &urls {
        assert!(p.http.get(format!("{url}/health/live")).send().await.is_err(), "{url} still answers after SIGTERM");
    }
    let _ = std::fs::remove_dir_all(&state);
    p.shutdown().await;
}
