//! QEMU as a real workload (issue 9 item 6): QEMU 7.2 with its SeaBIOS on
//! `accel=kvm`, booting our multiboot guest (`kvmtrace guest qemu`). Counted by
//! `.ci/run` through `QEMU-TEST-RAN` / `QEMU-TEST-SKIPPED` lines; where QEMU is
//! installed but fails, the test fails.

use std::process::Command;
use std::time::Duration;

use kvmtrace_recorder::qemu_guest::QEMU_EXIT_OK;
use kvmtrace_tests::{TempDir, qemu_guest, require_qemu, run_with_deadline};

/// SeaBIOS (~5 s emulated on this host) plus our guest; far more than either.
const DEADLINE: Duration = Duration::from_secs(120);

#[test]
fn qemu_boots_our_guest_and_it_exits_ok() {
    let Some(qemu) = require_qemu("tests::qemu_boots_our_guest_and_it_exits_ok") else {
        return;
    };
    let d = TempDir::new("qemu-boot");
    let guest = qemu_guest(&d);
    let args = kvmtrace_tools::commands::guest::qemu_args(&guest);
    let (code, stderr) = run_with_deadline(Command::new(&qemu).args(&args), DEADLINE)
        .unwrap_or_else(|| panic!("QEMU did not finish within {DEADLINE:?}: {qemu:?} {args:?}"));
    // isa-debug-exit: (status << 1) | 1; status 0 = both AP startups seen, no
    // unexpected exception.
    assert_eq!(
        code,
        Some(QEMU_EXIT_OK),
        "guest status {:?} (bits: 1 AP via xAPIC, 2 AP via x2APIC, 0x80|vector exception); stderr: {stderr}",
        code.map(|c| c >> 1)
    );
}
