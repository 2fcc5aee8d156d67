//! The read side (`orders`) on a whole platform, fed by the real event store: orders submitted over
//! HTTP reach its summaries and its daily report through `orders.history`; an operator's rebuild in
//! the middle of the orders (the live consumer running, the platform taking orders) ends equal, row
//! by row, to a projection built once from the orchestrator's feed after the orders.

use std::time::Duration;

use contracts::topology::Role;
use e2e::{Service, TestConfig, TestPlatform, order};
use infra::config::Settings;
use infra::testing::{TestDb, eventually, spawn_app};
use serde_json::Value;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);

/// The first operator token of the platform's orchestrator (`name=token,...`).
fn operator_token(p: &TestPlatform) -> &'static str {
    let first = p.config.admin_tokens.split(',').next().unwrap_or_default();
    first.split_once('=').map_or(first, |(_, t)| t)
}

fn read_side_settings(p: &TestPlatform, database_url: &str) -> orders::OrdersSettings {
    let common = Settings::for_tests("orders", p.users.amqp_url(Role::Orders), database_url);
    orders::OrdersSettings::for_tests(
        common,
        &p.url(Service::Orchestrator),
        Some(operator_token(p)),
        p.config.admin_tokens,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_side_follows_the_event_store_and_a_rebuild_during_orders_equals_a_projection_built_once() {
    let p = TestPlatform::running(TestConfig::default()).await;
    let live_db = TestDb::create("orders").await;
    let app = orders::build(read_side_settings(&p, &live_db.url)).await.expect("orders starts");
    let base = format!("http://{}", app.local_addr());
    let (stop, handle) = spawn_app(app);
    let token = operator_token(&p);

    // Orders that complete (DE) and compensate (AQ: no carrier), a rebuild in the middle.
    let mut ids: Vec<(Uuid, bool)> = Vec::new();
    for i in 0..12 {
        if i == 6 {
            let r = p.http.post(format!("{base}/admin/rebuild")).bearer_auth(token).send().await.expect("rebuild");
            assert_eq!(r.status().as_u16(), 202, "{}", r.text().await.unwrap_or_default());
        }
        let compensates = i % 4 == 0;
        let id = p.start_saga(&order("SKU-0005", 1 + i, 250, if compensates { "AQ" } else { "DE" })).await;
        ids.push((id, compensates));
    }
    for (id, compensates) in &ids {
        p.wait_for_status(*id, if *compensates { "COMPENSATED" } else { "COMPLETED" }, WAIT).await;
    }

    // The read side shows every order as the orchestrator does, with nothing left behind.
    for (id, compensates) in &ids {
        let summary = eventually(&format!("order {id} in the read side"), WAIT, || async {
            let r = p.http.get(format!("{base}/orders/{id}")).send().await.ok()?;
            let s: Value = r.json().await.ok()?;
            matches!(s["status"].as_str(), Some("COMPLETED" | "COMPENSATED")).then_some(s)
        })
        .await;
        assert_eq!(summary["status"], if *compensates { "COMPENSATED" } else { "COMPLETED" }, "{summary}");
        assert_eq!(summary["customer_id"], "c-42");
        assert_eq!(summary["currency"], "EUR");
        let saga = p.saga(*id).await;
        assert_eq!(summary["failure_reason"], saga["failure_reason"], "{summary} / {saga}");
    }
    let rebuild = eventually("the rebuild finished", WAIT, || async {
        let r = p.http.get(format!("{base}/admin/rebuild")).bearer_auth(token).send().await.ok()?;
        let s: Value = r.json().await.ok()?;
        (s["running"] == false && s["finished_at"].is_string()).then_some(s)
    })
    .await;
    assert!(rebuild["error"].is_null(), "{rebuild}");
    let live = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&live_db.url).await.expect("db");
    let feed_head = || async {
        let r = p
            .http
            .get(format!("{}/events?after=0&limit=1", p.url(Service::Orchestrator)))
            .bearer_auth(token)
            .send()
            .await
            .ok()?;
        r.json::<Value>().await.ok()?["head"].as_i64()
    };
    let head = eventually("the read side at the store's head", WAIT, || async {
        let head = feed_head().await?;
        let watermark: i64 =
            sqlx::query_scalar("SELECT watermark FROM projection_state").fetch_one(&live).await.ok()?;
        (watermark == head).then_some(head)
    })
    .await;

    // A projection built once, from the feed, after the orders.
    let once_db = TestDb::create("orders").await;
    let report = orders::rebuild(read_side_settings(&p, &once_db.url), tokio_util::sync::CancellationToken::new())
        .await
        .expect("built from the feed");
    assert_eq!((report.position, report.head), (head, head), "nothing new since: {report:?}");
    let once = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&once_db.url).await.expect("db");
    let (a, b) =
        (orders::projection::rows(&live).await.expect("rows"), orders::projection::rows(&once).await.expect("rows"));
    assert!(a.len() > ids.len(), "summaries, daily rows and applied positions: {}", a.len());
    assert_eq!(a.len(), b.len(), "as many rows");
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y, "the projection rebuilt during the orders equals the one built once");
    }

    // The daily report counts what happened today.
    let today = chrono::Utc::now().date_naive();
    let r: Value = p.get_json(&format!("{base}/reports/daily?from={today}&to={today}")).await;
    let day = &r["days"][0];
    assert_eq!(day["orders_started"], 12, "{r}");
    assert_eq!(day["orders_completed"], 9, "{r}");
    let revenue: i64 = ids.iter().enumerate().filter(|(_, (_, c))| !c).map(|(i, _)| (1 + i as i64) * 250).sum();
    assert_eq!(day["revenue_cents"]["EUR"], revenue, "{r}");
    let compensated: i64 =
        day["compensations"].as_object().expect("by reason").values().filter_map(Value::as_i64).sum();
    assert_eq!(compensated, 3, "{r}");

    live.close().await;
    once.close().await;
    stop.cancel();
    handle.await.expect("orders ran").expect("orders stopped cleanly");
    p.shutdown().await;
}
