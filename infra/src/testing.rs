//! Test isolation on the real services: each test gets its own PostgreSQL database(s) and its own
//! RabbitMQ vhost (and, with [`TestUsers`], the platform's least-privilege broker users on it),
//! created here and removed when the guard drops, so tests run in parallel and leave nothing
//! behind. Also [`eventually`], for waiting on a condition instead of sleeping.
//!
//! Admin endpoints come from `TEST_POSTGRES_ADMIN_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), `TEST_AMQP_HOST` (default
//! `guest:guest@127.0.0.1:5672`) and `TEST_RABBITMQ_API` (default `http://127.0.0.1:15672`,
//! the management plugin, user guest).

use std::future::Future;
use std::time::Duration;

use contracts::topology::{QueueType, Role, Topology};
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn admin_url() -> String {
    std::env::var("TEST_POSTGRES_ADMIN_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn rabbit_api() -> String {
    std::env::var("TEST_RABBITMQ_API").unwrap_or_else(|_| "http://127.0.0.1:15672".into())
}

fn amqp_host() -> String {
    std::env::var("TEST_AMQP_HOST").unwrap_or_else(|_| "guest:guest@127.0.0.1:5672".into())
}

/// A short unique name with a readable prefix, e.g. `t_payment_3f2a9c1e`.
pub fn unique_name(prefix: &str) -> String {
    let id = Uuid::new_v4().simple().to_string();
    format!("t_{prefix}_{}", &id[..12])
}

/// A throwaway database, dropped (with its connections) when the guard drops.
#[derive(Debug)]
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn create(prefix: &str) -> TestDb {
        let name = unique_name(prefix);
        let mut admin =
            PgConnection::connect(&admin_url()).await.expect("connect to PostgreSQL as admin (is it running?)");
        // The name is ours (a prefix and hex digits), never user input.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let _ = admin.close().await;
        let base = admin_url();
        let url = match base.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => format!("{base}/{name}"),
        };
        TestDb { name, url }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        run_detached(async move {
            if let Ok(mut admin) = PgConnection::connect(&admin_url()).await {
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")))
                    .execute(&mut admin)
                    .await;
            }
        });
    }
}

/// A throwaway RabbitMQ vhost (guest has all permissions), deleted with everything in it when the
/// guard drops.
#[derive(Debug)]
pub struct TestVhost {
    pub name: String,
    pub amqp_url: String,
}

impl TestVhost {
    pub async fn create(prefix: &str) -> TestVhost {
        let name = unique_name(prefix);
        let client = reqwest::Client::new();
        let api = rabbit_api();
        let put = client
            .put(format!("{api}/api/vhosts/{name}"))
            .basic_auth("guest", Some("guest"))
            .send()
            .await
            .expect("reach the RabbitMQ management API (is the management plugin enabled?)");
        assert!(put.status().is_success(), "create vhost {name}: {}", put.status());
        let perms = client
            .put(format!("{api}/api/permissions/{name}/guest"))
            .basic_auth("guest", Some("guest"))
            .json(&serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}))
            .send()
            .await
            .expect("set vhost permissions");
        assert!(perms.status().is_success(), "permissions on {name}: {}", perms.status());
        let amqp_url = format!("amqp://{}/{name}", amqp_host());
        TestVhost { name, amqp_url }
    }

    /// The management API base URL (for tests that inspect queues).
    pub fn api(&self) -> String {
        rabbit_api()
    }

    /// `GET /api/<path>` on the management API, as guest.
    pub async fn management(&self, path: &str) -> serde_json::Value {
        reqwest::Client::new()
            .get(format!("{}/api/{path}", rabbit_api()))
            .basic_auth("guest", Some("guest"))
            .send()
            .await
            .expect("management API")
            .json()
            .await
            .expect("management API JSON")
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        let name = self.name.clone();
        run_detached(async move {
            let _ = reqwest::Client::new()
                .delete(format!("{}/api/vhosts/{name}", rabbit_api()))
                .basic_auth("guest", Some("guest"))
                .send()
                .await;
        });
    }
}

/// One broker user per [`Role`] with exactly its permissions on a test vhost: the generated
/// `users.json` document ([`Topology::users_json`]) imported through the management API, each
/// user renamed `<vhost>_<role>` (users are global to the broker, vhosts are not) and `guest`
/// left out. The users are deleted when the guard drops.
#[derive(Debug)]
pub struct TestUsers {
    /// Per role: its user's name and AMQP URL.
    users: Vec<(Role, String, String)>,
}

impl TestUsers {
    pub async fn create(vhost: &TestVhost) -> TestUsers {
        let doc = Topology::new(QueueType::Classic, 5).users_json(&vhost.name);
        let ours = |name: &str| Role::ALL.into_iter().find(|r| r.name() == name);
        let rename = |entry: &serde_json::Value, key: &str| {
            let role = entry[key].as_str().and_then(ours)?;
            let mut entry = entry.clone();
            entry[key] = format!("{}_{}", vhost.name, role.name()).into();
            Some(entry)
        };
        let users: Vec<_> = doc["users"].as_array().into_iter().flatten().filter_map(|u| rename(u, "name")).collect();
        let permissions: Vec<_> =
            doc["permissions"].as_array().into_iter().flatten().filter_map(|p| rename(p, "user")).collect();
        assert_eq!(users.len(), Role::ALL.len(), "the users document has a user per role");
        let imported = reqwest::Client::new()
            .post(format!("{}/api/definitions", rabbit_api()))
            .basic_auth("guest", Some("guest"))
            .json(&serde_json::json!({"users": users, "permissions": permissions}))
            .send()
            .await
            .expect("reach the RabbitMQ management API");
        assert!(imported.status().is_success(), "import users: {}", imported.status());
        let host = amqp_host().rsplit_once('@').map_or_else(amqp_host, |(_, host)| host.to_owned());
        let users = Role::ALL
            .into_iter()
            .map(|role| {
                let user = format!("{}_{}", vhost.name, role.name());
                let url = format!("amqp://{user}:{}@{host}/{}", role.dev_password(), vhost.name);
                (role, user, url)
            })
            .collect();
        TestUsers { users }
    }

    /// The AMQP URL of `role`'s user on the vhost.
    pub fn amqp_url(&self, role: Role) -> &str {
        self.users.iter().find(|(r, ..)| *r == role).map(|(.., url)| url.as_str()).unwrap_or_default()
    }

    /// The name of `role`'s broker user (as the management console shows it).
    pub fn user(&self, role: Role) -> &str {
        self.users.iter().find(|(r, ..)| *r == role).map(|(_, user, _)| user.as_str()).unwrap_or_default()
    }
}

impl Drop for TestUsers {
    fn drop(&mut self) {
        let names: Vec<String> = self.users.iter().map(|(_, user, _)| user.clone()).collect();
        run_detached(async move {
            let client = reqwest::Client::new();
            for name in names {
                let _ = client
                    .delete(format!("{}/api/users/{name}", rabbit_api()))
                    .basic_auth("guest", Some("guest"))
                    .send()
                    .await;
            }
        });
    }
}

/// Run cleanup to completion on its own thread and runtime (Drop cannot be async, and may run
/// inside or outside a runtime).
fn run_detached<F: Future<Output = ()> + Send + 'static>(f: F) {
    let handle = std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
            rt.block_on(f);
        }
    });
    let _ = handle.join();
}

/// Poll `check` until it returns `Some`, or panic with `what` after `timeout`. For waiting on a
/// condition (a status reached, a row written), never as a fixed sleep.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for: {what}");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// A queue of our own bound to an exchange, to watch what a service publishes (replies, events).
pub struct Tap {
    _channel: lapin::Channel,
    consumer: lapin::Consumer,
}

impl Tap {
    /// Bind an exclusive, auto-deleted queue to `exchange` with `binding_key`. Declare it before
    /// causing the messages you want to see.
    pub async fn bind(broker: &crate::amqp::Broker, exchange: &str, binding_key: &str) -> Tap {
        use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
        use lapin::types::FieldTable;
        let channel = broker.channel().await.expect("channel");
        let q = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions { exclusive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .expect("declare tap queue");
        channel
            .queue_bind(
                q.name().clone(),
                exchange.into(),
                binding_key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind tap queue");
        let consumer = channel
            .basic_consume(
                q.name().clone(),
                "".into(),
                BasicConsumeOptions { no_ack: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .expect("consume tap queue");
        Tap { _channel: channel, consumer }
    }

    /// The next message, decoded as `M`, within `timeout`.
    pub async fn next<M: contracts::Message>(&mut self, timeout: Duration) -> (contracts::Meta, M) {
        use futures_util::StreamExt;
        let delivery = tokio::time::timeout(timeout, self.consumer.next())
            .await
            .expect("a message within the timeout")
            .expect("tap stream open")
            .expect("delivery");
        let incoming = crate::amqp::Incoming {
            exchange: delivery.exchange.to_string(),
            routing_key: delivery.routing_key.to_string(),
            redelivered: delivery.redelivered,
            properties: delivery.properties.clone(),
            body: delivery.data.clone(),
        };
        incoming.decode::<M>().expect("decodable message")
    }

    /// `true` if nothing arrives within `quiet` (to show that something was *not* sent).
    pub async fn nothing_within(&mut self, quiet: Duration) -> bool {
        use futures_util::StreamExt;
        tokio::time::timeout(quiet, self.consumer.next()).await.is_err()
    }
}

/// A command with the platform's envelope, as the orchestrator sends it, keyed for dedupe.
pub fn command(saga_id: Uuid, command: &contracts::Command, idempotency_key: &str) -> crate::amqp::Outgoing {
    use contracts::Message;
    let meta = contracts::Meta::new(saga_id, command.message_type()).with_idempotency_key(idempotency_key);
    crate::amqp::Outgoing::new(contracts::topology::COMMANDS_EXCHANGE, true, meta, command)
}

/// Run an app until the returned token is cancelled; await the handle to see it stop.
pub fn spawn_app(
    app: crate::platform::Application,
) -> (CancellationToken, tokio::task::JoinHandle<std::io::Result<()>>) {
    let token = CancellationToken::new();
    let handle = tokio::spawn(app.run(token.clone()));
    (token, handle)
}

/// Take one message from `queue` (acknowledged at once), if there is one.
pub async fn get_message(broker: &crate::amqp::Broker, queue: &str) -> Option<crate::amqp::Incoming> {
    let ch = broker.channel().await.expect("channel");
    let msg = ch.basic_get(queue.into(), lapin::options::BasicGetOptions { no_ack: true }).await.expect("basic.get")?;
    Some(crate::amqp::Incoming {
        exchange: msg.delivery.exchange.to_string(),
        routing_key: msg.delivery.routing_key.to_string(),
        redelivered: msg.delivery.redelivered,
        properties: msg.delivery.properties.clone(),
        body: msg.delivery.data.clone(),
    })
}

/// Run a service binary with only `envs` set (plus a quiet log and an ephemeral port); its exit
/// code and everything it printed. For testing how it refuses bad configuration.
pub fn run_binary(path: &str, envs: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = std::process::Command::new(path);
    cmd.env_clear().env("RUST_LOG", "error").env("HTTP_ADDR", "127.0.0.1:0");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run the binary");
    let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.code().unwrap_or(-1), text)
}

/// Assert that each `(variable, value)` stops the binary with a message naming the variable, no
/// panic, and no secret printed.
pub fn assert_bad_settings_refused(path: &str, cases: &[(&str, &str)]) {
    for (var, value) in cases {
        let (code, text) = run_binary(path, &[(var, value)]);
        assert_ne!(code, 0, "{var}={value} must stop the process");
        assert!(text.contains(var), "{var}={value}: the message names the variable: {text}");
        assert!(!text.contains("panicked"), "{var}={value}: {text}");
        assert!(!text.contains("hunter2"), "secrets are never printed: {text}");
    }
}

/// A TCP proxy in front of a real server (PostgreSQL, RabbitMQ) that a test can cut and restore:
/// a network partition between a process and its dependency, without touching the shared server.
/// While cut, nothing listens on its address (connections are refused) and the connections it
/// carried are closed.
#[derive(Debug)]
pub struct TcpProxy {
    pub addr: std::net::SocketAddr,
    target: std::net::SocketAddr,
    current: std::sync::Mutex<Option<CancellationToken>>,
}

impl TcpProxy {
    /// Listen on a free loopback port and forward every connection to `target`.
    pub async fn start(target: std::net::SocketAddr) -> TcpProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let proxy = TcpProxy { addr, target, current: std::sync::Mutex::new(None) };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let token = CancellationToken::new();
        *self.current.lock().expect("proxy state") = Some(token.clone());
        let target = self.target;
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = token.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((mut client, _)) = accepted else { continue };
                let token = token.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    }
                });
            }
        });
    }

    /// Cut: stop listening and close every connection.
    pub fn cut(&self) {
        if let Some(token) = self.current.lock().expect("proxy state").take() {
            token.cancel();
        }
    }

    /// Listen again on the same address.
    pub async fn restore(&self) {
        let listener = eventually("the proxy's port is free again", Duration::from_secs(10), || async {
            tokio::net::TcpListener::bind(self.addr).await.ok()
        })
        .await;
        self.serve(listener);
    }
}
