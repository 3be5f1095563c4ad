//! DESIGN.md target: replaying an intercept-mode recording with the policy that
//! answered it live (`host`) gives zero divergences: the recording is exactly what
//! the live policy decided.

mod common;

use common::*;
use kvmtrace_format::DecidedBy;
use kvmtrace_recorder::{RecordConfig, record};
use kvmtrace_replayer::{Policy, replay};

#[test]
fn intercept_recordings_replay_against_host_without_divergence() {
    if !kvmtrace_recorder::kvm_check::require_kvm(
        "intercept_recordings_replay_against_host_without_divergence",
    ) {
        return;
    }
    let mut failures = Vec::new();
    for s in kvmtrace_recorder::scenarios() {
        let out = tmp(&format!("replay-{}.kvt", s.name));
        let mut cfg = RecordConfig::new(&out);
        cfg.scenario = Some(s.name.into());
        cfg.iterations = Some(500);
        if let Err(e) = record(&cfg) {
            failures.push(format!("{}: record: {e}", s.name));
            continue;
        }
        let (header, recs) = read_trace(&out);
        let policy = Policy::resolve("host", &header).unwrap();
        let report = replay(&header, &recs, vec![policy]);
        let p = &report.policies[0];
        println!(
            "{:<22} events {:>5} divergences {} unmodeled {} coverage {:.2}",
            s.name,
            recs.len(),
            p.divergences,
            p.unmodeled,
            p.coverage
        );
        // Kernel-decided outcomes (the RESET state read back) measure the
        // model's fidelity, not the recording: only VMM-decided ones must agree.
        for d in p
            .kept
            .iter()
            .filter(|d| d.decided_by != Some(DecidedBy::Kernel))
        {
            failures.push(format!("{}: {}", s.name, d.explanation));
        }
        for d in p
            .kept
            .iter()
            .filter(|d| d.decided_by == Some(DecidedBy::Kernel))
        {
            println!("  fidelity (kernel-decided): {}", d.explanation);
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
