//! Whole-database migration, SQLite → PostgreSQL (`ferry migrate`). It sits beside the record pipeline,
//! not inside it: it reads a database's schema rather than a stream of records, and drives the
//! database stages of [`crate::db`] table by table.
//!
//! The plan: [`introspect`] reads the SQLite schema into a neutral model, [`profile`] scans each table
//! once to learn what its columns really hold, [`types`] turns declared types plus profiles into PostgreSQL
//! types (rules documented there, overridable with `--cast-rules`), and [`plan`] puts it together: tables
//! in dependency order, DDL in a before-data and an after-data phase, and everything that cannot be
//! translated listed with its reason. [`pg_schema`] reads a PostgreSQL schema into the same plan (the way
//! back) and writes SQLite DDL.
//!
//! The copy: [`value`] converts each cell to its planned type once, [`rows`] reads and loads tables on
//! either side, [`run`] drives the phases with a [`state`] file for resume and rollback, [`backup`]
//! exports the source first, and [`diff`] compares two databases through the same canonical values.

pub mod backup;
mod catalog;
pub mod diff;
pub mod introspect;
pub mod pg_schema;
pub mod plan;
pub mod profile;
pub mod rows;
pub mod run;
mod sql;
pub mod state;
pub mod types;
pub mod value;

pub use introspect::Schema;
pub use plan::{Ddl, Plan};
pub use profile::{ColumnProfile, TableProfile};
pub use types::{CastRules, PgType, Translation};
