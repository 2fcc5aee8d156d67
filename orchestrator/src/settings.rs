//! Orchestrator settings: the common ones (`infra::config::Settings`, prefix `ORCHESTRATOR_`) and
//! the saga engine's own.

use std::time::Duration;

use infra::config::{ConfigError, Env, Settings};

/// Default HTTP port of the orchestrator.
pub const DEFAULT_PORT: u16 = 8080;

#[derive(Debug, Clone)]
pub struct OrchestratorSettings {
    pub common: Settings,
    /// How long a step may wait for its reply before the command is re-sent (first attempt).
    pub step_timeout: Duration,
    /// Each re-send waits twice as long as the one before, up to this.
    pub max_step_timeout: Duration,
    /// Sends of a step before the pivot before giving up and compensating.
    pub max_attempts: u32,
    /// Sends of a compensation before the saga is marked FAILED.
    pub max_compensation_attempts: u32,
    /// Sends of the pivot or of a step after it before the saga opens an incident and waits for
    /// an operator.
    pub max_attempts_after_pivot: u32,
    /// The timeout scanner looks for due deadlines at least this often.
    pub scan_interval: Duration,
    /// Largest accepted `POST /orders` body; at most (and by default) `common.http.max_body_bytes`,
    /// the limit of every route.
    pub max_body_bytes: usize,
    /// Most lines in one order.
    pub max_items: usize,
    /// Who may use the operator API (`ORCHESTRATOR_ADMIN_TOKENS=alice=<token>,bob=<token>`); none:
    /// the operator API refuses every call.
    pub admin_operators: infra::operators::Operators,
    /// Where the consistency auditor reads each participant's API and the outside systems'.
    pub audit: crate::auditor::AuditUrls,
    /// A saga's state is snapshotted in its row every this many events (and when it ends), so
    /// loading it folds at most this many events (`ORCHESTRATOR_SNAPSHOT_EVERY`, 1 to 1000).
    pub snapshot_every: u32,
    /// The history sequencer numbers committed events at least this often (it is also woken by
    /// this process's commits).
    pub sequence_interval: Duration,
}

impl OrchestratorSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        let env = Env::new("orchestrator");
        let common = Settings::from_env("orchestrator", DEFAULT_PORT)?;
        // Every route refuses bodies over HTTP_MAX_BODY_BYTES: a larger limit here would never apply.
        let every_route = common.http.max_body_bytes;
        let settings = OrchestratorSettings {
            common,
            step_timeout: env.millis("STEP_TIMEOUT_MS", 10_000)?,
            max_step_timeout: env.millis("MAX_STEP_TIMEOUT_MS", 300_000)?,
            max_attempts: env.at_least("MAX_ATTEMPTS", 3, 1)?,
            max_compensation_attempts: env.at_least("MAX_COMPENSATION_ATTEMPTS", 10, 1)?,
            max_attempts_after_pivot: env.at_least("MAX_ATTEMPTS_AFTER_PIVOT", 12, 1)?,
            scan_interval: env.millis("SCAN_INTERVAL_MS", 1_000)?,
            max_body_bytes: env.at_least("MAX_BODY_BYTES", every_route, 1024)?,
            max_items: env.at_least("MAX_ITEMS", 100, 1)?,
            admin_operators: infra::operators::Operators::from_env(&env)?,
            audit: audit_urls(&env),
            snapshot_every: env.between("SNAPSHOT_EVERY", 10, 1, 1000)?,
            sequence_interval: env.millis("SEQUENCE_INTERVAL_MS", 500)?,
        };
        for (key, url) in [
            ("AUDIT_INVENTORY_URL", Some(&settings.audit.inventory)),
            ("AUDIT_PAYMENT_URL", Some(&settings.audit.payment)),
            ("AUDIT_SHIPPING_URL", Some(&settings.audit.shipping)),
            ("AUDIT_GATEWAY_URL", settings.audit.gateway.as_ref()),
            ("AUDIT_CARRIER_URL", settings.audit.carrier.as_ref()),
        ] {
            if url.is_some_and(|u| !(u.starts_with("http://") || u.starts_with("https://"))) {
                return Err(env.invalid(
                    key,
                    "must be an http:// or https:// URL (empty: not compared, for the outside systems)",
                ));
            }
        }
        if settings.max_step_timeout < settings.step_timeout {
            return Err(env.invalid("MAX_STEP_TIMEOUT_MS", "must not be smaller than ORCHESTRATOR_STEP_TIMEOUT_MS"));
        }
        if settings.max_body_bytes > every_route {
            let message =
                format!("must not be larger than HTTP_MAX_BODY_BYTES ({every_route}), the limit of every route");
            return Err(env.invalid("MAX_BODY_BYTES", &message));
        }
        Ok(settings)
    }

    /// Defaults with the given URLs and an ephemeral port, for tests.
    pub fn for_tests(amqp_url: &str, database_url: &str) -> Self {
        OrchestratorSettings {
            common: Settings::for_tests("orchestrator", amqp_url, database_url),
            step_timeout: Duration::from_secs(10),
            max_step_timeout: Duration::from_secs(60),
            max_attempts: 3,
            max_compensation_attempts: 10,
            max_attempts_after_pivot: 12,
            scan_interval: Duration::from_millis(200),
            max_body_bytes: 64 * 1024,
            max_items: 100,
            admin_operators: infra::operators::Operators::default(),
            audit: crate::auditor::AuditUrls {
                inventory: "http://127.0.0.1:8081".into(),
                payment: "http://127.0.0.1:8082".into(),
                shipping: "http://127.0.0.1:8083".into(),
                gateway: None,
                carrier: None,
            },
            snapshot_every: 10,
            sequence_interval: Duration::from_millis(200),
        }
    }

    /// Deadline of attempt `attempt` (1 = first send): `step_timeout * 2^(attempt-1)`, capped.
    pub fn timeout_for(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.step_timeout.saturating_mul(factor).min(self.max_step_timeout)
    }
}

/// The auditor's sources: each participant's default address, the simulated outside systems'.
fn audit_urls(env: &Env) -> crate::auditor::AuditUrls {
    let trimmed = |key: &str, default: &str| env.string(key, default).trim().trim_end_matches('/').to_owned();
    let optional = |key: &str, default: &str| Some(trimmed(key, default)).filter(|u| !u.is_empty());
    crate::auditor::AuditUrls {
        inventory: trimmed("AUDIT_INVENTORY_URL", "http://127.0.0.1:8081"),
        payment: trimmed("AUDIT_PAYMENT_URL", "http://127.0.0.1:8082"),
        shipping: trimmed("AUDIT_SHIPPING_URL", "http://127.0.0.1:8083"),
        gateway: optional("AUDIT_GATEWAY_URL", "http://127.0.0.1:8091"),
        carrier: optional("AUDIT_CARRIER_URL", "http://127.0.0.1:8092"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_double_and_are_capped() {
        let mut s = OrchestratorSettings::for_tests("amqp://x", "postgres://x");
        s.step_timeout = Duration::from_millis(100);
        s.max_step_timeout = Duration::from_millis(500);
        let got: Vec<u128> = (1..=6).map(|a| s.timeout_for(a).as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 500, 500, 500]);
        assert_eq!(s.timeout_for(u32::MAX).as_millis(), 500);
    }
}
