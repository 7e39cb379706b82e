//! ferry's integration tests: one binary, one module per concern.

mod cli;
mod corpus;
mod db;
mod db_kinds;
mod envelope;
mod faults;
mod golden;
mod jobs;
mod library;
mod migrate;
mod migrate_copy;
mod migrate_job;
mod migrate_pg;
mod pg;
mod roundtrip;
mod safety;
mod serve;
mod serve_ops;
mod support;
mod tamper;
mod templates;
