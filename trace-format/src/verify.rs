//! Damage: [`verify`] says where a trace is damaged and how; [`salvage`] writes
//! every complete, valid chunk before the damage as a new, valid trace.
//!
//! Both walk the chunk frames from the start (they are self-delimiting), so a
//! file cut off at any byte keeps every chunk written whole before the cut.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::codec::{ChunkStats, EncodedChunk};
use crate::error::{FormatError, Location, Result};
use crate::reader::{file_len, open_file, read_chunk_at, read_footer, read_head};
use crate::wire::{CHUNK_FRAME_LEN, CHUNK_MAGIC, FOOTER_MAGIC, Version};
use crate::writer::{ChunkInfo, TraceWriter, create};

/// What kind of damage was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DamageKind {
    /// The file ends inside a frame, or before the footer.
    Truncated,
    /// A length field beyond its limit.
    Length,
    /// A CRC32 mismatch.
    Crc,
    /// zstd refused the payload or it has the wrong size.
    Decompression,
    /// The records do not decode.
    Decode,
    /// Neither a chunk nor a footer where one must start.
    Framing,
    /// The footer index or trailer is missing or wrong.
    Footer,
    /// The header is damaged (nothing can be salvaged).
    Header,
}

impl DamageKind {
    /// The kind in words, for human output.
    pub fn describe(self) -> &'static str {
        match self {
            DamageKind::Truncated => "the file is cut short",
            DamageKind::Length => "a length field beyond its limit",
            DamageKind::Crc => "a CRC32 mismatch",
            DamageKind::Decompression => "a stream does not decompress",
            DamageKind::Decode => "records do not decode",
            DamageKind::Framing => "no chunk or footer where one must start",
            DamageKind::Footer => "the footer index or trailer is wrong",
            DamageKind::Header => "the header is damaged",
        }
    }
}

/// The first damage in a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Damage {
    pub kind: DamageKind,
    pub offset: u64,
    /// The chunk number, for damage in a chunk frame.
    pub chunk: Option<u64>,
    /// The full message, e.g. "corrupt trace: chunk CRC32 mismatch (...) at
    /// offset 0x40 in t.kvt (chunk 0)".
    pub message: String,
}

impl Damage {
    fn from_error(e: &FormatError, footer: bool) -> Self {
        let at = e.location().unwrap_or(Location::at(0));
        let msg = e.to_string();
        let kind = match e {
            FormatError::Truncated { .. } => DamageKind::Truncated,
            FormatError::Limit { .. } => DamageKind::Length,
            _ if footer => DamageKind::Footer,
            _ if msg.contains("CRC32") => DamageKind::Crc,
            _ if msg.contains("decompress") => DamageKind::Decompression,
            _ if msg.contains("does not decode") => DamageKind::Decode,
            _ => DamageKind::Framing,
        };
        Damage {
            kind,
            offset: at.offset,
            chunk: at.chunk,
            message: msg,
        }
    }
}

/// What `verify` found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub file: String,
    pub bytes: u64,
    pub version: Version,
    /// Complete, valid chunks before the damage (all of them if none).
    pub chunks_ok: u64,
    pub events_ok: u64,
    /// The footer index and trailer are present and agree with the chunks.
    pub footer_ok: bool,
    pub last_seq: Option<u64>,
    pub last_time_ns: Option<u64>,
    /// The first damage; `None` for a sound file.
    pub damage: Option<Damage>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.damage.is_none()
    }
}

/// What `salvage` kept and lost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SalvageReport {
    pub chunks_kept: u64,
    pub events_kept: u64,
    /// Bytes of the input not carried over (damaged or cut-off data; a valid
    /// footer is rewritten, not lost).
    pub bytes_lost: u64,
    pub bytes_written: u64,
    pub last_seq: Option<u64>,
    pub last_time_ns: Option<u64>,
    /// The damage that ended the salvage, if any.
    pub damage: Option<Damage>,
    pub path: Option<PathBuf>,
}

/// The result of walking chunk frames from the start.
pub(crate) struct ChunkScan {
    pub chunks: Vec<ChunkInfo>,
    pub chunk_stats: Vec<ChunkStats>,
    pub stats: ChunkStats,
    /// Offset after the last valid chunk.
    pub good_end: u64,
    /// Offset of a footer frame found right after the last chunk.
    pub footer_at: Option<u64>,
    /// The first damage in the chunk area (a missing footer counts).
    pub damage: Option<FormatError>,
}

/// Walks chunk frames from `start`, fully checking each, until the footer, the
/// end of the file, or damage.
pub(crate) fn scan_chunks<R: Read + Seek>(
    src: &mut R,
    name: &str,
    len: u64,
    start: u64,
) -> Result<ChunkScan> {
    let mut s = ChunkScan {
        chunks: Vec::new(),
        chunk_stats: Vec::new(),
        stats: ChunkStats::default(),
        good_end: start,
        footer_at: None,
        damage: None,
    };
    let mut pos = start;
    let mut raw = Vec::new();
    loop {
        let i = s.chunks.len() as u64;
        if pos == len {
            s.damage = Some(FormatError::Truncated {
                file: name.into(),
                at: Location::at(pos),
                what: format!(
                    "the file ends after chunk {} without a footer index (the writer did not finish)",
                    i as i64 - 1
                ),
            });
            break;
        }
        let mut magic = [0u8; 4];
        let n = (len - pos).min(4) as usize;
        src.seek(SeekFrom::Start(pos))
            .and_then(|_| src.read_exact(&mut magic[..n]))
            .map_err(|source| FormatError::Read {
                file: name.into(),
                source,
            })?;
        if magic[..n] == FOOTER_MAGIC[..n] && n == 4 {
            s.footer_at = Some(pos);
            break;
        }
        if n < 4 && (magic[..n] == FOOTER_MAGIC[..n] || magic[..n] == CHUNK_MAGIC[..n]) {
            s.damage = Some(FormatError::Truncated {
                file: name.into(),
                at: Location::chunk(pos, i),
                what: format!("a frame is cut short after {n} bytes"),
            });
            break;
        }
        match read_chunk_at(src, name, len, pos, i, &mut raw) {
            Ok((f, recs)) => {
                let mut st = ChunkStats::default();
                for r in &recs {
                    st.add(r);
                }
                s.stats.merge(&st);
                s.chunk_stats.push(st);
                s.chunks.push(ChunkInfo {
                    offset: pos,
                    compressed_len: f.compressed_len,
                    uncompressed_len: f.uncompressed_len,
                    count: f.count,
                    first_seq: f.first_seq,
                    first_time_ns: f.first_time_ns,
                });
                pos += (CHUNK_FRAME_LEN + f.compressed_len as usize) as u64;
                s.good_end = pos;
            }
            Err(e) if e.is_damage() => {
                s.damage = Some(e);
                break;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(s)
}

/// Checks a whole trace file: every chunk (CRC, limits, decompression, decode),
/// the footer index and the trailer. Returns `Err` only when the file cannot be
/// read at all, is not a trace, or is too new; damage is in the report.
pub fn verify(path: impl AsRef<Path>) -> Result<VerifyReport> {
    let (src, name) = open_file(path.as_ref())?;
    verify_reader(src, name)
}

/// [`verify`] over any `Read + Seek`.
pub fn verify_reader<R: Read + Seek>(mut src: R, name: impl Into<String>) -> Result<VerifyReport> {
    let name = name.into();
    let len = file_len(&mut src, &name)?;
    let (version, header_end) = match read_head(&mut src, &name, len) {
        Ok((v, _, end)) => (v, end),
        Err(e) if e.is_damage() => {
            let mut d = Damage::from_error(&e, false);
            d.kind = if d.kind == DamageKind::Truncated {
                DamageKind::Truncated
            } else {
                DamageKind::Header
            };
            return Ok(VerifyReport {
                file: name,
                bytes: len,
                version: Version::CURRENT,
                chunks_ok: 0,
                events_ok: 0,
                footer_ok: false,
                last_seq: None,
                last_time_ns: None,
                damage: Some(d),
            });
        }
        Err(e) => return Err(e),
    };
    let s = scan_chunks(&mut src, &name, len, header_end)?;
    let (damage, footer_ok) = match &s.damage {
        Some(e) => (Some(Damage::from_error(e, false)), false),
        None => match check_footer(&mut src, &name, len, header_end, &s.chunks)? {
            Some(e) => (Some(Damage::from_error(&e, true)), false),
            None => (None, true),
        },
    };
    let some = |v| (s.stats.events > 0).then_some(v);
    Ok(VerifyReport {
        file: name,
        bytes: len,
        version,
        chunks_ok: s.chunks.len() as u64,
        events_ok: s.stats.events,
        footer_ok,
        last_seq: some(s.stats.last_seq),
        last_time_ns: some(s.stats.last_time_ns),
        damage,
    })
}

/// Writes every complete, valid chunk of `input` before its first damage to
/// `out` as a valid trace (via `OUT.incomplete`, renamed when done).
pub fn salvage(input: impl AsRef<Path>, out: impl AsRef<Path>) -> Result<SalvageReport> {
    let (src, name) = open_file(input.as_ref())?;
    let mut rep = None;
    let w = |header: &crate::TraceHeader| create(out.as_ref(), header);
    let summary = salvage_with(src, name, w, &mut rep)?;
    let mut r = rep.expect("set by salvage_with");
    r.path = summary.path;
    Ok(r)
}

/// [`salvage`] from any `Read + Seek` into any `Write` (e.g. memory).
pub fn salvage_to_writer<R: Read + Seek, W: Write>(
    src: R,
    name: impl Into<String>,
    out: W,
) -> Result<SalvageReport> {
    let mut rep = None;
    salvage_with(src, name.into(), |h| TraceWriter::new(out, h), &mut rep)?;
    Ok(rep.expect("set by salvage_with"))
}

fn salvage_with<R: Read + Seek, W: Write>(
    mut src: R,
    name: String,
    make: impl FnOnce(&crate::TraceHeader) -> Result<TraceWriter<W>>,
    rep: &mut Option<SalvageReport>,
) -> Result<crate::WriteSummary> {
    let len = file_len(&mut src, &name)?;
    // A damaged header leaves nothing to salvage: that is an error.
    let (_, header, header_end) = read_head(&mut src, &name, len)?;
    let s = scan_chunks(&mut src, &name, len, header_end)?;
    let damage = match &s.damage {
        Some(e) => Some(Damage::from_error(e, false)),
        None => check_footer(&mut src, &name, len, header_end, &s.chunks)?
            .map(|e| Damage::from_error(&e, true)),
    };
    let mut w = make(&header)?;
    for (c, st) in s.chunks.iter().zip(s.chunk_stats) {
        let mut bytes = vec![0u8; c.frame_len() as usize];
        src.seek(SeekFrom::Start(c.offset))
            .and_then(|_| src.read_exact(&mut bytes))
            .map_err(|source| FormatError::Read {
                file: name.clone(),
                source,
            })?;
        w.append_chunk(&EncodedChunk {
            bytes,
            uncompressed_len: c.uncompressed_len,
            count: c.count,
            first_seq: c.first_seq,
            first_time_ns: c.first_time_ns,
            stats: st,
        })?;
    }
    let summary = w.finish()?;
    // A valid footer after the chunks is rewritten, not lost.
    let lost = if damage.is_none() {
        0
    } else {
        len - s.good_end
    };
    *rep = Some(SalvageReport {
        chunks_kept: s.chunks.len() as u64,
        events_kept: summary.events,
        bytes_lost: lost,
        bytes_written: summary.bytes,
        last_seq: summary.last_seq,
        last_time_ns: summary.last_time_ns,
        damage,
        path: None,
    });
    Ok(summary)
}

/// Checks the footer and trailer after a clean chunk scan: `Some(damage)` if
/// they are missing, damaged or disagree with the chunks.
pub(crate) fn check_footer<R: Read + Seek>(
    src: &mut R,
    name: &str,
    len: u64,
    header_end: u64,
    chunks: &[ChunkInfo],
) -> Result<Option<FormatError>> {
    match read_footer(src, name, len, header_end) {
        Ok(f) if f.chunks == chunks => Ok(None),
        Ok(_) => Ok(Some(FormatError::Corrupt {
            file: name.into(),
            at: Location::at(len),
            what: "the footer index disagrees with the chunks".into(),
        })),
        Err(e) if e.is_damage() => Ok(Some(e)),
        Err(e) => Err(e),
    }
}
