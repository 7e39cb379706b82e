//! The SQL of `--on-conflict` on either database, shared by the convert sinks and tenant import: how a row
//! whose key is already in the table is skipped, overwritten or merged. Identifiers are quoted here; values
//! are always parameters or rows of a staging table.

use super::{quote_ident, OnConflict};

/// A loaded column, as conflict handling needs to know it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConflictColumn<'a> {
    /// Its name.
    pub name: &'a str,
    /// A JSON (jsonb) column: `merge` merges objects key by key.
    pub json: bool,
    /// PostgreSQL: the staging table holds the column as text, cast to this type on the way in (types
    /// whose binary form ferry does not write: uuid, enums, inet, …).
    pub cast: Option<&'a str>,
}

/// PostgreSQL: the statement that moves a staging table's rows into `table` (already quoted) under
/// `mode`. For `error` it is a plain `INSERT … SELECT` (a duplicate fails it); for `skip` an `INSERT … ON
/// CONFLICT … DO NOTHING`, whose row count is the rows inserted; for `overwrite` and `merge` it returns one row: rows inserted, rows updated. Without a
/// key, `DO NOTHING` skips a row that breaks any unique constraint.
pub(crate) fn pg_upsert(
    table: &str,
    staging: &str,
    columns: &[ConflictColumn<'_>],
    key: &[String],
    mode: OnConflict,
) -> String {
    let names: Vec<String> = columns.iter().map(|c| quote_ident(c.name)).collect();
    let list = names.join(", ");
    let selected: Vec<String> = columns
        .iter()
        .map(|c| match c.cast {
            Some(ty) => format!("{}::{ty}", quote_ident(c.name)),
            None => quote_ident(c.name),
        })
        .collect();
    let key_list: Vec<String> = key.iter().map(|k| quote_ident(k)).collect();
    let target = match key_list.is_empty() {
        true => String::new(),
        false => format!(" ({})", key_list.join(", ")),
    };
    let selected = selected.join(", ");
    if mode == OnConflict::Error {
        return format!("INSERT INTO {table} ({list}) SELECT {selected} FROM {staging}");
    }
    let insert = format!(
        "INSERT INTO {table} AS t ({list}) SELECT {selected} FROM {staging} ON CONFLICT{target}"
    );
    let is_key = |c: &ConflictColumn<'_>| key.iter().any(|k| k == c.name);
    let sets: Vec<String> = match mode {
        OnConflict::Error | OnConflict::Skip => return format!("{insert} DO NOTHING"),
        OnConflict::Overwrite => columns
            .iter()
            .filter(|c| !is_key(c))
            .map(|c| format!("{0} = EXCLUDED.{0}", quote_ident(c.name)))
            .collect(),
        OnConflict::Merge => columns
            .iter()
            .filter(|c| !is_key(c))
            .map(|c| {
                let col = quote_ident(c.name);
                match c.json {
                    true => format!(
                        "{col} = CASE WHEN jsonb_typeof(t.{col}) = 'object' AND jsonb_typeof(EXCLUDED.{col}) = 'object' \
                         THEN t.{col} || EXCLUDED.{col} ELSE COALESCE(EXCLUDED.{col}, t.{col}) END"
                    ),
                    false => format!("{col} = COALESCE(EXCLUDED.{col}, t.{col})"),
                }
            })
            .collect(),
    };
    // With only key columns loaded, the update is a no-op that still counts the row as updated.
    let sets = if sets.is_empty() {
        key_list
            .iter()
            .map(|k| format!("{k} = EXCLUDED.{k}"))
            .collect()
    } else {
        sets
    };
    format!(
        "WITH written AS ({insert} DO UPDATE SET {} RETURNING (xmax = 0) AS inserted) \
         SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM written",
        sets.join(", ")
    )
}

/// SQLite: the statements of one row under `mode`: an `INSERT` (`… ON CONFLICT DO NOTHING` unless
/// `error`, with numbered parameters in column order), and for `overwrite` and `merge` the `UPDATE` run
/// when the insert changed nothing (empty when only key columns are loaded: the row is already what the
/// record says).
pub(crate) fn sqlite_statements(
    table: &str,
    columns: &[ConflictColumn<'_>],
    key: &[String],
    mode: OnConflict,
) -> (String, Option<String>) {
    let table = quote_ident(table);
    let names: Vec<String> = columns.iter().map(|c| quote_ident(c.name)).collect();
    let params: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
    let mut insert = format!(
        "INSERT INTO {table} ({}) VALUES ({})",
        names.join(", "),
        params.join(", ")
    );
    if mode != OnConflict::Error {
        match key.is_empty() {
            true => insert.push_str(" ON CONFLICT DO NOTHING"),
            false => {
                let key: Vec<String> = key.iter().map(|k| quote_ident(k)).collect();
                insert.push_str(&format!(" ON CONFLICT ({}) DO NOTHING", key.join(", ")));
            }
        }
    }
    let is_key = |c: &ConflictColumn<'_>| key.iter().any(|k| k.eq_ignore_ascii_case(c.name));
    let update = matches!(mode, OnConflict::Overwrite | OnConflict::Merge).then(|| {
        let merge = mode == OnConflict::Merge;
        let sets: Vec<String> = columns
            .iter()
            .enumerate()
            .filter(|(_, c)| !is_key(c))
            .map(|(i, c)| {
                let (col, p) = (quote_ident(c.name), format!("?{}", i + 1));
                match (merge, c.json) {
                    (false, _) => format!("{col} = {p}"),
                    (true, true) => format!(
                        "{col} = CASE WHEN json_type({col}) = 'object' AND json_type({p}) = 'object' \
                         THEN json_patch({col}, {p}) ELSE COALESCE({p}, {col}) END"
                    ),
                    (true, false) => format!("{col} = COALESCE({p}, {col})"),
                }
            })
            .collect();
        let wheres: Vec<String> = columns
            .iter()
            .enumerate()
            .filter(|(_, c)| is_key(c))
            .map(|(i, c)| format!("{} IS ?{}", quote_ident(c.name), i + 1))
            .collect();
        if sets.is_empty() || wheres.is_empty() {
            String::new()
        } else {
            format!(
                "UPDATE {table} SET {} WHERE {}",
                sets.join(", "),
                wheres.join(" AND ")
            )
        }
    });
    (insert, update)
}
