//! One divergence engine (issue 11 item 1): `replay`, `export --policy`,
//! `demo`, `corpus` and `fidelity` report the same divergences for the same
//! trace and policy, because they all run the replayer's `Replay`.

use std::collections::BTreeSet;

use kvmtrace_format::{
    CpuidEntry, DecidedBy, Event, MsrOutcome, Origin, Record, TraceHeader, TraceWriter,
};
use kvmtrace_tests::{TempDir, kvmtrace, synth};

const TOUR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tools/assets/tour.kvt");

/// (seq, rule, behaviour, direct) of one divergence.
type Key = (u64, String, String, bool);

fn key_of(d: &serde_json::Value) -> Key {
    (
        d["seq"].as_u64().unwrap(),
        d["rule"]["name"].as_str().unwrap().to_string(),
        d["behaviour"].as_str().unwrap().to_string(),
        d["direct"].as_bool().unwrap(),
    )
}

fn replay_divergences(trace: &str, policy: &str) -> (Vec<Key>, serde_json::Value) {
    let r = kvmtrace(["replay", trace, "--policy", policy, "--json"]);
    assert!(r.code == 0 || r.code == 1, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let ds = v["divergences"].as_array().unwrap();
    assert_eq!(
        ds.len() as u64,
        v["policies"][0]["divergences"].as_u64().unwrap(),
        "--json carries every divergence"
    );
    (ds.iter().map(key_of).collect(), v["policies"][0].clone())
}

fn export_divergences(dir: &TempDir, trace: &str, policy: &str) -> Vec<Key> {
    let out = dir.join("export.json");
    let r = kvmtrace([
        "export",
        trace,
        "--format",
        "chrome",
        "--policy",
        policy,
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let events = v["traceEvents"].as_array().unwrap();
    events
        .iter()
        .filter(|e| e["cat"] == "divergence")
        .map(|e| {
            let a = &e["args"];
            (
                a["seq"].as_u64().unwrap(),
                a["rule"].as_str().unwrap().to_string(),
                a["behaviour"].as_str().unwrap().to_string(),
                a["direct"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn corpus_divergences(dir: &TempDir, trace: &str, policy: &str) -> (Vec<Key>, u64) {
    let c = dir.join("corpus");
    std::fs::create_dir_all(&c).unwrap();
    std::fs::copy(trace, c.join("t.kvt")).unwrap();
    let r = kvmtrace(["corpus", "bless", c.to_str().unwrap(), "--policy", policy]);
    assert_eq!(r.code, 0, "{r:?}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(c.join("t.expect.json")).unwrap()).unwrap();
    let p = &v["policies"][0];
    let keys = p["kept"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["seq"].as_u64().unwrap(),
                d["rule"].as_str().unwrap().to_string(),
                d["behaviour"].as_str().unwrap().to_string(),
                d["direct"].as_bool().unwrap(),
            )
        })
        .collect();
    (keys, p["divergences"].as_u64().unwrap())
}

fn demo_summary(trace: &str, policy: &str) -> serde_json::Value {
    let r = kvmtrace(["demo", "--trace", trace, "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    v["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == policy)
        .unwrap_or_else(|| panic!("demo lacks {policy}: {v}"))
        .clone()
}

fn assert_commands_agree(trace: &str, policy: &str) {
    let dir = TempDir::new("one-engine");
    let (replayed, summary) = replay_divergences(trace, policy);
    let exported = export_divergences(&dir, trace, policy);
    assert_eq!(replayed, exported, "replay vs export --policy {policy}");
    let (blessed, count) = corpus_divergences(&dir, trace, policy);
    assert_eq!(count as usize, replayed.len(), "corpus count, {policy}");
    assert_eq!(
        blessed,
        replayed
            .iter()
            .take(blessed.len())
            .cloned()
            .collect::<Vec<_>>(),
        "corpus vs replay, {policy}"
    );
    if kvmtrace_replayer::Policy::preset_names().contains(&policy) {
        let demo = demo_summary(trace, policy);
        for k in [
            "divergences",
            "direct",
            "consequent",
            "unreachable",
            "by_behaviour",
        ] {
            assert_eq!(demo[k], summary[k], "demo vs replay {k}, {policy}");
        }
    }
}

#[test]
fn tour_gives_the_same_divergences_through_every_command() {
    for p in ["kvm-5.10", "kvm-5.15", "kvm-6.0", "kvm-6.18", "host"] {
        assert_commands_agree(TOUR, p);
    }
    // The dead guest no longer inflates: one MCE divergence, the rest unreachable.
    let (d, s) = replay_divergences(TOUR, "kvm-5.10");
    assert_eq!(s["by_behaviour"]["mce"], 1, "{s}");
    assert!(s["unreachable"].as_u64().unwrap() > 100, "{s}");
    assert!(d.iter().all(|k| k.0 <= s["ended"]["seq"].as_u64().unwrap()));
}

#[test]
fn synthetic_mixed_gives_the_same_divergences_through_every_command() {
    let dir = TempDir::new("one-engine-mixed");
    let f = synth(&dir, "m.kvt", "mixed", 3000, 7);
    for p in ["kvm-5.10", "kvm-5.19", "kvm-6.2"] {
        assert_commands_agree(f.to_str().unwrap(), p);
    }
}

/// A kernel-decided trace (as observe mode records it): `fidelity` scores
/// exactly the kernel-decided divergences `replay` finds.
#[test]
fn fidelity_scores_what_replay_finds() {
    let dir = TempDir::new("one-engine-fidelity");
    let path = dir.join("k.kvt");
    let mut h = TraceHeader::default();
    h.host.kernel_release = "6.18.2".into();
    h.host.kvm_module = "kvm_intel".into();
    h.vm.vcpus = 1;
    h.vm.mcg_cap = Some(0x10a);
    h.vm.cpuid = vec![CpuidEntry {
        function: 1,
        eax: 0xa00f11,
        ecx: 1 << 5, // VMX
        ..Default::default()
    }];
    let mut w = TraceWriter::new(std::fs::File::create(&path).unwrap(), &h).unwrap();
    let msr = |seq, index, value: Option<u64>, outcome| Record {
        seq,
        vcpu: 0,
        time_ns: seq * 100,
        event: match value {
            Some(value) => Event::MsrWrite {
                index,
                value,
                origin: Origin::Guest,
                outcome,
                decided_by: DecidedBy::Kernel,
                capture: None,
            },
            None => Event::MsrRead {
                index,
                origin: Origin::Guest,
                outcome,
                decided_by: DecidedBy::Kernel,
                capture: None,
            },
        },
    };
    let recs = [
        msr(0, 0x1a0, None, MsrOutcome::Value(0x1800)),
        msr(1, 0x401, Some(1), MsrOutcome::InjectGp),
        msr(2, 0x400, Some(1), MsrOutcome::InjectGp),
        msr(3, 0x1a0, None, MsrOutcome::Value(0x1800)),
    ];
    for r in &recs {
        w.push(r).unwrap();
    }
    w.finish().unwrap();
    let t = path.to_str().unwrap();
    for p in ["kvm-5.10", "kvm-6.18"] {
        let (replayed, summary) = replay_divergences(t, p);
        let r = kvmtrace(["fidelity", t, "--policy", p, "--json"]);
        assert_eq!(r.code, 0, "{r:?}");
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        let f = &v["policies"][0];
        let direct = replayed.iter().filter(|k| k.3).count() as u64;
        assert_eq!(f["disagree"], direct, "{p}: {f} vs {summary}");
        assert_eq!(f["unreachable"], summary["unreachable"], "{p}: {f}");
        let seqs: BTreeSet<u64> = f["disagreements"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["first_seq"].as_u64().unwrap())
            .collect();
        let want: BTreeSet<u64> = replayed.iter().filter(|k| k.3).map(|k| k.0).collect();
        assert_eq!(seqs, want, "{p}");
    }
}
