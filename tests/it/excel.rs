//! Workbooks made by other programs (openpyxl, the Python library most .xlsx files from scripts come
//! from; xlwt for Excel 97–2003 .xls and odfpy for OpenDocument .ods; scripts/test installs the three) read with the types their cells hold: numbers exact, dates from the
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
    python(dir, script, "openpyxl");
}

/// Runs a Python script that makes workbooks with `modules` (which scripts/test installs) in `dir`.
fn python(dir: &Path, script: &str, modules: &str) {
    let out = Command::new("python3")
        .args(["-c", script])
        .current_dir(dir)
        .output()
        .expect("python3 runs (scripts/test installs it)");
    assert!(
        out.status.success(),
        "{modules} failed (scripts/test installs it: python3 -m pip install {modules}): {}",
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

/// `book.xls` (xlwt, Excel 97–2003) and `book.ods` (odfpy, OpenDocument) with the same cells: numbers,
/// dates and a date-time from their cell formats (xls) or value types (ods), booleans, text, empty cells;
/// sheet "Other" second, sheet "Empty" (a header and no rows) third.
fn make_xls_and_ods(dir: &Path) {
    let script = r##"
import datetime, xlwt
book = xlwt.Workbook()
s = book.add_sheet("Sales")
date_fmt = xlwt.easyxf(num_format_str="YYYY-MM-DD")
time_fmt = xlwt.easyxf(num_format_str="YYYY-MM-DD HH:MM:SS")
for c, h in enumerate(["id", "amount", "day", "when", "flag", "note"]):
    s.write(0, c, h)
s.write(1, 0, 1); s.write(1, 1, 12.5); s.write(1, 2, datetime.date(2024, 2, 29), date_fmt)
s.write(1, 3, datetime.datetime(2024, 5, 1, 10, 30, 15), time_fmt); s.write(1, 4, True); s.write(1, 5, "a")
s.write(2, 0, 2); s.write(2, 1, 12345678901234); s.write(2, 4, False); s.write(2, 5, "日本")
s.write(3, 0, 3); s.write(3, 1, -0.25); s.write(3, 2, datetime.date(1999, 12, 31), date_fmt)
o = book.add_sheet("Other")
o.write(0, 0, "name"); o.write(0, 1, "n"); o.write(1, 0, "x"); o.write(1, 1, 7)
e = book.add_sheet("Empty")
e.write(0, 0, "only"); e.write(0, 1, "header")
book.save("book.xls")

from odf.opendocument import OpenDocumentSpreadsheet
from odf.table import Table, TableRow, TableCell
from odf.text import P
doc = OpenDocumentSpreadsheet()
def cell(value=None, kind=None, text=None):
    if value is None:
        return TableCell()
    attrs = {"valuetype": kind}
    if kind == "float":
        attrs["value"] = value
    elif kind == "date":
        attrs["datevalue"] = value
    elif kind == "boolean":
        attrs["booleanvalue"] = value
    c = TableCell(**attrs)
    c.addElement(P(text=text if text is not None else str(value)))
    return c
def sheet(name, rows):
    t = Table(name=name)
    for r in rows:
        tr = TableRow()
        for c in r:
            tr.addElement(c)
        t.addElement(tr)
    doc.spreadsheet.addElement(t)
sheet("Sales", [
    [cell("id", "string"), cell("amount", "string"), cell("day", "string"), cell("when", "string"), cell("flag", "string"), cell("note", "string")],
    [cell("1", "float"), cell("12.5", "float"), cell("2024-02-29", "date"), cell("2024-05-01T10:30:15", "date"), cell("true", "boolean", "TRUE"), cell("a", "string")],
    [cell("2", "float"), cell("12345678901234", "float"), cell(), cell(), cell("false", "boolean", "FALSE"), cell("日本", "string")],
    [cell("3", "float"), cell("-0.25", "float"), cell("1999-12-31", "date"), cell(), cell(), cell()],
])
sheet("Other", [[cell("name", "string"), cell("n", "string")], [cell("x", "string"), cell("7", "float")]])
sheet("Empty", [[cell("only", "string"), cell("header", "string")]])
doc.save("book.ods")
"##;
    python(dir, script, "xlwt odfpy");
}

#[test]
fn xls_and_ods_workbooks_from_xlwt_and_odfpy_are_read_with_their_cell_types() {
    let dir = tempfile::tempdir().unwrap();
    make_xls_and_ods(dir.path());
    let stdout = |args: &[&str]| {
        let out = ferry(dir.path(), args);
        ok(&out);
        String::from_utf8(out.stdout).unwrap()
    };
    for book in ["book.xls", "book.ods"] {
        assert_eq!(
            stdout(&["convert", book, "-", "--to-format", "ndjson", "-q"]),
            concat!(
                r#"{"id":1,"amount":12.5,"day":"2024-02-29","when":"2024-05-01T10:30:15","flag":true,"note":"a"}"#,
                "\n",
                r#"{"id":2,"amount":12345678901234,"day":null,"when":null,"flag":false,"note":"日本"}"#,
                "\n",
                r#"{"id":3,"amount":-0.25,"day":"1999-12-31","when":null,"flag":null,"note":null}"#,
                "\n",
            ),
            "{book}"
        );
        assert_eq!(
            stdout(&["headers", book]),
            "Sales\nOther\nEmpty\n",
            "{book}"
        );
        assert_eq!(
            stdout(&["headers", book, "--sheet", "Other"]),
            "name\nn\n",
            "{book}"
        );
        for sheet in ["Other", "2"] {
            assert_eq!(
                stdout(&[
                    "convert",
                    book,
                    "-",
                    "--to-format",
                    "ndjson",
                    "-q",
                    "--sheet",
                    sheet
                ]),
                "{\"name\":\"x\",\"n\":7}\n",
                "{book} sheet {sheet}"
            );
        }
        // The types survive into a typed format: DuckDB sees a date, a timestamp and a boolean column.
        let parquet = format!("{book}.parquet");
        ok(&ferry(dir.path(), &["convert", book, &parquet]));
        let described = crate::parquet::duckdb(
            dir.path(),
            &format!(
                "print(' '.join(f'{{c[0]}}:{{c[1]}}' for c in duckdb.sql(\"DESCRIBE SELECT * FROM '{parquet}'\").fetchall()))"
            ),
        );
        assert_eq!(
            described.trim(),
            "id:BIGINT amount:VARCHAR day:DATE when:TIMESTAMP flag:BOOLEAN note:VARCHAR",
            "{book}"
        );
        // A sheet of a header only is a Parquet file of its columns and no rows.
        ok(&ferry(
            dir.path(),
            &["convert", book, "empty.parquet", "--sheet", "Empty"],
        ));
        let described = crate::parquet::duckdb(
            dir.path(),
            "print(duckdb.sql(\"SELECT count(*) FROM 'empty.parquet'\").fetchall()[0][0], ' '.join(c[0] for c in duckdb.sql(\"DESCRIBE SELECT * FROM 'empty.parquet'\").fetchall()))",
        );
        assert_eq!(described.trim(), "0 only header", "{book}");
    }
}
