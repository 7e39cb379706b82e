//! Drives a conversion's records: the decoder on a thread of its own hands batches through a bounded
//! channel; map and validate run on a batch in parallel while the batch before it is encoded here (without
//! a worker pool, a table's batch is ended only after the next one is mapped, so the database works
//! meanwhile); the error policy decides what a bad record does; every record is counted, so that the
//! report always balances: `read = written + rejected + filtered + skipped`. Between batches the run tells
//! its observer how far it is and checks its cancellation token.

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::open::Output;
use super::stages::{Outcome, Pending, Stages, ThreadStages};
use super::text_rows::{EncodedBatch, Item, SharedTextPlan, TextPlan};
use crate::db::TextColumns;
use crate::error::{Error, Position, Result, Stage};
use crate::format::{Decoder, RecordBytes};
use crate::job::ErrorPolicy;
use crate::observe::{Event, Progress, RunContext};
use crate::record::{Key, Record};
use crate::rejects::RejectsWriter;
use crate::report::Report;

/// Batches waiting between the decoding and encoding threads. Two keep both threads busy as well as four
/// did (1M-row templated loads into NDJSON and SQLite, within the runs' noise) and hold ~6 MiB less.
const BATCHES_IN_FLIGHT: usize = 2;
/// A table's batch (one COPY or prepared-insert run under a savepoint, each ended with a round trip) also
/// ends once about this much input has been read for it, so that wide records cannot make it large: memory
/// stays at a few MiB whatever the record width.
const BATCH_INPUT_BYTES: u64 = 1 << 20;
/// A batch into a file ends sooner: once about this much input has been read for it. A quarter of a table's
/// batch keeps a batch's records in the caches from decoding to encoding: templated 1M-row CSV → NDJSON,
/// 3.15 s / 4.87 CPU-s / 38 MiB against 3.27 s / 5.00 / 58 MiB at 1 MiB (means of four alternating runs);
/// 40 MiB at 10M rows against 62. Tried for tables too, several batches to a table's batch (so no more
/// round trips): 13 % slower into PostgreSQL (means of three alternating runs; the end of a table batch's
/// COPY then waits on a shorter mapping), the same time into SQLite with 13 MiB less; not kept.
const CHUNK_INPUT_BYTES: u64 = BATCH_INPUT_BYTES / 4;
/// A batch into a file also ends after this many records (fewer with `--batch-size`). The input is read
/// 256 KiB at a time, so the bytes above end a batch only at a read: ~1,200 records of the generated legacy
/// CSV, too many, it seems, for their records (source and mapped) to stay in a core's 1 MiB second-level
/// cache from decoding to encoding. Templated 1M-row CSV → NDJSON, three alternating runs: 1.93–1.96 s at
/// 1,024 records against 2.09–2.13 s as before and 2.11–2.18 s at 1,500 (another round: 256 records
/// 1.93–1.96 s, 512 1.86–1.93, 1,024 1.89–1.90; tables keep theirs: see BENCHMARKS.md, "Eighth pass").
const CHUNK_RECORDS: usize = 1024;
/// Rows encoded on the reading thread (see `text_rows`) go to a table in batches this many times as large,
/// in rows and in input bytes: they hold no records, and the server spends less on savepoints and COPY
/// starts. Raw 1M-row CSV → PostgreSQL, three alternating runs: 1.71 s / 49 MiB at twice the size, 1.65 s
/// / 56 MiB at three times, 1.64 s / 63 MiB at four, against 2.10 s / 44 MiB at one; then four more: 1.80 s
/// at twice, 1.71 s at three times (psql `\copy` 2.05 s), 58 MiB flat to 10M rows.
const ENCODED_BATCH_FACTOR: usize = 3;
/// A buffer of records encoded on the reading thread is kept for the next batch up to this size (a batch
/// into a file is about 256 KiB of input).
const ENCODED_KEPT_BYTES: usize = 4 << 20;
/// The reading thread maps and encodes records this many at a time, and goes on only while the encoding
/// thread is still behind (see `ReaderMapping::map`).
const READER_PIECE: usize = 64;
/// How often a run waiting for input looks at its cancellation token (a slow pipe, a FIFO).
const CANCEL_POLL: Duration = Duration::from_millis(100);

/// The state of a run while records move.
pub(super) struct Run<'a> {
    pub stages: Arc<Stages>,
    pub policy: ErrorPolicy,
    pub rejects: Option<RejectsWriter>,
    pub input_name: String,
    pub report: &'a mut Report,
    pub ctx: &'a RunContext,
    pub bytes_read: Arc<AtomicU64>,
    /// The input's size, when known.
    pub total_bytes: Option<u64>,
    pub started: Instant,
    /// Records up to this number were loaded by an earlier run (`--resume`).
    pub resume_after: u64,
    /// `--limit` (without `--sort`): the run stops reading once this many records are written.
    pub limit: Option<u64>,
}

impl Run<'_> {
    /// Moves every record from the decoder through the stages to the encoder, the decoder on its own thread.
    /// The cancellation token is checked after every batch, while waiting for one, and before the output is
    /// made final.
    pub fn drive(
        &mut self,
        decoder: Box<dyn Decoder>,
        mut output: Output,
        batch_size: usize,
    ) -> Result<()> {
        // Records as read into a table: plain rows may skip the record stage (see `text_rows`).
        let as_read = self.stages.pool.is_none() && !self.stages.maps();
        let takes_encoded = matches!(&output, Output::Table(table) if table.takes_encoded());
        let text_plan = (as_read && takes_encoded).then(|| SharedTextPlan::new(OnceLock::new()));
        // Encoded batches go back to the reading thread, which drops their records: memory is freed by the
        // thread that allocated it, so the two threads never contend for the allocator's locks (freeing on
        // this thread made malloc the decoder's largest cost).
        let (done_tx, done_rx) = mpsc::channel::<Finished>();
        let input_bytes = self.bytes_read.clone();
        // Without a worker pool the reading thread shares the mapping into a file, or into a table that
        // asks for it (SQLite): see `ReaderMapping`.
        let shares = self.stages.pool.is_none()
            && self.stages.maps()
            && match &output {
                Output::File(_) => true,
                Output::Table(table) => table.maps_beside(),
            };
        // A load of encoded rows waits on the server, and its encoded batches are large: one in flight is
        // enough. A table's batch the reading thread maps in part goes as two (see `ReaderMapping::map`):
        // with room for only two, the reading thread waited ~7 % of a 1M-row load into SQLite.
        let in_flight = match (&text_plan, &output) {
            (Some(_), _) => 1,
            (None, Output::Table(_)) if shares => 2 * BATCHES_IN_FLIGHT,
            (None, _) => BATCHES_IN_FLIGHT,
        };
        let (tx, rx) = mpsc::sync_channel::<Batch>(in_flight);
        // Batches into a file are small (see `CHUNK_INPUT_BYTES`; `CHUNK_RECORDS` was measured without a
        // worker pool, which spreads each batch over its workers), and so are those into a table whose
        // mapping is shared; into another table they are the table's.
        let (batch_size, batch_bytes) = match output {
            Output::File(_) if self.stages.pool.is_none() => {
                (batch_size.min(CHUNK_RECORDS), CHUNK_INPUT_BYTES)
            }
            Output::File(_) => (batch_size, CHUNK_INPUT_BYTES),
            Output::Table(_) if shares => (batch_size.min(CHUNK_RECORDS), CHUNK_INPUT_BYTES),
            Output::Table(_) => (batch_size, BATCH_INPUT_BYTES),
        };
        let sharing = shares.then(|| ReaderMapping {
            stages: Arc::clone(&self.stages),
            waiting: Arc::new(AtomicUsize::new(0)),
            backlog: (batch_size / 2).max(1),
            encoder: output.record_bytes().map(RefCell::new),
        });
        let waiting = sharing.as_ref().map(|s| Arc::clone(&s.waiting));
        let mut planning = text_plan.clone().map(Planning::new);
        let reader = std::thread::spawn(move || {
            let feed = Feed {
                batches: &tx,
                done: &done_rx,
                sharing: sharing.as_ref(),
                stages: sharing.as_ref().map(|s| s.stages.for_thread()),
                text_plan: text_plan.as_ref(),
            };
            read_batches(decoder, batch_size, batch_bytes, &input_bytes, &feed)
        });
        let mut outcome = Ok(());
        // This thread's stages, when it maps (there is no pool).
        let stages = Arc::clone(&self.stages);
        let here = stages.for_thread();
        // The batch whose stages are running on the pool while this thread encodes the one before it.
        let mut pending: Option<Pending> = None;
        // Without a pool: a table's batch sent and not yet settled (see `Unsettled`).
        let mut unsettled: Option<Unsettled> = None;
        loop {
            let message = match rx.recv_timeout(CANCEL_POLL) {
                Ok(message) => message,
                Err(RecvTimeoutError::Timeout) => {
                    outcome = self.ctx.cancel.check();
                    if outcome.is_err() {
                        break;
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let work = message.work();
            outcome = match message {
                Batch::Records(batch, mapped_there) if self.stages.pool.is_none() => {
                    let keys = planning.as_mut().and_then(|p| p.keys_of(&batch));
                    let taken = (batch, mapped_there);
                    self.take_batch(taken, &here, &mut unsettled, &mut output, &done_tx)
                        .map(|()| {
                            if let Some(planning) = &mut planning {
                                planning.after_batch(keys, &output);
                            }
                        })
                }
                Batch::Encoded(batch) => {
                    self.take_encoded(batch, &mut unsettled, &mut output, &done_tx)
                }
                Batch::Records(batch, _) => {
                    let next = self.stages.start(batch);
                    match pending.replace(next) {
                        Some(previous) => self.finish_batch(previous, &mut output, &done_tx),
                        None => Ok(()),
                    }
                }
                Batch::BadRecord(error) => {
                    // Records keep their order: the batch before the bad record is written first.
                    let earlier = match pending.take() {
                        Some(previous) => self.finish_batch(previous, &mut output, &done_tx),
                        None => self.settle(unsettled.take(), &mut output, &done_tx),
                    };
                    earlier.and_then(|()| {
                        self.report.counts.read += 1;
                        let number = error
                            .position()
                            .and_then(|p| p.record)
                            .unwrap_or(self.report.counts.read);
                        self.reject(number, None, vec![error])
                    })
                }
                Batch::Fatal(error) => Err(error),
            }
            .and_then(|()| self.ctx.cancel.check());
            if let (Some(waiting), 1..) = (&waiting, work) {
                waiting.fetch_sub(work, Ordering::Relaxed);
            }
            if outcome.is_ok() && self.limit_reached() {
                // The table may still refuse rows of the batch just sent: settled, they no longer count as
                // written, and the run goes on while fewer than `--limit` are.
                outcome = self.settle(unsettled.take(), &mut output, &done_tx);
            }
            if outcome.is_err() || self.limit_reached() {
                break;
            }
            self.ctx.emit(Event::Progress(self.progress()));
        }
        if let (Ok(()), Some(last)) = (&outcome, pending.take()) {
            if !self.limit_reached() {
                outcome = self.finish_batch(last, &mut output, &done_tx);
            }
        }
        if outcome.is_ok() {
            outcome = self.settle(unsettled.take(), &mut output, &done_tx);
        }
        drop(rx); // stops the reader thread if we left early
                  // A reading thread that panicked ended the input early: the run must fail, not finish a short output.
        if outcome.is_ok() && !self.limit_reached() && reader.join().is_err() {
            outcome = Err(Error::data(
                Stage::Source,
                Position::default(),
                "the reading thread stopped unexpectedly (internal error)",
            ));
        }
        // A reader blocked on input that never comes (a FIFO, a stalled pipe) is not waited for after a
        // failure or a cancellation: it ends when its read returns and it finds no one listening.
        if outcome.is_err() && self.report.last_committed_record.is_some() {
            // Records up to the last commit are loaded for good, and a resumed run skips them: their rejects
            // must stay too.
            if let Some(rejects) = self.rejects.take() {
                if self.report.counts.rejected > 0 {
                    self.report.rejects_file = Some(rejects.path().display().to_string());
                }
                let _ = rejects.finish();
            }
        }
        outcome?;
        self.ctx.cancel.check()?;
        self.finish_output(output)?;
        if let Some(rejects) = self.rejects.take() {
            if self.report.counts.rejected > 0 {
                self.report.rejects_file = Some(rejects.path().display().to_string());
            }
            rejects.finish()?;
        }
        Ok(())
    }

    /// Where the run stands, for its observer.
    fn progress(&self) -> Progress {
        Progress {
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
            total_bytes: self.total_bytes,
            seconds: self.started.elapsed().as_secs_f64(),
            ..self.report.progress()
        }
    }

    /// Waits for a batch's stages, encodes it, and hands its records back to the reading thread.
    fn finish_batch(
        &mut self,
        pending: Pending,
        output: &mut Output,
        done: &mpsc::Sender<Finished>,
    ) -> Result<()> {
        let outcomes = pending.outcomes.recv().map_err(|_| {
            Error::data(
                Stage::Map,
                Position::default(),
                "a mapping worker stopped unexpectedly (internal error)",
            )
        })?;
        let first_number = self.report.counts.read + 1;
        let result = self
            .records(
                &pending.batch,
                &mut Outcomes::Ready(outcomes.into_iter(), Vec::new()),
                None,
                output,
            )
            .and_then(|()| {
                let record_at = |i| pending.batch.get(i).map(Cow::Borrowed);
                self.end_batch(record_at, first_number, output)
            });
        if let Ok(batch) = Arc::try_unwrap(pending.batch) {
            let _ = done.send(Finished {
                records: batch,
                retired: Vec::new(),
                buffer: None,
                encoded: None,
            });
        }
        result
    }

    /// Takes a batch when there is no worker pool: mapped here unless the reading thread mapped it, then
    /// written. A file's batch is settled at once. A table's batch (`unsettled`) is told its rows are all
    /// written, and is settled only once the batch after it is mapped: the database takes in its last rows
    /// meanwhile (the end of its COPY already sent), instead of waiting for the mapping.
    fn take_batch(
        &mut self,
        (batch, mapped_there): (Vec<Record>, Option<MappedThere>),
        here: &ThreadStages<'_>,
        unsettled: &mut Option<Unsettled>,
        output: &mut Output,
        done: &mpsc::Sender<Finished>,
    ) -> Result<()> {
        let mapped_here = mapped_there.is_none();
        let maps = self.stages.maps();
        let outcomes = match mapped_there {
            Some(there) => {
                let encoded = there.encoded.unwrap_or_default();
                Outcomes::Ready(there.outcomes.into_iter(), encoded)
            }
            // Into a file, each record is mapped just before it is encoded, while it is in the cache.
            None if maps && matches!(output, Output::File(_)) => Outcomes::OneByOne(here),
            None if maps => Outcomes::Ready(here.batch(&batch).into_iter(), Vec::new()),
            None => Outcomes::AsRead,
        };
        self.settle(unsettled.take(), output, done)?;
        let sent = self.send_records(batch, outcomes, mapped_here, output)?;
        let Output::Table(table) = output else {
            return self.settle(Some(sent), output, done);
        };
        *unsettled = Some(sent);
        table.end_rows()
    }

    /// Sends a batch through the error policy to the encoder; it is settled later, by [`Run::settle`].
    /// Records the reading thread mapped (`mapped_here` false) go back to it with their source batch.
    fn send_records(
        &mut self,
        batch: Vec<Record>,
        mut outcomes: Outcomes<'_>,
        mapped_here: bool,
        output: &mut Output,
    ) -> Result<Unsettled> {
        let first_number = self.report.counts.read + 1;
        let mut retired = Vec::new();
        let retire = (!mapped_here).then_some(&mut retired);
        self.records(&batch, &mut outcomes, retire, output)?;
        Ok(Unsettled {
            rows: Rows::Records(batch),
            first_number,
            retired,
            encoded: outcomes.into_encoded(),
        })
    }

    /// Takes a batch of rows the reading thread encoded for the table (see `text_rows`), as `take_batch`
    /// takes records: written, told its rows are all written, settled once the next batch is taken.
    fn take_encoded(
        &mut self,
        batch: EncodedBatch,
        unsettled: &mut Option<Unsettled>,
        output: &mut Output,
        done: &mpsc::Sender<Finished>,
    ) -> Result<()> {
        self.settle(unsettled.take(), output, done)?;
        let first_number = self.report.counts.read + 1;
        self.encoded_rows(&batch, output)?;
        *unsettled = Some(Unsettled {
            rows: Rows::Encoded(batch),
            first_number,
            retired: Vec::new(),
            encoded: None,
        });
        match output {
            Output::Table(table) => table.end_rows(),
            Output::File(_) => Ok(()),
        }
    }

    /// One encoded batch through the error policy to the table, counted as `records` counts.
    fn encoded_rows(&mut self, batch: &EncodedBatch, output: &mut Output) -> Result<()> {
        let first_number = self.report.counts.read + 1;
        for (index, item) in batch.items.iter().enumerate() {
            if self.limit_reached()
                && self.limit_holds(|i| batch.record(i), first_number, output)?
            {
                break;
            }
            self.report.counts.read += 1;
            let number = self.report.counts.read;
            let (start, end, line) = match item {
                Item::Record(record) => {
                    self.write_one(number, record, Outcome::Pass, &[], None, output)?;
                    continue;
                }
                Item::Row { start, end, line } => (*start, *end, *line),
            };
            if number <= self.resume_after {
                self.report.counts.skipped += 1;
                continue;
            }
            let Some(row) = batch.bytes.get(start..end) else {
                return Err(Error::data(
                    Stage::Sink,
                    Position::default().with_record(number),
                    "an encoded row outside its batch (internal error)",
                ));
            };
            match output.write_encoded(number, row) {
                Ok(()) => {
                    self.report.counts.written += 1;
                    self.report.rows_from_text += 1;
                }
                Err(e) if e.is_record() => {
                    let record = batch.record(index);
                    self.reject(number, record.as_deref(), vec![e])?
                }
                Err(e) => {
                    self.report.counts.rejected += 1;
                    return Err(e.with_context(None, Some(number)).with_line(Some(line)));
                }
            }
        }
        Ok(())
    }

    /// Settles a batch sent earlier (a table's refused rows rejected, a commit if one is due) and hands
    /// its records back to the reading thread.
    fn settle(
        &mut self,
        sent: Option<Unsettled>,
        output: &mut Output,
        done: &mpsc::Sender<Finished>,
    ) -> Result<()> {
        let Some(sent) = sent else { return Ok(()) };
        let record_at = |i| sent.rows.record(i);
        let result = self.end_batch(record_at, sent.first_number, output);
        let (records, buffer) = sent.rows.into_parts();
        // If the reader has already finished, the batch is simply dropped here.
        let _ = done.send(Finished {
            records,
            retired: sent.retired,
            buffer,
            encoded: sent.encoded,
        });
        result
    }

    /// One batch through the error policy and the encoder; `outcomes` are its map and validate results.
    /// A table output still has to end the batch ([`Run::end_batch`]). Mapped records go into `retire`
    /// once written, when the thread that made them is to free them.
    fn records(
        &mut self,
        batch: &[Record],
        outcomes: &mut Outcomes<'_>,
        mut retire: Option<&mut Vec<Record>>,
        output: &mut Output,
    ) -> Result<()> {
        let first_number = self.report.counts.read + 1;
        for record in batch {
            let record_at = |i| batch.get(i).map(Cow::Borrowed);
            if self.limit_reached() && self.limit_holds(record_at, first_number, output)? {
                // `--limit`: the records after it are not read, as far as the run is concerned.
                break;
            }
            self.report.counts.read += 1;
            let number = self.report.counts.read;
            let outcome = outcomes.of(record);
            let encoded = outcomes.encoded();
            self.write_one(
                number,
                record,
                outcome,
                encoded,
                retire.as_deref_mut(),
                output,
            )?;
        }
        Ok(())
    }

    /// Record `number` through the error policy and, unless its outcome or a resumed run leaves it out,
    /// to the encoder; `encoded` holds the bytes of an outcome encoded already.
    fn write_one(
        &mut self,
        number: u64,
        record: &Record,
        outcome: Outcome,
        encoded: &[u8],
        retire: Option<&mut Vec<Record>>,
        output: &mut Output,
    ) -> Result<()> {
        if number <= self.resume_after {
            // Loaded by the run being resumed.
            self.report.counts.skipped += 1;
            return Ok(());
        }
        let mut mapped = None;
        let written = match outcome {
            Outcome::Pass => output.write(number, record),
            Outcome::Mapped(record) => output.write(number, mapped.insert(record)),
            Outcome::Encoded(range) => match encoded.get(range) {
                Some(bytes) => output.write_record_bytes(bytes),
                None => Err(Error::data(
                    Stage::Encode,
                    Position::default().with_record(number),
                    "an encoded record outside its batch (internal error)",
                )),
            },
            Outcome::Filtered => {
                self.report.counts.filtered += 1;
                return Ok(());
            }
            Outcome::Rejected(errors) => return self.reject(number, Some(record), errors),
        };
        if let (Some(retire), Some(mapped)) = (retire, mapped) {
            retire.push(mapped);
        }
        match written {
            Ok(()) => self.report.counts.written += 1,
            Err(e) if e.is_record() => self.reject(number, Some(record), vec![e])?,
            Err(e) => {
                // The output failed on this record: it stops the run, and counts as rejected so that
                // the failed run's report balances.
                self.report.counts.rejected += 1;
                return Err(e.with_context(None, Some(number)).with_line(record.line()));
            }
        }
        Ok(())
    }

    /// Ends a table's batch whose first record is number `first_number`: the rows the database refused
    /// are rejected, and a commit is made if one is due. Nothing to do for a file.
    fn end_batch<'b>(
        &mut self,
        record_at: impl Fn(usize) -> Option<Cow<'b, Record>>,
        first_number: u64,
        output: &mut Output,
    ) -> Result<()> {
        if let Output::Table(table) = output {
            // Rows the database refused were counted as written when they were handed over.
            for (number, error) in table.end_batch()? {
                self.report.counts.written -= 1;
                let index = usize::try_from(number - first_number).unwrap_or(usize::MAX);
                let record = record_at(index);
                self.reject(number, record.as_deref(), vec![error])?;
            }
            if let Some(through) = table.checkpoint(self.report.counts.read)? {
                self.report.last_committed_record = Some(through);
            }
        }
        Ok(())
    }

    /// Whether `--limit` still holds once a table has ended the rows of this batch (first record
    /// `first_number`) handed over so far: rows it refuses no longer count as written, and the batch's next
    /// records then go on to take their place.
    fn limit_holds<'b>(
        &mut self,
        record_at: impl Fn(usize) -> Option<Cow<'b, Record>>,
        first_number: u64,
        output: &mut Output,
    ) -> Result<bool> {
        self.end_batch(record_at, first_number, output)?;
        Ok(self.limit_reached())
    }

    /// True once `--limit` records are written.
    fn limit_reached(&self) -> bool {
        self.limit
            .is_some_and(|limit| self.report.counts.written >= limit)
    }

    /// Closes the output: the encoder's last bytes, or the table load's commit (rollback for a dry run).
    fn finish_output(&mut self, output: Output) -> Result<()> {
        match output {
            Output::File(encoder) => {
                // A sort's `--limit` leaves records out when it finishes: they count as filtered.
                let left_out = encoder.left_out();
                self.report.bytes_written = encoder.finish()?;
                self.report.counts.written -= left_out;
                self.report.counts.filtered += left_out;
            }
            Output::Table(mut table) => {
                table.final_counts(&self.report.counts);
                let tally = table.finish()?;
                // Duplicates were handed to the database as writes; it skipped them.
                self.report.counts.written -= tally.skipped;
                self.report.counts.skipped += tally.skipped;
                self.report.inserted = Some(tally.inserted);
                self.report.updated = Some(tally.updated);
                self.report.created_table = tally.created_table;
                self.report.columns = tally.columns;
            }
        }
        Ok(())
    }

    /// Applies the error policy to a bad record: strict fails the run; lenient and skip set it aside.
    fn reject(&mut self, number: u64, record: Option<&Record>, errors: Vec<Error>) -> Result<()> {
        // A map, validate or sink error names the line the decoder read the record from.
        let line = record.and_then(Record::line);
        let errors: Vec<Error> = errors
            .into_iter()
            .map(|e| {
                e.with_context(Some(&self.input_name), Some(number))
                    .with_line(line)
            })
            .collect();
        // Counted either way, so that a failed run's report balances too.
        self.report.counts.rejected += 1;
        if self.policy == ErrorPolicy::Strict {
            return Err(first_of(errors, number));
        }
        if self.policy == ErrorPolicy::Lenient {
            for e in &errors {
                self.report.push_error(e);
            }
        }
        match &mut self.rejects {
            Some(rejects) => rejects.write(number, record, &errors),
            None => Ok(()),
        }
    }
}

/// The error a strict run fails with: the record's first problem, saying how many more it has.
fn first_of(mut errors: Vec<Error>, number: u64) -> Error {
    let more = errors.len().saturating_sub(1);
    let Some(first) = (!errors.is_empty()).then(|| errors.remove(0)) else {
        return Error::record(
            Stage::Map,
            Position::default().with_record(number),
            "the record was rejected",
        );
    };
    if more == 0 {
        return first;
    }
    let stage = first.stage().unwrap_or(Stage::Map);
    let position = first.position().cloned().unwrap_or_default();
    let plural = if more == 1 { "problem" } else { "problems" };
    Error::record(
        stage,
        position,
        format!(
            "{} (and {more} more {plural} with this record)",
            first.message()
        ),
    )
}

/// The map and validate outcomes of a batch's records, in order.
enum Outcomes<'a> {
    /// No stages: every record is written as read.
    AsRead,
    /// Decided for the whole batch already, with the bytes of the records encoded already.
    Ready(std::vec::IntoIter<Outcome>, Vec<u8>),
    /// Decided for each record as it is taken.
    OneByOne(&'a ThreadStages<'a>),
}

impl Outcomes<'_> {
    /// The next record's outcome. Taken for every record, so that outcomes stay paired with their records.
    fn of(&mut self, record: &Record) -> Outcome {
        match self {
            Outcomes::AsRead => Outcome::Pass,
            Outcomes::Ready(outcomes, _) => outcomes.next().unwrap_or(Outcome::Pass),
            Outcomes::OneByOne(stages) => stages.outcome(record),
        }
    }

    /// The bytes of the records encoded already.
    fn encoded(&self) -> &[u8] {
        match self {
            Outcomes::Ready(_, encoded) => encoded,
            _ => &[],
        }
    }

    /// Their buffer, to be reused.
    fn into_encoded(self) -> Option<Vec<u8>> {
        match self {
            Outcomes::Ready(_, encoded) if encoded.capacity() > 0 => Some(encoded),
            _ => None,
        }
    }
}

/// Lets the reading thread map batches too, when the run has no worker pool (two cores: one decodes, one
/// encodes) and writes a file or a table that asks for it (SQLite, below). It maps while the encoding thread has at least half a batch of records to
/// map ahead of it (`waiting`: sent, and not yet written), and otherwise hands a batch over as read, so the
/// share settles by itself where the two threads are equally busy. Where the output's records are
/// independent of one another (NDJSON) it encodes them too (`RecordBytes`), each right after its stages,
/// a piece of the batch at a time while the encoding thread is still behind, and sends the rest as read:
/// a batch it encoded costs the encoding thread only a copy of its bytes, no mapped record crosses from
/// one core to the other, and each is freed at once by the thread that made it. Records it mapped and did
/// not encode go back to it to be freed, with their source (one allocator arena per thread). Templated 1M-row
/// CSV → NDJSON: 3.09 s against 3.41 mapping batches here (means of four alternating runs); with the
/// encoding and the backlog in records, 1.58–1.67 s against 1.91–1.96 (see BENCHMARKS.md, "Ninth pass").
/// Into SQLite (`TableSink::maps_beside`) the reading thread maps too, in batches of `CHUNK_RECORDS` so that
/// the records held with an unsettled batch stay few: templated 1M-row CSV → SQLite 4.80 s against 6.85
/// (`scripts/bench-15`, same run), peak RSS 36 MiB against 52. That needs an allocator that frees memory
/// in the arena of the thread that made it: with glibc's (its per-thread cache takes the other thread's
/// chunks, and then returns them under that thread's arena lock) the two threads waited on each other's
/// locks and the run took twice the CPU, so the binary uses jemalloc (`src/main.rs`).
/// Not into PostgreSQL: there the server's work decides the time (no change), and the records held until
/// the server answers for the batch took the peak RSS from 55 to 75 MiB.
struct ReaderMapping {
    stages: Arc<Stages>,
    /// Records sent that the encoding thread has to map (or encode), until it has written them.
    waiting: Arc<AtomicUsize>,
    /// The reading thread maps while `waiting` is at least this, half a batch (or half the batch just read,
    /// if fewer): enough to keep the encoding thread busy while the next batch is decoded.
    backlog: usize,
    /// Encodes the records mapped here, when the output's records are independent of one another (NDJSON):
    /// each is encoded right after its stages, while it is in the cache, and freed at once; the encoding
    /// thread only copies the bytes.
    encoder: Option<RefCell<Box<dyn RecordBytes>>>,
}

impl ReaderMapping {
    /// True while the encoding thread has at least half a batch of records to map ahead of it, `batch`
    /// the one just read: batches of wide records end at their input size, with fewer records than
    /// `backlog` counts on, and no more than a few batches are ever waiting.
    fn behind(&self, batch: usize) -> bool {
        let half = (batch / 2).clamp(1, self.backlog);
        self.waiting.load(Ordering::Relaxed) >= half
    }

    /// Maps (and, when the output allows, encodes) a batch on the reading thread, a piece at a time, only
    /// while the encoding thread is still behind: the rest, past the outcomes returned, are to be handed
    /// over as read. Whole batches mapped here into SQLite left the encoding thread idle ~14 % of a 1M-row
    /// load (cpu-clock samples by thread) while this one was always busy; by pieces, both are busy.
    fn map(
        &self,
        stages: &ThreadStages<'_>,
        batch: &[Record],
        returned: &mut Returned,
    ) -> MappedThere {
        let mut encoder = self.encoder.as_ref().map(RefCell::borrow_mut);
        let mut encoded = encoder.as_ref().map(|_| {
            let mut bytes = returned.encoded.pop().unwrap_or_default();
            bytes.clear();
            bytes
        });
        let mut outcomes = Vec::with_capacity(batch.len());
        for piece in batch.chunks(READER_PIECE) {
            outcomes.extend(
                piece
                    .iter()
                    .map(|record| match (&mut encoder, &mut encoded) {
                        (Some(encoder), Some(out)) => {
                            stages.outcome_encoded(record, encoder.as_mut(), out)
                        }
                        _ => stages.outcome(record),
                    }),
            );
            if !self.behind(batch.len()) {
                break;
            }
        }
        MappedThere { outcomes, encoded }
    }
}

/// A batch's outcomes as the reading thread decided them, with the bytes of its records it encoded.
struct MappedThere {
    outcomes: Vec<Outcome>,
    /// None when the records are mapped but not encoded.
    encoded: Option<Vec<u8>>,
}

/// Where the reading thread sends batches, takes finished ones back to free, and maps when it should.
struct Feed<'a> {
    batches: &'a mpsc::SyncSender<Batch>,
    done: &'a mpsc::Receiver<Finished>,
    sharing: Option<&'a ReaderMapping>,
    /// This thread's stages, when it shares the mapping.
    stages: Option<ThreadStages<'a>>,
    /// Into a table with no map stage: once the plan is made, rows are encoded here (see `text_rows`).
    text_plan: Option<&'a SharedTextPlan>,
}

impl Feed<'_> {
    /// Sends a batch of records in order, mapped here if the encoding thread is behind; false when no one
    /// is listening any more.
    fn records(&self, mut batch: Vec<Record>, returned: &mut Returned) -> bool {
        let behind = |s: &&ReaderMapping| s.behind(batch.len());
        let (Some(sharing), Some(stages)) = (self.sharing.filter(behind), &self.stages) else {
            return self.send(Batch::Records(batch, None));
        };
        let mapped = sharing.map(stages, &batch, returned);
        let taken = mapped.outcomes.len();
        let rest = (taken < batch.len()).then(|| batch.split_off(taken));
        if !self.send(Batch::Records(batch, Some(mapped))) {
            return false;
        }
        match rest {
            Some(rest) => self.send(Batch::Records(rest, None)),
            None => true,
        }
    }

    /// Sends a batch, counted while it leaves the encoding thread work to do.
    fn send(&self, message: Batch) -> bool {
        if let Some(sharing) = self.sharing {
            sharing.waiting.fetch_add(message.work(), Ordering::Relaxed);
        }
        self.batches.send(message).is_ok()
    }

    /// The plan for encoding rows here, once the encoding thread has made one.
    fn text_plan(&self) -> Option<Arc<TextPlan>> {
        self.text_plan?.get().cloned().flatten()
    }

    /// Sends a decoder's error: a bad record, after which the stream goes on, or the end of the input.
    /// False when the reading is over.
    fn error(&self, e: Error) -> bool {
        let recoverable = e.is_record();
        let message = match recoverable {
            true => Batch::BadRecord(e),
            false => Batch::Fatal(e),
        };
        self.batches.send(message).is_ok() && recoverable
    }
}

/// What the encoding thread has finished with, going back to the reading thread.
struct Finished {
    records: Vec<Record>,
    /// Records the reading thread mapped, to be freed there.
    retired: Vec<Record>,
    /// The buffer of an encoded batch, to encode another batch into.
    buffer: Option<BytesMut>,
    /// The buffer of the records the reading thread encoded (see `ReaderMapping`), to be reused.
    encoded: Option<Vec<u8>>,
}

/// What the reading thread has taken back from the encoding thread.
#[derive(Default)]
struct Returned {
    /// Records of a batch the encoder has finished with. One goes back to the decoder just before each
    /// record is decoded, to be refilled as the next one (a CSV row's cells written into the buffers its
    /// column's cells had: nothing allocated, nothing freed) or dropped while the memory it frees is still
    /// in this thread's allocator cache. One for one only keeps pace, though: every moment with nothing to
    /// retire leaves the next batches waiting longer, for good. So when the next batch is taken, any others
    /// already waiting are dropped at once, and no more than a few batches ever exist, however long the
    /// input.
    records: Vec<Record>,
    /// Records this thread mapped, returned with their batch. They are no use to the decoder (their
    /// fields are the template's, so refilling one allocates every cell anew, as a new record does), so
    /// one is freed beside each record refilled, while this thread's allocator cache takes the memory for
    /// the next. Handed to the decoder with the others, they took a third of its refills into SQLite.
    retired: Vec<Record>,
    /// Buffers of encoded batches: a new batch is encoded into one of them, so that no more are ever made
    /// than are in flight at once (making one per batch grew the peak RSS by 15 MiB per MiB of batch).
    buffers: Vec<BytesMut>,
    /// Buffers of records the reading thread encoded (see `ReaderMapping`), to be reused.
    encoded: Vec<Vec<u8>>,
}

impl Returned {
    fn hand_back(&mut self, decoder: &mut dyn Decoder, done: &mpsc::Receiver<Finished>) {
        drop(self.retired.pop());
        if let Some(record) = self.records.pop() {
            return decoder.reuse(record);
        }
        let mut first = true;
        while let Ok(finished) = done.try_recv() {
            if first {
                self.records = finished.records;
                self.retired = finished.retired;
                first = false;
            }
            self.buffers.extend(finished.buffer);
            // A buffer that grew past a few batches' bytes (very large records) is not kept.
            let kept = finished
                .encoded
                .filter(|e| e.capacity() <= ENCODED_KEPT_BYTES);
            self.encoded.extend(kept);
        }
    }

    /// An empty buffer for an encoded batch of about `capacity` bytes. One that grew to hold much more
    /// (a batch of very large rows) is not kept, so that memory stays in proportion to the batches.
    fn buffer(&mut self, capacity: usize) -> BytesMut {
        while let Some(mut buffer) = self.buffers.pop() {
            if buffer.capacity() <= 2 * capacity {
                buffer.clear();
                return buffer;
            }
        }
        BytesMut::with_capacity(capacity)
    }
}

fn read_batches(
    mut decoder: Box<dyn Decoder>,
    batch_size: usize,
    batch_bytes: u64,
    input_bytes: &AtomicU64,
    feed: &Feed<'_>,
) {
    let mut returned = Returned::default();
    let mut batch = Vec::with_capacity(batch_size.min(crate::job::DEFAULT_BATCH_SIZE));
    let mut batch_start = input_bytes.load(Ordering::Relaxed);
    loop {
        if batch.is_empty() {
            if let Some(plan) = feed.text_plan() {
                let sizes = (batch_size, batch_bytes);
                return read_encoded(decoder, plan, sizes, input_bytes, feed);
            }
        }
        returned.hand_back(decoder.as_mut(), feed.done);
        let Some(item) = decoder.next() else { break };
        match item {
            Ok(record) => batch.push(record),
            Err(e) => {
                if !batch.is_empty() && !feed.records(std::mem::take(&mut batch), &mut returned) {
                    return;
                }
                // A bad record does not end the stream: the decoder has already moved past it.
                if !feed.error(e) {
                    return;
                }
                continue;
            }
        }
        let read = input_bytes.load(Ordering::Relaxed);
        if batch.len() >= batch_size || read - batch_start >= batch_bytes {
            let next = Vec::with_capacity(batch.len());
            let full = std::mem::replace(&mut batch, next);
            if !feed.records(full, &mut returned) {
                return;
            }
            batch_start = read;
        }
    }
    if !batch.is_empty() {
        feed.records(batch, &mut returned);
    }
}

/// Reads the rest of the input as `read_batches` does, plain rows encoded here for the table by `plan`
/// (see `text_rows`), the others as records in their place.
fn read_encoded(
    mut decoder: Box<dyn Decoder>,
    plan: Arc<TextPlan>,
    (batch_size, batch_bytes): (usize, u64),
    input_bytes: &AtomicU64,
    feed: &Feed<'_>,
) {
    let batch_size = batch_size.saturating_mul(ENCODED_BATCH_FACTOR);
    let batch_bytes = batch_bytes.saturating_mul(ENCODED_BATCH_FACTOR as u64);
    let rows = batch_size.min(crate::job::DEFAULT_BATCH_SIZE * ENCODED_BATCH_FACTOR);
    // Encoded rows take about as many bytes as their input, and a little more.
    let bytes = batch_bytes as usize + batch_bytes as usize / 4;
    let mut returned = Returned::default();
    let new_batch = |returned: &mut Returned| {
        EncodedBatch::new(Arc::clone(&plan), rows, returned.buffer(bytes))
    };
    let mut batch = new_batch(&mut returned);
    let send = |batch: EncodedBatch| feed.batches.send(Batch::Encoded(batch)).is_ok();
    let mut batch_start = input_bytes.load(Ordering::Relaxed);
    loop {
        returned.hand_back(decoder.as_mut(), feed.done);
        let Some(item) = decoder.next_or_text_row(&plan.keys, &mut batch) else {
            break;
        };
        match item {
            Ok(None) => {}
            Ok(Some(record)) => batch.items.push(Item::Record(record)),
            Err(e) => {
                if !batch.items.is_empty() {
                    let next = new_batch(&mut returned);
                    if !send(std::mem::replace(&mut batch, next)) {
                        return;
                    }
                }
                if !feed.error(e) {
                    return;
                }
                continue;
            }
        }
        let read = input_bytes.load(Ordering::Relaxed);
        if batch.items.len() >= batch_size || read - batch_start >= batch_bytes {
            let next = new_batch(&mut returned);
            if !send(std::mem::replace(&mut batch, next)) {
                return;
            }
            batch_start = read;
        }
    }
    if !batch.items.is_empty() {
        send(batch);
    }
}

/// The encoding thread's side of a [`TextPlan`]: it is made once the table's columns are fixed — when
/// the first batch is settled (a table takes its columns from the first records), or later if no record
/// was loaded by then — for the fields of the first record.
struct Planning {
    slot: SharedTextPlan,
    keys: Option<Vec<Key>>,
}

impl Planning {
    fn new(slot: SharedTextPlan) -> Planning {
        Planning { slot, keys: None }
    }

    /// The fields of a batch's first record, while the plan still needs them.
    fn keys_of(&self, batch: &[Record]) -> Option<Vec<Key>> {
        if self.keys.is_some() || self.slot.get().is_some() {
            return None;
        }
        let first = batch.first()?;
        Some(first.iter().map(|(key, _)| key.clone()).collect())
    }

    /// After a batch of records is taken: the plan is made if the table's columns are fixed (a resumed run
    /// may skip many batches before it loads a record).
    fn after_batch(&mut self, keys: Option<Vec<Key>>, output: &Output) {
        if self.slot.get().is_some() {
            return;
        }
        self.keys = self.keys.take().or(keys);
        let columns = match output {
            Output::Table(table) => table.text_columns(),
            Output::File(_) => TextColumns::No,
        };
        let plan = match (columns, self.keys.take()) {
            (TextColumns::NotYet, keys) => {
                self.keys = keys;
                return;
            }
            (TextColumns::Fields(fields), Some(keys)) => TextPlan::new(keys, &fields).map(Arc::new),
            _ => None,
        };
        let _ = self.slot.set(plan);
    }
}

/// A batch whose records were handed to a table, kept until the table has ended the batch: the rows it
/// refuses are rejected with their records as read. Ending it (the database's last rows of the batch, a
/// savepoint released) waits for the server, so the next batch is mapped first.
struct Unsettled {
    rows: Rows,
    first_number: u64,
    /// Its records as mapped by the reading thread, to be freed there.
    retired: Vec<Record>,
    /// The buffer of its records the reading thread encoded, to be reused there.
    encoded: Option<Vec<u8>>,
}

/// The rows of a batch sent to a table.
enum Rows {
    Records(Vec<Record>),
    Encoded(EncodedBatch),
}

impl Rows {
    /// The record of the batch's row `index`, for the rejects file.
    fn record(&self, index: usize) -> Option<Cow<'_, Record>> {
        match self {
            Rows::Records(records) => records.get(index).map(Cow::Borrowed),
            Rows::Encoded(batch) => batch.record(index),
        }
    }

    /// Its records and its buffer of encoded rows, to go back to the reading thread.
    fn into_parts(self) -> (Vec<Record>, Option<BytesMut>) {
        match self {
            Rows::Records(records) => (records, None),
            Rows::Encoded(batch) => {
                let (records, buffer) = batch.into_parts();
                (records, Some(buffer))
            }
        }
    }
}

/// Messages from the decoding thread.
enum Batch {
    /// Records in input order, and their map and validate outcomes when the reading thread made them.
    Records(Vec<Record>, Option<MappedThere>),
    /// Rows in input order, plain ones encoded for the table (see `text_rows`).
    Encoded(EncodedBatch),
    /// One record could not be decoded; the ones after it can.
    BadRecord(Error),
    /// The input cannot be read any further.
    Fatal(Error),
}

impl Batch {
    /// The records the batch leaves the encoding thread to map or encode, beyond writing bytes.
    fn work(&self) -> usize {
        match self {
            Batch::Records(records, None) => records.len(),
            Batch::Records(records, Some(there)) if there.encoded.is_none() => records.len(),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_that_grew_far_past_a_batch_is_not_kept() {
        let mut returned = Returned::default();
        let mut grown = BytesMut::with_capacity(64 << 20);
        grown.extend_from_slice(b"rows of a batch of very large rows");
        let mut usual = BytesMut::with_capacity(1 << 20);
        usual.extend_from_slice(b"rows");
        returned.buffers = vec![usual, grown];
        let buffer = returned.buffer(1 << 20);
        assert!(buffer.is_empty());
        assert!(buffer.capacity() < 2 << 20, "{}", buffer.capacity());
        assert!(returned.buffers.is_empty());
        // With none kept, a new one of the size asked for.
        assert!(returned.buffer(1 << 20).capacity() >= 1 << 20);
    }

    #[test]
    fn a_tables_batch_is_mapped_by_the_reading_thread_a_piece_at_a_time_while_the_other_is_behind()
    {
        let stages = Arc::new(Stages {
            template: None,
            schema: None,
            shape: None,
            pool: None,
            now: chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap(),
        });
        let sharing = ReaderMapping {
            stages: Arc::clone(&stages),
            waiting: Arc::new(AtomicUsize::new(0)),
            backlog: 512,
            encoder: None,
        };
        let (batches, received) = mpsc::sync_channel(4);
        let (_done_tx, done) = mpsc::channel();
        let feed = Feed {
            batches: &batches,
            done: &done,
            sharing: Some(&sharing),
            stages: Some(stages.for_thread()),
            text_plan: None,
        };
        let numbered = |from: i64| -> Vec<Record> {
            (from..from + 1000)
                .map(|n| {
                    let mut record = Record::new();
                    record.insert("n", crate::record::Value::Int(n));
                    record
                })
                .collect()
        };
        let mut returned = Returned::default();
        // Nothing waits on the encoding thread: the batch goes as read, and is work waiting.
        assert!(feed.records(numbered(0), &mut returned));
        assert_eq!(sharing.waiting.load(Ordering::Relaxed), 1000);
        // Now it is behind, and stays so while this thread maps: the whole batch is mapped here.
        assert!(feed.records(numbered(1000), &mut returned));
        let parts: Vec<(i64, usize, bool)> = received
            .try_iter()
            .map(|message| match message {
                Batch::Records(records, there) => {
                    let first = match records[0].get("n") {
                        Some(crate::record::Value::Int(n)) => *n,
                        _ => -1,
                    };
                    let outcomes = there.map(|t| t.outcomes.len());
                    (first, records.len(), outcomes == Some(records.len()))
                }
                _ => (-1, 0, false),
            })
            .collect();
        assert_eq!(parts, [(0, 1000, false), (1000, 1000, true)]);
        // Caught up while a batch is mapped here: only the piece in hand is, the rest goes as read.
        let here = stages.for_thread();
        sharing.waiting.store(499, Ordering::Relaxed);
        let mapped = sharing.map(&here, &numbered(2000), &mut returned);
        assert_eq!(mapped.outcomes.len(), READER_PIECE);
        sharing.waiting.store(500, Ordering::Relaxed);
        let mapped = sharing.map(&here, &numbered(2000), &mut returned);
        assert_eq!(mapped.outcomes.len(), 1000);
    }
}
