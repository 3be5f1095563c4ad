//! Where the writer thread puts records: the trace-format writer, behind a small
//! trait so the pipeline can be tested without files.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kvmtrace_format::{Record, TraceHeader};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot create {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode a record for {path}: {message}")]
    Encode { path: PathBuf, message: String },
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

/// Open the trace writer for `path`.
pub fn create(path: &Path, header: &TraceHeader) -> Result<Box<dyn Sink>, SinkError> {
    Ok(Box::new(InterimSink::create(path, header)?))
}

/// A stand-in for `kvmtrace_format::TraceWriter` until it lands: length-framed
/// bincode chunks in `PATH.incomplete`, renamed on finish.
struct InterimSink {
    path: PathBuf,
    tmp: PathBuf,
    out: BufWriter<File>,
    chunk: Vec<u8>,
    count: u32,
    bytes: u64,
    chunks: u64,
}

const CHUNK_BYTES: usize = 64 << 10;

impl InterimSink {
    fn create(path: &Path, header: &TraceHeader) -> Result<InterimSink, SinkError> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".incomplete");
        let tmp = PathBuf::from(tmp);
        let file = File::create(&tmp).map_err(|source| SinkError::Create {
            path: tmp.clone(),
            source,
        })?;
        let mut s = InterimSink {
            path: path.to_path_buf(),
            tmp,
            out: BufWriter::new(file),
            chunk: Vec::with_capacity(CHUNK_BYTES * 2),
            count: 0,
            bytes: 0,
            chunks: 0,
        };
        let h =
            bincode::serde::encode_to_vec(header, bincode::config::standard()).map_err(|e| {
                SinkError::Encode {
                    path: s.path.clone(),
                    message: e.to_string(),
                }
            })?;
        s.write(b"KVTINTRM")?;
        s.write(&(h.len() as u32).to_le_bytes())?;
        s.write(&h)?;
        Ok(s)
    }

    fn write(&mut self, b: &[u8]) -> Result<(), SinkError> {
        self.bytes += b.len() as u64;
        self.out.write_all(b).map_err(|source| SinkError::Write {
            path: self.tmp.clone(),
            source,
        })
    }
}

impl Sink for InterimSink {
    fn push(&mut self, rec: &Record) -> Result<(), SinkError> {
        bincode::serde::encode_into_std_write(rec, &mut self.chunk, bincode::config::standard())
            .map_err(|e| SinkError::Encode {
                path: self.path.clone(),
                message: e.to_string(),
            })?;
        self.count += 1;
        if self.chunk.len() >= CHUNK_BYTES {
            self.flush_chunk()?;
        }
        Ok(())
    }

    fn flush_chunk(&mut self) -> Result<(), SinkError> {
        if self.count > 0 {
            let chunk = std::mem::take(&mut self.chunk);
            self.write(&(chunk.len() as u32).to_le_bytes())?;
            self.write(&self.count.to_le_bytes())?;
            self.write(&chunk)?;
            self.chunk = chunk;
            self.chunk.clear();
            self.count = 0;
            self.chunks += 1;
        }
        self.out.flush().map_err(|source| SinkError::Write {
            path: self.tmp.clone(),
            source,
        })
    }

    fn finish(mut self: Box<Self>) -> Result<(u64, u64), SinkError> {
        self.flush_chunk()?;
        self.out
            .get_ref()
            .sync_all()
            .map_err(|source| SinkError::Write {
                path: self.tmp.clone(),
                source,
            })?;
        std::fs::rename(&self.tmp, &self.path).map_err(|source| SinkError::Write {
            path: self.path.clone(),
            source,
        })?;
        Ok((self.bytes, self.chunks))
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

/// Read back a whole trace written by [`create`] (tests and tools' smoke checks).
pub fn read_all(path: &Path) -> Result<(TraceHeader, Vec<Record>), String> {
    let b = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let cfg = bincode::config::standard();
    let bad = |what: &str| format!("{}: {what}", path.display());
    if !b.starts_with(b"KVTINTRM") || b.len() < 12 {
        return Err(bad("not an interim trace"));
    }
    let hl = u32::from_le_bytes(b[8..12].try_into().unwrap_or_default()) as usize;
    let hb = b.get(12..12 + hl).ok_or_else(|| bad("short header"))?;
    let (header, _): (TraceHeader, usize) =
        bincode::serde::decode_from_slice(hb, cfg).map_err(|e| bad(&e.to_string()))?;
    let mut off = 12 + hl;
    let mut recs = Vec::new();
    while off + 8 <= b.len() {
        let len = u32::from_le_bytes(b[off..off + 4].try_into().unwrap_or_default()) as usize;
        let count = u32::from_le_bytes(b[off + 4..off + 8].try_into().unwrap_or_default());
        let mut chunk = b
            .get(off + 8..off + 8 + len)
            .ok_or_else(|| bad("short chunk"))?;
        for _ in 0..count {
            let (r, used): (Record, usize) =
                bincode::serde::decode_from_slice(chunk, cfg).map_err(|e| bad(&e.to_string()))?;
            recs.push(r);
            chunk = &chunk[used..];
        }
        off += 8 + len;
    }
    Ok((header, recs))
}
