//! The ftrace importer on arbitrary bytes: never a panic, never an unbounded
//! allocation; every input is records or a clear error, strict and lenient.
//! `cargo +nightly fuzz run ftrace_import`, or `fuzz/smoke.sh` on stable.

#![no_main]

use kvmtrace_capture::ftrace::{ImportOptions, import_to_vec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for lenient in [false, true] {
        if let Ok((records, summary)) = import_to_vec(data, &ImportOptions { lenient }) {
            // An import that succeeds produced KVM events, in sequence order.
            assert!(summary.kvm_lines > 0);
            assert!(records.windows(2).all(|w| w[0].seq < w[1].seq));
        }
    }
});
