//! Declares a [`contracts::topology::Topology`] on the broker, idempotently. Every process declares
//! its role's part at start ([`Topology::for_role`]), so any process can come up first; the whole
//! topology is for tools and tests with an all-permitted user.

use contracts::topology::{ArgValue, ExchangeKind, Topology};
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};

use super::{Broker, TransportError};

/// Declare every exchange, queue and binding of `topology`. Safe to run concurrently and
/// repeatedly; fails if a queue exists with other arguments (e.g. classic vs quorum), naming it,
/// or if the user lacks a permission (`ACCESS_REFUSED`).
pub async fn declare(broker: &Broker, topology: &Topology) -> Result<(), TransportError> {
    let ch = broker.channel().await?;
    for e in &topology.exchanges {
        let kind = match e.kind {
            ExchangeKind::Topic => lapin::ExchangeKind::Topic,
            ExchangeKind::Direct => lapin::ExchangeKind::Direct,
        };
        ch.exchange_declare(
            e.name.into(),
            kind,
            ExchangeDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .map_err(TransportError::amqp("exchange.declare"))?;
    }
    for q in &topology.queues {
        let mut args = FieldTable::default();
        for (k, v) in &q.arguments {
            let value = match v {
                ArgValue::Str(s) => AMQPValue::LongString(LongString::from(s.as_bytes())),
                ArgValue::Int(i) => AMQPValue::LongLongInt(*i),
            };
            args.insert((*k).into(), value);
        }
        ch.queue_declare(
            q.name.as_str().into(),
            QueueDeclareOptions { durable: true, ..Default::default() },
            args,
        )
        .await
        .map_err(|source| {
            tracing::error!(queue = %q.name, error = %source, "queue declaration refused (does it exist with other arguments?)");
            TransportError::Amqp { op: "queue.declare", source }
        })?;
        for b in &q.bindings {
            ch.queue_bind(
                q.name.as_str().into(),
                b.exchange.into(),
                b.routing_key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(TransportError::amqp("queue.bind"))?;
        }
    }
    let _ = ch.close(200, "topology declared".into()).await;
    Ok(())
}
