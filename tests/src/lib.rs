//! Helpers for kvmtrace's end-to-end tests.

use std::path::PathBuf;

/// The `kvmtrace` binary built for these tests.
pub fn kvmtrace_bin() -> PathBuf {
    // CARGO_BIN_EXE_* is only set for the package that owns the binary, so find
    // it next to the test executable (target/<profile>/deps/..).
    let mut p = std::env::current_exe().expect("current_exe");
    p.pop();
    if p.ends_with("deps") {
        p.pop();
    }
    p.join("kvmtrace")
}

pub use kvmtrace_recorder::kvm_check::require_kvm;
