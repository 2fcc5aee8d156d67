//! `saga-bench`, the binary, against a whole platform running in this process (`TestPlatform`:
//! its own vhost, throwaway databases, the simulated gateway): a mixed closed-loop run with the
//! floor, an open-loop run by duration, a run whose sagas miss their timeout, and flags or a
//! platform it cannot use.

use std::process::{Command, Output};

use e2e::{Service, TestConfig, TestPlatform};
use infra::testing::TestDb;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_saga-bench");

async fn saga_bench(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || Command::new(BIN).args(&args).output().expect("run saga-bench"))
        .await
        .expect("join")
}

/// The flags that point saga-bench at `platform`.
fn aimed_at(platform: &TestPlatform) -> Vec<String> {
    let databases: Vec<&str> =
        Service::ALL.iter().map(|s| platform.database_url(*s).rsplit('/').next().expect("a database name")).collect();
    [
        ("--url", platform.url(Service::Orchestrator)),
        ("--amqp-url", platform.vhost.amqp_url.clone()),
        ("--inventory-url", platform.url(Service::Inventory)),
        ("--gateway-url", platform.gateway_url().to_owned()),
        ("--databases", databases.join(",")),
    ]
    .into_iter()
    .flat_map(|(k, v)| [k.to_owned(), v])
    .collect()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// The last line of stdout as JSON, after checking the exit status.
fn report(out: &Output, expected_code: i32) -> Value {
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(expected_code), "stdout:\n{stdout}\nstderr:\n{stderr}");
    eprintln!("{stderr}");
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}\nstderr:\n{stderr}"))
}

fn num(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_closed_loop_run_with_the_floor_is_clean_and_counts_the_floor_exactly() {
    let platform = TestPlatform::running(TestConfig { prefetch: 64, ..TestConfig::default() }).await;
    let floor_db = TestDb::create("floor").await;
    let mut argv = aimed_at(&platform);
    argv.extend(args(&[
        "--concurrency",
        "4",
        "--count",
        "40",
        "--warmup",
        "8",
        "--mix",
        "completed=0.7,out_of_stock=0.1,declined=0.1,unshippable=0.1",
        "--baseline",
        "--json",
        "--floor-database",
        &floor_db.name,
    ]));
    let out = saga_bench(argv).await;
    let v = report(&out, 0);

    assert_eq!((num(&v, "violations"), num(&v, "submitted")), (0.0, 40.0), "{v}");
    assert_eq!(num(&v, "completed") + num(&v, "compensated"), 40.0, "{v}");
    assert!(num(&v, "completed") >= 20.0 && num(&v, "compensated") >= 6.0, "the mix shows: {v}");
    assert_eq!((num(&v, "failed"), num(&v, "unfinished")), (0.0, 0.0), "{v}");
    for key in ["sagas_per_s", "p50_ms", "p90_ms", "p99_ms", "max_ms"] {
        assert!(num(&v, key) > 0.0, "{key}: {v}");
    }
    assert!(num(&v, "p50_ms") <= num(&v, "p90_ms") && num(&v, "p99_ms") <= num(&v, "max_ms"), "{v}");
    assert!(num(&v, "broker_published_per_saga") > 5.0 && num(&v, "db_commits_per_saga") > 10.0, "{v}");

    let floor = &v["floor"];
    assert_eq!((num(floor, "completed"), num(floor, "submitted")), (40.0, 40.0), "{v}");
    assert!((num(floor, "db_commits_per_saga") - 16.0).abs() < 0.25, "16 commits a floor saga: {floor}");
    assert!((num(floor, "broker_published_per_saga") - 10.0).abs() < 0.25, "10 publishes a floor saga: {floor}");
    assert!(num(floor, "cpu_s_per_saga") > 0.0, "{floor}");
    assert!(num(&v["ratios"], "sagas_per_s") > 0.0 && num(&v["ratios"], "p50") > 0.0, "{v}");

    // The floor cleaned up after itself.
    let queue = platform.vhost.management(&format!("queues/{}/floor.participant.commands", platform.vhost.name)).await;
    assert_eq!(queue["error"], "Object Not Found", "{queue}");
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&floor_db.url).await.expect("floor db");
    let left: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('floor_sagas')::text").fetch_one(&mut conn).await.expect("query");
    assert_eq!(left, None);
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_loop_run_by_duration_starts_sagas_at_the_rate() {
    let platform = TestPlatform::running(TestConfig::default()).await;
    let mut argv = aimed_at(&platform);
    argv.extend(args(&["--rate", "10", "--duration", "2s", "--warmup", "0", "--settle", "1s", "--json"]));
    let v = report(&saga_bench(argv).await, 0);
    assert_eq!((num(&v, "submitted"), num(&v, "completed"), num(&v, "violations")), (20.0, 20.0, 0.0), "{v}");
    assert_eq!(v["settings"]["load"], "open");
    assert_eq!(v["floor"], Value::Null);
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sagas_that_miss_their_timeout_are_listed_as_violations_and_the_exit_status_is_3() {
    let platform = TestPlatform::running(TestConfig::default()).await;
    let mut argv = aimed_at(&platform);
    argv.extend(args(&["--count", "3", "--concurrency", "1", "--warmup", "0", "--saga-timeout", "1ms"]));
    argv.extend(args(&["--settle", "1s", "--json"]));
    let v = report(&saga_bench(argv).await, 3);
    assert_eq!((num(&v, "unfinished"), num(&v, "completed")), (3.0, 0.0), "{v}");
    assert!(num(&v, "violations") >= 3.0, "{v}");
    let first = v["violation_list"][0].as_str().unwrap_or_default();
    assert!(first.contains("(completed) did not end in time"), "{v}");
    platform.shutdown().await;
}

#[tokio::test]
async fn bad_flags_and_an_unreachable_platform_are_clear_errors() {
    let out = saga_bench(args(&["--concurrency", "0"])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--concurrency") && !stderr.contains("panicked"), "{stderr}");

    let out = saga_bench(args(&["--inventory-url", "http://127.0.0.1:9", "--count", "1"])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--inventory-url") && !stderr.contains("panicked"), "{stderr}");
}
