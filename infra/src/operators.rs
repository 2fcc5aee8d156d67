//! Who may use a process's operator routes: operators with a name (for audits and logs) and a
//! secret token from `<PROCESS>_ADMIN_TOKENS` (`alice=<token>,bob=<token>`), the middleware that
//! checks `Authorization: Bearer <token>` ([`authorize`], which hands the route an [`Actor`]), and
//! what that check adds to the OpenAPI document ([`document`]). Tokens are compared in constant
//! time (`subtle`), every configured token every time, so response times say nothing about how
//! much of a token matched or which operator it was. Tokens are never printed.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;
use utoipa::openapi::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};

use crate::config::{ConfigError, Env};
use crate::http::Problem;
use crate::openapi::{may_answer_problem, operations_mut};

/// The name of the operators' security scheme in OpenAPI documents.
pub const SECURITY_SCHEME: &str = "operator_token";

/// An operator allowed to use the operator routes: a name (for the audit) and a secret token.
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

/// The operators of one process, and the variable they are configured by. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Operators {
    list: Arc<Vec<Operator>>,
    variable: Arc<str>,
}

impl Operators {
    /// `alice=token1,bob=token2` (a bare `token` means the operator `operator`), tokens of at least
    /// 8 characters; `variable` is the setting it came from (named when the routes are disabled).
    pub fn parse(spec: &str, variable: &str) -> Result<Operators, String> {
        let list = spec
            .split(',')
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
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Operators { list: Arc::new(list), variable: variable.into() })
    }

    /// `<PREFIX>_ADMIN_TOKENS` (or `ADMIN_TOKENS`); none: every operator route answers `401`. A
    /// bad value is an error that does not repeat it.
    pub fn from_env(env: &Env) -> Result<Operators, ConfigError> {
        let variable = env.name("ADMIN_TOKENS");
        Operators::parse(&env.string("ADMIN_TOKENS", ""), &variable).map_err(|message| ConfigError {
            var: variable.clone(),
            value: "***".into(),
            message,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Operator> {
        self.list.iter()
    }

    /// The operator whose token is `given`, comparing against every operator (in constant time
    /// for equal lengths: `subtle` answers unequal lengths at once; a length is not a secret worth
    /// hiding here, the content is).
    fn operator(&self, given: &str) -> Option<&Operator> {
        let mut found = None;
        for op in self.list.iter() {
            if bool::from(op.token.as_bytes().ct_eq(given.as_bytes())) && found.is_none() {
                found = Some(op);
            }
        }
        found
    }
}

/// The operator making the request, for the route's audit.
#[derive(Clone, Debug)]
pub struct Actor(pub String);

/// The token of an `Authorization` header value: scheme `Bearer`, in any case (RFC 9110).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim()).filter(|t| !t.is_empty())
}

/// Middleware: a valid bearer token (the route gets its [`Actor`]) or `401` problem+json with
/// `WWW-Authenticate: Bearer`.
pub async fn authorize(State(operators): State<Operators>, mut req: Request, next: Next) -> Response {
    let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer);
    if let Some(op) = given.and_then(|t| operators.operator(t)) {
        tracing::info!(operator = %op.name, path = %req.uri().path(), "operator request");
        req.extensions_mut().insert(Actor(op.name.clone()));
        return next.run(req).await;
    }
    let detail = if operators.is_empty() {
        format!("the operator routes are disabled: set {}", operators.variable)
    } else {
        "a valid `Authorization: Bearer <token>` header is required".to_owned()
    };
    let mut r = Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized").detail(detail).into_response();
    r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    r
}

/// What [`authorize`] adds to every operation of `doc` (a document of operator routes only): the
/// bearer scheme, named after `variable`, and `401`.
pub fn document(doc: &mut OpenApi, variable: &str) {
    let scheme = Http::builder()
        .scheme(HttpAuthScheme::Bearer)
        .description(Some(format!("A token of `{variable}` (`Authorization: Bearer <token>`)")))
        .build();
    let components = doc.components.get_or_insert_with(Default::default);
    components.security_schemes.insert(SECURITY_SCHEME.into(), SecurityScheme::Http(scheme));
    for operation in operations_mut(doc) {
        operation.security = Some(vec![SecurityRequirement::new(SECURITY_SCHEME, Vec::<String>::new())]);
        may_answer_problem(operation, 401, "No valid `Authorization: Bearer <token>` (`WWW-Authenticate: Bearer`)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(ops: &Operators, header: &str) -> Option<String> {
        bearer(header).and_then(|t| ops.operator(t)).map(|o| o.name.clone())
    }

    #[test]
    fn operators_parse_and_tokens_must_be_long_enough() {
        let ops = Operators::parse("alice=0123456789, bob = abcdefghij", "X_ADMIN_TOKENS").unwrap();
        assert_eq!(ops.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), ["alice", "bob"]);
        assert_eq!(Operators::parse("0123456789", "X").unwrap().list[0].name, "operator");
        assert!(Operators::parse("alice=short", "X").is_err());
        assert!(Operators::parse("", "X").unwrap().is_empty());
        assert!(!format!("{ops:?}").contains("0123456789"));
    }

    #[test]
    fn the_scheme_is_case_insensitive_and_the_token_must_match_exactly() {
        let ops = Operators::parse("alice=0123456789,bob=abcdefghij", "X").unwrap();
        for header in ["Bearer abcdefghij", "bearer abcdefghij", "BEARER  abcdefghij ", " Bearer abcdefghij"] {
            assert_eq!(name(&ops, header).as_deref(), Some("bob"), "{header:?}");
        }
        for header in ["Basic abcdefghij", "Bearer", "Bearer ", "abcdefghij", "Bearer abcdefghi", "Bearer abcdefghijk"]
        {
            assert_eq!(name(&ops, header), None, "{header:?}");
        }
    }
}
