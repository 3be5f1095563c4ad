//! The ftrace text importer lives in `kvmtrace-capture` (one decoder for
//! observe mode, wrap/attach and import); re-exported here under its old path.

pub use kvmtrace_capture::ftrace::*;
