//! Observe mode: what the kernel decided, read from its own KVM tracepoints.
//!
//! The same parser serves `kvmtrace import ftrace` (pasted text) and live
//! capture from a private tracefs instance.

/// Decoded lines to kvmtrace events (vCPU mapping, `#GP` explanation).
pub mod convert;
/// The printk fields of each KVM tracepoint, decoded.
pub mod fields;
/// This machine's kernel, KVM module and KVM offers, for trace headers.
pub mod host;
/// One ftrace text line split into task, pid, CPU, timestamp, event, fields.
pub mod line;
/// Live capture from a private tracefs instance (`record --mode observe`).
pub mod tracefs;

pub use convert::{ConvertError, ConvertStats, Converter, Observed, VcpuMap, user_merge_key};
pub use fields::{FieldError, KvmEvent, RunReturn, parse_event};
pub use line::{EventLine, LineError, LineKind, parse_line};
pub use tracefs::{CaptureConfig, CaptureStats, ObserveError, TracefsCapture, current_tid};

#[cfg(test)]
mod tests;
