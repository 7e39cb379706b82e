//! After the data: foreign keys, sequence positions, type conversions and views added on the target (and
//! every table's own keys with `--schema-only`), each skipped on a resumed run when the target's catalog
//! already has it; then validation, every table read back and compared with what was read from the
//! source, and the foreign keys checked on the target.

use std::collections::BTreeMap;

use super::catalog::{self, missing, Object};
use super::conn::Conn;
use super::copy::{parallel_checksum, run_statements, savepoint};
use super::planning::TargetDdl;
use super::report::{KeyViolation, MigrateReport};
use super::rows::scan;
use super::run::Run;
use super::state::State;
use super::value::TableChecksum;
use crate::db::quote_ident;
use crate::error::{Result, Stage};

impl Run<'_> {
    /// What runs once every table is loaded, on the caller's transaction: foreign keys, sequences, type
    /// conversions, views (and every table's keys when no rows were copied, `--schema-only`). A resumed
    /// run skips what the target already has.
    pub(super) fn after_data(
        &self,
        target: &mut Conn,
        state: &mut State,
        ddl: &TargetDdl,
        report: &mut MigrateReport,
    ) -> Result<()> {
        let own: Vec<&String> = if self.job.schema_only {
            ddl.per_table.iter().flatten().collect()
        } else {
            Vec::new()
        };
        let statements: Vec<String> = own
            .into_iter()
            .chain(&ddl.last)
            .filter(|s| !self.job.data_only || s.starts_with("SELECT setval"))
            .map(|s| self.known_not_valid(s))
            .collect();
        let statements = missing(target, &statements, self.job.resume)?;
        let not_created =
            run_statements(target, &statements, self.job.on_error, self.target_label)?;
        report.not_created.extend(not_created);
        if target.is_postgres() && !self.job.data_only {
            self.create_views(target, state, report)?;
        }
        Ok(())
    }

    /// Tries each view on the target (a view may use another, so until no more succeed); those PostgreSQL
    /// refuses stay listed with its reason. Each view is written into the state before it is tried, so
    /// `--rollback` drops it; a relation of that name this migration did not make is left alone.
    fn create_views(
        &self,
        target: &mut Conn,
        state: &mut State,
        report: &mut MigrateReport,
    ) -> Result<()> {
        let mut reasons: BTreeMap<&str, String> = BTreeMap::new();
        let mut pending: Vec<&(String, String)> = Vec::new();
        for view in &self.plan.views {
            let name = &view.0;
            if state.created_views.contains(name) {
                if catalog::exists(target, &Object::View(name.clone()))? {
                    view_created(report, name);
                    continue;
                }
            } else if !target
                .existing_tables(std::slice::from_ref(name))?
                .is_empty()
            {
                reasons.insert(
                    name,
                    "the target already has a relation of that name".into(),
                );
                continue;
            }
            pending.push(view);
        }
        for (name, _) in &pending {
            if !state.created_views.contains(name) {
                state.created_views.push(name.clone());
            }
        }
        self.save(state)?;
        loop {
            let before = pending.len();
            pending.retain(|(name, select)| {
                let sql = format!("CREATE VIEW {} AS {select}", quote_ident(name));
                match savepoint(target, &sql) {
                    Ok(()) => {
                        view_created(report, name);
                        false
                    }
                    Err(refusal) => {
                        reasons.insert(name, refusal.message);
                        true
                    }
                }
            });
            if pending.is_empty() || pending.len() == before {
                break;
            }
        }
        // Those refused never existed; the list is saved with the next phase, once the views are committed.
        state
            .created_views
            .retain(|v| !pending.iter().any(|(name, _)| name == v));
        for u in &mut report.untranslated {
            if let Some(reason) = reasons.get(u.name.as_str()).filter(|_| u.kind == "view") {
                u.reason = format!("PostgreSQL refused its SQL: {reason}");
            }
        }
        Ok(())
    }

    /// Counts the views an interrupted run created (after its keys and views were committed).
    pub(super) fn count_views(
        &self,
        target: &mut Conn,
        state: &State,
        report: &mut MigrateReport,
    ) -> Result<()> {
        for name in &state.created_views {
            if catalog::exists(target, &Object::View(name.clone()))? {
                view_created(report, name);
            }
        }
        Ok(())
    }

    /// Saves the state file (not in a dry run, which keeps none).
    fn save(&self, state: &mut State) -> Result<()> {
        match self.job.dry_run {
            true => Ok(()),
            false => state.save(&self.job.state),
        }
    }

    /// A foreign key the source already breaks is added `NOT VALID` (only reachable when not strict).
    fn known_not_valid(&self, statement: &str) -> String {
        for t in &self.plan.tables {
            for fk in &t.foreign_keys {
                let breaks = self
                    .not_valid
                    .iter()
                    .any(|(c, p)| *c == t.name && *p == fk.table);
                let names_it = statement.starts_with(&format!(
                    "ALTER TABLE {} ADD CONSTRAINT {} FOREIGN KEY",
                    quote_ident(&t.name),
                    quote_ident(&fk.name)
                ));
                if breaks && names_it {
                    return format!("{statement} NOT VALID");
                }
            }
        }
        statement.to_owned()
    }

    /// Reads every table back, compares rows and checksums, and counts rows breaking foreign keys.
    pub(super) fn validate(&self, target: &mut Conn, report: &mut MigrateReport) -> Result<()> {
        let mut all_equal = true;
        for table in self.tables {
            self.ctx.cancel.check()?;
            let Some(r) = report.tables.iter_mut().find(|r| r.name == table.name) else {
                continue;
            };
            // Tables copied by this run were read back right after their copy; resumed ones now.
            let checksum = match r.target_checksum.is_some() {
                true => None,
                false => Some(parallel_checksum(
                    target,
                    &self.context(!self.job.dry_run),
                    table,
                )?),
            };
            if let Some(checksum) = checksum {
                r.target_checksum = Some(checksum.hex());
                r.target_rows = Some(checksum.rows);
            }
            // A table an earlier run copied without validating: checksum its source now.
            if r.source_checksum.is_none() {
                let mut source = self.source_db.open(&self.job.connect, false)?;
                let mut sum = TableChecksum::default();
                // Rows that do not fit were rejected, not written: they are not in the checksum.
                scan(&mut source.side(), self.source_label, table, &mut |row| {
                    if let Ok(values) = row {
                        sum.add(&values);
                    }
                    Ok(true)
                })?;
                r.source_checksum = Some(sum.hex());
            }
            {
                let target_hex = r.target_checksum.clone().unwrap_or_default();
                let target_rows = r.target_rows.unwrap_or(0);
                let equal = r.source_checksum.as_deref() == Some(target_hex.as_str())
                    && r.counts.written == target_rows;
                r.equal = Some(equal);
                all_equal &= equal;
                if !equal {
                    self.ctx.notice(format!(
                        "  {}: target has {} rows, checksum {} — source wrote {} rows, checksum {}",
                        quote_ident(&table.name),
                        target_rows,
                        target_hex,
                        r.counts.written,
                        r.source_checksum.as_deref().unwrap_or("?")
                    ));
                }
            }
        }
        // Rows breaking a key can only reach the target through --on-error lenient/skip (rejected parents,
        // or a source that already broke the key): they are listed, and the key is in place NOT VALID.
        let violations = self.target_key_violations(target)?;
        report.key_violations.extend(violations);
        // Valid means every source row is in the target, unchanged: rows a lenient run rejected are not.
        let rejected: u64 = report.tables.iter().map(|t| t.counts.rejected).sum();
        report.valid = Some(all_equal && rejected == 0);
        Ok(())
    }

    fn target_key_violations(&self, target: &mut Conn) -> Result<Vec<KeyViolation>> {
        let mut out = Vec::new();
        for t in &self.plan.tables {
            for fk in &t.foreign_keys {
                let rows = match target {
                    Conn::Postgres(client) => {
                        let to = if fk.to.is_empty() {
                            self.plan
                                .table(&fk.table)
                                .map(|p| p.primary_key.clone())
                                .unwrap_or_default()
                        } else {
                            fk.to.clone()
                        };
                        super::rows::pg_orphans(client, &t.name, &fk.from, &fk.table, &to).map_err(
                            |e| {
                                crate::db::postgres::pg_error(
                                    Stage::Sink,
                                    "checking foreign keys",
                                    &e,
                                )
                            },
                        )?
                    }
                    Conn::Sqlite(conn) => conn
                        .query_row(
                            "SELECT count(*) FROM pragma_foreign_key_check(?1) WHERE parent = ?2",
                            [&t.name, &fk.table],
                            |r| r.get::<_, i64>(0),
                        )
                        .map_err(|e| {
                            crate::db::sqlite::sql_error(
                                Stage::Sink,
                                self.target_label,
                                "checking foreign keys",
                                e,
                            )
                        })?,
                };
                if rows > 0
                    && !out
                        .iter()
                        .any(|v: &KeyViolation| v.table == t.name && v.references == fk.table)
                {
                    out.push(KeyViolation {
                        table: t.name.clone(),
                        references: fk.table.clone(),
                        rows: rows as u64,
                        found_in: "target",
                    });
                }
            }
        }
        Ok(out)
    }
}

/// Counts a view as created and takes it off the list of what was not translated.
fn view_created(report: &mut MigrateReport, name: &str) {
    report
        .untranslated
        .retain(|u| !(u.kind == "view" && u.name == name));
    report.objects.views += 1;
}
