//! The fixed-layout parts of a `.kvt` file: preamble, header frame, chunk frame
//! header, footer frame and trailer, the limits on every length field, and the
//! LEB128/zigzag integers of the record encoding. `FORMAT.md` documents each byte.

use crate::error::human_bytes;

/// The first 8 bytes of every trace.
pub const MAGIC: [u8; 8] = *b"KVMTRACE";
/// The format version this crate writes (and the newest it reads fully).
pub const FORMAT_MAJOR: u16 = 1;
pub const FORMAT_MINOR: u16 = 4;
/// The oldest reader version that can read what this crate writes (rr's
/// forward-compatibility number): a reader of version R reads any file whose
/// oldest-reader number is <= R, whatever its own version.
pub const OLDEST_READER: u16 = 1;

/// Size of the preamble: magic, major, minor, oldest reader, flags.
pub const PREAMBLE_LEN: usize = 16;
/// Size of the header frame's fixed part: length, CRC32.
pub const HEADER_FRAME_LEN: usize = 8;
/// Magic of a chunk frame.
pub const CHUNK_MAGIC: [u8; 4] = *b"KVTC";
/// Size of a chunk frame header.
pub const CHUNK_FRAME_LEN: usize = 36;
/// Magic of the footer frame.
pub const FOOTER_MAGIC: [u8; 4] = *b"KVTI";
/// Size of the footer frame's fixed part: magic, length, CRC32.
pub const FOOTER_FRAME_LEN: usize = 12;
/// Magic closing the trailer, the last 8 bytes of a finished trace.
pub const TRAILER_MAGIC: [u8; 8] = *b"KVTTRAIL";
/// Size of the trailer: footer offset, magic.
pub const TRAILER_LEN: usize = 16;

/// Encoded events per chunk before the writer closes it.
pub const CHUNK_TARGET_BYTES: usize = 64 << 10;
/// Limit on a chunk's compressed and uncompressed length. A writer closes a
/// chunk once it holds [`CHUNK_TARGET_BYTES`], and one record encodes to at
/// most [`MAX_EVENT_BYTES`], so no writer's chunk comes near it; a reader
/// decompresses at most this much per chunk.
pub const MAX_CHUNK_BYTES: u64 = 2 << 20;
/// Limit on a chunk's record count. A record takes at least three encoded
/// bytes (tag, time low byte, time high varint), so a writer's chunk of
/// [`CHUNK_TARGET_BYTES`] holds under 22,000; the limit bounds what one chunk
/// decodes to in memory (a decompression bomb of tiny records).
pub const MAX_CHUNK_RECORDS: u32 = 1 << 16;
/// Limit on one record's encoded size (bincode limit of an event body).
pub const MAX_EVENT_BYTES: usize = 1 << 20;
/// Limit on the header length.
pub const MAX_HEADER_BYTES: u64 = 16 << 20;
/// Limit on the footer length.
pub const MAX_FOOTER_BYTES: u64 = 64 << 20;

/// A bincode decode error in words (bincode 2 shows its `Debug` form, e.g.
/// `UnexpectedEnd { additional: 1 }`).
pub(crate) fn bincode_why(e: &bincode::error::DecodeError) -> String {
    use bincode::error::DecodeError as D;
    match e {
        D::UnexpectedEnd { additional } => {
            format!("the data ends early (at least {additional} more bytes needed)")
        }
        D::LimitExceeded => "a length in the data exceeds the size limit".into(),
        D::UnexpectedVariant {
            type_name, found, ..
        } => {
            let t = type_name.rsplit("::").next().unwrap_or(type_name);
            format!("unknown {t} variant {found}")
        }
        D::Utf8 { .. } => "a string is not valid UTF-8".into(),
        D::InvalidBooleanValue(v) => format!("a boolean has the value {v}, not 0 or 1"),
        D::InvalidCharEncoding(_) => "a character is not valid UTF-8".into(),
        D::OutsideUsizeRange(v) => format!("a length of {v} is out of range"),
        D::ArrayLengthMismatch { required, found } => {
            format!("an array has {found} elements, not {required}")
        }
        D::InvalidIntegerType { .. } => "an integer has an invalid varint marker".into(),
        D::Other(s) => (*s).to_string(),
        D::OtherString(s) => s.clone(),
        D::Serde(s) => format!("{s:?}").to_lowercase().replace('_', " "),
        D::Io { .. } => "the data ends early".into(),
        _ => "the data is invalid".into(),
    }
}

/// CRC checks are off in fuzzing builds (`cargo fuzz` sets `cfg(fuzzing)`), so
/// that mutated inputs reach decompression and decoding instead of all failing
/// the checksum. Every other check stays.
pub(crate) const CHECK_CRC: bool = !cfg!(fuzzing);

/// The bincode configuration of every bincode-encoded part: little endian,
/// variable-length integers (bincode 2 `standard()`), with a byte limit so a
/// hostile length never allocates more than the limit.
pub(crate) const fn bincode_config<const LIMIT: usize>() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<LIMIT>,
> {
    bincode::config::standard().with_limit::<LIMIT>()
}

/// The version numbers of a file, from its preamble.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Version {
    pub major: u16,
    pub minor: u16,
    pub oldest_reader: u16,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl Version {
    pub const CURRENT: Version = Version {
        major: FORMAT_MAJOR,
        minor: FORMAT_MINOR,
        oldest_reader: OLDEST_READER,
    };
}

pub(crate) fn preamble(v: Version) -> [u8; PREAMBLE_LEN] {
    let mut b = [0u8; PREAMBLE_LEN];
    b[..8].copy_from_slice(&MAGIC);
    b[8..10].copy_from_slice(&v.major.to_le_bytes());
    b[10..12].copy_from_slice(&v.minor.to_le_bytes());
    b[12..14].copy_from_slice(&v.oldest_reader.to_le_bytes());
    // 14..16: flags, none defined, written 0 and ignored.
    b
}

/// The fixed header of a chunk frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChunkFrame {
    pub compressed_len: u32,
    pub uncompressed_len: u32,
    pub count: u32,
    pub first_seq: u64,
    pub first_time_ns: u64,
    pub crc: u32,
}

impl ChunkFrame {
    pub fn to_bytes(self) -> [u8; CHUNK_FRAME_LEN] {
        let mut b = [0u8; CHUNK_FRAME_LEN];
        b[0..4].copy_from_slice(&CHUNK_MAGIC);
        b[4..8].copy_from_slice(&self.compressed_len.to_le_bytes());
        b[8..12].copy_from_slice(&self.uncompressed_len.to_le_bytes());
        b[12..16].copy_from_slice(&self.count.to_le_bytes());
        b[16..24].copy_from_slice(&self.first_seq.to_le_bytes());
        b[24..32].copy_from_slice(&self.first_time_ns.to_le_bytes());
        b[32..36].copy_from_slice(&self.crc.to_le_bytes());
        b
    }

    /// Parses the fields; the caller has checked the magic.
    pub fn parse(b: &[u8; CHUNK_FRAME_LEN]) -> Self {
        ChunkFrame {
            compressed_len: le32(&b[4..8]),
            uncompressed_len: le32(&b[8..12]),
            count: le32(&b[12..16]),
            first_seq: le64(&b[16..24]),
            first_time_ns: le64(&b[24..32]),
            crc: le32(&b[32..36]),
        }
    }

    /// The CRC32 a frame must carry: over bytes 4..32 of the frame header (every
    /// field but the magic and the CRC) and then the compressed payload.
    pub fn compute_crc(b: &[u8; CHUNK_FRAME_LEN], payload: &[u8]) -> u32 {
        let mut h = crc32fast::Hasher::new();
        h.update(&b[4..32]);
        h.update(payload);
        h.finalize()
    }

    /// The first field beyond its limit, as (field name, value shown, limit).
    pub fn check_limits(&self) -> Option<(&'static str, String, u64)> {
        if u64::from(self.compressed_len) > MAX_CHUNK_BYTES {
            return Some((
                "chunk length",
                human_bytes(self.compressed_len.into()),
                MAX_CHUNK_BYTES,
            ));
        }
        if u64::from(self.uncompressed_len) > MAX_CHUNK_BYTES {
            return Some((
                "chunk uncompressed length",
                human_bytes(self.uncompressed_len.into()),
                MAX_CHUNK_BYTES,
            ));
        }
        None
    }
}

pub(crate) fn le32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

pub(crate) fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

// ---- LEB128 and zigzag ----

#[inline]
pub(crate) fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

#[inline]
pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
pub(crate) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// A bounds-checked cursor over a decompressed chunk payload.
pub(crate) struct Cursor<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
}

/// Why a payload did not decode, and where in the payload.
#[derive(Debug)]
pub(crate) struct PayloadError {
    /// The stream (FORMAT.md, "Chunk payload"), or None for the stream table.
    pub stream: Option<usize>,
    /// Byte offset within the stream or table.
    pub pos: usize,
    pub what: String,
    /// zstd refused a stream (as opposed to records that do not decode).
    pub decompress: bool,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    pub fn err(&self, what: impl Into<String>) -> PayloadError {
        PayloadError {
            stream: None,
            pos: self.pos,
            what: what.into(),
            decompress: false,
        }
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    #[inline(always)]
    pub fn u8(&mut self) -> Result<u8, PayloadError> {
        match self.buf.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => Err(self.err("record cut short")),
        }
    }

    #[inline(always)]
    pub fn varint(&mut self) -> Result<u64, PayloadError> {
        // Fast path: one byte.
        if let Some(&b) = self.buf.get(self.pos)
            && b < 0x80
        {
            self.pos += 1;
            return Ok(u64::from(b));
        }
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.u8()?;
            if i == 9 && b > 1 {
                return Err(self.err("varint overflows 64 bits"));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(self.err("varint longer than 10 bytes"))
    }

    #[inline(always)]
    pub fn varint_u32(&mut self) -> Result<u32, PayloadError> {
        let v = self.varint()?;
        u32::try_from(v).map_err(|_| self.err(format!("{v:#x} does not fit 32 bits")))
    }

    #[inline(always)]
    pub fn zigzag(&mut self) -> Result<i64, PayloadError> {
        Ok(unzigzag(self.varint()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trip() {
        for v in [0u64, 1, 127, 128, 300, 1 << 32, u64::MAX - 1, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            let mut c = Cursor::new(&b);
            assert_eq!(c.varint().unwrap(), v);
            assert!(c.is_empty());
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX, -4000, 4000] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }

    #[test]
    fn varint_rejects_overlong() {
        let b = [0xffu8; 11];
        assert!(Cursor::new(&b).varint().is_err());
        let mut b = vec![0xffu8; 9];
        b.push(0x02);
        assert!(Cursor::new(&b).varint().is_err());
        assert!(Cursor::new(&[0x80]).varint().is_err());
    }

    #[test]
    fn frame_round_trip() {
        let f = ChunkFrame {
            compressed_len: 1,
            uncompressed_len: 2,
            count: 3,
            first_seq: 4,
            first_time_ns: 5,
            crc: 6,
        };
        assert_eq!(ChunkFrame::parse(&f.to_bytes()), f);
    }
}
