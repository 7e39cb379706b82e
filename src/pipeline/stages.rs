//! The map and validate stages of a conversion, compiled once from the job: the template (found by the
//! one search rule) and the JSON Schema, and the worker pool that applies them to a batch in parallel
//! while the previous batch is encoded. A record's outcome — pass, mapped, filtered, rejected — goes back
//! to the driver in the batch's order.

use std::cell::RefCell;
use std::sync::{mpsc, Arc};

use chrono::SubsecRound as _;
use rayon::prelude::*;

use crate::env::Environment;
use crate::error::{Error, Position, Result, Stage};
use crate::format::RecordBytes;
use crate::job::ConvertJob;
use crate::record::Record;
use crate::shape::{parse_select, Shape};
use crate::template::{CompiledTemplate, Evaluator, Mapped, TemplateSearch};
use crate::validate::{PassedTexts, SchemaValidator};

/// The map and validate stages of a run, compiled once.
pub(super) struct Stages {
    pub template: Option<CompiledTemplate>,
    pub schema: Option<SchemaValidator>,
    /// `--types`, `--where`, `--select`.
    pub shape: Option<Shape>,
    pub pool: Option<rayon::ThreadPool>,
    /// What `now()` returns in expressions (and a split output's manifest says it was created).
    pub now: chrono::DateTime<chrono::FixedOffset>,
}

/// What the map and validate stages decided about one record.
pub(super) enum Outcome {
    /// Write the record as read.
    Pass,
    /// Write this mapped record.
    Mapped(Record),
    /// Write these bytes of the batch's encoded records (see [`ThreadStages::outcome_encoded`]).
    Encoded(std::ops::Range<usize>),
    /// The template's filter left it out.
    Filtered,
    /// It is bad, for these reasons.
    Rejected(Vec<Error>),
}

impl Stages {
    /// Finds and compiles the template and schema (templates are looked for as `env` says) and the
    /// shaping steps (`text_source`: the input is a text-only format), and starts the worker pool.
    pub fn build(job: &ConvertJob, env: &Environment, text_source: bool) -> Result<Stages> {
        let search = TemplateSearch::new(env);
        let template = match &job.template {
            Some(name) => Some(search.find(name)?),
            None => None,
        };
        let schema = match (&job.schema, &template) {
            (Some(path), _) => Some(SchemaValidator::from_file(path)?),
            (None, Some(t)) => match search.schema_of(t)? {
                Some((name, json)) => Some(SchemaValidator::compile(&name, &json)?),
                None => None,
            },
            (None, None) => None,
        };
        let template = template.map(|t| t.compile()).transpose()?;
        let now = run_time(env)?;
        // What the template makes the same for every record, or proves of every record (declared types,
        // fields always present, no others), is validated once, not per record.
        let schema = match (schema, &template) {
            (Some(schema), Some(t)) => Some(
                schema
                    .with_constants(&t.constants(&t.evaluator(now)))?
                    .with_guarantees(&t.guarantees())?,
            ),
            (schema, _) => schema,
        };
        let select = job
            .select
            .iter()
            .map(|s| parse_select(s))
            .collect::<std::result::Result<Vec<_>, String>>()
            .map_err(|e| Error::config(format!("--select: {e}")))?
            .concat();
        let shape = Shape::build(&job.types, job.filter.as_deref(), &select, text_source)?;
        let threads = match job.jobs {
            Some(0) => return Err(Error::config("--jobs must be at least 1")),
            Some(n) => n,
            // One core is taken by the decoding thread: on two cores, mapping on the encoding thread
            // beat a two-worker pool (same time, a second less CPU: idle rayon workers spin).
            None => {
                std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
            }
        };
        // With one worker, or nothing to map, there is no pool: mapping (if any) runs on the encoding thread.
        let pool = if (template.is_some() || schema.is_some() || shape.is_some()) && threads > 1 {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build();
            Some(pool.map_err(|e| {
                let message = format!("cannot start {threads} worker threads: {e}");
                Error::io(Stage::Map, None, std::io::Error::other(message))
            })?)
        } else {
            None
        };
        Ok(Stages {
            template,
            schema,
            shape,
            pool,
            now,
        })
    }

    /// Starts mapping and validating `batch` on the worker pool and returns at once, so that the previous
    /// batch can be encoded meanwhile. Without a template or schema there is nothing to start.
    pub fn start(self: &Arc<Self>, batch: Vec<Record>) -> Pending {
        let batch = Arc::new(batch);
        let (tx, outcomes) = mpsc::sync_channel(1);
        if let Some(pool) = &self.pool {
            let (stages, records) = (Arc::clone(self), Arc::clone(&batch));
            pool.spawn(move || {
                let result = stages.process_all(&records);
                drop(records); // before sending, so the receiver holds the only reference to the batch
                let _ = tx.send(result);
            });
        }
        Pending { batch, outcomes }
    }

    /// The template as reports and manifests name it (`name version`), and the schema's name.
    pub fn names(&self) -> (Option<String>, Option<String>) {
        let template = self
            .template
            .as_ref()
            .map(|t| format!("{} {}", t.name, t.version).trim().to_owned());
        (template, self.schema.as_ref().map(|s| s.name().to_owned()))
    }

    /// True when there is a template, a schema or a shaping step to apply.
    pub fn maps(&self) -> bool {
        self.template.is_some() || self.schema.is_some() || self.shape.is_some()
    }

    /// The expression evaluators of one worker: the template's and `--where`'s.
    fn evaluators(&self) -> Evaluators {
        Evaluators {
            template: self.template.as_ref().map(|t| t.evaluator(self.now)),
            filter: self.shape.as_ref().and_then(|s| s.evaluator(self.now)),
            passed: RefCell::default(),
        }
    }

    /// The stages for one thread to apply, kept by it for the run.
    pub fn for_thread(&self) -> ThreadStages<'_> {
        ThreadStages {
            stages: self,
            evaluators: self.evaluators(),
        }
    }

    /// Maps and validates a batch in parallel; the outcomes are in the batch's order.
    fn process_all(&self, batch: &[Record]) -> Vec<Outcome> {
        batch
            .par_iter()
            .map_init(
                || self.evaluators(),
                |ev, record| self.process_one(ev, record),
            )
            .collect()
    }

    fn process_one(&self, evaluators: &Evaluators, record: &Record) -> Outcome {
        // A panic in a library (expressions, schema validation) must not take the run down with it: the
        // record is rejected with the reason, and the policy decides what happens next.
        let guarded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.map_and_validate(evaluators, record)
        }));
        guarded.unwrap_or_else(|_| {
            let message =
                "internal error while mapping or validating this record (please report it)";
            Outcome::Rejected(vec![Error::record(
                Stage::Map,
                Position::default(),
                message,
            )])
        })
    }

    fn map_and_validate(&self, evaluators: &Evaluators, record: &Record) -> Outcome {
        // `--types` first, so that the template and `--where` see the converted values.
        let converted = match self.shape.as_ref().map(|s| s.convert(record)) {
            Some(Err(errors)) => return Outcome::Rejected(errors),
            Some(Ok(converted)) => converted,
            None => None,
        };
        let input = converted.as_ref().unwrap_or(record);
        let mapped = match (&self.template, &evaluators.template) {
            (Some(template), Some(evaluator)) => match template.map(evaluator, input) {
                Ok(Mapped::Keep(mapped)) => Some(mapped),
                Ok(Mapped::Filtered) => return Outcome::Filtered,
                Err(errors) => return Outcome::Rejected(errors),
            },
            _ => None,
        };
        let mapped = mapped.or(converted);
        if let Some(schema) = &self.schema {
            let mut passed = evaluators.passed.borrow_mut();
            if let Err(errors) =
                schema.validate_remembering(mapped.as_ref().unwrap_or(record), &mut passed)
            {
                return Outcome::Rejected(errors);
            }
        }
        let Some(shape) = &self.shape else {
            return mapped.map_or(Outcome::Pass, Outcome::Mapped);
        };
        match shape.keep(
            evaluators.filter.as_ref(),
            mapped.as_ref().unwrap_or(record),
        ) {
            Ok(true) => {}
            Ok(false) => return Outcome::Filtered,
            Err(error) => return Outcome::Rejected(vec![error]),
        }
        match mapped {
            Some(mapped) => Outcome::Mapped(shape.select(mapped)),
            None if shape.changes_records() => Outcome::Mapped(shape.select(record.clone())),
            None => Outcome::Pass,
        }
    }
}

/// The time `now()` returns in expressions: the run's start, to the millisecond, or `SOURCE_DATE_EPOCH`
/// (seconds since 1970) when `env` sets it, for reproducible output.
fn run_time(env: &Environment) -> Result<chrono::DateTime<chrono::FixedOffset>> {
    match env.get("SOURCE_DATE_EPOCH") {
        Some(text) => text
            .trim()
            .parse::<i64>()
            .ok()
            .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
            .map(|t| t.fixed_offset())
            .ok_or_else(|| {
                Error::config(format!(
                    "SOURCE_DATE_EPOCH must be whole seconds since 1970, got {text:?}"
                ))
            }),
        None => Ok(chrono::Utc::now().fixed_offset().trunc_subsecs(3)),
    }
}

/// The map and validate stages as one thread applies them: with its own expression evaluators, and its
/// own copies of the template's names (see `CompiledTemplate::evaluator`), kept for the run.
pub(super) struct ThreadStages<'a> {
    stages: &'a Stages,
    evaluators: Evaluators,
}

impl ThreadStages<'_> {
    /// Maps and validates a batch.
    pub fn batch(&self, batch: &[Record]) -> Vec<Outcome> {
        batch.iter().map(|record| self.outcome(record)).collect()
    }

    /// What the stages decide about `record`.
    pub fn outcome(&self, record: &Record) -> Outcome {
        self.stages.process_one(&self.evaluators, record)
    }

    /// The same, a record to write encoded right after its stages, while it is in the cache, its bytes
    /// appended to `out` (and a mapped record freed at once, by the thread that made it).
    pub fn outcome_encoded(
        &self,
        record: &Record,
        encoder: &mut dyn RecordBytes,
        out: &mut Vec<u8>,
    ) -> Outcome {
        let mut encode = |record: &Record| {
            let start = out.len();
            encoder.encode(record, out);
            Outcome::Encoded(start..out.len())
        };
        match self.outcome(record) {
            Outcome::Pass => encode(record),
            Outcome::Mapped(mapped) => encode(&mapped),
            other => other,
        }
    }
}

/// One worker's expression evaluators, and the texts its schema checks found valid.
struct Evaluators {
    template: Option<Evaluator>,
    filter: Option<Evaluator>,
    passed: RefCell<PassedTexts>,
}

/// A batch on its way through the map and validate stages.
pub(super) struct Pending {
    pub batch: Arc<Vec<Record>>,
    /// The outcomes, in the batch's order; nothing is ever sent when there are no stages.
    pub outcomes: mpsc::Receiver<Vec<Outcome>>,
}
