//! `ferry migrate`'s plan against a real PostgreSQL: the DDL of each corpus database (and of a synthetic
//! fixture) runs on a fresh database, and the catalog then holds every table, key, check and index.

use std::path::Path;

use ferry::migrate::{introspect, CastRules, Plan};

use crate::pg::cluster;

fn corpus(file: &str) -> std::path::PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpus/")).join(file)
}

/// Runs the plan's DDL (both phases, no data) on a fresh database and returns its client.
fn apply(plan: &Plan, name: &str) -> postgres::Client {
    let url = cluster().fresh_database(name);
    let mut client = cluster().client(&url);
    let ddl = plan.ddl();
    for stmt in ddl.create.iter().chain(&ddl.after_data) {
        client
            .batch_execute(stmt)
            .unwrap_or_else(|e| panic!("{stmt}\nfailed: {e}"));
    }
    client
}

fn count(client: &mut postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).unwrap().get(0)
}

fn constraints(client: &mut postgres::Client, kind: &str) -> i64 {
    let sql = format!(
        "SELECT count(*) FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace \
         WHERE n.nspname = 'public' AND c.contype = '{kind}'"
    );
    count(client, &sql)
}

fn tables(client: &mut postgres::Client) -> i64 {
    count(
        client,
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
    )
}

fn plan_of(file: &str) -> Plan {
    let conn = introspect::open(&corpus(file)).unwrap();
    Plan::build(&conn, file, &CastRules::default()).unwrap()
}

fn next_id(client: &mut postgres::Client, table: &str, column: &str) -> i64 {
    let sql = format!("SELECT nextval(pg_get_serial_sequence('\"{table}\"', '{column}'))");
    count(client, &sql)
}

#[test]
fn chinook_ddl_runs_on_postgres() {
    let plan = plan_of("sqlite-chinook/Chinook_Sqlite_AutoIncrementPKs.sqlite");
    let mut pg = apply(&plan, "migrate_chinook");
    assert_eq!(tables(&mut pg), 11);
    assert_eq!(constraints(&mut pg, "p"), 11);
    assert_eq!(constraints(&mut pg, "f"), 11);
    assert_eq!(
        count(
            &mut pg,
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'public' AND indexname LIKE 'IFK_%'"
        ),
        11
    );
    let ty: String = pg
        .query_one(
            "SELECT data_type || '(' || numeric_precision || ',' || numeric_scale || ')' \
             FROM information_schema.columns WHERE table_name = 'Invoice' AND column_name = 'Total'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(ty, "numeric(10,2)");
    assert_eq!(next_id(&mut pg, "Invoice", "InvoiceId"), 413);
}

#[test]
fn northwind_ddl_runs_on_postgres() {
    let plan = plan_of("sqlite-northwind/northwind.db");
    let mut pg = apply(&plan, "migrate_northwind");
    assert_eq!(tables(&mut pg), 13);
    assert_eq!(constraints(&mut pg, "f"), 13);
    assert_eq!(constraints(&mut pg, "c"), 7);
    assert_eq!(constraints(&mut pg, "p"), 13);
    assert_eq!(next_id(&mut pg, "Orders", "OrderID"), 11078);
    // Defaults work: a product with only its name gets Discontinued '0' and prices 0.
    pg.batch_execute(
        "INSERT INTO \"Products\" (\"ProductName\") VALUES ('x'); \
         INSERT INTO \"Order Details\" (\"OrderID\", \"ProductID\", \"UnitPrice\", \"Quantity\", \"Discount\") \
         VALUES (1, 1, 1, 1, 0.5)",
    )
    .unwrap_err(); // the FK to Orders holds: no order 1
    let row = pg
        .query_one(
            "INSERT INTO \"Products\" (\"ProductName\") VALUES ('x') RETURNING \"Discontinued\", \"UnitPrice\"::text",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "0");
    assert_eq!(row.get::<_, String>(1), "0");
    let e = pg
        .batch_execute("UPDATE \"Products\" SET \"UnitsInStock\" = -1")
        .unwrap_err();
    let message = e
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default();
    assert!(message.contains("check constraint"), "{e:?}");
}

#[test]
fn sakila_ddl_runs_on_postgres() {
    let plan = plan_of("sqlite-sakila/sakila.db");
    let mut pg = apply(&plan, "migrate_sakila");
    assert_eq!(tables(&mut pg), 16);
    assert_eq!(constraints(&mut pg, "f"), 22);
    assert_eq!(
        count(
            &mut pg,
            "SELECT count(*) FROM information_schema.referential_constraints WHERE delete_rule = 'SET NULL'"
        ),
        plan.tables
            .iter()
            .flat_map(|t| &t.foreign_keys)
            .filter(|f| f.on_delete == "SET NULL")
            .count() as i64
    );
    assert_eq!(next_id(&mut pg, "rental", "rental_id"), 16050);
    assert_eq!(
        count(
            &mut pg,
            "SELECT count(*) FROM pg_constraint WHERE conname IN ('fk_store_staff', 'fk_staff_store')"
        ),
        2,
        "the store/staff cycle, with the names the SQLite DDL gave"
    );
    let active: String = pg
        .query_one(
            "SELECT data_type || ' ' || column_default FROM information_schema.columns \
             WHERE table_name = 'customer' AND column_name = 'active'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(active, "boolean true");
}

#[test]
fn fixture_ddl_runs_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fixture.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE users (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            email TEXT NOT NULL COLLATE NOCASE UNIQUE,
            age INTEGER CHECK (age >= 0),
            created_at TEXT DEFAULT CURRENT_TIMESTAMP,
            seen DATETIME DEFAULT (datetime('now')),
            is_admin BOOLEAN NOT NULL DEFAULT 0,
            settings_json TEXT
         );
         CREATE TABLE kv (k TEXT PRIMARY KEY, v BLOB DEFAULT x'00ff') WITHOUT ROWID;
         CREATE TABLE s (id INTEGER PRIMARY KEY, n INT NOT NULL, r REAL) STRICT;
         CREATE TABLE gen (a INTEGER, b INTEGER, total INTEGER GENERATED ALWAYS AS (a + b) STORED);
         CREATE INDEX users_lower_email ON users (lower(email));
         CREATE INDEX users_adult ON users (age DESC) WHERE age >= 18;
         CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users ON DELETE SET NULL);
         INSERT INTO users (email, age, is_admin, settings_json) VALUES ('a@x', 30, 1, '{\"t\":1}');",
    )
    .unwrap();
    let plan = Plan::build(&conn, "fixture", &CastRules::default()).unwrap();
    let mut pg = apply(&plan, "migrate_fixture");
    assert_eq!(tables(&mut pg), 5);
    assert_eq!(
        count(
            &mut pg,
            "SELECT count(*) FROM pg_indexes WHERE indexname IN ('users_lower_email', 'users_adult')"
        ),
        2
    );
    let row = pg
        .query_one(
            "INSERT INTO users (email) VALUES ('b@x') RETURNING id, is_admin, created_at, seen IS NOT NULL",
            &[],
        )
        .unwrap();
    assert_eq!(
        row.get::<_, i64>(0),
        2,
        "identity continues past the copied rows"
    );
    assert!(!row.get::<_, bool>(1));
    assert_eq!(
        row.get::<_, String>(2).len(),
        19,
        "SQLite's CURRENT_TIMESTAMP text form"
    );
    assert!(row.get::<_, bool>(3));
    let total: i64 = pg
        .query_one("INSERT INTO gen (a, b) VALUES (2, 3) RETURNING total", &[])
        .unwrap()
        .get(0);
    assert_eq!(total, 5);
    let v: Vec<u8> = pg
        .query_one("INSERT INTO kv (k) VALUES ('k') RETURNING v", &[])
        .unwrap()
        .get(0);
    assert_eq!(v, [0x00, 0xff]);
    assert!(pg
        .batch_execute("INSERT INTO users (email, age) VALUES ('c@x', -1)")
        .is_err());
}

#[test]
fn cli_prints_the_plan_and_the_ddl() {
    let dir = tempfile::tempdir().unwrap();
    let db = corpus("sqlite-sakila/sakila.db");
    let rules = dir.path().join("casts.yaml");
    std::fs::write(&rules, "columns:\n  film.rating: varchar(5)\n").unwrap();
    let out = crate::support::ferry(
        dir.path(),
        &[
            "migrate",
            "--from",
            db.to_str().unwrap(),
            "--plan",
            "--cast-rules",
            rules.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("16 tables, 22 foreign keys"), "{text}");
    assert!(
        text.contains("→ varchar(5)") && text.contains("cast rule for the column"),
        "{text}"
    );
    assert!(
        text.contains("not translated:\n")
            && text.contains("trigger ins_film: PostgreSQL triggers need"),
        "{text}"
    );
    let out = crate::support::ferry(
        dir.path(),
        &["migrate", "--from", db.to_str().unwrap(), "--ddl"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("-- after the data") && text.contains("CREATE TABLE \"film\""),
        "{text}"
    );
    let out = crate::support::ferry(dir.path(), &["migrate", "--from", db.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "no --to: a usage error");
}
