//! Reading traces: [`TraceReader`] over a file, bytes, or any `Read + Seek`.
//!
//! `open` goes in through the trailer and footer index (random access by chunk,
//! parallel decode). A file without a valid footer is refused as incomplete and
//! the error says how to salvage it; [`TraceReader::scan`] instead walks the
//! self-delimiting chunk frames from the start and reads every valid chunk up to
//! the first damage (what `verify` and `salvage` use).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use serde::Serialize;

use crate::codec::{KINDS, decode_chunk_into};
use crate::error::{FormatError, Location, Result, human_bytes};
use crate::event::{EventKind, Record};
use crate::header::TraceHeader;
use crate::wire::{
    self, CHECK_CRC, CHUNK_FRAME_LEN, CHUNK_MAGIC, ChunkFrame, FOOTER_FRAME_LEN, FOOTER_MAGIC,
    HEADER_FRAME_LEN, MAGIC, MAX_FOOTER_BYTES, MAX_HEADER_BYTES, PREAMBLE_LEN, TRAILER_LEN,
    TRAILER_MAGIC, Version, le32, le64,
};
use crate::writer::{ChunkInfo, Footer};

/// What `stats` shows: counts from the footer index.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TraceSummary {
    pub events: u64,
    pub chunks: u64,
    /// File size.
    pub bytes: u64,
    /// Distinct vCPUs seen.
    pub vcpus: u64,
    pub by_kind: BTreeMap<EventKind, u64>,
    pub last_seq: Option<u64>,
    pub last_time_ns: Option<u64>,
}

impl TraceSummary {
    pub fn bytes_per_event(&self) -> f64 {
        if self.events == 0 {
            0.0
        } else {
            self.bytes as f64 / self.events as f64
        }
    }
}

/// A trace open for reading.
pub struct TraceReader<R = BufReader<File>> {
    src: R,
    name: String,
    len: u64,
    version: Version,
    header: TraceHeader,
    header_end: u64,
    chunks: Vec<ChunkInfo>,
    summary: TraceSummary,
}

impl TraceReader<BufReader<File>> {
    /// Opens a finished trace file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let (src, name) = open_file(path.as_ref())?;
        Self::from_reader(src, name)
    }
}

impl<'a> TraceReader<io::Cursor<&'a [u8]>> {
    /// Reads a finished trace held in memory.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self> {
        Self::from_reader(io::Cursor::new(bytes), "<memory>")
    }
}

/// Reads exactly `buf.len()` bytes at `offset`; a short read is truncation.
/// The length of a trace source; leaves it positioned at the end.
pub(crate) fn file_len<R: Seek>(src: &mut R, name: &str) -> Result<u64> {
    src.seek(SeekFrom::End(0))
        .map_err(|source| FormatError::Read {
            file: name.into(),
            source,
        })
}

/// Opens a file for reading as a trace; a directory is a read error, not an
/// empty trace.
pub(crate) fn open_file(path: &Path) -> Result<(BufReader<File>, String)> {
    let name = path.display().to_string();
    let read_err = |source| FormatError::Read {
        file: name.clone(),
        source,
    };
    // Checked before opening: opening a FIFO without a writer blocks forever,
    // and a device (`/dev/zero`, `/dev/kvm`) has no length to seek in.
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if let Some(kind) = not_regular(&meta) {
        return Err(read_err(io::Error::other(format!(
            "it is {kind}, not a regular file; a trace is read by seeking, so copy it to a file first"
        ))));
    }
    let f = File::open(path).map_err(read_err)?;
    Ok((BufReader::with_capacity(256 << 10, f), name))
}

/// What a non-regular file is ("a directory", "a FIFO", ...), or `None` for a
/// regular file.
pub fn not_regular(meta: &std::fs::Metadata) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        Some("not a regular file")
    }
}

pub(crate) fn read_at<R: Read + Seek>(
    src: &mut R,
    name: &str,
    offset: u64,
    buf: &mut [u8],
    len: u64,
    at: Location,
    what: &str,
) -> Result<()> {
    if offset.saturating_add(buf.len() as u64) > len {
        return Err(FormatError::Truncated {
            file: name.to_string(),
            at,
            what: format!(
                "{what} needs {} bytes but the file ends after {}",
                buf.len(),
                len.saturating_sub(offset)
            ),
        });
    }
    src.seek(SeekFrom::Start(offset))
        .and_then(|_| src.read_exact(buf))
        .map_err(|source| FormatError::Read {
            file: name.to_string(),
            source,
        })
}

/// Reads and checks preamble and header: (version, header, header end offset).
pub(crate) fn read_head<R: Read + Seek>(
    src: &mut R,
    name: &str,
    len: u64,
) -> Result<(Version, TraceHeader, u64)> {
    let mut pre = [0u8; PREAMBLE_LEN];
    let n = (len as usize).min(PREAMBLE_LEN);
    read_at(
        src,
        name,
        0,
        &mut pre[..n],
        len,
        Location::at(0),
        "preamble",
    )?;
    if n < MAGIC.len() || pre[..8] != MAGIC {
        let why = if n == 0 {
            "the file is empty (0 bytes): nothing was written to it, so nothing can be salvaged"
                .to_string()
        } else if n < MAGIC.len() && pre[..n] == MAGIC[..n] {
            return Err(FormatError::Truncated {
                file: name.into(),
                at: Location::at(0),
                what: format!("the file is only {n} bytes long"),
            });
        } else {
            format!("it starts with {:02x?}, not \"KVMTRACE\"", &pre[..n.min(8)])
        };
        return Err(FormatError::NotATrace {
            file: name.into(),
            why,
        });
    }
    if n < PREAMBLE_LEN {
        return Err(FormatError::Truncated {
            file: name.into(),
            at: Location::at(0),
            what: format!("the preamble is cut short: the file is only {n} bytes long"),
        });
    }
    let version = Version {
        major: u16::from_le_bytes([pre[8], pre[9]]),
        minor: u16::from_le_bytes([pre[10], pre[11]]),
        oldest_reader: u16::from_le_bytes([pre[12], pre[13]]),
    };
    if version.oldest_reader > wire::FORMAT_MAJOR || version.oldest_reader == 0 {
        return Err(FormatError::TooNew {
            file: name.into(),
            file_version: version.to_string(),
            needs: version.oldest_reader,
            reader: wire::FORMAT_MAJOR,
        });
    }
    let mut hf = [0u8; HEADER_FRAME_LEN];
    let at = Location::at(PREAMBLE_LEN as u64);
    read_at(
        src,
        name,
        PREAMBLE_LEN as u64,
        &mut hf,
        len,
        at,
        "header frame",
    )?;
    let hlen = u64::from(le32(&hf[0..4]));
    if hlen > MAX_HEADER_BYTES {
        return Err(FormatError::Limit {
            file: name.into(),
            at,
            field: "header length",
            shown: human_bytes(hlen),
            limit: MAX_HEADER_BYTES,
        });
    }
    let body_at = (PREAMBLE_LEN + HEADER_FRAME_LEN) as u64;
    let mut body = vec![0u8; hlen as usize];
    if body_at + hlen > len {
        return Err(FormatError::Truncated {
            file: name.into(),
            at,
            what: format!(
                "the header needs {hlen} bytes but the file ends after {}",
                len.saturating_sub(body_at)
            ),
        });
    }
    read_at(src, name, body_at, &mut body, len, at, "header")?;
    let mut h = crc32fast::Hasher::new();
    h.update(&pre);
    h.update(&body);
    check_crc(name, at, "header", le32(&hf[4..8]), h.finalize())?;
    // Bytes after the bincode header inside the frame are the extension area.
    // Before 1.2 the header ends before `config_source`.
    let header: TraceHeader = if (version.major, version.minor) < (1, 2) {
        decode_body::<crate::header::TraceHeaderV1_1, { MAX_HEADER_BYTES as usize }>(
            &body,
            name,
            Location::at(body_at),
            "header",
        )?
        .into()
    } else {
        decode_body::<_, { MAX_HEADER_BYTES as usize }>(
            &body,
            name,
            Location::at(body_at),
            "header",
        )?
    };
    Ok((version, header, body_at + hlen))
}

/// Reads, checks and decodes the chunk frame at `offset`.
pub(crate) fn read_chunk_at<R: Read + Seek>(
    src: &mut R,
    name: &str,
    len: u64,
    offset: u64,
    chunk: u64,
    raw: &mut Vec<u8>,
) -> Result<(ChunkFrame, Vec<Record>)> {
    let frame = read_frame_at(src, name, len, offset, chunk, raw)?;
    let recs = decode_frame(&frame, &raw[CHUNK_FRAME_LEN..], name, offset, chunk)?;
    Ok((frame, recs))
}

/// Reads the frame at `offset` into `raw` (frame header + payload) and checks
/// magic, limits and CRC, but does not decompress.
pub(crate) fn read_frame_at<R: Read + Seek>(
    src: &mut R,
    name: &str,
    len: u64,
    offset: u64,
    chunk: u64,
    raw: &mut Vec<u8>,
) -> Result<ChunkFrame> {
    let at = Location::chunk(offset, chunk);
    let mut hb = [0u8; CHUNK_FRAME_LEN];
    read_at(src, name, offset, &mut hb, len, at, "chunk frame header")?;
    if hb[0..4] != CHUNK_MAGIC {
        return Err(FormatError::Corrupt {
            file: name.into(),
            at,
            what: format!("bad chunk magic {:02x?}", &hb[0..4]),
        });
    }
    let f = ChunkFrame::parse(&hb);
    if let Some((field, shown, limit)) = f.check_limits() {
        return Err(FormatError::Limit {
            file: name.into(),
            at,
            field,
            shown,
            limit,
        });
    }
    // What one chunk may decode to in memory is bounded by its record count.
    if f.count > wire::MAX_CHUNK_RECORDS {
        return Err(FormatError::Corrupt {
            file: name.into(),
            at,
            what: format!(
                "chunk claims {} records, over the limit of {} a chunk may hold",
                f.count,
                wire::MAX_CHUNK_RECORDS
            ),
        });
    }
    // Every record is at least two bytes (tag, time delta).
    if f.count == 0 || u64::from(f.count) * 2 > u64::from(f.uncompressed_len) {
        return Err(FormatError::Corrupt {
            file: name.into(),
            at,
            what: format!(
                "chunk claims {} records in {} bytes",
                f.count, f.uncompressed_len
            ),
        });
    }
    let total = CHUNK_FRAME_LEN as u64 + u64::from(f.compressed_len);
    if offset + total > len {
        return Err(FormatError::Truncated {
            file: name.into(),
            at,
            what: format!(
                "chunk needs {total} bytes but the file ends after {}",
                len - offset
            ),
        });
    }
    raw.clear();
    raw.extend_from_slice(&hb);
    raw.resize(total as usize, 0);
    src.read_exact(&mut raw[CHUNK_FRAME_LEN..])
        .map_err(|source| FormatError::Read {
            file: name.into(),
            source,
        })?;
    let crc = ChunkFrame::compute_crc(&hb, &raw[CHUNK_FRAME_LEN..]);
    check_crc(name, at, "chunk", f.crc, crc)?;
    Ok(f)
}

/// A frame's stored CRC32 against the one computed over what it covers (not
/// checked when fuzzing, so the fuzzer gets past it).
fn check_crc(name: &str, at: Location, what: &str, stored: u32, computed: u32) -> Result<()> {
    if CHECK_CRC && computed != stored {
        return Err(FormatError::Corrupt {
            file: name.into(),
            at,
            what: format!(
                "{what} CRC32 mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
        });
    }
    Ok(())
}

/// Decodes a bincode header or footer body of at most `LIMIT` bytes; bytes
/// after it are the extension area, ignored.
fn decode_body<T: serde::de::DeserializeOwned, const LIMIT: usize>(
    body: &[u8],
    name: &str,
    at: Location,
    what: &str,
) -> Result<T> {
    let (value, _ext): (T, usize) =
        bincode::serde::decode_from_slice(body, wire::bincode_config::<LIMIT>()).map_err(|e| {
            FormatError::Corrupt {
                file: name.into(),
                at,
                what: format!("the {what} does not decode: {}", wire::bincode_why(&e)),
            }
        })?;
    Ok(value)
}

/// Decompresses and decodes a chunk payload whose frame passed its checks.
pub(crate) fn decode_frame(
    f: &ChunkFrame,
    compressed: &[u8],
    name: &str,
    offset: u64,
    chunk: u64,
) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    decode_frame_into(f, compressed, name, offset, chunk, &mut out)?;
    Ok(out)
}

/// [`decode_frame`], appending to `out` (left as it was on error).
pub(crate) fn decode_frame_into(
    f: &ChunkFrame,
    compressed: &[u8],
    name: &str,
    offset: u64,
    chunk: u64,
    out: &mut Vec<Record>,
) -> Result<()> {
    let at = Location::chunk(offset, chunk);
    decode_chunk_into(
        compressed,
        f.uncompressed_len,
        f.count,
        f.first_seq,
        f.first_time_ns,
        out,
    )
    .map_err(|e| FormatError::Corrupt {
        file: name.into(),
        at,
        what: if e.decompress {
            format!("chunk does not decompress: {}", e.what)
        } else {
            match e.stream {
                Some(s) => format!(
                    "chunk does not decode: {} (stream {s}, byte {})",
                    e.what, e.pos
                ),
                None => format!(
                    "chunk does not decode: {} (stream table, byte {})",
                    e.what, e.pos
                ),
            }
        },
    })
}

impl<R: Read + Seek> TraceReader<R> {
    /// Reads a finished trace from any `Read + Seek`, through its footer index.
    pub fn from_reader(mut src: R, name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let len = file_len(&mut src, &name)?;
        let (version, header, header_end) = read_head(&mut src, &name, len)?;
        let footer = read_footer(&mut src, &name, len, header_end)?;
        let mut r = TraceReader {
            src,
            name,
            len,
            version,
            header,
            header_end,
            chunks: footer.chunks.clone(),
            summary: TraceSummary::default(),
        };
        r.summary = summary_from_footer(&footer, len);
        Ok(r)
    }

    /// Reads the valid prefix of a trace, finished or not, by walking the chunk
    /// frames from the start (no footer needed). Stops at the first damage and
    /// returns it beside the reader; every chunk before it is fully checked.
    pub fn scan(mut src: R, name: impl Into<String>) -> Result<(Self, Option<FormatError>)> {
        let name = name.into();
        let len = file_len(&mut src, &name)?;
        let (version, header, header_end) = read_head(&mut src, &name, len)?;
        let mut s = crate::verify::scan_chunks(&mut src, &name, len, header_end)?;
        if s.damage.is_none() {
            s.damage = crate::verify::check_footer(&mut src, &name, len, header_end, &s.chunks)?;
        }
        let footer = Footer {
            chunks: s.chunks.clone(),
            events: s.stats.events,
            vcpus: s.stats.vcpus.clone(),
            by_kind: s.stats.by_kind.to_vec(),
            last_seq: s.stats.last_seq,
            last_time_ns: s.stats.last_time_ns,
        };
        let mut summary = summary_from_footer(&footer, len);
        summary.bytes = len;
        Ok((
            TraceReader {
                src,
                name,
                len,
                version,
                header,
                header_end,
                chunks: s.chunks,
                summary,
            },
            s.damage,
        ))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn header(&self) -> &TraceHeader {
        &self.header
    }

    /// The file's format version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// File size in bytes.
    pub fn len_bytes(&self) -> u64 {
        self.len
    }

    /// Offset of the first chunk.
    pub fn header_end(&self) -> u64 {
        self.header_end
    }

    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    pub fn chunk_info(&self, i: usize) -> Option<ChunkInfo> {
        self.chunks.get(i).copied()
    }

    pub fn chunks(&self) -> &[ChunkInfo] {
        &self.chunks
    }

    /// Events, chunks, bytes, vCPUs and per-kind counts, from the footer.
    pub fn summary(&self) -> &TraceSummary {
        &self.summary
    }

    fn no_such_chunk(&self, i: usize) -> FormatError {
        FormatError::NoSuchChunk {
            file: self.name.clone(),
            index: i as u64,
            count: self.chunks.len() as u64,
        }
    }

    /// Reads the raw frame of chunk `i` (checked against its index entry and
    /// its CRC, not decompressed).
    fn read_raw(&mut self, i: usize, raw: &mut Vec<u8>) -> Result<ChunkFrame> {
        let info = self.chunk_info(i).ok_or_else(|| self.no_such_chunk(i))?;
        let f = read_frame_at(
            &mut self.src,
            &self.name,
            self.len,
            info.offset,
            i as u64,
            raw,
        )?;
        if f.compressed_len != info.compressed_len
            || f.uncompressed_len != info.uncompressed_len
            || f.count != info.count
            || f.first_seq != info.first_seq
            || f.first_time_ns != info.first_time_ns
        {
            return Err(FormatError::Corrupt {
                file: self.name.clone(),
                at: Location::chunk(info.offset, i as u64),
                what: "chunk frame disagrees with its footer index entry".into(),
            });
        }
        Ok(f)
    }

    /// Decodes chunk `i`.
    pub fn read_chunk(&mut self, i: usize) -> Result<Vec<Record>> {
        let mut raw = Vec::new();
        let f = self.read_raw(i, &mut raw)?;
        let off = self.chunks[i].offset;
        decode_frame(&f, &raw[CHUNK_FRAME_LEN..], &self.name, off, i as u64)
    }

    /// Every record in order, one chunk at a time.
    pub fn records(&mut self) -> Records<'_, R> {
        Records {
            r: self,
            next_chunk: 0,
            buf: Vec::new(),
            pos: 0,
            raw: Vec::new(),
            failed: false,
        }
    }

    /// Every record, decoding chunks on all available cores.
    pub fn read_all(&mut self) -> Result<Vec<Record>> {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        self.read_all_parallel(n)
    }

    /// Every record, decoding chunks on `threads` threads. The order (and any
    /// error, the first damaged chunk's) is the same whatever the thread count.
    pub fn read_all_parallel(&mut self, threads: usize) -> Result<Vec<Record>> {
        let n = self.chunks.len();
        let mut raws = Vec::with_capacity(n);
        for i in 0..n {
            let mut raw = Vec::new();
            let f = self.read_raw(i, &mut raw)?;
            raws.push((f, raw));
        }
        let threads = threads.clamp(1, n.max(1));
        if threads == 1 {
            let mut out = Vec::with_capacity(self.summary.events.min(1 << 24) as usize);
            for (i, (f, raw)) in raws.iter().enumerate() {
                let off = self.chunks[i].offset;
                decode_frame_into(
                    f,
                    &raw[CHUNK_FRAME_LEN..],
                    &self.name,
                    off,
                    i as u64,
                    &mut out,
                )?;
            }
            return Ok(out);
        }
        let per = n.div_ceil(threads).max(1);
        let name = &self.name;
        let chunks = &self.chunks;
        let parts: Vec<Result<Vec<Vec<Record>>>> = std::thread::scope(|s| {
            let handles: Vec<_> = raws
                .chunks(per)
                .enumerate()
                .map(|(g, group)| {
                    s.spawn(move || {
                        group
                            .iter()
                            .enumerate()
                            .map(|(j, (f, raw))| {
                                let i = g * per + j;
                                decode_frame(
                                    f,
                                    &raw[CHUNK_FRAME_LEN..],
                                    name,
                                    chunks[i].offset,
                                    i as u64,
                                )
                            })
                            .collect::<Result<Vec<_>>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        let mut out = Vec::with_capacity(self.summary.events.min(1 << 24) as usize);
        for p in parts {
            for recs in p? {
                out.extend(recs);
            }
        }
        Ok(out)
    }

    /// Appends every record to `out` on this thread, reusing its capacity.
    pub fn read_all_into(&mut self, out: &mut Vec<Record>) -> Result<()> {
        let mut raw = Vec::new();
        for i in 0..self.chunks.len() {
            let f = self.read_raw(i, &mut raw)?;
            let off = self.chunks[i].offset;
            decode_frame_into(&f, &raw[CHUNK_FRAME_LEN..], &self.name, off, i as u64, out)?;
        }
        Ok(())
    }

    /// Calls `f` on every record in order, decoding one chunk at a time into a
    /// reused buffer (the fastest way through a trace on one thread).
    pub fn for_each_record(&mut self, mut f: impl FnMut(&Record)) -> Result<()> {
        let mut raw = Vec::new();
        let mut buf = Vec::new();
        for i in 0..self.chunks.len() {
            let fr = self.read_raw(i, &mut raw)?;
            let off = self.chunks[i].offset;
            buf.clear();
            decode_frame_into(
                &fr,
                &raw[CHUNK_FRAME_LEN..],
                &self.name,
                off,
                i as u64,
                &mut buf,
            )?;
            buf.iter().for_each(&mut f);
        }
        Ok(())
    }

    /// Gives back the underlying reader.
    pub fn into_inner(self) -> R {
        self.src
    }
}

/// Iterator over every record of a trace, in file order.
pub struct Records<'a, R> {
    r: &'a mut TraceReader<R>,
    next_chunk: usize,
    /// The current chunk's records (buffers reused from chunk to chunk).
    buf: Vec<Record>,
    pos: usize,
    raw: Vec<u8>,
    failed: bool,
}

impl<R: Read + Seek> Iterator for Records<'_, R> {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(slot) = self.buf.get_mut(self.pos) {
                self.pos += 1;
                let r = std::mem::replace(
                    slot,
                    Record {
                        seq: 0,
                        vcpu: 0,
                        time_ns: 0,
                        event: crate::event::Event::Halt,
                    },
                );
                return Some(Ok(r));
            }
            if self.failed || self.next_chunk >= self.r.chunk_count() {
                return None;
            }
            let i = self.next_chunk;
            self.next_chunk += 1;
            self.buf.clear();
            self.pos = 0;
            let res = self.r.read_raw(i, &mut self.raw).and_then(|f| {
                let off = self.r.chunks[i].offset;
                decode_frame_into(
                    &f,
                    &self.raw[CHUNK_FRAME_LEN..],
                    &self.r.name,
                    off,
                    i as u64,
                    &mut self.buf,
                )
            });
            if let Err(e) = res {
                self.failed = true;
                return Some(Err(e));
            }
        }
    }
}

fn summary_from_footer(f: &Footer, len: u64) -> TraceSummary {
    let mut by_kind = BTreeMap::new();
    for (code, &n) in f.by_kind.iter().enumerate() {
        // Kinds this reader does not know (from a newer writer) are not shown.
        if n > 0
            && let Some(&k) = KINDS.get(code)
        {
            by_kind.insert(k, n);
        }
    }
    let some = |v| (f.events > 0).then_some(v);
    TraceSummary {
        events: f.events,
        chunks: f.chunks.len() as u64,
        bytes: len,
        vcpus: f.vcpus.len() as u64,
        by_kind,
        last_seq: some(f.last_seq),
        last_time_ns: some(f.last_time_ns),
    }
}

/// Reads the trailer and the footer it points to, and checks the index.
pub(crate) fn read_footer<R: Read + Seek>(
    src: &mut R,
    name: &str,
    len: u64,
    header_end: u64,
) -> Result<Footer> {
    let min = header_end + (FOOTER_FRAME_LEN + TRAILER_LEN) as u64;
    let incomplete = |what: String| FormatError::Truncated {
        file: name.into(),
        at: Location::at(len),
        what,
    };
    if len < min {
        return Err(incomplete(
            "no footer index: the file ends before one could fit (the writer did not finish)"
                .into(),
        ));
    }
    let mut tr = [0u8; TRAILER_LEN];
    read_at(
        src,
        name,
        len - TRAILER_LEN as u64,
        &mut tr,
        len,
        Location::at(len),
        "trailer",
    )?;
    if tr[8..16] != TRAILER_MAGIC {
        return Err(incomplete(
            "no trailer at the end of the file (the writer did not finish)".into(),
        ));
    }
    let foff = le64(&tr[0..8]);
    let tat = Location::at(len - TRAILER_LEN as u64);
    if foff < header_end || foff > len - min + header_end {
        return Err(FormatError::Corrupt {
            file: name.into(),
            at: tat,
            what: format!("trailer points to the footer at {foff:#x}, outside the file"),
        });
    }
    let fat = Location::at(foff);
    let mut fh = [0u8; FOOTER_FRAME_LEN];
    read_at(src, name, foff, &mut fh, len, fat, "footer frame")?;
    if fh[0..4] != FOOTER_MAGIC {
        return Err(FormatError::Corrupt {
            file: name.into(),
            at: fat,
            what: format!("bad footer magic {:02x?}", &fh[0..4]),
        });
    }
    let blen = u64::from(le32(&fh[4..8]));
    if blen > MAX_FOOTER_BYTES {
        return Err(FormatError::Limit {
            file: name.into(),
            at: fat,
            field: "footer length",
            shown: human_bytes(blen),
            limit: MAX_FOOTER_BYTES,
        });
    }
    if foff + FOOTER_FRAME_LEN as u64 + blen + TRAILER_LEN as u64 != len {
        return Err(FormatError::Corrupt {
            file: name.into(),
            at: fat,
            what: format!("footer length {blen} does not reach the trailer"),
        });
    }
    let mut body = vec![0u8; blen as usize];
    read_at(
        src,
        name,
        foff + FOOTER_FRAME_LEN as u64,
        &mut body,
        len,
        fat,
        "footer",
    )?;
    check_crc(
        name,
        fat,
        "footer",
        le32(&fh[8..12]),
        crc32fast::hash(&body),
    )?;
    let footer: Footer =
        decode_body::<_, { MAX_FOOTER_BYTES as usize }>(&body, name, fat, "footer")?;
    // The index must tile the file between the header and the footer.
    let mut expect = header_end;
    let mut events = 0u64;
    for (i, c) in footer.chunks.iter().enumerate() {
        if c.offset != expect
            || u64::from(c.compressed_len) > wire::MAX_CHUNK_BYTES
            || c.offset + c.frame_len() > foff
        {
            return Err(FormatError::Corrupt {
                file: name.into(),
                at: fat,
                what: match i {
                    0 => format!(
                        "footer index entry 0 (offset {:#x}, {} bytes) does not start at the end of the header ({expect:#x})",
                        c.offset,
                        c.frame_len(),
                    ),
                    _ => format!(
                        "footer index entry {i} (offset {:#x}, {} bytes) does not follow chunk {} ending at {expect:#x}",
                        c.offset,
                        c.frame_len(),
                        i - 1
                    ),
                },
            });
        }
        expect = c.offset + c.frame_len();
        events += u64::from(c.count);
    }
    if expect != foff || events != footer.events {
        return Err(FormatError::Corrupt {
            file: name.into(),
            at: fat,
            what: format!(
                "footer index covers {expect:#x}..{foff:#x} badly or counts {} events, not {events}",
                footer.events
            ),
        });
    }
    Ok(footer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{DecidedBy, Event, MsrOutcome, Origin};
    use crate::writer::TraceWriter;

    fn recs(n: u64) -> Vec<Record> {
        (0..n)
            .map(|i| Record {
                seq: i,
                vcpu: (i % 3) as u32,
                time_ns: i * 4000,
                event: if i % 100 == 7 {
                    Event::Halt
                } else {
                    Event::MsrRead {
                        index: 0x10,
                        origin: Origin::Guest,
                        outcome: MsrOutcome::Value(i * 10_000),
                        decided_by: DecidedBy::Vmm,
                        capture: None,
                    }
                },
            })
            .collect()
    }

    fn write(rs: &[Record], flush_every: usize) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut w = TraceWriter::new(&mut buf, &TraceHeader::default()).unwrap();
        for (i, r) in rs.iter().enumerate() {
            w.push(r).unwrap();
            if flush_every > 0 && i % flush_every == flush_every - 1 {
                w.flush_chunk().unwrap();
            }
        }
        w.finish().unwrap();
        buf
    }

    #[test]
    fn round_trip_all_ways() {
        let rs = recs(50_000);
        let buf = write(&rs, 0);
        let mut r = TraceReader::from_bytes(&buf).unwrap();
        assert!(r.chunk_count() >= 1);
        assert_eq!(r.summary().events, 50_000);
        assert_eq!(r.summary().vcpus, 3);
        assert_eq!(r.summary().by_kind[&EventKind::Halt], 500);
        let seq: Vec<Record> = r.records().collect::<Result<_>>().unwrap();
        assert_eq!(seq, rs);
        for t in [1, 2, 5] {
            assert_eq!(r.read_all_parallel(t).unwrap(), rs);
        }
        let mut all = Vec::new();
        for i in 0..r.chunk_count() {
            let c = r.read_chunk(i).unwrap();
            assert_eq!(c[0].seq, r.chunk_info(i).unwrap().first_seq);
            all.extend(c);
        }
        assert_eq!(all, rs);
    }

    #[test]
    fn flush_chunk_makes_chunks() {
        let rs = recs(100);
        let buf = write(&rs, 10);
        let mut r = TraceReader::from_bytes(&buf).unwrap();
        assert_eq!(r.chunk_count(), 10);
        assert_eq!(r.read_all().unwrap(), rs);
    }

    #[test]
    fn empty_trace() {
        let buf = write(&[], 0);
        let mut r = TraceReader::from_bytes(&buf).unwrap();
        assert_eq!(r.chunk_count(), 0);
        assert_eq!(r.read_all().unwrap(), vec![]);
        assert_eq!(r.summary().last_seq, None);
    }
}
