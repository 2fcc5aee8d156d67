//! Supervised background work in a whole process on the real broker and database: a job that
//! panics makes `/health/ready` answer 503 naming it, is restarted with back-off and counted, and
//! the process is ready again.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use contracts::topology::Role;
use infra::config::Settings;
use infra::platform::{Application, Platform};
use infra::testing::{TestDb, TestVhost, eventually, spawn_app};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

async fn ready(http: &reqwest::Client, base: &str) -> (u16, Value) {
    let r = http.get(format!("{base}/health/ready")).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn a_failing_job_is_restarted_with_back_off_counted_and_unready_while_down() {
    let (vhost, db) = tokio::join!(TestVhost::create("supervision"), TestDb::create("supervision"));
    let settings = Settings::for_tests("svc", &vhost.amqp_url, &db.url);
    let platform = Platform::start(settings, Role::Notification, &sqlx::migrate::Migrator::DEFAULT).await.unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let (gate, counter) = (Arc::new(tokio::sync::Notify::new()), runs.clone());
    let release = gate.clone();
    let app = Application::new(platform).await.unwrap().job("fragile", move |token| {
        let (n, gate) = (counter.fetch_add(1, Ordering::SeqCst), gate.clone());
        async move {
            match n {
                // Stay up until the test has seen it running, then fail.
                0 => {
                    gate.notified().await;
                    panic!("the first run breaks");
                }
                // Fail at once a few times more: the back-off grows (100, 200, 400 ms ...).
                1..=3 => panic!("run {n} breaks too"),
                _ => token.cancelled().await,
            }
        }
    });
    let base = format!("http://{}", app.local_addr());
    let (token, handle) = spawn_app(app);
    let http = reqwest::Client::new();
    let (status, body) = eventually("ready with the job running", WAIT, || async {
        let r = ready(&http, &base).await;
        (r.0 == 200 && r.1["checks"]["tasks"]["fragile"]["status"] == "running").then_some(r)
    })
    .await;
    assert_eq!(status, 200);
    for task in ["outbox_relay", "inbox_retention"] {
        assert_eq!(body["checks"]["tasks"][task]["status"], "running", "{body}");
    }
    release.notify_one();
    let down = eventually("not ready while it is down", WAIT, || async {
        let (status, body) = ready(&http, &base).await;
        (status == 503 && body["checks"]["tasks"]["fragile"]["status"] == "restarting").then_some(body)
    })
    .await;
    assert!(down["checks"]["tasks"]["fragile"]["last_failure"].as_str().unwrap().contains("breaks"), "{down}");
    eventually("restarted and ready again", WAIT, || async {
        let (status, body) = ready(&http, &base).await;
        let fragile = &body["checks"]["tasks"]["fragile"];
        (status == 200 && fragile["restarts"] == 4 && fragile["status"] == "running").then_some(())
    })
    .await;
    assert_eq!(runs.load(Ordering::SeqCst), 5);
    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("saga_task_restarts_total{task=\"fragile\"} 4"), "{metrics}");
    assert!(metrics.contains("saga_task_up{task=\"fragile\"} 1"), "{metrics}");
    token.cancel();
    handle.await.unwrap().unwrap();
}
