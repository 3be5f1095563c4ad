//! The guard every KVM test calls first: a test that needs `/dev/kvm` and cannot
//! have it says why it skipped, so a skip never looks like a pass.

use std::io::Write;

/// Whether `/dev/kvm` can be opened read-write. Prints `KVM-TEST-RAN name` or
/// `KVM-TEST-SKIPPED name: why`, and appends the same line to the file named by
/// `KVMTRACE_KVM_TEST_LOG` if set, which `.ci/run` counts (cargo test hides the
/// stdout of passing tests).
pub fn require_kvm(test: &str) -> bool {
    let (ok, line) = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => (true, format!("KVM-TEST-RAN {test}")),
        Err(e) => (
            false,
            format!("KVM-TEST-SKIPPED {test}: cannot open /dev/kvm: {e}"),
        ),
    };
    log_test_line(&line);
    ok
}

/// Prints a `KVM-TEST-*` / `QEMU-TEST-*` line and appends it to the file named
/// by `KVMTRACE_KVM_TEST_LOG` if set (what `.ci/run` counts).
pub fn log_test_line(line: &str) {
    println!("{line}");
    if let Some(path) = std::env::var_os("KVMTRACE_KVM_TEST_LOG")
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        // One write of the whole line: tests run in parallel threads and
        // processes, and O_APPEND keeps only a single write(2) in one piece.
        let _ = f.write_all(format!("{line}\n").as_bytes());
    }
}
