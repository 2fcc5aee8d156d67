//! An OTLP/HTTP trace receiver for tests, as a tracing backend (Jaeger, Tempo, a collector) would
//! listen on `:4318`: `POST /v1/traces` with a protobuf `ExportTraceServiceRequest`, which is what
//! the processes' exporters send. It keeps every span with the `service.name` it came from.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// One span as received.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// `service.name` of the process that exported it.
    pub service: String,
    pub name: String,
    pub kind: SpanKind,
    /// The trace id, read as a UUID (a saga's trace id is its saga id).
    pub trace_id: Uuid,
    pub span_id: u64,
    /// `None` for a root span.
    pub parent_span_id: Option<u64>,
    /// String, integer and boolean attributes, as text.
    pub attributes: BTreeMap<String, String>,
}

/// A receiver on `127.0.0.1:<free port>`, stopped when dropped.
pub struct OtlpReceiver {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    stop: CancellationToken,
}

impl OtlpReceiver {
    pub async fn start() -> OtlpReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the OTLP receiver");
        let addr = listener.local_addr().expect("receiver address");
        let spans = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let app = Router::new().route("/v1/traces", post(receive)).with_state(spans.clone());
        let stopped = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).with_graceful_shutdown(stopped.cancelled_owned()).await;
        });
        OtlpReceiver { addr, spans, stop }
    }

    /// What `OTEL_EXPORTER_OTLP_ENDPOINT` should say (the exporter appends `/v1/traces`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// The spans of one trace.
    pub fn trace(&self, trace_id: Uuid) -> Vec<ReceivedSpan> {
        self.spans().into_iter().filter(|s| s.trace_id == trace_id).collect()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn receive(State(spans): State<Arc<Mutex<Vec<ReceivedSpan>>>>, body: Bytes) -> Response {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, "not an ExportTraceServiceRequest").into_response();
    };
    let received = request.resource_spans.into_iter().flat_map(|resource| {
        let attributes = resource.resource.map(|r| r.attributes).unwrap_or_default();
        let service = text_attributes(&attributes).remove("service.name").unwrap_or_default();
        let spans = resource.scope_spans.into_iter().flat_map(|scope| scope.spans);
        spans.map(move |s| ReceivedSpan {
            service: service.clone(),
            kind: SpanKind::try_from(s.kind).unwrap_or(SpanKind::Unspecified),
            trace_id: Uuid::from_bytes(s.trace_id.try_into().unwrap_or_default()),
            span_id: u64::from_be_bytes(s.span_id.try_into().unwrap_or_default()),
            parent_span_id: s.parent_span_id.try_into().ok().map(u64::from_be_bytes),
            attributes: text_attributes(&s.attributes),
            name: s.name,
        })
    });
    spans.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).extend(received);
    let answer = ExportTraceServiceResponse::default().encode_to_vec();
    ([(header::CONTENT_TYPE, "application/x-protobuf")], answer).into_response()
}

fn text_attributes(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    let text = |kv: &KeyValue| match kv.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        _ => None,
    };
    attributes.iter().filter_map(|kv| Some((kv.key.clone(), text(kv)?))).collect()
}
