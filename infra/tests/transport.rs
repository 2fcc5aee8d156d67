//! The transport and the outbox against the real broker and database: confirms, returns,
//! consumer outcomes (ack, delayed retry, dead letter with reasons), relay ordering and wake-up.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use contracts::commands::ReleaseInventory;
use contracts::envelope::headers;
use contracts::topology::{self, COMMANDS_EXCHANGE, INVENTORY_QUEUE, QueueType, Topology};
use contracts::{Command, Meta};
use futures_util::StreamExt;
use infra::amqp::consumer::{self, ConsumerConfig};
use infra::amqp::{Broker, DeliveryHandler, Incoming, Outcome, Outgoing, PublishError, Publisher};
use infra::metrics::Metrics;
use infra::outbox::{self, OutboxWaker, Relay};
use infra::testing::{TestDb, TestVhost, eventually};
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

async fn broker(vhost: &TestVhost) -> Broker {
    let broker = Broker::new(&vhost.amqp_url, 2, "transport-test").unwrap();
    infra::amqp::topology::declare(&broker, &Topology::new(QueueType::Classic, 5)).await.unwrap();
    broker
}

fn command(saga: Uuid) -> Outgoing {
    let cmd = Command::ReleaseInventory(ReleaseInventory { order_id: saga });
    Outgoing::new(COMMANDS_EXCHANGE, true, Meta::new(saga, "inventory.release"), &cmd)
}

async fn get_one(broker: &Broker, queue: &str) -> Option<lapin::message::BasicGetMessage> {
    let ch = broker.channel().await.unwrap();
    ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.unwrap()
}

#[tokio::test]
async fn publish_is_confirmed_and_an_unroutable_mandatory_message_is_an_error() {
    let vhost = TestVhost::create("transport").await;
    let broker = broker(&vhost).await;
    let publisher = Publisher::new(broker.clone());
    publisher.publish(&command(Uuid::now_v7())).await.unwrap();
    assert!(get_one(&broker, INVENTORY_QUEUE).await.is_some());

    let mut unroutable = command(Uuid::now_v7());
    unroutable.routing_key = "nobody.listens".into();
    let err = publisher.publish(&unroutable).await.unwrap_err();
    assert!(matches!(err, PublishError::Returned { code: 312, .. }), "{err:?}");

    // Not mandatory: the broker drops it and confirms; that is the documented behaviour for events.
    unroutable.mandatory = false;
    publisher.publish(&unroutable).await.unwrap();
}

struct Scripted {
    calls: AtomicUsize,
    outcome: fn(usize) -> Outcome,
}

impl DeliveryHandler for Scripted {
    async fn handle(&self, _m: &Incoming) -> Outcome {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        (self.outcome)(n)
    }
}

fn consumer_config(max_retry_rounds: u32) -> ConsumerConfig {
    ConsumerConfig {
        queue: INVENTORY_QUEUE.into(),
        prefetch: 4,
        retry_delay: Duration::from_millis(50),
        max_retry_rounds,
        shutdown_timeout: Duration::from_secs(2),
        notices: false,
        redeclare: None,
    }
}

#[tokio::test]
async fn dead_lettered_messages_carry_their_reason_and_the_consumer_goes_on() {
    let vhost = TestVhost::create("transport").await;
    let broker = broker(&vhost).await;
    let publisher = Arc::new(Publisher::new(broker.clone()));
    let handler = Arc::new(Scripted {
        calls: AtomicUsize::new(0),
        outcome: |n| {
            if n == 0 { Outcome::DeadLetter { code: "undecodable", error: "bad".into() } } else { Outcome::Ack }
        },
    });
    let token = CancellationToken::new();
    let run = tokio::spawn(consumer::run(
        broker.clone(),
        publisher.clone(),
        consumer_config(3),
        handler.clone(),
        Metrics::new(),
        token.clone(),
    ));
    publisher.publish(&command(Uuid::now_v7())).await.unwrap();
    publisher.publish(&command(Uuid::now_v7())).await.unwrap();
    eventually("both handled", Duration::from_secs(10), || async {
        (handler.calls.load(Ordering::SeqCst) >= 2).then_some(())
    })
    .await;
    let dlq = topology::dead_letter_queue(INVENTORY_QUEUE);
    let dead = eventually("dead letter arrives", Duration::from_secs(10), || get_one(&broker, &dlq)).await;
    let h = dead.delivery.properties.headers().clone().unwrap();
    let text = |k: &str| h.inner().get(k).and_then(|v| v.as_long_string()).map(|s| s.to_string());
    assert_eq!(text(headers::DEAD_LETTER_REASON).as_deref(), Some("undecodable"));
    assert_eq!(text(headers::DEAD_LETTER_QUEUE).as_deref(), Some(INVENTORY_QUEUE));
    assert_eq!(text(headers::ORIGINAL_EXCHANGE).as_deref(), Some(COMMANDS_EXCHANGE));
    assert_eq!(text(headers::ORIGINAL_ROUTING_KEY).as_deref(), Some("inventory.release"));
    assert!(text(headers::FIRST_FAILURE_AT).is_some());
    token.cancel();
    run.await.unwrap();
}

#[tokio::test]
async fn transient_failures_take_delayed_retry_rounds_then_dead_letter() {
    let vhost = TestVhost::create("transport").await;
    let broker = broker(&vhost).await;
    let publisher = Arc::new(Publisher::new(broker.clone()));
    let handler =
        Arc::new(Scripted { calls: AtomicUsize::new(0), outcome: |_| Outcome::Retry { reason: "db down".into() } });
    let token = CancellationToken::new();
    let run = tokio::spawn(consumer::run(
        broker.clone(),
        publisher.clone(),
        consumer_config(2),
        handler.clone(),
        Metrics::new(),
        token.clone(),
    ));
    publisher.publish(&command(Uuid::now_v7())).await.unwrap();
    let dlq = topology::dead_letter_queue(INVENTORY_QUEUE);
    let dead = eventually("retries exhausted", Duration::from_secs(10), || get_one(&broker, &dlq)).await;
    // First delivery + 2 delayed rounds.
    assert_eq!(handler.calls.load(Ordering::SeqCst), 3);
    let h = dead.delivery.properties.headers().clone().unwrap();
    assert_eq!(
        h.inner().get(headers::DEAD_LETTER_REASON).and_then(|v| v.as_long_string()).map(|s| s.to_string()).as_deref(),
        Some("retries_exhausted")
    );
    assert_eq!(h.inner().get(headers::DELIVERY_ATTEMPT).and_then(|v| v.as_long_long_int()), Some(3));
    token.cancel();
    run.await.unwrap();
}

#[tokio::test]
async fn old_inbox_rows_are_pruned_and_recent_ones_kept() {
    let db = TestDb::create("inbox").await;
    let pool = infra::db::connect(&db.url, 2).await.unwrap();
    infra::db::migrate(&pool, &sqlx::migrate::Migrator::DEFAULT).await.unwrap();
    sqlx::query(
        "INSERT INTO inbox (key, message_id, message_type, saga_id, received_at)
         SELECT 'k' || i, gen_random_uuid(), 't', gen_random_uuid(), now() - make_interval(hours => i)
         FROM generate_series(0, 9) AS i",
    )
    .execute(&pool)
    .await
    .unwrap();
    let pruned = infra::inbox::prune(&pool, Duration::from_secs(3600 * 5) - Duration::from_secs(60)).await.unwrap();
    assert_eq!(pruned, 5, "rows 5..9 hours old go");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox").fetch_one(&pool).await.unwrap();
    assert_eq!(left, 5);
}

#[tokio::test]
async fn the_relay_publishes_committed_rows_in_order_and_deletes_them() {
    let vhost = TestVhost::create("transport").await;
    let db = TestDb::create("transport").await;
    let pool = infra::db::connect(&db.url, 4).await.unwrap();
    infra::db::migrate(&pool, &sqlx::migrate::Migrator::DEFAULT).await.unwrap();
    let broker = broker(&vhost).await;
    // Our own queue to observe order.
    let ch = broker.channel().await.unwrap();
    let q = ch
        .queue_declare("".into(), QueueDeclareOptions { exclusive: true, ..Default::default() }, FieldTable::default())
        .await
        .unwrap();
    ch.queue_bind(
        q.name().clone(),
        COMMANDS_EXCHANGE.into(),
        "inventory.*".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut consumer = ch
        .basic_consume(q.name().clone(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .unwrap();

    let waker = OutboxWaker::default();
    let relay = Relay {
        pool: pool.clone(),
        publisher: Arc::new(Publisher::new(broker.clone())),
        waker: waker.clone(),
        metrics: Metrics::new(),
        batch_size: 7,
        // Long poll: the test passes only if the wake-up works.
        poll_interval: Duration::from_secs(3600),
    };
    let token = CancellationToken::new();
    let run = tokio::spawn(relay.run(token.clone()));
    let saga = Uuid::now_v7();
    let messages: Vec<Outgoing> = (0..20).map(|_| command(saga)).collect();
    let mut tx = pool.begin().await.unwrap();
    outbox::enqueue(&mut tx, &messages).await.unwrap();
    tx.commit().await.unwrap();
    waker.wake();
    let mut got = Vec::new();
    while got.len() < 20 {
        let d = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("relay published")
            .unwrap()
            .unwrap();
        got.push(d.properties.message_id().clone().unwrap().to_string());
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    let sent: Vec<String> = messages.iter().map(|m| m.meta.message_id.to_string()).collect();
    assert_eq!(got, sent, "a saga's messages go out in order");
    let left: i64 = eventually("rows deleted", Duration::from_secs(5), || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(&pool).await.unwrap();
        (n == 0).then_some(n)
    })
    .await;
    assert_eq!(left, 0);
    token.cancel();
    run.await.unwrap();
}

#[tokio::test]
async fn a_deadlock_is_classified_as_a_conflict_to_run_again() {
    let db = TestDb::create("deadlock").await;
    let pool = infra::db::connect(&db.url, 4).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS t (id INT PRIMARY KEY); INSERT INTO t VALUES (1), (2) ON CONFLICT DO NOTHING",
    )
    .execute(&pool)
    .await
    .unwrap();
    let mut a = pool.begin().await.unwrap();
    let mut b = pool.begin().await.unwrap();
    sqlx::query("UPDATE t SET id = id WHERE id = 1").execute(&mut *a).await.unwrap();
    sqlx::query("UPDATE t SET id = id WHERE id = 2").execute(&mut *b).await.unwrap();
    let (ra, rb) = tokio::join!(
        sqlx::query("UPDATE t SET id = id WHERE id = 2").execute(&mut *a),
        sqlx::query("UPDATE t SET id = id WHERE id = 1").execute(&mut *b),
    );
    let err = ra.err().or(rb.err()).expect("PostgreSQL breaks the deadlock by aborting one");
    assert!(matches!(infra::participant::HandlerError::from(err), infra::participant::HandlerError::Conflict(_)));
}

#[tokio::test]
async fn a_consumer_whose_queue_vanished_declares_the_topology_again_and_goes_on() {
    let vhost = TestVhost::create("transport").await;
    let broker = broker(&vhost).await;
    let publisher = Arc::new(Publisher::new(broker.clone()));
    let handler = Arc::new(Scripted { calls: AtomicUsize::new(0), outcome: |_| Outcome::Ack });
    let token = CancellationToken::new();
    let config =
        ConsumerConfig { redeclare: Some(Arc::new(Topology::new(QueueType::Classic, 5))), ..consumer_config(3) };
    let run = tokio::spawn(consumer::run(
        broker.clone(),
        publisher.clone(),
        config,
        handler.clone(),
        Metrics::new(),
        token.clone(),
    ));
    publisher.publish(&command(Uuid::now_v7())).await.unwrap();
    eventually("first handled", Duration::from_secs(10), || async {
        (handler.calls.load(Ordering::SeqCst) >= 1).then_some(())
    })
    .await;
    // The queue disappears under the consumer (as on a broker that lost its definitions): the
    // broker cancels the consumer, which must put the queue back and consume again.
    let ch = broker.channel().await.unwrap();
    ch.queue_delete(INVENTORY_QUEUE.into(), lapin::options::QueueDeleteOptions::default()).await.unwrap();
    eventually("a command is routed and handled again", Duration::from_secs(15), || async {
        // Unroutable (an error, since commands are mandatory) until the queue is back.
        publisher.publish(&command(Uuid::now_v7())).await.ok()?;
        eventually("handled", Duration::from_secs(5), || async {
            (handler.calls.load(Ordering::SeqCst) >= 2).then_some(())
        })
        .await;
        Some(())
    })
    .await;
    token.cancel();
    run.await.unwrap();
}

#[tokio::test]
async fn a_handler_that_panics_does_not_lose_or_pin_its_delivery() {
    let vhost = TestVhost::create("transport").await;
    let broker = broker(&vhost).await;
    let publisher = Arc::new(Publisher::new(broker.clone()));
    let handler = Arc::new(Scripted {
        calls: AtomicUsize::new(0),
        outcome: |n| if n == 0 { panic!("a bug in a handler") } else { Outcome::Ack },
    });
    let metrics = Metrics::new();
    let token = CancellationToken::new();
    let run = tokio::spawn(consumer::run(
        broker.clone(),
        publisher.clone(),
        consumer_config(3),
        handler.clone(),
        metrics.clone(),
        token.clone(),
    ));
    publisher.publish(&command(Uuid::now_v7())).await.unwrap();
    eventually("handled after a delayed round", Duration::from_secs(10), || async {
        (metrics.acked.with_label_values(&[INVENTORY_QUEUE]).get() == 1).then_some(())
    })
    .await;
    assert_eq!(handler.calls.load(Ordering::SeqCst), 2);
    assert_eq!(metrics.retried.with_label_values(&[INVENTORY_QUEUE]).get(), 1);
    token.cancel();
    run.await.unwrap();
}
