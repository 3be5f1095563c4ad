//! `kvmtrace-format`: the events of a kvmtrace recording and the `.kvt` file
//! format that stores them (see `FORMAT.md`).

pub mod event;
pub mod header;

pub use event::*;
pub use header::*;
