//! The trace mechanics in one process, against a recording exporter: the request that starts a
//! saga is the root of the saga's trace, a message's `send` span has the message's span id, and
//! the handling of a message is a child of the span its `traceparent` names. (The test across the
//! real binaries, over OTLP, is `tests/tests/processes.rs`.)

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use axum::routing::post;
use contracts::Meta;
use opentelemetry::trace::{SpanId, SpanKind, TraceId, TracerProvider as _};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tower::ServiceExt;
use tracing::field::Empty;
use tracing_subscriber::layer::SubscriberExt;
use uuid::Uuid;

use super::saga_trace::{self, SagaIds};
use crate::amqp::{Incoming, Outgoing};
use crate::http::{HttpLimits, limited};

/// Keeps every exported span.
#[derive(Debug, Clone, Default)]
struct Recorder(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Recorder {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).extend(batch);
        Ok(())
    }
}

impl Recorder {
    fn named(&self, name: &str) -> SpanData {
        let spans = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        let found = spans.iter().find(|s| s.name == name).cloned();
        found.unwrap_or_else(|| panic!("no span {name}; got {:?}", spans.iter().map(|s| &s.name).collect::<Vec<_>>()))
    }
}

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes.iter().find(|kv: &&KeyValue| kv.key.as_str() == key).map(|kv| &kv.value)
}

fn outgoing(saga: Uuid, message_type: &str) -> Outgoing {
    Outgoing {
        exchange: "saga.commands".into(),
        routing_key: message_type.into(),
        mandatory: true,
        meta: Meta::new(saga, message_type),
        body: b"{}".to_vec(),
        extra_headers: Vec::new(),
    }
}

fn span_id(message: &Outgoing) -> SpanId {
    SpanId::from(message.meta.message_id.as_u128() as u64)
}

#[tokio::test]
async fn a_saga_is_one_trace_from_its_request_through_its_messages() {
    let recorder = Recorder::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(recorder.clone())
        .with_id_generator(SagaIds::default())
        .build();
    saga_trace::install(provider.tracer("test"));
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test")).with_context_activation(false);
    let _subscriber = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));

    // The request draws the saga id only while it is handled, as `POST /orders` does.
    let saga = Uuid::now_v7();
    let first = outgoing(saga, "inventory.reserve");
    let sent = first.clone();
    let app = Router::new().route(
        "/orders",
        post(move || async move {
            saga_trace::sent(&sent);
            "started"
        }),
    );
    let response = limited(app, HttpLimits::default())
        .oneshot(Request::post("/orders").body(Body::empty()).expect("request"))
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    // The request span ends with the answer's body.
    drop(response);

    let request = recorder.named("POST /orders");
    assert_eq!(request.span_context.trace_id(), TraceId::from(saga.as_u128()), "the request joins the saga's trace");
    assert_eq!(request.parent_span_id, SpanId::INVALID, "as its root");
    assert_eq!(request.span_kind, SpanKind::Server);
    assert_eq!(attribute(&request, "http.route"), Some(&Value::from("/orders")));
    assert_eq!(attribute(&request, "http.response.status_code"), Some(&Value::I64(200)));
    let send = recorder.named("send inventory.reserve");
    assert_eq!(send.span_context.span_id(), span_id(&first), "the send span is the message's span");
    assert_eq!(send.span_context.trace_id(), TraceId::from(saga.as_u128()));
    assert_eq!(send.parent_span_id, request.span_context.span_id());
    assert_eq!(send.span_kind, SpanKind::Producer);

    // The participant handles the command and answers: its span hangs on the command's send.
    let incoming = Incoming {
        exchange: first.exchange.clone(),
        routing_key: first.routing_key.clone(),
        redelivered: false,
        properties: first.properties(),
        body: first.body.clone(),
    };
    let reply = outgoing(saga, "inventory.reserved");
    let span = tracing::info_span!("message", otel.name = Empty, otel.kind = Empty);
    saga_trace::consumed(&span, &incoming);
    span.in_scope(|| saga_trace::sent(&reply));
    drop(span);
    let process = recorder.named("process inventory.reserve");
    assert_eq!(process.span_kind, SpanKind::Consumer);
    assert_eq!(process.span_context.trace_id(), TraceId::from(saga.as_u128()));
    assert_eq!(process.parent_span_id, span_id(&first), "parented by the traceparent the command carries");
    assert!(process.parent_span_is_remote);
    let answer = recorder.named("send inventory.reserved");
    assert_eq!(answer.span_context.span_id(), span_id(&reply));
    assert_eq!(answer.parent_span_id, process.span_context.span_id());

    // A send with no span of the saga's trace around it (the timeout scanner) is a root of it.
    let resent = outgoing(saga, "payment.authorize");
    saga_trace::sent(&resent);
    let root = recorder.named("send payment.authorize");
    assert_eq!(root.span_context.trace_id(), TraceId::from(saga.as_u128()));
    assert_eq!((root.span_context.span_id(), root.parent_span_id), (span_id(&resent), SpanId::INVALID));
}
