//! replay exit codes and JSON shape; thread-count independence; diff; the
//! `mixed` acceptance of issue 4 item 7.

use kvmtrace_tests::{TempDir, kvmtrace, synth};

fn replay_json(file: &str, policies: &[&str], extra: &[&str]) -> (i32, serde_json::Value) {
    let mut args = vec!["replay".to_string(), file.to_string(), "--json".to_string()];
    for p in policies {
        args.push("--policy".into());
        args.push(p.to_string());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let r = kvmtrace(&args);
    assert!(r.code == 0 || r.code == 1, "replay {args:?}: {r:?}");
    (
        r.code,
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout)),
    )
}

#[test]
fn json_shape_follows_the_contract() {
    let d = TempDir::new("shape");
    let f = synth(&d, "m.kvt", "mixed", 1000, 1);
    let (_, v) = replay_json(f.to_str().unwrap(), &["kvm-6.18", "kvm-5.10"], &[]);
    assert_eq!(v["events"], 1000);
    assert!(v["trace"].is_string());
    let ps = v["policies"].as_array().unwrap();
    assert_eq!(ps.len(), 2);
    for p in ps {
        for key in [
            "name",
            "divergences",
            "direct",
            "consequent",
            "agreement",
            "coverage",
            "unmodeled",
            "first",
            "by_behaviour",
        ] {
            assert!(p.get(key).is_some(), "policy lacks {key}: {p}");
        }
    }
}

#[test]
fn mixed_replays_clean_under_its_own_preset_and_diverges_under_5_10() {
    let d = TempDir::new("mixed");
    let f = synth(&d, "m.kvt", "mixed", 2000, 5);
    let fs = f.to_str().unwrap();
    let (code, v) = replay_json(fs, &["kvm-6.18"], &[]);
    assert_eq!(v["policies"][0]["divergences"], 0, "{v}");
    assert_eq!(code, 0);
    let (code, v) = replay_json(fs, &["kvm-5.10"], &[]);
    assert_eq!(code, 1, "{v}");
    let by = v["policies"][0]["by_behaviour"].as_object().unwrap();
    let diverging = by
        .values()
        .filter(|n| {
            n.as_u64()
                .or_else(|| n["divergences"].as_u64())
                .unwrap_or(0)
                > 0
        })
        .count();
    assert!(
        diverging >= 4,
        "kvm-5.10 should diverge in >= 4 behaviours: {v}"
    );
    // The fifth: deflection of unfilterable (x2APIC) MSRs.
    let pf = d.join("no-deflect.toml");
    std::fs::write(
        &pf,
        "base = \"kvm-6.18\"\n[switches]\ndeflect_unfilterable = false\n",
    )
    .unwrap();
    let (code, v) = replay_json(fs, &[pf.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{v}");
    assert!(v["policies"][0]["divergences"].as_u64().unwrap() > 0);
}

#[test]
fn output_is_identical_whatever_the_thread_count() {
    let d = TempDir::new("threads");
    let f = synth(&d, "m.kvt", "mixed", 20_000, 2);
    let fs = f.to_str().unwrap();
    let args = |t: &str| {
        vec![
            "replay",
            fs,
            "--policy",
            "kvm-5.10",
            "--policy",
            "kvm-6.2",
            "--policy",
            "host",
            "--threads",
            t,
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
    };
    for json in [false, true] {
        let mut a1 = args("1");
        let mut a4 = args("4");
        if json {
            a1.push("--json".into());
            a4.push("--json".into());
        }
        let r1 = kvmtrace(&a1);
        let r4 = kvmtrace(&a4);
        assert_eq!(r1.code, r4.code);
        assert_eq!(r1.stdout, r4.stdout, "json={json}");
    }
}

#[test]
fn msr_loop_has_nothing_to_diverge_on() {
    let d = TempDir::new("loop");
    let f = synth(&d, "l.kvt", "msr-loop", 5000, 1);
    let (code, v) = replay_json(f.to_str().unwrap(), &["host"], &[]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["policies"][0]["divergences"], 0);
}

#[test]
fn damaged_trace_exits_2_unless_salvage_ok() {
    let d = TempDir::new("damaged");
    let f = synth(&d, "big.kvt", "msr-loop", 300_000, 1);
    let bytes = std::fs::read(&f).unwrap();
    let cut = d.join("cut.kvt");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let cs = cut.to_str().unwrap();
    let r = kvmtrace(["replay", cs, "--policy", "host"]);
    assert_eq!(r.code, 2, "{r:?}");
    let v = kvmtrace(["verify", cs]);
    let damage = v
        .stdout
        .lines()
        .next()
        .unwrap_or("")
        .split("DAMAGED: ")
        .nth(1)
        .unwrap_or("");
    assert!(!damage.is_empty(), "{v:?}");
    assert!(
        r.stderr.contains(damage),
        "replay should say what verify says:\n{}\n{}",
        r.stderr,
        damage
    );
    let r = kvmtrace(["replay", cs, "--policy", "host", "--salvage-ok", "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let n = v["events"].as_u64().unwrap();
    assert!(n > 0 && n < 300_000, "{n}");
}

#[test]
fn diff_of_a_trace_with_itself_is_empty() {
    let d = TempDir::new("diff");
    let a = synth(&d, "a.kvt", "mixed", 1000, 1);
    let b = synth(&d, "b.kvt", "mixed", 1000, 2);
    let r = kvmtrace(["diff", a.to_str().unwrap(), a.to_str().unwrap(), "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = kvmtrace(["diff", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert!(r.code == 0 || r.code == 1, "{r:?}");
}

#[test]
fn policies_lists_every_preset() {
    let r = kvmtrace(["policies", "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    for p in [
        "kvm-5.10", "kvm-5.15", "kvm-5.19", "kvm-6.0", "kvm-6.2", "kvm-6.18", "host",
    ] {
        assert!(r.stdout.contains(p), "{p} missing: {}", r.stdout);
    }
}

#[test]
fn demo_prints_the_divergence_matrix() {
    // Records our guest under QEMU (wrap mode) where QEMU and /dev/kvm are,
    // `tour` in observe mode where only /dev/kvm is, else replays the bundled
    // QEMU recording; the first line says which.
    let r = kvmtrace(["demo"]);
    assert_eq!(r.code, 0, "{r:?}");
    let first = r.stdout.lines().next().unwrap_or("");
    let kvm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    let qemu = kvmtrace_tests::find_qemu().is_some();
    let mode = match (kvm, qemu) {
        (true, true) => "mode 1 of 3",
        (true, false) => "mode 2 of 3",
        (false, _) => "mode 3 of 3",
    };
    assert!(first.contains(mode), "expected {mode}: {first}");
    for p in ["kvm-5.10", "kvm-6.18", "host"] {
        assert!(r.stdout.contains(p), "{p} row missing: {}", r.stdout);
    }
    assert!(r.stdout.contains("first divergence"), "{}", r.stdout);
    let d = TempDir::new("demo");
    let f = synth(&d, "m.kvt", "mixed", 1000, 1);
    let r = kvmtrace(["demo", "--trace", f.to_str().unwrap(), "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    // The releases where a rule changes, and host.
    assert_eq!(
        v["policies"].as_array().unwrap().len(),
        kvmtrace_replayer::Policy::milestone_names().len()
    );
}

/// The recording `demo` replays without /dev/kvm: readable, and `host` agrees
/// with every outcome the kernel decided in it.
#[test]
fn bundled_qemu_recording_is_readable_and_host_agrees() {
    let bundled = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tools/assets/qemu-guest.kvt"
    );
    let r = kvmtrace(["verify", bundled]);
    assert_eq!(
        r.code, 0,
        "re-record: see tests/corpus/fidelity/README.md: {r:?}"
    );
    let r = kvmtrace(["replay", bundled, "--policy", "host"]);
    assert_eq!(r.code, 0, "{r:?}");
}

/// The recording the one-engine tests replay must stay readable.
#[test]
fn bundled_tour_recording_is_readable() {
    let bundled = concat!(env!("CARGO_MANIFEST_DIR"), "/../tools/assets/tour.kvt");
    let r = kvmtrace(["verify", bundled]);
    assert_eq!(
        r.code, 0,
        "the .kvt format changed: re-record the bundled trace with \
         `cargo run --release -- record --scenario tour -o tools/assets/tour.kvt`: {r:?}"
    );
}
