//! Every built-in scenario recorded on `/dev/kvm` (intercept mode, live policy
//! `host`). Skips, loudly, where `/dev/kvm` is missing (`require_kvm`).

use std::path::PathBuf;

use kvmtrace_format::CaptureMode;
use kvmtrace_recorder::kvm_check::require_kvm;
use kvmtrace_recorder::{OnFull, RecordConfig, RecordError, RecordSummary, record};

fn out_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "kvmtrace-scenario-{}-{name}.kvt",
        std::process::id()
    ))
}

fn record_scenario(name: &str, iterations: Option<u64>) -> Option<(RecordSummary, PathBuf)> {
    let output = out_path(name);
    let cfg = RecordConfig {
        scenario: Some(name.to_string()),
        payload: None,
        output: output.clone(),
        policy: "host".to_string(),
        mode: CaptureMode::Intercept,
        vcpus: None,
        iterations,
        on_full: OnFull::Wait,
        discard_events: false,
    };
    match record(&cfg) {
        Ok(summary) => Some((summary, output)),
        // Until the vCPU loop lands: say so, never pass silently.
        Err(RecordError::NotImplemented) => {
            println!("KVM-TEST-SKIPPED scenario_{name}: recording is not implemented yet");
            None
        }
        Err(e) => panic!("recording {name}: {e}"),
    }
}

/// Records `name` and checks it produced at least `min_events`.
fn check(name: &str, iterations: Option<u64>, min_events: u64) {
    if !require_kvm(&format!("scenario_{name}")) {
        return;
    }
    let Some((summary, path)) = record_scenario(name, iterations) else {
        return;
    };
    assert!(
        summary.events >= min_events,
        "{name}: {} events, expected at least {min_events}",
        summary.events
    );
    let _ = std::fs::remove_file(path);
}

#[test]
fn every_listed_scenario_has_a_test_here() {
    let here = include_str!("scenarios_kvm.rs");
    for s in kvmtrace_recorder::scenarios() {
        assert!(
            here.contains(&format!("check(\"{}\"", s.name)),
            "no KVM test for scenario {}",
            s.name
        );
    }
}

#[test]
fn mwait() {
    check("mwait", None, 2);
}

#[test]
fn misc_enable_mwait() {
    check("misc-enable-mwait", None, 8);
}

#[test]
fn misc_enable_no_mwait() {
    check("misc-enable-no-mwait", None, 8);
}

#[test]
fn mwait_ud() {
    check("mwait-ud", None, 8);
}

#[test]
fn mwait_strict() {
    check("mwait-strict", None, 8);
}

#[test]
fn feat_ctl() {
    check("feat-ctl", None, 20);
}

#[test]
fn mce() {
    check("mce", None, 30);
}

#[test]
fn x2apic_deflect() {
    check("x2apic-deflect", None, 20);
}

#[test]
fn msr_sweep() {
    check("msr-sweep", None, 100);
}

#[test]
fn triple_fault() {
    check("triple-fault", None, 3);
}

#[test]
fn init_sipi() {
    check("init-sipi", None, 4);
}

#[test]
fn init_sipi_cold() {
    check("init-sipi-cold", None, 4);
}

#[test]
fn msr_loop() {
    check("msr-loop", Some(2_000), 2_000);
}

#[test]
fn bit_probe() {
    check("bit-probe", None, 150);
}

#[test]
fn tour() {
    check("tour", None, 50);
}
