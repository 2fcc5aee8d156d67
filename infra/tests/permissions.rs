//! Least privilege, proved on the real broker. On a throwaway vhost with the generated users
//! (`users.json`, imported as [`TestUsers`]), each role declares its part of the topology,
//! publishes, consumes, parks for a delayed retry and dead-letters with its own user, in any start
//! order; the orchestrator reads and replays every dead-letter queue. And a role cannot touch what
//! is not its own: payment cannot consume `inventory.commands`, send a command or an event, declare
//! or delete another's queue; the read side (orders) sends nothing and reads only its own queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use contracts::commands::ReleaseInventory;
use contracts::topology::{
    self, COMMANDS_EXCHANGE, EVENTS_EXCHANGE, INVENTORY_QUEUE, ORCHESTRATOR_QUEUE, PAYMENT_QUEUE, QueueType,
    REPLIES_EXCHANGE, Role, Topology,
};
use contracts::{Command, Meta};
use infra::amqp::consumer::{self, ConsumerConfig};
use infra::amqp::{Broker, DeliveryHandler, Incoming, Outcome, Outgoing, Publisher};
use infra::metrics::Metrics;
use infra::testing::{TestUsers, TestVhost, eventually, get_message};
use lapin::options::{BasicConsumeOptions, BasicGetOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);
const PARTICIPANTS: [Role; 4] = [Role::Inventory, Role::Payment, Role::Shipping, Role::Notification];
/// Every role with a queue the orchestrator's messages reach: the participants and the read side.
const CONSUMERS: [Role; 5] = [Role::Inventory, Role::Payment, Role::Shipping, Role::Notification, Role::Orders];

fn part(role: Role) -> Topology {
    Topology::new(QueueType::Classic, 5).for_role(role)
}

fn broker_as(users: &TestUsers, role: Role) -> Broker {
    Broker::new(users.amqp_url(role), 1, role.name()).expect("broker pool")
}

/// A message as its sender writes it, to `exchange` with `routing_key`.
fn message(exchange: &str, routing_key: &str, mandatory: bool) -> Outgoing {
    let saga = Uuid::now_v7();
    let cmd = Command::ReleaseInventory(ReleaseInventory { order_id: saga });
    let mut out = Outgoing::new(exchange, mandatory, Meta::new(saga, "inventory.release"), &cmd);
    out.routing_key = routing_key.to_owned();
    out
}

/// What the orchestrator sends each participant's queue: a command, or for notification an event.
fn to_participant(role: Role) -> Outgoing {
    match role {
        Role::Notification => message(EVENTS_EXCHANGE, "order.completed", true),
        Role::Orders => message(EVENTS_EXCHANGE, "history.saga.started", true),
        _ => message(COMMANDS_EXCHANGE, &format!("{}.release", role.name()), true),
    }
}

/// Parks the first delivery for a delayed retry, dead-letters the second, acks the rest.
#[derive(Default)]
struct RetryThenDeadLetter {
    calls: AtomicUsize,
    acked: AtomicUsize,
}

impl DeliveryHandler for RetryThenDeadLetter {
    async fn handle(&self, _m: &Incoming) -> Outcome {
        match self.calls.fetch_add(1, Ordering::SeqCst) {
            0 => Outcome::Retry { reason: "try again".into() },
            1 => Outcome::DeadLetter { code: "refused", error: "no".into() },
            _ => {
                self.acked.fetch_add(1, Ordering::SeqCst);
                Outcome::Ack
            }
        }
    }
}

/// Run `role`'s real consume loop on its queue with its own user (notices as participants send them).
fn consume(
    users: &TestUsers,
    role: Role,
    handler: Arc<RetryThenDeadLetter>,
    token: &CancellationToken,
) -> JoinHandle<()> {
    let broker = broker_as(users, role);
    let config = ConsumerConfig {
        queue: role.queue().to_owned(),
        prefetch: 4,
        retry_delay: Duration::from_millis(50),
        max_retry_rounds: 3,
        shutdown_timeout: Duration::from_secs(2),
        notices: PARTICIPANTS.contains(&role),
        redeclare: Some(Arc::new(part(role))),
    };
    let publisher = Arc::new(Publisher::new(broker.clone()));
    tokio::spawn(consumer::run(broker, publisher, config, handler, Metrics::new(), token.clone()))
}

/// The depth of `queue`, asked the way the operator API asks (a passive declare needs no permission).
async fn depth(broker: &Broker, queue: &str) -> u32 {
    let ch = broker.channel().await.expect("channel");
    let opts = QueueDeclareOptions { passive: true, ..Default::default() };
    let q = ch.queue_declare(queue.into(), opts, FieldTable::default()).await.expect("passive declare");
    q.message_count()
}

#[tokio::test]
async fn every_role_declares_publishes_and_consumes_its_own_part_with_its_own_user() {
    let vhost = TestVhost::create("perms").await;
    let users = TestUsers::create(&vhost).await;
    // Participants first, on an empty vhost: each needs nobody else's declarations.
    for role in CONSUMERS.into_iter().chain([Role::Orchestrator]) {
        infra::amqp::topology::declare(&broker_as(&users, role), &part(role))
            .await
            .unwrap_or_else(|e| panic!("{role:?} declares its part: {e}"));
    }
    let orchestrator = broker_as(&users, Role::Orchestrator);
    let sent = Publisher::new(orchestrator.clone());
    for role in CONSUMERS {
        sent.publish(&to_participant(role)).await.unwrap_or_else(|e| panic!("command or event to {role:?}: {e}"));
    }
    let token = CancellationToken::new();
    let mut runs = Vec::new();
    for role in CONSUMERS {
        let handler = Arc::new(RetryThenDeadLetter::default());
        runs.push(consume(&users, role, handler, &token));
        if role == Role::Orders {
            continue; // the read side sends nothing
        }
        // Its reply, mandatory: routed to orchestrator.replies, which the orchestrator declared.
        let reply = message(REPLIES_EXCHANGE, &format!("{}.released", role.name()), true);
        Publisher::new(broker_as(&users, role)).publish(&reply).await.unwrap_or_else(|e| panic!("{role:?}: {e}"));
    }
    // The participants park their message (saga.retry, back through the default exchange), then
    // dead-letter it (saga.dlx) and tell the orchestrator (a notice on saga.replies); the read side
    // does the same without a notice.
    for role in CONSUMERS {
        let dlq = topology::dead_letter_queue(role.queue());
        eventually(&format!("{dlq} holds the message"), WAIT, || async {
            (depth(&orchestrator, &dlq).await == 1).then_some(())
        })
        .await;
    }
    // The orchestrator takes four replies and four notices: parks one (which comes back),
    // dead-letters one, acks the other seven deliveries.
    let handler = Arc::new(RetryThenDeadLetter::default());
    runs.push(consume(&users, Role::Orchestrator, handler.clone(), &token));
    eventually("the orchestrator took every reply and notice", WAIT, || async {
        (handler.acked.load(Ordering::SeqCst) == 7).then_some(())
    })
    .await;
    replay_every_dead_letter(&orchestrator, &sent).await;
    token.cancel();
    for run in runs {
        run.await.expect("consumer stops");
    }
}

/// The operator API's path: read each `.dlq` (basic.get) and publish the message back to where it
/// was first sent (a command, an event, or for the orchestrator's own, a reply).
async fn replay_every_dead_letter(orchestrator: &Broker, sent: &Publisher) {
    let queues: Vec<String> = part(Role::Orchestrator).dead_letter_queues().map(|q| q.name.clone()).collect();
    assert_eq!(queues.len(), 6, "{queues:?}");
    for dlq in queues {
        let m = eventually(&format!("a message in {dlq}"), WAIT, || get_message(orchestrator, &dlq)).await;
        let exchange = m.header_str(contracts::envelope::headers::ORIGINAL_EXCHANGE).expect("original exchange");
        let key = m.header_str(contracts::envelope::headers::ORIGINAL_ROUTING_KEY).expect("original key");
        sent.publish_raw(&exchange, &key, true, m.properties.clone(), &m.body)
            .await
            .unwrap_or_else(|e| panic!("replay from {dlq} to {exchange}: {e}"));
    }
}

/// Whether an AMQP operation was refused for lack of permission.
fn refused<T>(result: Result<T, lapin::Error>) -> bool {
    match result {
        Ok(_) => false,
        Err(e) => e.to_string().contains("ACCESS_REFUSED"),
    }
}

#[tokio::test]
async fn a_role_cannot_touch_another_roles_queues_nor_send_what_is_not_its_own() {
    let vhost = TestVhost::create("perms").await;
    let users = TestUsers::create(&vhost).await;
    let guest = Broker::new(&vhost.amqp_url, 1, "guest").expect("broker pool");
    infra::amqp::topology::declare(&guest, &Topology::new(QueueType::Classic, 5)).await.expect("whole topology");
    let payment = broker_as(&users, Role::Payment);
    let ch = || async { payment.channel().await.expect("channel") };
    // Its own queue, yes.
    assert!(ch().await.basic_get(PAYMENT_QUEUE.into(), BasicGetOptions { no_ack: true }).await.is_ok());
    // Another's queue, its dead letters, the orchestrator's replies: no.
    for queue in [INVENTORY_QUEUE, "inventory.commands.dlq", ORCHESTRATOR_QUEUE, "orchestrator.replies.retry"] {
        let consumed = ch()
            .await
            .basic_consume(queue.into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await;
        assert!(refused(consumed), "payment consumes {queue}");
        let got = ch().await.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await;
        assert!(refused(got), "payment reads {queue}");
        let deleted = ch().await.queue_delete(queue.into(), QueueDeleteOptions::default()).await;
        assert!(refused(deleted), "payment deletes {queue}");
    }
    // Nor declare another's part of the topology.
    let declared = infra::amqp::topology::declare(&payment, &part(Role::Inventory)).await;
    assert!(declared.is_err_and(|e| e.to_string().contains("ACCESS_REFUSED")));
    // Nor send a command or an event (only replies and notices).
    let sender = Publisher::new(payment.clone());
    for out in
        [message(COMMANDS_EXCHANGE, "inventory.release", false), message(EVENTS_EXCHANGE, "order.completed", false)]
    {
        assert!(sender.publish(&out).await.is_err(), "payment publishes to {}", out.exchange);
    }
    sender.publish(&message(REPLIES_EXCHANGE, "payment.voided", true)).await.expect("a reply");
    // The orchestrator reads dead letters, but not a participant's parked messages.
    let orchestrator = broker_as(&users, Role::Orchestrator);
    let ch = orchestrator.channel().await.expect("channel");
    let got = ch.basic_get("payment.commands.retry".into(), BasicGetOptions { no_ack: true }).await;
    assert!(refused(got), "the orchestrator reads payment.commands.retry");
    let ch = orchestrator.channel().await.expect("channel");
    assert!(ch.basic_get("payment.commands.dlq".into(), BasicGetOptions { no_ack: true }).await.is_ok());
    // The read side sends nothing (no event, no reply, no command), and reads only its own queue.
    let orders = broker_as(&users, Role::Orders);
    let sender = Publisher::new(orders.clone());
    for out in [
        message(COMMANDS_EXCHANGE, "inventory.release", false),
        message(EVENTS_EXCHANGE, "history.saga.started", false),
        message(REPLIES_EXCHANGE, "payment.voided", false),
    ] {
        assert!(sender.publish(&out).await.is_err(), "orders publishes to {}", out.exchange);
    }
    let ch = orders.channel().await.expect("channel");
    assert!(ch.basic_get(topology::ORDERS_QUEUE.into(), BasicGetOptions { no_ack: true }).await.is_ok());
    let ch = orders.channel().await.expect("channel");
    assert!(refused(ch.basic_get(topology::NOTIFICATION_QUEUE.into(), BasicGetOptions { no_ack: true }).await));
}
