//! The keys a subset is made of: each taken row is known by its identity — its primary key, else SQLite's
//! `rowid` or PostgreSQL's `ctid` (stable within the export's one snapshot) — as read from its own database
//! and handed back to it unchanged as query parameters. [`KeySet`] holds the taken rows of one table and
//! which of them the tenant owns; a single integer key (the common case) costs a plain `i64`.

use std::collections::HashMap;

/// One part of a row's identity, as its database gave it (SQLite values by storage class; PostgreSQL
/// values as their text form, integers parsed).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyVal {
    /// NULL (only in composite keys of tables without a primary key's NOT NULL).
    Null,
    /// An integer.
    Int(i64),
    /// A SQLite REAL, by its bits (keys are compared for identity, not as numbers).
    Real(u64),
    /// Text (every PostgreSQL key that is not an integer, in its text form).
    Text(String),
    /// A SQLite BLOB.
    Blob(Vec<u8>),
}

impl KeyVal {
    /// The value as text, for messages and PostgreSQL parameters (`None` for NULL).
    pub fn text(&self) -> Option<String> {
        match self {
            KeyVal::Null => None,
            KeyVal::Int(i) => Some(i.to_string()),
            KeyVal::Real(bits) => Some(f64::from_bits(*bits).to_string()),
            KeyVal::Text(t) => Some(t.clone()),
            KeyVal::Blob(b) => Some(format!(
                "\\x{}",
                b.iter().map(|x| format!("{x:02x}")).collect::<String>()
            )),
        }
    }

    /// The value as SQLite takes it as a parameter.
    pub fn to_sqlite(&self) -> rusqlite::types::Value {
        use rusqlite::types::Value as V;
        match self {
            KeyVal::Null => V::Null,
            KeyVal::Int(i) => V::Integer(*i),
            KeyVal::Real(bits) => V::Real(f64::from_bits(*bits)),
            KeyVal::Text(t) => V::Text(t.clone()),
            KeyVal::Blob(b) => V::Blob(b.clone()),
        }
    }

    /// A SQLite value as a key part.
    pub fn from_sqlite(value: rusqlite::types::ValueRef<'_>) -> KeyVal {
        use rusqlite::types::ValueRef as V;
        match value {
            V::Null => KeyVal::Null,
            V::Integer(i) => KeyVal::Int(i),
            V::Real(f) => KeyVal::Real(f.to_bits()),
            V::Text(t) => KeyVal::Text(String::from_utf8_lossy(t).into_owned()),
            V::Blob(b) => KeyVal::Blob(b.to_vec()),
        }
    }
}

/// A row's identity: one integer (kept unboxed), or any tuple of key parts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// A single integer column (or a rowid).
    Int(i64),
    /// Anything else.
    Parts(Box<[KeyVal]>),
}

impl Key {
    /// The key of these parts.
    pub fn of(parts: Vec<KeyVal>) -> Key {
        match parts.as_slice() {
            [KeyVal::Int(i)] => Key::Int(*i),
            _ => Key::Parts(parts.into_boxed_slice()),
        }
    }

    /// The parts, one per identity column.
    pub fn parts(&self) -> Vec<KeyVal> {
        match self {
            Key::Int(i) => vec![KeyVal::Int(*i)],
            Key::Parts(p) => p.to_vec(),
        }
    }

    /// The key as the plan and messages show it (`123`, `(1, "a")`).
    pub fn shown(&self) -> String {
        let part = |v: &KeyVal| match v {
            KeyVal::Text(t) => format!("{t:?}"),
            other => other.text().unwrap_or_else(|| "NULL".into()),
        };
        match self {
            Key::Int(i) => i.to_string(),
            Key::Parts(p) if p.len() == 1 => part(&p[0]),
            Key::Parts(p) => format!("({})", p.iter().map(part).collect::<Vec<_>>().join(", ")),
        }
    }
}

/// The taken rows of one table: every row the subset holds, and whether the tenant owns it (reached
/// downstream from the root) or only refers to it (a row the owned rows need to be valid). Single integer
/// keys are kept as plain `i64`s: about 17 bytes a row in the hash table, 18 to 36 MB per million rows
/// depending on where the table's growth stands (composite or text keys cost their size besides).
#[derive(Debug)]
pub enum KeySet {
    /// Every key so far is one integer.
    Ints(HashMap<i64, bool>),
    /// Any keys.
    Keys(HashMap<Key, bool>),
}

impl Default for KeySet {
    fn default() -> KeySet {
        KeySet::Ints(HashMap::new())
    }
}

/// What [`KeySet::take`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// The row was not in the set: it is now.
    New,
    /// The row was a reference and is now owned.
    NowOwned,
    /// Nothing changed.
    Known,
}

fn take_in<K: std::hash::Hash + Eq>(map: &mut HashMap<K, bool>, key: K, owned: bool) -> Taken {
    match map.get_mut(&key) {
        None => {
            map.insert(key, owned);
            Taken::New
        }
        Some(was) if owned && !*was => {
            *was = true;
            Taken::NowOwned
        }
        Some(_) => Taken::Known,
    }
}

impl KeySet {
    /// Takes a row, as owned or as a reference.
    pub fn take(&mut self, key: &Key, owned: bool) -> Taken {
        if let (KeySet::Ints(map), Key::Parts(_)) = (&*self, key) {
            let widened = map.iter().map(|(k, o)| (Key::Int(*k), *o)).collect();
            *self = KeySet::Keys(widened);
        }
        match (self, key) {
            (KeySet::Ints(map), Key::Int(i)) => take_in(map, *i, owned),
            (KeySet::Keys(map), key) => take_in(map, key.clone(), owned),
            (KeySet::Ints(_), Key::Parts(_)) => Taken::Known,
        }
    }

    /// True when `key` is taken.
    pub fn contains(&self, key: &Key) -> bool {
        match (self, key) {
            (KeySet::Ints(m), Key::Int(i)) => m.contains_key(i),
            (KeySet::Keys(m), key) => m.contains_key(key),
            _ => false,
        }
    }

    /// Rows taken.
    pub fn len(&self) -> usize {
        match self {
            KeySet::Ints(m) => m.len(),
            KeySet::Keys(m) => m.len(),
        }
    }

    /// True when no row is taken.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows owned.
    pub fn owned(&self) -> usize {
        match self {
            KeySet::Ints(m) => m.values().filter(|o| **o).count(),
            KeySet::Keys(m) => m.values().filter(|o| **o).count(),
        }
    }

    /// True when `key` is owned.
    pub fn is_owned(&self, key: &Key) -> bool {
        match (self, key) {
            (KeySet::Ints(m), Key::Int(i)) => m.get(i).copied().unwrap_or(false),
            (KeySet::Keys(m), key) => m.get(key).copied().unwrap_or(false),
            _ => false,
        }
    }

    /// Every taken key, references first, each group in key order (so a bundle is the same from run to
    /// run), and how many references lead.
    pub fn ordered(&self) -> (Vec<Key>, usize) {
        let mut all: Vec<(bool, Key)> = match self {
            KeySet::Ints(m) => m.iter().map(|(k, o)| (*o, Key::Int(*k))).collect(),
            KeySet::Keys(m) => m.iter().map(|(k, o)| (*o, k.clone())).collect(),
        };
        all.sort_unstable();
        let leading = all.iter().take_while(|(owned, _)| !owned).count();
        (all.into_iter().map(|(_, k)| k).collect(), leading)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_can_become_owned_and_order_puts_references_first() {
        let mut set = KeySet::default();
        assert_eq!(set.take(&Key::Int(5), false), Taken::New);
        assert_eq!(set.take(&Key::Int(5), false), Taken::Known);
        assert_eq!(set.take(&Key::Int(2), true), Taken::New);
        assert_eq!(set.take(&Key::Int(9), false), Taken::New);
        assert_eq!(set.take(&Key::Int(9), true), Taken::NowOwned);
        assert_eq!(set.take(&Key::Int(9), true), Taken::Known);
        let (keys, leading) = set.ordered();
        assert_eq!(keys, [Key::Int(5), Key::Int(2), Key::Int(9)]);
        assert_eq!((leading, set.len(), set.owned()), (1, 3, 2));
    }

    #[test]
    fn single_integers_stay_unboxed_and_keys_show_themselves() {
        assert_eq!(Key::of(vec![KeyVal::Int(3)]), Key::Int(3));
        let k = Key::of(vec![KeyVal::Int(1), KeyVal::Text("a".into())]);
        assert_eq!(k.shown(), "(1, \"a\")");
        assert_eq!(k.parts().len(), 2);
        assert_eq!(Key::of(vec![KeyVal::Text("x".into())]).shown(), "\"x\"");
        assert_eq!(std::mem::size_of::<Key>(), 16);
    }
}
