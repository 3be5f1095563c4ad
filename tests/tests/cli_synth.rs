//! synth determinism and the reading commands on synthetic traces.

use kvmtrace_tests::{TempDir, kvmtrace, synth};

#[test]
fn same_seed_gives_identical_bytes() {
    let d = TempDir::new("det");
    for pattern in ["msr-loop", "mixed"] {
        let a = synth(&d, &format!("{pattern}-a.kvt"), pattern, 5000, 7);
        let b = synth(&d, &format!("{pattern}-b.kvt"), pattern, 5000, 7);
        let c = synth(&d, &format!("{pattern}-c.kvt"), pattern, 5000, 8);
        let (a, b, c) = (
            std::fs::read(a).unwrap(),
            std::fs::read(b).unwrap(),
            std::fs::read(c).unwrap(),
        );
        assert!(a == b, "{pattern}: same seed, different bytes");
        assert!(a != c, "{pattern}: different seeds, same bytes");
    }
}

#[test]
fn stats_counts_events_and_kinds() {
    let d = TempDir::new("stats");
    let f = synth(&d, "m.kvt", "mixed", 3000, 1);
    let r = kvmtrace(["stats", f.to_str().unwrap(), "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["events"], 3000);
    assert_eq!(v["vcpus"], 4);
    assert!(v["chunks"].as_u64().unwrap() >= 1);
    assert!(v["bytes"].as_u64().unwrap() > 0);
    assert!(v["bytes_per_event"].as_f64().unwrap() > 0.0);
    let kinds = v["by_kind"].as_object().unwrap();
    let total: u64 = kinds.values().map(|n| n.as_u64().unwrap()).sum();
    assert_eq!(total, 3000);
    for k in [
        "msr_read",
        "msr_write",
        "monitor",
        "mwait",
        "shutdown",
        "reset",
        "init",
        "sipi",
        "end",
    ] {
        assert!(kinds.contains_key(k), "by_kind lacks {k}: {v}");
    }
}

#[test]
fn dump_json_is_one_event_a_line_and_ranges_select() {
    let d = TempDir::new("dump");
    let f = synth(&d, "l.kvt", "msr-loop", 1000, 3);
    let fs = f.to_str().unwrap();
    let r = kvmtrace(["dump", fs, "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let lines: Vec<_> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 1000);
    for (i, l) in lines.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["seq"], i as u64);
    }
    let r = kvmtrace(["dump", fs, "--json", "100-199"]);
    assert_eq!(r.stdout.lines().count(), 100);
    let r = kvmtrace(["dump", fs, "--json", "990-end"]);
    assert_eq!(r.stdout.lines().count(), 10);
    let r = kvmtrace(["dump", fs, "--json", "end"]);
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(v["seq"], 999);
    // Human form: one line an event too.
    let r = kvmtrace(["dump", fs, "5-9"]);
    assert_eq!(r.stdout.lines().count(), 5, "{r:?}");
    assert!(r.stdout.contains("IA32_TSC"), "{r:?}");
}

#[test]
fn dump_filters_by_vcpu() {
    let d = TempDir::new("vcpu");
    let f = synth(&d, "m.kvt", "mixed", 2000, 1);
    let r = kvmtrace(["dump", f.to_str().unwrap(), "--json", "--vcpu", "2"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.lines().count() > 10);
    for l in r.stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["vcpu"], 2);
    }
}

#[test]
fn info_shows_the_header_and_taints() {
    let d = TempDir::new("info");
    let f = synth(&d, "m.kvt", "mixed", 500, 1);
    let r = kvmtrace(["info", f.to_str().unwrap(), "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["capture"]["mode"], "synth");
    assert_eq!(v["host"]["kvm_module"], "kvm_intel");
    assert_eq!(v["started_unix_ns"], 0);
    assert!(
        v["taints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t.as_str().unwrap().contains("lost"))
    );
    let r = kvmtrace(["info", f.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("6.18"), "{r:?}");
}

#[test]
fn verify_ok_and_salvage_of_a_cut_file() {
    let d = TempDir::new("verify");
    let f = synth(&d, "big.kvt", "msr-loop", 300_000, 2);
    let r = kvmtrace(["verify", f.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:?}");
    let bytes = std::fs::read(&f).unwrap();
    let cut = d.join("cut.kvt");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out = d.join("salvaged.kvt");
    let r = kvmtrace([
        "verify",
        cut.to_str().unwrap(),
        "--salvage",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 1, "{r:?}");
    let r2 = kvmtrace(["verify", out.to_str().unwrap()]);
    assert_eq!(r2.code, 0, "salvaged trace is valid: {r2:?}");
    let r3 = kvmtrace(["stats", out.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&r3.stdout).unwrap();
    let kept = v["events"].as_u64().unwrap();
    assert!(kept > 0 && kept < 300_000, "kept {kept}");
}

#[test]
fn synth_mixed_refuses_too_few_events() {
    let d = TempDir::new("few");
    let r = kvmtrace([
        "synth",
        "--pattern",
        "mixed",
        "--events",
        "5",
        "-o",
        d.join("x.kvt").to_str().unwrap(),
    ]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(!d.join("x.kvt").exists());
}
