//! Dead letters, through the broker: list every dead-letter queue with its depth; page through a
//! queue's messages without consuming them (fetched unacknowledged and given back in order); show
//! one; replay (back to its original exchange and routing key, with `replayed-from`, who and when,
//! and a fresh attempt count; safe, since participants deduplicate on the idempotency key) or
//! discard (with a mandatory reason) a selection. Every replay and discard is audited and written
//! to the saga's timeline.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::Utc;
use contracts::envelope::headers;
use infra::amqp::codec::{HeaderValue, headers_json, rfc3339, with_headers, without_headers};
use infra::amqp::{Broker, Incoming};
use infra::http::Problem;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use super::{Actor, Admin};
use crate::audit;
use crate::store::{self, TimelineEntry};

/// Most messages one request looks at in a queue.
const MAX_SCAN: usize = 1000;

impl Admin {
    fn dead_letter_queue(&self, name: &str) -> Result<(), Problem> {
        if self.topology.dead_letter_queues().any(|q| q.name == name) {
            Ok(())
        } else {
            Err(Problem::not_found(format!("{name} is not a dead-letter queue")))
        }
    }
}

pub(super) async fn list_queues(State(admin): State<Admin>) -> Response {
    let ch = match admin.broker.channel().await {
        Ok(ch) => ch,
        Err(e) => return Problem::unavailable(e.to_string()).into_response(),
    };
    let mut queues = Vec::new();
    for q in admin.topology.dead_letter_queues() {
        let opts = QueueDeclareOptions { passive: true, ..Default::default() };
        match ch.queue_declare(q.name.as_str().into(), opts, FieldTable::default()).await {
            Ok(info) => queues.push(json!({"queue": q.name, "source": q.owner, "depth": info.message_count()})),
            Err(e) => return Problem::unavailable(format!("{}: {e}", q.name)).into_response(),
        }
    }
    let _ = ch.close(200, "done".into()).await;
    Json(json!({"queues": queues})).into_response()
}

/// One message as operators see it.
fn describe(m: &Incoming) -> Value {
    let p = &m.properties;
    let body = serde_json::from_slice::<Value>(&m.body)
        .unwrap_or_else(|_| Value::from(String::from_utf8_lossy(&m.body).into_owned()));
    json!({
        "message_id": p.message_id().as_ref().map(|s| s.as_str()),
        "type": p.kind().as_ref().map(|s| s.as_str()),
        "saga_id": p.correlation_id().as_ref().map(|s| s.as_str()),
        "reason": m.header_str(headers::DEAD_LETTER_REASON),
        "error": m.header_str(headers::DEAD_LETTER_ERROR),
        "source_queue": m.header_str(headers::DEAD_LETTER_QUEUE),
        "attempts": m.header_int(headers::DELIVERY_ATTEMPT),
        "first_failure_at": m.header_str(headers::FIRST_FAILURE_AT),
        "last_failure_at": m.header_str(headers::LAST_FAILURE_AT),
        "original_exchange": m.header_str(headers::ORIGINAL_EXCHANGE),
        "original_routing_key": m.header_str(headers::ORIGINAL_ROUTING_KEY),
        "headers": headers_json(p),
        "body": body,
    })
}

/// Messages taken from a queue unacknowledged; whatever is not settled goes back on drop of the
/// channel (and explicitly, in order, by [`Fetched::give_back`]).
struct Fetched {
    channel: lapin::Channel,
    messages: Vec<(u64, Incoming)>,
}

impl Fetched {
    async fn take(broker: &Broker, queue: &str, max: usize) -> Result<Fetched, Problem> {
        let channel = broker.channel().await.map_err(|e| Problem::unavailable(e.to_string()))?;
        let mut messages = Vec::new();
        while messages.len() < max {
            match channel.basic_get(queue.into(), BasicGetOptions { no_ack: false }).await {
                Ok(Some(m)) => {
                    let d = &m.delivery;
                    let incoming = Incoming {
                        exchange: d.exchange.to_string(),
                        routing_key: d.routing_key.to_string(),
                        redelivered: d.redelivered,
                        properties: d.properties.clone(),
                        body: d.data.clone(),
                    };
                    messages.push((d.delivery_tag, incoming));
                }
                Ok(None) => break,
                Err(e) => return Err(Problem::unavailable(format!("reading {queue}: {e}"))),
            }
        }
        Ok(Fetched { channel, messages })
    }

    async fn ack(&self, tag: u64) -> Result<(), lapin::Error> {
        self.channel.basic_ack(tag, BasicAckOptions::default()).await
    }

    /// Return everything not acknowledged to the queue, in order.
    async fn give_back(self) {
        let _ = self.channel.basic_nack(0, BasicNackOptions { multiple: true, requeue: true }).await;
        let _ = self.channel.close(200, "done".into()).await;
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct Page {
    limit: Option<usize>,
    offset: Option<usize>,
}

pub(super) async fn list_messages(
    State(admin): State<Admin>,
    Path(queue): Path<String>,
    page: Result<Query<Page>, QueryRejection>,
) -> Response {
    if let Err(p) = admin.dead_letter_queue(&queue) {
        return p.into_response();
    }
    let Ok(Query(page)) = page else { return Problem::bad_request("limit and offset must be numbers").into_response() };
    let limit = page.limit.unwrap_or(20);
    let offset = page.offset.unwrap_or(0);
    if !(1..=200).contains(&limit) || offset >= MAX_SCAN {
        return Problem::bad_request(format!("limit must be 1..=200 and offset below {MAX_SCAN}")).into_response();
    }
    let fetched = match Fetched::take(&admin.broker, &queue, offset + limit + 1).await {
        Ok(f) => f,
        Err(p) => return p.into_response(),
    };
    let total = fetched.messages.len();
    let items: Vec<Value> = fetched.messages.iter().skip(offset).take(limit).map(|(_, m)| describe(m)).collect();
    let next = (total > offset + limit).then_some(offset + limit);
    fetched.give_back().await;
    Json(json!({"queue": queue, "items": items, "next_offset": next})).into_response()
}

pub(super) async fn one_message(State(admin): State<Admin>, Path((queue, id)): Path<(String, String)>) -> Response {
    if let Err(p) = admin.dead_letter_queue(&queue) {
        return p.into_response();
    }
    let fetched = match Fetched::take(&admin.broker, &queue, MAX_SCAN).await {
        Ok(f) => f,
        Err(p) => return p.into_response(),
    };
    let found =
        fetched.messages.iter().find(|(_, m)| message_id(m).as_deref() == Some(id.as_str())).map(|(_, m)| describe(m));
    fetched.give_back().await;
    match found {
        Some(m) => Json(m).into_response(),
        None => Problem::not_found(format!("no message {id} in {queue}")).into_response(),
    }
}

fn message_id(m: &Incoming) -> Option<String> {
    m.properties.message_id().as_ref().map(|s| s.as_str().to_owned())
}

/// Which messages a replay or discard applies to.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Selection {
    message_id: Option<String>,
    filter: Option<Filter>,
    #[serde(default)]
    all: bool,
    /// Discard only: why (required).
    reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Filter {
    message_type: Option<String>,
    saga_id: Option<String>,
    reason: Option<String>,
}

impl Selection {
    fn check(&self) -> Result<(), Problem> {
        let chosen =
            usize::from(self.message_id.is_some()) + usize::from(self.filter.is_some()) + usize::from(self.all);
        if chosen != 1 {
            return Err(Problem::bad_request("give exactly one of `message_id`, `filter` or `all: true`"));
        }
        Ok(())
    }

    fn matches(&self, m: &Incoming) -> bool {
        if self.all {
            return true;
        }
        if let Some(id) = &self.message_id {
            return message_id(m).as_deref() == Some(id.as_str());
        }
        let Some(f) = &self.filter else { return false };
        let p = &m.properties;
        f.message_type.as_deref().is_none_or(|t| p.kind().as_ref().map(|k| k.as_str()) == Some(t))
            && f.saga_id.as_deref().is_none_or(|s| p.correlation_id().as_ref().map(|c| c.as_str()) == Some(s))
            && f.reason.as_deref().is_none_or(|r| m.header_str(headers::DEAD_LETTER_REASON).as_deref() == Some(r))
    }
}

fn selection(body: Result<Json<Selection>, JsonRejection>) -> Result<Selection, Problem> {
    let Json(s) = body.map_err(|e| Problem::bad_request(e.body_text()))?;
    s.check()?;
    Ok(s)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    Replay,
    Discard,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Replay => "replay",
            Action::Discard => "discard",
        }
    }
}

pub(super) async fn replay(
    State(admin): State<Admin>,
    Extension(actor): Extension<Actor>,
    Path(queue): Path<String>,
    body: Result<Json<Selection>, JsonRejection>,
) -> Response {
    settle(admin, actor, queue, body, Action::Replay).await
}

pub(super) async fn discard(
    State(admin): State<Admin>,
    Extension(actor): Extension<Actor>,
    Path(queue): Path<String>,
    body: Result<Json<Selection>, JsonRejection>,
) -> Response {
    settle(admin, actor, queue, body, Action::Discard).await
}

async fn settle(
    admin: Admin,
    Actor(actor): Actor,
    queue: String,
    body: Result<Json<Selection>, JsonRejection>,
    action: Action,
) -> Response {
    if let Err(p) = admin.dead_letter_queue(&queue) {
        return p.into_response();
    }
    let sel = match selection(body) {
        Ok(s) => s,
        Err(p) => return p.into_response(),
    };
    let reason = sel.reason.clone().map(|r| r.trim().to_owned()).filter(|r| !r.is_empty());
    if action == Action::Discard && reason.is_none() {
        return Problem::bad_request("a discard needs a `reason`").into_response();
    }
    let fetched = match Fetched::take(&admin.broker, &queue, MAX_SCAN).await {
        Ok(f) => f,
        Err(p) => return p.into_response(),
    };
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for (tag, m) in fetched.messages.iter().filter(|(_, m)| sel.matches(m)) {
        let id = message_id(m).unwrap_or_default();
        if action == Action::Replay
            && let Err(e) = republish(&admin, &actor, &queue, m).await
        {
            failed.push(json!({"message_id": id, "error": e}));
            continue;
        }
        // Audit first: a message settled without its audit row would be an unexplained loss.
        if let Err(e) = record(&admin.pool, &actor, action, &queue, m, reason.as_deref()).await {
            failed.push(json!({"message_id": id, "error": format!("audit: {e}")}));
            continue;
        }
        if let Err(e) = fetched.ack(*tag).await {
            failed.push(json!({"message_id": id, "error": format!("ack: {e}")}));
            continue;
        }
        done.push(id);
    }
    fetched.give_back().await;
    tracing::info!(actor = %actor, action = action.as_str(), queue = %queue, count = done.len(), "dead letters settled");
    let key = if action == Action::Replay { "replayed" } else { "discarded" };
    let status = if failed.is_empty() { StatusCode::OK } else { StatusCode::MULTI_STATUS };
    (status, Json(json!({key: done.len(), "message_ids": done, "failed": failed}))).into_response()
}

/// Publish a dead-lettered message back where it was first sent, marked as replayed, with a
/// fresh attempt count.
async fn republish(admin: &Admin, actor: &str, queue: &str, m: &Incoming) -> Result<(), String> {
    let (exchange, routing_key) =
        destination(m).ok_or("neither x-original-* nor x-death headers: cannot tell where it goes")?;
    let props = without_headers(
        m.properties.clone(),
        &[
            headers::DEAD_LETTER_REASON,
            headers::DEAD_LETTER_ERROR,
            headers::DEAD_LETTER_QUEUE,
            headers::LAST_ERROR,
            headers::DEFERRED,
            "x-death",
        ],
    );
    let props = with_headers(
        props,
        &[
            (headers::REPLAYED_FROM.into(), HeaderValue::Str(queue.to_owned())),
            (headers::REPLAYED_BY.into(), HeaderValue::Str(actor.to_owned())),
            (headers::REPLAYED_AT.into(), HeaderValue::Str(rfc3339(Utc::now()))),
            (headers::DELIVERY_ATTEMPT.into(), HeaderValue::Int(1)),
        ],
    );
    admin.publisher.publish_raw(&exchange, &routing_key, true, props, &m.body).await.map_err(|e| e.to_string())
}

/// Where a dead letter was first sent: our `x-original-*` headers, or, for a message the broker
/// dead-lettered itself (a quorum queue's delivery limit, a rejection), its oldest `x-death` entry.
fn destination(m: &Incoming) -> Option<(String, String)> {
    if let (Some(e), Some(k)) = (m.header_str(headers::ORIGINAL_EXCHANGE), m.header_str(headers::ORIGINAL_ROUTING_KEY))
    {
        return Some((e, k));
    }
    let deaths = headers_json(&m.properties);
    let first = deaths.get("x-death")?.as_array()?.last()?;
    let exchange = first.get("exchange")?.as_str()?.to_owned();
    let key = first.get("routing-keys")?.as_array()?.first()?.as_str()?.to_owned();
    Some((exchange, key))
}

/// The audit row, and a note on the saga's timeline (if the message names a saga of ours).
async fn record(
    pool: &PgPool,
    actor: &str,
    action: Action,
    queue: &str,
    m: &Incoming,
    reason: Option<&str>,
) -> Result<(), sqlx::Error> {
    let p = &m.properties;
    let ty = p.kind().as_ref().map(|s| s.as_str().to_owned());
    let id = message_id(m);
    let saga_id = p.correlation_id().as_ref().and_then(|c| Uuid::parse_str(c.as_str()).ok());
    let mut tx = pool.begin().await?;
    let row = audit::Action {
        actor,
        action: action.as_str(),
        queue: Some(queue),
        message_id: id.as_deref(),
        message_type: ty.as_deref(),
        saga_id,
        reason,
        detail: json!({"dead_letter_reason": m.header_str(headers::DEAD_LETTER_REASON), "error": m.header_str(headers::DEAD_LETTER_ERROR)}),
    };
    audit::record(&mut tx, &row).await?;
    if let Some(saga_id) = saga_id {
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM sagas WHERE id = $1").bind(saga_id).fetch_optional(&mut *tx).await?;
        if let Some(status) = status {
            let what = ty.as_deref().unwrap_or("message");
            let note = match action {
                Action::Replay => format!("{what} replayed from {queue} by {actor}"),
                Action::Discard => format!("{what} discarded from {queue} by {actor}: {}", reason.unwrap_or("")),
            };
            let entry = TimelineEntry {
                kind: "operator",
                status: &status,
                step: None,
                note: &note,
                cause_message_id: id.as_deref().and_then(|id| Uuid::parse_str(id).ok()),
                cause_type: ty.as_deref(),
                sent: json!([]),
            };
            store::note(&mut tx, saga_id, &entry).await?;
            store::set_attention(&mut tx, saga_id, &note).await?;
        }
    }
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_goes_where_the_message_was_first_sent() {
        use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString};
        let incoming = |props: lapin::BasicProperties| Incoming {
            exchange: String::new(),
            routing_key: String::new(),
            redelivered: false,
            properties: props,
            body: Vec::new(),
        };
        let ours = with_headers(
            lapin::BasicProperties::default(),
            &[
                (headers::ORIGINAL_EXCHANGE.into(), HeaderValue::Str("saga.commands".into())),
                (headers::ORIGINAL_ROUTING_KEY.into(), HeaderValue::Str("payment.capture".into())),
            ],
        );
        assert_eq!(destination(&incoming(ours)), Some(("saga.commands".into(), "payment.capture".into())));
        // Broker dead-lettering: newest x-death first, the original publish last.
        let death = |exchange: &str, key: &str| {
            let mut t = FieldTable::default();
            t.insert("exchange".into(), AMQPValue::LongString(LongString::from(exchange.as_bytes())));
            let keys = FieldArray::from(vec![AMQPValue::LongString(LongString::from(key.as_bytes()))]);
            t.insert("routing-keys".into(), AMQPValue::FieldArray(keys));
            AMQPValue::FieldTable(t)
        };
        let mut h = FieldTable::default();
        h.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![
                death("", "payment.commands"),
                death("saga.commands", "payment.void"),
            ])),
        );
        let broker = lapin::BasicProperties::default().with_headers(h);
        assert_eq!(destination(&incoming(broker)), Some(("saga.commands".into(), "payment.void".into())));
        assert_eq!(destination(&incoming(lapin::BasicProperties::default())), None);
    }
}
