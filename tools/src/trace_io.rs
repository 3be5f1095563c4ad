//! The commands' view of `.kvt` files, over `kvmtrace_format`'s reader,
//! writer, verify and salvage. Every error names the file (the format crate's
//! messages carry file, offset and chunk).

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::Result;
use kvmtrace_format::{Record, TraceHeader, TraceReader, TraceSummary};

pub use kvmtrace_format::{SalvageReport, VerifyReport, WriteSummary};

/// An open trace.
pub struct TraceFile {
    pub path: PathBuf,
    reader: TraceReader<BufReader<File>>,
    /// Set when opened with `open_prefix` on a damaged file: the damage that
    /// ends the readable prefix.
    pub damage: Option<String>,
}

impl TraceFile {
    /// Open a finished, sound trace (through its footer index).
    pub fn open(path: &Path) -> Result<TraceFile> {
        let reader = TraceReader::open(path).map_err(|e| unfinished_hint(path, e.into()))?;
        Ok(TraceFile {
            path: path.to_path_buf(),
            reader,
            damage: None,
        })
    }

    /// Open a trace whose every complete chunk is to be read, damaged or not
    /// (`replay --salvage-ok`); `damage` says where the readable prefix ends.
    pub fn open_prefix(path: &Path) -> Result<TraceFile> {
        let name = path.display().to_string();
        let read_err = |source| kvmtrace_format::FormatError::Read {
            file: name.clone(),
            source,
        };
        let meta =
            std::fs::metadata(path).map_err(|e| unfinished_hint(path, read_err(e).into()))?;
        if let Some(kind) = kvmtrace_format::not_regular(&meta) {
            anyhow::bail!(
                "cannot read {name}: it is {kind}, not a regular file; a trace is read by seeking, so copy it to a file first"
            );
        }
        let f = File::open(path).map_err(read_err)?;
        let (reader, damage) = TraceReader::scan(BufReader::with_capacity(256 << 10, f), name)?;
        Ok(TraceFile {
            path: path.to_path_buf(),
            reader,
            damage: damage.map(|d| d.to_string()),
        })
    }

    pub fn header(&self) -> &TraceHeader {
        self.reader.header()
    }

    /// Counts from the footer index.
    pub fn summary(&self) -> &TraceSummary {
        self.reader.summary()
    }

    /// Every record in order; an error stops the iteration at the damage.
    pub fn records(&mut self) -> impl Iterator<Item = Result<Record>> + '_ {
        self.reader
            .records()
            .map(|r| r.map_err(anyhow::Error::from))
    }

    pub fn reader(&mut self) -> &mut TraceReader<BufReader<File>> {
        &mut self.reader
    }
}

/// A crash-safe trace file writer: `PATH.incomplete` until `finish` renames it.
pub struct TraceWriter {
    w: kvmtrace_format::TraceWriter<std::io::BufWriter<File>>,
}

impl TraceWriter {
    pub fn create(path: &Path, header: &TraceHeader) -> Result<TraceWriter> {
        Ok(TraceWriter {
            w: kvmtrace_format::create(path, header)?,
        })
    }

    pub fn push(&mut self, rec: &Record) -> Result<()> {
        Ok(self.w.push(rec)?)
    }

    pub fn finish(self) -> Result<WriteSummary> {
        Ok(self.w.finish()?)
    }
}

pub fn verify(path: &Path) -> Result<VerifyReport> {
    kvmtrace_format::verify(path).map_err(|e| unfinished_hint(path, e.into()))
}

pub fn salvage(path: &Path, out: &Path) -> Result<SalvageReport> {
    kvmtrace_format::salvage(path, out).map_err(|e| unfinished_hint(path, e.into()))
}

/// For a trace that does not exist while `PATH.incomplete` does: say so (the
/// recording is still running, or it stopped without finishing).
pub fn unfinished_hint(path: &Path, e: anyhow::Error) -> anyhow::Error {
    let inc = kvmtrace_format::incomplete_path(path);
    if path.exists() || !inc.exists() {
        return e;
    }
    anyhow::anyhow!(
        "{} does not exist, but {} does: the recording is still running or did not finish; \
         `kvmtrace verify {} --salvage {}` keeps every complete chunk",
        path.display(),
        inc.display(),
        inc.display(),
        path.display()
    )
}

/// The error to report for a trace that could not be read: what `verify`
/// says about it if it finds damage (so every command reports damage the same
/// way), else the original error.
pub fn explain(path: &Path, e: anyhow::Error) -> anyhow::Error {
    match kvmtrace_format::verify(path) {
        Ok(r) => match r.damage {
            Some(d) => anyhow::anyhow!("{}", d.message),
            None => e,
        },
        Err(_) => e,
    }
}

/// Refill `batch` (cleared first) with up to `max` records, mapping a read
/// error with `err`; left empty when `records` is exhausted. The one batching
/// loop of the commands that feed the replayer.
pub fn next_batch<E>(
    records: &mut impl Iterator<Item = std::result::Result<Record, E>>,
    batch: &mut Vec<Record>,
    max: usize,
    mut err: impl FnMut(E) -> anyhow::Error,
) -> Result<()> {
    batch.clear();
    for r in records.by_ref() {
        batch.push(r.map_err(&mut err)?);
        if batch.len() == max {
            break;
        }
    }
    Ok(())
}
