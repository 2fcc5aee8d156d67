//! The simulated carrier: configurable latency and transient failure rate; books a shipment and
//! returns a tracking number. Calls carry the command's idempotency key.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, thiserror::Error)]
#[error("carrier unavailable (simulated) for booking {key}")]
pub struct CarrierError {
    pub key: String,
}

#[derive(Debug, Clone)]
pub struct Carrier {
    pub latency: Duration,
    pub failure_rate: f64,
}

impl Carrier {
    pub async fn book(&self, key: &str) -> Result<String, CarrierError> {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        if self.failure_rate > 0.0 && rand::rng().random_bool(self.failure_rate.clamp(0.0, 1.0)) {
            return Err(CarrierError { key: key.to_owned() });
        }
        let n: u64 = rand::rng().random_range(10_000_000..100_000_000);
        Ok(format!("TRK{n}"))
    }
}
