//! A real headless Chromium for the web page's tests, driven through chromedriver's W3C WebDriver HTTP
//! API with the blocking HTTP client the tests already use (a dozen commands; no WebDriver crate). A
//! missing Chromium or chromedriver fails the test with an install hint, like missing PostgreSQL does.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::{json, Value};

const INSTALL_HINT: &str = "the web page's tests need Chromium and chromedriver: install them with \
     `apt-get install chromium chromium-driver` (Debian; scripts/test installs them), then run the tests again";

/// The W3C name of an element reference in WebDriver's JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find(names: &[&str], also: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    names
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .chain(also.iter().map(PathBuf::from))
        .find(|p| p.is_file())
}

/// A headless Chromium session, ended (and chromedriver stopped) when dropped.
pub struct Browser {
    driver: Child,
    http: Client,
    session: String,
    _profile: tempfile::TempDir,
    /// Where downloads land.
    pub downloads: tempfile::TempDir,
    /// Where screenshots are saved.
    pub shots: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.http.delete(self.url("")).send();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Browser {
    /// Starts chromedriver and a headless Chromium (no sandbox: the tests may run as root; a private
    /// profile; downloads into a temporary folder). Screenshots go to `<CARGO_TARGET_TMPDIR>/web/<test>`.
    pub fn start(test: &str) -> Browser {
        let chromium = find(
            &["chromium", "chromium-browser", "google-chrome"],
            &["/usr/lib/chromium/chromium"],
        )
        .unwrap_or_else(|| panic!("Chromium not found: {INSTALL_HINT}"));
        let chromedriver = find(&["chromedriver"], &["/usr/lib/chromium/chromedriver"])
            .unwrap_or_else(|| panic!("chromedriver not found: {INSTALL_HINT}"));
        let port = free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e}; {INSTALL_HINT}",
                    chromedriver.display()
                )
            });
        let http = Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        while http
            .get(format!("{base}/status"))
            .send()
            .map_or(true, |r| !r.status().is_success())
        {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "chromedriver did not answer on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().unwrap();
        let downloads = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--no-first-run", "--window-size=1280,900",
                     format!("--user-data-dir={}", profile.path().display())],
            "prefs": {"download.default_directory": downloads.path(),
                      "download.prompt_for_download": false}
        }}}});
        let answer: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .and_then(|r| r.json())
            .expect("a WebDriver session");
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver refused the session: {answer}; {INSTALL_HINT}"))
            .to_owned();
        let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("web")
            .join(test);
        std::fs::create_dir_all(&shots).unwrap();
        let browser = Browser {
            driver,
            http,
            session: format!("{base}/session/{session}"),
            _profile: profile,
            downloads,
            shots,
        };
        // Headless Chromium saves downloads only when told where (the preference alone is not enough).
        browser.command(
            "POST",
            "/goog/cdp/execute",
            json!({"cmd": "Browser.setDownloadBehavior", "params": {
                "behavior": "allow", "downloadPath": browser.downloads.path()}}),
        );
        browser
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.session)
    }

    /// Sends a WebDriver command and returns its `value`; a WebDriver error fails the test.
    pub fn command(&self, method: &str, path: &str, body: Value) -> Value {
        let request = match method {
            "GET" => self.http.get(self.url(path)),
            _ => self.http.post(self.url(path)).json(&body),
        };
        let answer: Value = request
            .send()
            .and_then(|r| r.json())
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let value = answer["value"].clone();
        if let Some(error) = value.get("error") {
            panic!("WebDriver {method} {path}: {error}: {}", value["message"]);
        }
        value
    }

    /// Opens `url`.
    pub fn open(&self, url: &str) {
        self.command("POST", "/url", json!({ "url": url }));
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page and returns its value.
    pub fn js(&self, script: &str, args: Value) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": args}),
        )
    }

    /// Waits (at most `limit`) until `script` returns something truthy, and returns it.
    pub fn wait_for(&self, what: &str, limit: Duration, script: &str, args: Value) -> Value {
        let start = Instant::now();
        loop {
            let value = self.js(script, args.clone());
            let truthy = match &value {
                Value::Null | Value::Bool(false) => false,
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return value;
            }
            if start.elapsed() > limit {
                let notice = self.text("#notice");
                panic!("waited {limit:?} for {what}; the page's notice says {notice:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The element `css` selects (it must exist).
    pub fn element(&self, css: &str) -> String {
        let value = self.command(
            "POST",
            "/element",
            json!({"using": "css selector", "value": css}),
        );
        value[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {value}"))
            .to_owned()
    }

    /// Clicks what `css` selects.
    pub fn click(&self, css: &str) {
        let id = self.element(css);
        self.command("POST", &format!("/element/{id}/click"), json!({}));
    }

    /// Types `text` into what `css` selects (a file input takes a path).
    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.command("POST", &format!("/element/{id}/clear"), json!({}));
        self.command(
            "POST",
            &format!("/element/{id}/value"),
            json!({ "text": text }),
        );
    }

    /// Gives a file input the file at `path`.
    pub fn choose_file(&self, css: &str, path: &Path) {
        let id = self.element(css);
        self.command(
            "POST",
            &format!("/element/{id}/value"),
            json!({ "text": path.display().to_string() }),
        );
    }

    /// Chooses the option of value `value` in the select `css`.
    pub fn select(&self, css: &str, value: &str) {
        let chosen = self.js(
            "const s = document.querySelector(arguments[0]); s.value = arguments[1]; \
             s.dispatchEvent(new Event('change')); return s.value;",
            json!([css, value]),
        );
        assert_eq!(chosen, value, "{css} has no option {value}");
    }

    /// The visible text of what `css` selects ("" when nothing does).
    pub fn text(&self, css: &str) -> String {
        self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';",
            json!([css]),
        )
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Saves a screenshot as `<shots>/<name>.png`, checks that it is not blank, and returns its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        use base64::Engine as _;
        let value = self.command("GET", "/screenshot", Value::Null);
        let png = base64::engine::general_purpose::STANDARD
            .decode(value.as_str().unwrap())
            .unwrap();
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, &png).unwrap();
        assert_not_blank(&png, &path);
        path
    }
}

/// A screenshot is not blank: beside its most common colour, a good share of its pixels have others, in
/// many colours (text, borders, buttons).
fn assert_not_blank(png: &[u8], path: &Path) {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    let step = frame.color_type.samples();
    let mut counts = std::collections::HashMap::<&[u8], usize>::new();
    for pixel in pixels[..frame.buffer_size()].chunks_exact(step) {
        *counts.entry(&pixel[..3.min(step)]).or_default() += 1;
    }
    let total: usize = counts.values().sum();
    let common = counts.values().copied().max().unwrap_or(0);
    assert!(
        counts.len() >= 16 && (total - common) * 100 >= total,
        "{} looks blank: {} colours, {} of {} pixels in the most common one",
        path.display(),
        counts.len(),
        common,
        total
    );
}
