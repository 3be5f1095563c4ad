//! Observe mode's live decisions see the kernel's earlier decisions: before the
//! recorder's live engine answers a user-space exit (here MONITOR/MWAIT, which
//! reach user space as emulation failures on this host, HOST.md), every kernel
//! event of that vCPU's earlier runs has been folded into it.

mod common;

use common::*;
use kvmtrace_format::{CaptureMode, DecidedBy, Event, MsrOutcome, MwaitOutcome, Origin};
use kvmtrace_replayer::{Policy, replay};

/// `mwait-strict`: the guest writes MISC_ENABLE = 0x40001 (bit 18, MWAIT
/// enable; the kernel decides it), then MONITOR/MWAIT, then clears bit 18 and
/// runs them again. The first pair must follow the kernel's answer to the
/// write (NOP when it accepted it), the second is `#UD`; and replaying the
/// trace against `host` finds no divergence on what the recorder decided.
#[test]
fn observe_mode_decides_mwait_after_the_kernels_misc_enable_write() {
    if !kvmtrace_recorder::kvm_check::require_kvm(
        "observe_mode_decides_mwait_after_the_kernels_misc_enable_write",
    ) {
        return;
    }
    let (header, recs) = record_scenario(
        "observe-mwait-strict.kvt",
        "mwait-strict",
        CaptureMode::Observe,
        None,
    );
    let set = recs
        .iter()
        .find_map(|r| match &r.event {
            Event::MsrWrite {
                index: 0x1a0,
                value,
                origin: Origin::Guest,
                outcome,
                decided_by: DecidedBy::Kernel,
                ..
            } if value & (1 << 18) != 0 => Some(*outcome),
            _ => None,
        })
        .expect("the kernel's MISC_ENABLE write of bit 18 is in the trace");
    let answers: Vec<MwaitOutcome> = recs
        .iter()
        .filter_map(|r| match &r.event {
            Event::Monitor {
                outcome,
                decided_by: DecidedBy::Vmm,
                ..
            }
            | Event::Mwait {
                outcome,
                decided_by: DecidedBy::Vmm,
                ..
            } => Some(*outcome),
            _ => None,
        })
        .collect();
    let first = if set == MsrOutcome::Ok {
        MwaitOutcome::Nop
    } else {
        MwaitOutcome::InjectUd
    };
    assert_eq!(
        answers,
        [first, first, MwaitOutcome::InjectUd, MwaitOutcome::InjectUd],
        "MISC_ENABLE write {set:?}"
    );

    let policy = Policy::resolve("host", &header).unwrap();
    let report = replay(&header, &recs, vec![policy]);
    let vmm: Vec<&str> = report.policies[0]
        .kept
        .iter()
        .filter(|d| d.decided_by != Some(DecidedBy::Kernel))
        .map(|d| d.explanation.as_str())
        .collect();
    assert!(vmm.is_empty(), "VMM-decided divergences: {vmm:#?}");
}
