//! End-to-end on /dev/kvm: record a scenario, verify it, replay it under `host`
//! with zero divergences (the recording is what the live policy decided).

use kvmtrace_tests::{TempDir, kvmtrace, require_kvm};

#[test]
fn record_tour_then_replay_host_is_clean() {
    if !require_kvm("tests::record_tour_then_replay_host_is_clean") {
        return;
    }
    let d = TempDir::new("kvm-tour");
    let f = d.join("tour.kvt");
    let fs = f.to_str().unwrap();
    let r = kvmtrace(["record", "--scenario", "tour", "-o", fs]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("dropped"), "summary on stderr: {r:?}");
    assert_eq!(kvmtrace(["verify", fs]).code, 0);
    let r = kvmtrace(["replay", fs, "--policy", "host", "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["policies"][0]["divergences"], 0, "{v}");
}

#[test]
fn record_msr_loop_counts_iterations() {
    if !require_kvm("tests::record_msr_loop_counts_iterations") {
        return;
    }
    let d = TempDir::new("kvm-loop");
    let f = d.join("loop.kvt");
    let fs = f.to_str().unwrap();
    let r = kvmtrace([
        "record",
        "--scenario",
        "msr-loop",
        "--iterations",
        "2000",
        "-o",
        fs,
        "--json",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(v["events"].as_u64().unwrap() >= 2000, "{v}");
    let s = kvmtrace(["stats", fs, "--json"]);
    let s: serde_json::Value = serde_json::from_str(&s.stdout).unwrap();
    assert!(s["by_kind"]["msr_read"].as_u64().unwrap() >= 2000, "{s}");
}

#[test]
fn scenarios_lists_tour() {
    let r = kvmtrace(["scenarios", "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("\"tour\""), "{r:?}");
}
