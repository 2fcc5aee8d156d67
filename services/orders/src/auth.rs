//! Who may use the read side's operator endpoint (`POST /admin/rebuild`): a bearer token of
//! `ORDERS_ADMIN_TOKENS` (`name=token,...`, as `ORCHESTRATOR_ADMIN_TOKENS`), compared in constant
//! time (`subtle`) against every configured token every time. The orchestrator keeps its own
//! operator check inside its crate; this is the small equivalent, not shared with it.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use infra::http::Problem;
use subtle::ConstantTimeEq;

/// The operators' tokens. Never printed.
#[derive(Clone, Default)]
pub struct Tokens(Arc<Vec<(String, String)>>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Tokens").field("operators", &names).finish()
    }
}

impl Tokens {
    /// `alice=token1,bob=token2` (a bare `token` is the operator `operator`); tokens of at least 8
    /// characters.
    pub fn parse(spec: &str) -> Result<Tokens, String> {
        let entries = spec
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|entry| {
                let (name, token) = entry.split_once('=').unwrap_or(("operator", entry));
                let (name, token) = (name.trim(), token.trim());
                if name.is_empty() || token.len() < 8 {
                    return Err(format!("entry for {name:?}: a name and a token of at least 8 characters are needed"));
                }
                Ok((name.to_owned(), token.to_owned()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Tokens(Arc::new(entries)))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The operator whose token is `given`, comparing with every token.
    fn operator(&self, given: &str) -> Option<&str> {
        let mut found = None;
        for (name, token) in self.0.iter() {
            if bool::from(token.as_bytes().ct_eq(given.as_bytes())) && found.is_none() {
                found = Some(name.as_str());
            }
        }
        found
    }
}

/// The token of an `Authorization` header value: scheme `Bearer`, in any case.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim()).filter(|t| !t.is_empty())
}

/// Middleware: a valid bearer token or `401` problem+json with `WWW-Authenticate: Bearer`.
pub async fn authorize(State(tokens): State<Tokens>, req: Request, next: Next) -> Response {
    let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer);
    if let Some(name) = given.and_then(|t| tokens.operator(t)) {
        tracing::info!(operator = name, path = %req.uri().path(), "operator request");
        return next.run(req).await;
    }
    let detail = if tokens.is_empty() {
        "the operator endpoints are disabled: set ORDERS_ADMIN_TOKENS"
    } else {
        "a valid `Authorization: Bearer <token>` header is required"
    };
    let mut r = Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized").detail(detail).into_response();
    r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_match_exactly() {
        let t = Tokens::parse("alice=0123456789, bob = abcdefghij").unwrap();
        assert_eq!(t.operator("abcdefghij"), Some("bob"));
        assert_eq!(t.operator("abcdefghi"), None);
        assert_eq!(bearer("bearer  0123456789 ").and_then(|g| t.operator(g)), Some("alice"));
        assert_eq!(bearer("Basic 0123456789"), None);
        assert!(Tokens::parse("alice=short").is_err());
        assert!(Tokens::parse("").unwrap().is_empty());
        assert!(!format!("{t:?}").contains("0123456789"));
    }
}
