//! The compression layer: after encode on the write side ([`CompressWriter`]), before decode on the read side
//! ([`DecompressReader`], capped so that a compression bomb stops early).
//!
//! gzip is compressed in parallel, pigz-style: the input is cut into 1 MiB blocks, worker threads deflate the
//! blocks independently (each primed with the 32 KiB before it as a dictionary, so the ratio stays within a
//! fraction of a percent of one stream, and ended by a sync flush on a byte boundary), and the blocks are written
//! in order as ONE gzip member whose CRC-32 is combined from the blocks' CRCs: any gzip reader reads it. At most
//! `2 × threads` blocks are in flight and their buffers are reused, so memory stays constant (about 10 MB for
//! two threads).

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, BufRead, Read, Write};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

use flate2::{Compress, FlushCompress, Status};

use super::{Compression, CompressionSpec};

/// The default cap on decompressed bytes (`--max-decompressed-size`): 16 GiB. ferry streams, so the cap is not
/// about memory but about disk and time. 16 GiB is above any input we expect to convert in one run, and a
/// bomb hits it after about 20 seconds instead of filling a disk: gzip's best ratio (about 1000:1) needs a 16 MB file
/// to get there, zstd's and brotli's (far higher) stop at the same point.
pub const DEFAULT_MAX_DECOMPRESSED: u64 = 16 << 30;

/// The gzip block size: large enough that the per-block cost (a thread, a flush marker) is lost in the noise.
const BLOCK: usize = 1 << 20;
/// deflate's window: the most of the previous block that a block can refer back to.
const WINDOW: usize = 32 * 1024;

/// Compresses what is written into `W`. [`CompressWriter::finish`] writes the trailer and must be called: a
/// writer dropped without it leaves a truncated stream.
pub struct CompressWriter<W: Write> {
    inner: Encoder<W>,
}

enum Encoder<W: Write> {
    None(W),
    Gzip(flate2::write::GzEncoder<W>),
    ParGzip(ParGzip<W>),
    Brotli(Box<brotli::CompressorWriter<Tracked<W>>>),
    Zstd(zstd::Encoder<'static, W>),
}

impl<W: Write> CompressWriter<W> {
    /// A writer that compresses as `spec` says, using as many threads as the machine has cores.
    pub fn new(inner: W, spec: CompressionSpec) -> io::Result<CompressWriter<W>> {
        let threads = thread::available_parallelism().map_or(1, |n| n.get());
        CompressWriter::with_threads(inner, spec, threads)
    }

    /// A writer that compresses as `spec` says on up to `threads` threads (gzip and zstd; brotli compresses on the
    /// calling thread). With one thread, everything happens on the calling thread.
    pub fn with_threads(
        inner: W,
        spec: CompressionSpec,
        threads: usize,
    ) -> io::Result<CompressWriter<W>> {
        let level = spec.level.min(*spec.kind.levels().end());
        let inner = match spec.kind {
            Compression::None => Encoder::None(inner),
            Compression::Gzip if threads <= 1 => Encoder::Gzip(flate2::write::GzEncoder::new(
                inner,
                flate2::Compression::new(level),
            )),
            Compression::Gzip => Encoder::ParGzip(ParGzip::new(inner, level, threads)?),
            // lgwin 22 (4 MiB) is the brotli tool's default window.
            Compression::Brotli => Encoder::Brotli(Box::new(brotli::CompressorWriter::new(
                Tracked::new(inner),
                64 * 1024,
                level,
                22,
            ))),
            Compression::Zstd => {
                let mut encoder = zstd::Encoder::new(inner, level as i32)?;
                // The checksum is what the zstd tool writes too: it lets a reader catch corrupted data.
                encoder.include_checksum(true)?;
                if threads > 1 {
                    encoder.multithread(threads as u32)?;
                }
                Encoder::Zstd(encoder)
            }
        };
        Ok(CompressWriter { inner })
    }

    /// Compresses what is left, writes the trailer, flushes and gives back the inner writer.
    pub fn finish(self) -> io::Result<W> {
        let mut out = match self.inner {
            Encoder::None(w) => w,
            Encoder::Gzip(e) => e.finish()?,
            Encoder::ParGzip(e) => e.finish()?,
            // brotli's into_inner drops write errors; Tracked kept the first one.
            Encoder::Brotli(e) => e.into_inner().into_result()?,
            Encoder::Zstd(e) => e.finish()?,
        };
        out.flush()?;
        Ok(out)
    }
}

impl<W: Write> Write for CompressWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            Encoder::None(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::ParGzip(e) => e.write(buf),
            Encoder::Brotli(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }

    /// Pushes everything written so far through to the inner writer. This ends a compression block early, so
    /// frequent flushes cost ratio.
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Encoder::None(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::ParGzip(e) => e.flush(),
            Encoder::Brotli(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

/// The parallel gzip encoder (see the module documentation).
struct ParGzip<W: Write> {
    out: W,
    jobs: mpsc::Sender<Job>,
    /// The block being filled: up to `WINDOW` bytes of history (the dictionary), then up to `BLOCK` new bytes.
    block: Vec<u8>,
    dict_len: usize,
    /// Blocks being deflated, oldest first: written in this order.
    pending: VecDeque<mpsc::Receiver<io::Result<Deflated>>>,
    max_pending: usize,
    /// The buffers of written blocks, for reuse: memory stays flat and the allocator sees no churn.
    free_inputs: Vec<Vec<u8>>,
    free_outputs: Vec<Vec<u8>>,
    crc: crc32fast::Hasher,
    size: u64,
}

/// A block for a worker: `input[..dict_len]` is history, `input[dict_len..]` the bytes to deflate.
struct Job {
    input: Vec<u8>,
    dict_len: usize,
    output: Vec<u8>,
    last: bool,
    reply: mpsc::SyncSender<io::Result<Deflated>>,
}

/// A deflated block, its buffers handed back, and what the gzip trailer needs of its input.
struct Deflated {
    input: Vec<u8>,
    output: Vec<u8>,
    crc: crc32fast::Hasher,
    len: usize,
}

impl<W: Write> ParGzip<W> {
    fn new(mut out: W, level: u32, threads: usize) -> io::Result<ParGzip<W>> {
        // RFC 1952 header: no name, no time stamp (reproducible output), XFL for the best and fastest levels,
        // OS "unknown" as flate2 writes it.
        let xfl = match level {
            9 => 2,
            1 => 4,
            _ => 0,
        };
        out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255])?;
        // The workers live as long as the encoder: they stop when the job channel closes.
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for _ in 0..threads {
            let queue = Arc::clone(&queue);
            let level = flate2::Compression::new(level);
            thread::Builder::new()
                .name("ferry-gzip".into())
                .spawn(move || deflate_worker(&queue, level))?;
        }
        Ok(ParGzip {
            out,
            jobs,
            block: Vec::with_capacity(WINDOW + BLOCK),
            dict_len: 0,
            pending: VecDeque::new(),
            max_pending: threads * 2,
            free_inputs: Vec::new(),
            free_outputs: Vec::new(),
            crc: crc32fast::Hasher::new(),
            size: 0,
        })
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.block.len() == self.dict_len + BLOCK && !buf.is_empty() {
            self.submit(false)?;
        }
        let n = buf.len().min(self.dict_len + BLOCK - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    /// Hands the current block to the workers; `last` ends the deflate stream.
    fn submit(&mut self, last: bool) -> io::Result<()> {
        while self.pending.len() >= self.max_pending {
            self.write_oldest()?;
        }
        let mut next = self
            .free_inputs
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(WINDOW + BLOCK));
        // The next block's history is the end of everything before it, this block's history included.
        next.extend_from_slice(&self.block[self.block.len().saturating_sub(WINDOW)..]);
        let dict_len = std::mem::replace(&mut self.dict_len, next.len());
        let input = std::mem::replace(&mut self.block, next);
        let (reply, result) = mpsc::sync_channel(1);
        let job = Job {
            input,
            dict_len,
            output: self.free_outputs.pop().unwrap_or_default(),
            last,
            reply,
        };
        self.jobs
            .send(job)
            .map_err(|_| io::Error::other("the gzip compression threads stopped"))?;
        self.pending.push_back(result);
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        let Some(result) = self.pending.pop_front() else {
            return Ok(());
        };
        let mut block = result
            .recv()
            .map_err(|_| io::Error::other("a gzip compression thread stopped"))??;
        self.crc.combine(&block.crc);
        self.size += block.len as u64;
        self.out.write_all(&block.output)?;
        block.input.clear();
        block.output.clear();
        self.free_inputs.push(block.input);
        self.free_outputs.push(block.output);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.block.len() > self.dict_len {
            self.submit(false)?;
        }
        while !self.pending.is_empty() {
            self.write_oldest()?;
        }
        self.out.flush()
    }

    fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        while !self.pending.is_empty() {
            self.write_oldest()?;
        }
        // The trailer: CRC-32 and the input size modulo 2^32, both little-endian.
        self.out
            .write_all(&self.crc.clone().finalize().to_le_bytes())?;
        self.out.write_all(&(self.size as u32).to_le_bytes())?;
        Ok(self.out)
    }
}

/// A worker thread: deflates blocks until the job channel closes, reusing one compressor.
fn deflate_worker(queue: &Mutex<mpsc::Receiver<Job>>, level: flate2::Compression) {
    let mut c = Compress::new(level, false);
    loop {
        // The lock is held only while waiting for a job, so the workers take turns at the queue.
        let job = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        let Ok(mut job) = job else {
            return;
        };
        c.reset();
        let result = deflate_block(&mut c, &job.input, job.dict_len, &mut job.output, job.last);
        let len = job.input.len() - job.dict_len;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&job.input[job.dict_len..]);
        let _ = job.reply.send(result.map(|()| Deflated {
            input: job.input,
            output: job.output,
            crc,
            len,
        }));
    }
}

/// Deflates `input[dict_len..]` as raw deflate into `out`, primed with `input[..dict_len]`. A block that is not
/// the last ends with a sync flush, which byte-aligns the output and leaves the stream open, so blocks deflated
/// apart concatenate into one valid stream.
fn deflate_block(
    c: &mut Compress,
    input: &[u8],
    dict_len: usize,
    out: &mut Vec<u8>,
    last: bool,
) -> io::Result<()> {
    if dict_len > 0 {
        c.set_dictionary(&input[..dict_len])
            .map_err(io::Error::other)?;
    }
    let input = &input[dict_len..];
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    out.reserve(input.len() / 2 + 1024);
    loop {
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&input[consumed..], out, flush)
            .map_err(io::Error::other)?;
        // zlib's rule: the flush is complete once a call returns without filling the output.
        let done = if last {
            status == Status::StreamEnd
        } else {
            c.total_in() as usize == input.len() && out.len() < out.capacity()
        };
        if done {
            return Ok(());
        }
        out.reserve(out.capacity().max(4096));
    }
}

/// Keeps the first write error, which brotli's `into_inner` would otherwise drop.
struct Tracked<W> {
    inner: W,
    error: Option<io::Error>,
}

impl<W> Tracked<W> {
    fn new(inner: W) -> Tracked<W> {
        Tracked { inner, error: None }
    }

    fn into_result(self) -> io::Result<W> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.inner),
        }
    }
}

impl<W: Write> Write for Tracked<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf).inspect_err(|e| {
            if self.error.is_none() {
                self.error = Some(io::Error::new(e.kind(), e.to_string()));
            }
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Decompresses what is read from `R`, and fails once more than a set number of bytes come out.
pub struct DecompressReader<R: BufRead> {
    inner: Decoder<R>,
    limit: u64,
    total: u64,
    over: bool,
}

enum Decoder<R: BufRead> {
    None(R),
    Gzip(Box<flate2::bufread::MultiGzDecoder<R>>),
    Brotli(Box<brotli::Decompressor<R>>),
    Zstd(zstd::Decoder<'static, R>),
}

impl<R: BufRead> DecompressReader<R> {
    /// A reader that decompresses `kind` and fails with [`LimitExceeded`] after `max_bytes` decompressed bytes.
    /// The cap does not apply to [`Compression::None`]: a plain file is as large as it is.
    pub fn new(inner: R, kind: Compression, max_bytes: u64) -> io::Result<DecompressReader<R>> {
        let inner = match kind {
            Compression::None => Decoder::None(inner),
            Compression::Gzip => {
                Decoder::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(inner)))
            }
            Compression::Brotli => {
                Decoder::Brotli(Box::new(brotli::Decompressor::new(inner, 64 * 1024)))
            }
            // zstd's decoder refuses windows over 128 MiB by default, so a crafted frame cannot claim much memory.
            Compression::Zstd => Decoder::Zstd(zstd::Decoder::with_buffer(inner)?),
        };
        let limit = if kind == Compression::None {
            u64::MAX
        } else {
            max_bytes
        };
        Ok(DecompressReader {
            inner,
            limit,
            total: 0,
            over: false,
        })
    }

    /// Decompressed bytes read so far.
    pub fn total_out(&self) -> u64 {
        self.total
    }
}

impl<R: BufRead> Read for DecompressReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.over {
            return Err(LimitExceeded { limit: self.limit }.into());
        }
        // Ask for one byte past the cap at most, so that going over it is seen without decompressing further.
        let room = self.limit - self.total;
        let len = buf
            .len()
            .min(usize::try_from(room.saturating_add(1)).unwrap_or(usize::MAX));
        let buf = &mut buf[..len];
        let n = match &mut self.inner {
            Decoder::None(r) => r.read(buf)?,
            Decoder::Gzip(r) => r.read(buf)?,
            Decoder::Brotli(r) => {
                let n = r.read(buf)?;
                if n == 0 && !buf.is_empty() {
                    brotli_ends_here(r)?;
                }
                n
            }
            Decoder::Zstd(r) => r.read(buf)?,
        };
        if n as u64 > room {
            // Hand out the bytes up to the cap; the next read fails.
            self.over = true;
            self.total = self.limit;
            if room == 0 {
                return Err(LimitExceeded { limit: self.limit }.into());
            }
            return Ok(room as usize);
        }
        self.total += n as u64;
        Ok(n)
    }
}

/// Fails when bytes follow the end of a brotli stream, as gzip and zstd do: brotli's reader stops at the
/// stream's end and would otherwise ignore whatever was appended. A second read reports what its own buffer
/// still holds; what it has not read yet is still in the reader beneath.
fn brotli_ends_here<R: BufRead>(r: &mut brotli::Decompressor<R>) -> io::Result<()> {
    let appended = r.read(&mut [0u8; 1]).is_err() || !r.get_mut().fill_buf()?.is_empty();
    if appended {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "data after the end of the brotli stream: something was appended to the file",
        ));
    }
    Ok(())
}

/// The error a [`DecompressReader`] returns past its cap, inside an `io::Error` of kind `InvalidData`:
/// `err.get_ref().and_then(|e| e.downcast_ref::<LimitExceeded>())` tells it apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitExceeded {
    /// The cap, in decompressed bytes.
    pub limit: u64,
}

impl fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "decompressed data exceeds the limit of {} bytes (--max-decompressed-size); \
             the input may be a compression bomb",
            self.limit
        )
    }
}

impl std::error::Error for LimitExceeded {}

impl From<LimitExceeded> for io::Error {
    fn from(err: LimitExceeded) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    const KINDS: [Compression; 3] = [Compression::Gzip, Compression::Brotli, Compression::Zstd];

    /// Text with structure (so it compresses) mixed with incompressible noise.
    fn sample(len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 100);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut i = 0u64;
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if i % 4 == 0 {
                out.extend_from_slice(&x.to_le_bytes());
            } else {
                let line = format!("{{\"id\":{i},\"name\":\"row {}\",\"ok\":true}}\n", x % 1000);
                out.extend_from_slice(line.as_bytes());
            }
            i += 1;
        }
        out.truncate(len);
        out
    }

    fn compress(kind: Compression, data: &[u8], threads: usize) -> Vec<u8> {
        let mut w =
            CompressWriter::with_threads(Vec::new(), CompressionSpec::new(kind), threads).unwrap();
        // Odd-sized writes, so block and chunk boundaries fall anywhere.
        for piece in data.chunks(77_777) {
            w.write_all(piece).unwrap();
        }
        w.finish().unwrap()
    }

    fn decompress(kind: Compression, data: &[u8], max: u64) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        DecompressReader::new(data, kind, max)?.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn round_trips_every_format_and_thread_count() {
        for kind in KINDS {
            for threads in [1, 3] {
                for len in [0, 1, 1000, BLOCK, BLOCK + 1, 10_000_000] {
                    let data = sample(len);
                    let packed = compress(kind, &data, threads);
                    let back = decompress(kind, &packed, DEFAULT_MAX_DECOMPRESSED).unwrap();
                    assert!(back == data, "{kind} threads {threads} len {len}");
                }
            }
        }
    }

    #[test]
    fn parallel_gzip_ratio_is_close_to_a_single_stream() {
        let data = sample(5_000_000);
        let single = compress(Compression::Gzip, &data, 1).len() as f64;
        let parallel = compress(Compression::Gzip, &data, 2).len() as f64;
        assert!(parallel / single < 1.01, "{parallel} vs {single}");
    }

    #[test]
    fn no_compression_passes_bytes_through_uncapped() {
        let packed = compress(Compression::None, b"plain", 2);
        assert_eq!(packed, b"plain");
        assert_eq!(decompress(Compression::None, &packed, 1).unwrap(), b"plain");
    }

    #[test]
    fn flush_makes_everything_written_so_far_readable() {
        for kind in KINDS {
            let mut w =
                CompressWriter::with_threads(Vec::new(), CompressionSpec::new(kind), 2).unwrap();
            w.write_all(b"first half ").unwrap();
            w.flush().unwrap();
            w.write_all(b"second half").unwrap();
            let packed = w.finish().unwrap();
            let back = decompress(kind, &packed, 1000).unwrap();
            assert_eq!(back, b"first half second half", "{kind}");
        }
    }

    #[test]
    fn concatenated_gzip_members_read_whole() {
        let mut packed = compress(Compression::Gzip, b"one ", 2);
        packed.extend(compress(Compression::Gzip, b"two", 1));
        assert_eq!(
            decompress(Compression::Gzip, &packed, 100).unwrap(),
            b"one two"
        );
    }

    /// The system tool that reads `kind`, with the package that has it.
    fn tool(kind: Compression) -> (&'static str, &'static str) {
        match kind {
            Compression::Gzip => ("gzip", "gzip"),
            Compression::Brotli => ("brotli", "brotli"),
            Compression::Zstd => ("zstd", "zstd"),
            Compression::None => unreachable!(),
        }
    }

    /// Runs `tool args` with `input` on standard input; fails with an install hint when the tool is missing.
    fn run_tool(kind: Compression, args: &[&str], input: &[u8]) -> Vec<u8> {
        let (name, package) = tool(kind);
        let mut child = Command::new(name)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run `{name}` ({e}): these tests need it; install it with `apt-get install -y {package}`")
            });
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let feeder = thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap().unwrap();
        assert!(out.status.success(), "{name} {args:?} failed");
        out.stdout
    }

    #[test]
    fn system_tools_read_what_we_write_and_we_read_theirs() {
        let data = sample(3 * BLOCK + 12345);
        for kind in KINDS {
            for threads in [1, 2] {
                let packed = compress(kind, &data, threads);
                let back = run_tool(kind, &["-d", "-c"], &packed);
                assert!(
                    back == data,
                    "{kind} threads {threads}: the tool read other bytes"
                );
            }
            let theirs = run_tool(kind, &["-c"], &data);
            assert!(
                decompress(kind, &theirs, u64::MAX).unwrap() == data,
                "{kind}"
            );
        }
        // gzip -t checks the CRC and size in the trailer of the parallel encoder's output.
        let packed = compress(Compression::Gzip, &data, 2);
        run_tool(Compression::Gzip, &["-t"], &packed);
    }

    /// Streams `len` zeros into a compressor, the way a bomb is made, without holding them in memory.
    fn bomb(kind: Compression, len: usize) -> Vec<u8> {
        let spec = CompressionSpec { kind, level: 9 };
        let mut w = CompressWriter::with_threads(Vec::new(), spec, 2).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..len >> 20 {
            w.write_all(&zeros).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn a_bomb_stops_at_the_cap() {
        let cap = 10 << 20;
        for kind in [Compression::Gzip, Compression::Zstd] {
            let packed = bomb(kind, 1 << 30);
            assert!(packed.len() < 2 << 20, "{kind}: {} bytes", packed.len());
            let mut reader = DecompressReader::new(&packed[..], kind, cap).unwrap();
            let mut sink = Vec::new();
            let err = (&mut reader)
                .take(1 << 30)
                .read_to_end(&mut sink)
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            assert_eq!(
                err.to_string(),
                "decompressed data exceeds the limit of 10485760 bytes (--max-decompressed-size); \
                 the input may be a compression bomb"
            );
            let inner = err
                .get_ref()
                .and_then(|e| e.downcast_ref::<LimitExceeded>());
            assert_eq!(inner, Some(&LimitExceeded { limit: cap }));
            assert_eq!(
                sink.len() as u64,
                cap,
                "{kind}: every byte up to the cap comes out"
            );
            assert!(reader.read(&mut [0; 10]).is_err(), "the error sticks");
        }
        // brotli compresses zeros even better; a smaller bomb is enough to show the cap holds.
        let packed = bomb(Compression::Brotli, 64 << 20);
        let err = decompress(Compression::Brotli, &packed, cap).unwrap_err();
        assert!(err.to_string().contains("compression bomb"));
    }

    #[test]
    fn the_cap_allows_exactly_its_size() {
        let data = sample(5000);
        for kind in KINDS {
            let packed = compress(kind, &data, 2);
            assert_eq!(decompress(kind, &packed, 5000).unwrap(), data);
            assert!(decompress(kind, &packed, 4999).is_err());
        }
    }

    #[test]
    fn truncated_input_is_an_error_not_short_data() {
        let data = sample(300_000);
        for kind in KINDS {
            let packed = compress(kind, &data, 2);
            for cut in [
                1,
                2,
                10,
                packed.len() / 2,
                packed.len() - 4,
                packed.len() - 1,
            ] {
                let result = decompress(kind, &packed[..cut], u64::MAX);
                assert!(
                    result.is_err(),
                    "{kind} cut at {cut} of {} read without error",
                    packed.len()
                );
            }
        }
    }

    #[test]
    fn bytes_after_the_stream_are_an_error_for_every_format() {
        let data = sample(300_000);
        for kind in KINDS {
            let packed = compress(kind, &data, 2);
            assert!(
                decompress(kind, &packed, u64::MAX).unwrap() == data,
                "{kind}"
            );
            // A few bytes, and more than the brotli reader's own 64 KiB buffer holds.
            for extra in [&b"x"[..], b"appended garbage", &[b'z'; 200_000]] {
                let mut longer = packed.clone();
                longer.extend_from_slice(extra);
                let result = decompress(kind, &longer, u64::MAX);
                assert!(
                    result.is_err(),
                    "{kind}: {} bytes appended were ignored",
                    extra.len()
                );
            }
        }
    }

    #[test]
    fn corrupted_input_is_an_error() {
        // gzip and zstd carry a checksum of the data; brotli has none, so only decryption catches a flip there.
        let data = sample(300_000);
        for kind in [Compression::Gzip, Compression::Zstd] {
            let mut packed = compress(kind, &data, 2);
            let middle = packed.len() / 2;
            packed[middle] ^= 0x10;
            assert!(decompress(kind, &packed, u64::MAX).is_err(), "{kind}");
        }
    }

    /// Peak memory while 1 GiB streams through the parallel gzip encoder (Linux): run it alone, with
    /// `cargo test --lib memory_stays_flat -- --ignored --nocapture`, since the peak is the whole process's.
    #[test]
    #[ignore]
    fn memory_stays_flat() {
        let peak = || {
            std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|s| {
                    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?.to_owned();
                    line.split_whitespace().nth(1)?.parse::<u64>().ok()
                })
                .unwrap_or(0)
        };
        let before = peak();
        let line = b"{\"id\":12345,\"name\":\"a customer\",\"amount\":12.5}\n".repeat(1000);
        let mut w =
            CompressWriter::with_threads(io::sink(), CompressionSpec::new(Compression::Gzip), 2)
                .unwrap();
        for _ in 0..(1 << 30) / line.len() {
            w.write_all(&line).unwrap();
        }
        w.finish().unwrap();
        let grown = peak().saturating_sub(before);
        println!("peak memory grew by {grown} KiB for 1 GiB of input");
        assert!(grown < 64 * 1024);
    }

    /// Throughput on ~200 MB of NDJSON-like text: `cargo test --lib envelope::compress -- --ignored --nocapture`.
    /// Dependencies build at opt-level 2 even in the dev profile, so the figures hold for release builds too.
    #[test]
    #[ignore]
    fn throughput() {
        let mut text = Vec::with_capacity(200 << 20);
        let mut i = 0u64;
        while text.len() < 200 << 20 {
            let line = format!(
                "{{\"id\":{i},\"name\":\"customer {}\",\"email\":\"user{}@example.com\",\"amount\":{}.{:02},\"active\":{}}}\n",
                i * 7919 % 100_003,
                i % 9973,
                i * 31 % 10_000,
                i % 100,
                i % 3 == 0
            );
            text.extend_from_slice(line.as_bytes());
            i += 1;
        }
        let mb = text.len() as f64 / 1e6;
        let runs: [(Compression, u32, usize); 7] = [
            (Compression::Gzip, 6, 1),
            (Compression::Gzip, 6, 2),
            (Compression::Gzip, 1, 1),
            (Compression::Gzip, 1, 2),
            (Compression::Zstd, 3, 1),
            (Compression::Zstd, 3, 2),
            (Compression::Brotli, 5, 1),
        ];
        for (kind, level, threads) in runs {
            let start = std::time::Instant::now();
            let mut w =
                CompressWriter::with_threads(Vec::new(), CompressionSpec { kind, level }, threads)
                    .unwrap();
            for piece in text.chunks(64 * 1024) {
                w.write_all(piece).unwrap();
            }
            let packed = w.finish().unwrap();
            let secs = start.elapsed().as_secs_f64();
            let start = std::time::Instant::now();
            let n = io::copy(
                &mut DecompressReader::new(&packed[..], kind, u64::MAX).unwrap(),
                &mut io::sink(),
            )
            .unwrap();
            let dsecs = start.elapsed().as_secs_f64();
            assert_eq!(n as usize, text.len());
            println!(
                "{kind}:{level} threads {threads}: compress {:.0} MB/s, ratio {:.3}, decompress {:.0} MB/s",
                mb / secs,
                packed.len() as f64 / text.len() as f64,
                mb / dsecs
            );
        }
    }
}
