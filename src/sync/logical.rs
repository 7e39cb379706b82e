//! Sync, change capture in a PostgreSQL source: logical replication with the built-in `pgoutput` plugin,
//! read through SQL (`pg_logical_slot_peek_binary_changes`), so no replication connection is needed. The
//! `postgres` crate has no replication protocol support (tokio-postgres' `copy_both` is not released), so
//! ferry parses the small, documented pgoutput v1 messages itself: Relation, Insert, Update, Delete and
//! Truncate give the keys each transaction touched; Begin, Commit, Origin and Type are skipped.
//!
//! A pass peeks the slot (before its snapshot, so every change peeked is visible to it), looks the keys
//! up in the snapshot and writes or deletes them, and advances the slot only after the target committed:
//! a pass killed in between peeks the same changes again. Needs `wal_level = logical` and a role with the
//! REPLICATION attribute (or superuser); without them sync falls back to watermarks.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use postgres::Client;
use sha2::{Digest as _, Sha256};

use super::read::SyncTable;
use crate::db::quote_ident;
use crate::error::{Error, Result, Stage};
use crate::migrate::value::Datum;

/// Changes read per pass at most (whole transactions; the rest wait for the next pass).
const MAX_CHANGES: i32 = 50_000;

/// The slot and publication of one sync (named after its source and target, so two syncs of one
/// database do not share a slot).
#[derive(Debug, Clone)]
pub struct Slot {
    /// The replication slot (cluster-wide).
    pub slot: String,
    /// The publication (in the source database).
    pub publication: String,
}

impl Slot {
    /// The names for a sync of `source` into `target`.
    pub fn named(source: &str, target: &str) -> Slot {
        let digest = Sha256::digest(format!("{source}\n{target}").as_bytes());
        let tag: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Slot {
            slot: format!("ferry_sync_{tag}"),
            publication: format!("ferry_sync_{tag}"),
        }
    }
}

fn fail(what: &str) -> impl Fn(postgres::Error) -> Error + '_ {
    move |e| crate::db::postgres::pg_error(Stage::Source, what, &e)
}

/// True when the server decodes logical changes (`wal_level = logical`).
pub fn available(client: &mut Client) -> Result<bool> {
    let level: String = client
        .query_one("SHOW wal_level", &[])
        .map_err(fail("reading wal_level"))?
        .get(0);
    Ok(level == "logical")
}

/// Creates the publication of `tables` and the slot, when missing (outside any transaction).
pub fn install(client: &mut Client, names: &Slot, tables: &[SyncTable]) -> Result<()> {
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&names.publication],
        )
        .map_err(fail("reading publications"))?
        .is_some();
    if !exists {
        let list: Vec<String> = tables.iter().map(|t| quote_ident(t.name())).collect();
        client
            .batch_execute(&format!(
                "CREATE PUBLICATION {} FOR TABLE {}",
                quote_ident(&names.publication),
                list.join(", ")
            ))
            .map_err(fail("creating the publication"))?;
    }
    let slot = client
        .query_opt(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
            &[&names.slot],
        )
        .map_err(fail("reading replication slots"))?
        .is_some();
    if !slot {
        client
            .query_one(
                "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                &[&names.slot],
            )
            .map_err(fail("creating the replication slot"))?;
    }
    Ok(())
}

/// Drops the slot and the publication (`ferry sync --uninstall`); true when there was a slot.
pub fn uninstall(client: &mut Client, names: &Slot) -> Result<bool> {
    let dropped = client
        .query_opt(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
            &[&names.slot],
        )
        .map_err(fail("dropping the replication slot"))?
        .is_some();
    client
        .batch_execute(&format!(
            "DROP PUBLICATION IF EXISTS {}",
            quote_ident(&names.publication)
        ))
        .map_err(fail("dropping the publication"))?;
    Ok(dropped)
}

/// What a peek found: the LSN to advance to once applied, each table's keys, and tables truncated.
#[derive(Debug, Default)]
pub struct Peeked {
    /// The last change's LSN (`None`: nothing new).
    pub upto: Option<String>,
    /// Keys touched, by table.
    pub keys: BTreeMap<String, Vec<Vec<Datum>>>,
    /// Tables truncated (compared whole instead).
    pub truncated: BTreeSet<String>,
}

/// Reads (without consuming) the changes waiting in the slot.
pub fn peek(client: &mut Client, names: &Slot, tables: &[SyncTable]) -> Result<Peeked> {
    flush_wal(client)?;
    let rows = client
        .query(
            "SELECT lsn::text, data FROM pg_logical_slot_peek_binary_changes($1, NULL, $2, \
             'proto_version', '1', 'publication_names', $3)",
            &[&names.slot, &MAX_CHANGES, &names.publication],
        )
        .map_err(fail("reading the replication slot"))?;
    let mut decoder = Decoder::default();
    let mut peeked = Peeked::default();
    let mut keys: BTreeMap<String, BTreeSet<Vec<String>>> = BTreeMap::new();
    for row in &rows {
        let lsn: String = row.get(0);
        let data: Vec<u8> = row.get(1);
        let changes = decoder.message(&data).map_err(|m| {
            Error::data(
                Stage::Source,
                crate::error::Position::default(),
                format!(
                    "replication slot {}: change at {lsn} is not readable pgoutput: {m}",
                    names.slot
                ),
            )
        })?;
        for change in changes {
            match change {
                Change::Row { table, values } => {
                    if let Some(t) = tables.iter().find(|t| t.name() == table) {
                        let key = t
                            .key_columns()
                            .iter()
                            .map(|(c, _)| values.get(c).cloned().flatten().unwrap_or_default())
                            .collect();
                        keys.entry(table).or_default().insert(key);
                    }
                }
                Change::Truncate(names) => peeked.truncated.extend(names),
                Change::Other => {}
            }
        }
        peeked.upto = Some(lsn);
    }
    for (table, set) in keys {
        let Some(t) = tables.iter().find(|t| t.name() == table) else {
            continue;
        };
        let columns = t.key_columns();
        let parsed = set
            .into_iter()
            .map(|key| {
                key.iter()
                    .zip(&columns)
                    .map(|(text, (_, ty))| match ty {
                        crate::migrate::types::PgType::Text
                        | crate::migrate::types::PgType::Varchar(_) => Datum::Text(text.clone()),
                        _ => text
                            .parse()
                            .map(Datum::Int)
                            .unwrap_or_else(|_| Datum::Text(text.clone())),
                    })
                    .collect()
            })
            .collect();
        peeked.keys.insert(table, parsed);
    }
    Ok(peeked)
}

/// Makes the server flush its WAL up to now. Logical decoding reads only flushed WAL, but a transaction
/// committed with `synchronous_commit = off` is visible before its commit is flushed (up to three
/// `wal_writer_delay`s later): without this, a pass would see such rows in its snapshot but not in the slot,
/// and a cut-over could find "nothing behind" while the last commits were still unflushed. A transaction that
/// writes WAL and commits synchronously flushes everything written before it; a logical message is WAL that
/// changes no table (pgoutput passes messages on only when asked to).
fn flush_wal(client: &mut Client) -> Result<()> {
    client
        .batch_execute(
            "BEGIN; SET LOCAL synchronous_commit = on; \
             SELECT pg_logical_emit_message(true, 'ferry_sync', ''); COMMIT;",
        )
        .map_err(fail("flushing the WAL before reading the replication slot"))
}

/// Consumes the slot up to `lsn` (after the target committed what it covers).
pub fn advance(client: &mut Client, names: &Slot, lsn: &str) -> Result<()> {
    client
        .query_one(
            "SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)",
            &[&names.slot, &lsn],
        )
        .map(drop)
        .map_err(fail("advancing the replication slot"))
}

/// One decoded message.
enum Change {
    /// A row inserted, updated or deleted: its table and the column values sent (text; `None`: null or
    /// unchanged TOAST).
    Row {
        table: String,
        values: HashMap<String, Option<String>>,
    },
    /// Tables truncated.
    Truncate(Vec<String>),
    /// Begin, commit, relation, type, origin.
    Other,
}

/// pgoutput v1, as far as sync needs it: relations (id → name and columns) and row messages.
#[derive(Default)]
struct Decoder {
    relations: HashMap<u32, (String, Vec<String>)>,
}

struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("message ends early".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> std::result::Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn i16(&mut self) -> std::result::Result<i16, String> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn string(&mut self) -> std::result::Result<String, String> {
        let end = self
            .0
            .iter()
            .position(|&b| b == 0)
            .ok_or("string without its end")?;
        let s = String::from_utf8_lossy(&self.0[..end]).into_owned();
        self.0 = &self.0[end + 1..];
        Ok(s)
    }
}

impl Decoder {
    /// The changes of one message: an update that changed its key gives the old key and the new row.
    fn message(&mut self, data: &[u8]) -> std::result::Result<Vec<Change>, String> {
        let mut b = Bytes(data);
        match b.u8()? {
            b'R' => {
                let id = b.u32()?;
                let _namespace = b.string()?;
                let name = b.string()?;
                let _identity = b.u8()?;
                let n = b.i16()?;
                let mut columns = Vec::new();
                for _ in 0..n {
                    let _flags = b.u8()?;
                    columns.push(b.string()?);
                    b.take(8)?;
                }
                self.relations.insert(id, (name, columns));
                Ok(vec![Change::Other])
            }
            b'I' => {
                let id = b.u32()?;
                b.u8()?; // 'N'
                Ok(vec![self.row(id, &mut b)?])
            }
            b'U' => {
                let id = b.u32()?;
                let mut out = Vec::new();
                if matches!(b.u8()?, b'K' | b'O') {
                    // The old key (sent when the key changed): that row is gone; the new tuple follows.
                    out.push(self.row(id, &mut b)?);
                    b.u8()?; // 'N'
                }
                out.push(self.row(id, &mut b)?);
                Ok(out)
            }
            b'D' => {
                let id = b.u32()?;
                b.u8()?; // 'K' or 'O'
                Ok(vec![self.row(id, &mut b)?])
            }
            b'T' => {
                let n = b.u32()?;
                b.u8()?;
                let mut names = Vec::new();
                for _ in 0..n {
                    let id = b.u32()?;
                    if let Some((name, _)) = self.relations.get(&id) {
                        names.push(name.clone());
                    }
                }
                Ok(vec![Change::Truncate(names)])
            }
            _ => Ok(vec![Change::Other]),
        }
    }

    fn row(&self, id: u32, b: &mut Bytes<'_>) -> std::result::Result<Change, String> {
        let (table, columns) = self
            .relations
            .get(&id)
            .ok_or_else(|| format!("a row of relation {id} before its Relation message"))?;
        let n = b.i16()?;
        let mut values = HashMap::new();
        for i in 0..usize::try_from(n).unwrap_or_default() {
            let value = match b.u8()? {
                b't' | b'b' => {
                    let len = b.u32()? as usize;
                    Some(String::from_utf8_lossy(b.take(len)?).into_owned())
                }
                _ => None,
            };
            if let Some(c) = columns.get(i) {
                values.insert(c.clone(), value);
            }
        }
        Ok(Change::Row {
            table: table.clone(),
            values,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relation() -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend(16384u32.to_be_bytes());
        m.extend(b"public\0users\0");
        m.push(b'd');
        m.extend(2i16.to_be_bytes());
        for name in ["id", "name"] {
            m.push(1);
            m.extend(name.as_bytes());
            m.push(0);
            m.extend([0u8; 8]);
        }
        m
    }

    fn tuple(values: &[Option<&str>]) -> Vec<u8> {
        let mut m = (values.len() as i16).to_be_bytes().to_vec();
        for v in values {
            match v {
                Some(t) => {
                    m.push(b't');
                    m.extend((t.len() as u32).to_be_bytes());
                    m.extend(t.as_bytes());
                }
                None => m.push(b'n'),
            }
        }
        m
    }

    fn key_of(change: &Change) -> Option<String> {
        match change {
            Change::Row { values, .. } => values.get("id").cloned().flatten(),
            _ => None,
        }
    }

    #[test]
    fn pgoutput_rows_give_their_keys_and_a_changed_key_gives_both() {
        let mut d = Decoder::default();
        assert!(matches!(
            d.message(&relation()).unwrap()[..],
            [Change::Other]
        ));
        let mut insert = vec![b'I'];
        insert.extend(16384u32.to_be_bytes());
        insert.push(b'N');
        insert.extend(tuple(&[Some("7"), Some("ann")]));
        assert_eq!(
            key_of(&d.message(&insert).unwrap()[0]).as_deref(),
            Some("7")
        );
        let mut update = vec![b'U'];
        update.extend(16384u32.to_be_bytes());
        update.push(b'K');
        update.extend(tuple(&[Some("7"), None]));
        update.push(b'N');
        update.extend(tuple(&[Some("8"), Some("ann")]));
        let keys: Vec<_> = d.message(&update).unwrap().iter().map(key_of).collect();
        assert_eq!(keys, vec![Some("7".into()), Some("8".into())]);
        let mut delete = vec![b'D'];
        delete.extend(16384u32.to_be_bytes());
        delete.push(b'K');
        delete.extend(tuple(&[Some("8"), None]));
        assert_eq!(
            key_of(&d.message(&delete).unwrap()[0]).as_deref(),
            Some("8")
        );
        // A cut message is an error, not a panic.
        assert!(d.message(&insert[..insert.len() - 2]).is_err());
        assert!(d.message(&[b'I', 0, 0, 0, 9, b'N', 0, 0]).is_err());
    }
}
