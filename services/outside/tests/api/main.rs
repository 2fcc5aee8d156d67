//! The simulated outside systems over real HTTP, each test against its own server on port 0:
//! every route, every knob, the answers lost after applying, and what
//! `infra::resilience::HttpDependency` makes of a dropped answer.

mod behaviour;
mod carrier;
mod gateway;
mod helpers;
mod resilience;
