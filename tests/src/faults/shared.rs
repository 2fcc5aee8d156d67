//! The machine's shared services, stopped and started again: RabbitMQ's application
//! (`rabbitmqctl stop_app` / `start_app`) and the local PostgreSQL cluster (`pg_ctlcluster
//! --skip-systemctl-redirect <version> main stop` / `start`, the newest version under
//! `/etc/postgresql`). While a service is down a [`Down`] guard is armed; dropped armed (an error, a
//! panic, Ctrl-C ending the run), it starts the service again, so the suite never leaves the
//! machine without its broker or its database. Every other test running meanwhile breaks. Also
//! the one broker fault that stays inside the run's vhost: [`close_connections`].

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;

/// A shared service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shared {
    Broker,
    Postgres,
}

impl Shared {
    fn name(self) -> &'static str {
        match self {
            Shared::Broker => "RabbitMQ",
            Shared::Postgres => "PostgreSQL",
        }
    }
}

/// How long a service may take to be usable again after it was started.
const BACK: Duration = Duration::from_secs(90);

/// Starts a drop makes before it gives up (a start can fail while a stop is still settling).
const DROP_START_TRIES: u32 = 5;

/// A stopped shared service, started again by [`Down::start`] or, failing that, on drop.
///
/// The commands run on blocking threads, which go on when the future that started them is
/// dropped (Ctrl-C during `stop_app`): each holds `busy` while it runs, and a drop waits for it
/// before starting the service, so a start never races the stop it undoes.
#[derive(Debug)]
pub struct Down {
    what: Shared,
    armed: bool,
    busy: Arc<Mutex<()>>,
}

impl Drop for Down {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let name = self.what.name();
        eprintln!("saga-faults: starting {name} again (the scenario ended while it was down)");
        let _settled = self.busy.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for attempt in 1..=DROP_START_TRIES {
            match start_blocking(self.what) {
                Ok(()) => return,
                Err(e) => eprintln!("saga-faults: starting {name} again, attempt {attempt}: {e:#}"),
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        eprintln!("saga-faults: could not start {name} again: start it by hand");
    }
}

impl Down {
    fn armed(what: Shared) -> Down {
        Down { what, armed: true, busy: Arc::new(Mutex::new(())) }
    }

    /// Run `f` on a blocking thread, holding `busy` while it runs.
    async fn exclusive(&self, f: impl FnOnce() -> anyhow::Result<()> + Send + 'static) -> anyhow::Result<()> {
        let busy = self.busy.clone();
        blocking(move || {
            let _running = busy.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f()
        })
        .await
    }

    /// Stop the service.
    pub async fn stop(what: Shared) -> anyhow::Result<Down> {
        // Armed before the command: a stop that half worked is started again too.
        let down = Down::armed(what);
        down.exclusive(move || match what {
            Shared::Broker => run("rabbitmqctl", &["-q", "stop_app"]),
            Shared::Postgres => pg_ctlcluster("stop"),
        })
        .await?;
        Ok(down)
    }

    /// Start it again and wait until it serves.
    pub async fn start(mut self) -> anyhow::Result<()> {
        let what = self.what;
        self.exclusive(move || start_blocking(what)).await?;
        self.armed = false;
        wait_serving(what).await
    }
}

/// `pg_ctlcluster restart`: PostgreSQL down only as long as the restart takes.
pub async fn restart_postgres() -> anyhow::Result<()> {
    // Armed while the restart runs: a restart that stopped but did not start is started on drop.
    let mut down = Down::armed(Shared::Postgres);
    down.exclusive(|| pg_ctlcluster("restart")).await?;
    down.armed = false;
    wait_serving(Shared::Postgres).await
}

/// `rabbitmqctl close_all_connections -p <vhost>`: the broker closes every connection of one
/// vhost (the run's own; nothing else on the machine notices). Returns what it said.
pub async fn close_connections(vhost: &str) -> anyhow::Result<String> {
    let vhost = vhost.to_owned();
    tokio::task::spawn_blocking(move || {
        let args = ["close_all_connections", "-p", &vhost, "saga-faults: broker-drop"];
        let out = Command::new("rabbitmqctl").args(args).output().context("run rabbitmqctl")?;
        let said = String::from_utf8_lossy(&out.stdout).trim().replace('\n', " ");
        anyhow::ensure!(out.status.success(), "rabbitmqctl close_all_connections failed: {said}");
        Ok(said)
    })
    .await
    .context("a blocking task")?
}

fn start_blocking(what: Shared) -> anyhow::Result<()> {
    match what {
        Shared::Broker => {
            run("rabbitmqctl", &["-q", "start_app"])?;
            run("rabbitmqctl", &["-q", "await_startup"])
        }
        Shared::Postgres => pg_ctlcluster("start"),
    }
}

/// Wait until the broker takes AMQP connections and its management API answers, or until
/// PostgreSQL takes a connection.
async fn wait_serving(what: Shared) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    crate::wait::until(&format!("{} to serve again", what.name()), BACK, || async {
        match what {
            Shared::Broker => {
                tokio::net::TcpStream::connect("127.0.0.1:5672").await.ok()?;
                let api = std::env::var("TEST_RABBITMQ_API").unwrap_or_else(|_| "http://127.0.0.1:15672".into());
                let r = http.get(format!("{api}/api/overview")).basic_auth("guest", Some("guest")).send().await.ok()?;
                r.status().is_success().then_some(())
            }
            Shared::Postgres => {
                use sqlx::Connection;
                let url = std::env::var("TEST_POSTGRES_ADMIN_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
                sqlx::PgConnection::connect(&url).await.ok()?.close().await.ok()
            }
        }
    })
    .await
}

async fn blocking(f: impl FnOnce() -> anyhow::Result<()> + Send + 'static) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(f).await.context("a blocking task")?
}

/// `pg_ctlcluster --skip-systemctl-redirect <newest version> main <action>`.
fn pg_ctlcluster(action: &str) -> anyhow::Result<()> {
    let version = postgres_version()?;
    run("pg_ctlcluster", &["--skip-systemctl-redirect", &version, "main", action])
}

/// The newest PostgreSQL version with a cluster configured under `/etc/postgresql`.
fn postgres_version() -> anyhow::Result<String> {
    let mut versions: Vec<(u32, String)> = std::fs::read_dir("/etc/postgresql")
        .context("read /etc/postgresql (is the local PostgreSQL cluster installed?)")?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|v| Some((v.split('.').next()?.parse().ok()?, v)))
        .collect();
    versions.sort();
    versions.pop().map(|(_, v)| v).context("no cluster under /etc/postgresql")
}

fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program).args(args).output().with_context(|| format!("run {program}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{program} {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}
