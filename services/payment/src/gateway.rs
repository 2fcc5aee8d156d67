//! The simulated payment gateway: configurable latency and transient failure rate. Calls carry the
//! command's idempotency key, as a real gateway's API would want. A failure is transient: the
//! message takes a delayed retry round.

use std::time::Duration;

use rand::Rng;

/// A transient gateway failure.
#[derive(Debug, thiserror::Error)]
#[error("payment gateway unavailable (simulated) for {operation} {key}")]
pub struct GatewayError {
    pub operation: &'static str,
    pub key: String,
}

#[derive(Debug, Clone)]
pub struct Gateway {
    pub latency: Duration,
    /// 0.0 ..= 1.0
    pub failure_rate: f64,
}

impl Gateway {
    async fn call(&self, operation: &'static str, key: &str) -> Result<(), GatewayError> {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        if self.failure_rate > 0.0 && rand::rng().random_bool(self.failure_rate.clamp(0.0, 1.0)) {
            return Err(GatewayError { operation, key: key.to_owned() });
        }
        Ok(())
    }

    /// Returns the gateway's authorization id.
    pub async fn authorize(&self, key: &str) -> Result<String, GatewayError> {
        self.call("authorize", key).await?;
        Ok(format!("auth-{}", uuid::Uuid::now_v7().simple()))
    }

    pub async fn capture(&self, key: &str) -> Result<(), GatewayError> {
        self.call("capture", key).await
    }

    pub async fn void(&self, key: &str) -> Result<(), GatewayError> {
        self.call("void", key).await
    }
}
