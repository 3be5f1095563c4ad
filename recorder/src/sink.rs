//! Where the writer thread puts records: the trace-format writer, behind a small
//! trait so the pipeline can be tested without files.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kvmtrace_format::{FormatError, Record, TraceHeader, TraceReader, TraceWriter};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot create {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("starting the writer thread")]
    SpawnWriter(#[source] std::io::Error),
    #[error("the writer thread panicked")]
    WriterPanicked,
}

/// The writer thread's output.
pub trait Sink: Send {
    fn push(&mut self, rec: &Record) -> Result<(), SinkError>;
    /// End the current chunk and make it durable in the file.
    fn flush_chunk(&mut self) -> Result<(), SinkError>;
    /// Finish the file (index, footer, rename). Returns (bytes, chunks).
    fn finish(self: Box<Self>) -> Result<(u64, u64), SinkError>;
    /// The output failed: leave what was written, do not finish.
    fn abandon(self: Box<Self>) {}
}

/// Open the trace writer for `path`: `PATH.incomplete`, renamed on finish
/// (`kvmtrace_format::create`); an existing non-regular file (a device such as
/// `/dev/full`, a FIFO) is written in place.
pub fn create(path: &Path, header: &TraceHeader) -> Result<Box<dyn Sink>, SinkError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(SinkError::Create {
            path: path.to_path_buf(),
            source: std::io::Error::other("is a directory"),
        }),
        Ok(m) if !m.is_file() => {
            let file = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|source| SinkError::Create {
                    path: path.to_path_buf(),
                    source,
                })?;
            let w = TraceWriter::with_name(
                BufWriter::with_capacity(256 << 10, file),
                header,
                path.display().to_string(),
            )?;
            Ok(Box::new(w))
        }
        _ => Ok(Box::new(kvmtrace_format::create(path, header)?)),
    }
}

impl<W: Write + Send> Sink for TraceWriter<W> {
    fn push(&mut self, rec: &Record) -> Result<(), SinkError> {
        Ok(TraceWriter::push(self, rec)?)
    }

    fn flush_chunk(&mut self) -> Result<(), SinkError> {
        Ok(TraceWriter::flush_chunk(self)?)
    }

    fn finish(self: Box<Self>) -> Result<(u64, u64), SinkError> {
        let s = TraceWriter::finish(*self)?;
        Ok((s.bytes, s.chunks))
    }
}

/// Collects records in memory (tests, benchmarks of the pipeline alone).
pub struct MemorySink {
    records: Arc<Mutex<Vec<Record>>>,
}

impl MemorySink {
    pub fn new() -> (MemorySink, Arc<Mutex<Vec<Record>>>) {
        let records = Arc::new(Mutex::new(Vec::new()));
        (
            MemorySink {
                records: records.clone(),
            },
            records,
        )
    }
}

impl Sink for MemorySink {
    fn push(&mut self, rec: &Record) -> Result<(), SinkError> {
        if let Ok(mut v) = self.records.lock() {
            v.push(rec.clone());
        }
        Ok(())
    }
    fn flush_chunk(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
    fn finish(self: Box<Self>) -> Result<(u64, u64), SinkError> {
        Ok((0, 0))
    }
}

/// Read back a whole trace (tests and smoke checks).
pub fn read_all(path: &Path) -> Result<(TraceHeader, Vec<Record>), FormatError> {
    let mut r = TraceReader::open(path)?;
    let recs = r.read_all()?;
    Ok((r.header().clone(), recs))
}
