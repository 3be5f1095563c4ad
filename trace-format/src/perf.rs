//! Entry points for `kvmtrace bench` to time: encode records to memory, decode a
//! buffer. Single-threaded unless said otherwise.

use crate::error::Result;
use crate::event::Record;
use crate::header::TraceHeader;
use crate::reader::TraceReader;
use crate::writer::TraceWriter;

/// Encodes `records` as a whole trace in memory.
pub fn encode_to_vec(header: &TraceHeader, records: &[Record]) -> Result<Vec<u8>> {
    let mut w = TraceWriter::new(Vec::with_capacity(records.len() * 3 + 4096), header)?;
    for r in records {
        w.push(r)?;
    }
    let (out, _) = w.finish_into_inner()?;
    Ok(out)
}

/// Decodes a whole trace held in memory on one thread.
pub fn decode_slice(bytes: &[u8]) -> Result<Vec<Record>> {
    TraceReader::from_bytes(bytes)?.read_all_parallel(1)
}

/// Decodes a whole trace held in memory on `threads` threads.
pub fn decode_slice_parallel(bytes: &[u8], threads: usize) -> Result<Vec<Record>> {
    TraceReader::from_bytes(bytes)?.read_all_parallel(threads)
}

/// Decodes a whole trace held in memory on one thread into `out` (cleared
/// first, capacity reused: what a streaming consumer pays per event).
pub fn decode_slice_into(bytes: &[u8], out: &mut Vec<Record>) -> Result<()> {
    out.clear();
    TraceReader::from_bytes(bytes)?.read_all_into(out)
}

/// Decodes a whole trace held in memory on one thread, chunk by chunk into a
/// reused buffer, handing each record to `f` (how a replay consumes a trace).
/// Returns the number of records.
pub fn decode_slice_streaming(bytes: &[u8], mut f: impl FnMut(&Record)) -> Result<u64> {
    let mut n = 0u64;
    TraceReader::from_bytes(bytes)?.for_each_record(|r| {
        n += 1;
        f(r)
    })?;
    Ok(n)
}
