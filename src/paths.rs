//! Before a run opens anything for writing: every path it reads and writes, checked once for collisions.
//!
//! A run writes more than its output — a rejects file, a report, a checksum, a manifest and its parts, a
//! state file, a backup folder — and each of those must name neither an input (the run would destroy what
//! it reads) nor another output (one would overwrite the other). [`RunPaths`] collects them, with the flag
//! that names each, and [`RunPaths::check`] refuses the first collision as a configuration error naming both flags.
//! Two paths are the same file when they resolve to the same place (symlinks, `./` and `..` spellings) or
//! are the same inode (hard links).

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// How a run uses a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read only: two reads of one file are fine.
    Read,
    /// Written (or replaced): must name nothing else the run uses.
    Write,
    /// A SQLite database the run opens: it may be both source and target of a run, never a file it writes.
    Database,
}

/// Every path one run reads and writes, each with the flag (or derived name) it comes from.
#[derive(Debug, Default)]
pub struct RunPaths {
    uses: Vec<Use>,
}

#[derive(Debug)]
struct Use {
    label: String,
    access: Access,
    place: Place,
}

#[derive(Debug)]
enum Place {
    File(PathBuf),
    /// Files the run will name only later (parts, one rejects file per table, backup files).
    Family(Family),
}

/// Files in one folder whose names are `prefix`, then digits (or anything), then one of `suffixes`.
#[derive(Debug)]
struct Family {
    dir: PathBuf,
    prefix: String,
    digits_only: bool,
    suffixes: Vec<String>,
}

impl Family {
    fn matches(&self, name: &str) -> bool {
        let Some(rest) = name.strip_prefix(&self.prefix) else {
            return false;
        };
        self.suffixes.iter().any(|suffix| {
            rest.strip_suffix(suffix.as_str()).is_some_and(|middle| {
                !middle.is_empty()
                    && (!self.digits_only || middle.bytes().all(|b| b.is_ascii_digit()))
            })
        })
    }

    /// True when some name could be in both families.
    fn overlaps(&self, other: &Family) -> bool {
        let prefixes =
            self.prefix.starts_with(&other.prefix) || other.prefix.starts_with(&self.prefix);
        prefixes
            && self.suffixes.iter().any(|a| {
                other
                    .suffixes
                    .iter()
                    .any(|b| a.ends_with(b.as_str()) || b.ends_with(a.as_str()))
            })
    }
}

/// Where a path really is: its resolved location and, when it exists, its device and inode.
struct Identity {
    resolved: PathBuf,
    inode: Option<(u64, u64)>,
}

impl Identity {
    fn of(path: &Path) -> Identity {
        if let (Ok(meta), Ok(resolved)) = (fs::metadata(path), fs::canonicalize(path)) {
            return Identity {
                resolved,
                inode: inode(&meta),
            };
        }
        // Not there yet: its folder resolved, then its own name.
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let dir =
            fs::canonicalize(dir).unwrap_or_else(|_| std::path::absolute(dir).unwrap_or_default());
        let resolved = match path.file_name() {
            Some(name) => dir.join(name),
            None => dir,
        };
        Identity {
            resolved,
            inode: None,
        }
    }

    fn same(&self, other: &Identity) -> bool {
        self.resolved == other.resolved || (self.inode.is_some() && self.inode == other.inode)
    }
}

#[cfg(unix)]
fn inode(meta: &fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn inode(_meta: &fs::Metadata) -> Option<(u64, u64)> {
    None
}

impl RunPaths {
    /// No paths yet.
    pub fn new() -> RunPaths {
        RunPaths::default()
    }

    /// A file the run reads; `label` is the flag that names it (`--in`, `--schema`).
    pub fn read(&mut self, label: impl Into<String>, path: &Path) -> &mut RunPaths {
        self.push(label.into(), Access::Read, Place::File(path.to_owned()))
    }

    /// A file the run writes; `label` says where its name comes from (`--rejects`, `the checksum of --to`).
    pub fn write(&mut self, label: impl Into<String>, path: &Path) -> &mut RunPaths {
        self.push(label.into(), Access::Write, Place::File(path.to_owned()))
    }

    /// A SQLite database file the run opens, with the journal files SQLite keeps beside it.
    pub fn database(&mut self, label: impl Into<String>, path: &Path) -> &mut RunPaths {
        let label = label.into();
        self.push(
            label.clone(),
            Access::Database,
            Place::File(path.to_owned()),
        );
        for sidecar in ["-wal", "-shm", "-journal"] {
            let mut name = path.as_os_str().to_owned();
            name.push(sidecar);
            let place = Place::File(PathBuf::from(name));
            self.push(format!("{label} ({sidecar} file)"), Access::Database, place);
        }
        self
    }

    /// Files the run writes in `dir` whose names are `prefix`, then digits (`digits_only`) or any text,
    /// then one of `suffixes`: parts (`out-00001.csv`), per-table rejects files, backup files.
    pub fn write_family(
        &mut self,
        label: impl Into<String>,
        dir: &Path,
        prefix: &str,
        digits_only: bool,
        suffixes: &[&str],
    ) -> &mut RunPaths {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let family = Family {
            dir: dir.to_owned(),
            prefix: prefix.to_owned(),
            digits_only,
            suffixes: suffixes.iter().map(|s| (*s).to_owned()).collect(),
        };
        self.push(label.into(), Access::Write, Place::Family(family))
    }

    fn push(&mut self, label: String, access: Access, place: Place) -> &mut RunPaths {
        self.uses.push(Use {
            label,
            access,
            place,
        });
        self
    }

    /// Refuses the first pair of paths that name one file where at least one of them is written: a configuration
    /// error naming both flags. Nothing is opened for writing; only metadata and folder listings are read.
    pub fn check(&self) -> Result<()> {
        let resolved: Vec<Resolved> = self.uses.iter().map(Resolved::of).collect();
        for (i, a) in resolved.iter().enumerate() {
            for b in &resolved[i + 1..] {
                if a.access == Access::Write || b.access == Access::Write {
                    if let Some(shown) = a.collides(b) {
                        return Err(collision(a, b, &shown));
                    }
                }
            }
        }
        Ok(())
    }
}

fn collision(a: &Resolved, b: &Resolved, shown: &str) -> Error {
    // What the run reads comes first; of two outputs, the later one (a rejects file or report rather than
    // the output) is the one to rename.
    let (first, second) = if a.access == Access::Write && b.access != Access::Write {
        (b, a)
    } else {
        (a, b)
    };
    let why = match first.access {
        Access::Write => "one would overwrite the other",
        Access::Read => "the run would overwrite what it reads",
        Access::Database => "the run would overwrite a database it opens",
    };
    Error::config(format!(
        "{} and {} both name {}: {why}; choose another path for {}",
        first.label,
        second.label,
        crate::secret::redact(shown),
        second.label
    ))
}

/// A use with its identity worked out once.
struct Resolved<'a> {
    label: &'a str,
    access: Access,
    shown: String,
    kind: ResolvedPlace<'a>,
}

enum ResolvedPlace<'a> {
    File {
        identity: Identity,
        name: Option<String>,
    },
    Family {
        family: &'a Family,
        dir: Identity,
        /// The files already there that belong to the family, by identity.
        members: Vec<(String, Identity)>,
    },
}

impl<'a> Resolved<'a> {
    fn of(u: &'a Use) -> Resolved<'a> {
        let (shown, kind) = match &u.place {
            Place::File(path) => {
                let identity = Identity::of(path);
                let name = identity
                    .resolved
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned());
                (
                    path.display().to_string(),
                    ResolvedPlace::File { identity, name },
                )
            }
            Place::Family(family) => {
                let members = fs::read_dir(&family.dir)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter_map(|entry| {
                        let name = entry.file_name().to_string_lossy().into_owned();
                        family
                            .matches(&name)
                            .then(|| (name, Identity::of(&entry.path())))
                    })
                    .collect();
                let shown = family
                    .dir
                    .join(format!("{}…{}", family.prefix, family.suffixes.join("|")))
                    .display()
                    .to_string();
                let dir = Identity::of(&family.dir);
                (
                    shown,
                    ResolvedPlace::Family {
                        family,
                        dir,
                        members,
                    },
                )
            }
        };
        Resolved {
            label: &u.label,
            access: u.access,
            shown,
            kind,
        }
    }

    /// The name to show when `self` and `other` are one file (or could be), else `None`.
    fn collides(&self, other: &Resolved<'_>) -> Option<String> {
        match (&self.kind, &other.kind) {
            (ResolvedPlace::File { identity: a, .. }, ResolvedPlace::File { identity: b, .. }) => {
                a.same(b).then(|| self.shown.clone())
            }
            (ResolvedPlace::File { .. }, ResolvedPlace::Family { .. }) => other.collides(self),
            (
                ResolvedPlace::Family {
                    family,
                    dir,
                    members,
                },
                ResolvedPlace::File { identity, name },
            ) => {
                let in_dir = identity.resolved.parent() == Some(dir.resolved.as_path());
                let named = in_dir && name.as_deref().is_some_and(|n| family.matches(n));
                let linked = members.iter().any(|(_, m)| m.same(identity));
                (named || linked || identity.same(dir)).then(|| other.shown.clone())
            }
            (
                ResolvedPlace::Family {
                    family: a, dir: da, ..
                },
                ResolvedPlace::Family {
                    family: b, dir: db, ..
                },
            ) => (da.same(db) && a.overlaps(b)).then(|| self.shown.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(build: impl FnOnce(&mut RunPaths)) -> Result<()> {
        let mut paths = RunPaths::new();
        build(&mut paths);
        paths.check()
    }

    #[test]
    fn spellings_symlinks_and_hard_links_are_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.csv");
        fs::write(&input, "a\n1\n").unwrap();
        let dotted = dir.path().join(".").join("sub").join("..").join("in.csv");
        fs::create_dir(dir.path().join("sub")).unwrap();
        let linked = dir.path().join("link.csv");
        let hard = dir.path().join("hard.csv");
        #[cfg(unix)]
        std::os::unix::fs::symlink(&input, &linked).unwrap();
        fs::hard_link(&input, &hard).unwrap();
        for other in [&input, &dotted, &linked, &hard] {
            let err = check(|p| {
                p.read("--in", &input).write("--rejects", other);
            })
            .unwrap_err();
            assert!(err.is_config(), "{err}");
            let text = err.to_string();
            assert!(text.contains("--in and --rejects"), "{text}");
        }
        check(|p| {
            p.read("--in", &input)
                .write("--to", &dir.path().join("out.csv"));
        })
        .unwrap();
    }

    #[test]
    fn two_reads_and_one_database_twice_are_fine() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        check(|p| {
            p.read("--in", &db).read("--schema", &db);
        })
        .unwrap();
        check(|p| {
            p.database("--in", &db).database("--to", &db);
        })
        .unwrap();
        let err = check(|p| {
            p.database("--to", &db)
                .write("--report", &dir.path().join("app.db-wal"));
        })
        .unwrap_err();
        assert!(err.to_string().contains("--report"), "{err}");
    }

    #[test]
    fn families_match_the_names_they_will_write() {
        let dir = tempfile::tempdir().unwrap();
        let parts = |p: &mut RunPaths| {
            p.write_family("the parts of --to", dir.path(), "out-", true, &[".csv"]);
        };
        let err = check(|p| {
            p.read("--in", &dir.path().join("out-00003.csv"));
            parts(p);
        })
        .unwrap_err();
        assert!(err.to_string().contains("the parts of --to"), "{err}");
        check(|p| {
            p.read("--in", &dir.path().join("out-final.csv"));
            parts(p);
        })
        .unwrap();
        // An existing part reached through a hard link elsewhere.
        let part = dir.path().join("out-00001.csv");
        fs::write(&part, "x\n").unwrap();
        let elsewhere = tempfile::tempdir_in(dir.path()).unwrap();
        let linked = elsewhere.path().join("data.csv");
        fs::hard_link(&part, &linked).unwrap();
        assert!(check(|p| {
            p.read("--in", &linked);
            parts(p);
        })
        .is_err());
        let rejects = |p: &mut RunPaths| {
            p.write_family(
                "--rejects folder",
                dir.path(),
                "",
                false,
                &[".rejects.ndjson"],
            );
        };
        assert!(check(|p| {
            rejects(p);
            p.write_family("--backup folder", dir.path(), "", false, &[".ndjson.zst"]);
        })
        .is_ok());
        assert!(check(|p| {
            rejects(p);
            p.write("--state", &dir.path().join("t.rejects.ndjson"));
        })
        .is_err());
    }
}
