//! What a phase cost outside the generator's own view: the broker's message counters
//! ([`broker`]), the databases' commits ([`database`]), and the CPU and memory of the processes
//! ([`procs`]).

pub mod broker;
pub mod database;
pub mod procs;

use broker::{BrokerCounters, BrokerProbe};
use database::DatabaseProbe;

/// The counters read before and after a phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub broker: Option<BrokerCounters>,
    pub commits: Option<i64>,
}

/// The probes of one target.
#[derive(Debug, Clone)]
pub struct Probes {
    pub broker: BrokerProbe,
    pub database: DatabaseProbe,
}

impl Probes {
    /// Read both; a probe that fails is reported on stderr and left out (`None`).
    pub async fn read(&self) -> Counters {
        let (broker, commits) = tokio::join!(self.broker.read(), self.database.commits());
        Counters {
            broker: broker.map_err(|e| eprintln!("saga-bench: broker counters unavailable: {e}")).ok(),
            commits: commits.map_err(|e| eprintln!("saga-bench: database counters unavailable: {e}")).ok(),
        }
    }
}
