//! The orchestrator: saga kernel, saga definitions, persistence, reply consumer, timeout scanner
//! and HTTP API.
//!
//! Layout:
//! - [`kernel`]: the pure saga state machine (`transition(state, input) -> (state, effects)`).
//! - [`sagas`]: saga definitions, one file per saga, each a table of steps.

pub mod kernel;
pub mod sagas;
