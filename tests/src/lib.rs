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

/// Whether `/dev/kvm` can be opened read-write. Prints why not, so a skip never
/// looks like a pass.
pub fn require_kvm(test: &str) -> bool {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => {
            println!("KVM-TEST-RAN {test}");
            true
        }
        Err(e) => {
            println!("KVM-TEST-SKIPPED {test}: cannot open /dev/kvm: {e}");
            false
        }
    }
}
