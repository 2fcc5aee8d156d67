//! The RabbitMQ transport.
//!
//! - [`Broker`]: a pool of connections (deadpool-lapin) and the topology declaration.
//! - [`codec`]: [`contracts::Meta`] <-> AMQP properties and headers; [`Outgoing`] messages.
//! - [`publisher`]: confirm-mode channels; every publish waits for its confirm, and a nack or a
//!   return (for `mandatory` messages) is an error.
//! - [`consumer`]: the consume loop. Handlers get an [`Incoming`] view and return an [`Outcome`];
//!   only the loop acks, parks for a delayed retry, or dead-letters. It reconnects by itself.

pub mod codec;
pub mod consumer;
pub mod publisher;
pub mod topology;

pub use codec::{Incoming, Outgoing};
pub use consumer::{DeliveryHandler, Outcome};
pub use publisher::{PublishError, Publisher};

use deadpool_lapin::{Config, PoolConfig, Runtime};
use lapin::{Channel, ConnectionProperties};

/// Why the transport could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot create the AMQP connection pool: {0}")]
    Pool(String),
    #[error("cannot get an AMQP connection: {0}")]
    Connect(String),
    #[error("AMQP operation `{op}` failed: {source}")]
    Amqp {
        op: &'static str,
        #[source]
        source: lapin::Error,
    },
}

impl TransportError {
    pub(crate) fn amqp(op: &'static str) -> impl FnOnce(lapin::Error) -> Self {
        move |source| TransportError::Amqp { op, source }
    }
}

/// A pool of broker connections. Cheap to clone.
#[derive(Clone)]
pub struct Broker {
    pool: deadpool_lapin::Pool,
}

impl Broker {
    /// Create the pool; connections open lazily. `name` shows in the management console.
    pub fn new(url: &str, pool_size: usize, name: &str) -> Result<Self, TransportError> {
        let config = Config { url: Some(url.to_owned()), pool: Some(PoolConfig::new(pool_size)) };
        let name = name.to_owned();
        let pool = config
            .create_pool(
                move || ConnectionProperties::default().with_connection_name(name.clone().into()),
                Runtime::Tokio1,
            )
            .map_err(|e| TransportError::Pool(e.to_string()))?;
        Ok(Broker { pool })
    }

    /// A fresh channel on a pooled connection. A dead connection is replaced by the pool.
    pub async fn channel(&self) -> Result<Channel, TransportError> {
        let conn = self.pool.get().await.map_err(|e| TransportError::Connect(e.to_string()))?;
        conn.create_channel().await.map_err(TransportError::amqp("channel.open"))
    }

    /// Whether a connection can be had and is open (readiness check).
    pub async fn is_reachable(&self) -> bool {
        match self.pool.get().await {
            Ok(conn) => conn.status().connected(),
            Err(_) => false,
        }
    }

    /// Close every pooled connection (end of shutdown).
    pub fn close(&self) {
        self.pool.close();
    }
}
