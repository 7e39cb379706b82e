//! Workbooks made by another program (openpyxl, the Python library most .xlsx files from scripts come
//! from; scripts/test installs it) read with the types their cells hold: numbers exact, dates from the
//! cells' formats, empty and merged cells as null, the sheet and header row chosen, errors naming the
//! file, sheet, row and column.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::{ferry, ok};

/// `book.xlsx`: sheet "Sales" with a merged title row, an empty row, the header in row 3, typed cells, a
/// merged range F5:G5 (openpyxl empties G5), an empty row between records and a cell holding an error;
/// sheet "Other" starting in row 2, column B.
fn make_book(dir: &Path) {
    let script = r##"
import datetime, openpyxl
book = openpyxl.Workbook()
sales = book.active
sales.title = "Sales"
sales["A1"] = "Q3 report"
sales.merge_cells("A1:D1")
sales.append([])
sales.append(["id", "amount", "day", "when", "flag", "note", "share"])
sales.append([1, 12.5, datetime.date(2024, 2, 29), datetime.datetime(2024, 5, 1, 10, 30, 15), True, "a", 0.1])
sales.append([2, 12345678901234, None, None, False, "merged", 99])
sales.append([])
sales.append([3, -0.25, datetime.date(1999, 12, 31), datetime.datetime(2000, 1, 1, 0, 0, 1), None, "日本", "#DIV/0!"])
sales.merge_cells("F5:G5")
other = book.create_sheet("Other")
other["B2"] = "name"
other["C2"] = "n"
other["B3"] = "x"
other["C3"] = 7
book.save("book.xlsx")
"##;
    let out = Command::new("python3")
        .args(["-c", script])
        .current_dir(dir)
        .output()
        .expect("python3 runs (scripts/test installs it)");
    assert!(
        out.status.success(),
        "openpyxl failed (scripts/test installs it: python3 -m pip install openpyxl): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

#[test]
fn an_openpyxl_workbook_is_read_with_its_cell_types() {
    let dir = tempfile::tempdir().unwrap();
    make_book(dir.path());
    let out = ferry(
        dir.path(),
        &[
            "convert",
            "book.xlsx",
            "out.ndjson",
            "--header-row",
            "3",
            "--on-error",
            "skip",
            "--rejects",
            "rejects.ndjson",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("read 3 = written 2 + rejected 1"),
        "{stderr}"
    );
    assert_eq!(
        read(dir.path(), "out.ndjson"),
        concat!(
            r#"{"id":1,"amount":12.5,"day":"2024-02-29","when":"2024-05-01T10:30:15","flag":true,"note":"a","share":0.1}"#,
            "\n",
            r#"{"id":2,"amount":12345678901234,"day":null,"when":null,"flag":false,"note":"merged","share":null}"#,
            "\n",
        )
    );
    // The error cell rejects its record, naming the file, sheet, row, column and cell.
    let rejects = read(dir.path(), "rejects.ndjson");
    for part in [
        "book.xlsx, sheet \\\"Sales\\\"",
        "line 7",
        "column 7",
        "field \\\"share\\\"",
        "cell G7 holds the error #DIV/0!",
    ] {
        assert!(rejects.contains(part), "{part} in {rejects}");
    }
}

#[test]
fn strict_reading_stops_at_the_error_cell_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    make_book(dir.path());
    let out = ferry(
        dir.path(),
        &["convert", "book.xlsx", "out.ndjson", "--header-row", "3"],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("book.xlsx, sheet \"Sales\""), "{stderr}");
    assert!(stderr.contains("record 3"), "{stderr}");
    assert!(
        stderr.contains("cell G7 holds the error #DIV/0!"),
        "{stderr}"
    );
}

#[test]
fn the_header_is_the_first_row_with_a_value_and_merged_cells_leave_the_rest_empty() {
    let dir = tempfile::tempdir().unwrap();
    make_book(dir.path());
    // Without --header-row the merged title is the header: its first cell names column A, the other
    // columns are named by their letters.
    ok(&ferry(
        dir.path(),
        &[
            "convert",
            "book.xlsx",
            "out.ndjson",
            "--select",
            "Q3 report,B",
            "--limit",
            "1",
        ],
    ));
    assert_eq!(
        read(dir.path(), "out.ndjson"),
        "{\"Q3 report\":\"id\",\"B\":\"amount\"}\n"
    );
}

#[test]
fn sheet_by_name_or_number_and_headers_lists_the_sheets() {
    let dir = tempfile::tempdir().unwrap();
    make_book(dir.path());
    let stdout = |args: &[&str]| {
        let out = ferry(dir.path(), args);
        ok(&out);
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(stdout(&["headers", "book.xlsx"]), "Sales\nOther\n");
    assert_eq!(
        stdout(&["headers", "book.xlsx", "--sheet", "Other"]),
        "name\nn\n"
    );
    for sheet in ["Other", "2"] {
        ok(&ferry(
            dir.path(),
            &["convert", "book.xlsx", "other.ndjson", "--sheet", sheet],
        ));
        assert_eq!(
            read(dir.path(), "other.ndjson"),
            "{\"name\":\"x\",\"n\":7}\n"
        );
    }
    let missing = ferry(
        dir.path(),
        &["convert", "book.xlsx", "x.ndjson", "--sheet", "Q4"],
    );
    assert_eq!(missing.status.code(), Some(2), "{missing:?}");
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("no sheet has that name"), "{stderr}");
    assert!(stderr.contains("[\"Sales\", \"Other\"]"), "{stderr}");
}

#[test]
fn a_workbook_from_a_pipe_is_spooled() {
    let dir = tempfile::tempdir().unwrap();
    make_book(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "convert",
            "-",
            "-",
            "--from-format",
            "xlsx",
            "--sheet",
            "Other",
        ])
        .args(["--to-format", "ndjson"])
        .current_dir(dir.path())
        .stdin(std::fs::File::open(dir.path().join("book.xlsx")).unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "{\"name\":\"x\",\"n\":7}\n"
    );
}
