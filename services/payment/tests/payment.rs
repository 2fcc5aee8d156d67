//! The payment service on the real broker and database: authorize / decline / void / capture,
//! duplicate and racing deliveries (no double charge), refusals that must be visible (DLQ), the
//! read API, and the edge to the gateway: answers lost after the gateway applied them, a void that
//! reaches the gateway by key without a local row, a compensation that lands between the intent
//! and the call's answer.

use std::time::Duration;

use contracts::commands::{AuthorizePayment, CapturePayment, VoidPayment};
use contracts::topology::REPLIES_EXCHANGE;
use contracts::{Command, Reply};
use infra::amqp::{Broker, Publisher};
use infra::config::Settings;
use infra::testing::{Tap, TestDb, TestVhost, command, eventually, get_message, spawn_app};
use payment::PaymentSettings;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(15);

struct Env {
    _db: TestDb,
    gateway: outside::Sim,
    gateway_url: String,
    vhost: TestVhost,
    base: String,
    publisher: Publisher,
    broker: Broker,
    pool: sqlx::PgPool,
}

async fn env() -> (Env, infra::CancellationToken, tokio::task::JoinHandle<std::io::Result<()>>) {
    let (vhost, db) = tokio::join!(TestVhost::create("payment"), TestDb::create("payment"));
    let gateway = outside::Server::bind("gateway", "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let gateway_url = format!("http://{}", gateway.local_addr());
    let sim = gateway.sim.clone();
    tokio::spawn(gateway.run(infra::CancellationToken::new()));
    let app = payment::build(PaymentSettings::for_tests(
        Settings::for_tests("payment", &vhost.amqp_url, &db.url),
        &gateway_url,
    ))
    .await
    .expect("payment starts");
    let base = format!("http://{}", app.local_addr());
    let pool = infra::db::connect(&db.url, 2).await.unwrap();
    let (token, handle) = spawn_app(app);
    let broker = Broker::new(&vhost.amqp_url, 1, "test").unwrap();
    let publisher = Publisher::new(broker.clone());
    (Env { _db: db, gateway: sim, gateway_url, vhost, base, publisher, broker, pool }, token, handle)
}

fn authorize(order_id: Uuid, amount_cents: i64) -> Command {
    Command::AuthorizePayment(AuthorizePayment {
        order_id,
        customer_id: "c-1".into(),
        amount_cents,
        currency: "EUR".into(),
    })
}

fn key(order_id: Uuid, step: &str, action: &str) -> String {
    contracts::envelope::idempotency_key(order_id, step, action)
}

async fn rows(pool: &sqlx::PgPool, order_id: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM payments WHERE order_id = $1")
        .bind(order_id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn authorize_capture_and_a_duplicate_that_charges_once() {
    let (e, token, handle) = env().await;
    let mut replies = Tap::bind(&e.broker, REPLIES_EXCHANGE, "payment.*").await;
    let id = Uuid::now_v7();
    let k = key(id, "authorize_payment", "do");
    e.publisher.publish(&command(id, &authorize(id, 5000), &k)).await.unwrap();
    let (first_meta, first) = replies.next::<Reply>(WAIT).await;
    assert!(matches!(first, Reply::PaymentAuthorized(_)), "{first:?}");
    // The same command re-sent (new message id, same key): the stored reply again, nothing new.
    e.publisher.publish(&command(id, &authorize(id, 5000), &k)).await.unwrap();
    let (again_meta, again) = replies.next::<Reply>(WAIT).await;
    assert_eq!(again, first);
    assert_eq!(again_meta.message_id, first_meta.message_id, "the stored reply, same message id");
    assert_eq!(rows(&e.pool, id).await, 1);
    let capture = Command::CapturePayment(CapturePayment { order_id: id });
    e.publisher.publish(&command(id, &capture, &key(id, "capture_payment", "do"))).await.unwrap();
    assert!(matches!(replies.next::<Reply>(WAIT).await.1, Reply::PaymentCaptured(_)));
    let body: serde_json::Value =
        reqwest::get(format!("{}/payments/{id}", e.base)).await.unwrap().json().await.unwrap();
    assert_eq!(body["status"], "captured");
    assert_eq!(body["amount_cents"], 5000);
    token.cancel();
    handle.await.unwrap().unwrap();
}

#[tokio::test]
async fn racing_deliveries_of_one_command_authorize_once() {
    let (e, token, handle) = env().await;
    let mut replies = Tap::bind(&e.broker, REPLIES_EXCHANGE, "payment.*").await;
    let id = Uuid::now_v7();
    let k = key(id, "authorize_payment", "do");
    let msgs: Vec<_> = (0..8).map(|_| command(id, &authorize(id, 100), &k)).collect();
    for r in e.publisher.publish_batch(&msgs).await {
        r.unwrap();
    }
    let mut ids = std::collections::HashSet::new();
    for _ in 0..8 {
        let (meta, reply) = replies.next::<Reply>(WAIT).await;
        assert!(matches!(reply, Reply::PaymentAuthorized(_)));
        ids.insert(meta.message_id);
    }
    assert_eq!(ids.len(), 1, "every delivery answered with the one stored reply");
    assert_eq!(rows(&e.pool, id).await, 1);
    token.cancel();
    handle.await.unwrap().unwrap();
}

#[tokio::test]
async fn over_the_limit_is_declined_and_void_is_safe_in_every_state() {
    let (e, token, handle) = env().await;
    let mut replies = Tap::bind(&e.broker, REPLIES_EXCHANGE, "payment.*").await;
    let id = Uuid::now_v7();
    e.publisher.publish(&command(id, &authorize(id, 1_000_001), &key(id, "authorize_payment", "do"))).await.unwrap();
    match replies.next::<Reply>(WAIT).await.1 {
        Reply::PaymentDeclined(r) => assert_eq!(r.code, "limit_exceeded"),
        other => panic!("{other:?}"),
    }
    // Voiding a declined payment, and an unknown one, are no-op successes.
    let void = |o| Command::VoidPayment(VoidPayment { order_id: o });
    e.publisher.publish(&command(id, &void(id), &key(id, "authorize_payment", "compensate"))).await.unwrap();
    assert!(matches!(replies.next::<Reply>(WAIT).await.1, Reply::PaymentVoided(_)));
    let unknown = Uuid::now_v7();
    e.publisher
        .publish(&command(unknown, &void(unknown), &key(unknown, "authorize_payment", "compensate")))
        .await
        .unwrap();
    assert!(matches!(replies.next::<Reply>(WAIT).await.1, Reply::PaymentVoided(_)));
    // ... and the late authorize of that voided order is refused instead of holding money.
    e.publisher
        .publish(&command(unknown, &authorize(unknown, 100), &key(unknown, "authorize_payment", "do")))
        .await
        .unwrap();
    match replies.next::<Reply>(WAIT).await.1 {
        Reply::PaymentDeclined(r) => assert_eq!(r.code, "voided_before_authorization"),
        other => panic!("{other:?}"),
    }
    token.cancel();
    handle.await.unwrap().unwrap();
}

#[tokio::test]
async fn voiding_a_captured_payment_goes_to_the_dead_letter_queue() {
    let (e, token, handle) = env().await;
    let mut replies = Tap::bind(&e.broker, REPLIES_EXCHANGE, "payment.*").await;
    let id = Uuid::now_v7();
    e.publisher.publish(&command(id, &authorize(id, 100), &key(id, "authorize_payment", "do"))).await.unwrap();
    replies.next::<Reply>(WAIT).await;
    e.publisher
        .publish(&command(
            id,
            &Command::CapturePayment(CapturePayment { order_id: id }),
            &key(id, "capture_payment", "do"),
        ))
        .await
        .unwrap();
    replies.next::<Reply>(WAIT).await;
    e.publisher
        .publish(&command(
            id,
            &Command::VoidPayment(VoidPayment { order_id: id }),
            &key(id, "authorize_payment", "compensate"),
        ))
        .await
        .unwrap();
    let dead =
        eventually("void lands in payment.commands.dlq", WAIT, || get_message(&e.broker, "payment.commands.dlq")).await;
    assert_eq!(dead.header_str("x-dead-letter-reason").as_deref(), Some("void_after_capture"));
    // Refused means rolled back: the inbox row and the reply commit together or not at all, so
    // no inbox row for the void proves no reply was or will be sent.
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox WHERE key = $1")
        .bind(key(id, "authorize_payment", "compensate"))
        .fetch_one(&e.pool)
        .await
        .unwrap();
    assert_eq!(recorded, 0, "a refused void leaves no inbox row");
    let status: String = sqlx::query_scalar("SELECT status FROM payments WHERE order_id = $1")
        .bind(id)
        .fetch_one(&e.pool)
        .await
        .unwrap();
    assert_eq!(status, "captured", "the captured payment is untouched");
    let missing = reqwest::get(format!("{}/payments/{}", e.base, Uuid::now_v7())).await.unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    let bad = reqwest::get(format!("{}/payments/not-a-uuid", e.base)).await.unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    let _ = &e.vhost;
    token.cancel();
    handle.await.unwrap().unwrap();
}

async fn status(pool: &sqlx::PgPool, order_id: Uuid) -> Option<String> {
    sqlx::query_scalar("SELECT status FROM payments WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(pool)
        .await
        .unwrap()
}

fn void(order_id: Uuid) -> Command {
    Command::VoidPayment(VoidPayment { order_id })
}

#[tokio::test]
async fn answers_lost_after_the_gateway_applied_them_are_recovered_and_never_doubled() {
    let (e, token, handle) = env().await;
    let mut replies = Tap::bind(&e.broker, REPLIES_EXCHANGE, "payment.*").await;
    for mode in [outside::AmbiguousMode::Error, outside::AmbiguousMode::Drop] {
        e.gateway.set_behaviour(outside::Behaviour { ambiguous_rate: 1.0, ambiguous_mode: mode, ..Default::default() });
        let id = Uuid::now_v7();
        e.publisher.publish(&command(id, &authorize(id, 700), &key(id, "authorize_payment", "do"))).await.unwrap();
        assert!(matches!(replies.next::<Reply>(WAIT).await.1, Reply::PaymentAuthorized(_)), "{mode:?}");
        let capture = Command::CapturePayment(CapturePayment { order_id: id });
        e.publisher.publish(&command(id, &capture, &key(id, "capture_payment", "do"))).await.unwrap();
        assert!(matches!(replies.next::<Reply>(WAIT).await.1, Reply::PaymentCaptured(_)), "{mode:?}");
        assert_eq!(status(&e.pool, id).await.as_deref(), Some("captured"));
    }
    let stats = e.gateway.stats();
    assert_eq!(stats.ambiguous, 4, "every new operation lost its answer: {stats:?}");
    assert_eq!(stats.operations, 4, "two authorizations and two captures, each applied once: {stats:?}");
    assert_eq!((stats.captured, stats.authorized_open), (Some(2), Some(0)), "{stats:?}");
    token.cancel();
    handle.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_void_reaches_the_gateway_by_key_even_without_a_payment_row() {
    let (e, token, handle) = env().await;
    let mut replies = Tap::bind(&e.broker, REPLIES_EXCHANGE, "payment.*").await;
    let id = Uuid::now_v7();
    // A hold the gateway made but this participant never recorded (its intent lost with a restored
    // database, say): only the key can find it.
    let hold = reqwest::Client::new()
        .post(format!("{}/authorizations", e.gateway_url))
        .header("Idempotency-Key", payment::gateway::authorize_key(id))
        .json(&serde_json::json!({"amount_cents": 900, "currency": "EUR"}))
        .send()
        .await
        .unwrap();
    assert_eq!(hold.status().as_u16(), 201);
    assert_eq!(e.gateway.stats().authorized_open, Some(1));
    e.publisher.publish(&command(id, &void(id), &key(id, "authorize_payment", "compensate"))).await.unwrap();
    assert!(matches!(replies.next::<Reply>(WAIT).await.1, Reply::PaymentVoided(_)));
    let stats = e.gateway.stats();
    assert_eq!((stats.authorized_open, stats.voided), (Some(0), Some(1)), "{stats:?}");
    // The late authorize is refused here, and would be at the gateway too.
    e.publisher.publish(&command(id, &authorize(id, 900), &key(id, "authorize_payment", "do"))).await.unwrap();
    match replies.next::<Reply>(WAIT).await.1 {
        Reply::PaymentDeclined(r) => assert_eq!(r.code, "voided_before_authorization"),
        other => panic!("{other:?}"),
    }
    assert_eq!(e.gateway.stats().authorized_open, Some(0));
    token.cancel();
    handle.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_void_between_the_intent_and_the_gateways_answer_leaves_nothing_held() {
    let (e, token, handle) = env().await;
    let mut replies = Tap::bind(&e.broker, REPLIES_EXCHANGE, "payment.*").await;
    let id = Uuid::now_v7();
    // The gateway is down: the authorize records its intent, its call fails, it waits for a retry
    // round (as it would after a crash between the intent and the answer).
    e.gateway.set_behaviour(outside::Behaviour { outage: true, ..Default::default() });
    e.publisher.publish(&command(id, &authorize(id, 300), &key(id, "authorize_payment", "do"))).await.unwrap();
    eventually("the intent is committed", WAIT, || async {
        (status(&e.pool, id).await.as_deref() == Some("authorizing")).then_some(())
    })
    .await;
    // The saga gives up meanwhile and voids; the gateway comes back.
    e.gateway.set_behaviour(outside::Behaviour::default());
    e.publisher.publish(&command(id, &void(id), &key(id, "authorize_payment", "compensate"))).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(replies.next::<Reply>(WAIT).await.1);
    }
    assert!(got.iter().any(|r| matches!(r, Reply::PaymentVoided(_))), "{got:?}");
    assert_eq!(status(&e.pool, id).await.as_deref(), Some("voided"));
    let stats = e.gateway.stats();
    assert_eq!(stats.authorized_open, Some(0), "whichever came first at the gateway, nothing stays held: {stats:?}");
    token.cancel();
    handle.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_gateway_refusal_declines_an_authorize_and_dead_letters_a_capture() {
    let (e, token, handle) = env().await;
    let mut replies = Tap::bind(&e.broker, REPLIES_EXCHANGE, "payment.*").await;
    let id = Uuid::now_v7();
    e.gateway.set_behaviour(outside::Behaviour { refused_keys: vec![format!("{id}:authorize")], ..Default::default() });
    e.publisher.publish(&command(id, &authorize(id, 300), &key(id, "authorize_payment", "do"))).await.unwrap();
    match replies.next::<Reply>(WAIT).await.1 {
        Reply::PaymentDeclined(r) => assert_eq!(r.code, "gateway_refused"),
        other => panic!("{other:?}"),
    }
    assert_eq!(status(&e.pool, id).await.as_deref(), Some("declined"));
    let other = Uuid::now_v7();
    e.gateway
        .set_behaviour(outside::Behaviour { refused_keys: vec![format!("{other}:capture")], ..Default::default() });
    e.publisher.publish(&command(other, &authorize(other, 300), &key(other, "authorize_payment", "do"))).await.unwrap();
    replies.next::<Reply>(WAIT).await;
    let capture = Command::CapturePayment(CapturePayment { order_id: other });
    e.publisher.publish(&command(other, &capture, &key(other, "capture_payment", "do"))).await.unwrap();
    let dead =
        eventually("capture lands in payment.commands.dlq", WAIT, || get_message(&e.broker, "payment.commands.dlq"))
            .await;
    assert_eq!(dead.header_str("x-dead-letter-reason").as_deref(), Some("capture_refused"));
    assert_eq!(status(&e.pool, other).await.as_deref(), Some("capturing"), "the intent stays for a retry");
    assert_eq!(e.gateway.stats().authorized_open, Some(1), "the authorization is still held");
    token.cancel();
    handle.await.unwrap().unwrap();
}

/// `GET /openapi.json` lists exactly what the router serves; the validator and Schemathesis pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_the_router_and_schemathesis_passes() {
    let (e, token, _handle) = env().await;
    let routes = [
        ("GET", "/payments/{order_id}"),
        ("GET", "/payments"),
        ("GET", "/health/live"),
        ("GET", "/health/ready"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
    ];
    infra::openapi_checks::check_live_document(&e.base, &routes, None, 30).await;
    token.cancel();
}
