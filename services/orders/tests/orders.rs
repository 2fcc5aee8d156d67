//! The read side on the real broker and database: events applied once and in version order per
//! order whatever the delivery order and however often delivered; bad messages dead-lettered with
//! their reason; an unknown event type applied for its facts; the read API and its 400s; the lag in
//! readiness; catch-up of events that never arrived; and a rebuild during a load that ends equal,
//! row by row, to a projection that was never rebuilt.
//!
//! The feed: a stand-in [`Store`] serves exactly the contract's `FeedPage` of
//! `contracts::history::HistoryEvent`s, so that each test writes the history it needs (events out
//! of order, events that never reach the queue) without running sagas; the orchestrator's own
//! `GET /events` feeds the read side in `tests/tests/read_side.rs`. The broker and the databases
//! are the real ones.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use contracts::envelope::headers;
use contracts::history::{EventMetadata, EventType, FeedPage, HistoryEvent};
use contracts::topology::{EVENTS_EXCHANGE, ORDERS_QUEUE, dead_letter_queue};
use infra::amqp::{Broker, Publisher};
use infra::config::Settings;
use infra::testing::{TestDb, TestVhost, eventually, get_message, spawn_app};
use lapin::BasicProperties;
use orders::OrdersSettings;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);
const FEED_TOKEN: &str = "feed-token-0123456789";
const ADMIN: &str = "alice=admin-token-0123456789";
const ADMIN_TOKEN: &str = "admin-token-0123456789";

/// A stand-in for the orchestrator's event store: appends events (positions and versions without
/// gaps) and serves them as `GET /events?after=&limit=` with the operator's bearer token.
#[derive(Clone, Default)]
struct Store {
    events: Arc<Mutex<Vec<HistoryEvent>>>,
}

#[derive(serde::Deserialize)]
struct FeedQuery {
    after: i64,
    limit: usize,
}

async fn serve_feed(State(store): State<Store>, headers: HeaderMap, Query(q): Query<FeedQuery>) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {FEED_TOKEN}")) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let events = store.events.lock().unwrap();
    let page: Vec<HistoryEvent> = events.iter().filter(|e| e.position > q.after).take(q.limit).cloned().collect();
    axum::Json(FeedPage { events: page, head: events.len() as i64 }).into_response()
}

impl Store {
    /// Serve the feed on a free port; its base URL.
    async fn serve(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/events", axum::routing::get(serve_feed)).with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    /// Append the next event of `order`.
    fn append(&self, order: Uuid, t: EventType, payload: Value, status: &str, reason: Option<&str>) -> HistoryEvent {
        self.append_at(order, t, payload, status, reason, Utc::now())
    }

    fn append_at(
        &self,
        order: Uuid,
        t: EventType,
        payload: Value,
        status: &str,
        reason: Option<&str>,
        at: DateTime<Utc>,
    ) -> HistoryEvent {
        let mut events = self.events.lock().unwrap();
        let version = events.iter().filter(|e| e.order_id == order).count() as i64 + 1;
        let e = HistoryEvent {
            position: events.len() as i64 + 1,
            order_id: order,
            version,
            event_type: t,
            schema_version: contracts::history::current_schema(t),
            payload,
            metadata: EventMetadata { causation_id: None, correlation_id: order, recorded_at: at },
            status: status.to_owned(),
            step: (status == "RUNNING").then(|| "reserve_inventory".to_owned()),
            failure_reason: reason.map(str::to_owned),
            note: "test".into(),
        };
        events.push(e.clone());
        e
    }

    fn head(&self) -> i64 {
        self.events.lock().unwrap().len() as i64
    }
}

fn started(customer: &str, currency: &str, quantity: i64, price: i64) -> Value {
    json!({"definition": "order", "definition_version": 1, "total_cents": quantity * price,
           "order": {"customer_id": customer, "currency": currency,
                     "items": [{"sku": "sku-1", "quantity": quantity, "unit_price_cents": price}],
                     "shipping_address": {"name": "A", "line1": "1 Road", "city": "Paris", "postal_code": "75001",
                                          "country": "FR"}}})
}

async fn publish_body(publisher: &Publisher, routing_key: &str, body: &[u8]) {
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_type(routing_key.into())
        .with_message_id(Uuid::now_v7().to_string().into());
    publisher.publish_raw(EVENTS_EXCHANGE, routing_key, false, props, body).await.expect("published");
}

async fn publish(publisher: &Publisher, e: &HistoryEvent) {
    publish_body(publisher, e.event_type.routing_key(), &serde_json::to_vec(e).unwrap()).await;
}

/// One running read service on its own vhost and database.
struct ReadSide {
    base: String,
    db: PgPool,
    publisher: Publisher,
    broker: Broker,
    token: tokio_util::sync::CancellationToken,
    handle: tokio::task::JoinHandle<std::io::Result<()>>,
    _vhost: TestVhost,
    _database: TestDb,
}

impl ReadSide {
    async fn start(feed: &str, tune: impl FnOnce(&mut OrdersSettings)) -> ReadSide {
        let (vhost, database) = tokio::join!(TestVhost::create("orders"), TestDb::create("orders"));
        let mut settings = OrdersSettings::for_tests(
            Settings::for_tests("orders", &vhost.amqp_url, &database.url),
            feed,
            Some(FEED_TOKEN),
            ADMIN,
        );
        tune(&mut settings);
        let app = orders::build(settings).await.expect("orders starts");
        let base = format!("http://{}", app.local_addr());
        let (token, handle) = spawn_app(app);
        let broker = Broker::new(&vhost.amqp_url, 1, "test").unwrap();
        let publisher = Publisher::new(broker.clone());
        let db = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&database.url).await.unwrap();
        ReadSide { base, db, publisher, broker, token, handle, _vhost: vhost, _database: database }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = reqwest::get(format!("{}{path}", self.base)).await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn order(&self, id: Uuid) -> Option<Value> {
        let (status, body) = self.get(&format!("/orders/{id}")).await;
        (status == 200).then_some(body)
    }

    async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.base)).await.unwrap().text().await.unwrap()
    }

    async fn watermark(&self) -> i64 {
        sqlx::query_scalar("SELECT watermark FROM projection_state").fetch_one(&self.db).await.unwrap()
    }

    async fn stop(self) {
        self.token.cancel();
        self.handle.await.unwrap().unwrap();
        self.db.close().await;
    }
}

/// The value of a metric line that starts with `series` (0 when absent).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn events_apply_once_in_version_order_and_the_summary_and_daily_report_show_them() {
    let store = Store::default();
    let feed = store.serve().await;
    let side = ReadSide::start(&feed, |_| {}).await;
    let day = "2026-11-30T10:00:00Z".parse::<DateTime<Utc>>().unwrap();
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let a1 = store.append_at(a, EventType::SagaStarted, started("c-1", "EUR", 2, 1999), "RUNNING", None, day);
    let b1 = store.append_at(b, EventType::SagaStarted, started("c-2", "USD", 1, 500), "RUNNING", None, day);
    let a2 = store.append_at(a, EventType::ReplyReceived, json!({}), "RUNNING", None, day);
    let b2 = store.append_at(b, EventType::ReplyReceived, json!({}), "COMPENSATING", Some("payment.declined"), day);
    let a3 = store.append_at(a, EventType::ReplyReceived, json!({}), "COMPLETED", None, day);
    let b3 = store.append_at(b, EventType::ReplyReceived, json!({}), "COMPENSATED", Some("payment.declined"), day);
    // Out of order within order a (3, then 2, then 1), duplicates, and b interleaved.
    for e in [&a3, &b1, &a2, &b2, &a1, &a1, &b3, &b2] {
        publish(&side.publisher, e).await;
    }
    let summary =
        eventually("order a completed", WAIT, || async { side.order(a).await.filter(|o| o["status"] == "COMPLETED") })
            .await;
    assert_eq!(summary["customer_id"], "c-1");
    assert_eq!(summary["currency"], "EUR");
    assert_eq!(summary["total_cents"], 3998);
    assert_eq!(summary["item_count"], 2);
    assert_eq!(summary["version"], 3);
    assert_eq!(summary["last_position"], a3.position);
    let b_summary =
        eventually("order b compensated", WAIT, || async { side.order(b).await.filter(|o| o["version"] == 3) }).await;
    assert_eq!(b_summary["status"], "COMPENSATED");
    assert_eq!(b_summary["failure_reason"], "payment.declined");

    let (status, report) = side.get("/reports/daily?from=2026-11-29&to=2026-11-30").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["days"].as_array().unwrap().len(), 2, "every day of the range: {report}");
    assert_eq!(report["days"][0]["orders_started"], 0);
    let d = &report["days"][1];
    assert_eq!(d["day"], "2026-11-30");
    assert_eq!(d["orders_started"], 2);
    assert_eq!(d["orders_completed"], 1);
    assert_eq!(d["revenue_cents"], json!({"EUR": 3998}));
    assert_eq!(d["compensations"], json!({"payment.declined": 1}));

    // Listing: by customer, by status, a page at a time.
    let (_, page) = side.get("/orders?customer_id=c-1").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["order_id"], a.to_string());
    let (_, page) = side.get("/orders?status=COMPENSATED").await;
    assert_eq!(page["items"][0]["order_id"], b.to_string());
    let (_, first) = side.get("/orders?limit=1").await;
    assert_eq!(first["items"][0]["order_id"], a.min(b).to_string());
    let next = first["next"].as_str().expect("a next page").to_owned();
    let (_, second) = side.get(&format!("/orders?limit=1&after={next}")).await;
    assert_eq!(second["items"][0]["order_id"], a.max(b).to_string());
    let (_, last) = side.get(&format!("/orders?limit=1&after={}", a.max(b))).await;
    assert_eq!((last["items"].as_array().unwrap().len(), &last["next"]), (0, &Value::Null));

    // Each position once, in the dedupe record and in the counts.
    let positions: Vec<i64> =
        sqlx::query_scalar("SELECT position FROM applied_events ORDER BY position").fetch_all(&side.db).await.unwrap();
    assert_eq!(positions, (1..=6).collect::<Vec<_>>());
    let m = eventually("the duplicates counted", WAIT, || async {
        let m = side.metrics().await;
        (metric(&m, "saga_orders_events_duplicate_total{source=\"consumer\"}") >= 2.0).then_some(m)
    })
    .await;
    assert!(metric(&m, "saga_orders_event_gaps_total{source=\"consumer\"}") >= 1.0, "a gap was seen:\n{m}");
    assert_eq!(metric(&m, "saga_orders_events_applied_total{event_type=\"saga.started\",source=\"consumer\"}"), 2.0);
    // The watermark reaches the head: lag 0, ready.
    eventually("lag 0", WAIT, || async {
        let m = side.metrics().await;
        (metric(&m, "saga_orders_projection_head_position") == 6.0
            && metric(&m, "saga_orders_projection_lag_events") == 0.0)
            .then_some(())
    })
    .await;
    let (status, ready) = side.get("/health/ready").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["checks"]["projection"]["lag"], 0);
    side.stop().await;
}

#[tokio::test]
async fn bad_messages_are_dead_lettered_with_their_reason_and_an_unknown_type_applies_its_facts() {
    let store = Store::default();
    let feed = store.serve().await;
    let side = ReadSide::start(&feed, |_| {}).await;
    let id = Uuid::now_v7();
    publish_body(&side.publisher, "history.saga.started", b"{not json").await;
    let mut invalid =
        serde_json::to_value(store.append(id, EventType::SagaStarted, json!({}), "RUNNING", None)).unwrap();
    invalid["status"] = json!("DONE");
    publish_body(&side.publisher, "history.saga.started", invalid.to_string().as_bytes()).await;
    let dlq = dead_letter_queue(ORDERS_QUEUE);
    let mut reasons = Vec::new();
    while reasons.len() < 2 {
        let m = eventually("a dead letter", WAIT, || async { get_message(&side.broker, &dlq).await }).await;
        reasons.push((
            m.header_str(headers::DEAD_LETTER_REASON).unwrap(),
            m.header_str(headers::DEAD_LETTER_ERROR).unwrap(),
        ));
    }
    reasons.sort();
    assert_eq!(reasons[0].0, "invalid_event");
    assert!(reasons[0].1.contains("unknown status \"DONE\""), "{reasons:?}");
    assert_eq!(reasons[1].0, "malformed");
    assert!(reasons[1].1.contains("not a history event"), "{reasons:?}");

    // A type this build does not know: its facts are applied, its version counts.
    let other = Uuid::now_v7();
    let first = store.append(other, EventType::SagaStarted, started("c-9", "EUR", 1, 100), "RUNNING", None);
    let mut unknown =
        serde_json::to_value(store.append(other, EventType::ReplyReceived, json!({}), "COMPENSATING", Some("x")))
            .unwrap();
    unknown["event_type"] = json!("saga.paused");
    publish(&side.publisher, &first).await;
    publish_body(&side.publisher, "history.saga.paused", unknown.to_string().as_bytes()).await;
    let o = eventually("the unknown type applied", WAIT, || async {
        side.order(other).await.filter(|o| o["version"] == 2)
    })
    .await;
    assert_eq!(o["status"], "COMPENSATING");
    let m = side.metrics().await;
    assert_eq!(metric(&m, "saga_orders_events_applied_total{event_type=\"unknown\",source=\"consumer\"}"), 1.0);
    assert!(get_message(&side.broker, &dlq).await.is_none(), "nothing else dead-lettered");
    side.stop().await;
}

#[tokio::test]
async fn bad_requests_are_clear_400s_unknown_orders_404_and_the_operator_endpoint_needs_a_token() {
    let store = Store::default();
    let feed = store.serve().await;
    let side = ReadSide::start(&feed, |_| {}).await;
    for (path, needle) in [
        ("/orders/42", "UUID"),
        ("/orders?limit=0", "`limit`"),
        ("/orders?limit=1001", "`limit`"),
        ("/orders?limit=ten", "`limit`"),
        ("/orders?after=42", "`after`"),
        ("/orders?status=DONE", "`status`"),
        ("/orders?customer_id=", "`customer_id`"),
        ("/reports/daily?from=2026-13-01", "`from`"),
        ("/reports/daily?to=yesterday", "`to`"),
        ("/reports/daily?from=2026-12-02&to=2026-12-01", "after"),
        ("/reports/daily?from=2020-01-01&to=2026-12-01", "366"),
    ] {
        let r = reqwest::get(format!("{}{path}", side.base)).await.unwrap();
        assert_eq!(r.status().as_u16(), 400, "{path}");
        assert_eq!(r.headers()["content-type"], "application/problem+json", "{path}");
        let body: Value = r.json().await.unwrap();
        assert!(body["detail"].as_str().unwrap().contains(needle), "{path}: {body}");
    }
    let (status, body) = side.get(&format!("/orders/{}", Uuid::now_v7())).await;
    assert_eq!((status, body["type"].as_str()), (404, Some("urn:saga:problem:not-found")));
    let (status, report) = side.get("/reports/daily").await;
    assert_eq!(status, 200);
    assert_eq!(report["days"].as_array().unwrap().len(), 30, "the last 30 days by default");
    let client = reqwest::Client::new();
    for auth in [None, Some("Bearer wrong-token-0123456789"), Some("Basic admin-token-0123456789")] {
        let mut req = client.post(format!("{}/admin/rebuild", side.base));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "{auth:?}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
    }
    side.stop().await;
}

#[tokio::test]
async fn events_that_never_arrived_are_caught_up_from_the_feed_and_readiness_shows_the_lag() {
    let store = Store::default();
    let feed = store.serve().await;
    // Not ready above 2 events behind.
    let side = ReadSide::start(&feed, |s| s.lag_threshold = 2).await;
    let id = Uuid::now_v7();
    // History from before the queue existed: never published, only in the feed.
    store.append(id, EventType::SagaStarted, started("c-1", "EUR", 1, 100), "RUNNING", None);
    for _ in 0..3 {
        store.append(id, EventType::ReplyReceived, json!({}), "RUNNING", None);
    }
    let last = store.append(id, EventType::ReplyReceived, json!({}), "COMPLETED", None);
    let (status, ready) = eventually("not ready: 5 behind", WAIT, || async {
        let (status, ready) = side.get("/health/ready").await;
        (ready["checks"]["projection"]["head"] == 5).then_some((status, ready))
    })
    .await;
    // Either still behind (503 with the lag) or caught up already; the catch-up runs after 2 s.
    if status == 503 {
        assert_eq!(ready["checks"]["projection"]["lag"], 5, "{ready}");
    }
    let o =
        eventually("caught up from the feed", WAIT, || async { side.order(id).await.filter(|o| o["version"] == 5) })
            .await;
    assert_eq!(o["status"], "COMPLETED");
    assert_eq!(o["last_position"], last.position);
    eventually("ready again", WAIT, || async {
        let (status, ready) = side.get("/health/ready").await;
        (status == 200 && ready["checks"]["projection"]["lag"] == 0).then_some(())
    })
    .await;
    // A late copy of an event the catch-up applied changes nothing.
    publish(&side.publisher, &last).await;
    eventually("the late copy recognised", WAIT, || async {
        let m = side.metrics().await;
        (metric(&m, "saga_orders_events_duplicate_total{source=\"consumer\"}") == 1.0).then_some(())
    })
    .await;
    assert_eq!(side.watermark().await, 5);
    side.stop().await;
}

#[tokio::test]
async fn without_the_feed_the_service_is_not_ready_and_says_why() {
    // Nothing listens there.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let side = ReadSide::start(&format!("http://{closed}"), |_| {}).await;
    let ready = eventually("not ready", WAIT, || async {
        let (status, ready) = side.get("/health/ready").await;
        (status == 503 && ready["checks"]["projection"]["status"] == "feed_unreachable").then_some(ready)
    })
    .await;
    assert!(ready["checks"]["projection"]["error"].as_str().unwrap().contains("cannot be reached"), "{ready}");
    side.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_during_a_load_ends_equal_row_by_row_to_a_projection_never_rebuilt() {
    let store = Store::default();
    let feed = store.serve().await;
    let (live, rebuilt) = tokio::join!(ReadSide::start(&feed, |_| {}), ReadSide::start(&feed, |_| {}));
    let publishers = [Publisher::new(live.broker.clone()), Publisher::new(rebuilt.broker.clone())];
    const BATCHES: usize = 20;
    // A load: orders that complete or compensate, events published to both read sides as they
    // are appended, a few orders at a time interleaved; each batch once the live side applied the
    // one before (so the load lasts as long as the rebuild does).
    let live_db = live.db.clone();
    let load = {
        let store = store.clone();
        tokio::spawn(async move {
            let day = |i: usize| Utc::now() - chrono::Duration::days((i % 3) as i64);
            for batch in 0..BATCHES {
                let head = store.head();
                eventually("the live side applied the last batch", WAIT, || async {
                    let n: i64 =
                        sqlx::query_scalar("SELECT count(*) FROM applied_events").fetch_one(&live_db).await.ok()?;
                    (n >= head).then_some(())
                })
                .await;
                let ids: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
                let mut events = Vec::new();
                for (i, id) in ids.iter().enumerate() {
                    let at = day(batch + i);
                    let currency = if i % 2 == 0 { "EUR" } else { "USD" };
                    events.push(store.append_at(
                        *id,
                        EventType::SagaStarted,
                        started("c-load", currency, 1 + i as i64, 250),
                        "RUNNING",
                        None,
                        at,
                    ));
                }
                for (i, id) in ids.iter().enumerate() {
                    let at = day(batch + i);
                    events.push(store.append_at(*id, EventType::ReplyReceived, json!({}), "RUNNING", None, at));
                    let (status, reason) =
                        if i % 3 == 0 { ("COMPENSATED", Some("inventory.rejected")) } else { ("COMPLETED", None) };
                    events.push(store.append_at(*id, EventType::ReplyReceived, json!({}), status, reason, at));
                }
                for e in &events {
                    for p in &publishers {
                        publish(p, e).await;
                    }
                }
            }
        })
    };
    // Mid-load, a rebuild of one of them.
    eventually("some load applied", WAIT, || async { (store.head() >= 60).then_some(()) }).await;
    let at_rebuild = store.head();
    let r = reqwest::Client::new()
        .post(format!("{}/admin/rebuild", rebuilt.base))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let again =
        reqwest::Client::new().post(format!("{}/admin/rebuild", rebuilt.base)).bearer_auth(ADMIN_TOKEN).send().await;
    let again = again.unwrap().status().as_u16();
    assert!(again == 409 || again == 202, "a second rebuild while one runs: {again}");
    load.await.unwrap();
    let head = store.head();
    assert_eq!(head as usize, BATCHES * 5 * 3);
    assert!(at_rebuild < head, "the load went on during the rebuild: {at_rebuild} of {head}");
    let client = reqwest::Client::new();
    let status = eventually("the rebuild finished", WAIT, || async {
        let s: Value = client
            .get(format!("{}/admin/rebuild", rebuilt.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (s["running"] == false && s["finished_at"].is_string()).then_some(s)
    })
    .await;
    assert!(status["error"].is_null(), "the rebuild did not fail: {status}");
    for side in [&live, &rebuilt] {
        eventually("caught up with the head", WAIT, || async { (side.watermark().await == head).then_some(()) }).await;
    }
    let (a, b) =
        (orders::projection::rows(&live.db).await.unwrap(), orders::projection::rows(&rebuilt.db).await.unwrap());
    assert_eq!(a.len(), b.len(), "as many rows");
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y, "the rebuilt projection equals the live one row by row");
    }
    let rebuilds: i64 =
        sqlx::query_scalar("SELECT rebuilds FROM projection_state").fetch_one(&rebuilt.db).await.unwrap();
    assert!(rebuilds >= 1);
    let m = rebuilt.metrics().await;
    assert!(metric(&m, "saga_orders_rebuilds_total{result=\"done\"}") >= 1.0, "{m}");
    assert_eq!(metric(&m, "saga_orders_rebuild_running"), 0.0);
    tokio::join!(live.stop(), rebuilt.stop());
}

#[tokio::test]
async fn the_rebuild_command_replays_the_feed_into_its_database() {
    let store = Store::default();
    let feed = store.serve().await;
    let id = Uuid::now_v7();
    store.append(id, EventType::SagaStarted, started("c-1", "EUR", 3, 100), "RUNNING", None);
    store.append(id, EventType::ReplyReceived, json!({}), "COMPLETED", None);
    let database = TestDb::create("orders").await;
    let bin = env!("CARGO_BIN_EXE_orders").to_owned();
    let (url, db_url) = (feed.clone(), database.url.clone());
    let (code, out) = tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(bin)
            .arg("rebuild")
            .env_clear()
            .env("RUST_LOG", "error")
            .env("ORDERS_DATABASE_URL", db_url)
            .env("ORDERS_ORCHESTRATOR_URL", url)
            .env("ORDERS_FEED_TOKEN", FEED_TOKEN)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("2 events applied"), "{out}");
    let db = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&database.url).await.unwrap();
    let (status, total): (String, i64) =
        sqlx::query_as("SELECT status, total_cents FROM order_summaries WHERE order_id = $1")
            .bind(id)
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!((status.as_str(), total), ("COMPLETED", 300));
    db.close().await;
}

#[test]
fn bad_settings_stop_the_process_with_a_message_naming_the_variable() {
    infra::testing::assert_bad_settings_refused(
        env!("CARGO_BIN_EXE_orders"),
        &[
            ("ORDERS_ORCHESTRATOR_URL", "ftp://x"),
            ("ORDERS_LAG_THRESHOLD", "-1"),
            ("ORDERS_FEED_PAGE_SIZE", "0"),
            ("ORDERS_FEED_POLL_INTERVAL_MS", "0"),
            ("ORDERS_ADMIN_TOKENS", "alice=hunter2"),
        ],
    );
}

/// `GET /openapi.json` lists exactly what the router serves; the validator and Schemathesis pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_the_router_and_schemathesis_passes() {
    let store = Store::default();
    let feed = store.serve().await;
    let side = ReadSide::start(&feed, |_| {}).await;
    let routes = [
        ("GET", "/orders"),
        ("GET", "/orders/{id}"),
        ("GET", "/reports/daily"),
        ("GET", "/admin/rebuild"),
        ("POST", "/admin/rebuild"),
        ("GET", "/health/live"),
        ("GET", "/health/ready"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
    ];
    infra::openapi_checks::check_live_document(&side.base, &routes, Some(ADMIN_TOKEN), 30).await;
    side.stop().await;
}
