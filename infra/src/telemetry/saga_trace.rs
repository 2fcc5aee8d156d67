//! One trace per saga, across every process it touches.
//!
//! A saga's trace id is the saga id, and every message carries a W3C `traceparent` with that
//! trace id and a span id derived from the message id ([`contracts::envelope::traceparent`]).
//! Three kinds of spans hang on it:
//!
//! - `send <type>` (kind producer), written by [`sent`] when a message is queued in the outbox
//!   (or a notice is published). Its span id *is* the message's span id; its parent is the span
//!   that decided to send it: the handling of a message, or the `POST /orders` request. A send
//!   with no current span in the saga's trace (a re-send by the timeout scanner) is a root of the
//!   saga's trace, linked to whatever span was current.
//! - `process <type>` (kind consumer): the consumer's `message` span, whose parent [`consumed`]
//!   takes from the `traceparent` the message carries, so the `send` span of the process that
//!   sent it, in another process.
//! - the request span of every HTTP route (kind server, [`super::requests`]). The saga id is drawn
//!   inside `POST /orders`, after its span began. Spans are built when first needed (no context
//!   activation), and [`sent`] builds the current span with the saga id pinned as the trace id it
//!   draws, so the request that started a saga is the root of that saga's trace.
//!
//! The SDK draws every trace and span id from the provider's id generator; [`SagaIds`] draws them
//! at random, unless this thread pinned the next ones for the one span being built.

use std::cell::Cell;
use std::sync::OnceLock;

use contracts::envelope::headers;
use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracer};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::amqp::{Incoming, Outgoing};

static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// Called once by [`super::init`] when spans are exported.
pub(super) fn install(tracer: SdkTracer) {
    let _ = TRACER.set(tracer);
}

/// Whether this process exports spans. When it does not, the helpers here return at once.
pub fn exporting() -> bool {
    TRACER.get().is_some()
}

thread_local! {
    static NEXT_TRACE_ID: Cell<Option<TraceId>> = const { Cell::new(None) };
    static NEXT_SPAN_ID: Cell<Option<SpanId>> = const { Cell::new(None) };
}

/// Random ids, except those this thread pinned for the span it is building.
#[derive(Debug, Default)]
pub struct SagaIds {
    random: RandomIdGenerator,
}

impl IdGenerator for SagaIds {
    fn new_trace_id(&self) -> TraceId {
        NEXT_TRACE_ID.take().unwrap_or_else(|| self.random.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        NEXT_SPAN_ID.take().unwrap_or_else(|| self.random.new_span_id())
    }
}

/// Run `build` with the next trace id (and span id) this thread draws pinned. The trace id is only
/// drawn for a root span; what `build` does not draw is unpinned afterwards.
fn pinned<R>(trace_id: TraceId, span_id: Option<SpanId>, build: impl FnOnce() -> R) -> R {
    struct Unpin;
    impl Drop for Unpin {
        fn drop(&mut self) {
            NEXT_TRACE_ID.set(None);
            NEXT_SPAN_ID.set(None);
        }
    }
    NEXT_TRACE_ID.set(Some(trace_id));
    NEXT_SPAN_ID.set(span_id);
    let _unpin = Unpin;
    build()
}

/// The span context a `traceparent` names, if it is a valid W3C one: version `00` (or a later
/// one, read as `00`), 32 and 16 lowercase hex digits, neither all zeros, and the flags.
pub fn remote_context(traceparent: &str) -> Option<SpanContext> {
    let mut parts = traceparent.trim().split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex =
        |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let later_version = version != "00" && version != "ff";
    if !hex(version, 2)
        || !hex(trace, 32)
        || !hex(span, 16)
        || !hex(flags, 2)
        || (parts.next().is_some() && !later_version)
    {
        return None;
    }
    let trace_id = TraceId::from(u128::from_str_radix(trace, 16).ok()?);
    let span_id = SpanId::from(u64::from_str_radix(span, 16).ok()?);
    let flags = TraceFlags::new(u8::from_str_radix(flags, 16).ok()? & TraceFlags::SAMPLED.to_u8());
    let context = SpanContext::new(trace_id, span_id, flags, true, TraceState::NONE);
    (version != "ff" && context.is_valid()).then_some(context)
}

/// Make `span`, the consumer's span of one delivery, the `process <type>` span of the message's
/// trace: a child of the span the message's `traceparent` names. The span must declare the
/// fields `otel.name` and `otel.kind` (empty); they are filled only when spans are exported.
pub fn consumed(span: &tracing::Span, incoming: &Incoming) {
    if !exporting() {
        return;
    }
    let message_type = incoming.properties.kind().as_ref().map_or("", |t| t.as_str());
    span.record("otel.name", format!("process {message_type}").as_str());
    span.record("otel.kind", "consumer");
    span.set_attribute("messaging.system", "rabbitmq");
    span.set_attribute("messaging.operation.type", "process");
    if let Some(parent) = incoming.header_str(headers::TRACEPARENT).as_deref().and_then(remote_context) {
        // Fails only if the span is disabled for the exporter (filtered out); it then has no parent.
        let _ = span.set_parent(Context::new().with_remote_span_context(parent));
    }
}

/// Record the `send <type>` span of `message`, just queued or published: span id and trace id
/// from its `traceparent`, parent the current span if that is in the same trace.
pub fn sent(message: &Outgoing) {
    let Some(tracer) = TRACER.get() else { return };
    let Some(own) = message.meta.traceparent.as_deref().and_then(remote_context) else { return };
    // Building the current span now, if it was not yet, gives it the saga's trace id if it is a
    // root: the `POST /orders` request that started this saga.
    let current = pinned(own.trace_id(), None, || tracing::Span::current().context());
    let parent = current.span().span_context().clone();
    let (parent_cx, links) = if parent.trace_id() == own.trace_id() {
        (current, Vec::new())
    } else if parent.is_valid() {
        (Context::new(), vec![Link::with_context(parent)])
    } else {
        (Context::new(), Vec::new())
    };
    let builder = tracer
        .span_builder(format!("send {}", message.meta.message_type))
        .with_kind(SpanKind::Producer)
        .with_links(links)
        .with_attributes(send_attributes(message));
    let mut span = pinned(own.trace_id(), Some(own.span_id()), || builder.start_with_context(tracer, &parent_cx));
    span.end();
}

fn send_attributes(message: &Outgoing) -> Vec<KeyValue> {
    let meta = &message.meta;
    vec![
        KeyValue::new("messaging.system", "rabbitmq"),
        KeyValue::new("messaging.operation.type", "send"),
        KeyValue::new("messaging.destination.name", message.exchange.clone()),
        KeyValue::new("messaging.rabbitmq.destination.routing_key", message.routing_key.clone()),
        KeyValue::new("message_id", meta.message_id.to_string()),
        KeyValue::new("message_type", meta.message_type.clone()),
        KeyValue::new("saga_id", meta.saga_id.to_string()),
        KeyValue::new("attempt", i64::from(meta.attempt)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn a_message_traceparent_names_its_saga_and_message() {
        let (saga, message) = (Uuid::now_v7(), Uuid::now_v7());
        let cx = remote_context(&contracts::envelope::traceparent(saga, message)).expect("valid");
        assert_eq!(cx.trace_id(), TraceId::from(saga.as_u128()));
        assert_eq!(cx.span_id(), SpanId::from(message.as_u128() as u64));
        assert!(cx.is_remote() && cx.is_sampled());
    }

    #[test]
    fn a_bad_traceparent_names_nothing() {
        let good = "00-0191d6a17c2e7b3a9f000123456789ab-00f067aa0ba902b7-01";
        assert!(remote_context(good).is_some());
        for bad in [
            "",
            "garbage",
            "00-abc-def-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-0191d6a17c2e7b3a9f000123456789ab-0000000000000000-01",
            "00-0191D6A17C2E7B3A9F000123456789AB-00f067aa0ba902b7-01",
            "ff-0191d6a17c2e7b3a9f000123456789ab-00f067aa0ba902b7-01",
            "00-0191d6a17c2e7b3a9f000123456789ab-00f067aa0ba902b7-01-extra",
            "00-0191d6a17c2e7b3a9f000123456789ab-00f067aa0ba902b7-1",
            "00-+191d6a17c2e7b3a9f000123456789ab-00f067aa0ba902b7-01",
        ] {
            assert!(remote_context(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn pinned_ids_are_drawn_once_then_random_again() {
        let ids = SagaIds::default();
        let (trace, span) = (TraceId::from(7u128), SpanId::from(9u64));
        let drawn = pinned(trace, Some(span), || (ids.new_trace_id(), ids.new_span_id(), ids.new_span_id()));
        assert_eq!((drawn.0, drawn.1), (trace, span));
        assert_ne!(drawn.2, span);
        // Not drawn inside: not left pinned for a later span.
        pinned(trace, Some(span), || ());
        assert_ne!(ids.new_trace_id(), trace);
        assert_ne!(ids.new_span_id(), span);
    }
}
