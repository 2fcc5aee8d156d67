//! The end-to-end harness: a whole platform per test, in-process, on the real services.
//!
//! [`TestPlatform::new`] makes a fresh RabbitMQ vhost with one least-privilege broker user per
//! process (the generated `users.json`, see [`TestUsers`]) and one fresh database per service; then
//! any number of instances of each process are started from the same `build` functions the
//! binaries use, each on port 0, and stopped (gracefully, through their shutdown token) on demand.
//! Everything is removed when the platform is dropped. The scenarios live in `tests/tests/`; the
//! load generator, `saga-bench`, in `tests/bench/` (its own test runs it against this harness).
//!
//! Layout: this file (the in-process platform); [`cluster`] (the six real binaries as OS
//! processes on a platform's vhost and databases, any number of instances, killed and restarted at
//! will); [`faults`] (the fault-injection suite, the `saga-faults` binary's logic); [`otlp`] (a
//! trace receiver for the tests of tracing); [`wait`] (waiting on a condition without panicking).

pub mod cluster;
pub mod faults;
pub mod otlp;
pub mod wait;

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use contracts::topology::Role;
use infra::config::Settings;
use infra::testing::{TestDb, TestUsers, TestVhost, eventually};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The five processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Orchestrator,
    Inventory,
    Payment,
    Shipping,
    Notification,
}

impl Service {
    pub const ALL: [Service; 5] =
        [Service::Orchestrator, Service::Inventory, Service::Payment, Service::Shipping, Service::Notification];

    pub fn name(self) -> &'static str {
        match self {
            Service::Orchestrator => "orchestrator",
            Service::Inventory => "inventory",
            Service::Payment => "payment",
            Service::Shipping => "shipping",
            Service::Notification => "notification",
        }
    }

    /// Its part of the broker topology, and its broker user.
    pub fn role(self) -> Role {
        match self {
            Service::Orchestrator => Role::Orchestrator,
            Service::Inventory => Role::Inventory,
            Service::Payment => Role::Payment,
            Service::Shipping => Role::Shipping,
            Service::Notification => Role::Notification,
        }
    }
}

/// Knobs tests turn. Defaults are the production defaults, except shorter step deadlines.
#[derive(Debug, Clone)]
pub struct TestConfig {
    pub step_timeout: Duration,
    pub max_step_timeout: Duration,
    pub max_attempts: u32,
    pub max_compensation_attempts: u32,
    pub prefetch: u16,
    /// Breaker and retries of payment's gateway and shipping's carrier.
    pub dependency_policy: infra::resilience::Policy,
    /// Delay of a delayed-retry round and of a deferral (circuit open).
    pub retry_delay: Duration,
    pub max_retry_rounds: u32,
    /// `ORCHESTRATOR_ADMIN_TOKENS` of the orchestrators.
    pub admin_tokens: &'static str,
    pub queue_type: contracts::topology::QueueType,
    /// `ORCHESTRATOR_SNAPSHOT_EVERY`: a saga's state is snapshotted every this many events.
    pub snapshot_every: u32,
}

impl TestConfig {
    /// Outside failures reach the dead-letter queue fast: a breaker that never opens, two quick
    /// in-process tries, one short delayed round.
    pub fn fast_dead_letters() -> TestConfig {
        TestConfig {
            dependency_policy: infra::resilience::Policy {
                breaker_failures: 1000,
                attempts: 2,
                retry_base: Duration::from_millis(5),
                retry_max: Duration::from_millis(10),
                ..infra::resilience::Policy::default()
            },
            retry_delay: Duration::from_millis(50),
            max_retry_rounds: 1,
            ..TestConfig::default()
        }
    }
}

impl Default for TestConfig {
    fn default() -> Self {
        TestConfig {
            step_timeout: Duration::from_secs(10),
            max_step_timeout: Duration::from_secs(30),
            max_attempts: 3,
            max_compensation_attempts: 10,
            prefetch: 4,
            dependency_policy: infra::resilience::Policy {
                breaker_open_min: Duration::from_millis(300),
                breaker_open_max: Duration::from_millis(600),
                retry_base: Duration::from_millis(10),
                retry_max: Duration::from_millis(50),
                ..infra::resilience::Policy::default()
            },
            retry_delay: Duration::from_millis(200),
            max_retry_rounds: 5,
            admin_tokens: "alice=alice-secret-token",
            queue_type: contracts::topology::QueueType::Classic,
            snapshot_every: 10,
        }
    }
}

struct Proc {
    service: Service,
    addr: SocketAddr,
    token: CancellationToken,
    handle: JoinHandle<std::io::Result<()>>,
}

struct Databases {
    orchestrator: TestDb,
    inventory: TestDb,
    payment: TestDb,
    shipping: TestDb,
    notification: TestDb,
}

impl Databases {
    fn get(&self, s: Service) -> &TestDb {
        match s {
            Service::Orchestrator => &self.orchestrator,
            Service::Inventory => &self.inventory,
            Service::Payment => &self.payment,
            Service::Shipping => &self.shipping,
            Service::Notification => &self.notification,
        }
    }
}

/// One isolated platform: its vhost, its databases, the simulated outside systems, and the
/// processes started on them.
pub struct TestPlatform {
    pub config: TestConfig,
    /// The simulated payment gateway and carrier: turn their knobs to inject failures.
    pub gateway: outside::Sim,
    pub carrier: outside::Sim,
    gateway_url: String,
    carrier_url: String,
    outside_token: CancellationToken,
    pub http: reqwest::Client,
    procs: Mutex<Vec<Proc>>,
    dbs: Databases,
    /// Each process connects as its own least-privilege broker user, as in the compose stack.
    pub users: TestUsers,
    pub vhost: TestVhost,
}

impl TestPlatform {
    /// A fresh vhost and databases; no process yet.
    pub async fn new(config: TestConfig) -> TestPlatform {
        // Every platform of a test binary shares one subscriber, kept (and never flushed) for good.
        static TELEMETRY: std::sync::OnceLock<Option<infra::telemetry::Telemetry>> = std::sync::OnceLock::new();
        TELEMETRY.get_or_init(|| infra::telemetry::init("e2e").ok());
        let (vhost, o, i, p, s, n) = tokio::join!(
            TestVhost::create("e2e"),
            TestDb::create("orch"),
            TestDb::create("inv"),
            TestDb::create("pay"),
            TestDb::create("ship"),
            TestDb::create("notif"),
        );
        let users = TestUsers::create(&vhost).await;
        let gateway =
            outside::Server::bind("gateway", "127.0.0.1:0".parse().expect("addr")).await.expect("gateway binds");
        let carrier =
            outside::Server::bind("carrier", "127.0.0.1:0".parse().expect("addr")).await.expect("carrier binds");
        let (gateway_url, carrier_url) =
            (format!("http://{}", gateway.local_addr()), format!("http://{}", carrier.local_addr()));
        let (gateway_sim, carrier_sim) = (gateway.sim.clone(), carrier.sim.clone());
        let outside_token = CancellationToken::new();
        tokio::spawn(gateway.run(outside_token.clone()));
        tokio::spawn(carrier.run(outside_token.clone()));
        TestPlatform {
            config,
            gateway: gateway_sim,
            carrier: carrier_sim,
            gateway_url,
            carrier_url,
            outside_token,
            http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("http client"),
            procs: Mutex::new(Vec::new()),
            dbs: Databases { orchestrator: o, inventory: i, payment: p, shipping: s, notification: n },
            users,
            vhost,
        }
    }

    /// A platform with one instance of every process running.
    pub async fn running(config: TestConfig) -> TestPlatform {
        let p = TestPlatform::new(config).await;
        p.start_all(1).await;
        p
    }

    /// Start `instances` of every process: the participants first (nothing flows before an
    /// order, and each declares its own queues), then the orchestrators, whose consistency auditor
    /// then knows where the participants answer.
    pub async fn start_all(&self, instances: usize) {
        let participants_first = Service::ALL.iter().skip(1).chain(Service::ALL.iter().take(1));
        for service in participants_first {
            for _ in 0..instances {
                self.start(*service).await;
            }
        }
    }

    /// Where an orchestrator's consistency auditor reads: the participants running now (the
    /// defaults for those not started yet) and this platform's simulated outside systems.
    fn audit_urls(&self) -> orchestrator::auditor::AuditUrls {
        let running = |s: Service, default: &str| self.urls(s).into_iter().next().unwrap_or_else(|| default.to_owned());
        orchestrator::auditor::AuditUrls {
            inventory: running(Service::Inventory, "http://127.0.0.1:8081"),
            payment: running(Service::Payment, "http://127.0.0.1:8082"),
            shipping: running(Service::Shipping, "http://127.0.0.1:8083"),
            gateway: Some(self.gateway_url.clone()),
            carrier: Some(self.carrier_url.clone()),
        }
    }

    /// The AMQP URL `service` connects with: its own broker user on this platform's vhost. (Tests
    /// that inject or watch messages use `vhost.amqp_url`, the all-permitted guest.)
    pub fn amqp_url(&self, service: Service) -> &str {
        self.users.amqp_url(service.role())
    }

    /// Common settings for `service` on this platform's vhost (as its own broker user) and database.
    pub fn settings(&self, service: Service) -> Settings {
        let mut s = Settings::for_tests(service.name(), self.amqp_url(service), &self.dbs.get(service).url);
        s.prefetch = self.config.prefetch;
        s.retry_delay = self.config.retry_delay;
        s.max_retry_rounds = self.config.max_retry_rounds;
        s.queue_type = self.config.queue_type;
        s
    }

    /// Base URL of the simulated payment gateway (its `/admin/stats`, `/authorizations`).
    pub fn gateway_url(&self) -> &str {
        &self.gateway_url
    }

    /// URL of a service's database (tests inspect participant tables directly).
    pub fn database_url(&self, service: Service) -> &str {
        &self.dbs.get(service).url
    }

    /// Start one more instance of `service`; returns its HTTP address.
    pub async fn start(&self, service: Service) -> SocketAddr {
        let common = self.settings(service);
        let app = match service {
            Service::Orchestrator => {
                let mut s =
                    orchestrator::settings::OrchestratorSettings::for_tests(&common.amqp_url, &common.database_url);
                s.common = common;
                s.step_timeout = self.config.step_timeout;
                s.max_step_timeout = self.config.max_step_timeout;
                s.max_attempts = self.config.max_attempts;
                s.max_compensation_attempts = self.config.max_compensation_attempts;
                s.scan_interval = Duration::from_millis(50).min(self.config.step_timeout);
                s.admin_operators =
                    orchestrator::admin::Operators::parse(self.config.admin_tokens, "ORCHESTRATOR_ADMIN_TOKENS")
                        .expect("admin tokens");
                s.audit = self.audit_urls();
                s.snapshot_every = self.config.snapshot_every;
                orchestrator::build(s).await
            }
            Service::Inventory => inventory::build(inventory::InventorySettings::for_tests(common)).await,
            Service::Payment => {
                let mut s = payment::PaymentSettings::for_tests(common, &self.gateway_url);
                s.gateway_policy = self.config.dependency_policy;
                payment::build(s).await
            }
            Service::Shipping => {
                let mut s = shipping::ShippingSettings::for_tests(common, &self.carrier_url);
                s.carrier_policy = self.config.dependency_policy;
                shipping::build(s).await
            }
            Service::Notification => notification::build(notification::NotificationSettings::for_tests(common)).await,
        }
        .unwrap_or_else(|e| panic!("{} failed to start: {e}", service.name()));
        let addr = app.local_addr();
        let token = CancellationToken::new();
        let handle = tokio::spawn(app.run(token.clone()));
        self.procs.lock().expect("procs").push(Proc { service, addr, token, handle });
        addr
    }

    /// Stop every instance of `service`, gracefully, and wait until they are gone.
    pub async fn stop(&self, service: Service) {
        let stopping: Vec<Proc> = {
            let mut procs = self.procs.lock().expect("procs");
            let (stop, keep) = procs.drain(..).partition(|p| p.service == service);
            *procs = keep;
            stop
        };
        for p in stopping {
            p.token.cancel();
            match tokio::time::timeout(Duration::from_secs(30), p.handle).await {
                Ok(Ok(Ok(()))) => {}
                other => panic!("{} did not stop cleanly: {other:?}", service.name()),
            }
        }
    }

    /// Stop everything (call at the end of a test; dropping also cleans up, less gracefully).
    pub async fn shutdown(self) {
        for s in Service::ALL {
            self.stop(s).await;
        }
        self.outside_token.cancel();
    }

    /// Base URL of the first running instance of `service`.
    pub fn url(&self, service: Service) -> String {
        let procs = self.procs.lock().expect("procs");
        let p =
            procs.iter().find(|p| p.service == service).unwrap_or_else(|| panic!("{} is not running", service.name()));
        format!("http://{}", p.addr)
    }

    /// Base URLs of every running instance of `service`.
    pub fn urls(&self, service: Service) -> Vec<String> {
        let procs = self.procs.lock().expect("procs");
        procs.iter().filter(|p| p.service == service).map(|p| format!("http://{}", p.addr)).collect()
    }

    /// `POST /orders` on the first orchestrator.
    pub async fn submit(&self, order: &Value, idempotency_key: Option<&str>) -> reqwest::Response {
        self.submit_to(&self.url(Service::Orchestrator), order, idempotency_key).await
    }

    pub async fn submit_to(&self, base: &str, order: &Value, idempotency_key: Option<&str>) -> reqwest::Response {
        let mut req = self.http.post(format!("{base}/orders")).json(order);
        if let Some(k) = idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        req.send().await.expect("POST /orders")
    }

    /// Submit and return the new saga's id (asserting 202).
    pub async fn start_saga(&self, order: &Value) -> Uuid {
        let resp = self.submit(order, None).await;
        assert_eq!(resp.status().as_u16(), 202, "POST /orders: {}", resp.text().await.unwrap_or_default());
        let body: Value = resp.json().await.expect("json");
        body["saga_id"].as_str().and_then(|s| Uuid::parse_str(s).ok()).expect("saga_id")
    }

    /// `GET /sagas/{id}`.
    pub async fn saga(&self, id: Uuid) -> Value {
        let resp =
            self.http.get(format!("{}/sagas/{id}", self.url(Service::Orchestrator))).send().await.expect("GET /sagas");
        assert!(resp.status().is_success(), "GET /sagas/{id}: {}", resp.status());
        resp.json().await.expect("json")
    }

    /// Wait until the saga's status is `status`; returns the saga.
    pub async fn wait_for_status(&self, id: Uuid, status: &str, timeout: Duration) -> Value {
        let what = format!("saga {id} to reach {status}");
        eventually(&what, timeout, || async {
            let s = self.saga(id).await;
            (s["status"] == status).then_some(s)
        })
        .await
    }

    /// Wait until the saga satisfies `pred`.
    pub async fn wait_for(&self, id: Uuid, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        eventually(what, timeout, || async {
            let s = self.saga(id).await;
            pred(&s).then_some(s)
        })
        .await
    }

    /// `(on_hand, reserved)` of a SKU from inventory's `GET /stock/{sku}`.
    pub async fn stock(&self, sku: &str) -> (i64, i64) {
        let v: Value = self
            .http
            .get(format!("{}/stock/{sku}", self.url(Service::Inventory)))
            .send()
            .await
            .expect("GET /stock")
            .json()
            .await
            .expect("json");
        (v["on_hand"].as_i64().expect("on_hand"), v["reserved"].as_i64().expect("reserved"))
    }

    /// Wait until at least one notification is recorded for an order; returns them.
    pub async fn wait_for_notifications(&self, order_id: Uuid, timeout: Duration) -> Vec<Value> {
        eventually(&format!("a notification for {order_id}"), timeout, || async {
            let n = self.notifications(order_id).await;
            (!n.is_empty()).then_some(n)
        })
        .await
    }

    /// Notifications recorded for an order.
    pub async fn notifications(&self, order_id: Uuid) -> Vec<Value> {
        let v: Value = self
            .http
            .get(format!("{}/notifications?order_id={order_id}", self.url(Service::Notification)))
            .send()
            .await
            .expect("GET /notifications")
            .json()
            .await
            .expect("json");
        v.as_array().cloned().unwrap_or_default()
    }
}

/// The bearer token of `alice`, the operator every test platform knows (see [`TestConfig`]).
pub const OPERATOR_TOKEN: &str = "Bearer alice-secret-token";

impl TestPlatform {
    /// `GET` an operator route of the first orchestrator, as alice.
    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        let url = format!("{}{path}", self.url(Service::Orchestrator));
        self.http.get(url).header("authorization", OPERATOR_TOKEN).send().await.expect("GET admin")
    }

    /// `POST` a JSON body to an operator route of the first orchestrator, as alice.
    pub async fn admin_post(&self, path: &str, body: Value) -> reqwest::Response {
        let url = format!("{}{path}", self.url(Service::Orchestrator));
        self.http.post(url).header("authorization", OPERATOR_TOKEN).json(&body).send().await.expect("POST admin")
    }

    /// The JSON answer of `GET url` (any status).
    pub async fn get_json(&self, url: &str) -> Value {
        self.http.get(url).send().await.expect("GET").json().await.expect("a JSON answer")
    }

    /// Depth of a dead-letter queue, from `GET /admin/dlq`.
    pub async fn dlq_depth(&self, queue: &str) -> u64 {
        let v: Value = self.admin_get("/admin/dlq").await.json().await.expect("json");
        let queues = v["queues"].as_array().cloned().unwrap_or_default();
        queues.iter().find(|q| q["queue"] == queue).and_then(|q| q["depth"].as_u64()).expect("a dead-letter queue")
    }
}

/// Current value of a metric series (`name{labels}`) on a process's `/metrics`; 0 if absent.
pub async fn metric(http: &reqwest::Client, base: &str, series: &str) -> f64 {
    let text = http.get(format!("{base}/metrics")).send().await.expect("GET /metrics").text().await.expect("text");
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse::<f64>().ok())).unwrap_or(0.0)
}

/// A valid order in the documented client format.
pub fn order(sku: &str, quantity: u32, unit_price_cents: i64, country: &str) -> Value {
    json!({
        "customer_id": "c-42",
        "currency": "EUR",
        "items": [{"sku": sku, "quantity": quantity, "unit_price_cents": unit_price_cents}],
        "shipping_address": {
            "name": "Ada Lovelace",
            "line1": "1 Main St",
            "city": "Berlin",
            "postal_code": "10115",
            "country": country
        }
    })
}

/// Names of the steps of a saga status document, with their status.
pub fn steps(saga: &Value) -> Vec<(String, String)> {
    saga["steps"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| (s["name"].as_str().unwrap_or("").to_owned(), s["status"].as_str().unwrap_or("").to_owned()))
                .collect()
        })
        .unwrap_or_default()
}
