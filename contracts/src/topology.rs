//! The broker topology as data: exchanges, queues, bindings, dead-letter and retry routes; and
//! who may do what with them.
//!
//! `infra/deploy/rabbitmq/definitions.json` is generated from it ([`Topology::definitions_json`]),
//! and so is `users.json` ([`Topology::users_json`]: one broker user per process, with
//! least-privilege permissions); tests keep both files equal to the code.
//!
//! Each process declares (idempotently, at start) only its [`Role`]'s part
//! ([`Topology::for_role`]), and its user's permissions ([`Topology::access`]) are derived from
//! exactly that part plus what the process publishes and reads at run time.
//!
//! Shape:
//! - topic exchanges `saga.commands`, `saga.replies`, `saga.events`;
//! - one durable consuming queue per role (`inventory.commands` bound `inventory.*`, ...,
//!   `orchestrator.replies` bound `#`, `notification.events` bound `order.*`, `orders.history`
//!   bound `history.#`: the read side's order history);
//! - each consuming queue dead-letters through the direct exchange `saga.dlx` (routing key = the
//!   queue's name) into its own `<queue>.dlq`;
//! - each consuming queue has a delay queue `<queue>.retry`, reached through the direct exchange
//!   `saga.retry` (routing key = the queue's name); a message parked there with a per-message
//!   expiration returns to its queue through the default exchange when it expires.
//!
//! Who declares what ([`Role`]): each process declares its own consuming queue with its `.dlq`
//! and `.retry` queues and their bindings, and the exchanges it publishes to or binds from. The
//! orchestrator, which starts every flow and operates the dead letters, also declares the queues
//! its commands and events are routed to (the participants' command queues, `notification.events`
//! and the read side's `orders.history`) and every `.dlq`: so a command is never returned as
//! unroutable, nor an event (a history event included) dropped, because its consumer has not
//! started yet, and the operator API finds every dead-letter queue. Participants and the read
//! side declare nothing of anyone else's.

use std::collections::BTreeSet;

use serde_json::{Value, json};

pub const COMMANDS_EXCHANGE: &str = "saga.commands";
pub const REPLIES_EXCHANGE: &str = "saga.replies";
pub const EVENTS_EXCHANGE: &str = "saga.events";
pub const DEAD_LETTER_EXCHANGE: &str = "saga.dlx";
pub const RETRY_EXCHANGE: &str = "saga.retry";

pub const INVENTORY_QUEUE: &str = "inventory.commands";
pub const PAYMENT_QUEUE: &str = "payment.commands";
pub const SHIPPING_QUEUE: &str = "shipping.commands";
pub const ORCHESTRATOR_QUEUE: &str = "orchestrator.replies";
pub const NOTIFICATION_QUEUE: &str = "notification.events";
/// The read side's queue: every event of the orders' history (`history.#`).
pub const ORDERS_QUEUE: &str = "orders.history";

/// Name of the dead-letter queue of `queue`.
pub fn dead_letter_queue(queue: &str) -> String {
    format!("{queue}.dlq")
}

/// Name of the delayed-retry queue of `queue`.
pub fn retry_queue(queue: &str) -> String {
    format!("{queue}.retry")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    Topic,
    Direct,
}

impl ExchangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Topic => "topic",
            ExchangeKind::Direct => "direct",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub name: &'static str,
    pub kind: ExchangeKind,
}

/// The queue type of the consuming queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueType {
    /// One node: the default.
    #[default]
    Classic,
    /// A cluster: replicated, with `x-delivery-limit` as the poison-message guard.
    Quorum,
}

impl QueueType {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        }
    }
}

impl std::str::FromStr for QueueType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "classic" => Ok(QueueType::Classic),
            "quorum" => Ok(QueueType::Quorum),
            other => Err(format!("unknown queue type `{other}` (expected classic or quorum)")),
        }
    }
}

/// A queue argument value (`x-...`): the broker only needs strings and integers here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgValue {
    Str(String),
    Int(i64),
}

/// What a queue is for; decides its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueRole {
    /// A queue a service consumes from; dead-letters into its `.dlq`.
    Consuming,
    /// Where the rejected messages of one consuming queue rest, for an operator.
    DeadLetter,
    /// Where messages of one consuming queue wait out a delay before going back to it.
    Retry,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub exchange: &'static str,
    pub routing_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    pub name: String,
    pub role: QueueRole,
    /// For dead-letter and retry queues: the consuming queue they belong to.
    pub owner: Option<String>,
    pub bindings: Vec<Binding>,
    pub arguments: Vec<(&'static str, ArgValue)>,
}

/// The whole topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub exchanges: Vec<Exchange>,
    pub queues: Vec<Queue>,
}

/// The consuming queues: (queue, exchange, binding key).
const CONSUMERS: &[(&str, &str, &str)] = &[
    (INVENTORY_QUEUE, COMMANDS_EXCHANGE, "inventory.*"),
    (PAYMENT_QUEUE, COMMANDS_EXCHANGE, "payment.*"),
    (SHIPPING_QUEUE, COMMANDS_EXCHANGE, "shipping.*"),
    (ORCHESTRATOR_QUEUE, REPLIES_EXCHANGE, "#"),
    (NOTIFICATION_QUEUE, EVENTS_EXCHANGE, "order.*"),
    (ORDERS_QUEUE, EVENTS_EXCHANGE, "history.#"),
];

impl Topology {
    /// The platform's topology with the given queue type; `delivery_limit` applies to quorum
    /// queues only (the broker dead-letters a message redelivered more often than that).
    pub fn new(queue_type: QueueType, delivery_limit: u32) -> Self {
        let exchanges = vec![
            Exchange { name: COMMANDS_EXCHANGE, kind: ExchangeKind::Topic },
            Exchange { name: REPLIES_EXCHANGE, kind: ExchangeKind::Topic },
            Exchange { name: EVENTS_EXCHANGE, kind: ExchangeKind::Topic },
            Exchange { name: DEAD_LETTER_EXCHANGE, kind: ExchangeKind::Direct },
            Exchange { name: RETRY_EXCHANGE, kind: ExchangeKind::Direct },
        ];
        let mut queues = Vec::new();
        for &(name, exchange, key) in CONSUMERS {
            let mut arguments = vec![
                ("x-queue-type", ArgValue::Str(queue_type.as_str().into())),
                ("x-dead-letter-exchange", ArgValue::Str(DEAD_LETTER_EXCHANGE.into())),
                ("x-dead-letter-routing-key", ArgValue::Str(name.into())),
            ];
            if queue_type == QueueType::Quorum {
                arguments.push(("x-delivery-limit", ArgValue::Int(i64::from(delivery_limit))));
            }
            queues.push(Queue {
                name: name.into(),
                role: QueueRole::Consuming,
                owner: None,
                bindings: vec![Binding { exchange, routing_key: key.into() }],
                arguments,
            });
            queues.push(Queue {
                name: dead_letter_queue(name),
                role: QueueRole::DeadLetter,
                owner: Some(name.into()),
                bindings: vec![Binding { exchange: DEAD_LETTER_EXCHANGE, routing_key: name.into() }],
                arguments: vec![("x-queue-type", ArgValue::Str(queue_type.as_str().into()))],
            });
            queues.push(Queue {
                name: retry_queue(name),
                role: QueueRole::Retry,
                owner: Some(name.into()),
                bindings: vec![Binding { exchange: RETRY_EXCHANGE, routing_key: name.into() }],
                arguments: vec![
                    ("x-queue-type", ArgValue::Str(QueueType::Classic.as_str().into())),
                    ("x-dead-letter-exchange", ArgValue::Str(String::new())),
                    ("x-dead-letter-routing-key", ArgValue::Str(name.into())),
                ],
            });
        }
        Topology { exchanges, queues }
    }

    pub fn queue(&self, name: &str) -> Option<&Queue> {
        self.queues.iter().find(|q| q.name == name)
    }

    /// Names of the dead-letter queues, in declaration order.
    pub fn dead_letter_queues(&self) -> impl Iterator<Item = &Queue> {
        self.queues.iter().filter(|q| q.role == QueueRole::DeadLetter)
    }

    /// The RabbitMQ definitions document (management console import / `load_definitions`) for
    /// this topology in `vhost`.
    pub fn definitions_json(&self, vhost: &str) -> Value {
        let args = |a: &[(&'static str, ArgValue)]| -> Value {
            let map: serde_json::Map<String, Value> = a
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        ArgValue::Str(s) => Value::from(s.clone()),
                        ArgValue::Int(i) => Value::from(*i),
                    };
                    ((*k).to_owned(), v)
                })
                .collect();
            Value::Object(map)
        };
        let exchanges: Vec<Value> = self
            .exchanges
            .iter()
            .map(|e| {
                json!({"name": e.name, "vhost": vhost, "type": e.kind.as_str(), "durable": true,
                       "auto_delete": false, "internal": false, "arguments": {}})
            })
            .collect();
        let queues: Vec<Value> = self
            .queues
            .iter()
            .map(|q| {
                json!({"name": q.name, "vhost": vhost, "durable": true, "auto_delete": false,
                       "arguments": args(&q.arguments)})
            })
            .collect();
        let bindings: Vec<Value> = self
            .queues
            .iter()
            .flat_map(|q| {
                q.bindings.iter().map(move |b| {
                    json!({"source": b.exchange, "vhost": vhost, "destination": q.name,
                           "destination_type": "queue", "routing_key": b.routing_key,
                           "arguments": {}})
                })
            })
            .collect();
        json!({
            "vhosts": [{"name": vhost}],
            "exchanges": exchanges,
            "queues": queues,
            "bindings": bindings,
        })
    }
}

/// How RabbitMQ names the default exchange (`""`) in its permission checks.
pub const DEFAULT_EXCHANGE_RESOURCE: &str = "amq.default";

/// A process of the platform as the broker sees it: the part of the topology it declares, and
/// the user it connects as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Orchestrator,
    Inventory,
    Payment,
    Shipping,
    Notification,
    /// The read side (`services/orders`): consumes the order history, publishes nothing of its own.
    Orders,
}

impl Role {
    pub const ALL: [Role; 6] =
        [Role::Orchestrator, Role::Inventory, Role::Payment, Role::Shipping, Role::Notification, Role::Orders];

    /// Its name, which is also the name of its broker user.
    pub fn name(self) -> &'static str {
        match self {
            Role::Orchestrator => "orchestrator",
            Role::Inventory => "inventory",
            Role::Payment => "payment",
            Role::Shipping => "shipping",
            Role::Notification => "notification",
            Role::Orders => "orders",
        }
    }

    /// The queue it consumes.
    pub fn queue(self) -> &'static str {
        match self {
            Role::Orchestrator => ORCHESTRATOR_QUEUE,
            Role::Inventory => INVENTORY_QUEUE,
            Role::Payment => PAYMENT_QUEUE,
            Role::Shipping => SHIPPING_QUEUE,
            Role::Notification => NOTIFICATION_QUEUE,
            Role::Orders => ORDERS_QUEUE,
        }
    }

    /// The exchanges it publishes to. Every role's consumer moves what it dead-letters or parks
    /// to `saga.dlx` or `saga.retry`; the orchestrator sends commands and events, and replays a
    /// dead letter to where it was first sent (any of the three topic exchanges); participants
    /// send replies and notices; the read side sends nothing else.
    pub fn publishes_to(self) -> &'static [&'static str] {
        match self {
            Role::Orchestrator => {
                &[COMMANDS_EXCHANGE, EVENTS_EXCHANGE, REPLIES_EXCHANGE, DEAD_LETTER_EXCHANGE, RETRY_EXCHANGE]
            }
            Role::Orders => &[DEAD_LETTER_EXCHANGE, RETRY_EXCHANGE],
            _ => &[REPLIES_EXCHANGE, DEAD_LETTER_EXCHANGE, RETRY_EXCHANGE],
        }
    }

    /// Whether it declares the queues its messages are routed to and operates every dead-letter
    /// queue: the orchestrator.
    fn is_hub(self) -> bool {
        self == Role::Orchestrator
    }

    /// The password of its broker user in the generated `users.json`: a development password,
    /// for the local docker compose stack only. A real deployment creates the users with
    /// passwords of its own (and the same permissions).
    pub fn dev_password(self) -> String {
        format!("{}-dev-password", self.name())
    }

    /// Whether this role declares `queue` (see the module doc).
    fn declares(self, queue: &Queue) -> bool {
        let owned = queue.owner.as_deref() == Some(self.queue());
        match queue.role {
            QueueRole::Consuming => {
                queue.name == self.queue()
                    || (self.is_hub() && queue.bindings.iter().any(|b| self.publishes_to().contains(&b.exchange)))
            }
            QueueRole::DeadLetter => owned || self.is_hub(),
            QueueRole::Retry => owned,
        }
    }
}

impl Queue {
    /// Its `x-dead-letter-exchange` argument (`""` is the default exchange), if it has one.
    pub fn dead_letter_exchange(&self) -> Option<&str> {
        self.arguments.iter().find_map(|(k, v)| match v {
            ArgValue::Str(s) if *k == "x-dead-letter-exchange" => Some(s.as_str()),
            _ => None,
        })
    }
}

/// The resources a role needs each permission on, named as RabbitMQ checks them (the default
/// exchange is [`DEFAULT_EXCHANGE_RESOURCE`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Access {
    pub configure: BTreeSet<String>,
    pub write: BTreeSet<String>,
    pub read: BTreeSet<String>,
}

/// A user's permissions in one vhost: three anchored regular expressions, as RabbitMQ takes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub configure: String,
    pub write: String,
    pub read: String,
}

impl Access {
    /// Regular expressions that match exactly these resources and nothing else.
    pub fn permissions(&self) -> Permissions {
        Permissions { configure: exactly(&self.configure), write: exactly(&self.write), read: exactly(&self.read) }
    }
}

/// A regular expression matching exactly `names` (`^$`, nothing, when there are none).
fn exactly(names: &BTreeSet<String>) -> String {
    if names.is_empty() {
        return "^$".to_owned();
    }
    let alternatives: Vec<String> = names.iter().map(|n| escape_regex(n)).collect();
    format!("^({})$", alternatives.join("|"))
}

fn escape_regex(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        if "\\.^$|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Topology {
    /// The part of this topology `role` declares, in the same order: the queues of
    /// [`Role`]'s rule with their bindings, and the exchanges it publishes to or binds from.
    pub fn for_role(&self, role: Role) -> Topology {
        let queues: Vec<Queue> = self.queues.iter().filter(|q| role.declares(q)).cloned().collect();
        let bound_from = |name: &str| queues.iter().any(|q| q.bindings.iter().any(|b| b.exchange == name));
        let exchanges = self
            .exchanges
            .iter()
            .filter(|e| role.publishes_to().contains(&e.name) || bound_from(e.name))
            .cloned()
            .collect();
        Topology { exchanges, queues }
    }

    /// What `role` needs on the broker, from RabbitMQ's access-control table: configure on what
    /// it declares; write on the exchanges it publishes to, on the dead-letter exchange of each
    /// queue it declares and on each queue it binds; read on the queue it consumes (the
    /// orchestrator: also every `.dlq`, for the operator API), on each queue it declares with a
    /// dead-letter exchange and on each exchange it binds from. Passive declarations need nothing;
    /// dead-lettering and expiry are done by the broker itself.
    pub fn access(&self, role: Role) -> Access {
        let part = self.for_role(role);
        let mut a = Access::default();
        a.configure.extend(part.exchanges.iter().map(|e| e.name.to_owned()));
        a.configure.extend(part.queues.iter().map(|q| q.name.clone()));
        a.write.extend(role.publishes_to().iter().map(|e| (*e).to_owned()));
        a.read.insert(role.queue().to_owned());
        if role.is_hub() {
            a.read.extend(self.dead_letter_queues().map(|q| q.name.clone()));
        }
        for q in &part.queues {
            if let Some(dlx) = q.dead_letter_exchange() {
                a.write.insert(if dlx.is_empty() { DEFAULT_EXCHANGE_RESOURCE } else { dlx }.to_owned());
                a.read.insert(q.name.clone());
            }
            for b in &q.bindings {
                a.write.insert(q.name.clone());
                a.read.insert(b.exchange.to_owned());
            }
        }
        a
    }

    /// The `users.json` definitions document for `vhost`: one user per [`Role`] with exactly the
    /// permissions of [`Topology::access`] and a development password ([`Role::dev_password`]),
    /// and `guest`, the development administrator (all permissions; the management console and
    /// `infra/dev` use it).
    pub fn users_json(&self, vhost: &str) -> Value {
        let mut users = vec![json!({"name": "guest", "password": "guest", "tags": "administrator"})];
        let mut permissions =
            vec![json!({"user": "guest", "vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"})];
        for role in Role::ALL {
            let p = self.access(role).permissions();
            users.push(json!({"name": role.name(), "password": role.dev_password(), "tags": ""}));
            permissions.push(json!({"user": role.name(), "vhost": vhost, "configure": p.configure,
                                    "write": p.write, "read": p.read}));
        }
        json!({"users": users, "permissions": permissions})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_consuming_queue_has_its_own_dead_letter_route() {
        let t = Topology::new(QueueType::Classic, 5);
        for q in t.queues.iter().filter(|q| q.role == QueueRole::Consuming) {
            let dlq = t.queue(&dead_letter_queue(&q.name)).expect("dlq declared");
            assert!(q.arguments.contains(&("x-dead-letter-exchange", ArgValue::Str(DEAD_LETTER_EXCHANGE.into()))));
            assert!(q.arguments.contains(&("x-dead-letter-routing-key", ArgValue::Str(q.name.clone()))));
            assert_eq!(dlq.bindings, vec![Binding { exchange: DEAD_LETTER_EXCHANGE, routing_key: q.name.clone() }]);
        }
    }

    #[test]
    fn quorum_queues_carry_a_delivery_limit() {
        let t = Topology::new(QueueType::Quorum, 7);
        let q = t.queue(PAYMENT_QUEUE).unwrap();
        assert!(q.arguments.contains(&("x-delivery-limit", ArgValue::Int(7))));
        assert!(q.arguments.contains(&("x-queue-type", ArgValue::Str("quorum".into()))));
        assert!(
            !Topology::new(QueueType::Classic, 7)
                .queue(PAYMENT_QUEUE)
                .unwrap()
                .arguments
                .iter()
                .any(|(k, _)| *k == "x-delivery-limit")
        );
    }

    fn names(t: &Topology) -> BTreeSet<String> {
        t.exchanges.iter().map(|e| e.name.to_owned()).chain(t.queues.iter().map(|q| q.name.clone())).collect()
    }

    #[test]
    fn the_roles_parts_together_are_the_whole_topology() {
        let whole = Topology::new(QueueType::Quorum, 5);
        let mut declared = BTreeSet::new();
        for role in Role::ALL {
            let part = whole.for_role(role);
            // A part is a part: the same queues with the same arguments and bindings.
            assert!(part.queues.iter().all(|q| whole.queue(&q.name) == Some(q)), "{role:?}");
            declared.extend(names(&part));
        }
        assert_eq!(declared, names(&whole));
    }

    #[test]
    fn a_participant_declares_only_its_own_queues() {
        let whole = Topology::new(QueueType::Classic, 5);
        for role in [Role::Inventory, Role::Payment, Role::Shipping, Role::Notification] {
            let part = whole.for_role(role);
            let queues: Vec<&str> = part.queues.iter().map(|q| q.name.as_str()).collect();
            let own = role.queue();
            assert_eq!(queues, [own.to_owned(), dead_letter_queue(own), retry_queue(own)], "{role:?}");
            let exchanges: Vec<&str> = part.exchanges.iter().map(|e| e.name).collect();
            let bound = part.queues[0].bindings[0].exchange;
            assert!(exchanges.contains(&bound) && exchanges.contains(&REPLIES_EXCHANGE), "{role:?}: {exchanges:?}");
        }
    }

    #[test]
    fn the_orchestrator_declares_where_its_messages_go_and_every_dead_letter_queue() {
        let whole = Topology::new(QueueType::Classic, 5);
        let part = whole.for_role(Role::Orchestrator);
        for consumer in
            [INVENTORY_QUEUE, PAYMENT_QUEUE, SHIPPING_QUEUE, NOTIFICATION_QUEUE, ORCHESTRATOR_QUEUE, ORDERS_QUEUE]
        {
            assert!(part.queue(consumer).is_some(), "{consumer}");
            assert!(part.queue(&dead_letter_queue(consumer)).is_some(), "{consumer}");
        }
        // Parking for a delayed retry is each consumer's own business.
        assert!(part.queue(&retry_queue(PAYMENT_QUEUE)).is_none());
        assert!(part.queue(&retry_queue(ORCHESTRATOR_QUEUE)).is_some());
        assert_eq!(part.exchanges, whole.exchanges);
    }

    #[test]
    fn a_participant_may_touch_only_its_own_queues_and_publish_only_replies() {
        let whole = Topology::new(QueueType::Classic, 5);
        let a = whole.access(Role::Payment);
        let own = |name: &String| name.starts_with("payment.commands") || name.starts_with("saga.");
        assert!(a.configure.iter().all(own), "{a:?}");
        assert!(a.read.iter().all(own), "{a:?}");
        assert!(a.write.iter().all(|n| own(n) || n == DEFAULT_EXCHANGE_RESOURCE), "{a:?}");
        for foreign in [COMMANDS_EXCHANGE, EVENTS_EXCHANGE, INVENTORY_QUEUE, ORCHESTRATOR_QUEUE] {
            assert!(!a.write.contains(foreign), "{foreign}");
        }
        assert!(a.read.contains(PAYMENT_QUEUE) && a.write.contains(REPLIES_EXCHANGE));
        // Its retry queue returns messages through the default exchange: declaring it needs that.
        assert!(a.write.contains(DEFAULT_EXCHANGE_RESOURCE));
    }

    #[test]
    fn the_orchestrator_reads_every_dead_letter_queue_and_sends_commands_and_events() {
        let whole = Topology::new(QueueType::Classic, 5);
        let a = whole.access(Role::Orchestrator);
        assert!(whole.dead_letter_queues().all(|q| a.read.contains(&q.name)));
        for e in [COMMANDS_EXCHANGE, EVENTS_EXCHANGE, REPLIES_EXCHANGE] {
            assert!(a.write.contains(e), "{e}");
        }
    }

    #[test]
    fn permissions_match_exactly_the_names() {
        let names: BTreeSet<String> = ["a.b".to_owned(), "c".to_owned()].into();
        let a = Access { configure: names, write: BTreeSet::new(), read: ["x(y)*".to_owned()].into() };
        let p = a.permissions();
        assert_eq!(p.configure, r"^(a\.b|c)$");
        assert_eq!(p.write, "^$");
        assert_eq!(p.read, r"^(x\(y\)\*)$");
    }

    #[test]
    fn the_users_document_has_guest_and_one_user_per_role() {
        let doc = Topology::new(QueueType::Classic, 5).users_json("/");
        let users: Vec<&str> = doc["users"].as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap()).collect();
        assert_eq!(users, ["guest", "orchestrator", "inventory", "payment", "shipping", "notification", "orders"]);
        let perms = doc["permissions"].as_array().unwrap();
        assert_eq!(perms.len(), users.len());
        assert_eq!(perms[3]["user"], "payment");
        assert!(perms[3]["read"].as_str().unwrap().contains(r"payment\.commands"));
    }

    #[test]
    fn the_read_side_declares_its_own_queues_and_may_publish_only_to_move_its_messages() {
        let whole = Topology::new(QueueType::Classic, 5);
        let part = whole.for_role(Role::Orders);
        let queues: Vec<&str> = part.queues.iter().map(|q| q.name.as_str()).collect();
        assert_eq!(queues, [ORDERS_QUEUE.to_owned(), dead_letter_queue(ORDERS_QUEUE), retry_queue(ORDERS_QUEUE)]);
        assert_eq!(
            part.queues[0].bindings,
            vec![Binding { exchange: EVENTS_EXCHANGE, routing_key: "history.#".into() }]
        );
        let a = whole.access(Role::Orders);
        let own = |name: &String| name.starts_with("orders.history") || name.starts_with("saga.");
        assert!(a.configure.iter().all(own), "{a:?}");
        assert!(a.read.iter().all(own), "{a:?}");
        for foreign in [COMMANDS_EXCHANGE, EVENTS_EXCHANGE, REPLIES_EXCHANGE] {
            assert!(!a.write.contains(foreign), "{foreign}: {a:?}");
        }
        assert!(a.read.contains(ORDERS_QUEUE) && a.read.contains(EVENTS_EXCHANGE));
    }

    #[test]
    fn queue_type_parses_case_insensitively_and_refuses_others() {
        assert_eq!("Quorum".parse::<QueueType>(), Ok(QueueType::Quorum));
        assert!("stream".parse::<QueueType>().is_err());
    }
}
