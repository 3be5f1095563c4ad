//! The commands' view of `.kvt` files, over `kvmtrace_format`'s reader and
//! writer: open, iterate, write, verify, salvage. Errors name the file.

use std::path::{Path, PathBuf};

use anyhow::Result;
use kvmtrace_format::{Record, TraceHeader};

/// An open trace.
pub struct TraceFile {
    pub path: PathBuf,
    pub header: TraceHeader,
    /// Events according to the index (0 if unknown).
    pub events: u64,
    pub chunks: u64,
    pub bytes: u64,
}

/// Integrity report of `verify`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyReport {
    pub file: String,
    pub ok: bool,
    pub events: u64,
    pub chunks: u64,
    pub bytes: u64,
    /// What failed and where (chunk, byte offset, what), if damaged.
    pub damage: Option<String>,
    pub damage_offset: Option<u64>,
    pub damage_chunk: Option<u64>,
    /// Events and chunks readable before the damage.
    pub good_events: u64,
    pub good_chunks: u64,
}

/// What `salvage` kept and lost.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SalvageReport {
    pub kept_events: u64,
    pub kept_chunks: u64,
    pub lost_bytes: u64,
    pub last_seq: Option<u64>,
    pub last_time_ns: Option<u64>,
}

/// What a writer produced.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WriteSummary {
    pub events: u64,
    pub chunks: u64,
    pub bytes: u64,
}

fn unavailable() -> anyhow::Error {
    anyhow::anyhow!("the .kvt reader/writer (kvmtrace-format) is not available in this build yet")
}

impl TraceFile {
    pub fn open(path: &Path) -> Result<TraceFile> {
        let _ = path;
        Err(unavailable())
    }

    /// Every record in order; an error stops the iteration at the damage.
    pub fn records(&self) -> Result<Box<dyn Iterator<Item = Result<Record>> + '_>> {
        Err(unavailable())
    }

    /// Every record of the readable prefix (for `--salvage-ok`).
    pub fn records_salvaged(&self) -> Result<Box<dyn Iterator<Item = Result<Record>> + '_>> {
        Err(unavailable())
    }
}

/// A streaming writer: `push` records, then `finish`. Writes to
/// `PATH.incomplete` and renames on `finish`, so a failed run leaves no file
/// that looks good.
pub struct TraceWriter {
    _p: (),
}

impl TraceWriter {
    pub fn create(path: &Path, header: &TraceHeader) -> Result<TraceWriter> {
        let _ = (path, header);
        Err(unavailable())
    }

    pub fn push(&mut self, rec: &Record) -> Result<()> {
        let _ = rec;
        Err(unavailable())
    }

    pub fn finish(self) -> Result<WriteSummary> {
        Err(unavailable())
    }
}

pub fn verify(path: &Path) -> Result<VerifyReport> {
    let _ = path;
    Err(unavailable())
}

pub fn salvage(path: &Path, out: &Path) -> Result<SalvageReport> {
    let _ = (path, out);
    Err(unavailable())
}
