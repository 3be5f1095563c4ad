//! Issue 12 item 7: the model's own hard cases, recorded in observe mode (the
//! kernel decides every MSR outcome) and replayed under `host`: agreement 1.0
//! and coverage ≥ 0.9 on every x2APIC register, the mode switches, PMU
//! MSRs without counters, PRED_CMD/FLUSH_CMD and the KVM PV MSRs.

mod common;

use common::*;
use kvmtrace_format::CaptureMode;
use kvmtrace_replayer::{Policy, replay};

#[test]
fn x2apic_regs_observe_host_agrees() {
    if !kvmtrace_recorder::kvm_check::require_kvm("x2apic_regs_observe_host_agrees") {
        return;
    }
    let (header, recs) = record_scenario(
        "model_x2apic_regs.kvt",
        "x2apic-regs",
        CaptureMode::Observe,
        None,
    );
    let policy = Policy::resolve("host", &header).unwrap();
    let report = replay(&header, &recs, vec![policy]);
    let p = &report.policies[0];
    let why: Vec<&str> = p.kept.iter().map(|d| d.explanation.as_str()).collect();
    assert_eq!(p.divergences, 0, "{why:#?}");
    assert_eq!(p.agreement, 1.0);
    assert!(p.coverage >= 0.9, "coverage {}", p.coverage);
}
