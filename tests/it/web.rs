//! The operations page of `ferry serve`, in a real headless Chromium against the real server: sign in
//! (and a wrong token's error), import a CSV, validate, export split parts and download them, templates,
//! and a large import watched and cancelled. Screenshots of each view are saved under
//! `<CARGO_TARGET_TMPDIR>/web/<test>/` and checked not blank.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::browser::Browser;
use crate::serve::{config, fixture, fixture_with, notes, sha256_hex, sqlite_count};

const WAIT: Duration = Duration::from_secs(30);

fn sign_in(b: &Browser, token: &str) {
    b.type_into("#token", token);
    b.click("#signin-form button[type=submit]");
    b.wait_for(
        "the signed-in views",
        WAIT,
        "return !document.getElementById('nav').hidden && !document.getElementById('operations').hidden;",
        json!([]),
    );
}

/// The operation id the page says it started in `#where`.
fn started_id(b: &Browser, what: &str, place: &str) -> String {
    b.wait_for(
        what,
        WAIT,
        "const e = document.querySelector(arguments[0] + ' strong'); return e ? e.textContent : '';",
        json!([place]),
    )
    .as_str()
    .unwrap()
    .to_owned()
}

/// Waits until the history table has the operation in `state`; returns the row's cells' text.
fn history_row(b: &Browser, id: &str, state: &str) -> Vec<String> {
    let row = b.wait_for(
        &format!("{id} {state} in the history"),
        Duration::from_secs(60),
        "const r = document.querySelector(`#history tr[data-id=\"${arguments[0]}\"]`);
         if (!r) return null;
         const cells = [...r.cells].map((c) => c.innerText);
         return cells[3] === arguments[1] ? cells : null;",
        json!([id, state]),
    );
    serde_json::from_value(row).unwrap()
}

/// Waits for the report of `id` in `state`.
fn report(b: &Browser, id: &str, state: &str) {
    b.wait_for(
        &format!("the report of {id}, {state}"),
        Duration::from_secs(60),
        "const r = document.getElementById('report');
         return !r.hidden && r.dataset.id === arguments[0] && r.dataset.status === arguments[1];",
        json!([id, state]),
    );
}

fn field(b: &Browser, name: &str) -> String {
    b.text(&format!("#report-fields dd[data-field=\"{name}\"]"))
}

/// Waits until the download folder holds `name`, complete.
fn downloaded(dir: &Path, name: &str) -> Vec<u8> {
    let path = dir.join(name);
    let start = std::time::Instant::now();
    loop {
        let partial = crate::support::file_names(dir)
            .iter()
            .any(|n| n.ends_with(".crdownload"));
        if path.is_file() && !partial {
            return std::fs::read(&path).unwrap();
        }
        assert!(
            start.elapsed() < WAIT,
            "{name} was not downloaded: the folder has {:?}",
            crate::support::file_names(dir)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn web_page_signs_in_imports_validates_exports_downloads_and_adds_templates() {
    let f = fixture("max_upload_size: 4KiB\n");
    let s = &f.server;
    let b =
        Browser::start("web_page_signs_in_imports_validates_exports_downloads_and_adds_templates");
    b.open(&s.url("/"));
    b.wait_for(
        "the sign-in form",
        WAIT,
        "return document.activeElement && document.activeElement.id === 'token';",
        json!([]),
    );
    b.screenshot("sign-in");

    // A wrong token: the sign-in error says so in words; nothing is kept.
    b.type_into("#token", "fy_not-a-token");
    b.click("#signin-form button[type=submit]");
    let error = b
        .wait_for(
            "the sign-in error",
            WAIT,
            "const e = document.getElementById('signin-error'); return e.hidden ? '' : e.innerText;",
            json!([]),
        )
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        error.contains("token was refused (401 unauthorized)"),
        "{error}"
    );
    assert_eq!(b.js("return sessionStorage.length;", json!([])), json!(0));
    b.screenshot("sign-in-error");

    // Sign in: the token is kept in the tab's session storage only.
    sign_in(&b, &f.mover);
    assert_eq!(
        b.js("return sessionStorage.getItem('ferry-token');", json!([])),
        json!(f.mover)
    );
    b.wait_for(
        "the empty history",
        WAIT,
        "return document.getElementById('page').innerText === 'no operations';",
        json!([]),
    );

    // Import a CSV through the form: it reaches succeeded with the right counts.
    b.click("nav button[data-view=start]");
    let legacy = crate::support::root().join("samples/legacy.csv");
    b.choose_file("#import-file", &legacy);
    b.select("#import-dataset", "contexts");
    b.screenshot("start");
    b.click("#import-submit");
    let id = started_id(&b, "the import's id", "#import-result");
    assert_eq!(
        b.js(
            "return document.getElementById('upload-progress').value;",
            json!([])
        ),
        json!(100)
    );
    b.click("nav button[data-view=operations]");
    let row = history_row(&b, &id, "succeeded");
    assert_eq!(row[1], "import");
    assert_eq!(row[2], "contexts");
    assert_eq!(row[4], "6 = 6 + 0 + 0 + 0");
    report(&b, &id, "succeeded");
    assert_eq!(field(&b, "Table"), "inserted 6, updated 0");
    assert_eq!(field(&b, "File"), "legacy.csv");
    let raw: Value = serde_json::from_str(
        b.js(
            "return document.getElementById('report-json').textContent;",
            json!([]),
        )
        .as_str()
        .unwrap(),
    )
    .unwrap();
    assert_eq!(raw["operationId"], id.as_str());
    assert_eq!(raw["counts"]["written"], 6);
    assert_eq!(sqlite_count(&f.dir.path().join("app.db"), "contexts"), 6);
    b.screenshot("operations");

    // Validate only: every bad record with its field and reason; nothing written.
    let bad = tempfile::tempdir().unwrap();
    let mut csv = std::fs::read(&legacy).unwrap();
    csv.extend_from_slice(b"1099,,no title,note,,01/01/2020 10:00\n");
    let bad_csv = bad.path().join("bad.csv");
    std::fs::write(&bad_csv, csv).unwrap();
    b.click("nav button[data-view=start]");
    b.choose_file("#import-file", &bad_csv);
    b.click("#validate-submit");
    b.wait_for(
        "the bad records",
        WAIT,
        "return document.querySelectorAll('#bad-records tbody tr').length === 1;",
        json!([]),
    );
    assert!(
        b.text("#import-result")
            .contains("1 of 7 records are not valid"),
        "{}",
        b.text("#import-result")
    );
    let cells: Vec<String> = serde_json::from_value(b.js(
        "return [...document.querySelectorAll('#bad-records tbody td')].map((c) => c.innerText);",
        json!([]),
    ))
    .unwrap();
    assert_eq!(cells[0], "7", "{cells:?}");
    assert!(cells[3].contains("bad.csv"), "the reason: {cells:?}");
    assert_eq!(sqlite_count(&f.dir.path().join("app.db"), "contexts"), 6);
    b.screenshot("validate");

    // Too large an upload: the 413 is shown in words.
    let huge = bad.path().join("huge.ndjson");
    std::fs::write(&huge, notes(1, 30_000, None)).unwrap();
    b.choose_file("#import-file", &huge);
    b.click("#import-submit");
    let notice = b
        .wait_for(
            "the 413 notice",
            WAIT,
            "const n = document.getElementById('notice'); return n.hidden ? '' : n.innerText;",
            json!([]),
        )
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        notice.contains("larger than this server accepts (413 payload_too_large)"),
        "{notice}"
    );

    // Export in parts, then download every file from the report and check it against the manifest.
    b.select("#export-dataset", "contexts");
    b.select("#export-format", "ndjson");
    b.type_into("#export-split", "1024");
    b.click("#export-submit");
    let export = started_id(&b, "the export's id", "#export-result");
    b.click("nav button[data-view=operations]");
    report(&b, &export, "succeeded");
    let files: Vec<Value> = serde_json::from_value(b.js(
        "return [...document.querySelectorAll('#files tbody tr')].map((r) =>
           ({name: r.dataset.name, role: r.cells[1].innerText, sha256: r.cells[3].innerText}));",
        json!([]),
    ))
    .unwrap();
    assert!(files.len() >= 3, "parts and a manifest: {files:?}");
    assert_eq!(files.last().unwrap()["role"], "manifest");
    for file in &files {
        let name = file["name"].as_str().unwrap();
        b.click(&format!("#files tr[data-name=\"{name}\"] button"));
        let bytes = downloaded(b.downloads.path(), name);
        assert_eq!(
            sha256_hex(&bytes),
            file["sha256"].as_str().unwrap(),
            "{name}"
        );
    }
    let manifest_name = files.last().unwrap()["name"].as_str().unwrap();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(b.downloads.path().join(manifest_name)).unwrap())
            .unwrap();
    let parts = manifest["parts"].as_array().unwrap();
    assert_eq!(parts.len(), files.len() - 1);
    let mut records = 0;
    for part in parts {
        let bytes = std::fs::read(b.downloads.path().join(part["file"].as_str().unwrap())).unwrap();
        assert_eq!(sha256_hex(&bytes), part["sha256"].as_str().unwrap());
        assert_eq!(bytes.len() as u64, part["bytes"].as_u64().unwrap());
        records += bytes.iter().filter(|&&c| c == b'\n').count();
    }
    assert_eq!(records, 6);
    assert_eq!(manifest["total_records"], 6);
    b.screenshot("report");

    // History filters: only the export is an export.
    b.select("#history-filters select[name=type]", "export");
    b.click("#history-filters button[type=submit]");
    b.wait_for(
        "the filtered history",
        WAIT,
        "return document.querySelectorAll('#history tbody tr').length === 1;",
        json!([]),
    );
    assert!(b.text("#history tbody").contains(&export));

    // This token may not add templates: the 403 is shown in words.
    let bad_template = bad.path().join("broken.yaml");
    std::fs::write(
        &bad_template,
        "name: broken\nversion: 1\nfields:\n  - name: a\n    from: a\n    transforms: [no_such_transform]\n",
    )
    .unwrap();
    b.click("nav button[data-view=templates]");
    b.choose_file("#template-file", &bad_template);
    b.click("#template-form button[type=submit]");
    let notice = b
        .wait_for(
            "the 403 notice",
            WAIT,
            "const n = document.getElementById('notice'); return n.hidden ? '' : n.innerText;",
            json!([]),
        )
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        notice.contains("not allowed to do that (403 forbidden)"),
        "{notice}"
    );

    // Sign out drops the token; an admin signs in and adds the template: its problem is shown at its line.
    b.click("#sign-out");
    assert_eq!(b.js("return sessionStorage.length;", json!([])), json!(0));
    // Nothing the last token could see stays on the page.
    assert_eq!(b.text("#history tbody"), "");
    assert_eq!(
        b.js(
            "return document.getElementById('template-list').children.length;",
            json!([])
        ),
        json!(0)
    );
    assert!(!b
        .js(
            "return document.getElementById('signin').hidden;",
            json!([])
        )
        .as_bool()
        .unwrap());
    sign_in(&b, &f.admin);
    b.click("nav button[data-view=templates]");
    b.wait_for(
        "the template list",
        WAIT,
        "return document.getElementById('template-list').innerText.includes('std-context');",
        json!([]),
    );
    b.click("#template-list button");
    b.wait_for(
        "a template's YAML and fields",
        WAIT,
        "return document.querySelectorAll('#template-view .yaml li').length > 5 &&
                document.querySelectorAll('#template-view table tbody tr').length > 0;",
        json!([]),
    );
    b.screenshot("templates");
    b.choose_file("#template-file", &bad_template);
    b.click("#template-form button[type=submit]");
    let problem = b.wait_for(
        "the template's problem at its line",
        WAIT,
        "const p = document.querySelector('#template-view li.problem');
         return p ? [p.dataset.problemLine, p.innerText] : null;",
        json!([]),
    );
    assert_eq!(problem[0], "6", "{problem}");
    assert!(
        problem[1].as_str().unwrap().contains("no_such_transform"),
        "{problem}"
    );
    assert!(b.text("#template-result").contains("was not stored"));
    b.screenshot("template-problem");

    // At phone width the page still fits: nothing wider than the screen but the scrolling tables.
    b.command("POST", "/window/rect", json!({"width": 390, "height": 844}));
    b.click("nav button[data-view=operations]");
    b.screenshot("phone");
    let widths = b.js(
        "const wide = [...document.querySelectorAll('body *')]
           .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1 && !e.closest('.scroll'))
           .map((e) => e.tagName + '#' + e.id + '.' + e.className);
         return [document.documentElement.scrollWidth, window.innerWidth, wide.slice(0, 5)];",
        json!([]),
    );
    assert!(
        widths[0].as_u64() <= widths[1].as_u64(),
        "the page is wider than a phone: {widths}"
    );
}

#[test]
fn web_page_watches_a_large_import_and_cancels_it() {
    let f = fixture_with(|pg| {
        config(pg, "").replace("max_concurrent_jobs: 2", "max_concurrent_jobs: 1")
    });
    let s = &f.server;
    let db = f.dir.path().join("app.db");
    let (status, op) = s.upload(
        &f.mover,
        "/api/data-migration/import?wait=60",
        "first.ndjson",
        notes(1, 100, None),
        "notes",
        &json!({}),
    );
    assert_eq!(status, 200, "{op:#}");
    let input = tempfile::tempdir().unwrap();
    let big = input.path().join("big.ndjson");
    std::fs::write(&big, notes(1000, 500_000, None)).unwrap();

    let b = Browser::start("web_page_watches_a_large_import_and_cancels_it");
    b.open(&s.url("/"));
    sign_in(&b, &f.mover);
    b.click("nav button[data-view=start]");
    b.choose_file("#import-file", &big);
    b.select("#import-dataset", "notes");
    b.type_into("#import-batch", "500");
    b.click("#import-submit");
    let id = started_id(&b, "the large import's id", "#import-result");
    b.click("nav button[data-view=operations]");

    // The bar moves: two different readings between 0 and 100.
    let progress = "const r = document.querySelector(`#active tr[data-id=\"${arguments[0]}\"]`);
                    const p = r && r.querySelector('progress');
                    return p && p.hasAttribute('value') && p.value > 0 && p.value < 100 ? p.value : null;";
    let first = b
        .wait_for("the bar to start", WAIT, progress, json!([id]))
        .as_f64()
        .unwrap();
    let second = b
        .wait_for(
            "the bar to move",
            WAIT,
            &format!("const v = (() => {{ {progress} }})(); return v !== null && v > arguments[1] ? v : null;"),
            json!([id, first]),
        )
        .as_f64()
        .unwrap();
    assert!(second > first && second < 100.0, "{first} then {second}");
    let row = b.text(&format!("#active tr[data-id=\"{id}\"]"));
    assert!(
        row.contains("running") && row.contains("/s"),
        "state and rate: {row}"
    );
    b.screenshot("active");

    // Cancel, confirmed in a dialog: the row shows cancelling, then cancelled.
    b.click(&format!("#active tr[data-id=\"{id}\"] button[data-cancel]"));
    assert!(b.text("#confirm-text").contains(&id));
    b.screenshot("cancel-dialog");
    b.click("#confirm-yes");
    let states = b.wait_for(
        "cancelled",
        Duration::from_secs(60),
        "const r = document.querySelector(`#active tr[data-id=\"${arguments[0]}\"]`);
         return r && r.dataset.states.endsWith('cancelled') ? r.dataset.states : null;",
        json!([id]),
    );
    assert!(
        states
            .as_str()
            .unwrap()
            .ends_with("running cancelling cancelled"),
        "{states}"
    );
    let row = history_row(&b, &id, "cancelled");
    let read: u64 = row[4]
        .split(' ')
        .next()
        .unwrap()
        .replace(',', "")
        .parse()
        .unwrap();
    assert!(read > 0 && read < 500_000, "it stopped part-way: {row:?}");
    // The table is as it was.
    assert_eq!(sqlite_count(&db, "notes"), 100);
    b.screenshot("cancelled");
}

#[test]
fn web_page_is_served_without_a_token_from_the_binary_with_a_strict_policy() {
    let f = fixture("");
    let s = &f.server;
    let mut sources = Vec::new();
    for (path, kind) in [
        ("/", "text/html"),
        ("/web/app.js", "text/javascript"),
        ("/web/app.css", "text/css"),
    ] {
        let r = s.http.get(s.url(path)).send().unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        let headers = r.headers().clone();
        assert!(
            headers["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        let policy = headers["content-security-policy"].to_str().unwrap();
        assert!(
            policy.contains("default-src 'none'") && policy.contains("connect-src 'self'"),
            "{policy}"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff");
        sources.push(r.text().unwrap());
    }
    // Nothing from another origin: no CDN, works offline.
    for text in &sources {
        assert!(!text.contains("http://") && !text.contains("https://") && !text.contains("//cdn"));
    }
    assert!(sources[0].contains(r#"<script src="/web/app.js" defer></script>"#));
    // The page reaches the API with the token, as any client does: without one the API still says 401.
    let r = s
        .http
        .get(s.url("/api/data-migration/operations/active"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}
