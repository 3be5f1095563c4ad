//! Opening a `.kvt` for export and fidelity (one place to adapt to the reader).

use std::path::Path;

use kvmtrace_format::{Record, TraceHeader};

/// An opened trace: its header and a streaming record iterator.
pub struct Input {
    header: TraceHeader,
}

impl Input {
    pub fn header(&self) -> &TraceHeader {
        &self.header
    }

    pub fn records(&mut self) -> impl Iterator<Item = Result<Record, String>> + '_ {
        std::iter::empty()
    }
}

/// Open a trace for streaming.
pub fn open_trace(path: &Path) -> anyhow::Result<Input> {
    let _ = Input {
        header: TraceHeader::default(),
    };
    anyhow::bail!(
        "{}: reading .kvt files needs kvmtrace_format::TraceReader (not merged yet)",
        path.display()
    )
}
