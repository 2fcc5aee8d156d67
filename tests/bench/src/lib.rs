//! `saga-bench`, the load generator: drives a running platform over its public API, times
//! every saga from `POST /orders` to its `order.*` event, reads what the run cost (broker
//! messages, database commits, CPU and memory of every process), checks that the platform did
//! the right thing, and, with `--baseline`, measures the floor the same way for ratios.
//!
//! Layout:
//! - [`cli`]: the flags and their parsers; [`mix`]: the kinds of order and their shares;
//!   [`orders`]: the order of each kind and the SKUs they draw on.
//! - [`driver`]: closed and open loops over a [`driver::Target`]; [`schedule`]: the open
//!   loop's clock and latency accounting.
//! - [`platform`]: the platform's public APIs and its target; [`events`]: the tap on
//!   `saga.events`.
//! - [`floor`]: the floor and its target.
//! - [`probes`]: broker counters, database commits, `/proc`.
//! - [`checks`]: the violations; [`report`]: figures, table and JSON; [`run`]: it all in order.

pub mod checks;
pub mod cli;
pub mod driver;
pub mod events;
pub mod floor;
pub mod mix;
pub mod orders;
pub mod platform;
pub mod probes;
pub mod report;
pub mod run;
pub mod schedule;

pub use cli::Args;
pub use report::Report;
pub use run::run;
