//! `kvmtrace-capture`: the KVM tracepoints as kvmtrace reads them, with no KVM
//! ioctl in sight. One decoder for every path that reads the kernel's own
//! decisions: observe mode (the recorder's own VM), wrap/attach recording of
//! another VMM, and `kvmtrace import ftrace`.
//!
//! Map:
//! - [`line`]: one ftrace text line split into task, pid, CPU, time, event, fields;
//! - [`fields`]: the printk fields of each KVM tracepoint, decoded;
//! - [`convert`]: decoded lines to kvmtrace events (vCPU state machines);
//! - [`ftrace`]: streaming import of ftrace text (bounded memory);
//! - [`tracefs`]: private tracefs instances and live capture from them;
//! - [`host`]: this machine's kernel, KVM module and CPU (no `/dev/kvm`);
//! - [`split`], [`vmm`], [`procfs`]: which VM and vCPU each thread is.

/// Decoded lines to kvmtrace events (vCPU mapping, `#GP` explanation).
pub mod convert;
/// The printk fields of each KVM tracepoint, decoded.
pub mod fields;
/// Streaming import of ftrace text.
pub mod ftrace;
/// This machine's kernel, KVM module and CPU.
pub mod host;
/// One ftrace text line split into task, pid, CPU, timestamp, event, fields.
pub mod line;
/// `perf script` text and `perf.data` files.
pub mod perf;
/// A running VMM's threads as `/proc` shows them (process, name, vCPU).
pub mod procfs;
/// VMs and vCPUs kept apart: one trace per VM.
pub mod split;
/// Live capture from a private tracefs instance.
pub mod tracefs;
/// The VMMs' vCPU thread-name conventions.
pub mod vmm;

pub use convert::{ConvertError, ConvertStats, Converter, Observed, VcpuMap, user_merge_key};
pub use fields::{FieldError, KvmEvent, RunReturn, parse_event};
pub use line::{EventLine, LineError, LineKind, parse_line};
pub use tracefs::{CaptureConfig, CaptureStats, ObserveError, TracefsCapture, current_tid};

#[cfg(test)]
mod ftrace_tests;
#[cfg(test)]
mod tests;
