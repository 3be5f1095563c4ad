//! Errors of the `.kvt` writer and reader.
//!
//! Messages read like gimli's `object`: what was wrong, where (file, byte offset,
//! chunk), and why, e.g. "invalid chunk length at offset 0x1f40 in trace.kvt
//! (chunk 12): 9 GiB exceeds the 64 MiB limit". The variants are the cases a user
//! can act on differently: a file cut short ([`FormatError::Truncated`]: salvage
//! it), a file from a newer kvmtrace ([`FormatError::TooNew`]: upgrade), a damaged
//! file ([`FormatError::Corrupt`], [`FormatError::Limit`]), and a file that is not
//! a trace at all ([`FormatError::NotATrace`]).

use std::fmt;
use std::io;

/// Where in a file something was found: the byte offset and, for chunk data, the
/// chunk number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Location {
    pub offset: u64,
    pub chunk: Option<u64>,
}

impl Location {
    pub fn at(offset: u64) -> Self {
        Location {
            offset,
            chunk: None,
        }
    }

    pub fn chunk(offset: u64, chunk: u64) -> Self {
        Location {
            offset,
            chunk: Some(chunk),
        }
    }
}

/// Renders "at offset 0x1f40 in FILE (chunk 12)".
pub(crate) struct Where<'a>(pub &'a str, pub &'a Location);

/// Renders "at offset 0x1f40 (chunk 12)".
pub(crate) struct At<'a>(pub &'a Location);

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at offset {:#x}", self.0.offset)?;
        if let Some(c) = self.0.chunk {
            write!(f, " (chunk {c})")?;
        }
        Ok(())
    }
}

impl fmt::Display for Where<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at offset {:#x} in {}", self.1.offset, self.0)?;
        if let Some(c) = self.1.chunk {
            write!(f, " (chunk {c})")?;
        }
        Ok(())
    }
}

/// What a salvage can do for a file cut at `at`: nothing when the cut is in
/// the preamble or header (no chunk can have been written whole before it),
/// else keep every complete chunk.
pub(crate) struct SalvageHint<'a>(pub &'a str, pub &'a Location);

/// Offsets at or below this (preamble and header frame) are inside the header.
const HEADER_CUT_MAX: u64 = crate::wire::PREAMBLE_LEN as u64;

impl fmt::Display for SalvageHint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.1.chunk.is_none() && self.1.offset <= HEADER_CUT_MAX {
            write!(
                f,
                "it is cut inside its header, before any event was written: nothing can be salvaged"
            )
        } else {
            write!(
                f,
                "run `kvmtrace verify {} --salvage OUT` to keep every complete chunk",
                self.0
            )
        }
    }
}

/// A byte count for humans: "9 GiB", "64 MiB", "1234 bytes".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (name, size) in UNITS {
        if n >= size && n % size == 0 {
            return format!("{} {name}", n / size);
        }
        if n >= size * 10 {
            return format!("{} {name}", n / size);
        }
    }
    format!("{n} bytes")
}

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Opening or reading the file failed.
    #[error("cannot read {file}: {source}")]
    Read {
        file: String,
        #[source]
        source: io::Error,
    },
    /// Writing the file failed (e.g. ENOSPC): the trace is incomplete.
    #[error("cannot write {file} at offset {offset:#x}: {source}")]
    Write {
        file: String,
        offset: u64,
        #[source]
        source: io::Error,
    },
    /// The file does not start with the kvmtrace magic.
    #[error("{file} is not a kvmtrace trace: {why}")]
    NotATrace { file: String, why: String },
    /// The file needs a newer reader.
    #[error(
        "{file} is format version {file_version} and needs a reader of version {needs} or later; \
         this kvmtrace reads up to version {reader}: upgrade kvmtrace"
    )]
    TooNew {
        file: String,
        file_version: String,
        needs: u16,
        reader: u16,
    },
    /// The file ends early: the writer did not finish (crash, kill, full disk).
    #[error("incomplete trace {file}: {what} {}; {}", At(.at), SalvageHint(.file, .at))]
    Truncated {
        file: String,
        at: Location,
        what: String,
    },
    /// A length or count field is beyond its limit.
    #[error("invalid {field} {}: {} exceeds the {} limit", Where(.file, .at), .shown, human_bytes(*.limit))]
    Limit {
        file: String,
        at: Location,
        field: &'static str,
        /// The value as shown to the user (a size or a count).
        shown: String,
        limit: u64,
    },
    /// The bytes are damaged: a CRC mismatch, bad framing, undecodable data.
    #[error("corrupt trace: {what} {}", Where(.file, .at))]
    Corrupt {
        file: String,
        at: Location,
        what: String,
    },
    /// A record or header could not be encoded.
    #[error("cannot encode {what} for {file}: {why}")]
    Encode {
        file: String,
        what: &'static str,
        why: String,
    },
    /// A chunk number beyond the index.
    #[error("chunk {index} does not exist in {file}: it has {count} chunks")]
    NoSuchChunk {
        file: String,
        index: u64,
        count: u64,
    },
    /// Renaming `NAME.incomplete` to `NAME` failed.
    #[error("cannot rename {from} to {to}: {source}")]
    Rename {
        from: String,
        to: String,
        #[source]
        source: io::Error,
    },
    /// `NAME.incomplete` exists: another recording to the same path is
    /// running, or one stopped without finishing.
    #[error(
        "cannot write {path}: {tmp} already exists: another recording to {path} is running, \
         or one stopped without finishing (salvage it with `kvmtrace verify {tmp} --salvage OUT`, \
         or remove it)"
    )]
    Busy { path: String, tmp: String },
    /// The writer failed earlier and refuses further use.
    #[error("the writer for {file} failed earlier; the trace stays incomplete")]
    WriterFailed { file: String },
}

impl FormatError {
    /// True for damage a salvage can recover from (truncation or corruption after
    /// the header), as opposed to I/O errors, foreign files and newer versions.
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            FormatError::Truncated { .. } | FormatError::Corrupt { .. } | FormatError::Limit { .. }
        )
    }

    /// The location of the damage, if this is damage.
    pub fn location(&self) -> Option<Location> {
        match self {
            FormatError::Truncated { at, .. }
            | FormatError::Corrupt { at, .. }
            | FormatError::Limit { at, .. } => Some(*at),
            _ => None,
        }
    }
}

pub type Result<T, E = FormatError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_like_object() {
        let e = FormatError::Limit {
            file: "trace.kvt".into(),
            at: Location::chunk(0x1f40, 12),
            field: "chunk length",
            shown: human_bytes(9 << 30),
            limit: 64 << 20,
        };
        assert_eq!(
            e.to_string(),
            "invalid chunk length at offset 0x1f40 in trace.kvt (chunk 12): 9 GiB exceeds the 64 MiB limit"
        );
        let t = FormatError::Truncated {
            file: "t.kvt".into(),
            at: Location::chunk(0x40, 3),
            what: "chunk cut short".into(),
        };
        assert_eq!(
            t.to_string(),
            "incomplete trace t.kvt: chunk cut short at offset 0x40 (chunk 3); run `kvmtrace verify t.kvt --salvage OUT` to keep every complete chunk"
        );
    }

    #[test]
    fn human_bytes_table() {
        for (n, s) in [
            (0, "0 bytes"),
            (1023, "1023 bytes"),
            (1024, "1 KiB"),
            (64 << 20, "64 MiB"),
            (9 << 30, "9 GiB"),
            (12345, "12 KiB"),
            (5000, "5000 bytes"),
            (123456, "120 KiB"),
        ] {
            assert_eq!(human_bytes(n), s, "{n}");
        }
    }
}
