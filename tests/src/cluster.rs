//! The platform as real OS processes: the six binaries (`outside`, then any number of instances
//! of the orchestrator and of each participant), configured only through environment variables,
//! on one [`TestPlatform`]'s vhost and databases, each platform process as its own broker user.
//! Each instance has its own HTTP port; every orchestrator's consistency auditor reads the first
//! instance of each participant and the cluster's simulated gateway and carrier
//! (`ORCHESTRATOR_AUDIT_*_URL`). Any instance can be killed (`kill -9`) and started again with the
//! same environment and port; each start writes its own log file (`<name>.log`, then
//! `<name>.<n>.log`), kept in the cluster's directory. [`Cluster::stop`] sends SIGTERM to every
//! process and reports how each ended. Dropping a cluster kills what still runs.
//!
//! Used by `tests/tests/processes.rs` and by the fault suite (`saga-faults`, [`crate::faults`]).

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context;

use crate::{Service, TestPlatform};

/// The operator every cluster's orchestrators know (`ORCHESTRATOR_ADMIN_TOKENS=ops=<token>`).
pub const CLUSTER_TOKEN: &str = "a-long-enough-operator-token";

/// How long an instance may take to answer `GET /health/ready` after it was started.
const READY: Duration = Duration::from_secs(60);
/// How long a process may take to exit after SIGTERM before it is killed.
const STOP: Duration = Duration::from_secs(30);

/// What an instance runs: the simulated outside systems, or a platform process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    Outside,
    Platform(Service),
}

impl Program {
    /// The binary's name.
    pub fn binary(self) -> &'static str {
        match self {
            Program::Outside => "outside",
            Program::Platform(s) => s.name(),
        }
    }
}

/// One instance of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(usize);

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Where the six binaries are (see [`bin_dir`]).
    pub bin_dir: PathBuf,
    /// Instances of the orchestrator (at least 1).
    pub orchestrators: usize,
    /// Instances of each participant (at least 1).
    pub participants: usize,
    /// Environment on top of the wiring, for every platform process (later entries win).
    pub env: Vec<(String, String)>,
    /// Where the logs go (kept); without it a temporary directory, removed by [`Cluster::stop`].
    pub log_dir: Option<PathBuf>,
}

impl ClusterSpec {
    /// One instance of each process.
    pub fn new(bin_dir: impl Into<PathBuf>) -> ClusterSpec {
        ClusterSpec { bin_dir: bin_dir.into(), orchestrators: 1, participants: 1, env: Vec::new(), log_dir: None }
    }

    pub fn instances(mut self, orchestrators: usize, participants: usize) -> ClusterSpec {
        self.orchestrators = orchestrators.max(1);
        self.participants = participants.max(1);
        self
    }

    pub fn env(mut self, key: &str, value: impl Into<String>) -> ClusterSpec {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    pub fn envs(mut self, envs: &[(String, String)]) -> ClusterSpec {
        self.env.extend_from_slice(envs);
        self
    }

    pub fn log_dir(mut self, dir: impl Into<PathBuf>) -> ClusterSpec {
        self.log_dir = Some(dir.into());
        self
    }
}

struct Instance {
    program: Program,
    name: String,
    /// Base URL of its HTTP API (the gateway's, for `outside`).
    url: String,
    env: Vec<(String, String)>,
    child: Option<Child>,
    log: PathBuf,
    starts: u32,
}

/// How an instance ended when the cluster stopped.
#[derive(Debug)]
pub struct Stopped {
    pub name: String,
    pub program: Program,
    /// `None`: it was not running (killed and not started again), or it did not exit and was killed.
    pub status: Option<ExitStatus>,
    /// What its last start wrote.
    pub log: String,
}

/// The running binaries.
pub struct Cluster {
    instances: Vec<Instance>,
    /// Base URLs of the simulated payment gateway and carrier.
    pub gateway: String,
    pub carrier: String,
    dir: PathBuf,
    keep_logs: bool,
    bin_dir: PathBuf,
    http: reqwest::Client,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.instances.iter_mut().filter_map(|i| i.child.as_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn env(k: &str, v: impl Into<String>) -> (String, String) {
    (k.to_owned(), v.into())
}

/// A port nothing listens on now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0").context("bind an ephemeral port")?.local_addr()?.port())
}

/// Where cargo put the binaries of the running executable's profile: beside it, or one up from a
/// test's `deps` directory.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("the path of this executable")?;
    let dir = exe.parent().context("the directory of this executable")?;
    let dir = if dir.file_name().is_some_and(|n| n == "deps") { dir.parent().unwrap_or(dir) } else { dir };
    Ok(dir.to_path_buf())
}

/// Build the six binaries in `bin_dir`'s profile (a no-op when they are up to date).
pub fn build_binaries(bin_dir: &Path) -> anyhow::Result<()> {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--bins", "--quiet"]);
    for p in ["orchestrator", "inventory", "payment", "shipping", "notification", "orders", "outside"] {
        cmd.args(["-p", p]);
    }
    if bin_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().context("run cargo build")?;
    anyhow::ensure!(status.success(), "cargo build --bins failed ({status})");
    Ok(())
}

/// The child's exit status, checked until `within` has passed.
pub async fn wait_exit(child: &mut Child, within: Duration) -> anyhow::Result<ExitStatus> {
    crate::wait::until("the process to exit", within, || {
        let status = child.try_wait().ok().flatten();
        async move { status }
    })
    .await
}

/// The wiring of one platform instance: its broker user, database, port, the outside systems.
fn wiring(p: &TestPlatform, service: Service, port: u16, gateway: &str, carrier: &str) -> Vec<(String, String)> {
    let prefix = service.name().to_uppercase();
    vec![
        env("RUST_LOG", "info"),
        env("AMQP_URL", p.amqp_url(service)),
        env(&format!("{prefix}_DATABASE_URL"), p.database_url(service)),
        env(&format!("{prefix}_HTTP_ADDR"), format!("127.0.0.1:{port}")),
        env("PAYMENT_GATEWAY_URL", gateway),
        env("SHIPPING_CARRIER_URL", carrier),
        env("ORCHESTRATOR_ADMIN_TOKENS", format!("ops={CLUSTER_TOKEN}")),
        // Small pools: PostgreSQL's 100 connections are shared with everything on this machine.
        env("DB_POOL_SIZE", "4"),
        env("PREFETCH", "4"),
    ]
}

impl Cluster {
    /// Start the binaries (the outside systems, the participants, then the orchestrators) and
    /// wait until every one is ready.
    pub async fn start(p: &TestPlatform, spec: ClusterSpec) -> anyhow::Result<Cluster> {
        let keep_logs = spec.log_dir.is_some();
        let dir = spec
            .log_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join(format!("saga-cluster-{}", uuid::Uuid::now_v7())));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let (gateway, carrier) = (free_port()?, free_port()?);
        let outside = vec![
            env("RUST_LOG", "info"),
            env("OUTSIDE_GATEWAY_ADDR", format!("127.0.0.1:{gateway}")),
            env("OUTSIDE_CARRIER_ADDR", format!("127.0.0.1:{carrier}")),
        ];
        let mut cluster = Cluster {
            instances: vec![Instance::new(
                Program::Outside,
                "outside".into(),
                format!("http://127.0.0.1:{gateway}"),
                outside,
            )],
            gateway: format!("http://127.0.0.1:{gateway}"),
            carrier: format!("http://127.0.0.1:{carrier}"),
            dir,
            keep_logs,
            bin_dir: spec.bin_dir.clone(),
            http: p.http.clone(),
        };
        let participants_first = Service::ALL.iter().skip(1).chain(Service::ALL.iter().take(1));
        for &service in participants_first {
            let count = if service == Service::Orchestrator { spec.orchestrators } else { spec.participants };
            for n in 1..=count.max(1) {
                let port = free_port()?;
                let mut e = wiring(p, service, port, &cluster.gateway, &cluster.carrier);
                if service == Service::Orchestrator {
                    e.extend(cluster.audit_env());
                }
                e.extend_from_slice(&spec.env);
                let name = format!("{}-{n}", service.name());
                let url = format!("http://127.0.0.1:{port}");
                cluster.instances.push(Instance::new(Program::Platform(service), name, url, e));
            }
        }
        for i in 0..cluster.instances.len() {
            cluster.spawn(Id(i))?;
        }
        for i in 0..cluster.instances.len() {
            cluster.ready(Id(i)).await?;
        }
        Ok(cluster)
    }

    /// Where an orchestrator's auditor reads: the first instance of each participant, and the
    /// cluster's outside systems.
    fn audit_env(&self) -> Vec<(String, String)> {
        let first = |s: Service| self.urls(s).into_iter().next().unwrap_or_default();
        vec![
            env("ORCHESTRATOR_AUDIT_INVENTORY_URL", first(Service::Inventory)),
            env("ORCHESTRATOR_AUDIT_PAYMENT_URL", first(Service::Payment)),
            env("ORCHESTRATOR_AUDIT_SHIPPING_URL", first(Service::Shipping)),
            env("ORCHESTRATOR_AUDIT_GATEWAY_URL", self.gateway.clone()),
            env("ORCHESTRATOR_AUDIT_CARRIER_URL", self.carrier.clone()),
        ]
    }

    fn spawn(&mut self, id: Id) -> anyhow::Result<()> {
        let bin_dir = self.bin_dir.clone();
        let dir = self.dir.clone();
        let instance = self.instance_mut(id)?;
        anyhow::ensure!(instance.child.is_none(), "{} is already running", instance.name);
        instance.starts += 1;
        let file = match instance.starts {
            1 => format!("{}.log", instance.name),
            n => format!("{}.{n}.log", instance.name),
        };
        instance.log = dir.join(file);
        let out = File::create(&instance.log).with_context(|| format!("create {}", instance.log.display()))?;
        let err = out.try_clone()?;
        let binary = bin_dir.join(instance.program.binary());
        let child = Command::new(&binary)
            .env_clear()
            .envs(instance.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("start {} ({})", instance.name, binary.display()))?;
        instance.child = Some(child);
        Ok(())
    }

    fn instance(&self, id: Id) -> anyhow::Result<&Instance> {
        self.instances.get(id.0).with_context(|| format!("no instance {}", id.0))
    }

    fn instance_mut(&mut self, id: Id) -> anyhow::Result<&mut Instance> {
        self.instances.get_mut(id.0).with_context(|| format!("no instance {}", id.0))
    }

    /// Wait until the instance answers `200` on `/health/ready`.
    pub async fn ready(&self, id: Id) -> anyhow::Result<()> {
        let instance = self.instance(id)?;
        let url = format!("{}/health/ready", instance.url);
        crate::wait::until(&format!("{} to be ready", instance.name), READY, || async {
            let r = self.http.get(&url).timeout(Duration::from_secs(5)).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await
    }

    /// `kill -9` the instance and wait until it is gone.
    pub async fn kill(&mut self, id: Id) -> anyhow::Result<ExitStatus> {
        let instance = self.instance_mut(id)?;
        let name = instance.name.clone();
        let mut child = instance.child.take().with_context(|| format!("{name} is not running"))?;
        child.kill().with_context(|| format!("kill -9 {name}"))?;
        wait_exit(&mut child, Duration::from_secs(10)).await.with_context(|| format!("{name} after kill -9"))
    }

    /// Start a stopped instance again, with the same environment and port, and wait until ready.
    pub async fn restart(&mut self, id: Id) -> anyhow::Result<()> {
        self.spawn(id)?;
        self.ready(id).await
    }

    /// `kill -9`, then start again and wait until ready.
    pub async fn crash_and_restart(&mut self, id: Id) -> anyhow::Result<()> {
        self.kill(id).await?;
        self.restart(id).await
    }

    /// The instances of `service`, in start order.
    pub fn ids(&self, service: Service) -> Vec<Id> {
        let program = Program::Platform(service);
        self.instances.iter().enumerate().filter(|(_, i)| i.program == program).map(|(n, _)| Id(n)).collect()
    }

    /// Every platform instance (not `outside`).
    pub fn platform_ids(&self) -> Vec<Id> {
        Service::ALL.into_iter().flat_map(|s| self.ids(s)).collect()
    }

    /// The broker roles of the platform services it runs.
    pub fn roles(&self) -> Vec<contracts::topology::Role> {
        Service::ALL.into_iter().filter(|&s| !self.ids(s).is_empty()).map(Service::role).collect()
    }

    /// Base URLs of the instances of `service`, in start order.
    pub fn urls(&self, service: Service) -> Vec<String> {
        self.ids(service).into_iter().filter_map(|id| self.instance(id).ok().map(|i| i.url.clone())).collect()
    }

    /// Base URL of the first instance of `service`.
    pub fn url(&self, service: Service) -> String {
        self.urls(service).into_iter().next().unwrap_or_default()
    }

    pub fn name(&self, id: Id) -> &str {
        self.instance(id).map(|i| i.name.as_str()).unwrap_or("?")
    }

    pub fn url_of(&self, id: Id) -> &str {
        self.instance(id).map(|i| i.url.as_str()).unwrap_or_default()
    }

    pub fn program(&self, id: Id) -> Option<Program> {
        self.instance(id).ok().map(|i| i.program)
    }

    pub fn is_running(&self, id: Id) -> bool {
        self.instance(id).is_ok_and(|i| i.child.is_some())
    }

    /// How many times the instance was started.
    pub fn starts(&self, id: Id) -> u32 {
        self.instance(id).map(|i| i.starts).unwrap_or(0)
    }

    /// Where the logs are.
    pub fn log_dir(&self) -> &Path {
        &self.dir
    }

    /// SIGTERM every process (participants first, then the orchestrators, then the outside
    /// systems), each waited for before the next; one that does not exit in time is killed.
    /// Returns how each ended and what its last start wrote.
    pub async fn stop(mut self) -> Vec<Stopped> {
        let mut order: Vec<usize> = (0..self.instances.len()).collect();
        order.sort_by_key(|&n| match self.instances[n].program {
            Program::Platform(Service::Orchestrator) => 1,
            Program::Outside => 2,
            Program::Platform(_) => 0,
        });
        let mut stopped = Vec::new();
        for n in order {
            let instance = &mut self.instances[n];
            let status = match instance.child.take() {
                Some(child) => terminate(child).await,
                None => None,
            };
            let log = std::fs::read_to_string(&instance.log).unwrap_or_default();
            stopped.push(Stopped { name: instance.name.clone(), program: instance.program, status, log });
        }
        if !self.keep_logs {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        stopped
    }
}

/// SIGTERM, then the exit status; SIGKILL (and `None`) if it does not exit within [`STOP`].
async fn terminate(mut child: Child) -> Option<ExitStatus> {
    let pid = child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().is_ok_and(|s| s.success());
    if sent && let Ok(status) = wait_exit(&mut child, STOP).await {
        return Some(status);
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

impl Instance {
    fn new(program: Program, name: String, url: String, env: Vec<(String, String)>) -> Instance {
        Instance { program, name, url, env, child: None, log: PathBuf::new(), starts: 0 }
    }
}
