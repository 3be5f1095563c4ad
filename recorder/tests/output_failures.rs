//! Output failures and bad input: `/dev/full`, SIGKILL mid-recording, and the
//! configuration errors `record()` reports before touching `/dev/kvm`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use kvmtrace_recorder::{RecordConfig, RecordError, record};

/// Writing to a full disk: a clear error naming the file, the guest stopped, no hang.
#[test]
fn dev_full_output_is_a_clear_error() {
    if !kvmtrace_recorder::kvm_check::require_kvm("dev_full_output_is_a_clear_error") {
        return;
    }
    let mut cfg = RecordConfig::new("/dev/full");
    cfg.scenario = Some("msr-loop".into());
    cfg.iterations = Some(200_000);
    let t0 = Instant::now();
    let err = record(&cfg).unwrap_err();
    let mut chain = err.to_string();
    let mut src = std::error::Error::source(&err);
    while let Some(s) = src {
        chain.push_str(&format!(": {s}"));
        src = s.source();
    }
    println!("{chain} after {:?}", t0.elapsed());
    assert!(chain.contains("/dev/full"), "{chain}");
    assert!(
        chain.to_lowercase().contains("no space"),
        "the cause is the full device: {chain}"
    );
    assert!(matches!(
        err,
        RecordError::Output(_) | RecordError::GuestFailed { .. }
    ));
    // The guest was stopped rather than run to its end (200,000 exits ≈ 1.5 s).
    assert!(t0.elapsed() < Duration::from_secs(60));
}

const CHILD_ENV: &str = "KVMTRACE_SIGKILL_CHILD_OUT";

/// The child half of `sigkill_keeps_complete_chunks`: a long recording.
#[test]
fn sigkill_child() {
    let Some(out) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let mut cfg = RecordConfig::new(out);
    cfg.scenario = Some("msr-loop".into());
    cfg.iterations = Some(5_000_000);
    let _ = record(&cfg);
}

/// SIGKILL mid-recording: the `.incomplete` file keeps every flushed chunk
/// (at most ~1 s of events lost) and salvage turns it into a valid trace.
#[test]
fn sigkill_keeps_complete_chunks() {
    if !kvmtrace_recorder::kvm_check::require_kvm("sigkill_keeps_complete_chunks") {
        return;
    }
    let out = tmp("sigkill.kvt");
    let incomplete = kvmtrace_format::incomplete_path(&out);
    let _ = std::fs::remove_file(&incomplete);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "sigkill_child", "--nocapture"])
        .env(CHILD_ENV, &out)
        .spawn()
        .unwrap();
    // Wait until at least two chunks' worth of flushes happened (time bound 1 s).
    let t0 = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let len = std::fs::metadata(&incomplete).map(|m| m.len()).unwrap_or(0);
        if (len > 4096 && t0.elapsed() > Duration::from_millis(2500))
            || t0.elapsed() > Duration::from_secs(30)
        {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
    assert!(!out.exists(), "a killed recording is never renamed");
    let salvaged = tmp("sigkill-salvaged.kvt");
    let report = kvmtrace_format::salvage(&incomplete, &salvaged).unwrap();
    println!("{report:?}");
    let (_, recs) = read_trace(&salvaged);
    assert!(recs.len() > 100, "{} records salvaged", recs.len());
    assert!(
        recs.windows(2).all(|w| w[0].seq + 1 == w[1].seq),
        "salvaged records are a gap-free prefix"
    );
    assert_eq!(recs[0].seq, 0);
}

#[test]
fn bad_configurations_are_refused_before_kvm() {
    let mut cfg = RecordConfig::new(tmp("never.kvt"));
    cfg.scenario = Some("no-such-scenario".into());
    match record(&cfg) {
        Err(RecordError::UnknownScenario { known, .. }) => {
            assert!(known.contains("msr-loop"), "{known}")
        }
        other => panic!("{other:?}"),
    }
    cfg.scenario = None;
    assert!(matches!(record(&cfg), Err(RecordError::ScenarioOrPayload)));
    cfg.payload = Some(tmp("missing.bin"));
    let err = record(&cfg).unwrap_err().to_string();
    assert!(err.contains("missing.bin"), "{err}");
    for n in [0, 10_000] {
        cfg.vcpus = Some(n);
        assert!(
            matches!(record(&cfg), Err(RecordError::Vcpus { .. })),
            "--vcpus {n}"
        );
    }
}

const TIMEOUT_CHILD_ENV: &str = "KVMTRACE_TIMEOUT_CHILD_OUT";

/// The child half of `runaway_guest_is_stopped_by_the_timeout`.
#[test]
fn timeout_child() {
    let Some(out) = std::env::var_os(TIMEOUT_CHILD_ENV) else {
        return;
    };
    let mut a = asm();
    let mut top = a.create_label();
    a.set_label(&mut top).unwrap();
    a.jmp(top).unwrap(); // no exits, ever
    let spec = spec("runaway", assemble(a));
    let err = kvmtrace_recorder::record_spec(&RecordConfig::new(&out), &spec).unwrap_err();
    println!("CHILD-RESULT {err}");
}

/// `KVMTRACE_RECORD_TIMEOUT_S` stops a guest that never exits.
#[test]
fn runaway_guest_is_stopped_by_the_timeout() {
    if !kvmtrace_recorder::kvm_check::require_kvm("runaway_guest_is_stopped_by_the_timeout") {
        return;
    }
    let out = tmp("runaway.kvt");
    let t0 = Instant::now();
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "timeout_child", "--nocapture"])
        .env(TIMEOUT_CHILD_ENV, &out)
        .env(kvmtrace_recorder::TIMEOUT_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&child.stdout);
    assert!(child.status.success(), "{stdout}");
    assert!(
        stdout.contains("CHILD-RESULT") && stdout.contains("longer than"),
        "{stdout}"
    );
    assert!(t0.elapsed() < Duration::from_secs(60));
    let (_, recs) = read_trace(&out);
    assert!(matches!(
        recs.last().unwrap().event,
        kvmtrace_format::Event::End { .. }
    ));
}
