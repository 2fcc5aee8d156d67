//! Saga definitions, one file per saga. Each reads top-down as a table of steps.

pub mod order;
