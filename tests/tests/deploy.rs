//! The deployment files against the code, with no Docker engine: `infra/deploy/docker-compose.yml`
//! runs every process from the image with its own binary, on the port the code defaults to
//! (published on 127.0.0.1 only), wired by the environment variables the code reads, with values
//! that fit (its own database, its own broker user from `users.json`, the simulated gateway and
//! carrier's ports), health-checked on `/health/ready`; every file it mounts exists; Prometheus
//! scrapes every process and loads the alerts; Grafana reads that Prometheus; the infrastructure
//! alone still starts as `infra/dev` asks. `docker compose config -q` and `promtool check config`
//! also run where they are installed (skipped with a note otherwise).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use contracts::topology::{QueueType, Role, Topology};
use infra::operators::Operators;
use yaml_rust2::{Yaml, YamlLoader};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn deploy() -> PathBuf {
    repo().join("infra/deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn load_yaml(path: &Path) -> Yaml {
    let mut docs = YamlLoader::load_from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(docs.len(), 1, "{}: one YAML document", path.display());
    docs.remove(0)
}

fn compose() -> Yaml {
    load_yaml(&deploy().join("docker-compose.yml"))
}

/// The service `name` of the compose file (present).
fn service(compose: &Yaml, name: &str) -> Yaml {
    let s = compose["services"][name].clone();
    assert!(s.is_hash(), "docker-compose.yml has a service `{name}`");
    s
}

/// A sequence of strings (a missing key is an empty one).
fn strings(y: &Yaml) -> Vec<String> {
    y.as_vec().into_iter().flatten().map(|v| v.as_str().expect("a string").to_owned()).collect()
}

/// A service's `environment` (map form), with `${VAR:-default}` as compose reads it with VAR unset.
fn env_of(service: &Yaml) -> BTreeMap<String, String> {
    let Some(env) = service["environment"].as_hash() else { return BTreeMap::new() };
    env.iter().map(|(k, v)| (k.as_str().expect("a key").to_owned(), defaults(v.as_str().expect("a string")))).collect()
}

/// `value` with each `${NAME:-default}` replaced by its default and each `${NAME}` by nothing.
fn defaults(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').map(|e| start + e).expect("a closed ${...}");
        let inner = &rest[start + 2..end];
        out.push_str(inner.split_once(":-").map_or("", |(_, default)| default));
        rest = &rest[end + 1..];
    }
    out + rest
}

/// A platform process as the code knows it: its name (service, binary, env prefix), its broker
/// role (none for the simulated outside systems) and the ports it listens on by default.
struct Process {
    name: &'static str,
    role: Option<Role>,
    ports: Vec<u16>,
}

fn processes() -> Vec<Process> {
    let p = |name, role, ports| Process { name, role, ports };
    vec![
        p("orchestrator", Some(Role::Orchestrator), vec![orchestrator::settings::DEFAULT_PORT]),
        p("inventory", Some(Role::Inventory), vec![inventory::DEFAULT_PORT]),
        p("payment", Some(Role::Payment), vec![payment::DEFAULT_PORT]),
        p("shipping", Some(Role::Shipping), vec![shipping::DEFAULT_PORT]),
        p("notification", Some(Role::Notification), vec![notification::DEFAULT_PORT]),
        p("orders", Some(Role::Orders), vec![orders::DEFAULT_PORT]),
        p("outside", None, vec![outside::DEFAULT_GATEWAY_PORT, outside::DEFAULT_CARRIER_PORT]),
    ]
}

/// The variables a process's listen addresses are read from, with the port each defaults to.
fn listen_vars(p: &Process) -> Vec<(String, u16)> {
    match p.role {
        Some(_) => vec![(format!("{}_HTTP_ADDR", p.name.to_uppercase()), p.ports[0])],
        None => vec![("OUTSIDE_GATEWAY_ADDR".into(), p.ports[0]), ("OUTSIDE_CARRIER_ADDR".into(), p.ports[1])],
    }
}

/// The binaries the Dockerfile copies into the image (its `for bin in ...` loop).
fn copied_binaries(dockerfile: &str) -> Vec<&str> {
    let line = dockerfile.lines().find(|l| l.contains("for bin in")).expect("the Dockerfile's copy loop");
    line.split_whitespace().map(|w| w.trim_end_matches(';')).skip_while(|w| *w != "in").skip(1).collect()
}

#[test]
fn every_process_runs_its_own_binary_from_the_one_image() {
    let (compose, dockerfile) = (compose(), read(&repo().join("Dockerfile")));
    let image = service(&compose, "orchestrator")["image"].as_str().expect("an image").to_owned();
    for p in processes() {
        let s = service(&compose, p.name);
        assert_eq!(strings(&s["command"]), [p.name], "{}: command", p.name);
        assert_eq!(s["image"].as_str(), Some(image.as_str()), "{}: the platform image", p.name);
        assert_eq!(s["restart"].as_str(), Some("on-failure"), "{}", p.name);
        let context = deploy().join(s["build"]["context"].as_str().expect("a build context"));
        let file = s["build"]["dockerfile"].as_str().expect("a dockerfile");
        assert_eq!(context.join(file).canonicalize().unwrap(), repo().join("Dockerfile").canonicalize().unwrap());
        assert!(copied_binaries(&dockerfile).contains(&p.name), "the Dockerfile copies the {} binary", p.name);
    }
    assert!(dockerfile.contains("/usr/local/bin/") && dockerfile.contains("USER 10001"), "{dockerfile}");
}

#[test]
fn every_process_listens_on_its_default_port_published_on_loopback_only() {
    let compose = compose();
    for p in processes() {
        let (s, env) = (service(&compose, p.name), env_of(&service(&compose, p.name)));
        let ports = strings(&s["ports"]);
        for (var, port) in listen_vars(&p) {
            let addr: SocketAddr = env[&var].parse().unwrap_or_else(|e| panic!("{}: {var}: {e}", p.name));
            assert!(addr.ip().is_unspecified() && addr.port() == port, "{}: {var}={addr}", p.name);
            assert!(ports.contains(&format!("127.0.0.1:{port}:{port}")), "{}: publishes {port}: {ports:?}", p.name);
        }
    }
    for (name, s) in compose["services"].as_hash().expect("services") {
        for published in strings(&s["ports"]) {
            assert!(published.starts_with("127.0.0.1:"), "{name:?} publishes {published} beyond loopback");
        }
    }
}

/// The users of the generated `users.json` on disk, by name: their passwords.
fn users_on_disk() -> BTreeMap<String, String> {
    let doc: serde_json::Value =
        serde_json::from_str(&read(&deploy().join("rabbitmq/users.json"))).expect("users.json is JSON");
    assert_eq!(doc, Topology::new(QueueType::Classic, 5).users_json("/"), "users.json is the generated one");
    let users = doc["users"].as_array().expect("users");
    users.iter().map(|u| (u["name"].as_str().unwrap().to_owned(), u["password"].as_str().unwrap().to_owned())).collect()
}

/// The variables each process reads from compose, beyond its listen addresses, and their values.
fn wiring(p: &Process, role: Role) -> BTreeMap<String, String> {
    let upper = p.name.to_uppercase();
    let mut vars = BTreeMap::from([
        ("AMQP_URL".to_owned(), format!("amqp://{}:{}@rabbitmq:5672/%2f", role.name(), role.dev_password())),
        (format!("{upper}_DATABASE_URL"), format!("postgres://postgres@postgres:5432/saga_{}", p.name)),
    ]);
    match role {
        Role::Payment => {
            vars.insert("PAYMENT_GATEWAY_URL".into(), format!("http://outside:{}", outside::DEFAULT_GATEWAY_PORT))
        }
        Role::Shipping => {
            vars.insert("SHIPPING_CARRIER_URL".into(), format!("http://outside:{}", outside::DEFAULT_CARRIER_PORT))
        }
        Role::Orders => vars.insert(
            "ORDERS_ORCHESTRATOR_URL".into(),
            format!("http://orchestrator:{}", orchestrator::settings::DEFAULT_PORT),
        ),
        _ => None,
    };
    vars
}

#[test]
fn every_process_is_wired_by_the_variables_the_code_reads() {
    let (compose, users, init) = (compose(), users_on_disk(), read(&deploy().join("postgres/init.sql")));
    for p in processes() {
        let env = env_of(&service(&compose, p.name));
        let mut expected: Vec<String> = listen_vars(&p).into_iter().map(|(var, _)| var).collect();
        if let Some(role) = p.role {
            for (var, value) in wiring(&p, role) {
                assert_eq!(env.get(&var), Some(&value), "{}: {var}", p.name);
                expected.push(var);
            }
            assert_eq!(users.get(role.name()), Some(&role.dev_password()), "{}: its broker user", p.name);
            assert!(init.contains(&format!("CREATE DATABASE saga_{};", p.name)), "init.sql creates its database");
        }
        if p.name == "orchestrator" {
            let tokens = &env["ORCHESTRATOR_ADMIN_TOKENS"];
            let operators = Operators::parse(tokens, "ORCHESTRATOR_ADMIN_TOKENS").expect("valid operator tokens");
            assert!(!operators.is_empty(), "the operator API has an operator");
            expected.push("ORCHESTRATOR_ADMIN_TOKENS".into());
        }
        if p.name == "orders" {
            // The read side reads the orchestrator's feed with one of its operator tokens.
            let orchestrator = env_of(&service(&compose, "orchestrator"));
            let operators =
                Operators::parse(&orchestrator["ORCHESTRATOR_ADMIN_TOKENS"], "ORCHESTRATOR_ADMIN_TOKENS").unwrap();
            assert!(
                operators.iter().any(|o| o.token == env["ORDERS_FEED_TOKEN"]),
                "ORDERS_FEED_TOKEN is an operator's"
            );
            let admins =
                Operators::parse(&env["ORDERS_ADMIN_TOKENS"], "ORDERS_ADMIN_TOKENS").expect("valid operator tokens");
            assert!(!admins.is_empty(), "the rebuild endpoint has an operator");
            expected.extend(["ORDERS_FEED_TOKEN".into(), "ORDERS_ADMIN_TOKENS".into()]);
        }
        expected.push("RUST_LOG".into());
        let actual: Vec<&String> = env.keys().collect();
        expected.sort();
        assert_eq!(actual, expected.iter().collect::<Vec<_>>(), "{}: exactly the variables the code reads", p.name);
    }
}

#[test]
fn processes_wait_for_what_they_need_to_be_healthy() {
    let compose = compose();
    for p in processes() {
        let s = service(&compose, p.name);
        let mut needs = match p.role {
            Some(_) => vec!["postgres", "rabbitmq"],
            None => vec![],
        };
        if matches!(p.role, Some(Role::Payment | Role::Shipping)) {
            needs.push("outside");
        }
        // The read side is ready once it has read the orchestrator's feed.
        if p.role == Some(Role::Orders) {
            needs.push("orchestrator");
        }
        for dependency in &needs {
            let condition = s["depends_on"][*dependency]["condition"].as_str();
            assert_eq!(condition, Some("service_healthy"), "{} waits for {dependency}", p.name);
        }
        let all = s["depends_on"].as_hash().map_or(0, |h| h.len());
        assert_eq!(all, needs.len(), "{}: depends on {needs:?} only", p.name);
    }
}

#[test]
fn health_checks_ask_every_process_whether_it_is_ready() {
    let (compose, dockerfile) = (compose(), read(&repo().join("Dockerfile")));
    for p in processes() {
        let test = strings(&service(&compose, p.name)["healthcheck"]["test"]);
        assert_eq!(test.first().map(String::as_str), Some("CMD"), "{}: {test:?}", p.name);
        // The runtime image has the tool the check runs.
        assert!(dockerfile.contains(&format!("install -y --no-install-recommends {}", test[1])), "{}", test[1]);
        for port in &p.ports {
            let url = format!("http://127.0.0.1:{port}/health/ready");
            assert!(test.contains(&url), "{}: checks {url}: {test:?}", p.name);
        }
    }
}

#[test]
fn every_mounted_file_exists_in_the_repository() {
    let compose = compose();
    let mut mounted = 0;
    for (name, s) in compose["services"].as_hash().expect("services") {
        for volume in strings(&s["volumes"]) {
            let volume = defaults(&volume);
            let source = volume.split(':').next().unwrap_or_default();
            if source.starts_with("./") || source.starts_with("../") {
                assert!(deploy().join(source).exists(), "{name:?} mounts {source}, which does not exist");
                mounted += 1;
            }
        }
    }
    assert!(mounted >= 9, "{mounted} files and folders mounted");
}

/// The targets of each job of a Prometheus configuration, its file service discovery read from
/// the targets folder `targets` (relative to the configuration).
fn scrape_jobs(config: &Yaml, targets: &str) -> BTreeMap<String, Vec<String>> {
    let jobs = config["scrape_configs"].as_vec().expect("scrape_configs");
    jobs.iter()
        .map(|j| {
            let name = j["job_name"].as_str().expect("job_name").to_owned();
            let files = j["file_sd_configs"].as_vec().into_iter().flatten().flat_map(|c| strings(&c["files"]));
            let found = files.flat_map(|f| {
                let path = deploy().join("prometheus").join(f.replacen("targets/", &format!("{targets}/"), 1));
                let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let groups: serde_json::Value = serde_json::from_str(&text).expect("a target file is JSON");
                let list: Vec<String> = groups
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|g| g["targets"].as_array().cloned().unwrap_or_default())
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect();
                list
            });
            (name, found.collect())
        })
        .collect()
}

#[test]
fn prometheus_scrapes_every_process_and_loads_the_alerts() {
    let config = load_yaml(&deploy().join("prometheus/prometheus.yml"));
    for (targets, host) in [("targets", None), ("targets.host", Some("host.docker.internal"))] {
        let jobs = scrape_jobs(&config, targets);
        for p in processes().into_iter().filter(|p| p.role.is_some()) {
            let target = format!("{}:{}", host.unwrap_or(p.name), p.ports[0]);
            assert_eq!(jobs.get(p.name), Some(&vec![target]), "{targets}: job {}", p.name);
        }
        assert_eq!(jobs.get("rabbitmq"), Some(&vec!["rabbitmq:15692".to_owned()]), "{targets}");
        assert_eq!(jobs.get("rabbitmq-detailed"), Some(&vec!["rabbitmq:15692".to_owned()]), "{targets}");
    }
    assert_eq!(strings(&config["rule_files"]), ["alerts.yml"], "rules next to the configuration");
    let alerts = load_yaml(&deploy().join("prometheus/alerts.yml"));
    let groups = alerts["groups"].as_vec().expect("alerts.yml has groups");
    assert!(!groups.is_empty() && groups.iter().all(|g| g["name"].as_str().is_some() && g["rules"].is_array()));
    let volumes = strings(&service(&compose(), "prometheus")["volumes"]);
    for mount in [
        "./prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro",
        "./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro",
        "./prometheus/${PROMETHEUS_TARGETS:-targets}:/etc/prometheus/targets:ro",
    ] {
        assert!(volumes.contains(&mount.to_owned()), "{mount}: {volumes:?}");
    }
}

/// Every YAML document of the files in `dir`.
fn yaml_files(dir: &Path) -> Vec<Yaml> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut paths: Vec<PathBuf> = entries.map(|e| e.expect("entry").path()).collect();
    paths.retain(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"));
    paths.iter().map(|p| load_yaml(p)).collect()
}

#[test]
fn grafana_reads_the_stacks_prometheus_and_the_dashboards_folder() {
    let provisioning = deploy().join("grafana/provisioning");
    let datasources: Vec<Yaml> = yaml_files(&provisioning.join("datasources"))
        .iter()
        .flat_map(|d| d["datasources"].as_vec().cloned())
        .flatten()
        .collect();
    assert!(
        datasources.iter().any(|d| d["type"].as_str() == Some("prometheus")
            && d["url"].as_str() == Some("http://prometheus:9090")
            && d["uid"].as_str() == Some("prometheus")),
        "a Prometheus datasource with uid prometheus at http://prometheus:9090"
    );
    let providers: Vec<Yaml> = yaml_files(&provisioning.join("dashboards"))
        .iter()
        .flat_map(|d| d["providers"].as_vec().cloned())
        .flatten()
        .collect();
    assert!(providers.iter().any(|p| p["options"]["path"].as_str() == Some("/var/lib/grafana/dashboards")));
    let volumes = strings(&service(&compose(), "grafana")["volumes"]);
    for mount in
        ["./grafana/provisioning:/etc/grafana/provisioning:ro", "./grafana/dashboards:/var/lib/grafana/dashboards:ro"]
    {
        assert!(volumes.contains(&mount.to_owned()), "{volumes:?}");
    }
}

#[test]
fn the_infrastructure_alone_still_starts_as_infra_dev_asks() {
    let compose = compose();
    let dev = read(&repo().join("infra/dev"));
    for (name, ports) in [("rabbitmq", &[5672, 15672, 15692][..]), ("postgres", &[5432][..])] {
        let s = service(&compose, name);
        assert!(dev.contains(&format!("COMPOSE_SERVICES+=({name})")), "infra/dev starts {name} by name");
        assert!(s["depends_on"].is_badvalue(), "{name} starts alone");
        assert!(s["healthcheck"]["test"].is_array(), "{name}: `up --wait` needs a health check");
        let published = strings(&s["ports"]);
        for port in ports {
            assert!(published.contains(&format!("127.0.0.1:{port}:{port}")), "{name}: {published:?}");
        }
    }
    let volumes = strings(&service(&compose, "rabbitmq")["volumes"]);
    for file in [
        "definitions.json:/etc/rabbitmq/definitions.d/10-topology.json",
        "users.json:/etc/rabbitmq/definitions.d/20-users.json",
    ] {
        assert!(volumes.contains(&format!("./rabbitmq/{file}:ro")), "{volumes:?}");
    }
}

#[test]
fn docker_compose_accepts_the_file() {
    let plugin = Command::new("docker").args(["compose", "version"]).output();
    if !plugin.is_ok_and(|o| o.status.success()) {
        eprintln!("note: `docker compose version` fails here; `docker compose config -q` not run");
        return;
    }
    let file = deploy().join("docker-compose.yml");
    let out =
        Command::new("docker").arg("compose").arg("-f").arg(&file).args(["config", "-q"]).output().expect("docker");
    assert!(out.status.success(), "docker compose config -q: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn promtool_accepts_the_prometheus_configurations_and_rules() {
    if !Command::new("promtool").arg("--version").output().is_ok_and(|o| o.status.success()) {
        eprintln!("note: promtool is not installed; `promtool check config` not run");
        return;
    }
    let path = deploy().join("prometheus/prometheus.yml");
    let out = Command::new("promtool").args(["check", "config"]).arg(&path).output().expect("promtool");
    assert!(out.status.success(), "promtool check config: {}", String::from_utf8_lossy(&out.stdout));
}
