//! ferry's integration tests: one binary, one module per concern.

mod cli;
mod cli_habits;
mod corpus;
mod db;
mod db_kinds;
mod envelope;
mod faults;
mod golden;
mod inference;
mod jobs;
mod library;
mod migrate;
mod migrate_copy;
mod migrate_job;
mod migrate_pg;
mod migrate_truth;
mod pg;
mod rejects;
mod roundtrip;
mod safety;
mod serve;
mod serve_ops;
mod support;
mod tamper;
mod templates;
