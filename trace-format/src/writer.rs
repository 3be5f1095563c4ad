//! Writing traces: [`TraceWriter`] over any `Write`, and [`create`] for files
//! (written as `NAME.incomplete`, renamed to `NAME` only on a clean finish, the
//! way rr keeps a crashed recording from passing for a finished one).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::codec::{ChunkEncoder, ChunkStats, EncodedChunk};
use crate::error::{FormatError, Result};
use crate::event::Record;
use crate::header::TraceHeader;
use crate::wire::{
    self, FOOTER_MAGIC, HEADER_FRAME_LEN, MAX_FOOTER_BYTES, MAX_HEADER_BYTES, TRAILER_MAGIC,
    Version,
};

/// One entry of the footer index: where a chunk is and what it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkInfo {
    /// Byte offset of the chunk frame in the file.
    pub offset: u64,
    pub compressed_len: u32,
    pub uncompressed_len: u32,
    /// Records in the chunk.
    pub count: u32,
    pub first_seq: u64,
    pub first_time_ns: u64,
}

impl ChunkInfo {
    /// Bytes of the whole frame (frame header and payload).
    pub fn frame_len(&self) -> u64 {
        wire::CHUNK_FRAME_LEN as u64 + u64::from(self.compressed_len)
    }
}

/// The footer body (bincode, FORMAT.md "Footer"). Bytes after it inside the
/// footer frame are an extension area that this version skips.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Footer {
    pub chunks: Vec<ChunkInfo>,
    pub events: u64,
    pub vcpus: Vec<u32>,
    /// Events per kind, indexed by kind code.
    pub by_kind: Vec<u64>,
    pub last_seq: u64,
    pub last_time_ns: u64,
}

/// What a finished write produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WriteSummary {
    pub events: u64,
    pub chunks: u64,
    /// Bytes written, i.e. the file size.
    pub bytes: u64,
    pub vcpus: u64,
    pub last_seq: Option<u64>,
    pub last_time_ns: Option<u64>,
    /// The final file, for [`create`].
    pub path: Option<PathBuf>,
}

/// Encodes the header frame: length, CRC32 (of the preamble and the body, so
/// the version fields are covered too), bincode body.
pub(crate) fn header_frame(
    preamble: &[u8],
    header: &TraceHeader,
) -> std::result::Result<Vec<u8>, String> {
    let body = bincode::serde::encode_to_vec(
        header,
        wire::bincode_config::<{ MAX_HEADER_BYTES as usize }>(),
    )
    .map_err(|e| e.to_string())?;
    let len = u32::try_from(body.len()).map_err(|_| "header too large".to_string())?;
    let mut out = Vec::with_capacity(HEADER_FRAME_LEN + body.len());
    out.extend_from_slice(&len.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(preamble);
    crc.update(&body);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Writes a trace to any `Write`. Errors are sticky: after one, every call
/// fails and the output stays an incomplete trace (salvageable up to the last
/// chunk that was written whole).
pub struct TraceWriter<W: Write> {
    out: W,
    name: String,
    pos: u64,
    enc: ChunkEncoder,
    index: Vec<ChunkInfo>,
    stats: ChunkStats,
    failed: bool,
    /// For [`create`]: (`NAME.incomplete`, `NAME`, the file's identity),
    /// renamed on finish if `NAME.incomplete` is still the file written.
    rename: Option<(PathBuf, PathBuf, Option<FileId>)>,
    sync: Option<fn(&mut W) -> io::Result<()>>,
}

impl<W: Write> TraceWriter<W> {
    /// Starts a trace: writes the preamble and the header.
    pub fn new(out: W, header: &TraceHeader) -> Result<Self> {
        Self::with_name(out, header, "<memory>")
    }

    /// Like [`Self::new`], naming the output in error messages.
    pub fn with_name(out: W, header: &TraceHeader, name: impl Into<String>) -> Result<Self> {
        let mut w = TraceWriter {
            out,
            name: name.into(),
            pos: 0,
            enc: ChunkEncoder::new(),
            index: Vec::new(),
            stats: ChunkStats::default(),
            failed: false,
            rename: None,
            sync: None,
        };
        let pre = wire::preamble(Version::CURRENT);
        let hdr = header_frame(&pre, header).map_err(|why| FormatError::Encode {
            file: w.name.clone(),
            what: "the trace header",
            why,
        })?;
        w.write_all(&pre)?;
        w.write_all(&hdr)?;
        Ok(w)
    }

    fn write_all(&mut self, b: &[u8]) -> Result<()> {
        if self.failed {
            return Err(FormatError::WriterFailed {
                file: self.name.clone(),
            });
        }
        if let Err(source) = self.out.write_all(b) {
            self.failed = true;
            return Err(FormatError::Write {
                file: self.name.clone(),
                offset: self.pos,
                source,
            });
        }
        self.pos += b.len() as u64;
        Ok(())
    }

    /// Adds a record; closes the chunk when it holds about 64 KiB.
    pub fn push(&mut self, r: &Record) -> Result<()> {
        if self.failed {
            return Err(FormatError::WriterFailed {
                file: self.name.clone(),
            });
        }
        self.enc.push(r).map_err(|why| FormatError::Encode {
            file: self.name.clone(),
            what: "a record",
            why,
        })?;
        if self.enc.is_full() {
            self.flush_chunk()?;
        }
        Ok(())
    }

    /// Closes the open chunk now (the recorder calls this on its time bound) and
    /// hands it to the output. Does nothing if the chunk is empty.
    pub fn flush_chunk(&mut self) -> Result<()> {
        let chunk = self.enc.finish_chunk().map_err(|why| FormatError::Encode {
            file: self.name.clone(),
            what: "a chunk",
            why,
        })?;
        if let Some(c) = chunk {
            self.append_chunk(&c)?;
        }
        if let Err(source) = self.out.flush() {
            self.failed = true;
            return Err(FormatError::Write {
                file: self.name.clone(),
                offset: self.pos,
                source,
            });
        }
        Ok(())
    }

    /// Appends a chunk encoded elsewhere (the recorder's writer thread encodes
    /// with its own [`ChunkEncoder`] or [`crate::encode_chunk`]). Closes this
    /// writer's own open chunk first so records stay in order.
    pub fn append_chunk(&mut self, c: &EncodedChunk) -> Result<()> {
        if !self.enc.is_empty() {
            self.flush_chunk()?;
        }
        let info = ChunkInfo {
            offset: self.pos,
            compressed_len: (c.bytes.len() - wire::CHUNK_FRAME_LEN) as u32,
            uncompressed_len: c.uncompressed_len,
            count: c.count,
            first_seq: c.first_seq,
            first_time_ns: c.first_time_ns,
        };
        self.write_all(&c.bytes)?;
        self.index.push(info);
        self.stats.merge(&c.stats);
        Ok(())
    }

    /// Events pushed so far (including the open chunk).
    pub fn events(&self) -> u64 {
        self.stats.events + self.enc.len() as u64
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.pos
    }

    /// Closes the last chunk, writes the footer index and the trailer, flushes,
    /// and for [`create`] renames `NAME.incomplete` to `NAME`.
    pub fn finish(mut self) -> Result<WriteSummary> {
        self.finish_in_place()
    }

    /// Like [`Self::finish`], handing back the output (e.g. a `Vec<u8>`).
    pub fn finish_into_inner(mut self) -> Result<(W, WriteSummary)> {
        let s = self.finish_in_place()?;
        // Take `out` without running Drop twice: TraceWriter has no Drop impl.
        Ok((self.out, s))
    }

    fn finish_in_place(&mut self) -> Result<WriteSummary> {
        self.flush_chunk()?;
        let footer = Footer {
            chunks: self.index.clone(),
            events: self.stats.events,
            vcpus: self.stats.vcpus.clone(),
            by_kind: self.stats.by_kind.to_vec(),
            last_seq: self.stats.last_seq,
            last_time_ns: self.stats.last_time_ns,
        };
        let body = bincode::serde::encode_to_vec(
            &footer,
            wire::bincode_config::<{ MAX_FOOTER_BYTES as usize }>(),
        )
        .map_err(|e| FormatError::Encode {
            file: self.name.clone(),
            what: "the footer index",
            why: e.to_string(),
        })?;
        let footer_offset = self.pos;
        let mut f = Vec::with_capacity(body.len() + 32);
        f.extend_from_slice(&FOOTER_MAGIC);
        f.extend_from_slice(&(body.len() as u32).to_le_bytes());
        f.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        f.extend_from_slice(&body);
        f.extend_from_slice(&footer_offset.to_le_bytes());
        f.extend_from_slice(&TRAILER_MAGIC);
        self.write_all(&f)?;
        let io_err = |w: &mut Self, source| {
            w.failed = true;
            FormatError::Write {
                file: w.name.clone(),
                offset: w.pos,
                source,
            }
        };
        if let Err(e) = self.out.flush() {
            return Err(io_err(self, e));
        }
        if let Some(sync) = self.sync
            && let Err(e) = sync(&mut self.out)
        {
            return Err(io_err(self, e));
        }
        let mut path = None;
        if let Some((tmp, fin, id)) = self.rename.take() {
            // Never rename a file another process put under our temporary
            // name (ours was removed and replaced meanwhile).
            let now = std::fs::metadata(&tmp).ok().map(|m| meta_id(&m));
            if id.is_some() && now != id {
                return Err(FormatError::Rename {
                    from: tmp.display().to_string(),
                    to: fin.display().to_string(),
                    source: io::Error::other(
                        "it is no longer the file this recording wrote (another process removed or replaced it); nothing was renamed",
                    ),
                });
            }
            std::fs::rename(&tmp, &fin).map_err(|source| FormatError::Rename {
                from: tmp.display().to_string(),
                to: fin.display().to_string(),
                source,
            })?;
            path = Some(fin);
        }
        // A finished writer refuses further records.
        self.failed = true;
        let some = |v| (self.stats.events > 0).then_some(v);
        Ok(WriteSummary {
            events: self.stats.events,
            chunks: self.index.len() as u64,
            bytes: self.pos,
            vcpus: self.stats.vcpus.len() as u64,
            last_seq: some(self.stats.last_seq),
            last_time_ns: some(self.stats.last_time_ns),
            path,
        })
    }
}

/// (device, inode): which file a path names.
type FileId = (u64, u64);

/// (device, inode) of an open file.
fn file_id(f: &File) -> Option<FileId> {
    f.metadata().ok().map(|m| meta_id(&m))
}

fn meta_id(m: &std::fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

/// The temporary name a trace has until it is finished: `NAME.incomplete`.
pub fn incomplete_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".incomplete");
    PathBuf::from(s)
}

/// Creates a trace file: writes `PATH.incomplete` and renames it to `PATH` on a
/// clean [`TraceWriter::finish`]. An error or a drop without finish leaves only
/// `PATH.incomplete` (salvage it with `kvmtrace verify PATH.incomplete --salvage OUT`).
pub fn create(
    path: impl AsRef<Path>,
    header: &TraceHeader,
) -> Result<TraceWriter<BufWriter<File>>> {
    let path = path.as_ref();
    let tmp = incomplete_path(path);
    // Exclusive: two recordings to one path must not share (and truncate)
    // one `.incomplete` file; the second one fails here, naming the first.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|source| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                FormatError::Busy {
                    path: path.display().to_string(),
                    tmp: tmp.display().to_string(),
                }
            } else {
                FormatError::Write {
                    file: tmp.display().to_string(),
                    offset: 0,
                    source,
                }
            }
        })?;
    let id = file_id(&file);
    let mut w = TraceWriter::with_name(
        BufWriter::with_capacity(256 << 10, file),
        header,
        tmp.display().to_string(),
    )?;
    w.rename = Some((tmp, path.to_path_buf(), id));
    w.sync = Some(|b: &mut BufWriter<File>| b.get_ref().sync_data());
    Ok(w)
}
