//! An answer lost on the wire: the status line and the first half of the JSON body go out, then
//! the body stream fails, and hyper closes the connection without finishing the chunked body. The
//! client has a `200` in hand but can never read the answer: reqwest's `send()` succeeds and
//! reading the body (`bytes()`, `json()`) fails with a body error, a transport error, not a
//! clean answer.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use futures_util::stream;
use serde_json::Value;

/// How long the half-sent body hangs before the connection drops: long enough for hyper to flush
/// the status line and the first chunk, so the client sees a cut-off body, not a refused request.
const HANG: Duration = Duration::from_millis(20);

/// A `200` whose body (`answer`, serialized) is cut off halfway by a dropped connection.
pub(crate) fn dropped(answer: &Value) -> Response {
    let text = answer.to_string().into_bytes();
    let head = Bytes::from(text[..text.len() / 2].to_vec());
    let first = stream::once(async move { Ok::<Bytes, std::io::Error>(head) });
    let failure = stream::once(async {
        tokio::time::sleep(HANG).await;
        Err(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "answer dropped on purpose"))
    });
    let body = Body::from_stream(first.chain(failure));
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
