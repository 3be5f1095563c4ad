//! Opening a `.kvt` for export and fidelity: the format crate's streaming reader.

use std::path::Path;

use kvmtrace_format::TraceReader;

pub type Input = TraceReader;

/// Open a trace for streaming (records are decoded a chunk at a time).
pub fn open_trace(path: &Path) -> anyhow::Result<Input> {
    Ok(TraceReader::open(path)?)
}
