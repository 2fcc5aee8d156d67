//! The event store on a whole platform: every event gets a gap-free global position in commit
//! order and is published on `saga.events` and served by `GET /events` in stream order per order;
//! appends that race get a conflict and the engine decides again; `GET /sagas/{id}?at=` folds the
//! saga as it was; a stream written under an old schema is read by this build, and a read
//! projection rebuilt over it.

use std::collections::HashMap;
use std::time::Duration;

use contracts::history::{FeedPage, HistoryEvent};
use contracts::topology::EVENTS_EXCHANGE;
use contracts::topology::Role;
use e2e::{Service, TestConfig, TestPlatform, order};
use infra::amqp::Broker;
use infra::config::Settings;
use infra::testing::{Tap, TestDb, eventually};
use orchestrator::history::Recorded;
use orchestrator::store::{self, StoreError, TimelineEntry};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

/// The whole feed from position 0, once its head is at least `at_least`.
async fn feed(p: &TestPlatform, at_least: i64) -> FeedPage {
    eventually(&format!("the feed to reach position {at_least}"), WAIT, || async {
        let mut page: FeedPage = p.admin_get("/events?after=0&limit=1000").await.json().await.ok()?;
        page.events.retain(|e| e.position <= page.head);
        (page.head >= at_least && page.events.len() as i64 == page.head).then_some(page)
    })
    .await
}

#[tokio::test]
async fn every_event_gets_its_position_in_commit_order_and_goes_out_in_stream_order() {
    let p = TestPlatform::running(TestConfig { snapshot_every: 3, ..TestConfig::default() }).await;
    let broker = Broker::new(&p.vhost.amqp_url, 1, "test").unwrap();
    let mut tap = Tap::bind(&broker, EVENTS_EXCHANGE, "history.#").await;
    let mut ids = Vec::new();
    for i in 0..6 {
        // Odd orders ship to a country the carrier refuses: they are compensated.
        let country = if i % 2 == 0 { "DE" } else { "KP" };
        ids.push(p.start_saga(&order(&format!("SKU-{i:04}"), 1, 100, country)).await);
    }
    let mut total = 0;
    for id in &ids {
        let saga = p.wait_for(*id, "a finished saga", WAIT, |s| s["finished_at"].is_string()).await;
        total += saga["version"].as_i64().unwrap();
        let versions: Vec<i64> =
            saga["timeline"].as_array().unwrap().iter().map(|e| e["version"].as_i64().unwrap()).collect();
        assert_eq!(versions, (1..=versions.len() as i64).collect::<Vec<_>>(), "stream versions of {id}");
    }
    let page = feed(&p, total).await;
    let positions: Vec<i64> = page.events.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=total).collect::<Vec<_>>(), "positions are 1..n without gaps");
    let mut next: HashMap<Uuid, i64> = HashMap::new();
    for e in &page.events {
        let expected = next.entry(e.order_id).or_insert(1);
        assert_eq!(e.version, *expected, "order {} in stream order", e.order_id);
        *expected += 1;
        assert_eq!(e.metadata.correlation_id, e.order_id);
        assert_eq!(e.schema_version, contracts::history::current_schema(e.event_type));
    }
    let first = &page.events.iter().find(|e| e.order_id == ids[0]).unwrap();
    assert_eq!(first.event_type.as_str(), "saga.started");
    assert_eq!(first.payload["total_cents"], 100);

    // The same events, on the broker, in stream order per order.
    let mut seen: HashMap<Uuid, Vec<i64>> = HashMap::new();
    for _ in 0..total {
        let (meta, event): (_, HistoryEvent) = tap.next(WAIT).await;
        assert_eq!(meta.message_type, event.routing_key());
        assert_eq!(page.events[(event.position - 1) as usize], event, "published as served");
        seen.entry(event.order_id).or_default().push(event.version);
    }
    for (id, versions) in seen {
        assert_eq!(versions, (1..=versions.len() as i64).collect::<Vec<_>>(), "published in order for {id}");
    }
    assert!(tap.nothing_within(Duration::from_millis(300)).await, "each event once");

    // Bad feed queries are clear 400s; without a token, 401.
    for bad in ["after=-1", "after=x", "limit=0", "limit=1001"] {
        let r = p.admin_get(&format!("/events?{bad}")).await;
        assert_eq!(r.status().as_u16(), 400, "{bad}");
    }
    let anonymous = p.http.get(format!("{}/events", p.url(Service::Orchestrator))).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    p.shutdown().await;
}

#[tokio::test]
async fn a_saga_is_folded_as_it_was_at_any_moment() {
    let p = TestPlatform::running(TestConfig { snapshot_every: 2, ..TestConfig::default() }).await;
    let id = p.start_saga(&order("SKU-0007", 2, 250, "DE")).await;
    let done = p.wait_for(id, "a finished saga", WAIT, |s| s["finished_at"].is_string()).await;
    assert_eq!(done["status"], "COMPLETED", "{done:#}");
    let base = p.url(Service::Orchestrator);
    let timeline = done["timeline"].as_array().unwrap().clone();
    for entry in &timeline {
        let at = entry["at"].as_str().unwrap();
        let then = p.get_json(&format!("{base}/sagas/{id}?at={}", urlencode(at))).await;
        assert_eq!(then["status"], entry["status"], "status at {at}");
        assert_eq!(then["current_step"], entry["step"], "step at {at}");
        assert_eq!(then["version"], entry["version"], "version at {at}");
        assert!(then["as_of"].is_string(), "as_of says which moment");
        assert_eq!(then["timeline"].as_array().unwrap().len() as i64, entry["version"].as_i64().unwrap());
    }
    let last = p.get_json(&format!("{base}/sagas/{id}?at={}", urlencode(&chrono::Utc::now().to_rfc3339()))).await;
    assert_eq!(last["steps"], done["steps"], "folded now = the saga now");
    let first_at: chrono::DateTime<chrono::Utc> = timeline[0]["at"].as_str().unwrap().parse().unwrap();
    let before = (first_at - chrono::Duration::milliseconds(1)).to_rfc3339();
    let r = p.http.get(format!("{base}/sagas/{id}?at={}", urlencode(&before))).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404, "before its first event");
    let r = p.http.get(format!("{base}/sagas/{id}?at=yesterday")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    p.shutdown().await;
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn a_second_append_at_the_same_version_is_a_conflict_and_racing_inputs_are_all_applied() {
    let p = TestPlatform::new(TestConfig::default()).await;
    // No participant: the saga waits at its first step while notices race on it.
    p.start(Service::Orchestrator).await;
    let id = p.start_saga(&order("SKU-0008", 1, 100, "DE")).await;
    let pool = sqlx::PgPool::connect(p.database_url(Service::Orchestrator)).await.unwrap();
    let entry = |note: &'static str| TimelineEntry {
        event: Recorded::notice("waiting", note),
        kind: "waiting",
        status: "RUNNING",
        step: Some("reserve_inventory"),
        failure_reason: None,
        note,
        cause_message_id: None,
        cause_type: None,
        sent: json!([]),
    };
    let (mut a, mut b) = (pool.begin().await.unwrap(), pool.begin().await.unwrap());
    let first = entry("first");
    let second = entry("second");
    store::note(&mut a, id, 1, &first, None).await.expect("the first append at version 1");
    a.commit().await.unwrap();
    let lost = store::note(&mut b, id, 1, &second, None).await;
    assert!(matches!(lost, Err(StoreError::Conflict { expected: 1, .. })), "{lost:?}");
    drop(b);

    // Notices from the broker, many at once: each is decided again until it is appended.
    let broker = Broker::new(&p.vhost.amqp_url, 1, "test").unwrap();
    let publisher = infra::amqp::Publisher::new(broker.clone());
    let n = 12;
    let mut sends = Vec::new();
    for i in 0..n {
        let notice = contracts::Notice::Waiting(contracts::notices::Waiting {
            queue: "inventory.commands".into(),
            message_id: Uuid::now_v7(),
            message_type: "inventory.reserve".into(),
            reason: format!("racing notice {i}"),
            since: chrono::Utc::now(),
        });
        let meta = contracts::Meta::new(id, contracts::Message::message_type(&notice));
        sends.push(infra::amqp::Outgoing::new(contracts::topology::REPLIES_EXCHANGE, true, meta, &notice));
    }
    for result in publisher.publish_batch(&sends).await {
        result.expect("published and confirmed");
    }
    let saga = eventually("every notice appended", WAIT, || async {
        let s = p.saga(id).await;
        (s["version"].as_i64() == Some(2 + n)).then_some(s)
    })
    .await;
    let versions: Vec<i64> =
        saga["timeline"].as_array().unwrap().iter().map(|e| e["version"].as_i64().unwrap()).collect();
    assert_eq!(versions, (1..=2 + n).collect::<Vec<_>>());
    p.shutdown().await;
}

#[tokio::test]
async fn a_stream_written_under_an_old_schema_is_read_by_this_build_and_a_projection_is_rebuilt_over_it() {
    let p = TestPlatform::new(TestConfig::default()).await;
    p.start(Service::Orchestrator).await;
    let pool = sqlx::PgPool::connect(p.database_url(Service::Orchestrator)).await.unwrap();
    // A saga as the migration to the event store left one: its start in schema 1 (no total).
    let id = Uuid::now_v7();
    let data = order("SKU-0009", 3, 700, "DE");
    // Another saga waiting at its first step lends its snapshot (no participant runs).
    p.start_saga(&order("SKU-0010", 1, 1, "DE")).await;
    sqlx::query(
        "INSERT INTO sagas (id, definition, definition_version, status, current_step, state, data, version,
                            snapshot_version, deadline)
         SELECT $1, definition, definition_version, status, current_step, state, $2, 1, 1, NULL
         FROM sagas LIMIT 1",
    )
    .bind(id)
    .bind(&data)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO saga_events (saga_id, version, type, schema_version, payload, kind, status, step, note)
         VALUES ($1, 1, 'saga.started', 1, jsonb_build_object('definition', 'order', 'definition_version', 2,
                 'order', $2::jsonb), 'started', 'RUNNING', 'reserve_inventory', 'started (schema 1)')",
    )
    .bind(id)
    .bind(&data)
    .execute(&pool)
    .await
    .unwrap();
    let base = p.url(Service::Orchestrator);
    let now = chrono::Utc::now().to_rfc3339();
    let then = p.get_json(&format!("{base}/sagas/{id}?at={}", urlencode(&now))).await;
    assert_eq!(then["status"], "RUNNING", "{then}");
    assert_eq!(then["current_step"], "reserve_inventory");
    let page = eventually("the old event in the feed", WAIT, || async {
        let page: FeedPage = p.admin_get("/events?after=0&limit=1000").await.json().await.ok()?;
        page.events.into_iter().find(|e| e.order_id == id)
    })
    .await;
    assert_eq!(page.schema_version, 2, "upcast on the way out");
    assert_eq!(page.payload["total_cents"], 2100);

    // A read projection rebuilt from zero over the feed (the `orders rebuild` command) holds the
    // old order with the total the upcaster gave it.
    let db = TestDb::create("orders_old").await;
    let token = "alice-secret-token";
    let common = Settings::for_tests("orders", p.users.amqp_url(Role::Orders), &db.url);
    let settings = orders::OrdersSettings::for_tests(common, &base, Some(token), p.config.admin_tokens);
    orders::rebuild(settings, CancellationToken::new()).await.expect("the rebuild runs to its end");
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let (total, status): (Option<i64>, String) =
        sqlx::query_as("SELECT total_cents, status FROM order_summaries WHERE order_id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .expect("the old order is projected");
    assert_eq!((total, status.as_str()), (Some(2100), "RUNNING"));
    pool.close().await;
    p.shutdown().await;
}
