//! Per-user (tenant) migration, beside whole-database migration: everything that belongs to one row of a
//! root table — a user, with their posts, comments, connected accounts and preferences — is found by
//! following foreign keys from that row ([`subset`]), sanitized before anything is written ([`sanitize`]),
//! and written as a checksummed [`bundle`] through the envelope (compression, encryption, splitting); a
//! bundle is verified and imported into another database ([`import`]), SQLite or PostgreSQL, in one
//! transaction, with keys remapped on request; [`migrate_tenants`] does both for one user or many.
//!
//! ```text
//! source ─► schema graph ─► subset (FK closure) ─► sanitize ─► bundle (+ checksum) ─► envelope ─► file
//! file ─► envelope ─► bundle: verify checksum and counts ─► create missing tables ─► load in FK order
//!      (conflicts, remapped keys) ─► check keys ─► commit
//! ```
//!
//! The jobs are serde data ([`ExportJob`], [`ImportJob`], [`TenantMigrateJob`]) checked whole by their
//! `build(&Environment)`; the runs report through the observer, stop at the cancellation token, and
//! return their report on failure as on success. The schema readers, type translation, DDL, canonical
//! values and checksums, COPY codec and loaders are migrate's; the envelope is convert's.

pub mod bundle;
mod export;
pub mod graph;
mod import;
pub mod keys;
mod load;
mod migrate;
pub mod query;
pub mod sanitize;
pub mod spec;
pub mod subset;

use std::path::Path;

pub use export::{export, BuiltExport, ExportJob, ExportReport, ExportTable};
pub use import::{import, BuiltImport, ImportJob, ImportReport, ImportTable};
pub(crate) use migrate::tenants as listed_tenants;
pub use migrate::{migrate_tenants, summary, TenantMigrateJob, TenantOutcome};
pub use spec::{Action, Root, Select, Spec};

use crate::env::Environment;
use crate::envelope::KeySource;
use crate::error::{Error, Position, Result, Stage};
use bundle::{row_of, BundleHead, BundleMeta, Checksums, Event, Source};

/// The key a job uses: the one it names, else `FERRY_KEY`, else `EXPORT_ENCRYPTION_KEY` when the run's
/// environment has it (the reference document's variable).
pub(crate) fn key_source(named: Option<&KeySource>, env: &Environment) -> Option<KeySource> {
    named.cloned().or_else(|| KeySource::from_default_env(env))
}

/// Database URLs in job files: written without their password.
pub(crate) fn url_without_password<S: serde::Serializer>(
    url: &Option<String>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match url {
        Some(url) => s.serialize_some(&crate::migrate::state::without_password(url)),
        None => s.serialize_none(),
    }
}

/// What [`verify`] found: the bundle's head and metadata, both checked against its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The head.
    pub head: BundleHead,
    /// The metadata.
    pub meta: BundleMeta,
}

/// Reads a whole bundle and checks it: every row has exactly its table's columns and values of their
/// types, each table's row count and checksum and the total are the metadata's, and the bundle's checksum
/// over all of it is the one the metadata states. `each` sees every row as it goes, as datums of the
/// bundle's types (import uses it to collect the keys it remaps).
pub fn verify(
    source: &Source<'_>,
    each: &mut dyn FnMut(&BundleHead, usize, &[crate::migrate::value::Datum]),
) -> Result<Verified> {
    let path = source.path;
    let fail = |message: String| {
        Error::data(
            Stage::Decode,
            Position::file(path.display().to_string()),
            message,
        )
    };
    let mut columns = Vec::new();
    let mut seen: Option<BundleHead> = None;
    let mut sums = Checksums::default();
    let mut rows = 0u64;
    let (head, meta) = bundle::read(source, &mut |event| {
        match event {
            Event::Head(head) => {
                columns = head
                    .tables
                    .iter()
                    .map(|t| Ok((t.name.clone(), t.exported()?)))
                    .collect::<Result<Vec<_>>>()?;
                sums = Checksums::new(&columns);
                seen = Some(head.clone());
            }
            Event::Row(index, record) => {
                rows += 1;
                let (name, cols) = &columns[index];
                let row = row_of(&record, cols, name).map_err(|why| {
                    fail(format!(
                        "data integrity check failed: table {name:?}, row {}: {why}; the bundle was altered or \
                         damaged after it was exported",
                        sums.table(index).0 + 1
                    ))
                })?;
                sums.add(index, &row);
                if let Some(head) = &seen {
                    each(head, index, &row);
                }
            }
        }
        Ok(())
    })?;
    let altered = |what: String| {
        fail(format!(
            "data integrity check failed: {what}; the bundle was altered or damaged after it was exported"
        ))
    };
    for (index, table) in head.tables.iter().enumerate() {
        let (count, sum) = sums.table(index);
        let stated = meta.tables.get(&table.name).ok_or_else(|| {
            altered(format!(
                "the metadata has no entry for table {:?}",
                table.name
            ))
        })?;
        if count != table.records || count != stated.records {
            return Err(altered(format!(
                "table {:?} holds {count} rows, its entries say {} and {}",
                table.name, table.records, stated.records
            )));
        }
        if stated.references != table.references || table.references > count {
            return Err(altered(format!(
                "table {:?}: its reference counts disagree",
                table.name
            )));
        }
        if sum != stated.checksum {
            return Err(altered(format!(
                "checksum mismatch in table {:?}",
                table.name
            )));
        }
    }
    if meta.tables.len() != head.tables.len() || meta.total_records != rows {
        return Err(altered(format!(
            "it holds {rows} rows in {} tables, its metadata says {} in {}",
            head.tables.len(),
            meta.total_records,
            meta.tables.len()
        )));
    }
    if sums.digest() != meta.checksum {
        return Err(altered("checksum mismatch".into()));
    }
    Ok(Verified { head, meta })
}

/// `ferry verify` of a bundle: the whole bundle checked as [`verify`] does, found by its name
/// (`NAME.bundle.json…`, or a split set's `NAME.bundle.manifest.json`). The key comes from `key`, else
/// from `FERRY_KEY` / `EXPORT_ENCRYPTION_KEY` in `env`.
pub fn verify_file(path: &Path, key: Option<&KeySource>, env: &Environment) -> Result<Verified> {
    let key = crate::envelope::layers::InputKey::resolve(key, env)?;
    verify(
        &Source {
            path,
            key: &key,
            max_decompressed: crate::envelope::DEFAULT_MAX_DECOMPRESSED,
        },
        &mut |_, _, _| {},
    )
}
