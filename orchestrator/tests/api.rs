//! The orchestrator's HTTP surface, started in-process on its own vhost and database: the limits
//! every route has (public, operator and health routes alike), and properties of `POST /orders`:
//! whatever a client sends (any JSON, any strings, any numbers, any bytes under any content
//! type) the answer is a `202` or a 4xx `problem+json`, never a 5xx and never a dropped
//! connection.

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use infra::testing::{TestDb, TestVhost, spawn_app};
use orchestrator::settings::OrchestratorSettings;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// One orchestrator, running until dropped.
struct Running {
    base: String,
    http: reqwest::Client,
    token: CancellationToken,
    _db: TestDb,
    _vhost: TestVhost,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

async fn start(configure: impl FnOnce(&mut OrchestratorSettings)) -> Running {
    let (vhost, db) = tokio::join!(TestVhost::create("orch_api"), TestDb::create("orch_api"));
    let mut settings = OrchestratorSettings::for_tests(&vhost.amqp_url, &db.url);
    configure(&mut settings);
    let app = orchestrator::build(settings).await.expect("orchestrator starts");
    let base = format!("http://{}", app.local_addr());
    let (token, _handle) = spawn_app(app);
    Running { base, http: reqwest::Client::new(), token, _db: db, _vhost: vhost }
}

/// Status, content type and JSON body (`Null` if not JSON).
async fn answer(response: reqwest::Response) -> (StatusCode, String, Value) {
    read_answer(response).await.expect("the body of the answer")
}

async fn read_answer(response: reqwest::Response) -> Result<(StatusCode, String, Value), reqwest::Error> {
    let status = response.status();
    let content_type =
        response.headers().get("content-type").map(|v| v.to_str().unwrap_or_default().to_owned()).unwrap_or_default();
    let body = response.bytes().await?;
    Ok((status, content_type, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

#[tokio::test]
async fn every_route_refuses_an_oversize_body_with_a_problem() {
    let o = start(|s| {
        s.common.http.max_body_bytes = 16 * 1024;
        s.max_body_bytes = 4 * 1024;
    })
    .await;
    let over_every_route = vec![b' '; 32 * 1024];
    for (method, path) in [
        (reqwest::Method::POST, "/orders"),
        (reqwest::Method::GET, "/sagas"),
        (reqwest::Method::POST, "/admin/dlq/inventory.commands.dlq/replay"),
        (reqwest::Method::GET, "/health/live"),
        (reqwest::Method::GET, "/metrics"),
    ] {
        let sent = o.http.request(method, format!("{}{path}", o.base)).body(over_every_route.clone());
        let (status, content_type, body) = answer(sent.send().await.expect("an answer")).await;
        assert_eq!(
            (status, content_type.as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, "application/problem+json"),
            "{path}"
        );
        assert_eq!(body["status"], 413, "{path}");
    }
    // POST /orders keeps its own, smaller limit (ORCHESTRATOR_MAX_BODY_BYTES).
    let over_orders = format!("{{\"customer_id\": \"{}\"}}", "x".repeat(8 * 1024));
    let sent = o.http.post(format!("{}/orders", o.base)).header("content-type", "application/json").body(over_orders);
    let (status, content_type, _) = answer(sent.send().await.expect("an answer")).await;
    assert_eq!((status, content_type.as_str()), (StatusCode::PAYLOAD_TOO_LARGE, "application/problem+json"));
    // Small requests pass.
    let live = o.http.get(format!("{}/health/live", o.base)).send().await.expect("an answer");
    assert_eq!(live.status(), StatusCode::OK);
}

/// One `POST /orders` as a client may send it.
#[derive(Clone)]
struct Post {
    body: Vec<u8>,
    /// Sent as given (bytes HTTP cannot carry in a header are dropped first); `None`: no header.
    content_type: Option<Vec<u8>>,
    /// An `Idempotency-Key`, sent only if HTTP can carry it.
    key: Option<String>,
}

impl std::fmt::Debug for Post {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Post")
            .field("body", &String::from_utf8_lossy(&self.body))
            .field("content_type", &self.content_type.as_deref().map(String::from_utf8_lossy))
            .field("key", &self.key)
            .finish()
    }
}

impl Post {
    fn json(body: &Value) -> Post {
        Post { body: body.to_string().into_bytes(), content_type: Some(b"application/json".to_vec()), key: None }
    }
}

/// Send `post`; the answer must be a `202`, or a 4xx `problem+json` whose `status` is its own.
async fn answers_well(o: &Running, post: Post) -> Result<(), TestCaseError> {
    let mut request = o.http.post(format!("{}/orders", o.base)).body(post.body);
    if let Some(mut content_type) = post.content_type {
        content_type.retain(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f));
        let value = HeaderValue::from_bytes(&content_type).map_err(|e| TestCaseError::reject(e.to_string()))?;
        request = request.header(CONTENT_TYPE, value);
    }
    if let Some(key) = post.key.as_deref().and_then(|k| HeaderValue::from_bytes(k.as_bytes()).ok()) {
        request = request.header("idempotency-key", key);
    }
    let no_answer = |e| TestCaseError::fail(format!("no answer: {e:?}"));
    let (status, content_type, body) =
        read_answer(request.send().await.map_err(no_answer)?).await.map_err(no_answer)?;
    if status == StatusCode::ACCEPTED {
        return Ok(());
    }
    prop_assert!(status.is_client_error(), "answered {}: {}", status, body);
    prop_assert_eq!(content_type.as_str(), "application/problem+json", "{}", body);
    prop_assert_eq!(body["status"].as_u64(), Some(u64::from(status.as_u16())), "{}", body);
    Ok(())
}

/// Run `cases` cases of `strategy` against the orchestrator; panic with the smallest failure.
fn check(name: &str, cases: u32, strategy: impl Strategy<Value = Post>, rt: &tokio::runtime::Runtime, o: &Running) {
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    let result = TestRunner::new(config).run(&strategy, |post| rt.block_on(answers_well(o, post)));
    if let Err(e) = result {
        panic!("POST /orders with {name}: {e}");
    }
}

/// The field names of an order, so that arbitrary objects often look like (parts of) one.
const FIELDS: [&str; 13] = [
    "customer_id",
    "currency",
    "items",
    "sku",
    "quantity",
    "unit_price_cents",
    "shipping_address",
    "name",
    "line1",
    "line2",
    "city",
    "postal_code",
    "country",
];

/// Strings that have broken parsers, validators and databases before.
const TRICKY: [&str; 24] = [
    "",
    " ",
    "\u{0}",
    "a\u{0}b",
    "\t",
    "\r\n",
    "\u{7f}",
    "\u{85}",
    "\u{200f}",
    "\u{202e}fdp.exe",
    "\u{feff}",
    "\u{fffe}",
    "\u{ffff}",
    "\u{10ffff}",
    "👩‍👩‍👧‍👦",
    "🇩🇪",
    "e\u{301}\u{301}\u{301}",
    "𝕏",
    "\\",
    "\"",
    "'; DROP TABLE sagas; --",
    "DE",
    "EUR",
    "SKU-0001",
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any::<String>(),
        3 => select(TRICKY.to_vec()).prop_map(String::from),
        2 => vec(select(TRICKY.to_vec()), 1..20).prop_map(|parts| parts.concat()),
        1 => select(vec![64, 65, 200, 201, 70_000]).prop_map(|n| "x".repeat(n)),
        1 => (any::<char>(), 1..20_000usize).prop_map(|(c, n)| c.to_string().repeat(n)),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        let key = prop_oneof![select(FIELDS.to_vec()).prop_map(String::from), any::<String>()];
        prop_oneof![
            vec(inner.clone(), 0..8).prop_map(Value::Array),
            btree_map(key, inner, 0..8).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid order with `items` lines.
fn valid_order(items: usize) -> Value {
    let lines: Vec<Value> =
        (1..=items).map(|i| json!({"sku": format!("SKU-{i:04}"), "quantity": 1, "unit_price_cents": 1999})).collect();
    json!({
        "customer_id": "c-42",
        "currency": "EUR",
        "items": lines,
        "shipping_address": {
            "name": "Ada Lovelace", "line1": "1 Main St", "line2": "Apt 2",
            "city": "Berlin", "postal_code": "10115", "country": "DE"
        }
    })
}

/// Every string field of an order, as a JSON pointer.
const STRING_FIELDS: [&str; 9] = [
    "/customer_id",
    "/currency",
    "/items/0/sku",
    "/shipping_address/name",
    "/shipping_address/line1",
    "/shipping_address/line2",
    "/shipping_address/city",
    "/shipping_address/postal_code",
    "/shipping_address/country",
];

/// A valid order with one to three of its string fields replaced by arbitrary text.
fn order_with_odd_strings() -> impl Strategy<Value = Post> {
    let replaced = vec((select(STRING_FIELDS.to_vec()), text()), 1..4);
    // A key that is not visible ASCII is refused before the body is looked at: send one rarely.
    let key = proptest::option::weighted(0.2, prop_oneof![text(), "[!-~]{1,40}"]);
    (1..4usize, replaced, key).prop_map(|(items, replaced, key)| {
        let mut order = valid_order(items);
        for (pointer, value) in replaced {
            if let Some(field) = order.pointer_mut(pointer) {
                *field = Value::String(value);
            }
        }
        Post { key, ..Post::json(&order) }
    })
}

/// Any JSON number, as text: integers of every size, floats, exponents, `-0`, out of range.
fn number() -> impl Strategy<Value = String> {
    const EDGES: [&str; 16] = [
        "0",
        "-0",
        "-0.0",
        "0.0",
        "1.0",
        "1e2",
        "1E+2",
        "1e400",
        "-1e400",
        "1e-400",
        "0.5",
        "4294967296",
        "18446744073709551616",
        "-9223372036854775809",
        "100000000",
        "99999999999999999999999999999",
    ];
    prop_oneof![
        // Often valid, so that whole orders pass and reach the engine.
        8 => (1..10_000u32).prop_map(|n| n.to_string()),
        2 => (-1_000..200_000_000i64).prop_map(|n| n.to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_filter("JSON has no NaN or infinity", |f| f.is_finite()).prop_map(|f| format!("{f:?}")),
        1 => any::<f64>().prop_filter("JSON has no NaN or infinity", |f| f.is_finite()).prop_map(|f| format!("{f:e}")),
        2 => select(EDGES.to_vec()).prop_map(String::from),
        1 => "-?(0|[1-9][0-9]{0,40})(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,5})?",
    ]
}

/// A valid order whose every quantity and unit price is any number.
fn order_with_odd_numbers() -> impl Strategy<Value = Post> {
    vec((number(), number()), 1..4).prop_map(|lines| {
        let items: Vec<String> = lines
            .iter()
            .enumerate()
            .map(|(i, (q, p))| format!(r#"{{"sku":"SKU-{:04}","quantity":{q},"unit_price_cents":{p}}}"#, i + 1))
            .collect();
        let mut order = valid_order(1);
        order["items"] = json!([]);
        let body = order.to_string().replace(r#""items":[]"#, &format!(r#""items":[{}]"#, items.join(",")));
        Post { body: body.into_bytes(), content_type: Some(b"application/json".to_vec()), key: None }
    })
}

/// Any bytes (random, or a valid order cut short or with one byte changed) under any content type.
fn any_bytes() -> impl Strategy<Value = Post> {
    let valid = valid_order(2).to_string().into_bytes();
    let (cut, changed) = (valid.clone(), valid);
    let body = prop_oneof![
        vec(any::<u8>(), 0..2048),
        any::<Index>().prop_map(move |i| cut[..i.index(cut.len())].to_vec()),
        (any::<Index>(), any::<u8>()).prop_map(move |(i, b)| {
            let mut v = changed.clone();
            let at = i.index(v.len());
            v[at] = b;
            v
        }),
    ];
    let content_type = prop_oneof![
        1 => Just(None),
        3 => select(vec![
            "application/json",
            "application/json; charset=utf-8",
            "application/problem+json",
            "APPLICATION/JSON",
            "application/jsonx",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "",
        ])
        .prop_map(|c| Some(c.as_bytes().to_vec())),
        1 => vec(any::<u8>(), 0..60).prop_map(Some),
    ];
    (body, content_type).prop_map(|(body, content_type)| Post { body, content_type, key: None })
}

/// Found by the property below: a NUL in an address field passed validation, and PostgreSQL
/// refused to store it in the saga's JSONB (500). Now it is a 422 naming the field.
#[tokio::test]
async fn a_nul_in_any_text_field_is_a_422_naming_it() {
    let o = start(|_| {}).await;
    for pointer in STRING_FIELDS {
        let mut order = valid_order(1);
        *order.pointer_mut(pointer).expect("a field of the valid order") = json!("a\u{0}b");
        let sent = o.http.post(format!("{}/orders", o.base)).json(&order).send().await.expect("an answer");
        let (status, content_type, body) = answer(sent).await;
        assert_eq!((status, content_type.as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "application/problem+json"));
        let field = pointer.trim_start_matches('/').replace("/0/", "[0].").replace('/', ".");
        assert_eq!(body["errors"][0]["field"], field.as_str(), "{body}");
    }
}

/// Found by the property below too: a request refused before its body was read (a `413` on
/// its `Content-Length`, a `415`) left the body unread; hyper then closed the connection under
/// the client, which saw a broken pipe instead of the answer, or lost its next request on the
/// connection. Here each refused request is followed by a valid one on the same connection, the
/// bodies written in pieces while the server runs on other threads: every answer must arrive and
/// the connection must stay open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_refused_unread_leaves_its_connection_usable() {
    let o = start(|_| {}).await;
    let stream = tokio::net::TcpStream::connect(o.base.trim_start_matches("http://")).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let mut conn = tokio::io::BufReader::new(stream);
    let valid = valid_order(1).to_string().into_bytes();
    let too_large = vec![b' '; 100 * 1024];
    for _ in 0..5 {
        for (content_type, body, status) in
            [("application/json", &too_large, 413), ("text/plain", &valid, 415), ("application/json", &valid, 202)]
        {
            assert_eq!(raw_post(&mut conn, content_type, body).await, status, "{content_type}, {} bytes", body.len());
        }
    }
}

/// `POST /orders` on an open connection, the body written in 8 KiB pieces; the answer's status
/// (its body read and dropped). Fails if the connection breaks or is to be closed.
async fn raw_post(conn: &mut tokio::io::BufReader<tokio::net::TcpStream>, content_type: &str, body: &[u8]) -> u16 {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let head = format!(
        "POST /orders HTTP/1.1\r\nhost: test\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    conn.get_mut().write_all(head.as_bytes()).await.expect("write the head");
    for piece in body.chunks(8 * 1024) {
        conn.get_mut().write_all(piece).await.expect("write the body");
        tokio::task::yield_now().await;
    }
    let mut status_line = String::new();
    conn.read_line(&mut status_line).await.expect("read the answer");
    let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("an HTTP answer");
    let mut length = 0;
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).await.expect("read a header");
        let line = line.trim_end().to_ascii_lowercase();
        if line.is_empty() {
            break;
        }
        assert_ne!(line, "connection: close", "the answer to a {} byte body closes the connection", body.len());
        if let Some(n) = line.strip_prefix("content-length: ") {
            length = n.parse().expect("a length");
        }
    }
    let mut answer = vec![0; length];
    conn.read_exact(&mut answer).await.expect("read the body of the answer");
    status
}

#[test]
fn post_orders_answers_every_input_with_a_202_or_a_4xx_problem() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let o = rt.block_on(start(|_| {}));
    check("any JSON value", 120, json_value().prop_map(|v| Post::json(&v)), &rt, &o);
    check("arbitrary strings in an order", 150, order_with_odd_strings(), &rt, &o);
    check("arbitrary numbers in an order", 100, order_with_odd_numbers(), &rt, &o);
    check("arbitrary bytes and content types", 100, any_bytes(), &rt, &o);
    drop(o);
}
