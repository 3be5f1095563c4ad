//! `kvmtrace bisect` (issue 11 item 6): the first release whose outcome changes
//! for each behaviour, with the commit, from one multi-policy pass.

use kvmtrace_tests::{TempDir, kvmtrace, require_kvm, synth};

const TOUR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tools/assets/tour.kvt");

fn bisect_json(trace: &str) -> serde_json::Value {
    let r = kvmtrace(["bisect", trace, "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    serde_json::from_str(&r.stdout).unwrap()
}

/// The first transition of `behaviour`: (to release, commits).
fn first(v: &serde_json::Value, behaviour: &str) -> (String, Vec<String>, serde_json::Value) {
    let b = v["behaviours"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["behaviour"] == behaviour)
        .unwrap_or_else(|| panic!("no {behaviour}: {v}"));
    let t = &b["transitions"][0];
    (
        t["to"].as_str().unwrap().to_string(),
        t["causes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["commit"].as_str().unwrap().to_string())
            .collect(),
        b.clone(),
    )
}

#[test]
fn bundled_tour_names_6_0_for_mce_with_its_commit_and_stable_point() {
    let v = bisect_json(TOUR);
    let (to, commits, b) = first(&v, "mce");
    assert_eq!(to, "6.0", "{b}");
    assert_eq!(commits, ["2368048bf5c2"], "{b}");
    // The stable points whose backport of it this trace confirms (the point
    // before gives 5.19's outcome, the point itself 6.0's).
    assert_eq!(
        b["transitions"][0]["stable_confirmed"],
        serde_json::json!(["5.10.137", "5.15.61", "5.18.18"]),
        "{b}"
    );
    let (to, commits, _) = first(&v, "feat_ctl");
    assert!(to == "6.0" || to == "6.2", "{to}");
    let fc = v["behaviours"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["behaviour"] == "feat_ctl")
        .unwrap();
    let all: Vec<&str> = fc["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["to"] == "6.2")
        .flat_map(|t| t["causes"].as_array().unwrap())
        .map(|c| c["commit"].as_str().unwrap())
        .collect();
    assert_eq!(all, ["d2a00af2061d"], "{fc} {commits:?}");
    // FEAT_CTL is VMX-only: the trace's pvm vendor shows no change.
    assert_eq!(fc["vendor"], "intel");
}

/// `kvm-X.Y.Z` presets around the MCE backports (docs/kvm-semantics.md, table
/// of changes): the bundled tour's bad MCi_CTL write kills the guest (EPERM)
/// the point before the backport and is a `#GP` from the backport on.
#[test]
fn stable_points_before_and_after_the_mce_backport() {
    for (before, after) in [
        ("kvm-5.10.136", "kvm-5.10.137"),
        ("kvm-5.15.60", "kvm-5.15.61"),
        ("kvm-5.18.17", "kvm-5.18.18"),
    ] {
        let mut ended = Vec::new();
        for p in [before, after] {
            let r = kvmtrace(["replay", TOUR, "--policy", p, "--json"]);
            assert!(r.code == 0 || r.code == 1, "{p}: {r:?}");
            let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
            let pol = &v["policies"][0];
            assert_eq!(pol["name"], p, "{pol}");
            ended.push((
                pol["ended"]["behaviour"].clone(),
                pol["by_behaviour"]["mce"].clone(),
            ));
        }
        assert_eq!(
            ended[0],
            (serde_json::json!("mce"), serde_json::json!(1)),
            "{before}"
        );
        assert_eq!(
            ended[1],
            (serde_json::Value::Null, serde_json::json!(0)),
            "{after}"
        );
    }
}

#[test]
fn no_divergence_anywhere_is_a_clear_answer() {
    let d = TempDir::new("bisect-none");
    // msr-loop: TSC reads no release models differently.
    let f = synth(&d, "l.kvt", "msr-loop", 200, 1);
    let r = kvmtrace(["bisect", f.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("nothing to bisect"), "{}", r.stdout);
}

#[test]
fn bisect_of_mce_and_feat_ctl_recordings() {
    if !require_kvm("tests::bisect_of_mce_and_feat_ctl_recordings") {
        return;
    }
    let d = TempDir::new("bisect-kvm");
    for (scenario, behaviour, release, commit) in [
        ("mce", "mce", "6.0", "2368048bf5c2"),
        ("feat-ctl", "feat_ctl", "6.2", "d2a00af2061d"),
    ] {
        let f = d.join(&format!("{scenario}.kvt"));
        let fs = f.to_str().unwrap();
        let r = kvmtrace(["record", "--scenario", scenario, "-o", fs]);
        assert_eq!(r.code, 0, "{r:?}");
        // kvm_pvm has no FEAT_CTL handler but advertises the MSR: its host
        // writes of 0 (and reads) are accepted only since the 6.12
        // suppression in kvm_do_msr_access; VMX's handler changed in 6.2.
        let module = kvmtrace_format::TraceReader::open(&f)
            .unwrap()
            .header()
            .host
            .kvm_module
            .clone();
        let (release, commit) = if scenario == "feat-ctl" && module == "kvm_pvm" {
            ("6.12", "64a5d7a1091f")
        } else {
            (release, commit)
        };
        let v = bisect_json(fs);
        let (to, commits, b) = first(&v, behaviour);
        assert_eq!(to, release, "{scenario} ({module}): {b}");
        assert_eq!(commits, [commit], "{scenario} ({module}): {b}");
    }
}

/// Issue 11 item 8: `synth mixed` outcomes are the policy's (decided by the
/// VMM), so `fidelity` scores none of them.
#[test]
fn synthetic_outcomes_are_not_kernel_measurements() {
    let d = TempDir::new("synth-labels");
    let f = synth(&d, "m.kvt", "mixed", 2000, 3);
    let r = kvmtrace(["fidelity", f.to_str().unwrap(), "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("no kernel-decided outcomes"), "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    for p in v["policies"].as_array().unwrap() {
        assert_eq!(p["outcomes"], 0, "{p}");
    }
}

/// Issue 11 item 8: a live policy in observe mode would be ignored: refused.
#[test]
fn observe_mode_refuses_a_live_policy() {
    let d = TempDir::new("observe-policy");
    let out = d.join("o.kvt");
    let r = kvmtrace([
        "record",
        "--scenario",
        "mce",
        "--mode",
        "observe",
        "--policy",
        "kvm-5.10",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("no effect with --mode observe"), "{r:?}");
}

/// Issue 11 item 8: a recording whose live policy killed the guest says so.
#[test]
fn a_recording_whose_policy_killed_the_guest_says_so() {
    if !require_kvm("tests::a_recording_whose_policy_killed_the_guest_says_so") {
        return;
    }
    let d = TempDir::new("killed");
    let out = d.join("k.kvt");
    let r = kvmtrace([
        "record",
        "--scenario",
        "mce",
        "--policy",
        "kvm-5.19",
        "-o",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("ended the guest"), "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(
        v["guest_ended"].as_str().unwrap().contains("vm_failed"),
        "{v}"
    );
}
