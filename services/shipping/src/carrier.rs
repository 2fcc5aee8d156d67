//! The carrier client: the (simulated, `outside` crate) carrier over HTTP, behind a circuit
//! breaker with retries ([`infra::resilience`]). A booking carries an idempotency key derived from
//! the order (one booking per order), so a retried or re-sent booking is made once by the carrier,
//! and a cancellation reaches the booking by that key whether or not we ever learnt its tracking
//! number.

use infra::resilience::{CallError, HttpDependency, HttpError};
use serde_json::json;
use uuid::Uuid;

#[derive(Clone)]
pub struct Carrier {
    pub http: HttpDependency,
}

/// The idempotency key of an order's booking at the carrier.
pub fn booking_key(order_id: Uuid) -> String {
    format!("shipping:{order_id}:book")
}

impl Carrier {
    /// Book a shipment; returns the tracking number.
    pub async fn book(&self, order_id: Uuid, country: &str) -> Result<String, CallError<HttpError>> {
        let answer = self.http.post("/shipments", &booking_key(order_id), &json!({"country": country})).await?;
        answer["tracking_number"].as_str().map(str::to_owned).ok_or_else(|| CallError::Permanent {
            dependency: self.http.dependency().name(),
            error: HttpError::Body(format!("no tracking_number in {answer}")),
        })
    }

    /// Cancel whatever the order's booking key holds; nothing booked is done too (and the carrier
    /// then refuses a later booking with that key).
    pub async fn cancel(&self, order_id: Uuid) -> Result<(), CallError<HttpError>> {
        let body = json!({"booking_key": booking_key(order_id)});
        self.http.post("/shipments/cancel-by-key", &format!("shipping:{order_id}:cancel"), &body).await?;
        Ok(())
    }
}
