//! Where each part of a template sits in its YAML text, so that a problem found when the template is
//! checked names its line: `orders.yaml:14: field "total": compute: …`.
//!
//! serde_yaml reads the template but keeps no positions; this index reads the same text once more with
//! saphyr-parser's events, which carry them, and records the line of every value by its path (`fields`,
//! `3`, `transforms`, `1`). Aliases and anchors are rare in templates and get the line of the alias.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser};

/// One step of a path into the template: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Step {
    /// A mapping key.
    Key(String),
    /// A sequence item (0-based).
    Index(usize),
}

/// The line of every value in a template's YAML (1-based).
#[derive(Debug, Default, Clone)]
pub struct Positions {
    lines: HashMap<Vec<Step>, usize>,
}

/// Where the walk is inside a collection.
enum Frame {
    /// In a sequence: the next item's index.
    Sequence(usize),
    /// In a mapping: the key whose value comes next, or none when a key comes next.
    Mapping(Option<(String, usize)>),
}

impl Positions {
    /// Indexes `text`; a text the parser refuses gives an empty index (serde_yaml reports the error).
    pub fn of(text: &str) -> Positions {
        let mut index = Positions::default();
        let mut path: Vec<Step> = Vec::new();
        let mut frames: Vec<Frame> = Vec::new();
        for item in Parser::new_from_str(text) {
            let Ok((event, span)) = item else { break };
            let line = span.start.line();
            match event {
                Event::Scalar(value, ..) => {
                    if let Some(Frame::Mapping(pending @ None)) = frames.last_mut() {
                        *pending = Some((value.into_owned(), line));
                        continue;
                    }
                    index.enter(&mut frames, &mut path, line);
                    index.leave(&mut frames, &mut path);
                }
                Event::Alias(_) => {
                    if let Some(Frame::Mapping(pending @ None)) = frames.last_mut() {
                        *pending = Some((String::new(), line));
                        continue;
                    }
                    index.enter(&mut frames, &mut path, line);
                    index.leave(&mut frames, &mut path);
                }
                Event::SequenceStart(..) => {
                    index.enter(&mut frames, &mut path, line);
                    frames.push(Frame::Sequence(0));
                }
                Event::MappingStart(..) => {
                    index.enter(&mut frames, &mut path, line);
                    frames.push(Frame::Mapping(None));
                }
                Event::SequenceEnd | Event::MappingEnd => {
                    frames.pop();
                    index.leave(&mut frames, &mut path);
                }
                _ => {}
            }
        }
        index
    }

    /// A value starts: its path is the enclosing one plus its key or index; its line is its key's line in
    /// a mapping (where `compute:` is written), else its own.
    fn enter(&mut self, frames: &mut [Frame], path: &mut Vec<Step>, line: usize) {
        let at = match frames.last_mut() {
            Some(Frame::Sequence(next)) => {
                path.push(Step::Index(*next));
                *next += 1;
                line
            }
            Some(Frame::Mapping(pending)) => {
                let (key, key_line) = pending.take().unwrap_or_default();
                path.push(Step::Key(key));
                key_line
            }
            None => line,
        };
        self.lines.entry(path.clone()).or_insert(at);
    }

    /// A value ends: back to the enclosing path.
    fn leave(&mut self, frames: &mut [Frame], path: &mut Vec<Step>) {
        if !frames.is_empty() {
            path.pop();
        }
    }

    /// The line of the value at `path`, or of the nearest enclosing value that has one.
    pub fn line(&self, path: &[Step]) -> Option<usize> {
        (0..=path.len())
            .rev()
            .find_map(|n| self.lines.get(&path[..n]).copied())
    }
}

/// A path from steps written as text: numbers are indexes, anything else keys.
pub fn path(steps: &[&str]) -> Vec<Step> {
    steps
        .iter()
        .map(|s| match s.parse::<usize>() {
            Ok(i) => Step::Index(i),
            Err(_) => Step::Key((*s).to_owned()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_and_flow_values_have_their_lines() {
        let text = "name: t\nfilter: x > 1\nfields:\n  - name: a\n    transforms:\n      - trim\n      - split: {sep: ';'}\n  - {name: b, compute: 'a + 1'}\n";
        let p = Positions::of(text);
        assert_eq!(p.line(&path(&["filter"])), Some(2));
        assert_eq!(p.line(&path(&["fields", "0"])), Some(4));
        assert_eq!(p.line(&path(&["fields", "0", "transforms"])), Some(5));
        assert_eq!(p.line(&path(&["fields", "0", "transforms", "1"])), Some(7));
        assert_eq!(
            p.line(&path(&["fields", "0", "transforms", "1", "split", "sep"])),
            Some(7)
        );
        assert_eq!(p.line(&path(&["fields", "1", "compute"])), Some(8));
        assert_eq!(p.line(&path(&["fields", "1", "nothing", "here"])), Some(8));
        // A text the parser refuses indexes what it read before the error, and never panics.
        assert!(Positions::of("{{{")
            .line(&path(&["fields"]))
            .is_some_and(|l| l == 1));
    }
}
