//! The carrier client: the (simulated, `outside` crate) carrier over HTTP, behind a circuit
//! breaker with retries ([`infra::resilience`]). Bookings carry the command's idempotency key, so a
//! retried or re-sent booking is made once by the carrier.

use infra::resilience::{CallError, HttpDependency, HttpError};
use serde_json::json;

#[derive(Clone)]
pub struct Carrier {
    pub http: HttpDependency,
}

impl Carrier {
    /// Book a shipment; returns the tracking number.
    pub async fn book(&self, key: &str, country: &str) -> Result<String, CallError<HttpError>> {
        let answer = self.http.post("/shipments", &format!("{key}:book"), &json!({"country": country})).await?;
        answer["tracking_number"].as_str().map(str::to_owned).ok_or_else(|| CallError::Permanent {
            dependency: self.http.dependency().name(),
            error: HttpError::Body(format!("no tracking_number in {answer}")),
        })
    }
}
