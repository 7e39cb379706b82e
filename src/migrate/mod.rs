//! Whole-database migration, SQLite → PostgreSQL (`ferry migrate`). It sits beside the record pipeline,
//! not inside it: it reads a database's schema rather than a stream of records, and drives the
//! database stages of [`crate::db`] table by table.
//!
//! This build has the plan step: [`introspect`] reads the SQLite schema into a neutral model,
//! [`profile`] scans each table once to learn what its columns really hold, [`types`] turns declared
//! types plus profiles into PostgreSQL types (rules documented there, overridable with `--cast-rules`),
//! and [`plan`] puts it together: tables in dependency order, DDL in a before-data and an after-data
//! phase, and everything that cannot be translated listed with its reason. The copy, verify and
//! checkpoint/resume steps are still to come.

pub mod introspect;
pub mod pg_schema;
pub mod plan;
pub mod profile;
mod sql;
pub mod types;

pub use introspect::Schema;
pub use plan::{Ddl, Plan};
pub use profile::{ColumnProfile, TableProfile};
pub use types::{CastRules, PgType, Translation};
