//! Generates an awkward legacy CSV export for benchmarks (`scripts/bench`).
//!
//! ```text
//! cargo run --release --example gen_legacy_csv -- 1000000 bench-data/legacy-1m.csv
//! ```
//!
//! The output is deterministic: the same row count always gives the same bytes (a fixed-seed xorshift
//! generator, no extra crates). Columns are shaped like the legacy export ferry's templates map:
//! `legacy_id,legacy_title,legacy_body,legacy_category,legacy_keywords,old_created,legacy_views,legacy_score`,
//! with `old_created` as `MM/DD/YYYY HH:MM`. The content is awkward on purpose: quoted fields with embedded
//! commas and doubled quotes, embedded newlines (CRLF and LF) in some rows, non-ASCII text (accents, CJK,
//! emoji), leading and trailing spaces, and empty cells. Rows average roughly 200–250 bytes.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

/// xorshift64*: tiny, fast, and good enough to pick words.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const WORDS: &[&str] = &[
    "legacy",
    "export",
    "customer",
    "order",
    "invoice",
    "report",
    "quarterly",
    "migration",
    "archive",
    "record",
    "shipment",
    "warehouse",
    "account",
    "ledger",
    "balance",
    "payment",
    "refund",
    "contract",
    "supplier",
    "inventory",
    "audit",
    "review",
    "status",
    "pending",
    "approved",
    "note",
    "update",
    "system",
    "database",
    "field",
    "value",
    "total",
    "region",
    "branch",
    "office",
    "manager",
];

const ODD_WORDS: &[&str] = &[
    "café",
    "naïve",
    "Zürich",
    "São Paulo",
    "Ångström",
    "façade",
    "résumé",
    "Łódź",
    "Ελλάδα",
    "Москва",
    "東京",
    "数据迁移",
    "한국어",
    "日本語のテキスト",
    "🚀",
    "✅ done",
    "emoji 🎉🎉",
    "½ price",
    "€100",
    "“smart quotes”",
];

const CATEGORIES: &[&str] = &[
    "Finance",
    "Operations",
    "Sales, EMEA",
    "Support",
    "R&D",
    "Logistics / Shipping",
    "Marketing \"Q4\"",
    "Ressources humaines",
    "物流",
    "",
];

/// Appends `n` words, sprinkled with awkward content.
fn words(rng: &mut Rng, out: &mut String, n: usize) {
    for i in 0..n {
        if i > 0 {
            match rng.below(40) {
                0 => out.push_str(", "),
                1 => out.push_str("; "),
                2 if n > 6 && rng.chance(30) => {
                    out.push_str(if rng.chance(50) { "\n" } else { "\r\n" })
                }
                _ => out.push(' '),
            }
        }
        match rng.below(20) {
            0 => out.push_str(rng.pick(ODD_WORDS)),
            1 => {
                out.push('"');
                out.push_str(rng.pick(WORDS));
                out.push('"');
            }
            2 => out.push_str(&rng.below(100_000).to_string()),
            _ => out.push_str(rng.pick(WORDS)),
        }
    }
}

/// Appends `cell` to `line` as a CSV field, quoting it when it needs quotes (and sometimes when it does not,
/// as legacy exporters do).
fn push_cell(rng: &mut Rng, line: &mut String, cell: &str) {
    let needs =
        cell.contains([',', '"', '\n', '\r']) || cell.starts_with(' ') || cell.ends_with(' ');
    if needs || rng.chance(10) {
        line.push('"');
        line.push_str(&cell.replace('"', "\"\""));
        line.push('"');
    } else {
        line.push_str(cell);
    }
}

fn row(rng: &mut Rng, id: u64, line: &mut String) {
    let mut cell = String::with_capacity(256);
    // legacy_id: sometimes zero-padded, sometimes with spaces around it.
    cell.clear();
    match rng.below(10) {
        0 => cell.push_str(&format!("{id:010}")),
        1 => cell.push_str(&format!(" {id} ")),
        _ => cell.push_str(&id.to_string()),
    }
    push_cell(rng, line, &cell);

    // legacy_title: a few words, now and then with leading/trailing spaces.
    line.push(',');
    cell.clear();
    if rng.chance(5) {
        cell.push_str("  ");
    }
    let n = 2 + rng.below(5) as usize;
    words(rng, &mut cell, n);
    if rng.chance(5) {
        cell.push_str("   ");
    }
    push_cell(rng, line, &cell);

    // legacy_body: the long one, empty in a few rows, multi-line in some.
    line.push(',');
    cell.clear();
    if !rng.chance(4) {
        let n = 8 + rng.below(16) as usize;
        words(rng, &mut cell, n);
    }
    push_cell(rng, line, &cell);

    // legacy_category
    line.push(',');
    cell.clear();
    cell.push_str(rng.pick(CATEGORIES));
    push_cell(rng, line, &cell);

    // legacy_keywords: a comma- or pipe-separated list in one cell.
    line.push(',');
    cell.clear();
    let k = rng.below(5);
    let joiner = if rng.chance(50) { "," } else { "|" };
    for i in 0..k {
        if i > 0 {
            cell.push_str(joiner);
        }
        cell.push_str(if rng.chance(10) {
            rng.pick(ODD_WORDS)
        } else {
            rng.pick(WORDS)
        });
    }
    push_cell(rng, line, &cell);

    // old_created: MM/DD/YYYY HH:MM, empty in a few rows.
    line.push(',');
    cell.clear();
    if !rng.chance(2) {
        let (m, d, y) = (1 + rng.below(12), 1 + rng.below(28), 1995 + rng.below(30));
        let (h, min) = (rng.below(24), rng.below(60));
        cell.push_str(&format!("{m:02}/{d:02}/{y} {h:02}:{min:02}"));
    }
    push_cell(rng, line, &cell);

    // legacy_views: an integer, sometimes empty.
    line.push(',');
    cell.clear();
    if !rng.chance(5) {
        cell.push_str(&rng.below(1_000_000).to_string());
    }
    push_cell(rng, line, &cell);

    // legacy_score: a decimal, sometimes with a decimal comma (hence quoted), sometimes empty.
    line.push(',');
    cell.clear();
    match rng.below(20) {
        0 => {}
        1 => cell.push_str(&format!("{},{:02}", rng.below(100), rng.below(100))),
        _ => cell.push_str(&format!("{}.{:02}", rng.below(100), rng.below(100))),
    }
    push_cell(rng, line, &cell);

    line.push_str("\r\n");
}

fn generate(rows: u64, path: &str) -> io::Result<u64> {
    let file = File::create(path)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let header = "legacy_id,legacy_title,legacy_body,legacy_category,legacy_keywords,old_created,legacy_views,legacy_score\r\n";
    out.write_all(header.as_bytes())?;
    let mut bytes = header.len() as u64;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut line = String::with_capacity(1024);
    for id in 1..=rows {
        line.clear();
        row(&mut rng, id, &mut line);
        out.write_all(line.as_bytes())?;
        bytes += line.len() as u64;
    }
    out.flush()?;
    Ok(bytes)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (rows, path) = match args.as_slice() {
        [rows, path] => match rows.replace('_', "").parse::<u64>() {
            Ok(rows) => (rows, path.as_str()),
            Err(_) => {
                eprintln!("gen_legacy_csv: ROWS must be a whole number, got {rows:?}");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("usage: gen_legacy_csv ROWS OUTPUT.csv");
            return ExitCode::from(2);
        }
    };
    match generate(rows, path) {
        Ok(bytes) => {
            eprintln!(
                "gen_legacy_csv: wrote {rows} rows, {bytes} bytes ({:.0} bytes/row) to {path}",
                bytes as f64 / rows.max(1) as f64
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gen_legacy_csv: cannot write {path}: {e}");
            ExitCode::from(1)
        }
    }
}
