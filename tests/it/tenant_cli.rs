//! One user's data through the command line: `ferry export` (`--plan`, a spec with an undeclared relation,
//! `--no-sanitize` only when encrypted, split sets, a missing user), `ferry verify` and `ferry import` of
//! bundles, conflicts, `ferry migrate --tenant` for one, all and a file of tenants, and `ferry databases`.

use std::path::Path;

use crate::pg::cluster;
use crate::support::{ferry_env, ok};
use crate::tenant::{app_db, ACCESS_TOKEN, PASSWORD_HASH};

fn run(dir: &Path, args: &[&str]) -> std::process::Output {
    ferry_env(dir, args, &[])
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn sqlite_count(path: &Path, sql: &str) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_spec_adds_relations_the_schema_lacks_and_the_plan_shows_the_paths() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    app_db(&d.join("app.db"), "s");
    let conn = rusqlite::Connection::open(d.join("app.db")).unwrap();
    conn.execute_batch(
        "CREATE TABLE drafts (id INTEGER PRIMARY KEY, author_id INTEGER, body TEXT, api_key TEXT);
         INSERT INTO drafts (author_id, body, api_key) VALUES (1, 'mine', 'k-1'), (2, 'not mine', 'k-2'), (1, 'also mine', NULL);",
    )
    .unwrap();
    drop(conn);
    std::fs::write(
        d.join("subset.yaml"),
        "relations: [{from: drafts.author_id, to: users.id}]\nstop: [comments.parent_id]\nexclude: [audit_log]\n\
         columns: {users.email: hash, drafts.api_key: keep}\nmarker: '[REDACTED]'\n",
    )
    .unwrap();
    let plan = run(
        d,
        &[
            "export",
            "--tenant",
            "users:1",
            "--from",
            "app.db",
            "--spec",
            "subset.yaml",
            "--plan",
        ],
    );
    ok(&plan);
    let text = stdout(&plan);
    for expected in [
        "down drafts.author_id → users.id",
        "(from the spec)",
        "not followed: comments.parent_id → comments.id",
        "users.password_hash: omit",
        "users.email: hash",
        "\"drafts\"                            2 own",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    assert!(!d.join("u.bundle.json").exists());
    let out = run(
        d,
        &[
            "export",
            "--tenant",
            "users:1",
            "--from",
            "app.db",
            "--spec",
            "subset.yaml",
            "--to",
            "u.bundle.json",
        ],
    );
    ok(&out);
    let bundle = std::fs::read_to_string(d.join("u.bundle.json")).unwrap();
    assert!(bundle.contains("\"also mine\"") && !bundle.contains("not mine"));
    assert!(bundle.contains("\"k-1\""), "kept by the spec");
    assert!(bundle.contains("[REDACTED]") && !bundle.contains("[ENCRYPTED]"));
    assert!(!bundle.contains("s1@example.com"), "hashed by the spec");
    let import = run(
        d,
        &["import", "u.bundle.json", "--to", "t.db", "--remap-keys"],
    );
    ok(&import);
    assert_eq!(
        sqlite_count(&d.join("t.db"), "SELECT count(*) FROM drafts d JOIN users u ON u.id = d.author_id WHERE u.name = 's user 1'"),
        2,
        "the spec's relation was remapped too"
    );
}

#[test]
fn export_refuses_what_it_cannot_do_safely_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    app_db(&d.join("app.db"), "e");
    let missing = run(
        d,
        &[
            "export",
            "--tenant",
            "users:99",
            "--from",
            "app.db",
            "--to",
            "x.bundle.json",
        ],
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("user not found"),
        "{}",
        stderr(&missing)
    );
    assert!(!d.join("x.bundle.json").exists());
    let plain = run(
        d,
        &[
            "export",
            "--tenant",
            "users:1",
            "--from",
            "app.db",
            "--to",
            "x.bundle.json",
            "--no-sanitize",
        ],
    );
    assert_eq!(plain.status.code(), Some(2), "{}", stderr(&plain));
    assert!(stderr(&plain).contains("only into an encrypted bundle"));
    let all = run(
        d,
        &[
            "export",
            "--tenant",
            "users:all",
            "--from",
            "app.db",
            "--to",
            "x.bundle.json",
        ],
    );
    assert_eq!(all.status.code(), Some(2));
    let column = run(
        d,
        &[
            "export",
            "--tenant",
            "users:nope=1",
            "--from",
            "app.db",
            "--plan",
        ],
    );
    assert_eq!(column.status.code(), Some(2));
    assert!(
        stderr(&column).contains("no column \"nope\""),
        "{}",
        stderr(&column)
    );
    // By e-mail, the same user as by key: the same rows, the same checksum.
    ok(&run(
        d,
        &[
            "export",
            "--tenant",
            "users:1",
            "--from",
            "app.db",
            "--to",
            "a.bundle.json",
            "--report",
            "a.json",
        ],
    ));
    ok(&run(
        d,
        &[
            "export",
            "--tenant",
            "users:email=e1@example.com",
            "--from",
            "app.db",
            "--to",
            "b.bundle.json",
            "--report",
            "b.json",
        ],
    ));
    let checksum = |f: &str| {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join(f)).unwrap()).unwrap();
        v["checksum"].as_str().unwrap().to_owned()
    };
    assert_eq!(checksum("a.json"), checksum("b.json"));
    // Everything, secrets included, but only encrypted; the import brings them back.
    ok(&run(d, &["keygen", "k.key"]));
    ok(&run(
        d,
        &[
            "export",
            "--tenant",
            "users:1",
            "--from",
            "app.db",
            "--to",
            "all.bundle.json.gz.enc",
            "--no-sanitize",
            "--key-file",
            "k.key",
        ],
    ));
    let raw = std::fs::read(d.join("all.bundle.json.gz.enc")).unwrap();
    assert!(!raw
        .windows(ACCESS_TOKEN.len())
        .any(|w| w == ACCESS_TOKEN.as_bytes()));
    let no_key = run(d, &["import", "all.bundle.json.gz.enc", "--to", "full.db"]);
    assert_eq!(no_key.status.code(), Some(2), "{}", stderr(&no_key));
    ok(&run(
        d,
        &["verify", "all.bundle.json.gz.enc", "--key-file", "k.key"],
    ));
    ok(&run(
        d,
        &[
            "import",
            "all.bundle.json.gz.enc",
            "--to",
            "full.db",
            "--key-file",
            "k.key",
        ],
    ));
    let conn = rusqlite::Connection::open(d.join("full.db")).unwrap();
    let (token, hash): (String, String) = conn
        .query_row(
            "SELECT s.access_token, u.password_hash FROM social_accounts s JOIN users u ON u.id = s.user_id",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (token.as_str(), hash.as_str()),
        (ACCESS_TOKEN, PASSWORD_HASH)
    );
}

#[test]
fn a_split_bundle_is_a_verified_set_of_parts_per_table() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    app_db(&d.join("app.db"), "p");
    ok(&run(
        d,
        &[
            "export",
            "--tenant",
            "users:1",
            "--from",
            "app.db",
            "--to",
            "u.bundle.ndjson.gz",
            "--split-records",
            "2",
        ],
    ));
    let manifest = d.join("u.bundle.manifest.json");
    assert!(manifest.exists());
    let parts: Vec<String> = crate::support::file_names(d)
        .into_iter()
        .filter(|n| n.starts_with("u.bundle-"))
        .collect();
    // platforms 1, users 2, posts 2, social_accounts 1, preferences 1, comments 2, and the head.
    assert_eq!(parts.len(), 10, "{parts:?}");
    let verify = run(d, &["verify", "u.bundle.manifest.json"]);
    ok(&verify);
    assert!(
        stdout(&verify).contains("15 rows in 6 tables"),
        "{}",
        stdout(&verify)
    );
    ok(&run(
        d,
        &[
            "import",
            "u.bundle.manifest.json",
            "--to",
            "t.db",
            "--validate",
        ],
    ));
    assert_eq!(
        sqlite_count(&d.join("t.db"), "SELECT count(*) FROM posts"),
        4
    );
    // A part replaced by another part of the same set is caught by its digest.
    let first = d.join(&parts[2]);
    std::fs::copy(d.join(&parts[3]), &first).unwrap();
    assert_eq!(
        run(d, &["verify", "u.bundle.manifest.json"]).status.code(),
        Some(1)
    );
    assert_eq!(
        run(d, &["import", "u.bundle.manifest.json", "--to", "t2.db"])
            .status
            .code(),
        Some(1)
    );
    assert!(!d.join("t2.db").exists());
}

#[test]
fn conflicts_follow_on_conflict_and_references_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    app_db(&d.join("app.db"), "c");
    ok(&run(
        d,
        &[
            "export",
            "--tenant",
            "users:1",
            "--from",
            "app.db",
            "--to",
            "u.bundle.json",
        ],
    ));
    ok(&run(d, &["import", "u.bundle.json", "--to", "t.db"]));
    // The same rows again are no conflict: they are there as the bundle has them.
    let again = run(
        d,
        &[
            "import",
            "u.bundle.json",
            "--to",
            "t.db",
            "--report",
            "again.json",
        ],
    );
    ok(&again);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("again.json")).unwrap()).unwrap();
    assert_eq!(
        (report["written"].as_u64(), report["skipped"].as_u64()),
        (Some(0), Some(15))
    );
    rusqlite::Connection::open(d.join("t.db"))
        .unwrap()
        .execute_batch("UPDATE posts SET content = 'edited', budget = NULL WHERE id = 1; UPDATE users SET name = 'renamed' WHERE id = 2;")
        .unwrap();
    let changed = run(d, &["import", "u.bundle.json", "--to", "t.db"]);
    assert_eq!(changed.status.code(), Some(1));
    assert!(
        stderr(&changed).contains("--on-conflict skip|overwrite|merge"),
        "{}",
        stderr(&changed)
    );
    let skip = run(
        d,
        &[
            "import",
            "u.bundle.json",
            "--to",
            "t.db",
            "--on-conflict",
            "skip",
            "--report",
            "r.json",
        ],
    );
    ok(&skip);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("r.json")).unwrap()).unwrap();
    assert_eq!(
        (report["read"].as_u64(), report["skipped"].as_u64()),
        (Some(15), Some(15))
    );
    assert_eq!(
        sqlite_count(
            &d.join("t.db"),
            "SELECT count(*) FROM posts WHERE content = 'edited'"
        ),
        1
    );
    ok(&run(
        d,
        &[
            "import",
            "u.bundle.json",
            "--to",
            "t.db",
            "--on-conflict",
            "overwrite",
        ],
    ));
    assert_eq!(
        sqlite_count(
            &d.join("t.db"),
            "SELECT count(*) FROM posts WHERE content = 'edited'"
        ),
        0
    );
    assert_eq!(
        sqlite_count(
            &d.join("t.db"),
            "SELECT count(*) FROM users WHERE name = 'renamed'"
        ),
        1,
        "another user's row (a reference) is never overwritten"
    );
}

#[test]
fn migrate_tenant_moves_one_many_or_a_list_of_users_each_in_its_own_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    app_db(&d.join("app.db"), "m");
    let url = cluster().fresh_database("tenant_migrate_all");
    let all = ferry_env(
        d,
        &[
            "migrate",
            "--tenant",
            "users:all",
            "--from",
            "app.db",
            "--to",
            &url,
            "--jobs",
            "2",
            "--validate",
            "--report",
            "all.json",
            "--backup",
            "bk",
        ],
        &[],
    );
    let text = stderr(&all);
    assert_eq!(all.status.code(), Some(0), "{text}");
    assert!(!text.contains(crate::pg::PASSWORD), "{text}");
    for user in 1..=3 {
        assert!(text.contains(&format!("users:{user} ")), "{text}");
    }
    assert!(
        text.contains("migrated 3 tenant(s) of users:all (0 failed)"),
        "{text}"
    );
    assert_eq!(crate::support::file_names(&d.join("bk")).len(), 3);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("all.json")).unwrap()).unwrap();
    assert_eq!(report["tenants"].as_array().map(Vec::len), Some(3));
    assert_eq!(report["valid"], true);
    for user in 1..=3 {
        let source = sqlite_count(
            &d.join("app.db"),
            &format!("SELECT count(*) FROM posts WHERE user_id = {user}"),
        );
        let target: i64 = cluster()
            .psql(
                &url,
                &format!("SELECT count(*) FROM posts WHERE user_id = {user}"),
            )
            .parse()
            .unwrap();
        assert_eq!(source, target, "user {user}");
    }
    let source_comments = sqlite_count(&d.join("app.db"), "SELECT count(*) FROM comments");
    assert_eq!(
        cluster().psql(&url, "SELECT count(*) FROM comments"),
        source_comments.to_string()
    );
    // A list of tenants into a SQLite file; a tenant that is not there fails alone, the others commit.
    std::fs::write(
        d.join("tenants.txt"),
        "# two users\nusers:2\n\nusers:email=m3@example.com\nusers:42\n",
    )
    .unwrap();
    let listed = run(
        d,
        &[
            "migrate",
            "--tenants-from",
            "tenants.txt",
            "--from",
            "app.db",
            "--to",
            "t.db",
        ],
    );
    assert_eq!(listed.status.code(), Some(1), "{}", stderr(&listed));
    assert!(
        stderr(&listed).contains("users:42") && stderr(&listed).contains("1 of 3 tenant(s) failed"),
        "{}",
        stderr(&listed)
    );
    assert_eq!(
        sqlite_count(
            &d.join("t.db"),
            "SELECT count(*) FROM posts WHERE user_id IN (2, 3)"
        ),
        9
    );
    let refused = run(
        d,
        &[
            "migrate", "--tenant", "users:1", "--from", "app.db", "--to", "t.db", "--tables",
            "users",
        ],
    );
    assert_eq!(refused.status.code(), Some(2));
}

#[test]
fn databases_lists_what_the_environment_configures_without_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    app_db(&d.join("app.db"), "d");
    let url = cluster().fresh_database("tenant_databases");
    let out = ferry_env(
        d,
        &["databases"],
        &[
            ("DATABASE_URL", url.as_str()),
            ("DB_PATH", "app.db"),
            ("DB_TYPE", "postgres"),
        ],
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(!text.contains(crate::pg::PASSWORD), "{text}");
    assert!(
        text.contains("DATABASE_URL") && text.contains("PostgreSQL") && text.contains("(default)"),
        "{text}"
    );
    assert!(
        text.contains("DB_PATH") && text.contains("SQLite 3.") && text.contains("7 tables"),
        "{text}"
    );
    let json = ferry_env(d, &["databases", "--json"], &[("DB_PATH", "app.db")]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["databases"][0]["reachable"], true);
    let down = ferry_env(
        d,
        &["databases", "--connect-timeout", "1"],
        &[("DATABASE_URL", "postgres://app:hunter2@127.0.0.1:1/app")],
    );
    assert_eq!(down.status.code(), Some(1));
    assert!(
        stdout(&down).contains("NOT reachable") && !stdout(&down).contains("hunter2"),
        "{}",
        stdout(&down)
    );
}
