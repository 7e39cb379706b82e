//! One user's data (issue 19): export a tenant from a fixture shaped like the reference document's
//! application (users, posts, social accounts with access tokens, notification preferences, password
//! hashes, comments by other users), from Chinook (customer → invoices → invoice lines, tracks, albums and
//! artists upstream) and from Sakila (customer → rentals → payments, the store ⇄ staff cycle), and import
//! it into empty SQLite and PostgreSQL databases: exactly the tenant's rows, every foreign key valid, no
//! password hash or token in the file, a tampered bundle refused, two users from two databases merged with
//! `--remap-keys`, SQLite → PostgreSQL → SQLite equal, and a killed import leaving the target as it was.

use std::path::{Path, PathBuf};

use ferry::envelope::KeySource;
use ferry::observe::RunContext;
use ferry::tenant::{export, import, ExportJob, ExportReport, ImportJob, ImportReport, Root};
use ferry::Environment;

use crate::pg::cluster;
use crate::support::{corpus, ferry_env};

/// The fixture's secrets, which must never reach a bundle.
pub const PASSWORD_HASH: &str = "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW";
pub const ACCESS_TOKEN: &str = "ya29.a0AfH6SMBx-fixture-access-token-of-user-one";
pub const REFRESH_TOKEN: &str = "1//0gFixtureRefreshTokenOfUserOne";
pub const JWT_IN_BIO: &str =
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg";

/// A SQLite database shaped like the reference document's application. `seed` changes names and
/// contents (not keys), so two databases made with different seeds hold different users with the same ids.
pub fn app_db(path: &Path, seed: &str) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE platforms (code TEXT PRIMARY KEY, name TEXT NOT NULL);
         CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL UNIQUE,
           password_hash TEXT NOT NULL, bio TEXT, is_admin BOOLEAN NOT NULL DEFAULT 0, settings JSON,
           created_at DATETIME NOT NULL, updated_at DATETIME);
         CREATE TABLE posts (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users(id),
           platform TEXT NOT NULL REFERENCES platforms(code), content TEXT NOT NULL, scheduled_time DATETIME,
           status TEXT NOT NULL, budget NUMERIC(10,2), created_at DATETIME NOT NULL, updated_at DATETIME);
         CREATE TABLE social_accounts (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users(id),
           platform TEXT NOT NULL REFERENCES platforms(code), username TEXT NOT NULL, access_token TEXT NOT NULL,
           refresh_token TEXT, connected BOOLEAN NOT NULL, connected_at DATETIME);
         CREATE TABLE notification_preferences (user_id INTEGER PRIMARY KEY REFERENCES users(id),
           email_digest BOOLEAN NOT NULL, email_post_published BOOLEAN NOT NULL, email_post_failed BOOLEAN NOT NULL,
           browser_notifications BOOLEAN NOT NULL, updated_at DATETIME);
         CREATE TABLE comments (id INTEGER PRIMARY KEY, post_id INTEGER NOT NULL REFERENCES posts(id),
           author_id INTEGER NOT NULL REFERENCES users(id), parent_id INTEGER REFERENCES comments(id),
           body TEXT NOT NULL);
         CREATE TABLE audit_log (id INTEGER PRIMARY KEY, actor INTEGER, what TEXT);
         INSERT INTO platforms VALUES ('twitter', 'Twitter'), ('linkedin', 'LinkedIn'), ('mastodon', 'Mastodon');",
    )
    .unwrap();
    let hash_of = |user: i64| {
        format!(
            "$2b$12${}{:02}",
            "R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWM", user
        )
    };
    for user in 1..=3i64 {
        let hash = if user == 1 {
            PASSWORD_HASH.to_owned()
        } else {
            hash_of(user)
        };
        let bio = if user == 1 {
            JWT_IN_BIO.to_owned()
        } else {
            format!("{seed} bio {user}")
        };
        conn.execute(
            "INSERT INTO users VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, '2024-01-01 00:00:00', '2024-01-15T10:30:00Z')",
            rusqlite::params![
                user,
                format!("{seed} user {user}"),
                format!("{seed}{user}@example.com"),
                hash,
                bio,
                user == 3,
                format!(r#"{{"theme": "dark", "n": {user}.50}}"#)
            ],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO notification_preferences VALUES (?1, 1, 1, 0, ?2, '2024-01-15 10:30:00')",
            rusqlite::params![user, user % 2],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO social_accounts (user_id, platform, username, access_token, refresh_token, connected, connected_at)
             VALUES (?1, 'twitter', ?2, ?3, ?4, 1, '2024-01-01 00:00:00')",
            rusqlite::params![
                user,
                format!("{seed}_handle{user}"),
                if user == 1 { ACCESS_TOKEN.to_owned() } else { format!("token-of-{user}-{seed}") },
                if user == 1 { Some(REFRESH_TOKEN.to_owned()) } else { None }
            ],
        )
        .unwrap();
        for n in 0..(user + 2) {
            let platform = ["twitter", "linkedin"][(n % 2) as usize];
            conn.execute(
                "INSERT INTO posts (user_id, platform, content, scheduled_time, status, budget, created_at)
                 VALUES (?1, ?2, ?3, '2024-01-16T09:00:00Z', 'scheduled', ?4, '2024-01-15 10:30:00.123456')",
                rusqlite::params![user, platform, format!("{seed}: post {n} of user {user} ✓"), format!("{n}.25")],
            )
            .unwrap();
        }
    }
    // Comments on user 1's first post by users 2 and 3 (a reply by 1 to 2), and on user 2's post by user 1.
    conn.execute_batch(
        "INSERT INTO comments (post_id, author_id, parent_id, body) VALUES (1, 2, NULL, 'nice');
         INSERT INTO comments (post_id, author_id, parent_id, body) VALUES (1, 1, 1, 'thanks');
         INSERT INTO comments (post_id, author_id, parent_id, body) VALUES (1, 3, NULL, 'hello');
         INSERT INTO comments (post_id, author_id, parent_id, body) VALUES (4, 1, NULL, 'on user 2''s post');
         INSERT INTO audit_log (actor, what) VALUES (1, 'login');",
    )
    .unwrap();
}

/// Runs an export; panics with the error if it fails.
pub fn export_ok(job: &ExportJob, env: &Environment) -> ExportReport {
    export(job, env, &RunContext::default())
        .unwrap_or_else(|f| panic!("export failed: {}", f.error))
}

/// Runs an import; panics with the error if it fails.
pub fn import_ok(job: &ImportJob, env: &Environment) -> ImportReport {
    import(job, env, &RunContext::default())
        .unwrap_or_else(|f| panic!("import failed: {}", f.error))
}

fn root(text: &str) -> Root {
    text.parse().unwrap()
}

fn count(conn: &rusqlite::Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

fn pg_count(url: &str, sql: &str) -> i64 {
    cluster().psql(url, sql).parse().unwrap()
}

struct Dirs {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn dirs() -> Dirs {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    Dirs { _dir: dir, path }
}

#[test]
fn one_user_into_an_empty_sqlite_database_is_exactly_their_rows_without_secrets() {
    let d = dirs();
    let app = d.path.join("app.db");
    app_db(&app, "a");
    let bundle = d.path.join("user1.bundle.json");
    let env = Environment::empty();
    let report = export_ok(
        &ExportJob::new(root("users:1"), app.display().to_string(), &bundle),
        &env,
    );
    assert_eq!(report.user_id, "1");
    let text = std::fs::read_to_string(&bundle).unwrap();
    for secret in [
        PASSWORD_HASH,
        ACCESS_TOKEN,
        REFRESH_TOKEN,
        JWT_IN_BIO,
        "$2b$12$",
    ] {
        assert!(!text.contains(secret), "the bundle holds {secret}");
    }
    assert!(
        text.contains("[ENCRYPTED]") && text.contains("\"userId\":\"1\""),
        "{text}"
    );
    let treated: Vec<(String, String)> = report
        .sanitized
        .iter()
        .map(|t| (format!("{}.{}", t.table, t.column), t.action.clone()))
        .collect();
    for expected in [
        ("users.password_hash", "omit"),
        ("users.bio", "redact-values"),
        ("social_accounts.access_token", "redact"),
        ("social_accounts.refresh_token", "redact"),
    ] {
        assert!(
            treated.contains(&(expected.0.to_owned(), expected.1.to_owned())),
            "{expected:?} not in {treated:?}"
        );
    }
    let target = d.path.join("new.db");
    let imported = import_ok(
        &ImportJob {
            validate: true,
            ..ImportJob::new(&bundle, target.display().to_string())
        },
        &env,
    );
    assert_eq!(imported.valid, Some(true));
    assert!(imported.counts.balances());
    let conn = rusqlite::Connection::open(&target).unwrap();
    // User 1's own rows — posts, the comments on them, the comments they wrote — and the rows those need:
    // users 2 and 3 (authors of comments), user 2's post that user 1 commented on, the platforms used.
    let own = |name: &str| {
        let t = report.tables.iter().find(|t| t.name == name).unwrap();
        (t.records - t.references, t.references)
    };
    assert_eq!(own("posts"), (3, 1));
    assert_eq!(own("comments"), (4, 0));
    assert_eq!(own("users"), (1, 2));
    assert_eq!(own("platforms"), (0, 2));
    assert_eq!(
        count(&conn, "SELECT count(*) FROM posts WHERE user_id = 1"),
        3
    );
    assert_eq!(count(&conn, "SELECT count(*) FROM posts"), 4);
    assert_eq!(count(&conn, "SELECT count(*) FROM comments"), 4);
    assert_eq!(count(&conn, "SELECT count(*) FROM social_accounts"), 1);
    assert_eq!(
        count(&conn, "SELECT count(*) FROM notification_preferences"),
        1
    );
    assert_eq!(count(&conn, "SELECT count(*) FROM users"), 3);
    assert_eq!(count(&conn, "SELECT count(*) FROM platforms"), 2);
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM sqlite_schema WHERE name = 'audit_log'"
        ),
        0
    );
    assert_eq!(
        count(&conn, "SELECT count(*) FROM pragma_foreign_key_check"),
        0
    );
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM users WHERE password_hash IS NOT NULL"
        ),
        0
    );
    let token: String = conn
        .query_row("SELECT access_token FROM social_accounts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(token, "[ENCRYPTED]");
    let (content, budget, settings): (String, String, String) = conn
        .query_row("SELECT content, budget, (SELECT settings FROM users WHERE id = 1) FROM posts WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get::<_, rusqlite::types::Value>(1).map(|v| format!("{v:?}"))?, r.get(2)?))
        })
        .unwrap();
    assert_eq!(content, "a: post 0 of user 1 ✓");
    assert!(budget.contains("0.25"), "{budget}");
    assert!(settings.contains("\"theme\""), "{settings}");
}

#[test]
fn a_tampered_bundle_is_refused_and_nothing_is_written() {
    let d = dirs();
    let app = d.path.join("app.db");
    app_db(&app, "t");
    let bundle = d.path.join("u.bundle.json");
    let env = Environment::empty();
    export_ok(
        &ExportJob::new(root("users:1"), app.display().to_string(), &bundle),
        &env,
    );
    let text = std::fs::read_to_string(&bundle).unwrap();
    let target = d.path.join("target.db");
    for (what, tampered) in [
        (
            "a value",
            text.replacen("post 0 of user 1", "post 0 of user 9", 1),
        ),
        (
            "a count",
            text.replacen("\"totalRecords\":", "\"totalRecords\":1", 1),
        ),
        (
            "a row removed",
            text.replacen(",\n{\"id\":3,", ",\n{\"removed\":3,", 1),
        ),
    ] {
        assert_ne!(tampered, text, "{what}: nothing was changed");
        std::fs::write(&bundle, &tampered).unwrap();
        let failed = import(
            &ImportJob::new(&bundle, target.display().to_string()),
            &env,
            &RunContext::default(),
        )
        .expect_err(what);
        assert!(!failed.error.is_config(), "{what}: {}", failed.error);
        assert!(
            failed.error.to_string().contains("integrity check failed"),
            "{what}: {}",
            failed.error
        );
        assert!(!target.exists(), "{what}: the target was created");
        let verify = ferry_env(&d.path, &["verify", "u.bundle.json"], &[]);
        assert_eq!(verify.status.code(), Some(1), "{what}");
    }
    // An encrypted bundle with one byte flipped fails authentication before anything is read as data.
    let key_file = d.path.join("k.key");
    ferry::envelope::keygen(&key_file).unwrap();
    let sealed = d.path.join("u.bundle.json.gz.enc");
    let job = ExportJob {
        key: Some(KeySource::KeyFile(key_file.clone())),
        ..ExportJob::new(root("users:1"), app.display().to_string(), &sealed)
    };
    export_ok(&job, &env);
    let mut bytes = std::fs::read(&sealed).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    std::fs::write(&sealed, bytes).unwrap();
    let failed = import(
        &ImportJob {
            key: Some(KeySource::KeyFile(key_file)),
            ..ImportJob::new(&sealed, target.display().to_string())
        },
        &env,
        &RunContext::default(),
    )
    .expect_err("flipped bit");
    assert!(
        failed.error.to_string().contains("altered"),
        "{}",
        failed.error
    );
    assert!(!target.exists());
}

#[test]
fn the_checksum_ignores_row_and_table_order_and_sees_any_value() {
    use ferry::migrate::value::Datum;
    use ferry::migrate::PgType;
    use ferry::tenant::bundle::Checksums;
    let tables = vec![
        ("a".to_owned(), vec![("id".to_owned(), PgType::BigInt)]),
        ("b".to_owned(), vec![("x".to_owned(), PgType::Text)]),
    ];
    let rows_a = [vec![Datum::Int(1)], vec![Datum::Int(2)]];
    let rows_b = [vec![Datum::Text("p".into())], vec![Datum::Text("q".into())]];
    let mut forward = Checksums::new(&tables);
    rows_a.iter().for_each(|r| forward.add(0, r));
    rows_b.iter().for_each(|r| forward.add(1, r));
    let reversed_tables: Vec<_> = tables.iter().rev().cloned().collect();
    let mut backward = Checksums::new(&reversed_tables);
    rows_b.iter().rev().for_each(|r| backward.add(0, r));
    rows_a.iter().rev().for_each(|r| backward.add(1, r));
    assert_eq!(forward.digest(), backward.digest());
    let mut changed = Checksums::new(&tables);
    changed.add(0, &[Datum::Int(1)]);
    changed.add(0, &[Datum::Int(3)]);
    rows_b.iter().for_each(|r| changed.add(1, r));
    assert_ne!(forward.digest(), changed.digest());
    let mut renamed = Checksums::new(&[
        ("a".to_owned(), vec![("id2".to_owned(), PgType::BigInt)]),
        tables[1].clone(),
    ]);
    rows_a.iter().for_each(|r| renamed.add(0, r));
    rows_b.iter().for_each(|r| renamed.add(1, r));
    assert_ne!(
        forward.digest(),
        renamed.digest(),
        "a column's name is part of it"
    );
    assert_eq!(forward.digest().len(), 64);
}

#[test]
fn sqlite_to_postgres_to_sqlite_of_one_user_is_equal() {
    let d = dirs();
    let app = d.path.join("app.db");
    app_db(&app, "r");
    let env = Environment::empty();
    let first = d.path.join("first.bundle.json.gz");
    let a = export_ok(
        &ExportJob::new(root("users:1"), app.display().to_string(), &first),
        &env,
    );
    let url = cluster().fresh_database("tenant_roundtrip");
    let into_pg = import_ok(
        &ImportJob {
            validate: true,
            ..ImportJob::new(&first, url.clone())
        },
        &env,
    );
    assert_eq!(into_pg.valid, Some(true));
    assert_eq!(pg_count(&url, "SELECT count(*) FROM posts"), 4);
    // The same bundle again changes nothing (its rows are there as it has them); a changed row conflicts.
    let again = import_ok(&ImportJob::new(&first, url.clone()), &env);
    assert_eq!(
        (again.counts.written, again.counts.skipped),
        (0, again.counts.read)
    );
    cluster().psql(&url, "UPDATE posts SET status = 'edited' WHERE id = 2");
    let conflict = import(
        &ImportJob::new(&first, url.clone()),
        &env,
        &RunContext::default(),
    )
    .expect_err("conflict");
    assert!(conflict.error.is_unique_violation(), "{}", conflict.error);
    assert!(
        conflict.error.to_string().contains("--on-conflict"),
        "{}",
        conflict.error
    );
    cluster().psql(&url, "UPDATE posts SET status = 'scheduled' WHERE id = 2");
    // Foreign keys were created, validated by PostgreSQL, and the identity sequence moved past the rows.
    assert_eq!(
        pg_count(
            &url,
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND convalidated"
        ),
        8
    );
    cluster().psql(&url, "INSERT INTO platforms VALUES ('x', 'X'); INSERT INTO posts (user_id, platform, content, status, created_at) VALUES (1, 'x', 'new', 'draft', now())");
    assert_eq!(
        pg_count(&url, "SELECT max(id) FROM posts"),
        5,
        "the next id follows the imported ones"
    );
    cluster().psql(
        &url,
        "DELETE FROM posts WHERE id = 5; DELETE FROM platforms WHERE code = 'x'",
    );
    assert_eq!(
        cluster().psql(&url, "SELECT pg_typeof(created_at)::text || ' ' || pg_typeof(settings)::text FROM users LIMIT 1"),
        "timestamp with time zone jsonb"
    );
    let second = d.path.join("second.bundle.json");
    let b = export_ok(&ExportJob::new(root("users:1"), url.clone(), &second), &env);
    let back = d.path.join("back.db");
    import_ok(&ImportJob::new(&second, back.display().to_string()), &env);
    let third = d.path.join("third.bundle.json");
    let c = export_ok(
        &ExportJob::new(root("users:1"), back.display().to_string(), &third),
        &env,
    );
    assert_eq!(a.checksum, b.checksum, "SQLite → PostgreSQL");
    assert_eq!(a.checksum, c.checksum, "→ SQLite again");
    let tables = |r: &ExportReport| -> Vec<(String, u64, String)> {
        let mut t: Vec<_> = r
            .tables
            .iter()
            .map(|t| (t.name.clone(), t.records, t.checksum.clone()))
            .collect();
        t.sort();
        t
    };
    assert_eq!(tables(&a), tables(&c));
}

#[test]
fn two_users_from_two_databases_merge_with_remapped_keys() {
    let d = dirs();
    let env = Environment::empty();
    let mut bundles = Vec::new();
    for seed in ["alice", "bob"] {
        let app = d.path.join(format!("{seed}.db"));
        app_db(&app, seed);
        let bundle = d.path.join(format!("{seed}.bundle.json"));
        export_ok(
            &ExportJob::new(root("users:1"), app.display().to_string(), &bundle),
            &env,
        );
        bundles.push(bundle);
    }
    let url = cluster().fresh_database("tenant_merge");
    let sqlite = d.path.join("merged.db");
    for target in [url.clone(), sqlite.display().to_string()] {
        let mut ids = Vec::new();
        for bundle in &bundles {
            let report = import_ok(
                &ImportJob {
                    remap_keys: true,
                    validate: true,
                    ..ImportJob::new(bundle, target.clone())
                },
                &env,
            );
            assert_eq!(report.valid, Some(true));
            ids.push(report.target_user_id.clone());
        }
        assert_ne!(ids[0], ids[1], "{target}: each user got a key of their own");
        let query = |sql: &str| -> String {
            if target.starts_with("postgres") {
                cluster().psql(&target, sql)
            } else {
                let conn = rusqlite::Connection::open(&sqlite).unwrap();
                conn.query_row(sql, [], |r| r.get::<_, rusqlite::types::Value>(0))
                    .map(|v| match v {
                        rusqlite::types::Value::Integer(i) => i.to_string(),
                        rusqlite::types::Value::Text(t) => t,
                        other => format!("{other:?}"),
                    })
                    .unwrap()
            }
        };
        for (seed, id) in ["alice", "bob"].iter().zip(&ids) {
            // Each user's posts point at that user, and every comment on them at posts of that user.
            let wrong = query(&format!(
                "SELECT count(*) FROM posts p JOIN users u ON u.id = p.user_id WHERE u.id = {id} AND p.content NOT LIKE '{seed}:%'"
            ));
            assert_eq!(wrong, "0", "{target} {seed}");
            let own = query(&format!("SELECT count(*) FROM posts WHERE user_id = {id}"));
            assert_eq!(own, "3", "{target} {seed}");
            let comments = query(&format!(
                "SELECT count(*) FROM comments c JOIN posts p ON p.id = c.post_id WHERE p.user_id = {id}"
            ));
            assert_eq!(comments, "3", "{target} {seed}");
            let name = query(&format!("SELECT name FROM users WHERE id = {id}"));
            assert_eq!(name, format!("{seed} user 1"));
        }
        assert_eq!(
            query("SELECT count(*) FROM users"),
            "6",
            "{target}: two users and their references"
        );
        assert_eq!(
            query("SELECT count(*) FROM platforms"),
            "2",
            "{target}: natural keys are merged"
        );
    }
    let conn = rusqlite::Connection::open(&sqlite).unwrap();
    assert_eq!(
        count(&conn, "SELECT count(*) FROM pragma_foreign_key_check"),
        0
    );
}

#[test]
fn chinook_customer_with_invoices_and_their_tracks() {
    let Some(dir) = corpus("sqlite-chinook") else {
        return;
    };
    let source = dir.join("Chinook_Sqlite.sqlite");
    let d = dirs();
    let env = Environment::empty();
    let bundle = d.path.join("c5.bundle.json.zst");
    let report = export_ok(
        &ExportJob::new(root("Customer:5"), source.display().to_string(), &bundle),
        &env,
    );
    let src = rusqlite::Connection::open(&source).unwrap();
    let invoices = count(&src, "SELECT count(*) FROM Invoice WHERE CustomerId = 5");
    let lines = count(&src, "SELECT count(*) FROM InvoiceLine l JOIN Invoice i USING (InvoiceId) WHERE i.CustomerId = 5");
    let tracks = count(&src, "SELECT count(DISTINCT TrackId) FROM InvoiceLine l JOIN Invoice i USING (InvoiceId) WHERE i.CustomerId = 5");
    let records = |name: &str| {
        report
            .tables
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.records as i64)
    };
    assert_eq!(records("Invoice"), Some(invoices));
    assert_eq!(records("InvoiceLine"), Some(lines));
    assert_eq!(records("Track"), Some(tracks));
    assert_eq!(
        records("Playlist"),
        None,
        "playlists reference tracks but are not the customer's"
    );
    let url = cluster().fresh_database("tenant_chinook");
    let imported = import_ok(
        &ImportJob {
            validate: true,
            ..ImportJob::new(&bundle, url.clone())
        },
        &env,
    );
    assert_eq!(imported.valid, Some(true));
    assert_eq!(
        pg_count(&url, "SELECT count(*) FROM \"InvoiceLine\""),
        lines
    );
    assert_eq!(pg_count(&url, "SELECT count(*) FROM \"Customer\""), 1);
    assert_eq!(
        pg_count(
            &url,
            "SELECT (sum(\"Total\") * 100)::bigint FROM \"Invoice\""
        ),
        count(
            &src,
            "SELECT CAST(round(sum(Total) * 100) AS INTEGER) FROM Invoice WHERE CustomerId = 5"
        )
    );
    assert_eq!(
        pg_count(
            &url,
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND convalidated"
        ),
        9
    );
    let sqlite = d.path.join("c5.db");
    import_ok(&ImportJob::new(&bundle, sqlite.display().to_string()), &env);
    let conn = rusqlite::Connection::open(&sqlite).unwrap();
    assert_eq!(
        count(&conn, "SELECT count(*) FROM pragma_foreign_key_check"),
        0
    );
    assert_eq!(count(&conn, "SELECT count(*) FROM Track"), tracks);
}

#[test]
fn sakila_customer_rentals_payments_and_the_store_staff_cycle() {
    let Some(dir) = corpus("sqlite-sakila") else {
        return;
    };
    let source = dir.join("sakila.db");
    let d = dirs();
    let env = Environment::empty();
    let bundle = d.path.join("c1.bundle.json");
    let report = export_ok(
        &ExportJob::new(root("customer:1"), source.display().to_string(), &bundle),
        &env,
    );
    let src = rusqlite::Connection::open(&source).unwrap();
    let records = |name: &str| {
        report
            .tables
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.records as i64)
    };
    assert_eq!(
        records("rental"),
        Some(count(
            &src,
            "SELECT count(*) FROM rental WHERE customer_id = 1"
        ))
    );
    assert_eq!(
        records("payment"),
        Some(count(
            &src,
            "SELECT count(*) FROM payment WHERE customer_id = 1"
        ))
    );
    assert!(
        records("store").is_some() && records("staff").is_some(),
        "{:?}",
        report.tables
    );
    let text = std::fs::read_to_string(&bundle).unwrap();
    let staff_password: String = src
        .query_row(
            "SELECT password FROM staff WHERE password IS NOT NULL LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        !text.contains(&staff_password),
        "staff passwords are left out"
    );
    for target in [
        cluster().fresh_database("tenant_sakila"),
        d.path.join("s.db").display().to_string(),
    ] {
        let imported = import_ok(
            &ImportJob {
                validate: true,
                ..ImportJob::new(&bundle, target.clone())
            },
            &env,
        );
        assert_eq!(imported.valid, Some(true), "{target}");
        assert!(imported.counts.balances());
    }
}

#[test]
fn a_killed_import_leaves_the_target_as_it_was() {
    let d = dirs();
    let app = d.path.join("app.db");
    app_db(&app, "k");
    let bundle = d.path.join("k.bundle.json");
    let env = Environment::empty();
    export_ok(
        &ExportJob::new(root("users:1"), app.display().to_string(), &bundle),
        &env,
    );
    let url = cluster().fresh_database("tenant_kill");
    // An existing target: another database's user 2, imported before.
    let other = d.path.join("other.db");
    app_db(&other, "other");
    let other_bundle = d.path.join("other.bundle.json");
    export_ok(
        &ExportJob::new(root("users:2"), other.display().to_string(), &other_bundle),
        &env,
    );
    let existing = d.path.join("existing.db");
    import_ok(
        &ImportJob::new(&other_bundle, existing.display().to_string()),
        &env,
    );
    let before = count(
        &rusqlite::Connection::open(&existing).unwrap(),
        "SELECT count(*) FROM posts",
    );
    for (target, new_file) in [
        (url.clone(), None),
        (
            d.path.join("fresh.db").display().to_string(),
            Some(d.path.join("fresh.db")),
        ),
        (existing.display().to_string(), None),
    ] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["import", "k.bundle.json", "--to", &target, "--remap-keys"])
            .current_dir(&d.path)
            .env("FERRY_CRASH_AT", "import-loaded:stall")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut seen = String::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !seen.contains("stalled at import-loaded") {
            use std::io::BufRead as _;
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap() == 0 || std::time::Instant::now() > deadline {
                panic!("the import never reached its last step: {seen}");
            }
            seen.push_str(&line);
        }
        // Every row is loaded and the transaction open: kill -9 now.
        child.kill().unwrap();
        child.wait().unwrap();
        if target.starts_with("postgres") {
            assert_eq!(
                pg_count(
                    &url,
                    "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
                ),
                0
            );
        } else if let Some(file) = &new_file {
            assert!(
                !file.exists(),
                "a new SQLite file appears only after the commit"
            );
        } else {
            let conn = rusqlite::Connection::open(&existing).unwrap();
            assert_eq!(count(&conn, "SELECT count(*) FROM posts"), before);
        }
    }
}

#[test]
fn runs_tell_their_observer_and_stop_at_their_token_leaving_nothing() {
    use std::sync::{Arc, Mutex};
    let d = dirs();
    let app = d.path.join("app.db");
    app_db(&app, "o");
    let env = Environment::empty();
    let bundle = d.path.join("o.bundle.json");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let ctx = RunContext::new(Arc::new(move |e: &ferry::Event| {
        let name = serde_json::to_value(e).unwrap()["event"]
            .as_str()
            .unwrap()
            .to_owned();
        sink.lock().unwrap().push(name);
    }));
    let job = ExportJob::new(root("users:1"), app.display().to_string(), &bundle);
    export(&job, &env, &ctx).unwrap();
    let events = seen.lock().unwrap().clone();
    assert_eq!(events.first().map(String::as_str), Some("started"));
    assert_eq!(events.last().map(String::as_str), Some("finished"));
    assert!(
        events.iter().filter(|e| *e == "table_done").count() == 6,
        "{events:?}"
    );
    let cancelled = RunContext::default();
    cancelled.cancel.cancel();
    let other = d.path.join("other.bundle.json");
    let failed = export(
        &ExportJob::new(root("users:1"), app.display().to_string(), &other),
        &env,
        &cancelled,
    )
    .expect_err("cancelled");
    assert!(failed.error.is_cancelled());
    assert_eq!(failed.report.status, ferry::Status::Cancelled);
    assert!(!other.exists());
    let target = d.path.join("t.db");
    let failed = import(
        &ImportJob::new(&bundle, target.display().to_string()),
        &env,
        &cancelled,
    )
    .expect_err("cancelled");
    assert!(failed.error.is_cancelled() && !target.exists());
    // The jobs are job files: what --print-job prints, `ferry run` runs.
    let printed = ferry_env(
        &d.path,
        &[
            "export",
            "--tenant",
            "users:1",
            "--from",
            "app.db",
            "--to",
            "j.bundle.json",
            "--print-job",
        ],
        &[],
    );
    std::fs::write(d.path.join("job.json"), &printed.stdout).unwrap();
    let text = String::from_utf8_lossy(&printed.stdout);
    assert!(
        text.contains("\"job\": \"export\"") && text.contains("\"tenant\": \"users:1\""),
        "{text}"
    );
    let run = ferry_env(&d.path, &["run", "job.json"], &[]);
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(d.path.join("j.bundle.json").exists());
}
