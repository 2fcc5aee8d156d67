//! The consume loop. It takes deliveries from one queue (bounded by `prefetch`), gives each to a
//! [`DeliveryHandler`] as an [`Incoming`] view, and acts on the [`Outcome`] it returns: ack, park
//! for a delayed retry round, or dead-letter with reason headers. Handlers never see the channel.
//!
//! The loop survives everything but shutdown: a broken connection or channel is logged and
//! replaced (deliveries not yet acknowledged come back from the broker, and handlers are
//! idempotent); a handler that fails returns an outcome instead of ending the loop.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use contracts::envelope::headers;
use contracts::notices::{DeadLettered, Waiting};
use contracts::topology::{self, DEAD_LETTER_EXCHANGE, REPLIES_EXCHANGE, RETRY_EXCHANGE};
use contracts::{Message, Meta, Notice};
use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::field::Empty;
use tracing::{Instrument, info_span};

use super::codec::{HeaderValue, Incoming, Outgoing, rfc3339, with_headers};
use super::{Broker, Publisher};
use crate::metrics::Metrics;

/// What the transport should do with a delivery once its handler is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Handled (or recognised as a duplicate): acknowledge.
    Ack,
    /// Failed for a reason that may pass (database down, broker hiccup, dependency unavailable):
    /// park it on the queue's retry route for a delay, then try again; after the configured number
    /// of rounds it goes to the dead-letter queue with this reason.
    Retry { reason: String },
    /// Cannot ever succeed (undecodable, unknown type, handler refused): dead-letter now.
    DeadLetter { code: &'static str, error: String },
    /// Cannot be handled *now* because a dependency is unavailable (circuit open): park it for a
    /// delay and try again, without spending a delivery attempt. Waits as long as it takes; the
    /// saga's step deadline still applies upstream.
    Defer { reason: String },
}

/// Handles one delivery. Implemented by the participants' processor and the orchestrator.
pub trait DeliveryHandler: Send + Sync + 'static {
    fn handle(&self, message: &Incoming) -> impl Future<Output = Outcome> + Send;
}

/// Where and how to consume.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub queue: String,
    pub prefetch: u16,
    pub retry_delay: Duration,
    pub max_retry_rounds: u32,
    pub shutdown_timeout: Duration,
    /// Tell the orchestrator (a [`contracts::Notice`] on `saga.replies`) when a message starts to
    /// wait or is dead-lettered, so the saga's status can say so. For participants' command queues.
    pub notices: bool,
    /// Declare this topology (the process's part) again before consuming after a lost channel or
    /// connection, so a broker that came back without our queues (a fresh node, a deleted queue)
    /// gets them back.
    pub redeclare: Option<Arc<topology::Topology>>,
}

/// Consume `config.queue` until `shutdown` is cancelled, then drain in-flight deliveries under
/// the shutdown deadline.
pub async fn run<H: DeliveryHandler>(
    broker: Broker,
    publisher: Arc<Publisher>,
    config: ConsumerConfig,
    handler: Arc<H>,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    metrics.init_queue(&config.queue);
    let in_flight = TaskTracker::new();
    let mut lost = false;
    while !shutdown.is_cancelled() {
        if lost
            && let Some(topology) = &config.redeclare
            && let Err(error) = super::topology::declare(&broker, topology).await
        {
            tracing::warn!(queue = %config.queue, %error, retry_in = ?backoff, "cannot declare the topology again");
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(backoff) => {},
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
            continue;
        }
        match session(&broker, &publisher, &config, &handler, &metrics, &shutdown, &in_flight).await {
            Ok(()) => break,
            Err(error) => {
                lost = true;
                tracing::warn!(queue = %config.queue, %error, retry_in = ?backoff, "consumer lost its channel; reconnecting");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {},
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    in_flight.close();
    if tokio::time::timeout(config.shutdown_timeout, in_flight.wait()).await.is_err() {
        tracing::warn!(queue = %config.queue, "in-flight deliveries did not finish before the shutdown deadline; the broker will redeliver them");
    }
    tracing::info!(queue = %config.queue, "consumer stopped");
}

/// One channel's life: consume until shutdown (Ok) or until the channel breaks (Err).
async fn session<H: DeliveryHandler>(
    broker: &Broker,
    publisher: &Arc<Publisher>,
    config: &ConsumerConfig,
    handler: &Arc<H>,
    metrics: &Metrics,
    shutdown: &CancellationToken,
    in_flight: &TaskTracker,
) -> Result<(), String> {
    let channel = broker.channel().await.map_err(|e| e.to_string())?;
    channel.basic_qos(config.prefetch, BasicQosOptions::default()).await.map_err(|e| format!("basic.qos: {e}"))?;
    let mut consumer = channel
        .basic_consume(config.queue.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .map_err(|e| format!("basic.consume on {}: {e}", config.queue))?;
    let tag = consumer.tag();
    metrics.consumer_prefetch.with_label_values(&[&config.queue]).set(i64::from(config.prefetch));
    tracing::info!(queue = %config.queue, prefetch = config.prefetch, "consuming");
    let result = loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = channel.basic_cancel(tag.clone(), BasicCancelOptions::default()).await;
                break Ok(());
            }
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    let task = handle_one(delivery, publisher.clone(), config.clone(), handler.clone(), metrics.clone());
                    in_flight.spawn(task);
                }
                Some(Err(e)) => break Err(format!("delivery stream: {e}")),
                None => break Err("consumer cancelled by the broker".to_owned()),
            }
        }
    };
    if result.is_ok() {
        // Let in-flight work ack on this channel before closing it.
        let _ = tokio::time::timeout(config.shutdown_timeout, async {
            in_flight.close();
            in_flight.wait().await;
        })
        .await;
        let _ = channel.close(200, "shutdown".into()).await;
    }
    result
}

async fn handle_one<H: DeliveryHandler>(
    delivery: Delivery,
    publisher: Arc<Publisher>,
    config: ConsumerConfig,
    handler: Arc<H>,
    metrics: Metrics,
) {
    let started = Instant::now();
    let queue = config.queue.as_str();
    let p = &delivery.properties;
    let span = info_span!(
        "message",
        queue,
        message_id = p.message_id().as_ref().map(|s| s.as_str()).unwrap_or(""),
        message_type = p.kind().as_ref().map(|s| s.as_str()).unwrap_or(""),
        saga_id = p.correlation_id().as_ref().map(|s| s.as_str()).unwrap_or(""),
        otel.name = Empty,
        otel.kind = Empty,
    );
    let incoming = Incoming {
        exchange: delivery.exchange.to_string(),
        routing_key: delivery.routing_key.to_string(),
        redelivered: delivery.redelivered,
        properties: delivery.properties.clone(),
        body: delivery.data.clone(),
    };
    crate::telemetry::consumed(&span, &incoming);
    async {
        metrics.consumed.with_label_values(&[queue]).inc();
        let in_flight = metrics.consumer_in_flight.with_label_values(&[queue]);
        in_flight.inc();
        // A handler that panics must not leave its delivery unsettled (holding a prefetch slot):
        // the message takes a delayed retry round like any transient failure.
        let outcome = match AssertUnwindSafe(handler.handle(&incoming)).catch_unwind().await {
            Ok(outcome) => outcome,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned());
                tracing::error!(panic = what.as_deref().unwrap_or("(no message)"), "handler panicked");
                Outcome::Retry { reason: format!("handler panicked: {}", what.unwrap_or_default()) }
            }
        };
        let settled = settle(&delivery, &incoming, outcome, &publisher, &config, &metrics).await;
        if let Err(error) = settled {
            // The broker redelivers what we could not settle; handlers are idempotent.
            tracing::warn!(%error, "could not settle delivery; it will be redelivered");
        }
        metrics.handle_seconds.with_label_values(&[queue]).observe(started.elapsed().as_secs_f64());
        in_flight.dec();
    }
    .instrument(span)
    .await;
}

/// Turn an outcome into broker operations.
async fn settle(
    delivery: &Delivery,
    incoming: &Incoming,
    outcome: Outcome,
    publisher: &Publisher,
    config: &ConsumerConfig,
    metrics: &Metrics,
) -> Result<(), String> {
    let queue = config.queue.as_str();
    let attempt = incoming.header_int(headers::DELIVERY_ATTEMPT).unwrap_or(1).max(1);
    match outcome {
        Outcome::Defer { reason } => defer(delivery, incoming, &reason, publisher, config, metrics).await,
        Outcome::Ack => {
            delivery.ack(BasicAckOptions::default()).await.map_err(|e| format!("ack: {e}"))?;
            metrics.acked.with_label_values(&[queue]).inc();
            Ok(())
        }
        Outcome::Retry { reason } if attempt <= i64::from(config.max_retry_rounds) => {
            tracing::warn!(attempt, %reason, delay = ?config.retry_delay, "transient failure; parking for a delayed retry");
            let props = with_headers(incoming.properties.clone(), &failure_headers(incoming, attempt + 1, &reason))
                .with_expiration(config.retry_delay.as_millis().to_string().into());
            move_to(delivery, incoming, publisher, RETRY_EXCHANGE, queue, props).await?;
            metrics.retried.with_label_values(&[queue]).inc();
            Ok(())
        }
        Outcome::Retry { reason } => {
            dead_letter(delivery, incoming, "retries_exhausted", &reason, publisher, config, metrics).await
        }
        Outcome::DeadLetter { code, error } => {
            dead_letter(delivery, incoming, code, &error, publisher, config, metrics).await
        }
    }
}

/// Move a message to its queue's dead-letter queue with the reasons in its headers, and tell the
/// orchestrator (consumers with `notices`).
async fn dead_letter(
    delivery: &Delivery,
    incoming: &Incoming,
    code: &'static str,
    error: &str,
    publisher: &Publisher,
    config: &ConsumerConfig,
    metrics: &Metrics,
) -> Result<(), String> {
    let queue = config.queue.as_str();
    let attempt = incoming.header_int(headers::DELIVERY_ATTEMPT).unwrap_or(1).max(1);
    tracing::error!(reason = code, %error, attempt, "dead-lettering message");
    let mut fields = vec![
        (headers::DEAD_LETTER_REASON.into(), HeaderValue::Str(code.to_owned())),
        (headers::DEAD_LETTER_ERROR.into(), HeaderValue::Str(truncate(error))),
        (headers::DEAD_LETTER_QUEUE.into(), HeaderValue::Str(queue.to_owned())),
    ];
    fields.extend(failure_headers(incoming, attempt, error));
    let props = with_headers(incoming.properties.clone(), &fields);
    move_to(delivery, incoming, publisher, DEAD_LETTER_EXCHANGE, queue, props).await?;
    metrics.dead_lettered.with_label_values(&[queue, code]).inc();
    if config.notices {
        let notice = |meta: &Meta| {
            Notice::DeadLettered(DeadLettered {
                queue: queue.to_owned(),
                dead_letter_queue: topology::dead_letter_queue(queue),
                message_id: meta.message_id,
                message_type: meta.message_type.clone(),
                reason: code.to_owned(),
                error: truncate(error),
            })
        };
        send_notice(incoming, publisher, notice).await;
    }
    Ok(())
}

/// The headers a failed delivery carries on: its attempt, the last error, when it first and last
/// failed, and where it was first published.
fn failure_headers(incoming: &Incoming, attempt: i64, error: &str) -> Vec<(String, HeaderValue)> {
    let now = rfc3339(Utc::now());
    vec![
        (headers::DELIVERY_ATTEMPT.into(), HeaderValue::Int(attempt)),
        (headers::LAST_ERROR.into(), HeaderValue::Str(truncate(error))),
        (
            headers::FIRST_FAILURE_AT.into(),
            HeaderValue::Str(incoming.header_str(headers::FIRST_FAILURE_AT).unwrap_or_else(|| now.clone())),
        ),
        (headers::LAST_FAILURE_AT.into(), HeaderValue::Str(now)),
        (headers::ORIGINAL_EXCHANGE.into(), HeaderValue::Str(original_exchange(incoming))),
        (headers::ORIGINAL_ROUTING_KEY.into(), HeaderValue::Str(original_routing_key(incoming))),
    ]
}

/// Park a message on its queue's retry route without spending an attempt; tell the orchestrator
/// the first time.
async fn defer(
    delivery: &Delivery,
    incoming: &Incoming,
    reason: &str,
    publisher: &Publisher,
    config: &ConsumerConfig,
    metrics: &Metrics,
) -> Result<(), String> {
    let queue = config.queue.as_str();
    let deferred = incoming.header_int(headers::DEFERRED).unwrap_or(0);
    if deferred == 0 {
        tracing::warn!(%reason, delay = ?config.retry_delay, "dependency unavailable; the message waits");
    }
    let props = with_headers(
        incoming.properties.clone(),
        &[
            (headers::DEFERRED.into(), HeaderValue::Int(deferred + 1)),
            (headers::LAST_ERROR.into(), HeaderValue::Str(truncate(reason))),
            (headers::ORIGINAL_EXCHANGE.into(), HeaderValue::Str(original_exchange(incoming))),
            (headers::ORIGINAL_ROUTING_KEY.into(), HeaderValue::Str(original_routing_key(incoming))),
        ],
    )
    .with_expiration(config.retry_delay.as_millis().to_string().into());
    move_to(delivery, incoming, publisher, RETRY_EXCHANGE, queue, props).await?;
    metrics.deferred.with_label_values(&[queue]).inc();
    if config.notices && deferred == 0 {
        let notice = |meta: &Meta| {
            Notice::Waiting(Waiting {
                queue: queue.to_owned(),
                message_id: meta.message_id,
                message_type: meta.message_type.clone(),
                reason: truncate(reason),
                since: Utc::now(),
            })
        };
        send_notice(incoming, publisher, notice).await;
    }
    Ok(())
}

/// Publish a copy of the delivery (with `props`) to `exchange`/`routing_key`, wait for the
/// confirm, then ack the original. If the copy cannot be published, the original goes back to its
/// queue instead of being lost.
async fn move_to(
    delivery: &Delivery,
    incoming: &Incoming,
    publisher: &Publisher,
    exchange: &str,
    routing_key: &str,
    props: lapin::BasicProperties,
) -> Result<(), String> {
    match publisher.publish_raw(exchange, routing_key, true, props, &incoming.body).await {
        Ok(()) => delivery.ack(BasicAckOptions::default()).await.map(|_| ()).map_err(|e| format!("ack: {e}")),
        Err(e) => {
            delivery
                .nack(BasicNackOptions { requeue: true, ..Default::default() })
                .await
                .map_err(|e| format!("nack: {e}"))?;
            Err(format!("publish to {exchange} failed: {e}"))
        }
    }
}

/// Best effort: a notice is information for the saga's status; the message itself is safe in
/// its queue whatever happens here. Nothing is sent for a message without a readable envelope.
async fn send_notice(incoming: &Incoming, publisher: &Publisher, build: impl FnOnce(&Meta) -> Notice) {
    let Ok(meta) = incoming.meta() else { return };
    let notice = build(&meta);
    let out = Outgoing::new(
        REPLIES_EXCHANGE,
        false,
        Meta::new(meta.saga_id, notice.message_type()).caused_by(meta.message_id),
        &notice,
    );
    match publisher.publish(&out).await {
        Ok(()) => crate::telemetry::sent(&out),
        Err(error) => {
            tracing::warn!(%error, notice = notice.message_type(), "could not send notice to the orchestrator")
        }
    }
}

/// The exchange the message was first published to (a retried message arrives from the default
/// exchange, so the first value recorded wins).
fn original_exchange(incoming: &Incoming) -> String {
    incoming.header_str(headers::ORIGINAL_EXCHANGE).unwrap_or_else(|| incoming.exchange.clone())
}

fn original_routing_key(incoming: &Incoming) -> String {
    incoming.header_str(headers::ORIGINAL_ROUTING_KEY).unwrap_or_else(|| incoming.routing_key.clone())
}

/// Header values stay readable: errors are cut at 1 KiB (on a char boundary).
fn truncate(s: &str) -> String {
    const MAX: usize = 1024;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
