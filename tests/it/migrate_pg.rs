//! The reverse migration's schema half against a real PostgreSQL: each corpus database's plan is created
//! on a fresh PostgreSQL database, read back with `pg_schema::read_plan`, compared with the plan it came
//! from, and written to a SQLite file with `pg_schema::sqlite_ddl`, whose keys and indexes SQLite then
//! reports. A hand-written schema with hostile names and PostgreSQL-only features checks what is listed
//! as untranslated.

use std::collections::BTreeSet;
use std::path::Path;

use ferry::migrate::pg_schema::read_plan;
use ferry::migrate::plan::PlanTable;
use ferry::migrate::sqlite_ddl::sqlite_ddl;
use ferry::migrate::{introspect, CastRules, PgType, Plan};

use crate::pg::cluster;

fn corpus(file: &str) -> std::path::PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpus/")).join(file)
}

/// Creates `plan` (both DDL phases, no data) on a fresh PostgreSQL database and reads it back.
fn through_postgres(plan: &Plan, name: &str) -> Plan {
    let url = cluster().fresh_database(name);
    let mut client = cluster().client(&url);
    let ddl = plan.ddl();
    for stmt in ddl.create.iter().chain(&ddl.after_data) {
        client
            .batch_execute(stmt)
            .unwrap_or_else(|e| panic!("{stmt}\nfailed: {e}"));
    }
    read_plan(&mut client, "public", name).unwrap()
}

/// Runs `sqlite_ddl(plan)` into a new SQLite file and returns the connection (and the directory holding it).
fn into_sqlite(plan: &Plan) -> (tempfile::TempDir, rusqlite::Connection) {
    let dir = tempfile::tempdir().unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("back.db")).unwrap();
    for stmt in sqlite_ddl(plan) {
        conn.execute_batch(&stmt)
            .unwrap_or_else(|e| panic!("{stmt}\nfailed: {e}"));
    }
    (dir, conn)
}

fn untranslated(plan: &Plan, kind: &str, table: &str) -> usize {
    plan.untranslated
        .iter()
        .filter(|u| u.kind == kind && u.name.starts_with(&format!("{table}.")))
        .count()
}

fn not_null(t: &PlanTable) -> BTreeSet<&str> {
    t.columns
        .iter()
        .filter(|c| c.not_null)
        .map(|c| c.name.as_str())
        .collect()
}

/// A table's foreign keys, names aside: columns, target and actions.
fn keys(t: &PlanTable) -> BTreeSet<String> {
    t.foreign_keys
        .iter()
        .map(|f| {
            format!(
                "{:?} → {} {:?} on update {} on delete {}",
                f.from, f.table, f.to, f.on_update, f.on_delete
            )
        })
        .collect()
}

/// SQLite's view of one table: (foreign keys, CREATE INDEX indexes, UNIQUE constraints, primary-key columns).
fn sqlite_shape(conn: &rusqlite::Connection, table: &str) -> (usize, usize, usize, Vec<String>) {
    let count = |sql: &str| -> usize {
        conn.query_row(sql, [table], |r| r.get::<_, i64>(0))
            .unwrap() as usize
    };
    let fks = count("SELECT count(DISTINCT id) FROM pragma_foreign_key_list(?1)");
    let created = count("SELECT count(*) FROM pragma_index_list(?1) WHERE origin = 'c'");
    let uniques = count("SELECT count(*) FROM pragma_index_list(?1) WHERE origin = 'u'");
    let mut stmt = conn
        .prepare("SELECT name FROM pragma_table_info(?1) WHERE pk > 0 ORDER BY pk")
        .unwrap();
    let pk = stmt
        .query_map([table], |r| r.get(0))
        .unwrap()
        .collect::<Result<Vec<String>, _>>()
        .unwrap();
    (fks, created, uniques, pk)
}

/// The corpus database `file` → PostgreSQL → plan read back → SQLite, checked at every step.
fn round_trip(file: &str, name: &str) -> (Plan, Plan) {
    let conn = introspect::open(&corpus(file)).unwrap();
    let original = Plan::build(&conn, file, &CastRules::default()).unwrap();
    let back = through_postgres(&original, name);
    let names =
        |p: &Plan| -> BTreeSet<String> { p.tables.iter().map(|t| t.name.clone()).collect() };
    assert_eq!(names(&back), names(&original), "{file}");
    assert_eq!(back.cycles.len(), original.cycles.len(), "{file}");
    for o in &original.tables {
        let b = back.table(&o.name).unwrap();
        let what = format!("{file}: {}", o.name);
        assert_eq!(b.primary_key, o.primary_key, "{what}");
        assert_eq!(keys(b), keys(o), "{what}");
        assert_eq!(b.uniques.len(), o.uniques.len(), "{what}");
        assert_eq!(
            b.checks.len() + untranslated(&back, "check", &o.name),
            o.checks.len(),
            "{what}"
        );
        assert_eq!(
            b.indexes.len() + untranslated(&back, "index", &o.name),
            o.indexes.len(),
            "{what}"
        );
        assert_eq!(not_null(b), not_null(o), "{what}");
        assert_eq!(
            b.sequence, o.sequence,
            "{what}: setval(…, false) reads back"
        );
        for (oc, bc) in o.columns.iter().zip(&b.columns) {
            assert_eq!(bc.name, oc.name, "{what}");
            assert_eq!(bc.translation.pg, oc.translation.pg, "{what}.{}", oc.name);
            assert_eq!(
                bc.translation.identity, oc.translation.identity,
                "{what}.{}",
                oc.name
            );
            assert_eq!(
                bc.default.is_some() || untranslated(&back, "default", &o.name) > 0,
                oc.default.is_some(),
                "{what}.{}: {:?} → {:?}",
                oc.name,
                oc.default,
                bc.default
            );
        }
        // Forward-direction index statements are SQLite-compatible after the round trip.
        for (_, stmt) in &b.indexes {
            assert!(stmt.starts_with("CREATE "), "{stmt}");
        }
    }
    // Referenced tables come before referencing ones, except across a cycle.
    for (i, t) in back.tables.iter().enumerate() {
        for fk in &t.foreign_keys {
            let j = back.tables.iter().position(|u| u.name == fk.table).unwrap();
            let cyclic = back.cycles.iter().any(|c| c.contains(&t.name));
            assert!(j <= i || cyclic, "{} before {}", t.name, fk.table);
        }
    }

    let (_dir, sqlite) = into_sqlite(&back);
    for t in &back.tables {
        let (fks, created, uniques, pk) = sqlite_shape(&sqlite, &t.name);
        assert_eq!(fks, t.foreign_keys.len(), "{file}: {}", t.name);
        assert_eq!(created, t.indexes.len(), "{file}: {}", t.name);
        assert_eq!(uniques, t.uniques.len(), "{file}: {}", t.name);
        assert_eq!(pk, t.primary_key, "{file}: {}", t.name);
    }
    let check: String = sqlite
        .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok("none".to_owned()),
            e => Err(e),
        })
        .unwrap();
    assert_eq!(check, "none", "every referenced table exists in SQLite");
    (original, back)
}

#[test]
fn chinook_round_trips() {
    let (_, back) = round_trip(
        "sqlite-chinook/Chinook_Sqlite_AutoIncrementPKs.sqlite",
        "migrate_pg_chinook",
    );
    assert!(back.untranslated.is_empty(), "{:?}", back.untranslated);
    let invoice = back.table("Invoice").unwrap();
    assert_eq!(invoice.sequence, Some(("InvoiceId".into(), 413)));
    let total = invoice.columns.iter().find(|c| c.name == "Total").unwrap();
    assert_eq!(total.declared, "numeric(10,2)");
    assert_eq!(total.translation.pg, PgType::Numeric(Some((10, Some(2)))));
    let ddl = sqlite_ddl(&back);
    assert!(
        ddl.iter()
            .any(|s| s.contains("\"InvoiceId\" INTEGER PRIMARY KEY,")),
        "{ddl:#?}"
    );
    assert!(ddl
        .iter()
        .any(|s| s == "CREATE INDEX \"IFK_AlbumArtistId\" ON \"Album\" (\"ArtistId\")"));
}

#[test]
fn northwind_round_trips() {
    let (_, back) = round_trip("sqlite-northwind/northwind.db", "migrate_pg_northwind");
    assert!(back.untranslated.is_empty(), "{:?}", back.untranslated);
    assert_eq!(back.tables.iter().map(|t| t.checks.len()).sum::<usize>(), 7);
    let details = back.table("Order Details").unwrap();
    assert!(
        details
            .checks
            .iter()
            .any(|(_, e)| e == "((\"Discount\" >= (0)) AND (\"Discount\" <= (1)))"),
        "{:?}",
        details.checks
    );
    let discontinued = back
        .table("Products")
        .unwrap()
        .columns
        .iter()
        .find(|c| c.name == "Discontinued")
        .unwrap();
    assert_eq!(discontinued.default.as_deref(), Some("'0'"));
    // The CHECKs hold in SQLite (keys off: there is no order 1; rusqlite's SQLite turns them on by default).
    let (_dir, sqlite) = into_sqlite(&back);
    sqlite.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
    sqlite
        .execute(
            "INSERT INTO \"Order Details\" (\"OrderID\", \"ProductID\", \"UnitPrice\", \"Quantity\", \"Discount\") \
             VALUES (1, 1, 1, 1, 0.5)",
            [],
        )
        .unwrap();
    assert!(sqlite
        .execute(
            "INSERT INTO \"Order Details\" (\"OrderID\", \"ProductID\", \"UnitPrice\", \"Quantity\", \"Discount\") \
             VALUES (2, 1, 1, 1, 1.5)",
            [],
        )
        .is_err());
}

#[test]
fn sakila_round_trips() {
    let (_, back) = round_trip("sqlite-sakila/sakila.db", "migrate_pg_sakila");
    assert!(back.untranslated.is_empty(), "{:?}", back.untranslated);
    let mut cycle = back.cycles[0].clone();
    cycle.sort();
    assert_eq!(cycle, ["staff", "store"]);
    let actions: BTreeSet<(String, String)> = back
        .tables
        .iter()
        .flat_map(|t| &t.foreign_keys)
        .map(|f| (f.on_update.clone(), f.on_delete.clone()))
        .collect();
    assert!(actions.contains(&("CASCADE".into(), "RESTRICT".into())));
    assert!(actions.iter().any(|(_, d)| d == "SET NULL"));
    let active = back
        .table("customer")
        .unwrap()
        .columns
        .iter()
        .find(|c| c.name == "active")
        .unwrap();
    assert_eq!(active.translation.pg, PgType::Boolean);
    assert_eq!(active.default.as_deref(), Some("1"));
    let rate = back
        .table("film")
        .unwrap()
        .columns
        .iter()
        .find(|c| c.name == "rental_rate")
        .unwrap();
    assert_eq!(rate.default.as_deref(), Some("4.99"));
}

const HOSTILE: &str = "we\"ird; DROP TABLE x; --";

#[test]
fn postgres_only_features_and_hostile_names() {
    let url = cluster().fresh_database("migrate_pg_hostile");
    let mut pg = cluster().client(&url);
    pg.batch_execute(
        r#"
        CREATE SCHEMA other;
        CREATE TABLE other.elsewhere (id int PRIMARY KEY, note text);
        CREATE TABLE "we""ird; DROP TABLE x; --" (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            "select" text NOT NULL DEFAULT 'it''s',
            amount numeric(10,2) DEFAULT '-1.5' CHECK (amount > -100),
            tags text[],
            uid uuid DEFAULT gen_random_uuid(),
            status varchar(10) CHECK (status IN ('a', 'b')),
            code text CHECK (code ~ '^[A-Z]+$'),
            doubled bigint GENERATED ALWAYS AS (id * 2) STORED,
            total numeric GENERATED ALWAYS AS (amount * 2) STORED,
            created timestamptz DEFAULT now(),
            stamp timestamp(3) DEFAULT CURRENT_TIMESTAMP,
            flag boolean NOT NULL DEFAULT true,
            raw bytea DEFAULT '\x00ff',
            elsewhere int REFERENCES other.elsewhere,
            CONSTRAINT "uniq ""select""" UNIQUE ("select")
        );
        CREATE TABLE child (
            id serial PRIMARY KEY,
            parent bigint REFERENCES "we""ird; DROP TABLE x; --" (id) ON DELETE CASCADE ON UPDATE RESTRICT,
            note text,
            n int DEFAULT -3
        );
        CREATE INDEX "idx; drop" ON "we""ird; DROP TABLE x; --" ("select" DESC, amount) WHERE flag;
        CREATE UNIQUE INDEX child_note ON child (note) INCLUDE (n);
        CREATE INDEX lower_idx ON child (lower(note));
        CREATE INDEX hash_idx ON child USING hash (note);
        CREATE VIEW v AS SELECT 1 AS one;
        CREATE MATERIALIZED VIEW mv AS SELECT 1 AS one;
        CREATE FUNCTION trg() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
        CREATE TRIGGER t BEFORE INSERT ON child FOR EACH ROW EXECUTE FUNCTION trg();
        INSERT INTO "we""ird; DROP TABLE x; --" ("select", status) VALUES ('a', 'a'), ('b', 'b');
        INSERT INTO child (parent, note) VALUES (1, 'x'), (2, 'y'), (2, 'z');
        ANALYZE;
        "#,
    )
    .unwrap();
    let plan = read_plan(&mut pg, "public", "hostile").unwrap();
    let names: Vec<&str> = plan.tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [HOSTILE, "child"],
        "referenced first; other schemas left out"
    );
    let weird = plan.table(HOSTILE).unwrap();
    let col = |t: &PlanTable, n: &str| t.columns.iter().find(|c| c.name == n).cloned().unwrap();
    assert_eq!(weird.rows, 2);
    assert_eq!(weird.primary_key, ["id"]);
    assert!(col(weird, "id").translation.identity);
    assert_eq!(weird.sequence, Some(("id".into(), 3)));
    assert_eq!(col(weird, "select").default.as_deref(), Some("'it''s'"));
    assert!(col(weird, "select").not_null);
    assert_eq!(col(weird, "amount").default.as_deref(), Some("-1.5"));
    assert_eq!(
        col(weird, "tags").translation.pg,
        PgType::Other("text[]".into())
    );
    assert_eq!(
        col(weird, "uid").translation.pg,
        PgType::Other("uuid".into())
    );
    assert_eq!(col(weird, "uid").default, None);
    assert_eq!(col(weird, "status").translation.pg, PgType::Varchar(10));
    assert_eq!(
        col(weird, "doubled").generated.as_deref(),
        Some("(\"id\" * 2)")
    );
    assert_eq!(col(weird, "total").generated, None);
    assert_eq!(
        col(weird, "created").default.as_deref(),
        Some("CURRENT_TIMESTAMP")
    );
    assert_eq!(col(weird, "stamp").translation.pg, PgType::Timestamp);
    assert_eq!(
        col(weird, "stamp").default.as_deref(),
        Some("CURRENT_TIMESTAMP")
    );
    assert_eq!(col(weird, "flag").default.as_deref(), Some("1"));
    assert_eq!(col(weird, "raw").default.as_deref(), Some("X'00ff'"));
    assert_eq!(
        weird.uniques,
        [("uniq \"select\"".to_owned(), vec!["select".to_owned()])]
    );
    let checks: Vec<&str> = weird.checks.iter().map(|(_, e)| e.as_str()).collect();
    assert!(checks.contains(&"(\"amount\" > (-100))"), "{checks:?}");
    assert!(
        checks.contains(&"((\"status\") IN ('a', 'b'))"),
        "{checks:?}"
    );
    assert_eq!(checks.len(), 2, "{checks:?}");
    assert!(weird.foreign_keys.is_empty(), "the key to other.elsewhere");
    assert_eq!(
        weird.indexes,
        [(
            "idx; drop".to_owned(),
            "CREATE INDEX \"idx; drop\" ON \"we\"\"ird; DROP TABLE x; --\" (\"select\" DESC, \"amount\") WHERE \"flag\""
                .to_owned()
        )]
    );

    let child = plan.table("child").unwrap();
    assert!(col(child, "id").translation.identity, "serial");
    assert_eq!(col(child, "id").default, None);
    assert_eq!(child.sequence, Some(("id".into(), 4)));
    assert_eq!(col(child, "n").default.as_deref(), Some("-3"));
    assert_eq!(child.foreign_keys.len(), 1);
    let fk = &child.foreign_keys[0];
    assert_eq!(
        (
            fk.table.as_str(),
            fk.to.as_slice(),
            fk.on_update.as_str(),
            fk.on_delete.as_str()
        ),
        (HOSTILE, ["id".to_owned()].as_slice(), "RESTRICT", "CASCADE")
    );
    assert_eq!(
        child.indexes,
        [(
            "child_note".to_owned(),
            "CREATE UNIQUE INDEX \"child_note\" ON \"child\" (\"note\")".to_owned()
        )]
    );

    let listed: BTreeSet<(&str, &str)> = plan
        .untranslated
        .iter()
        .map(|u| (u.kind, u.name.as_str()))
        .collect();
    let weird_dot = |what: &str| format!("{HOSTILE}.{what}");
    let expected: BTreeSet<(&str, String)> = [
        ("default", weird_dot("uid")),
        ("check", weird_dot(&format!("{HOSTILE}_code_check"))),
        ("generated column", weird_dot("total")),
        (
            "foreign key",
            weird_dot(&format!("{HOSTILE}_elsewhere_fkey")),
        ),
        ("index", "child.lower_idx".to_owned()),
        ("index", "child.hash_idx".to_owned()),
        ("view", "v".to_owned()),
        ("materialized view", "mv".to_owned()),
        ("trigger", "child.t".to_owned()),
    ]
    .into_iter()
    .collect();
    let expected: BTreeSet<(&str, &str)> = expected.iter().map(|(k, n)| (*k, n.as_str())).collect();
    assert_eq!(listed, expected, "{:#?}", plan.untranslated);
    assert!(plan
        .untranslated
        .iter()
        .any(|u| u.kind == "check" && u.reason.contains("regular expression")));

    // The SQLite side: the hostile name is one table, keys, checks, defaults and indexes work.
    let (_dir, sqlite) = into_sqlite(&plan);
    let tables: i64 = sqlite
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 2);
    assert_eq!(
        sqlite_shape(&sqlite, HOSTILE),
        (0, 1, 1, vec!["id".to_owned()])
    );
    assert_eq!(
        sqlite_shape(&sqlite, "child"),
        (1, 1, 0, vec!["id".to_owned()])
    );
    let indexes: Vec<String> = sqlite
        .prepare("SELECT name FROM pragma_index_list(?1) WHERE origin = 'c'")
        .unwrap()
        .query_map([HOSTILE], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(indexes, ["idx; drop"]);
    let q = "\"we\"\"ird; DROP TABLE x; --\"";
    sqlite.execute_batch("PRAGMA foreign_keys = ON").unwrap();
    let (id, text, amount, flag, raw, doubled): (i64, String, f64, i64, Vec<u8>, i64) = sqlite
        .query_row(
            &format!("INSERT INTO {q} (status) VALUES ('a') RETURNING id, \"select\", amount, flag, raw, doubled"),
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
        )
        .unwrap();
    assert_eq!(
        (id, text.as_str(), amount, flag, raw.as_slice(), doubled),
        (1, "it's", -1.5, 1, [0x00, 0xff].as_slice(), 2)
    );
    assert!(
        sqlite
            .execute(
                &format!("INSERT INTO {q} (\"select\", status) VALUES ('b', 'c')"),
                []
            )
            .is_err(),
        "the IN check holds"
    );
    assert!(
        sqlite
            .execute("INSERT INTO child (parent) VALUES (99)", [])
            .is_err(),
        "the foreign key holds"
    );
    sqlite
        .execute("INSERT INTO child (parent, note) VALUES (1, 'n')", [])
        .unwrap();
    sqlite.execute(&format!("DELETE FROM {q}"), []).unwrap();
    let children: i64 = sqlite
        .query_row("SELECT count(*) FROM child", [], |r| r.get(0))
        .unwrap();
    assert_eq!(children, 0, "ON DELETE CASCADE");
}
