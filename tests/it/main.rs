//! ferry's integration tests: one binary, one module per concern.

mod cli;
mod corpus;
mod golden;
mod roundtrip;
mod support;
mod templates;
