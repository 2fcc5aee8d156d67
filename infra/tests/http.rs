//! The HTTP limits every process serves with ([`infra::http::limited`]), on a router of test
//! routes called in-process: an oversize body is a `413` problem on any kind of route, a request
//! that runs out of time is a timeout problem (its wait for a concurrency slot included),
//! requests beyond the concurrency limit wait for a slot instead of being refused, and a body a
//! refusal left unread is read before the answer (so the connection stays usable).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use futures_util::FutureExt;
use infra::http::{ApiJson, DRAIN_MIN_BYTES, HttpLimits, TIMEOUT_STATUS, limited};
use serde_json::Value;
use tokio::sync::{Notify, Semaphore};
use tower::ServiceExt;

const LIMITS: HttpLimits =
    HttpLimits { max_body_bytes: 1024, request_timeout: Duration::from_secs(60), concurrency: 512 };

/// Routes that read a body as JSON, as raw bytes, or not at all.
fn body_routes() -> Router {
    Router::new()
        .route("/json", post(|ApiJson(v): ApiJson<Value>| async move { v.to_string() }))
        .route("/bytes", post(|b: Bytes| async move { b.len().to_string() }))
        .route("/get", get(|| async { "ok" }))
}

/// Status, content type and JSON body (`Null` if the body is not JSON).
async fn parts(response: Response) -> (StatusCode, String, Value) {
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
    (status, content_type, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn request(method: &str, uri: &str, body: Body, content_length: Option<usize>) -> Request<Body> {
    let mut r = Request::builder().method(method).uri(uri).header(header::CONTENT_TYPE, "application/json");
    if let Some(n) = content_length {
        r = r.header(header::CONTENT_LENGTH, n);
    }
    r.body(body).expect("request")
}

/// A body of `n` bytes sent as a stream of unknown length (no `Content-Length`).
fn streamed(n: usize) -> Body {
    let chunks = (0..n.div_ceil(256)).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 256])));
    Body::from_stream(futures_util::stream::iter(chunks))
}

#[tokio::test]
async fn an_oversize_body_is_a_413_problem_on_every_kind_of_route() {
    let router = limited(body_routes(), LIMITS);
    let big = vec![b' '; 2048];
    for (method, uri) in [("POST", "/json"), ("POST", "/bytes"), ("GET", "/get")] {
        let declared = request(method, uri, Body::from(big.clone()), Some(big.len()));
        let (status, content_type, body) = parts(router.clone().oneshot(declared).await.unwrap()).await;
        assert_eq!((status, content_type.as_str()), (StatusCode::PAYLOAD_TOO_LARGE, "application/problem+json"));
        assert_eq!((body["status"].as_u64(), body["type"].as_str()), (Some(413), Some("urn:saga:problem:too-large")));
    }
    // Without a Content-Length the limit bites while the handler reads the body.
    for uri in ["/json", "/bytes"] {
        let (status, content_type, body) =
            parts(router.clone().oneshot(request("POST", uri, streamed(2048), None)).await.unwrap()).await;
        assert_eq!(
            (status, content_type.as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, "application/problem+json"),
            "{uri}"
        );
        assert_eq!(body["status"], 413, "{uri}");
    }
    // Within the limit, the same routes answer.
    let small = request("POST", "/json", Body::from("[1, 2]"), None);
    assert_eq!(parts(router.clone().oneshot(small).await.unwrap()).await.0, StatusCode::OK);
    let small = request("POST", "/bytes", streamed(512), None);
    assert_eq!(parts(router.oneshot(small).await.unwrap()).await.0, StatusCode::OK);
}

/// A streamed body of `n` bytes (a multiple of 256), and how much of it has been read.
fn watched(n: usize) -> (Arc<AtomicUsize>, Body) {
    let read = Arc::new(AtomicUsize::new(0));
    let counter = read.clone();
    let chunks = futures_util::stream::iter((0..n.div_ceil(256)).map(|_| Bytes::from(vec![b' '; 256])));
    let counted = futures_util::StreamExt::map(chunks, move |chunk| {
        counter.fetch_add(chunk.len(), Ordering::SeqCst);
        Ok::<_, std::io::Error>(chunk)
    });
    (read, Body::from_stream(counted))
}

#[tokio::test]
async fn a_body_a_refusal_left_unread_is_read_before_the_answer() {
    let router = limited(body_routes(), LIMITS);
    // 415 before the JSON extractor reads anything; 413 on the declared length alone.
    for (content_type, n, status) in [
        ("text/plain", 768, StatusCode::UNSUPPORTED_MEDIA_TYPE),
        ("application/json", 4096, StatusCode::PAYLOAD_TOO_LARGE),
    ] {
        let (read, body) = watched(n);
        let request = Request::post("/json")
            .header(header::CONTENT_TYPE, content_type)
            .header(header::CONTENT_LENGTH, n)
            .body(body)
            .unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), status);
        assert_eq!(read.load(Ordering::SeqCst), n, "{content_type}: the whole body was read");
        assert!(response.headers().get(header::CONNECTION).is_none(), "{content_type}: the connection stays open");
    }
    // A body declared larger than what is worth reading is left alone, and the connection closed.
    let (read, body) = watched(256);
    let request = Request::post("/json")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, DRAIN_MIN_BYTES + 1)
        .body(body)
        .unwrap();
    let response = router.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(read.load(Ordering::SeqCst), 0);
    assert_eq!(response.headers()[header::CONNECTION], "close");
}

#[tokio::test]
async fn axum_s_own_bare_refusals_are_problems_too() {
    let router = limited(body_routes(), LIMITS);
    let wrong_method = router.clone().oneshot(request("GET", "/json", Body::empty(), None)).await.unwrap();
    assert_eq!(wrong_method.headers()[header::ALLOW], "POST", "headers survive");
    let (status, content_type, body) = parts(wrong_method).await;
    assert_eq!((status, content_type.as_str()), (StatusCode::METHOD_NOT_ALLOWED, "application/problem+json"));
    assert_eq!(body["type"], "urn:saga:problem:method-not-allowed");
    let (status, content_type, _) =
        parts(router.oneshot(request("GET", "/nowhere", Body::empty(), None)).await.unwrap()).await;
    assert_eq!((status, content_type.as_str()), (StatusCode::NOT_FOUND, "application/problem+json"));
}

/// `/slow` sleeps an hour; `/quick` answers at once.
fn timed_routes() -> Router {
    Router::new()
        .route("/slow", get(|| async { tokio::time::sleep(Duration::from_secs(3600)).await }))
        .route("/quick", get(|| async { "ok" }))
}

#[tokio::test(start_paused = true)]
async fn a_request_past_the_timeout_is_a_timeout_problem() {
    let limits = HttpLimits { request_timeout: Duration::from_millis(200), ..LIMITS };
    let router = limited(timed_routes(), limits);
    let started = tokio::time::Instant::now();
    let (status, content_type, body) =
        parts(router.clone().oneshot(request("GET", "/slow", Body::empty(), None)).await.unwrap()).await;
    assert_eq!(started.elapsed(), Duration::from_millis(200));
    assert_eq!((status, content_type.as_str()), (TIMEOUT_STATUS, "application/problem+json"));
    assert_eq!(body["type"], "urn:saga:problem:timeout");
    assert!(body["detail"].as_str().unwrap().contains("200 ms"), "{body}");
    let quick = router.oneshot(request("GET", "/quick", Body::empty(), None)).await.unwrap();
    assert_eq!(quick.status(), StatusCode::OK);
}

/// `/hold` signals `entered`, then waits until `gate` has a permit; `/quick` counts its calls.
struct Gated {
    router: Router,
    entered: Arc<Notify>,
    gate: Arc<Semaphore>,
    quick_calls: Arc<AtomicUsize>,
}

fn gated(limits: HttpLimits) -> Gated {
    let (entered, gate) = (Arc::new(Notify::new()), Arc::new(Semaphore::new(0)));
    let quick_calls = Arc::new(AtomicUsize::new(0));
    let (e, g, q) = (entered.clone(), gate.clone(), Arc::clone(&quick_calls));
    let routes = Router::new()
        .route(
            "/hold",
            get(move || async move {
                e.notify_one();
                g.acquire().await.expect("gate open").forget();
                "held"
            }),
        )
        .route(
            "/quick",
            get(move || async move {
                q.fetch_add(1, Ordering::SeqCst);
                "ok"
            }),
        );
    Gated { router: limited(routes, limits), entered, gate, quick_calls }
}

#[tokio::test]
async fn requests_beyond_the_concurrency_limit_wait_for_a_slot() {
    let g = gated(HttpLimits { concurrency: 1, ..LIMITS });
    let holder = tokio::spawn(g.router.clone().oneshot(request("GET", "/hold", Body::empty(), None)));
    g.entered.notified().await;
    // The one slot is taken: a second request cannot even start (its first poll stops at the
    // limit; without one it would complete right here).
    let mut waiting = Box::pin(g.router.clone().oneshot(request("GET", "/quick", Body::empty(), None)));
    assert!((&mut waiting).now_or_never().is_none(), "the second request waits");
    assert_eq!(g.quick_calls.load(Ordering::SeqCst), 0);
    // When the slot frees, the waiting request is served, not refused.
    g.gate.add_permits(1);
    assert_eq!(holder.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(waiting.await.unwrap().status(), StatusCode::OK);
    assert_eq!(g.quick_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn the_wait_for_a_slot_counts_against_the_timeout() {
    let timeout = Duration::from_millis(100);
    let g = gated(HttpLimits { concurrency: 1, request_timeout: timeout, ..LIMITS });
    let started = tokio::time::Instant::now();
    // Three requests that would each hold the one slot forever: had the timeout started only
    // once a request got its slot, they would answer after 100, 200 and 300 ms.
    let calls: Vec<_> =
        (0..3).map(|_| tokio::spawn(g.router.clone().oneshot(request("GET", "/hold", Body::empty(), None)))).collect();
    for call in calls {
        let (status, content_type, _) = parts(call.await.unwrap().unwrap()).await;
        assert_eq!(started.elapsed(), timeout, "answered within the timeout, its wait for the slot included");
        assert_eq!((status, content_type.as_str()), (TIMEOUT_STATUS, "application/problem+json"));
    }
}
