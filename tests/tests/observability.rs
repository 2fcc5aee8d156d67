//! The operator's dashboards and alerts, proven with the real tools: `promtool` checks the
//! Prometheus config and the alert rules and runs their unit tests, and lints every process's
//! `/metrics`; then a real Prometheus (Debian's package, which `infra/dev test` installs) scrapes a
//! running platform with our `prometheus.yml` and `alerts.yml` while orders complete, compensate,
//! wait on an open breaker, dead-letter and stop in an incident. Every PromQL expression of every
//! Grafana dashboard must parse and return data, every alert rule must evaluate without error over
//! series that exist, and the dead-letter alert must fire. The read side (`orders`) runs beside the
//! platform, reading its orchestrator's feed, so that its dashboard is proven too.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use e2e::{Service, TestConfig, TestPlatform, order};
use infra::resilience::Policy;
use infra::testing::eventually;
use outside::Behaviour;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/deploy").join(path)
}

/// A tool from Debian's `prometheus` package.
fn tool(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("{name} is not installed: `infra/dev test` installs it (Debian: apt-get install prometheus)")
    })
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn the_prometheus_config_and_the_alert_rules_pass_promtool() {
    let promtool = tool("promtool");
    run(Command::new(&promtool).arg("check").arg("config").arg(deploy("prometheus/prometheus.yml")));
    let out = run(Command::new(&promtool).arg("check").arg("rules").arg(deploy("prometheus/alerts.yml")));
    assert!(out.contains("SUCCESS"), "{out}");
    let out = run(Command::new(&promtool).current_dir(deploy("prometheus")).args(["test", "rules", "alerts.test.yml"]));
    assert!(out.contains("SUCCESS"), "{out}");
}

/// A Prometheus on loopback scraping a test platform, removed on drop.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Prometheus {
    /// Our `prometheus.yml` and `alerts.yml`, scraping every second, with target files naming this
    /// platform's processes and the local RabbitMQ's Prometheus plugin.
    async fn start(p: &TestPlatform, read_side: &str) -> Prometheus {
        let dir = std::env::temp_dir().join(format!("saga-prometheus-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(dir.join("targets")).expect("prometheus dir");
        let config = std::fs::read_to_string(deploy("prometheus/prometheus.yml")).expect("prometheus.yml");
        let fast = config
            .replace("scrape_interval: 5s", "scrape_interval: 1s")
            .replace("evaluation_interval: 5s", "evaluation_interval: 1s");
        std::fs::write(dir.join("prometheus.yml"), fast).expect("write config");
        std::fs::copy(deploy("prometheus/alerts.yml"), dir.join("alerts.yml")).expect("copy alerts");
        let mut targets: Vec<(&str, String)> =
            Service::ALL.iter().map(|s| (s.name(), p.url(*s).trim_start_matches("http://").to_owned())).collect();
        targets.push(("rabbitmq", "127.0.0.1:15692".to_owned()));
        targets.push(("orders", read_side.trim_start_matches("http://").to_owned()));
        for (job, target) in targets {
            let file = dir.join("targets").join(format!("{job}.json"));
            std::fs::write(file, json!([{"targets": [target]}]).to_string()).expect("write targets");
        }
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start prometheus");
        let prom = Prometheus { child, dir, url: format!("http://127.0.0.1:{port}") };
        eventually("prometheus ready", WAIT, || async {
            let r = p.http.get(format!("{}/-/ready", prom.url)).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
        prom
    }

    /// The result vector of an instant query; panics if Prometheus cannot parse it.
    async fn query(&self, p: &TestPlatform, expr: &str) -> Vec<Value> {
        let url =
            reqwest::Url::parse_with_params(&format!("{}/api/v1/query", self.url), &[("query", expr)]).expect("url");
        let r = p.http.get(url).send().await.expect("query");
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["status"], "success", "{expr}: {body}");
        body["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

/// Every PromQL expression of every dashboard, with Grafana's variables filled in.
fn dashboard_queries() -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for entry in std::fs::read_dir(deploy("grafana/dashboards")).expect("dashboards") {
        let path = entry.expect("entry").path();
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        let title = dashboard["title"].as_str().unwrap_or("?").to_owned();
        for panel in dashboard["panels"].as_array().expect("panels") {
            assert!(panel["fieldConfig"]["defaults"]["unit"].is_string(), "{title}: a panel without a unit");
            for target in panel["targets"].as_array().expect("targets") {
                let expr = target["expr"].as_str().expect("expr");
                assert!(!expr.contains("[1m]") && !expr.contains("[5m]"), "{title}: use $__rate_interval: {expr}");
                let filled = expr.replace("$__rate_interval", "30s").replace("$job", ".*").replace("$instance", ".*");
                queries.push((format!("{title} / {}", panel["title"].as_str().unwrap_or("?")), filled));
            }
        }
    }
    assert!(queries.len() >= 40, "every dashboard was read: {}", queries.len());
    queries
}

/// The metric names an expression reads (ours, RabbitMQ's, and `up`).
fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with("saga_") || t.starts_with("rabbitmq_") || *t == "up")
        .map(str::to_owned)
        .collect()
}

fn config() -> TestConfig {
    TestConfig {
        step_timeout: Duration::from_secs(1),
        max_step_timeout: Duration::from_secs(2),
        dependency_policy: Policy {
            breaker_failures: 3,
            breaker_open_min: Duration::from_millis(300),
            breaker_open_max: Duration::from_millis(600),
            attempts: 2,
            retry_base: Duration::from_millis(5),
            retry_max: Duration::from_millis(10),
        },
        retry_delay: Duration::from_millis(100),
        max_retry_rounds: 1,
        ..TestConfig::default()
    }
}

async fn terminal(p: &TestPlatform, id: uuid::Uuid) {
    p.wait_for(id, "a terminal status", WAIT, |s| {
        matches!(s["status"].as_str(), Some("COMPLETED" | "COMPENSATED" | "FAILED"))
    })
    .await;
}

/// Orders that complete, compensate, wait on an open breaker, and stop in an incident whose
/// refused command stays dead-lettered.
async fn drive(p: &TestPlatform) {
    for i in 0..8 {
        let id = p.start_saga(&order(&format!("SKU-{:04}", 1 + i), 1, 250, "DE")).await;
        terminal(p, id).await;
    }
    for refused in
        [order("SKU-9999", 1, 100, "DE"), order("SKU-0001", 1, 100, "AQ"), order("SKU-0002", 3, 500_000, "DE")]
    {
        let id = p.start_saga(&refused).await;
        p.wait_for_status(id, "COMPENSATED", WAIT).await;
    }
    p.gateway.set_behaviour(Behaviour { outage: true, ..Behaviour::default() });
    let waiting: Vec<_> = {
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(p.start_saga(&order("SKU-0009", 1, 100, "DE")).await);
        }
        ids
    };
    eventually("the gateway's breaker opens", WAIT, || async {
        let ready = p.get_json(&format!("{}/health/ready", p.url(Service::Payment))).await;
        (ready["checks"]["payment_gateway"]["breaker"] == "open").then_some(())
    })
    .await;
    p.gateway.set_behaviour(Behaviour::default());
    for id in waiting {
        terminal(p, id).await;
    }
    p.gateway.set_behaviour(Behaviour { refused_keys: vec![":capture".into()], ..Behaviour::default() });
    let id = p.start_saga(&order("SKU-0010", 1, 100, "DE")).await;
    p.wait_for(id, "an incident", WAIT, |s| !s["incident"].is_null()).await;
    p.gateway.set_behaviour(Behaviour::default());
    let r = p.admin_post(&format!("/admin/sagas/{id}/retry"), json!({"note": "gateway fixed"})).await;
    assert_eq!(r.status().as_u16(), 200);
    p.wait_for_status(id, "COMPLETED", WAIT).await;
}

#[tokio::test]
async fn dashboards_and_alerts_read_real_data_from_a_running_platform_and_the_dead_letter_alert_fires() {
    let p = TestPlatform::running(config()).await;
    let read_side = ReadSide::start(&p).await;
    let prom = Prometheus::start(&p, &read_side.url).await;
    drive(&p).await;
    // Every process's exposition passes promtool's lint.
    let urls = Service::ALL.iter().map(|s| (s.name(), p.url(*s))).chain([("orders", read_side.url.clone())]);
    for (name, url) in urls {
        let text = p.http.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
        let mut lint = Command::new(tool("promtool"))
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool");
        std::io::Write::write_all(&mut lint.stdin.take().expect("stdin"), text.as_bytes()).expect("write metrics");
        let out = lint.wait_with_output().expect("promtool check metrics");
        let said = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && said.trim().is_empty(), "{name}: promtool check metrics:\n{said}");
    }
    let alerts = eventually("the dead-letter alert fires", WAIT, || async {
        let body = p.get_json(&format!("{}/api/v1/alerts", prom.url)).await;
        let alerts = body["data"]["alerts"].as_array().cloned().unwrap_or_default();
        let fired = alerts.iter().any(|a| {
            a["labels"]["alertname"] == "SagaDeadLetters"
                && a["labels"]["queue"] == "payment.commands.dlq"
                && a["state"] == "firing"
        });
        fired.then_some(alerts)
    })
    .await;
    assert!(!alerts.is_empty());
    for (panel, expr) in dashboard_queries() {
        eventually(&format!("data for {panel}: {expr}"), WAIT, || async {
            (!prom.query(&p, &expr).await.is_empty()).then_some(())
        })
        .await;
    }
    let rules = p.get_json(&format!("{}/api/v1/rules", prom.url)).await;
    let rules: Vec<Value> = rules["data"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect();
    assert_eq!(rules.len(), 11, "every rule of alerts.yml is loaded");
    for rule in &rules {
        let (name, query) = (rule["name"].as_str().unwrap(), rule["query"].as_str().unwrap());
        assert_eq!(rule["health"], "ok", "{name}: {rule}");
        for metric in metric_names(query) {
            assert!(
                !prom.query(&p, &format!("count({metric})")).await.is_empty(),
                "{name} reads {metric}, which has no series"
            );
        }
    }
    drop(prom);
    read_side.stop().await;
    p.shutdown().await;
}

/// The read side on the platform's vhost (as its own broker user) with its own database, reading
/// the platform's orchestrator's feed with an operator's token.
struct ReadSide {
    url: String,
    token: tokio_util::sync::CancellationToken,
    handle: tokio::task::JoinHandle<std::io::Result<()>>,
    _db: infra::testing::TestDb,
}

impl ReadSide {
    async fn start(p: &TestPlatform) -> ReadSide {
        let db = infra::testing::TestDb::create("orders").await;
        let common =
            infra::config::Settings::for_tests("orders", p.users.amqp_url(contracts::topology::Role::Orders), &db.url);
        let operator = p.config.admin_tokens.split(',').next().unwrap_or_default();
        let token = operator.split_once('=').map_or(operator, |(_, t)| t);
        let settings = orders::OrdersSettings::for_tests(
            common,
            &p.url(Service::Orchestrator),
            Some(token),
            p.config.admin_tokens,
        );
        let app = orders::build(settings).await.expect("orders starts");
        let url = format!("http://{}", app.local_addr());
        let (token, handle) = infra::testing::spawn_app(app);
        ReadSide { url, token, handle, _db: db }
    }

    async fn stop(self) {
        self.token.cancel();
        self.handle.await.expect("orders ran").expect("orders stopped cleanly");
    }
}
