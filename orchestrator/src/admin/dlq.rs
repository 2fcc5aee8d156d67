//! Dead letters, through the broker: list every dead-letter queue with its depth; page through a
//! queue's messages without consuming them (fetched unacknowledged and given back in order); show
//! one; replay (back to its original exchange and routing key, with `replayed-from`, who and when,
//! and a fresh attempt count; safe, since participants deduplicate on the idempotency key) or
//! discard (with a mandatory reason) a selection. Every replay and discard is audited and written
//! to the saga's timeline. Each handler carries its OpenAPI description; the selection bodies'
//! schemas are written out ([`SelectionDoc`]), since "exactly one of three" is not a shape a derive
//! can say.

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
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgPool;
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{IntoParams, PartialSchema, ToSchema};
use uuid::Uuid;

use super::{Actor, Admin, TAG};
use crate::audit;
use crate::history::Recorded;
use crate::store::{self, StoreError, TimelineEntry};

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

/// The dead-letter queues.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct DeadLetterQueues {
    queues: Vec<DeadLetterQueue>,
}

/// A dead-letter queue and how many messages wait in it.
#[derive(Debug, Serialize, ToSchema)]
struct DeadLetterQueue {
    /// e.g. `payment.commands.dlq`.
    queue: String,
    /// The process whose queue it serves, e.g. `payment`.
    source: Option<String>,
    depth: u32,
}

/// Every dead-letter queue with its depth.
#[utoipa::path(get, path = "/admin/dlq", tag = TAG,
    responses(
        (status = 200, description = "Every dead-letter queue", body = DeadLetterQueues),
        (status = 503, description = "The broker cannot be reached", body = Problem,
         content_type = "application/problem+json"),
    ))]
pub(super) async fn list_queues(State(admin): State<Admin>) -> Response {
    let ch = match admin.broker.channel().await {
        Ok(ch) => ch,
        Err(e) => return Problem::unavailable(e.to_string()).into_response(),
    };
    let mut queues = Vec::new();
    for q in admin.topology.dead_letter_queues() {
        let opts = QueueDeclareOptions { passive: true, ..Default::default() };
        match ch.queue_declare(q.name.as_str().into(), opts, FieldTable::default()).await {
            Ok(info) => queues.push(DeadLetterQueue {
                queue: q.name.clone(),
                source: q.owner.clone(),
                depth: info.message_count(),
            }),
            Err(e) => return Problem::unavailable(format!("{}: {e}", q.name)).into_response(),
        }
    }
    let _ = ch.close(200, "done".into()).await;
    Json(DeadLetterQueues { queues }).into_response()
}

/// A dead-lettered message as operators see it.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct DeadLetterMessage {
    message_id: Option<String>,
    /// The message type, e.g. `payment.capture`.
    #[serde(rename = "type")]
    message_type: Option<String>,
    /// The saga it belongs to (its `correlation_id`).
    saga_id: Option<String>,
    /// Why it was dead-lettered: a code such as `retries_exhausted`.
    reason: Option<String>,
    error: Option<String>,
    /// The queue it was dead-lettered from.
    source_queue: Option<String>,
    attempts: Option<i64>,
    first_failure_at: Option<String>,
    last_failure_at: Option<String>,
    original_exchange: Option<String>,
    original_routing_key: Option<String>,
    /// Every AMQP header.
    #[schema(value_type = Object)]
    headers: Value,
    /// The body: JSON as it is, anything else as a string.
    body: Value,
}

fn describe(m: &Incoming) -> DeadLetterMessage {
    let p = &m.properties;
    let body = serde_json::from_slice::<Value>(&m.body)
        .unwrap_or_else(|_| Value::from(String::from_utf8_lossy(&m.body).into_owned()));
    let text = |s: &Option<lapin::types::ShortString>| s.as_ref().map(|s| s.as_str().to_owned());
    DeadLetterMessage {
        message_id: text(p.message_id()),
        message_type: text(p.kind()),
        saga_id: text(p.correlation_id()),
        reason: m.header_str(headers::DEAD_LETTER_REASON),
        error: m.header_str(headers::DEAD_LETTER_ERROR),
        source_queue: m.header_str(headers::DEAD_LETTER_QUEUE),
        attempts: m.header_int(headers::DELIVERY_ATTEMPT),
        first_failure_at: m.header_str(headers::FIRST_FAILURE_AT),
        last_failure_at: m.header_str(headers::LAST_FAILURE_AT),
        original_exchange: m.header_str(headers::ORIGINAL_EXCHANGE),
        original_routing_key: m.header_str(headers::ORIGINAL_ROUTING_KEY),
        headers: headers_json(p),
        body,
    }
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

/// A page of a dead-letter queue's messages.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct Page {
    /// Messages per page.
    #[param(minimum = 1, maximum = 200, default = 20)]
    limit: Option<usize>,
    /// How many messages to skip (below 1000: at most that many are looked at).
    #[param(minimum = 0, maximum = 999, default = 0)]
    offset: Option<usize>,
}

/// A page of a dead-letter queue.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct DeadLetterPage {
    queue: String,
    items: Vec<DeadLetterMessage>,
    /// The `offset` of the next page; `null` on the last.
    next_offset: Option<usize>,
}

/// A page of a dead-letter queue's messages, oldest first. Nothing is consumed: the messages are
/// read unacknowledged and given back in order.
#[utoipa::path(get, path = "/admin/dlq/{queue}/messages", tag = TAG,
    params(("queue" = String, Path, description = "A dead-letter queue"), Page),
    responses(
        (status = 200, description = "A page of messages", body = DeadLetterPage),
        (status = 400, description = "`limit` is not 1-200, or `offset` not 0-999", body = Problem,
         content_type = "application/problem+json"),
        (status = 404, description = "Not a dead-letter queue", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The broker cannot be reached", body = Problem,
         content_type = "application/problem+json"),
    ))]
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
    let items = fetched.messages.iter().skip(offset).take(limit).map(|(_, m)| describe(m)).collect();
    let next_offset = (total > offset + limit).then_some(offset + limit);
    fetched.give_back().await;
    Json(DeadLetterPage { queue, items, next_offset }).into_response()
}

/// One message of a dead-letter queue (among its first 1000), left in place.
#[utoipa::path(get, path = "/admin/dlq/{queue}/messages/{message_id}", tag = TAG,
    params(("queue" = String, Path, description = "A dead-letter queue"),
           ("message_id" = String, Path, description = "The message's `message_id`")),
    responses(
        (status = 200, description = "The message", body = DeadLetterMessage),
        (status = 404, description = "Not a dead-letter queue, or no such message in it", body = Problem,
         content_type = "application/problem+json"),
        (status = 503, description = "The broker cannot be reached", body = Problem,
         content_type = "application/problem+json"),
    ))]
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

/// Which messages a replay or discard applies to: exactly one of `message_id`, `filter` or
/// `all: true`; a discard also needs a `reason`.
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

/// The messages a filter selects: those matching every field given.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(as = DeadLetterFilter)]
#[serde(deny_unknown_fields)]
pub(super) struct Filter {
    /// The message type, e.g. `payment.capture`.
    message_type: Option<String>,
    /// The saga (the message's `correlation_id`).
    saga_id: Option<String>,
    /// The dead-letter reason, e.g. `retries_exhausted`.
    reason: Option<String>,
}

/// The OpenAPI schema of a [`Selection`]: one object per way of selecting; `reason` required
/// (and not blank) for a discard. (The API also takes the other ways given as `null`, or `all`
/// as `false`; the schema names the plain form.)
struct SelectionDoc;

impl SelectionDoc {
    fn schema(discard: bool) -> RefOr<Schema> {
        let by_id = ObjectBuilder::new().schema_type(Type::String).description(Some("One message, by `message_id`"));
        let filter = RefOr::Ref(Ref::from_schema_name(Filter::name()));
        let all = ObjectBuilder::new().schema_type(Type::Boolean).enum_values(Some([true]));
        let way = |selected: &str, schema: RefOr<Schema>| {
            let mut way = ObjectBuilder::new()
                .property(selected, schema)
                .property("reason", Self::reason(discard))
                .required(selected)
                .additional_properties(Some(AdditionalProperties::FreeForm(false)));
            if discard {
                way = way.required("reason");
            }
            way.build()
        };
        let one_of = OneOfBuilder::new()
            .item(way("message_id", by_id.into()))
            .item(way("filter", filter))
            .item(way("all", all.into()))
            .description(Some(if discard {
                "Exactly one of `message_id`, `filter` or `all: true`, and why (`reason`, required)"
            } else {
                "Exactly one of `message_id`, `filter` or `all: true`"
            }));
        RefOr::T(Schema::OneOf(one_of.build()))
    }

    fn reason(discard: bool) -> RefOr<Schema> {
        let reason = ObjectBuilder::new().description(Some("Why: audited, and written to the saga's timeline"));
        if discard {
            reason.schema_type(Type::String).pattern(Some(crate::openapi::not_blank())).into()
        } else {
            let any = utoipa::openapi::schema::SchemaType::from_iter([Type::String, Type::Null]);
            reason.schema_type(any).pattern(Some(r"^[^\u0000]*$")).into()
        }
    }
}

/// The body of a replay.
pub(super) struct ReplaySelection;

impl PartialSchema for ReplaySelection {
    fn schema() -> RefOr<Schema> {
        SelectionDoc::schema(false)
    }
}

impl ToSchema for ReplaySelection {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((Filter::name().into_owned(), Filter::schema()));
    }
}

/// The body of a discard.
pub(super) struct DiscardSelection;

impl PartialSchema for DiscardSelection {
    fn schema() -> RefOr<Schema> {
        SelectionDoc::schema(true)
    }
}

impl ToSchema for DiscardSelection {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((Filter::name().into_owned(), Filter::schema()));
    }
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

/// What a replay did.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Replayed {
    replayed: usize,
    message_ids: Vec<String>,
    failed: Vec<Failure>,
}

/// What a discard did.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Discarded {
    discarded: usize,
    message_ids: Vec<String>,
    failed: Vec<Failure>,
}

/// A selected message that could not be settled; it stays in the queue.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Failure {
    message_id: String,
    error: String,
}

/// Publish the selected messages back to their original exchange and routing key, with
/// `replayed-from`, who and when, and a fresh attempt count. Safe to repeat: participants
/// deduplicate on the idempotency key.
#[utoipa::path(post, path = "/admin/dlq/{queue}/replay", tag = TAG,
    params(("queue" = String, Path, description = "A dead-letter queue")),
    request_body(content = ReplaySelection, content_type = "application/json"),
    responses(
        (status = 200, description = "Every selected message was replayed (none selected: `0`)", body = Replayed),
        (status = 207, description = "Some could not be replayed (`failed`); they stay in the queue", body = Replayed),
        (status = 400, description = "The body is not a selection", body = Problem,
         content_type = "application/problem+json"),
        (status = 404, description = "Not a dead-letter queue", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The broker cannot be reached", body = Problem,
         content_type = "application/problem+json"),
    ))]
pub(super) async fn replay(
    State(admin): State<Admin>,
    Extension(actor): Extension<Actor>,
    Path(queue): Path<String>,
    body: Result<Json<Selection>, JsonRejection>,
) -> Response {
    match settle(admin, actor, queue, body, Action::Replay).await {
        Ok((status, message_ids, failed)) => {
            (status, Json(Replayed { replayed: message_ids.len(), message_ids, failed })).into_response()
        }
        Err(p) => p.into_response(),
    }
}

/// Remove the selected messages for good, with a reason.
#[utoipa::path(post, path = "/admin/dlq/{queue}/discard", tag = TAG,
    params(("queue" = String, Path, description = "A dead-letter queue")),
    request_body(content = DiscardSelection, content_type = "application/json"),
    responses(
        (status = 200, description = "Every selected message was discarded (none selected: `0`)", body = Discarded),
        (status = 207, description = "Some could not be discarded (`failed`); they stay in the queue", body = Discarded),
        (status = 400, description = "The body is not a selection with a reason", body = Problem,
         content_type = "application/problem+json"),
        (status = 404, description = "Not a dead-letter queue", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The broker cannot be reached", body = Problem,
         content_type = "application/problem+json"),
    ))]
pub(super) async fn discard(
    State(admin): State<Admin>,
    Extension(actor): Extension<Actor>,
    Path(queue): Path<String>,
    body: Result<Json<Selection>, JsonRejection>,
) -> Response {
    match settle(admin, actor, queue, body, Action::Discard).await {
        Ok((status, message_ids, failed)) => {
            (status, Json(Discarded { discarded: message_ids.len(), message_ids, failed })).into_response()
        }
        Err(p) => p.into_response(),
    }
}

/// The selected messages' ids, settled, and those that failed; `207` if any did.
async fn settle(
    admin: Admin,
    Actor(actor): Actor,
    queue: String,
    body: Result<Json<Selection>, JsonRejection>,
    action: Action,
) -> Result<(StatusCode, Vec<String>, Vec<Failure>), Problem> {
    admin.dead_letter_queue(&queue)?;
    let sel = selection(body)?;
    let reason = sel.reason.clone().map(|r| r.trim().to_owned()).filter(|r| !r.is_empty());
    // PostgreSQL text cannot hold it: refused here rather than failing each message's audit row.
    if reason.as_deref().is_some_and(|r| r.contains('\0')) {
        return Err(Problem::bad_request("the reason must not contain NUL (U+0000)"));
    }
    if action == Action::Discard && reason.is_none() {
        return Err(Problem::bad_request("a discard needs a `reason`"));
    }
    let fetched = Fetched::take(&admin.broker, &queue, MAX_SCAN).await?;
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for (tag, m) in fetched.messages.iter().filter(|(_, m)| sel.matches(m)) {
        let id = message_id(m).unwrap_or_default();
        if action == Action::Replay
            && let Err(e) = republish(&admin, &actor, &queue, m).await
        {
            failed.push(Failure { message_id: id, error: e });
            continue;
        }
        // Audit first: a message settled without its audit row would be an unexplained loss.
        if let Err(e) = record(&admin.pool, &actor, action, &queue, m, reason.as_deref()).await {
            failed.push(Failure { message_id: id, error: format!("audit: {e}") });
            continue;
        }
        if let Err(e) = fetched.ack(*tag).await {
            failed.push(Failure { message_id: id, error: format!("ack: {e}") });
            continue;
        }
        done.push(id);
    }
    fetched.give_back().await;
    tracing::info!(actor = %actor, action = action.as_str(), queue = %queue, count = done.len(), "dead letters settled");
    let status = if failed.is_empty() { StatusCode::OK } else { StatusCode::MULTI_STATUS };
    Ok((status, done, failed))
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
        // Locked, so the append below cannot lose to another.
        let saga: Option<(String, i64, Option<String>)> =
            sqlx::query_as("SELECT status, version, failure_reason FROM sagas WHERE id = $1 FOR UPDATE")
                .bind(saga_id)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some((status, version, failure_reason)) = saga {
            let what = ty.as_deref().unwrap_or("message");
            let note = match action {
                Action::Replay => format!("{what} replayed from {queue} by {actor}"),
                Action::Discard => format!("{what} discarded from {queue} by {actor}: {}", reason.unwrap_or("")),
            };
            let entry = TimelineEntry {
                event: Recorded::notice(action.as_str(), &note),
                kind: "operator",
                status: &status,
                step: None,
                failure_reason: failure_reason.as_deref(),
                note: &note,
                cause_message_id: id.as_deref().and_then(|id| Uuid::parse_str(id).ok()),
                cause_type: ty.as_deref(),
                sent: json!([]),
            };
            store::note(&mut tx, saga_id, version, &entry, Some(&note)).await.map_err(|e| match e {
                StoreError::Db(e) => e,
                other => sqlx::Error::Protocol(other.to_string()),
            })?;
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
