//! `kvmtrace-format`: the events of a kvmtrace recording and the `.kvt` file
//! format that stores them. `FORMAT.md` documents every byte; in short:
//!
//! ```text
//!  offset 0                                                    all integers little endian
//!  +----------+-------+-------+--------------+-------+
//!  | KVMTRACE | major | minor | oldest reader| flags |   preamble, 16 bytes
//!  |  8 bytes |  u16  |  u16  |     u16      |  u16  |
//!  +----------+-------+-------+--------------+-------+
//!  | header_len u32 | header_crc32 u32 | bincode(TraceHeader) [+ extension] |  header
//!  +----------------+------------------+-------------------------------------+
//!  | "KVTC" | compressed_len u32 | uncompressed_len u32 | count u32 |        chunk 0
//!  | first_seq u64 | first_time_ns u64 | crc32 u32 |                     |    (36-byte frame
//!  | stream table | 9 record streams, each stored or zstd -3           |    + payload)
//!  +---------------------------------------------------------------------+
//!  | chunk 1 ...                                                         |
//!  +---------------------------------------------------------------------+
//!  | "KVTI" | footer_len u32 | footer_crc32 u32 | bincode(Footer) [+ ext] |   footer index
//!  +---------------------------------------------------------------------+
//!  | footer_offset u64 | "KVTTRAIL" |                                        trailer, 16 bytes
//!  +-------------------+------------+
//! ```
//!
//! Writing: [`TraceWriter`] (any `Write`) or [`create`] (a file, crash-safe);
//! a writer thread may encode chunks itself with [`ChunkEncoder`] /
//! [`encode_chunk`] and append them with [`TraceWriter::append_chunk`].
//! Reading: [`TraceReader`] (random access by chunk, sequential iteration,
//! parallel decode, summary). Damage: [`verify`], [`salvage`].

pub mod codec;
pub mod error;
pub mod event;
pub mod header;
pub mod perf;
pub mod reader;
pub mod verify;
pub mod wire;
pub mod writer;

pub use codec::{ChunkEncoder, ChunkStats, EncodedChunk, encode_chunk, kind_code};
pub use error::{FormatError, Location};
pub use event::*;
pub use header::*;
pub use reader::{Records, TraceReader, TraceSummary, not_regular};
pub use verify::{
    Damage, DamageKind, SalvageReport, VerifyReport, salvage, salvage_to_writer, verify,
    verify_reader,
};
pub use wire::{FORMAT_MAJOR, FORMAT_MINOR, OLDEST_READER, Version};
pub use writer::{ChunkInfo, TraceWriter, WriteSummary, create, incomplete_path};
