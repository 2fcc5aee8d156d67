//! The broker topology as data: exchanges, queues, bindings, dead-letter and retry routes.
//!
//! Every process declares this (idempotently) at start, and `infra/deploy/rabbitmq/definitions.json`
//! is generated from it ([`Topology::definitions_json`]); a test keeps the file equal to the code.
//!
//! Shape:
//! - topic exchanges `saga.commands`, `saga.replies`, `saga.events`;
//! - one durable consuming queue per role (`inventory.commands` bound `inventory.*`, ...,
//!   `orchestrator.replies` bound `#`, `notification.events` bound `order.*`);
//! - each consuming queue dead-letters through the direct exchange `saga.dlx` (routing key = the
//!   queue's name) into its own `<queue>.dlq`;
//! - each consuming queue has a delay queue `<queue>.retry`, reached through the direct exchange
//!   `saga.retry` (routing key = the queue's name); a message parked there with a per-message
//!   expiration returns to its queue through the default exchange when it expires.

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

    #[test]
    fn queue_type_parses_case_insensitively_and_refuses_others() {
        assert_eq!("Quorum".parse::<QueueType>(), Ok(QueueType::Quorum));
        assert!("stream".parse::<QueueType>().is_err());
    }
}
