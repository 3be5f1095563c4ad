//! Observe mode: what the kernel decided, read from its own KVM tracepoints.
//!
//! The decoder and the tracefs instance live in `kvmtrace-capture` (one decoder
//! for observe mode, wrap/attach recording and `kvmtrace import`); this module
//! re-exports them under their old paths and adds what needs `/dev/kvm`.

/// This machine's kernel, KVM module and KVM offers, for trace headers.
pub mod host;

pub use kvmtrace_capture::{
    CaptureConfig, CaptureStats, ConvertError, ConvertStats, Converter, EventLine, FieldError,
    KvmEvent, LineError, LineKind, ObserveError, Observed, RunReturn, TracefsCapture, VcpuMap,
    current_tid, parse_event, parse_line, user_merge_key,
};
pub use kvmtrace_capture::{convert, fields, line, tracefs};
