//! The payment gateway client: the (simulated, `outside` crate) gateway over HTTP, behind a
//! circuit breaker with retries ([`infra::resilience`]). Every call carries an idempotency key
//! derived from the order (one authorization, one capture, one void per order), so a retried, re-sent
//! or replayed call is applied once by the gateway, and a void reaches the authorization by the
//! key it was made with, whether or not we ever learnt its id.

use infra::resilience::{CallError, HttpDependency, HttpError};
use serde_json::json;
use uuid::Uuid;

#[derive(Clone)]
pub struct Gateway {
    pub http: HttpDependency,
}

/// The idempotency key of an order's authorization at the gateway.
pub fn authorize_key(order_id: Uuid) -> String {
    format!("payment:{order_id}:authorize")
}

impl Gateway {
    /// Returns the gateway's authorization id.
    pub async fn authorize(
        &self,
        order_id: Uuid,
        amount_cents: i64,
        currency: &str,
    ) -> Result<String, CallError<HttpError>> {
        let body = json!({"amount_cents": amount_cents, "currency": currency});
        let answer = self.http.post("/authorizations", &authorize_key(order_id), &body).await?;
        answer["authorization_id"].as_str().map(str::to_owned).ok_or_else(|| CallError::Permanent {
            dependency: self.http.dependency().name(),
            error: HttpError::Body(format!("no authorization_id in {answer}")),
        })
    }

    pub async fn capture(&self, order_id: Uuid, authorization_id: &str) -> Result<(), CallError<HttpError>> {
        let path = format!("/authorizations/{authorization_id}/capture");
        self.http.post(&path, &format!("payment:{order_id}:capture"), &json!({})).await?;
        Ok(())
    }

    /// Void whatever the order's authorization key holds; nothing held is done too (and the
    /// gateway then refuses a later authorize with that key).
    pub async fn void(&self, order_id: Uuid) -> Result<(), CallError<HttpError>> {
        let body = json!({"authorization_key": authorize_key(order_id)});
        self.http.post("/authorizations/void-by-key", &format!("payment:{order_id}:void"), &body).await?;
        Ok(())
    }
}
