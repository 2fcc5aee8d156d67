//! Who may use the operator API: operators with a name (for the audit) and a secret token from
//! `ORCHESTRATOR_ADMIN_TOKENS`, and the middleware that checks `Authorization: Bearer <token>`.
//! Tokens are compared in constant time (`subtle`), every configured token every time, so response
//! times say nothing about how much of a token matched or which operator it was.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use infra::http::Problem;
use subtle::ConstantTimeEq;

/// An operator allowed to use the API: a name (for the audit) and a secret token.
#[derive(Clone)]
pub struct Operator {
    pub name: String,
    pub token: String,
}

impl std::fmt::Debug for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operator").field("name", &self.name).field("token", &"***").finish()
    }
}

/// `alice=token1,bob=token2` (a bare `token` means the operator `operator`).
pub fn parse_operators(spec: &str) -> Result<Vec<Operator>, String> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|entry| {
            let (name, token) = entry.split_once('=').unwrap_or(("operator", entry));
            let (name, token) = (name.trim(), token.trim());
            if name.is_empty() || token.len() < 8 {
                return Err(format!("entry for {name:?}: a name and a token of at least 8 characters are needed"));
            }
            Ok(Operator { name: name.to_owned(), token: token.to_owned() })
        })
        .collect()
}

/// The operator making the request.
#[derive(Clone, Debug)]
pub struct Actor(pub String);

/// The token of an `Authorization` header value: scheme `Bearer`, in any case (RFC 9110).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim()).filter(|t| !t.is_empty())
}

/// The operator whose token is `given`. Compares against every operator, in constant time for
/// equal lengths (`subtle` answers unequal lengths at once; a length is not a secret worth hiding
/// here, the content is).
fn operator<'a>(operators: &'a [Operator], given: &str) -> Option<&'a Operator> {
    let mut found = None;
    for op in operators {
        if bool::from(op.token.as_bytes().ct_eq(given.as_bytes())) && found.is_none() {
            found = Some(op);
        }
    }
    found
}

/// Middleware: a valid bearer token or `401` problem+json with `WWW-Authenticate: Bearer`.
pub async fn authorize(
    State(operators): State<std::sync::Arc<Vec<Operator>>>,
    mut req: Request,
    next: Next,
) -> Response {
    let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer);
    match given.and_then(|t| operator(&operators, t)) {
        Some(op) => {
            req.extensions_mut().insert(Actor(op.name.clone()));
            next.run(req).await
        }
        None => {
            let detail = if operators.is_empty() {
                "the operator API is disabled: set ORCHESTRATOR_ADMIN_TOKENS"
            } else {
                "a valid `Authorization: Bearer <token>` header is required"
            };
            let mut r =
                Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized").detail(detail).into_response();
            r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators_parse_and_tokens_must_be_long_enough() {
        let ops = parse_operators("alice=0123456789, bob = abcdefghij").unwrap();
        assert_eq!(ops.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), ["alice", "bob"]);
        assert_eq!(parse_operators("0123456789").unwrap()[0].name, "operator");
        assert!(parse_operators("alice=short").is_err());
        assert!(parse_operators("").unwrap().is_empty());
        assert!(!format!("{:?}", ops[0]).contains("0123456789"));
    }

    #[test]
    fn the_scheme_is_case_insensitive_and_the_token_must_match_exactly() {
        let ops = parse_operators("alice=0123456789,bob=abcdefghij").unwrap();
        for header in ["Bearer abcdefghij", "bearer abcdefghij", "BEARER  abcdefghij ", " Bearer abcdefghij"] {
            assert_eq!(
                bearer(header).and_then(|t| operator(&ops, t)).map(|o| o.name.as_str()),
                Some("bob"),
                "{header:?}"
            );
        }
        for header in ["Basic abcdefghij", "Bearer", "Bearer ", "abcdefghij", "Bearer abcdefghi", "Bearer abcdefghijk"]
        {
            assert_eq!(bearer(header).and_then(|t| operator(&ops, t)).map(|o| o.name.as_str()), None, "{header:?}");
        }
    }
}
