//! Sync, one table in one pass: by cursor (rows at or past the mark), by key and row checksum (a
//! merge-join of the source and target in key order), or by the keys a change log names. Each returns
//! what it moved; the caller owns both transactions (a snapshot of the source, one write transaction on
//! the target that also stores the marks).
//!
//! Ties at the mark: the range read is closed at the mark (`cursor >= mark`), so a row committed later
//! with the mark's own value is read by the next pass; rows at the mark are read again and overwrite
//! themselves (by key), so nothing is lost or doubled. The new mark is the source's `max(cursor)` in the
//! same snapshot, so no row of the snapshot lies past it.
//!
//! Deletions: the target is read in key-ordered pages of [`BATCH`] rows while the source streams in the
//! same order; a target key smaller than the source's next key has gone. Memory holds one page and one
//! batch of writes, never a table's key set. Writes are flushed only for keys up to the last target key
//! read, so a later page never sees a row this pass wrote.

use std::collections::VecDeque;

use serde::Serialize;

use super::apply::{Applier, BATCH};
use super::read::{
    key_after, key_cmp, key_equals, order_by, query, select_list, Param, Read, SyncTable,
};
use crate::db::quote_ident;
use crate::error::{Error, Result, Stage};
use crate::migrate::value::{row_hash, Datum};
use crate::migrate::Conn;

/// What one pass did to one table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Moved {
    /// Source rows read.
    pub read: u64,
    /// Rows inserted into the target.
    pub inserted: u64,
    /// Rows updated in the target.
    pub updated: u64,
    /// Rows read that the target already held as they are (left alone; checksum mode).
    pub unchanged: u64,
    /// Rows read again because their cursor equals the mark (written again, by key: ties are not lost).
    pub at_mark: u64,
    /// Target rows whose key has gone from the source: deleted, marked or listed.
    pub deleted: u64,
    /// Keys listed by `--deletes list` (the first 20).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub listed: Vec<serde_json::Value>,
    /// The mark after the pass (cursor mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mark: Option<serde_json::Value>,
}

impl Moved {
    /// Rows the pass found behind: written (less those re-read at the mark) plus deleted.
    pub fn behind(&self) -> u64 {
        (self.inserted + self.updated).saturating_sub(self.at_mark) + self.deleted
    }

    /// Adds what an applier wrote.
    fn take(&mut self, a: &Applier<'_>) {
        self.inserted += a.applied.inserted;
        self.updated += a.applied.updated;
        self.deleted += a.applied.deleted;
        self.listed.extend(a.listed.iter().cloned());
    }
}

/// The endpoints of a pass.
pub struct Ends<'a> {
    /// The source, inside its snapshot.
    pub source: &'a mut Conn,
    /// The target, inside its write transaction.
    pub target: &'a mut Conn,
    /// The source as reports show it.
    pub source_label: &'a str,
    /// The target as reports show it.
    pub target_label: &'a str,
}

/// The source's largest cursor value in the snapshot (as stored), if the table has rows.
fn max_cursor(
    ends: &mut Ends<'_>,
    table: &SyncTable,
    column: &str,
) -> Result<Option<serde_json::Value>> {
    let col = quote_ident(column);
    let name = quote_ident(table.name());
    let what = format!("{}: reading max({col}) of {name}", ends.source_label);
    match &mut *ends.source {
        Conn::Sqlite(c) => {
            let sql = format!("SELECT max({col}) FROM {name}");
            let v = c
                .query_row(&sql, [], |r| Ok(super::read::sqlite_json(r.get_ref(0)?)))
                .map_err(|e| {
                    crate::db::sqlite::sql_error(Stage::Source, ends.source_label, &what, e)
                })?;
            Ok(Some(v).filter(|v| !v.is_null()))
        }
        Conn::Postgres(c) => {
            let sql = format!("SELECT max({col})::text FROM {name}");
            let v: Option<String> = c
                .query_one(&sql, &[])
                .map_err(|e| crate::db::postgres::pg_error(Stage::Source, &what, &e))?
                .get(0);
            Ok(v.map(serde_json::Value::String))
        }
    }
}

/// Cursor mode: rows whose cursor is at or past `mark` overwrite the target's. Without a mark (the first
/// pass) the whole table is compared by key and checksum, which writes only what differs (everything,
/// into an empty table), and the mark starts at the snapshot's `max(cursor)`.
pub fn by_cursor(
    ends: &mut Ends<'_>,
    table: &SyncTable,
    slot: usize,
    mark: Option<&serde_json::Value>,
    deletes: super::apply::Deletes,
) -> Result<Moved> {
    let Some(ci) = table.cursor else {
        return Err(Error::config(format!(
            "table {} has no cursor column",
            quote_ident(table.name())
        )));
    };
    let (column, ty) = table.copy.columns[ci].clone();
    let mut moved = Moved::default();
    let newest = max_cursor(ends, table, &column)?;
    if mark.is_none() {
        let mut moved = by_merge(ends, table, slot, deletes, false)?;
        moved.mark = newest;
        return Ok(moved);
    }
    let Some(newest) = newest else {
        moved.mark = mark.cloned();
        return Ok(moved);
    };
    let raw_cursor = match ends.source {
        Conn::Sqlite(_) => quote_ident(&column),
        Conn::Postgres(_) => format!("{}::text", quote_ident(&column)),
    };
    let mut sql = format!(
        "SELECT {}, {raw_cursor} FROM {}",
        select_list(ends.source, &table.copy),
        quote_ident(table.name())
    );
    let mut params = Vec::new();
    if let Some(mark) = mark {
        sql.push_str(&format!(
            " WHERE {} >= {}",
            quote_ident(&column),
            super::read::placeholder(ends.source, 1, &ty)
        ));
        params.push(super::read::mark_param(ends.source, mark));
    }
    let mut applier = Applier::new(
        table,
        slot,
        ends.target_label,
        super::apply::Deletes::Ignore,
    );
    let target = &mut *ends.target;
    query(
        ends.source,
        ends.source_label,
        &table.copy,
        &sql,
        &params,
        true,
        &mut |r: Read| {
            moved.read += 1;
            if mark.is_some() && r.cursor.as_ref() == mark {
                moved.at_mark += 1;
            }
            applier.upsert(r.values);
            if applier.full() {
                applier.flush(target)?;
            }
            Ok(true)
        },
    )?;
    applier.flush(target)?;
    moved.take(&applier);
    moved.mark = Some(newest);
    Ok(moved)
}

/// One target row as the merge sees it: key and the row's hash.
struct Seen {
    key: Vec<Datum>,
    hash: u128,
}

/// Key and checksum mode: a merge-join of the source and the target in key order. Source rows the target
/// lacks or holds differently are written (unless `keys_only`: then only deletions are looked for), and
/// target rows whose key has gone go to the applier's `deletes`.
pub fn by_merge(
    ends: &mut Ends<'_>,
    table: &SyncTable,
    slot: usize,
    deletes: super::apply::Deletes,
    keys_only: bool,
) -> Result<Moved> {
    by_merge_from(ends, table, table.name(), slot, deletes, keys_only)
}

/// [`by_merge`] where the source's table has another name than the target's (`table` names the target's;
/// `ferry convert --incremental … --deletes`).
pub fn by_merge_from(
    ends: &mut Ends<'_>,
    table: &SyncTable,
    source_table: &str,
    slot: usize,
    deletes: super::apply::Deletes,
    keys_only: bool,
) -> Result<Moved> {
    let view = match keys_only {
        true => keys_view(table),
        false => table.clone(),
    };
    let mut moved = Moved::default();
    let mut applier = Applier::new(table, slot, ends.target_label, deletes);
    let mut pages = Pages {
        buffer: VecDeque::new(),
        last: None,
        done: false,
    };
    let sql = format!(
        "SELECT {} FROM {}{}",
        select_list(ends.source, &view.copy),
        quote_ident(source_table),
        order_by(ends.source, &view)
    );
    let (target, target_label) = (&mut *ends.target, ends.target_label);
    let mut previous: Option<Vec<Datum>> = None;
    query(
        ends.source,
        ends.source_label,
        &view.copy,
        &sql,
        &[],
        false,
        &mut |r: Read| {
            let key = view.key_of(&r.values);
            if previous.as_ref().is_some_and(|p| key_cmp(p, &key).is_ge()) {
                return Err(Error::data(
                Stage::Source,
                crate::error::Position::file(ends.source_label),
                format!(
                    "{}: table {} does not come back in key order (or has a duplicate key); sync needs a unique key",
                    ends.source_label,
                    quote_ident(view.name())
                ),
            ));
            }
            previous = Some(key.clone());
            if !keys_only {
                moved.read += 1;
            }
            let same = loop {
                if pages.buffer.is_empty() {
                    pages.refill(target, target_label, &view)?;
                }
                match pages.buffer.front() {
                    Some(t) if key_cmp(&t.key, &key).is_lt() => {
                        let gone = pages.buffer.pop_front().map(|t| t.key).unwrap_or_default();
                        applier.gone(gone);
                    }
                    Some(t) if key_cmp(&t.key, &key).is_eq() => {
                        let hash = t.hash;
                        pages.buffer.pop_front();
                        break Some(hash);
                    }
                    _ => break None,
                }
            };
            match (keys_only, same) {
                (true, _) => {}
                (false, Some(h)) if h == row_hash(&r.values) => moved.unchanged += 1,
                (false, _) => applier.upsert(r.values),
            }
            if applier.full() {
                applier.flush(target)?;
            }
            Ok(true)
        },
    )?;
    loop {
        while let Some(t) = pages.buffer.pop_front() {
            applier.gone(t.key);
        }
        if applier.full() {
            applier.flush(target)?;
        }
        if pages.done {
            break;
        }
        pages.refill(target, target_label, &view)?;
    }
    applier.flush(target)?;
    moved.take(&applier);
    Ok(moved)
}

/// The table with only its key columns (for looking for deletions without reading whole rows).
fn keys_view(table: &SyncTable) -> SyncTable {
    let mut copy = table.copy.clone();
    copy.columns = table.key_columns();
    SyncTable {
        copy,
        key: (0..table.key.len()).collect(),
        cursor: None,
    }
}

/// The target, read a page at a time in key order.
struct Pages {
    buffer: VecDeque<Seen>,
    last: Option<Vec<Datum>>,
    done: bool,
}

impl Pages {
    fn refill(&mut self, target: &mut Conn, label: &str, view: &SyncTable) -> Result<()> {
        if self.done {
            return Ok(());
        }
        let mut sql = format!(
            "SELECT {} FROM {}",
            select_list(target, &view.copy),
            quote_ident(view.name())
        );
        let mut params = Vec::new();
        if let Some(last) = &self.last {
            sql.push_str(&format!(" WHERE {}", key_after(target, view, 1)));
            params = last.iter().map(|d| Param::key(target, d)).collect();
        }
        sql.push_str(&order_by(target, view));
        sql.push_str(&format!(" LIMIT {BATCH}"));
        let mut n = 0;
        let buffer = &mut self.buffer;
        let last = &mut self.last;
        query(
            target,
            label,
            &view.copy,
            &sql,
            &params,
            false,
            &mut |r: Read| {
                n += 1;
                let key = view.key_of(&r.values);
                *last = Some(key.clone());
                buffer.push_back(Seen {
                    key,
                    hash: row_hash(&r.values),
                });
                Ok(true)
            },
        )?;
        self.done = n < BATCH;
        Ok(())
    }
}

/// Change-log mode: each key the log names is looked up in the source; the row overwrites the target's,
/// or, gone, is deleted from it.
pub fn by_keys(
    ends: &mut Ends<'_>,
    table: &SyncTable,
    slot: usize,
    keys: &[Vec<Datum>],
) -> Result<Moved> {
    let mut moved = Moved::default();
    let mut applier = Applier::new(
        table,
        slot,
        ends.target_label,
        super::apply::Deletes::Delete,
    );
    let sql = format!(
        "SELECT {} FROM {} WHERE {}",
        select_list(ends.source, &table.copy),
        quote_ident(table.name()),
        key_equals(ends.source, table, 1)
    );
    for key in keys {
        let params: Vec<Param> = key.iter().map(|d| Param::key(ends.source, d)).collect();
        let mut found = None;
        query(
            ends.source,
            ends.source_label,
            &table.copy,
            &sql,
            &params,
            false,
            &mut |r: Read| {
                found = Some(r.values);
                Ok(false)
            },
        )?;
        match found {
            Some(row) => {
                moved.read += 1;
                applier.upsert(row);
            }
            None => applier.gone(key.clone()),
        }
        if applier.full() {
            applier.flush(ends.target)?;
        }
    }
    applier.flush(ends.target)?;
    moved.take(&applier);
    Ok(moved)
}
