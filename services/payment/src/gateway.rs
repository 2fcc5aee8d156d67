//! The payment gateway client: the (simulated, `outside` crate) gateway over HTTP, behind a
//! circuit breaker with retries ([`infra::resilience`]). Every call carries the command's
//! idempotency key (plus the operation), so a retried or re-sent call is applied once by the
//! gateway.

use infra::resilience::{CallError, HttpDependency, HttpError};
use serde_json::json;

#[derive(Clone)]
pub struct Gateway {
    pub http: HttpDependency,
}

impl Gateway {
    /// Returns the gateway's authorization id.
    pub async fn authorize(
        &self,
        key: &str,
        amount_cents: i64,
        currency: &str,
    ) -> Result<String, CallError<HttpError>> {
        let answer = self
            .http
            .post(
                "/authorizations",
                &format!("{key}:authorize"),
                &json!({"amount_cents": amount_cents, "currency": currency}),
            )
            .await?;
        answer["authorization_id"].as_str().map(str::to_owned).ok_or_else(|| CallError::Permanent {
            dependency: self.http.dependency().name(),
            error: HttpError::Body(format!("no authorization_id in {answer}")),
        })
    }

    pub async fn capture(&self, key: &str, authorization_id: &str) -> Result<(), CallError<HttpError>> {
        self.http
            .post(&format!("/authorizations/{authorization_id}/capture"), &format!("{key}:capture"), &json!({}))
            .await?;
        Ok(())
    }

    pub async fn void(&self, key: &str, authorization_id: &str) -> Result<(), CallError<HttpError>> {
        self.http.post(&format!("/authorizations/{authorization_id}/void"), &format!("{key}:void"), &json!({})).await?;
        Ok(())
    }
}
