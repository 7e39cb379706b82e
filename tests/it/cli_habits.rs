//! The command line's habits: every example in every `--help` is a shell-correct command that ferry's own
//! parser accepts, and fits a terminal so that wrapping never breaks one; completion scripts and man pages
//! are generated from the same definition (the bash one passes `bash -n`); `--progress` alone and the
//! positional `ferry convert IN OUT` work; a sorted run larger than its memory spills and still sorts.

use std::fs;

use clap::{CommandFactory as _, Parser as _};

use crate::support::{ferry, ok};

/// Every command's help text after its options, with the command's name path.
fn after_helps() -> Vec<(String, String)> {
    fn walk(command: &clap::Command, path: &str, out: &mut Vec<(String, String)>) {
        if let Some(text) = command.get_after_help() {
            out.push((path.to_owned(), text.to_string()));
        }
        for sub in command.get_subcommands() {
            walk(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }
    let mut out = Vec::new();
    walk(&ferry::cli::Cli::command(), "ferry", &mut out);
    out
}

/// The example command lines of a help text: lines that run ferry, with `\` continuations joined.
fn examples(text: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut current = String::new();
    for raw in text.lines() {
        // Examples are indented; prose (which may mention ferry) is not.
        if current.is_empty() && (!raw.starts_with("  ") || !raw.contains("ferry ")) {
            continue;
        }
        let line = raw.trim();
        if line.starts_with('#') {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(start) => {
                current.push_str(start.trim_end());
                current.push(' ');
            }
            None => {
                current.push_str(line);
                commands.push(std::mem::take(&mut current));
            }
        }
    }
    commands
        .into_iter()
        .filter(|c| c.split_whitespace().any(|w| w == "ferry"))
        .collect()
}

/// The ferry invocation in a shell command line: the words from `ferry` up to a pipe, `&&` or redirection.
fn ferry_words(words: &[String]) -> Option<Vec<String>> {
    let start = words.iter().position(|w| w == "ferry")?;
    Some(
        words[start..]
            .iter()
            .take_while(|w| !["|", "&&", ">", ">>", "<"].contains(&w.as_str()))
            .cloned()
            .collect(),
    )
}

#[test]
fn every_help_example_is_a_shell_correct_command_ferry_accepts() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for (command, text) in after_helps() {
        for line in text.lines() {
            if line.chars().count() > 80 {
                failures.push(format!(
                    "{command}: a help line longer than 80 columns would be wrapped: {line:?}"
                ));
            }
        }
        for example in examples(&text) {
            let words = match shell_words::split(&example) {
                Ok(words) => words,
                Err(e) => {
                    failures.push(format!("{command}: not shell-correct ({e}): {example}"));
                    continue;
                }
            };
            // A pipe or redirection must stand as its own word to be one.
            let Some(args) = ferry_words(&words) else {
                failures.push(format!("{command}: no ferry command in: {example}"));
                continue;
            };
            if let Err(e) = ferry::cli::Cli::try_parse_from(&args) {
                failures.push(format!("{command}: ferry refuses {args:?}: {e}"));
            }
            checked += 1;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked >= 40, "only {checked} examples found");
}

#[test]
fn help_examples_are_split_as_a_shell_splits_them() {
    let text = "Examples:\n  # a comment\n  ferry convert a.csv \\\n    'sqlite://x.db?table=t' --where 'n > 1' | head\n";
    let found = examples(text);
    assert_eq!(
        found,
        ["ferry convert a.csv 'sqlite://x.db?table=t' --where 'n > 1' | head"]
    );
    let words = shell_words::split(&found[0]).unwrap();
    assert_eq!(
        ferry_words(&words).unwrap(),
        [
            "ferry",
            "convert",
            "a.csv",
            "sqlite://x.db?table=t",
            "--where",
            "n > 1"
        ]
    );
}

#[test]
fn completions_and_man_pages_are_generated() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = ferry(d, &["completions", shell]);
        ok(&out);
        let script = String::from_utf8(out.stdout).unwrap();
        for word in ["convert", "describe", "null-marker"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
        if shell == "bash" {
            fs::write(d.join("ferry.bash"), &script).unwrap();
            let status = std::process::Command::new("bash")
                .args(["-n", "ferry.bash"])
                .current_dir(d)
                .status()
                .unwrap();
            assert!(status.success(), "bash -n rejects the completion script");
        }
    }
    let out = ferry(d, &["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    let out = ferry(d, &["man"]);
    ok(&out);
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(
        page.starts_with(".ie") && page.contains(".TH ferry 1"),
        "{page}"
    );
    ok(&ferry(d, &["man", "--dir", "pages"]));
    for page in [
        "ferry.1",
        "ferry-convert.1",
        "ferry-describe.1",
        "ferry-completions.1",
    ] {
        let text = fs::read_to_string(d.join("pages").join(page)).unwrap();
        assert!(text.contains(".TH"), "{page}");
    }
}

#[test]
fn positional_arguments_and_flags_name_the_same_job() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("in.csv"), "a,b\n1,2\n").unwrap();
    let jobs: Vec<String> = [
        vec!["convert", "in.csv", "out.json", "--print-job"],
        vec!["convert", "--in", "in.csv", "-o", "out.json", "--print-job"],
        vec![
            "convert",
            "--in",
            "in.csv",
            "--output",
            "out.json",
            "--print-job",
        ],
        vec![
            "convert",
            "--in",
            "in.csv",
            "--to",
            "out.json",
            "--print-job",
        ],
    ]
    .iter()
    .map(|args| String::from_utf8(ferry(d, args).stdout).unwrap())
    .collect();
    assert!(
        jobs.iter()
            .all(|j| *j == jobs[0] && j.contains("\"out.json\"")),
        "{jobs:?}"
    );
    // Both forms at once, or neither, is a usage error.
    for args in [
        vec!["convert", "in.csv", "--in", "in.csv", "out.json"],
        vec!["convert", "--to", "out.json"],
    ] {
        assert_eq!(ferry(d, &args).status.code(), Some(2), "{args:?}");
    }
    // `--progress` alone means a bar (nothing is drawn when stderr is not a terminal).
    ok(&ferry(d, &["convert", "in.csv", "out.json", "--progress"]));
    assert!(d.join("out.json").exists());
}

#[test]
fn a_sort_larger_than_its_memory_spills_runs_and_merges_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut csv = String::from("id,key\n");
    for i in 0..5000u64 {
        csv.push_str(&format!("{i},{}\n", (i * 7919) % 5003));
    }
    fs::write(d.join("in.csv"), csv).unwrap();
    let spill = d.join("tmp");
    fs::create_dir(&spill).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "convert",
            "in.csv",
            "out.csv",
            "--sort",
            "key:desc",
            "--sort-memory",
            "64KiB",
        ])
        .current_dir(d)
        .env("TMPDIR", &spill)
        .output()
        .unwrap();
    ok(&out);
    let text = fs::read_to_string(d.join("out.csv")).unwrap();
    let keys: Vec<u64> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(keys.len(), 5000);
    assert!(keys.windows(2).all(|w| w[0] >= w[1]), "not sorted");
    // The spill folder is gone after the run.
    assert_eq!(fs::read_dir(&spill).unwrap().count(), 0);
    // A table keeps no order: --sort into a database is refused before anything is written.
    let out = ferry(
        d,
        &[
            "convert",
            "in.csv",
            "sqlite://x.db?table=t",
            "--sort",
            "key",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(!d.join("x.db").exists());
}
