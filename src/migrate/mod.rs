//! Whole-database migration, SQLite ⇄ PostgreSQL (`ferry migrate`). It sits beside the record pipeline,
//! not inside it: it reads a database's schema rather than a stream of records, and drives the
//! database stages of [`crate::db`] table by table.
//!
//! The job: [`MigrateJob`] is plain serde data, checked once by [`MigrateJob::build`] against the run's
//! environment; [`migrate`] runs it with an observer and a cancellation token and returns its
//! [`MigrateReport`] whether it succeeded or failed. [`show_plan`] is what `--plan` and `--ddl` show,
//! [`rollback`] undoes a migration, and [`diff`] compares two databases.
//!
//! The plan: [`introspect`] reads the SQLite schema into a neutral model, [`profile`] scans each table
//! once to learn what its columns really hold, [`types`] turns declared types plus profiles into PostgreSQL
//! types (rules documented there, overridable with `--cast-rules`), and [`plan`] puts it together: tables
//! in dependency order, DDL in a before-data and an after-data phase, and everything that cannot be
//! translated listed with its reason. [`pg_schema`] reads a PostgreSQL schema into the same plan (the way
//! back) and [`sqlite_ddl`] writes SQLite DDL; both directions' SQL goes through one tokenizer.
//!
//! The copy: [`value`] converts each cell to its planned type once, [`rows`] reads and loads tables on
//! either side, the run drives the phases with a [`state`] file for resume and rollback, [`backup`]
//! exports the source first, and [`diff`] compares two databases through the same canonical values.

mod after_data;
pub mod backup;
mod catalog;
mod conn;
mod copy;
pub mod diff;
pub mod introspect;
mod job;
pub mod pg_schema;
pub mod plan;
mod planning;
pub mod profile;
mod report;
mod rollback;
pub mod rows;
mod run;
pub(crate) mod sql;
pub mod sqlite_ddl;
pub mod state;
mod tables;
pub mod types;
pub mod value;

pub use conn::{Conn, Db};
pub use diff::{diff, DiffJob, DiffReport, TableDiff};
pub use introspect::Schema;
pub(crate) use job::load_rules;
pub use job::{BuiltMigrate, MigrateJob, DEFAULT_REJECTS, DEFAULT_STATE};
pub use plan::{Ddl, Plan};
pub use planning::{build_plan, show_plan, PlanView};
pub use profile::{ColumnProfile, TableProfile};
pub use report::{KeyViolation, MigrateReport, NotCreated, ObjectCounts, TableReport};
pub use rollback::rollback;
pub use run::{migrate, run_migrate_job};
pub(crate) use sql::quote_literal;
pub use types::{CastRules, PgType, Translation};
