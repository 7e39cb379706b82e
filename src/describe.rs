//! What an unknown export holds, beside the pipeline: [`describe`] reads a job's input through the same
//! source and decode stages a conversion uses (envelope layers, encodings, split sets, databases) and
//! reports each field's inferred type ([`crate::infer`]), how many records have no value for it, and its
//! smallest and largest value. `ferry describe`, `ferry headers` and the service use it.

use serde::Serialize;

use crate::env::Environment;
use crate::error::Result;
use crate::format::Fidelity;
use crate::infer::{FieldStats, Inference};
use crate::job::ConvertJob;
use crate::observe::RunContext;

/// What [`describe`] found.
#[derive(Debug, Clone, Serialize)]
pub struct Description {
    /// The input, as reports show it.
    pub input: String,
    /// Its format (or database).
    pub format: String,
    /// Records read.
    pub records: u64,
    /// True when only the first records were read (`limit`).
    pub sampled: bool,
    /// Every field, in the order it first appeared.
    pub fields: Vec<FieldStats>,
}

/// Reads `job`'s input — all of it, or its first `limit` records — and describes its fields. Only the
/// input side of the job counts (its output is not opened). A record that does not decode stops it with
/// the decoder's error; the cancellation token is checked as records are read.
pub fn describe(
    job: &ConvertJob,
    env: &Environment,
    ctx: &RunContext,
    limit: Option<u64>,
) -> Result<Description> {
    let mut job = job.clone();
    // The output is never written: `-` keeps the build from checking or opening any file for it.
    job.output = "-".to_owned();
    job.output_format = Some("ndjson".to_owned());
    job.dry_run = true;
    let built = job.build(env)?;
    let (input, format, fidelity) = built.input_names();
    let mut inference = Inference::new(fidelity == Some(Fidelity::Text)).with_extremes();
    let mut sampled = false;
    for record in built.open_records()? {
        if limit.is_some_and(|n| inference.records() >= n) {
            sampled = true;
            break;
        }
        if inference.records() % 4096 == 0 {
            ctx.cancel.check()?;
        }
        let record =
            record.map_err(|e| e.with_context(Some(&input), Some(inference.records() + 1)))?;
        inference.add(&record);
    }
    Ok(Description {
        input,
        format,
        records: inference.records(),
        sampled,
        fields: inference.fields(),
    })
}

impl Description {
    /// A text table: one line per field with its type, values, nulls, min and max.
    pub fn render(&self) -> String {
        let mut rows = vec![[
            "field".to_owned(),
            "type".to_owned(),
            "values".to_owned(),
            "nulls".to_owned(),
            "min".to_owned(),
            "max".to_owned(),
        ]];
        for f in &self.fields {
            rows.push([
                f.name.clone(),
                f.kind.map_or("null", |k| k.name()).to_owned(),
                f.values.to_string(),
                f.nulls.to_string(),
                shorten(f.min.as_deref().unwrap_or("")),
                shorten(f.max.as_deref().unwrap_or("")),
            ]);
        }
        let widths: Vec<usize> = (0..6)
            .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = format!(
            "{} ({}): {} records{}\n",
            self.input,
            self.format,
            self.records,
            if self.sampled {
                " (the first ones)"
            } else {
                ""
            }
        );
        for row in rows {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        }
        out
    }
}

/// A cell of at most 40 characters, on one line.
fn shorten(text: &str) -> String {
    let one_line = text.replace(['\n', '\r', '\t'], " ");
    if one_line.chars().count() <= 40 {
        return one_line;
    }
    let cut: String = one_line.chars().take(39).collect();
    format!("{cut}…")
}
