//! Typed settings read from environment variables, with defaults that work on a developer machine.
//!
//! Each process reads `<PREFIX>_<KEY>` first (e.g. `PAYMENT_DATABASE_URL`) and then the shared
//! `<KEY>` (e.g. `AMQP_URL`), so one environment can hold the settings of every process.
//! Everything is parsed and validated before any socket opens; a bad value stops the process with
//! a message naming the variable. Secrets (passwords in URLs) are never printed.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use contracts::topology::QueueType;

use crate::http::HttpLimits;

/// A setting that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("configuration {var}={value:?} is invalid: {message}")]
pub struct ConfigError {
    pub var: String,
    pub value: String,
    pub message: String,
}

/// Reads variables for one process: `<PREFIX>_<KEY>`, then `<KEY>`.
#[derive(Debug, Clone)]
pub struct Env {
    prefix: String,
}

impl Env {
    pub fn new(prefix: &str) -> Self {
        Env { prefix: prefix.to_ascii_uppercase() }
    }

    /// The raw value and the name of the variable it came from.
    fn lookup(&self, key: &str) -> Option<(String, String)> {
        let own = format!("{}_{key}", self.prefix);
        std::env::var(&own).ok().map(|v| (own, v)).or_else(|| std::env::var(key).ok().map(|v| (key.to_owned(), v)))
    }

    pub fn string(&self, key: &str, default: &str) -> String {
        self.lookup(key).map_or_else(|| default.to_owned(), |(_, v)| v)
    }

    /// Parse with `FromStr`; the default is used only when neither variable is set.
    pub fn parse<T>(&self, key: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match self.lookup(key) {
            None => Ok(default),
            Some((var, value)) => value.trim().parse().map_err(|e: T::Err| ConfigError {
                var,
                message: e.to_string(),
                value: redact_url(&value),
            }),
        }
    }

    /// A duration given in milliseconds (`<KEY>` should end in `_MS`); must be > 0 and at most
    /// [`MAX_DURATION_MS`] (30 days), so that any deadline computed from it stays representable.
    pub fn millis(&self, key: &str, default_ms: u64) -> Result<Duration, ConfigError> {
        let ms: u64 = self.parse(key, default_ms)?;
        if ms == 0 {
            return Err(self.invalid(key, "must be greater than 0"));
        }
        if ms > MAX_DURATION_MS {
            return Err(self.invalid(key, &format!("must be at most {MAX_DURATION_MS} (30 days)")));
        }
        Ok(Duration::from_millis(ms))
    }

    /// An integer within `min..=max`.
    pub fn between<T>(&self, key: &str, default: T, min: T, max: T) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + std::fmt::Display + Copy,
        T::Err: std::fmt::Display,
    {
        let v = self.at_least(key, default, min)?;
        if v > max {
            return Err(self.invalid(key, &format!("must be at most {max}")));
        }
        Ok(v)
    }

    /// An integer that must be at least `min`.
    pub fn at_least<T>(&self, key: &str, default: T, min: T) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + std::fmt::Display + Copy,
        T::Err: std::fmt::Display,
    {
        let v = self.parse(key, default)?;
        if v < min {
            return Err(self.invalid(key, &format!("must be at least {min}")));
        }
        Ok(v)
    }

    /// The variable `key` is read from: the one that is set, else `<PREFIX>_<KEY>`.
    pub fn name(&self, key: &str) -> String {
        self.lookup(key).map_or_else(|| format!("{}_{key}", self.prefix), |(var, _)| var)
    }

    /// An error about `key` as it is set now.
    pub fn invalid(&self, key: &str, message: &str) -> ConfigError {
        let (var, value) = self.lookup(key).unwrap_or_else(|| (format!("{}_{key}", self.prefix), String::new()));
        ConfigError { var, value: redact_url(&value), message: message.to_owned() }
    }
}

/// The longest duration any `_MS` setting accepts: 30 days.
pub const MAX_DURATION_MS: u64 = 30 * 24 * 3600 * 1000;

/// Settings every process has. Built from the environment by [`Settings::from_env`], or by hand in
/// tests (every field is public).
#[derive(Clone)]
pub struct Settings {
    /// Process name: `orchestrator`, `inventory`, ...; also the env prefix and the default database.
    pub service: String,
    pub amqp_url: String,
    pub database_url: String,
    pub http_addr: SocketAddr,
    pub queue_type: QueueType,
    /// Quorum queues only: deliveries before the broker dead-letters a message.
    pub delivery_limit: u32,
    /// Unacknowledged deliveries per consumer (basic.qos), which is also its concurrency. A value
    /// above `db_pool_size` is warned about at start: deliveries beyond the pool wait for a
    /// connection.
    pub prefetch: u16,
    /// Most PostgreSQL connections of this process, the relay's listener included. The default
    /// (8) lets two instances of each of the five processes share a PostgreSQL with its default
    /// `max_connections` (100): 2 x 5 x 8 = 80, leaving 20 for migrations, psql and the rest.
    pub db_pool_size: u32,
    pub amqp_pool_size: usize,
    /// How long in-flight work may take to finish after a shutdown signal.
    pub shutdown_timeout: Duration,
    /// The outbox relay also polls this often (it is woken on commit; polling covers lost NOTIFYs).
    pub relay_poll_interval: Duration,
    pub relay_batch_size: i64,
    /// Delay before a message whose handling failed transiently comes back (delayed retry round).
    pub retry_delay: Duration,
    /// Delayed retry rounds before a message goes to its dead-letter queue.
    pub max_retry_rounds: u32,
    /// How long inbox (dedupe) rows are kept.
    pub inbox_retention: Duration,
    /// Body size, timeout and concurrency limits of every HTTP route.
    pub http: HttpLimits,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("service", &self.service)
            .field("amqp_url", &redact_url(&self.amqp_url))
            .field("database_url", &redact_url(&self.database_url))
            .field("http_addr", &self.http_addr)
            .field("queue_type", &self.queue_type)
            .field("prefetch", &self.prefetch)
            .field("db_pool_size", &self.db_pool_size)
            .field("http", &self.http)
            .finish_non_exhaustive()
    }
}

pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Default database URL of a process: `saga_<service>` on the local server.
pub fn default_database_url(service: &str) -> String {
    format!("postgres://postgres@127.0.0.1:5432/saga_{service}")
}

impl Settings {
    /// Read the common settings of `service` (also its variable prefix) from the environment.
    pub fn from_env(service: &str, default_port: u16) -> Result<Self, ConfigError> {
        let env = Env::new(service);
        let settings = Settings {
            service: service.to_owned(),
            amqp_url: env.string("AMQP_URL", DEFAULT_AMQP_URL),
            database_url: env.string("DATABASE_URL", &default_database_url(service)),
            http_addr: env.parse("HTTP_ADDR", SocketAddr::from(([127, 0, 0, 1], default_port)))?,
            queue_type: env.parse("QUEUE_TYPE", QueueType::Classic)?,
            delivery_limit: env.at_least("DELIVERY_LIMIT", 20, 1)?,
            prefetch: env.at_least("PREFETCH", 8, 1)?,
            db_pool_size: env.at_least("DB_POOL_SIZE", 8, 1)?,
            amqp_pool_size: env.at_least("AMQP_POOL_SIZE", 4, 1)?,
            shutdown_timeout: env.millis("SHUTDOWN_TIMEOUT_MS", 10_000)?,
            relay_poll_interval: env.millis("RELAY_POLL_INTERVAL_MS", 1_000)?,
            relay_batch_size: env.at_least("RELAY_BATCH_SIZE", 100, 1)?,
            retry_delay: env.millis("RETRY_DELAY_MS", 1_000)?,
            max_retry_rounds: env.at_least("MAX_RETRY_ROUNDS", 5, 0)?,
            inbox_retention: Duration::from_secs(3600 * env.between("INBOX_RETENTION_HOURS", 168, 1, 87_600)?),
            http: http_limits(&env)?,
        };
        for (key, url, schemes) in [
            ("AMQP_URL", &settings.amqp_url, &["amqp://", "amqps://"][..]),
            ("DATABASE_URL", &settings.database_url, &["postgres://", "postgresql://"][..]),
        ] {
            if !schemes.iter().any(|s| url.starts_with(s)) {
                return Err(env.invalid(key, &format!("must start with {}", schemes.join(" or "))));
            }
        }
        Ok(settings)
    }

    /// Settings for tests and tools: defaults everywhere, the given URLs, an ephemeral HTTP port.
    pub fn for_tests(service: &str, amqp_url: &str, database_url: &str) -> Self {
        Settings {
            service: service.to_owned(),
            amqp_url: amqp_url.to_owned(),
            database_url: database_url.to_owned(),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            queue_type: QueueType::Classic,
            delivery_limit: 20,
            prefetch: 4,
            db_pool_size: 4,
            amqp_pool_size: 2,
            shutdown_timeout: Duration::from_secs(5),
            relay_poll_interval: Duration::from_millis(500),
            relay_batch_size: 100,
            retry_delay: Duration::from_millis(200),
            max_retry_rounds: 5,
            inbox_retention: Duration::from_secs(3600 * 168),
            http: HttpLimits::default(),
        }
    }
}

/// Most requests an HTTP server handles at once that `HTTP_CONCURRENCY_LIMIT` accepts (far beyond
/// any real need, and within what a semaphore can count).
pub const MAX_HTTP_CONCURRENCY: usize = 1_000_000;

fn http_limits(env: &Env) -> Result<HttpLimits, ConfigError> {
    let default = HttpLimits::default();
    Ok(HttpLimits {
        max_body_bytes: env.at_least("HTTP_MAX_BODY_BYTES", default.max_body_bytes, 1024)?,
        request_timeout: env.millis("HTTP_REQUEST_TIMEOUT_MS", default.request_timeout.as_millis() as u64)?,
        concurrency: env.between("HTTP_CONCURRENCY_LIMIT", default.concurrency, 1, MAX_HTTP_CONCURRENCY)?,
    })
}

/// `scheme://user:secret@host/...` -> `scheme://user:***@host/...`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((creds, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match creds.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"), "amqp://guest:***@127.0.0.1:5672/%2f");
        assert_eq!(redact_url("postgres://postgres@127.0.0.1/x"), "postgres://postgres@127.0.0.1/x");
    }

    #[test]
    fn debug_never_prints_secrets() {
        let s = Settings::for_tests("t", "amqp://u:hunter2@h/v", "postgres://u:hunter2@h/d");
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
