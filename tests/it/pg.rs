//! A throwaway PostgreSQL cluster for the integration tests: one per test binary, started on first use.
//!
//! [`cluster`] runs `initdb` and `pg_ctl start` in a temporary directory (as the `postgres` user when the
//! tests run as root, since `initdb` refuses root), listening only on 127.0.0.1 on a free port, with TLS
//! (a self-signed certificate) and password authentication for TCP connections. Durability is switched
//! off: the cluster lives only as long as the test binary. A detached watchdog stops it and removes the
//! directory when the test process exits, however it exits, because statics are never dropped.

#![allow(dead_code)]

use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// The superuser every test connects as.
pub const USER: &str = "ferry";
/// Its password; TCP connections need it (scram-sha-256).
pub const PASSWORD: &str = "s3cret-pw";

const INSTALL_HINT: &str = "install PostgreSQL server binaries: apt-get install postgresql";

/// A running cluster. Never dropped: the watchdog owns its shutdown.
pub struct PgCluster {
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    /// The temporary directory holding everything (data, socket, certificate, log).
    pub dir: PathBuf,
    /// The data directory.
    pub data: PathBuf,
    /// The self-signed server certificate (also usable as its own root certificate).
    pub cert: PathBuf,
    /// The server log.
    pub log: PathBuf,
    psql: PathBuf,
    /// Shell command lines that stop the server at once (as a crash would) and start it again.
    stop_line: String,
    start_line: String,
    databases: AtomicUsize,
    /// The write end of the watchdog's stdin: when this process exits the kernel closes it, the watchdog
    /// reads end-of-file and stops the cluster.
    _watchdog: ChildStdin,
}

/// A cluster of the calling test's own, for tests that stop the server (every other test shares
/// [`cluster`]). It is stopped and removed when the test binary exits, as the shared one is.
pub fn private_cluster() -> PgCluster {
    start().unwrap_or_else(|e| panic!("cannot start a private PostgreSQL cluster: {e}"))
}

/// The cluster of this test binary, started on first use. Panics (in every test that asks) when it
/// cannot be started.
pub fn cluster() -> &'static PgCluster {
    static CLUSTER: OnceLock<Result<PgCluster, String>> = OnceLock::new();
    match CLUSTER.get_or_init(start) {
        Ok(cluster) => cluster,
        Err(e) => panic!("cannot start the test PostgreSQL cluster: {e}"),
    }
}

impl PgCluster {
    /// The URL of `database`, with user and password.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// Creates a new, empty database named `prefix` (lowercased, other characters than `[a-z0-9_]`
    /// replaced by `_`) plus a counter, and returns its URL. Safe to call from parallel tests.
    pub fn fresh_database(&self, prefix: &str) -> String {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let mut stem: String = prefix
            .chars()
            .take(40)
            .map(|c| c.to_ascii_lowercase())
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if !stem.starts_with(|c: char| c.is_ascii_lowercase() || c == '_') {
            stem.insert_str(0, "db_");
        }
        let name = format!("{stem}_{n}");
        self.client(&self.url("postgres"))
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name} failed: {e}"));
        self.url(&name)
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`: connections are cut, as in a crash).
    pub fn stop_now(&self) {
        self.shell(&self.stop_line, "pg_ctl stop -m immediate");
    }

    /// Starts the server again (after [`PgCluster::stop_now`]), on the same port; crash recovery runs.
    pub fn restart(&self) {
        self.shell(&self.start_line, "pg_ctl start");
    }

    fn shell(&self, line: &str, what: &str) {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", line]).current_dir(&self.dir);
        if let Err(e) = run(cmd, what) {
            panic!("{e}");
        }
    }

    /// A plain (no TLS) client for `url`.
    pub fn client(&self, url: &str) -> postgres::Client {
        postgres::Client::connect(url, postgres::NoTls)
            .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"))
    }

    /// Runs `sql` with `psql -X -A -t` against `url` (its password goes through PGPASSWORD, never the
    /// command line) and returns stdout, trimmed. Panics with psql's stderr when it fails.
    pub fn psql(&self, url: &str, sql: &str) -> String {
        let (url, password) = split_password(url);
        let out = Command::new(&self.psql)
            .args([
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &url,
                "-c",
                sql,
            ])
            .env("PGPASSWORD", password.as_deref().unwrap_or(PASSWORD))
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.psql.display()));
        if !out.status.success() {
            panic!(
                "psql {url} -c {sql:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// `url` without its password, and the (percent-decoded) password.
fn split_password(url: &str) -> (String, Option<String>) {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return (url.to_string(), None);
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return (url.to_string(), None);
    };
    let Some(colon) = authority[..at].find(':') else {
        return (url.to_string(), None);
    };
    let stripped = format!(
        "{}{}{}",
        &url[..scheme_end],
        &authority[..colon],
        &rest[at..]
    );
    (stripped, Some(percent_decode(&authority[colon + 1..at])))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%')
            .then(|| s.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How to run the server programs: directly, or as the `postgres` user when we are root.
enum Runner {
    Direct,
    Runuser { runuser: PathBuf },
    Su { su: PathBuf },
}

/// The user the cluster runs as, when that is not us (we are root).
struct ClusterUser {
    uid: u32,
    gid: u32,
}

impl Runner {
    /// A command running `program args` as the cluster's user.
    fn command(&self, program: &Path, args: &[OsString]) -> Command {
        match self {
            Runner::Direct => {
                let mut cmd = Command::new(program);
                cmd.args(args);
                cmd
            }
            Runner::Runuser { runuser } => {
                let mut cmd = Command::new(runuser);
                cmd.args(["-u", "postgres", "--"]).arg(program).args(args);
                cmd
            }
            Runner::Su { su } => {
                let mut cmd = Command::new(su);
                cmd.args(["postgres", "-s", "/bin/sh", "-c"])
                    .arg(format!("exec {}", shell_line(program, args)));
                cmd
            }
        }
    }

    /// The same as a shell command line.
    fn shell_line(&self, program: &Path, args: &[OsString]) -> String {
        match self {
            Runner::Direct => shell_line(program, args),
            Runner::Runuser { runuser } => format!(
                "{} -u postgres -- {}",
                quote(runuser.as_os_str()),
                shell_line(program, args)
            ),
            Runner::Su { su } => format!(
                "{} postgres -s /bin/sh -c {}",
                quote(su.as_os_str()),
                quote(format!("exec {}", shell_line(program, args)).as_ref())
            ),
        }
    }
}

fn shell_line(program: &Path, args: &[OsString]) -> String {
    std::iter::once(quote(program.as_os_str()))
        .chain(args.iter().map(|a| quote(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Single-quotes `s` for sh.
fn quote(s: &std::ffi::OsStr) -> String {
    format!("'{}'", s.to_string_lossy().replace('\'', r"'\''"))
}

fn os_args<const N: usize>(args: [&dyn AsRef<std::ffi::OsStr>; N]) -> Vec<OsString> {
    args.iter().map(|a| a.as_ref().to_os_string()).collect()
}

/// Runs `cmd` to completion; an error names `what` and carries the command's stderr (and stdout).
fn run(mut cmd: Command, what: &str) -> Result<Output, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: cannot run {:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(failure(what, &out))
    }
}

fn failure(what: &str, out: &Output) -> String {
    format!(
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim(),
        String::from_utf8_lossy(&out.stdout).trim()
    )
}

/// An executable file named `name` in PATH.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `name` in PATH, else in the newest /usr/lib/postgresql/*/bin.
fn find_pg_program(name: &str) -> Option<PathBuf> {
    which(name).or_else(|| {
        let mut dirs: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .filter_map(|e| {
                let version = e.file_name().to_str()?.parse::<u32>().ok()?;
                Some((version, e.path().join("bin")))
            })
            .collect();
        dirs.sort();
        dirs.into_iter()
            .rev()
            .map(|(_, dir)| dir.join(name))
            .find(|p| is_executable(p))
    })
}

/// A server program from the same installation as `initdb` (so versions match), else from anywhere.
fn sibling_program(initdb: &Path, name: &str) -> Result<PathBuf, String> {
    let beside = fs::canonicalize(initdb)
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .filter(|p| is_executable(p));
    beside.or_else(|| find_pg_program(name)).ok_or_else(|| {
        format!("PostgreSQL program {name} not found in PATH or /usr/lib/postgresql/*/bin; {INSTALL_HINT}")
    })
}

fn id(args: &[&str]) -> Result<u32, String> {
    let out = run(
        {
            let mut cmd = Command::new("id");
            cmd.args(args);
            cmd
        },
        &format!("id {}", args.join(" ")),
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .map_err(|e| format!("id {}: unexpected output {text:?}: {e}", args.join(" ")))
}

/// How to run as the cluster's user, and who that is (`None`: ourselves).
fn runner() -> Result<(Runner, Option<ClusterUser>), String> {
    if id(&["-u"])? != 0 {
        return Ok((Runner::Direct, None));
    }
    let user = ClusterUser {
        uid: id(&["-u", "postgres"]).map_err(|e| {
            format!("the tests run as root, so the cluster must run as user postgres, which is missing ({e}); {INSTALL_HINT}")
        })?,
        gid: id(&["-g", "postgres"])?,
    };
    let sbin = |name: &str| {
        which(name).or_else(|| {
            ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
                .iter()
                .map(|d| Path::new(d).join(name))
                .find(|p| is_executable(p))
        })
    };
    let runner = if let Some(runuser) = sbin("runuser") {
        Runner::Runuser { runuser }
    } else if let Some(su) = sbin("su") {
        Runner::Su { su }
    } else {
        return Err("the tests run as root but neither runuser nor su is available to run initdb as user postgres".into());
    };
    Ok((runner, Some(user)))
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("cannot bind 127.0.0.1:0 to find a free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("cannot read the free port: {e}"))
}

fn start() -> Result<PgCluster, String> {
    let started = Instant::now();
    let initdb = find_pg_program("initdb").ok_or_else(|| {
        format!("PostgreSQL server binaries not found (initdb is neither in PATH nor in /usr/lib/postgresql/*/bin); {INSTALL_HINT}")
    })?;
    let pg_ctl = sibling_program(&initdb, "pg_ctl")?;
    sibling_program(&initdb, "postgres")?;
    let psql = which("psql")
        .or_else(|| sibling_program(&initdb, "psql").ok())
        .ok_or_else(|| format!("psql not found; {INSTALL_HINT}"))?;
    let openssl = which("openssl").ok_or(
        "openssl (command-line tool) not found, needed for the server certificate: apt-get install openssl",
    )?;
    let (runner, user) = runner()?;

    let dir = tempfile::Builder::new()
        .prefix("ferry-pg-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?
        .keep();
    let give = |path: &Path| -> Result<(), String> {
        match &user {
            Some(u) => std::os::unix::fs::chown(path, Some(u.uid), Some(u.gid))
                .map_err(|e| format!("cannot chown {} to postgres: {e}", path.display())),
            None => Ok(()),
        }
    };
    give(&dir)?;
    let data = dir.join("data");
    let log = dir.join("server.log");
    let cert = dir.join("server.crt");
    let key = dir.join("server.key");

    // The watchdog comes first, so that even a failed start-up is cleaned away. It runs as us (a process
    // of user postgres could not signal a root process, nor remove the directory if we added files), in
    // its own process group so that Ctrl-C on the tests does not kill it before it has done its job.
    let stop = runner.shell_line(
        &pg_ctl,
        &os_args([&"-D", &data, &"stop", &"-m", &"immediate", &"-s"]),
    );
    let script = format!(
        "read _ignored; {stop} >/dev/null 2>&1; rm -rf {}",
        quote(dir.as_os_str())
    );
    let mut watchdog = Command::new("sh")
        .args(["-c", &script])
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot spawn the watchdog shell: {e}"))?;
    let watchdog = watchdog.stdin.take().expect("piped stdin");

    let pwfile = dir.join("pwfile");
    fs::write(&pwfile, format!("{PASSWORD}\n"))
        .and_then(|()| fs::set_permissions(&pwfile, fs::Permissions::from_mode(0o600)))
        .map_err(|e| format!("cannot write {}: {e}", pwfile.display()))?;
    give(&pwfile)?;

    // The certificate is made while initdb runs.
    let mut req = runner.command(
        &openssl,
        &os_args([
            &"req",
            &"-x509",
            &"-newkey",
            &"rsa:2048",
            &"-nodes",
            &"-subj",
            &"/CN=localhost",
            &"-addext",
            &"subjectAltName=DNS:localhost,IP:127.0.0.1",
            &"-days",
            &"1",
            &"-keyout",
            &key,
            &"-out",
            &cert,
        ]),
    );
    let openssl_run = req
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run openssl: {e}"))?;
    let mut pwfile_arg = OsString::from("--pwfile=");
    pwfile_arg.push(&pwfile);
    let mut init = runner.command(
        &initdb,
        &os_args([
            &"-D",
            &data,
            &"-U",
            &USER,
            &pwfile_arg,
            &"--auth-local=trust",
            &"--auth-host=scram-sha-256",
            &"--no-locale",
            &"--encoding=UTF8",
            &"--no-sync",
            &"--no-instructions",
        ]),
    );
    init.current_dir(&dir);
    let initdb_result = run(init, "initdb");
    let openssl_out = openssl_run
        .wait_with_output()
        .map_err(|e| format!("openssl: {e}"))?;
    initdb_result?;
    if !openssl_out.status.success() {
        return Err(failure(
            "openssl req (self-signed server certificate)",
            &openssl_out,
        ));
    }
    // The server insists: owned by its user, no access for others.
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot chmod {}: {e}", key.display()))?;
    let _ = fs::remove_file(&pwfile);

    let conf = format!(
        "\n# ferry test harness: throwaway cluster\n\
         listen_addresses = '127.0.0.1'\n\
         unix_socket_directories = '{dir}'\n\
         max_connections = 100\n\
         fsync = off\n\
         wal_level = logical\n\
         max_replication_slots = 40\n\
         synchronous_commit = off\n\
         full_page_writes = off\n\
         password_encryption = 'scram-sha-256'\n\
         ssl = on\n\
         ssl_cert_file = '{cert}'\n\
         ssl_key_file = '{key}'\n",
        dir = dir.display(),
        cert = cert.display(),
        key = key.display(),
    );
    fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))
        .and_then(|mut f| f.write_all(conf.as_bytes()))
        .map_err(|e| format!("cannot append to postgresql.conf: {e}"))?;
    fs::write(
        data.join("pg_hba.conf"),
        "# ferry test harness: the socket is trusted, TCP needs the password\n\
         local all all trust\n\
         host  all all 127.0.0.1/32 scram-sha-256\n",
    )
    .map_err(|e| format!("cannot write pg_hba.conf: {e}"))?;

    // The port may be taken between our probe and the server's bind: try a few.
    let mut attempt = 0;
    let port = loop {
        attempt += 1;
        let port = free_port()?;
        let mut ctl = runner.command(
            &pg_ctl,
            &os_args([
                &"-D",
                &data,
                &"-l",
                &log,
                &"-o",
                &format!("-p {port}"),
                &"-w",
                &"-t",
                &"30",
                &"-s",
                &"start",
            ]),
        );
        ctl.current_dir(&dir);
        match run(ctl, "pg_ctl start") {
            Ok(_) => break port,
            Err(e) => {
                let server_log = fs::read_to_string(&log).unwrap_or_default();
                if attempt < 3 && server_log.contains("could not bind") {
                    let _ = fs::remove_file(&log);
                    continue;
                }
                return Err(format!("{e}\nserver log {}:\n{server_log}", log.display()));
            }
        }
    };
    let start_line = runner.shell_line(
        &pg_ctl,
        &os_args([
            &"-D",
            &data,
            &"-l",
            &log,
            &"-o",
            &format!("-p {port}"),
            &"-w",
            &"-t",
            &"30",
            &"-s",
            &"start",
        ]),
    );
    eprintln!(
        "pg harness: PostgreSQL on 127.0.0.1:{port}, data in {}, started in {:.1?}",
        data.display(),
        started.elapsed()
    );
    Ok(PgCluster {
        port,
        dir,
        data,
        cert,
        log,
        psql,
        stop_line: stop,
        start_line,
        databases: AtomicUsize::new(0),
        _watchdog: watchdog,
    })
}

#[test]
fn pg_harness_starts_and_serves_queries() {
    let pg = cluster();
    let a = pg.fresh_database("Harness-Check");
    let b = pg.fresh_database("Harness-Check");
    assert_ne!(a, b);
    let name_a = a.rsplit('/').next().unwrap();
    let name_b = b.rsplit('/').next().unwrap();
    assert!(name_a.starts_with("harness_check_"), "{name_a}");

    let mut client = pg.client(&a);
    let row = client
        .query_one("SELECT current_database(), 1 + 1, current_user", &[])
        .unwrap();
    assert_eq!(row.get::<_, String>(0), name_a);
    assert_eq!(row.get::<_, i32>(1), 2);
    assert_eq!(row.get::<_, String>(2), USER);

    assert_eq!(pg.psql(&b, "SELECT current_database()"), name_b);
    assert_eq!(pg.psql(&b, "SHOW fsync"), "off");
    assert_eq!(pg.psql(&b, "SHOW listen_addresses"), "127.0.0.1");
    assert_eq!(
        pg.psql(
            &b,
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
        ),
        "t"
    );
}

#[test]
fn pg_harness_requires_password() {
    let pg = cluster();
    let wrong = pg
        .url("postgres")
        .replace(&format!(":{PASSWORD}@"), ":wrong-pw@");
    let err = postgres::Client::connect(&wrong, postgres::NoTls)
        .err()
        .expect("a wrong password must be refused");
    assert_eq!(
        err.code(),
        Some(&postgres::error::SqlState::INVALID_PASSWORD),
        "{err}"
    );
    let none = format!("postgres://{USER}@127.0.0.1:{}/postgres", pg.port);
    assert!(postgres::Client::connect(&none, postgres::NoTls).is_err());
    // The right one works.
    pg.client(&pg.url("postgres"));
}

#[test]
fn pg_harness_offers_tls() {
    let pg = cluster();
    let connector = native_tls::TlsConnector::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let tls = postgres_native_tls::MakeTlsConnector::new(connector);
    let url = format!("{}?sslmode=require", pg.url("postgres"));
    let mut client = postgres::Client::connect(&url, tls)
        .unwrap_or_else(|e| panic!("TLS connection to {url} failed: {e}"));
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(ssl);
    // And without TLS, sslmode=require cannot be met.
    assert!(postgres::Client::connect(&url, postgres::NoTls).is_err());
}

#[test]
fn pg_harness_splits_passwords_from_urls() {
    assert_eq!(
        split_password("postgres://u:p%40ss@127.0.0.1:5/db?sslmode=require"),
        (
            "postgres://u@127.0.0.1:5/db?sslmode=require".to_string(),
            Some("p@ss".to_string())
        )
    );
    assert_eq!(
        split_password("postgres://u@h/db"),
        ("postgres://u@h/db".to_string(), None)
    );
}
