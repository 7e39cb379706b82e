//! `ferry serve` end to end: the real binary on a free port with a temporary configuration, a real HTTP
//! client, real SQLite files and the throwaway PostgreSQL cluster. This file has the harness and the
//! routes one by one; serve_ops.rs has cancel, restart, kill -9 and concurrency.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::blocking::{multipart, Client, Response};
use serde_json::{json, Value};

use crate::pg;

/// A key for encrypted exports, as hex (the server reads it from TEST_EXPORT_KEY).
pub const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// A running `ferry serve`, killed when dropped.
pub struct Server {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The folder of its configuration, databases and work.
    pub dir: PathBuf,
    /// Everything it wrote on stderr.
    pub log: Arc<Mutex<String>>,
    /// The HTTP client.
    pub http: Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Adds a token with `ferry serve token add` and returns it.
pub fn add_token(dir: &Path, name: &str, scopes: &str, user: Option<&str>) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.args([
        "serve",
        "--config",
        "ferry-serve.yaml",
        "token",
        "add",
        name,
        "--scope",
        scopes,
    ])
    .current_dir(dir);
    if let Some(user) = user {
        cmd.args(["--user", user]);
    }
    let out = cmd.output().expect("run ferry serve token add");
    assert!(
        out.status.success(),
        "token add failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("fy_"), "{token}");
    token
}

impl Server {
    /// Writes `config` as `dir/ferry-serve.yaml` and starts the server there.
    pub fn start(dir: &Path, config: &str) -> Server {
        std::fs::write(dir.join("ferry-serve.yaml"), config).unwrap();
        Server::start_again(dir)
    }

    /// Starts the server on the configuration already in `dir`.
    pub fn start_again(dir: &Path) -> Server {
        pg::cluster();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args([
                "serve",
                "--config",
                "ferry-serve.yaml",
                "--listen",
                "127.0.0.1:0",
            ])
            .current_dir(dir)
            .env("SOURCE_DATE_EPOCH", "1717243200")
            .env("TEST_EXPORT_KEY", KEY_HEX)
            .env("PGPASSWORD", pg::PASSWORD)
            .env("FERRY_LOG", "info")
            .env_remove("DATABASE_URL")
            .env_remove("FERRY_KEY")
            .env_remove("EXPORT_ENCRYPTION_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ferry serve");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stderr).lines();
            let mut tx = Some(tx);
            while let Some(Ok(line)) = lines.next() {
                if let Some(url) = line.strip_prefix("ferry serve: listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(url.to_owned());
                    }
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(base) => base,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                std::thread::sleep(Duration::from_millis(200));
                panic!(
                    "ferry serve did not start ({status:?}):\n{}",
                    log.lock().unwrap()
                );
            }
        };
        Server {
            child: Some(child),
            base,
            dir: dir.to_owned(),
            log,
            // No idle connection is reused: a server may close one right after answering (a refused
            // upload), and a request sent on it in that moment would fail for the client's reasons.
            http: Client::builder()
                .timeout(Duration::from_secs(120))
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Stops the server where it is (SIGSTOP): nothing it runs moves on until it is killed.
    pub fn freeze(&self) {
        // SAFETY: signalling a child process this test started.
        let stopped = unsafe { libc::kill(self.pid() as i32, libc::SIGSTOP) };
        assert_eq!(stopped, 0, "SIGSTOP the server");
    }

    /// Kills the server with SIGKILL and waits for it.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Sends SIGTERM and waits (at most `limit`) for the server to exit; returns its exit code.
    pub fn terminate(&mut self, limit: Duration) -> Option<i32> {
        let mut child = self.child.take().unwrap();
        // SAFETY: signalling a child process this test started.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                panic!(
                    "the server did not stop within {limit:?}:\n{}",
                    self.log.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A URL on the server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GET with a token.
    pub fn get(&self, token: &str, path: &str) -> Response {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .expect("GET")
    }

    /// GET, expecting 200 JSON.
    pub fn get_json(&self, token: &str, path: &str) -> Value {
        let r = self.get(token, path);
        let status = r.status();
        let body = r.text().unwrap();
        assert_eq!(status.as_u16(), 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// POST JSON with a token; returns status and JSON body.
    pub fn post_json(&self, token: &str, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .expect("POST");
        status_json(r)
    }

    /// POST a multipart upload (`file` named `name`, `dataType`, `options`) to `path`.
    pub fn upload(
        &self,
        token: &str,
        path: &str,
        name: &str,
        data: Vec<u8>,
        data_type: &str,
        options: &Value,
    ) -> (u16, Value) {
        let form = upload_form(name, data, data_type, options);
        self.send_form(token, path, form).expect("POST multipart")
    }

    /// POST `form` to `path`, the client's error returned: a server that refuses an upload may close the
    /// connection while the client is still sending the body.
    pub fn send_form(
        &self,
        token: &str,
        path: &str,
        form: multipart::Form,
    ) -> reqwest::Result<(u16, Value)> {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(token)
            .multipart(form)
            .send()?;
        Ok(status_json(r))
    }

    /// Polls an operation until `done` says so (at most `limit`); returns it.
    pub fn poll(
        &self,
        token: &str,
        id: &str,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        loop {
            let op = self.get_json(
                token,
                &format!("/api/data-migration/operations/{id}/progress"),
            );
            if done(&op) {
                return op;
            }
            assert!(
                start.elapsed() < limit,
                "operation {id} never got there: {op:#}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls until the operation is over.
    pub fn finish(&self, token: &str, id: &str) -> Value {
        self.poll(token, id, Duration::from_secs(120), |op| {
            ["succeeded", "failed", "cancelled"].contains(&op["status"].as_str().unwrap_or(""))
        })
    }

    /// The audit table (admin token).
    pub fn audit(&self, admin: &str) -> Vec<Value> {
        self.get_json(admin, "/api/data-migration/audit?limit=1000")
            .as_array()
            .unwrap()
            .clone()
    }
}

/// Status and JSON body (every answer of the service is JSON but downloads).
pub fn status_json(r: Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().unwrap();
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text}"));
    (status, json)
}

/// Asserts an error body's shape and code.
pub fn assert_error(status: u16, body: &Value, want_status: u16, code: &str) {
    assert_eq!(status, want_status, "{body:#}");
    assert_eq!(body["error"]["code"], code, "{body:#}");
    let message = body["error"]["message"].as_str().expect("a message");
    assert!(
        !message.is_empty() && !message.contains('\n'),
        "one sentence: {message:?}"
    );
}

/// The multipart form of an upload: `file` named `name`, `dataType`, `options`.
pub fn upload_form(name: &str, data: Vec<u8>, data_type: &str, options: &Value) -> multipart::Form {
    multipart::Form::new()
        .part(
            "file",
            multipart::Part::bytes(data).file_name(name.to_owned()),
        )
        .text("dataType", data_type.to_owned())
        .text("options", options.to_string())
}

/// Asserts that an operation's counts balance and returns them.
pub fn counts(op: &Value) -> (u64, u64, u64, u64, u64) {
    let c = &op["counts"];
    let n = |k: &str| {
        c[k].as_u64()
            .unwrap_or_else(|| panic!("counts.{k} in {op:#}"))
    };
    let (read, written, rejected, filtered, skipped) = (
        n("read"),
        n("written"),
        n("rejected"),
        n("filtered"),
        n("skipped"),
    );
    assert_eq!(
        read,
        written + rejected + filtered + skipped,
        "unbalanced: {op:#}"
    );
    assert_eq!(op["balanced"], true);
    assert_eq!(op["successfulRecords"], written);
    (read, written, rejected, filtered, skipped)
}

/// NDJSON of `n` note records, ids from `first`, each `owner` given (or none).
pub fn notes(first: u64, n: u64, owner: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    for i in first..first + n {
        let mut r = json!({"id": i, "title": format!("note {i}"), "n": i * 3, "meta": {"k": i % 7, "tags": ["a", "b"]}});
        if let Some(owner) = owner {
            r["owner"] = json!(owner);
        }
        out.extend_from_slice(r.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

/// Rows in a SQLite table (0 when it does not exist).
pub fn sqlite_count(db: &Path, table: &str) -> u64 {
    if !db.exists() {
        return 0;
    }
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(&format!("SELECT COUNT(*) FROM \"{table}\""), [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|n| n as u64)
    .unwrap_or(0)
}

/// A PostgreSQL database URL without the password (the server gets PGPASSWORD).
pub fn pg_url_without_password(url: &str) -> String {
    url.replace(&format!(":{}@", pg::PASSWORD), "@")
}

/// The configuration the route tests share: contexts (SQLite, std-context), notes (SQLite, user-bound),
/// sessions (PostgreSQL, user-bound), one key.
pub fn config(pg_url: &str, extra: &str) -> String {
    format!(
        r#"work_dir: work
max_concurrent_jobs: 2
request_timeout: 60
shutdown_grace: 5
databases:
  local: {{path: app.db}}
  pg: {{url: "{pg}"}}
default_database: local
keys:
  k1: {{env: TEST_EXPORT_KEY}}
datasets:
  contexts:
    table: contexts
    template: std-context
    filters: {{dateRange: createdAt, types: type, tags: tags, importance: metadata.importance}}
    metadata_field: metadata
  notes:
    table: notes
    user_column: owner
    detect: [id, title, n]
  sessions:
    database: pg
    table: sessions
    user_column: owner
    detect: [sid]
{extra}"#,
        pg = pg_url_without_password(pg_url)
    )
}

/// A server with the shared configuration and three tokens: admin, reader, and an importer/exporter.
pub struct Fixture {
    pub server: Server,
    pub dir: tempfile::TempDir,
    pub admin: String,
    pub reader: String,
    pub mover: String,
    pub pg_url: String,
}

pub fn fixture(extra: &str) -> Fixture {
    fixture_with(|pg_url| config(pg_url, extra))
}

/// A fixture whose configuration `make` writes from the PostgreSQL URL.
pub fn fixture_with(make: impl Fn(&str) -> String) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let pg_url = pg::cluster().fresh_database("serve");
    std::fs::write(dir.path().join("ferry-serve.yaml"), make(&pg_url)).unwrap();
    let admin = add_token(dir.path(), "admin", "admin", None);
    let reader = add_token(dir.path(), "reader", "read", None);
    let mover = add_token(dir.path(), "mover", "read,export,import", None);
    let server = Server::start_again(dir.path());
    Fixture {
        server,
        dir,
        admin,
        reader,
        mover,
        pg_url,
    }
}

fn legacy_csv() -> Vec<u8> {
    std::fs::read(crate::support::root().join("samples/legacy.csv")).unwrap()
}

#[test]
fn serve_import_then_export_gives_the_input_back_through_every_route() {
    let f = fixture("");
    let s = &f.server;
    // Health and the description need no token.
    let health: Value = s
        .http
        .get(s.url("/healthz"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(health["status"], "ok");
    let doc: Value = s
        .http
        .get(s.url("/api/openapi.json"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    for path in [
        "/api/data-migration/export",
        "/api/data-migration/import",
        "/api/data-migration/validate",
        "/api/data-migration/operations/{id}/progress",
        "/api/data-migration/operations/active",
        "/api/data-migration/operations/history",
        "/api/data-migration/operations/{id}/cancel",
        "/api/data-migration/operations/{id}/events",
        "/api/data-migration/operations/{id}/result",
        "/api/data-migration/templates",
        "/api/data-migration/templates/{id}",
        "/healthz",
        "/metrics",
    ] {
        assert!(doc["paths"][path].is_object(), "OpenAPI lacks {path}");
    }

    // The guide's import, as curl sends it, into PostgreSQL.
    let sessions: Vec<u8> = (1..=40)
        .map(|i| json!({"sid": format!("s{i}"), "owner": "alice", "started": i, "data": {"steps": [i, i + 1], "ok": true}}).to_string() + "\n")
        .collect::<String>()
        .into_bytes();
    let (status, op) = s.upload(
        &f.mover,
        "/api/data-migration/import?wait=60",
        "sessions.ndjson",
        sessions.clone(),
        "sessions",
        &json!({"format": "ndjson", "validateSchema": true, "batchSize": 7}),
    );
    assert_eq!(status, 200, "{op:#}");
    assert_eq!(op["status"], "succeeded");
    assert_eq!(op["type"], "import");
    assert_eq!(counts(&op), (40, 40, 0, 0, 0));
    assert_eq!(op["table"]["inserted"], 40);
    assert_eq!(op["progress"], 100.0);
    let rows = pg::cluster().psql(&f.pg_url, "SELECT count(*) FROM sessions");
    assert_eq!(rows, "40");

    // And out again: export equals the input, record for record.
    let (status, op) = s.post_json(
        &f.mover,
        "/api/data-migration/export?wait=60",
        &json!({"dataType": "sessions", "options": {"format": "ndjson"}}),
    );
    assert_eq!(status, 200, "{op:#}");
    assert_eq!(op["exportId"], op["operationId"]);
    assert_eq!(counts(&op), (40, 40, 0, 0, 0));
    let id = op["operationId"].as_str().unwrap();
    let files = op["result"]["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{op:#}");
    let r = s.get(
        &f.reader,
        &format!("/api/data-migration/operations/{id}/result"),
    );
    assert_eq!(r.status(), 200);
    let digest = r.headers()["x-checksum-sha256"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = r.bytes().unwrap();
    assert_eq!(digest, files[0]["sha256"].as_str().unwrap());
    assert_eq!(digest, sha256_hex(&body));
    let parse = |bytes: &[u8]| -> Vec<Value> {
        let mut v: Vec<Value> = bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        v.sort_by_key(|r| r["started"].as_i64());
        v
    };
    assert_eq!(
        parse(&body),
        parse(&sessions),
        "export must give the import back"
    );

    // Progress, active, history, datasets.
    let progress = s.get_json(
        &f.reader,
        &format!("/api/data-migration/operations/{id}/progress"),
    );
    assert_eq!(progress["status"], "succeeded");
    assert_eq!(progress["currentRecord"], 40);
    assert!(progress["startTime"].is_string() && progress["endTime"].is_string());
    let active = s.get_json(&f.reader, "/api/data-migration/operations/active");
    assert_eq!(active["operations"].as_array().unwrap().len(), 0);
    let history = s.get_json(&f.reader, "/api/data-migration/operations/history?limit=50");
    assert_eq!(history["total"], 2);
    assert_eq!(history["operations"][0]["operationId"], id, "newest first");
    let page = s.get_json(
        &f.reader,
        "/api/data-migration/operations/history?limit=1&offset=1",
    );
    assert_eq!(page["operations"][0]["type"], "import");
    assert_eq!(page["operations"].as_array().unwrap().len(), 1);
    let page = s.get_json(
        &f.reader,
        "/api/data-migration/operations/history?type=export&state=succeeded&dataType=sessions",
    );
    assert_eq!(page["total"], 1);
    assert_eq!(page["operations"][0]["operationId"], id);
    let none = s.get_json(
        &f.reader,
        "/api/data-migration/operations/history?since=2999-01-01",
    );
    assert_eq!(none["total"], 0);
    let none = s.get_json(
        &f.reader,
        "/api/data-migration/operations/history?until=2000-01-01",
    );
    assert_eq!(none["total"], 0);
    let all = s.get_json(
        &f.reader,
        "/api/data-migration/operations/history?since=2000-01-01&until=2999-01-01",
    );
    assert_eq!(all["total"], history["total"], "{all:#}");
    let (status, body) = status_json(s.get(
        &f.reader,
        "/api/data-migration/operations/history?state=bogus",
    ));
    assert_error(status, &body, 400, "bad_request");
    let datasets = s.get_json(&f.reader, "/api/data-migration/datasets");
    assert_eq!(datasets.as_array().unwrap().len(), 3);

    // The guide's legacy CSV, mapped through std-context, into SQLite; then a filtered export.
    let (status, op) = s.upload(
        &f.mover,
        "/api/data-migration/import?wait=60",
        "legacy.csv",
        legacy_csv(),
        "contexts",
        &json!({"format": "csv", "validateSchema": true}),
    );
    assert_eq!(status, 200, "{op:#}");
    assert_eq!(counts(&op).1, 6);
    assert_eq!(sqlite_count(&f.dir.path().join("app.db"), "contexts"), 6);
    let (status, op) = s.post_json(
        &f.mover,
        "/api/data-migration/export?wait=60",
        &json!({"dataType": "contexts", "options": {
            "format": "json", "includeMetadata": false,
            "filters": {"dateRange": {"start": "2020-01-01T00:00:00Z", "end": "2030-12-31T23:59:59Z"}}}}),
    );
    assert_eq!(status, 200, "{op:#}");
    let (read, written, _, filtered, _) = counts(&op);
    assert_eq!(read, 6);
    assert!(
        written > 0 && filtered > 0,
        "the date filter keeps some and leaves some: {op:#}"
    );
    let id = op["operationId"].as_str().unwrap();
    let exported: Vec<Value> = s
        .get(
            &f.reader,
            &format!("/api/data-migration/operations/{id}/result"),
        )
        .json()
        .unwrap();
    assert_eq!(exported.len() as u64, written);
    for record in &exported {
        assert!(
            record.get("metadata").is_none(),
            "includeMetadata false: {record}"
        );
        assert!(record["createdAt"].as_str().unwrap() >= "2020");
    }

    // Metrics count what moved.
    let metrics = s.get(&f.reader, "/metrics").text().unwrap();
    assert!(
        metrics.contains(r#"ferry_operations_finished_total{type="import",state="succeeded"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"ferry_records_total{type="import",outcome="written"} 46"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferry_http_request_duration_seconds_bucket"),
        "{metrics}"
    );
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn serve_answers_401_403_and_413_with_json_and_audits_without_secrets() {
    let f = fixture("max_upload_size: 4KiB\n");
    let s = &f.server;
    let export = json!({"dataType": "notes", "options": {"format": "json"}});
    // No token, a wrong token.
    let r = s
        .http
        .post(s.url("/api/data-migration/export"))
        .json(&export)
        .send()
        .unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let (status, body) = status_json(r);
    assert_error(status, &body, 401, "unauthorized");
    let (status, body) = s.post_json("fy_not-a-token", "/api/data-migration/export", &export);
    assert_error(status, &body, 401, "unauthorized");
    // A missing scope.
    let (status, body) = s.post_json(&f.reader, "/api/data-migration/export", &export);
    assert_error(status, &body, 403, "forbidden");
    let (status, body) = s.upload(
        &f.reader,
        "/api/data-migration/import",
        "n.ndjson",
        notes(1, 2, None),
        "notes",
        &json!({}),
    );
    assert_error(status, &body, 403, "forbidden");
    let r = s
        .http
        .post(s.url("/api/data-migration/templates"))
        .bearer_auth(&f.mover)
        .header("content-type", "application/yaml")
        .body("name: x\nfields: [{name: a}]\n")
        .send()
        .unwrap();
    let (status, body) = status_json(r);
    assert_error(status, &body, 403, "forbidden");
    let (status, body) = status_json(s.get(&f.mover, "/api/data-migration/audit"));
    assert_error(status, &body, 403, "forbidden");
    // Too large an upload: 413, and nothing left behind.
    let (status, body) = s.upload(
        &f.mover,
        "/api/data-migration/import",
        "big.ndjson",
        notes(1, 200, None),
        "notes",
        &json!({}),
    );
    assert_error(status, &body, 413, "payload_too_large");
    let ops = f.dir.path().join("work/ops");
    assert_eq!(
        std::fs::read_dir(&ops).unwrap().count(),
        0,
        "no operation folder is left"
    );
    // Bad requests: JSON errors too.
    let (status, body) = s.post_json(
        &f.mover,
        "/api/data-migration/export",
        &json!({"dataType": "nope"}),
    );
    assert_error(status, &body, 422, "unknown_data_type");
    let (status, body) = s.post_json(
        &f.mover,
        "/api/data-migration/export",
        &json!({"dataType": "notes", "options": {"formatt": "json"}}),
    );
    assert_error(status, &body, 400, "bad_request");
    let (status, body) = s.post_json(&f.mover, "/api/data-migration/export",
        &json!({"dataType": "notes", "options": {"encryption": {"enabled": true, "key": "hunter2-secret"}}}));
    assert_error(status, &body, 422, "invalid_request");
    assert!(!body.to_string().contains("hunter2"));
    let (status, body) = status_json(s.get(
        &f.reader,
        "/api/data-migration/operations/op-00000000000000000000/progress",
    ));
    assert_error(status, &body, 404, "not_found");
    let (status, body) = status_json(s.get(&f.reader, "/no/such/route"));
    assert_error(status, &body, 404, "not_found");
    // The audit table says who was refused what, and holds no token.
    let audit = s.audit(&f.admin);
    let text = serde_json::to_string(&audit).unwrap();
    for secret in [
        &f.admin,
        &f.reader,
        &f.mover,
        &"hunter2".to_owned(),
        &"fy_not-a-token".to_owned(),
    ] {
        assert!(!text.contains(secret.as_str()), "the audit holds a secret");
    }
    assert!(audit.iter().any(|a| a["httpStatus"] == 401));
    assert!(audit
        .iter()
        .any(|a| a["httpStatus"] == 403 && a["token"] == "reader"));
    assert!(audit
        .iter()
        .any(|a| a["httpStatus"] == 413 && a["token"] == "mover"));
    let log = s.log.lock().unwrap().clone();
    for secret in [&f.admin, &f.reader, &f.mover] {
        assert!(!log.contains(secret.as_str()), "the log holds a token");
    }
    assert!(log.contains("status=403"), "one line per request: {log}");
}

#[test]
fn serve_binds_a_token_to_its_users_data_and_operations() {
    let f = fixture("");
    let s = &f.server;
    let alice = add_token(
        f.dir.path(),
        "alice-app",
        "read,export,import",
        Some("alice"),
    );
    let bob = add_token(f.dir.path(), "bob-app", "read,export,import", Some("bob"));
    // Alice's records: owner missing (stamped alice), owner alice, and one that claims bob (rejected).
    let mut upload = notes(1, 3, None);
    upload.extend(notes(4, 2, Some("alice")));
    upload.extend(notes(6, 1, Some("bob")));
    let (status, op) = s.upload(
        &alice,
        "/api/data-migration/import?wait=60",
        "mine.ndjson",
        upload,
        "notes",
        &json!({"errorHandling": "lenient"}),
    );
    assert_eq!(status, 200, "{op:#}");
    assert_eq!(counts(&op), (6, 5, 1, 0, 0));
    assert_eq!(op["userId"], "alice");
    assert_eq!(op["errors"][0]["record"], 6, "{op:#}");
    let alice_op = op["operationId"].as_str().unwrap().to_owned();
    let (status, op) = s.upload(
        &bob,
        "/api/data-migration/import?wait=60",
        "bob.ndjson",
        notes(100, 4, None),
        "notes",
        &json!({}),
    );
    assert_eq!(status, 200, "{op:#}");
    let bob_op = op["operationId"].as_str().unwrap().to_owned();
    let db = f.dir.path().join("app.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let owners: Vec<(String, i64)> = conn
        .prepare("SELECT owner, count(*) FROM notes GROUP BY owner ORDER BY owner")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(owners, [("alice".to_owned(), 5), ("bob".to_owned(), 4)]);

    // Each sees only its own operations; another's id is not even confirmed.
    let history = s.get_json(&alice, "/api/data-migration/operations/history");
    assert_eq!(history["total"], 1);
    assert_eq!(history["operations"][0]["operationId"], alice_op);
    let (status, body) = status_json(s.get(
        &alice,
        &format!("/api/data-migration/operations/{bob_op}/progress"),
    ));
    assert_error(status, &body, 404, "not_found");
    let (status, body) = status_json(
        s.http
            .post(s.url(&format!("/api/data-migration/operations/{bob_op}/cancel")))
            .bearer_auth(&alice)
            .send()
            .unwrap(),
    );
    assert_error(status, &body, 404, "not_found");
    assert_eq!(
        s.get_json(&f.admin, "/api/data-migration/operations/history")["total"],
        2
    );

    // Alice's export holds only her rows; an unbound token's holds all.
    let (status, op) = s.post_json(
        &alice,
        "/api/data-migration/export?wait=60",
        &json!({"dataType": "notes", "options": {"format": "ndjson"}}),
    );
    assert_eq!(status, 200, "{op:#}");
    assert_eq!(counts(&op).1, 5);
    let id = op["operationId"].as_str().unwrap();
    let text = s
        .get(
            &alice,
            &format!("/api/data-migration/operations/{id}/result"),
        )
        .text()
        .unwrap();
    assert_eq!(text.lines().count(), 5);
    assert!(
        text.lines().all(|l| l.contains(r#""owner":"alice""#)),
        "{text}"
    );
    let (_, op) = s.post_json(
        &f.mover,
        "/api/data-migration/export?wait=60",
        &json!({"dataType": "notes", "options": {"format": "ndjson"}}),
    );
    assert_eq!(counts(&op).1, 9);
    // A dataset without a user column is closed to user-bound tokens.
    let (status, body) = s.post_json(
        &alice,
        "/api/data-migration/export",
        &json!({"dataType": "contexts"}),
    );
    assert_error(status, &body, 403, "forbidden");
}

#[test]
fn serve_validates_detects_and_checks_templates() {
    let f = fixture("");
    let s = &f.server;
    // Validate: nothing written, every bad record listed.
    let mut csv = legacy_csv();
    csv.extend_from_slice(b"1099,,no title,note,,01/01/2020 10:00\n");
    let (status, op) = s.upload(
        &f.mover,
        "/api/data-migration/validate?wait=60",
        "legacy.csv",
        csv,
        "contexts",
        &json!({}),
    );
    assert_eq!(status, 200, "{op:#}");
    assert_eq!(op["type"], "validate");
    assert_eq!(op["valid"], false);
    assert_eq!(counts(&op), (7, 6, 1, 0, 0));
    assert_eq!(op["errors"][0]["record"], 7);
    assert!(
        op["errors"][0]["error"]
            .as_str()
            .unwrap()
            .contains("legacy.csv"),
        "{op:#}"
    );
    assert!(
        !op["errors"][0]["error"]
            .as_str()
            .unwrap()
            .contains("/work/"),
        "no server path: {op:#}"
    );
    assert_eq!(sqlite_count(&f.dir.path().join("app.db"), "contexts"), 0);

    // auto-detect picks the dataset from the first record, or says why it cannot.
    let (status, op) = s.upload(
        &f.mover,
        "/api/data-migration/import?wait=60",
        "x.csv",
        legacy_csv(),
        "auto-detect",
        &json!({}),
    );
    assert_eq!(status, 200, "{op:#}");
    assert_eq!(op["dataType"], "contexts");
    let (status, body) = s.upload(
        &f.mover,
        "/api/data-migration/import",
        "odd.ndjson",
        b"{\"zzz\": 1}\n".to_vec(),
        "auto-detect",
        &json!({}),
    );
    assert_error(status, &body, 422, "detect_failed");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("zzz"),
        "{body:#}"
    );

    // Templates: a bad one is refused with every problem and its line, a good one stored and used by an
    // import.
    let bad = "name: shouty\nversion: 1.0.0\nfields:\n  - name: id\n    type: integer\n  - name: title\n    transforms: [shout]\n  - name: when\n    compute: nope(title)\n";
    let r = s
        .http
        .post(s.url("/api/data-migration/templates"))
        .bearer_auth(&f.admin)
        .header("content-type", "application/yaml")
        .body(bad)
        .send()
        .unwrap();
    let (status, body) = status_json(r);
    assert_error(status, &body, 422, "template_invalid");
    let problems = body["error"]["details"]["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 2, "{body:#}");
    assert_eq!(problems[0]["field"], "title");
    assert_eq!(problems[0]["line"], 7, "{body:#}");
    assert_eq!(problems[1]["field"], "when");
    assert_eq!(problems[1]["line"], 9, "{body:#}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("the template has 2 problems, the first: line 7: field \"title\""),
        "{body:#}"
    );
    let good = "name: loud-notes\nversion: 1.0.0\nkeep_unmapped: true\nfields:\n  - name: title\n    transforms: [uppercase]\n";
    let post = |body: &str| {
        s.http
            .post(s.url("/api/data-migration/templates"))
            .bearer_auth(&f.admin)
            .header("content-type", "application/yaml")
            .body(body.to_owned())
            .send()
            .unwrap()
    };
    let (status, made) = status_json(post(good));
    assert_eq!(status, 201, "{made:#}");
    assert_eq!(made["id"], "loud-notes");
    let (status, body) = status_json(post(good));
    assert_error(status, &body, 409, "template_exists");
    let list = s.get_json(&f.reader, "/api/data-migration/templates");
    let ids: Vec<&str> = list["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"loud-notes") && ids.contains(&"std-context"),
        "{ids:?}"
    );
    let one = s.get_json(&f.reader, "/api/data-migration/templates/loud-notes");
    assert_eq!(one["yaml"], good);
    let (status, op) = s.upload(
        &f.mover,
        "/api/data-migration/import?wait=60",
        "n.ndjson",
        notes(1, 3, None),
        "notes",
        &json!({"template": "loud-notes"}),
    );
    assert_eq!(status, 200, "{op:#}");
    let conn = rusqlite::Connection::open(f.dir.path().join("app.db")).unwrap();
    let title: String = conn
        .query_row("SELECT title FROM notes WHERE id = 2", [], |r| r.get(0))
        .unwrap();
    assert_eq!(title, "NOTE 2");
    // Mappings are templates, not request text.
    let (status, body) = s.upload(
        &f.mover,
        "/api/data-migration/import",
        "n.ndjson",
        notes(1, 1, None),
        "notes",
        &json!({"mapping": {"fieldMappings": {"a": "b"}}}),
    );
    assert_error(status, &body, 422, "invalid_request");
}

#[test]
fn serve_exports_encrypted_split_sets_that_verify_and_streams_events() {
    let f = fixture("");
    let s = &f.server;
    let (status, op) = s.upload(
        &f.mover,
        "/api/data-migration/import?wait=60",
        "n.ndjson",
        notes(1, 3000, None),
        "notes",
        &json!({}),
    );
    assert_eq!(status, 200, "{op:#}");
    let (status, op) = s.post_json(
        &f.mover,
        "/api/data-migration/export?wait=60",
        &json!({"dataType": "notes", "options": {
        "format": "ndjson",
        "encryption": {"enabled": true, "algorithm": "aes-256-gcm", "keyId": "k1"},
        "splitLargeFiles": {"enabled": true, "maxSizeBytes": 70000}}}),
    );
    assert_eq!(status, 200, "{op:#}");
    assert_eq!(counts(&op).1, 3000);
    let id = op["operationId"].as_str().unwrap();
    let files = op["result"]["files"].as_array().unwrap();
    assert!(files.len() >= 3, "parts and a manifest: {op:#}");
    assert_eq!(files.last().unwrap()["role"], "manifest");
    // Download every file as listed, check its digest, and let `ferry verify` check the set with the key.
    let out = tempfile::tempdir().unwrap();
    for file in files {
        let url = file["url"].as_str().unwrap();
        let bytes = s.get(&f.reader, url).bytes().unwrap();
        assert_eq!(sha256_hex(&bytes), file["sha256"].as_str().unwrap());
        std::fs::write(out.path().join(file["name"].as_str().unwrap()), bytes).unwrap();
    }
    let manifest = files.last().unwrap()["name"].as_str().unwrap();
    let verify = crate::support::ferry_env(
        out.path(),
        &["verify", manifest, "--key-env", "K"],
        &[("K", KEY_HEX)],
    );
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    // Without parameters, a split export's download is its manifest.
    let r = s.get(
        &f.reader,
        &format!("/api/data-migration/operations/{id}/result"),
    );
    assert_eq!(
        r.headers()["content-disposition"],
        format!("attachment; filename=\"{manifest}\"")
    );

    // Events: a stream of operation events ending with `end`.
    let (status, op) = s.post_json(
        &f.mover,
        "/api/data-migration/export",
        &json!({"dataType": "notes"}),
    );
    assert_eq!(status, 202, "{op:#}");
    let id = op["operationId"].as_str().unwrap();
    let mut r = s.get(
        &f.reader,
        &format!("/api/data-migration/operations/{id}/events"),
    );
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    r.read_to_string(&mut text).unwrap();
    let events: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(events.last(), Some(&"end"), "{text}");
    let last = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap();
    let last: Value = serde_json::from_str(last).unwrap();
    assert_eq!(last["status"], "succeeded");
    assert_eq!(counts(&last).1, 3000);
}

/// A body that sends some bytes, then waits for the test to let it finish.
struct HeldBody {
    sent: bool,
    gate: std::sync::mpsc::Receiver<()>,
}

impl Read for HeldBody {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.sent {
            self.sent = true;
            let line = b"{\"id\": 1, \"title\": \"held\", \"n\": 1}\n";
            buf[..line.len()].copy_from_slice(line);
            return Ok(line.len());
        }
        let _ = self.gate.recv();
        Ok(0)
    }
}

#[test]
fn serve_caps_uploads_at_once() {
    let f = fixture("max_concurrent_uploads: 1\n");
    let s = &f.server;
    let (open, gate) = std::sync::mpsc::channel();
    let held = std::thread::scope(|scope| {
        // Owned here, the gate opens when this closure ends, also by a failed assertion: the held upload
        // then finishes and the scope can join it (else a failure would hang the test).
        let open = open;
        let first = scope.spawn(|| {
            let form = multipart::Form::new()
                .part(
                    "file",
                    multipart::Part::reader(HeldBody { sent: false, gate })
                        .file_name("held.ndjson"),
                )
                .text("dataType", "notes");
            status_json(
                s.http
                    .post(s.url("/api/data-migration/import?wait=30"))
                    .bearer_auth(&f.mover)
                    .multipart(form)
                    .send()
                    .unwrap(),
            )
        });
        // While the first upload is being received, a second one is turned away.
        let start = Instant::now();
        let second = loop {
            std::thread::sleep(Duration::from_millis(100));
            let form = upload_form("n.ndjson", notes(100, 1, None), "notes", &json!({}));
            let sent = s.send_form(&f.mover, "/api/data-migration/import", form);
            // Turned away before its body was all sent, the client may see the connection closed instead
            // of the answer: asked again.
            let Ok((status, body)) = sent else {
                assert!(start.elapsed() < Duration::from_secs(20), "{sent:?}");
                continue;
            };
            if status == 429 || start.elapsed() > Duration::from_secs(20) {
                break (status, body);
            }
            // The first had not reached the server yet; this one went through.
            assert_eq!(status, 202, "{body:#}");
        };
        assert_error(second.0, &second.1, 429, "too_many_requests");
        open.send(()).unwrap();
        first.join().unwrap()
    });
    assert_eq!(held.0, 200, "{:#}", held.1);
    assert_eq!(counts(&held.1).1, 1);
}

#[test]
fn serve_removes_result_files_after_their_retention() {
    let f = fixture("result_retention: 1\n");
    let s = &f.server;
    let (status, op) = s.upload(
        &f.mover,
        "/api/data-migration/import?wait=30",
        "n.ndjson",
        notes(1, 5, None),
        "notes",
        &json!({}),
    );
    assert_eq!(status, 200, "{op:#}");
    let (status, op) = s.post_json(
        &f.mover,
        "/api/data-migration/export?wait=30",
        &json!({"dataType": "notes"}),
    );
    assert_eq!(status, 200, "{op:#}");
    let id = op["operationId"].as_str().unwrap().to_owned();
    assert!(op["result"]["expiresAt"].is_string());
    assert_eq!(
        s.get(
            &f.reader,
            &format!("/api/data-migration/operations/{id}/result")
        )
        .status(),
        200
    );
    let op = s.poll(&f.reader, &id, Duration::from_secs(20), |op| {
        op["result"]["expired"] == true
    });
    assert_eq!(op["status"], "succeeded");
    let (status, body) = status_json(s.get(
        &f.reader,
        &format!("/api/data-migration/operations/{id}/result"),
    ));
    assert_error(status, &body, 409, "no_result");
    assert!(!f.dir.path().join("work/ops").join(&id).exists());
}
