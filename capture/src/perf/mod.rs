//! `perf` input: `perf script` text and `perf.data` files made by
//! `perf record -e 'kvm:*'` (with or without `-p`/`-a`) or `perf kvm stat record`.
//!
//! Both become ftrace text lines (`comm-tid [cpu] secs.nanos: event: fields`)
//! that the one decoder of this crate ([`crate::ftrace::import_ftrace`]: the
//! line parser, the printk field parser and the converter) reads, so an event
//! means the same whichever way it was captured:
//! - [`script`]: `perf script` lines are re-cut into ftrace lines; lines perf
//!   could not format (`[FAILED TO PARSE] exception=13 has_error=1 …`, as
//!   perf 6.1 prints `kvm_inj_exception`) are printed from their raw fields by
//!   [`printk`];
//! - [`data`]: `perf.data` samples (read with the `linux-perf-data` crate) carry
//!   each tracepoint's raw record; [`format`] reads the field layout from the
//!   file's own tracing-data section (the recording kernel's
//!   `events/*/format` files), or from this machine's tracefs when the file has
//!   none, and [`printk`] prints the kernel's text from the fields.

pub mod data;
pub mod format;
pub mod printk;
pub mod script;

pub use data::{PerfDataError, PerfDataText, is_perf_data};
pub use script::PerfScriptText;

/// The `Read` of the perf text sources: copies what `buf` holds of
/// `out[*pos..]` and advances `pos`.
fn copy_out(out: &[u8], pos: &mut usize, buf: &mut [u8]) -> usize {
    let n = buf.len().min(out.len() - *pos);
    buf[..n].copy_from_slice(&out[*pos..*pos + n]);
    *pos += n;
    n
}
