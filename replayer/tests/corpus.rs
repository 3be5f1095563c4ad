//! Corpus bless/check end to end on real `.kvt` files in a temporary directory.

use std::path::PathBuf;

use kvmtrace_format::*;
use kvmtrace_replayer::corpus::{self, CorpusError, Verdict};
use kvmtrace_replayer::{Action, Engine, Policy, Vendor};

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kvmtrace-replayer-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// MONITOR/MWAIT with MWAIT_NEVER_UD_FAULTS disabled, recorded under kvm-6.18:
/// `#UD` (§1); kvm-5.19 answers NOP.
fn write_mwait_trace(path: &std::path::Path, name: &str) {
    let mut h = TraceHeader::default();
    h.host.kernel_release = "6.18.44".into();
    h.host.kvm_module = "kvm_intel".into();
    h.payload.name = name.into();
    h.vm.vcpus = 1;
    h.vm.disabled_quirks = 0x40;
    h.vm.cpuid = vec![CpuidEntry {
        function: 1,
        ..Default::default()
    }];
    let mut e = Engine::new(Policy::preset("kvm-6.18", Vendor::Intel).unwrap(), &h);
    let mut w = create(path, &h).unwrap();
    for (i, a) in [
        Action::Monitor { rip: 0x1000 },
        Action::Mwait { rip: 0x1003 },
    ]
    .into_iter()
    .enumerate()
    {
        w.push(&e.decide(i as u64, 0, i as u64, a)).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn bless_then_check() {
    let d = tmpdir("corpus");
    // Empty corpus: never green.
    assert!(matches!(
        corpus::check(&d, None, None),
        Err(CorpusError::Empty { .. })
    ));
    assert!(matches!(
        corpus::bless(&d, &corpus::default_policies()),
        Err(CorpusError::Empty { .. })
    ));
    write_mwait_trace(&d.join("a.kvt"), "a");
    std::fs::create_dir_all(d.join("sub")).unwrap();
    write_mwait_trace(&d.join("sub/b.kvt"), "b");

    // Not blessed yet: a clear failure.
    // No blessing is an error (the corpus is not set up), not a failing case.
    let e = corpus::check(&d, None, None).unwrap_err().to_string();
    assert!(e.contains("a.kvt") && e.contains("corpus bless"), "{e}");

    let specs = vec!["kvm-5.19".to_string(), "kvm-6.18".to_string()];
    let b = corpus::bless(&d, &specs).unwrap();
    assert_eq!(b.traces, vec!["a.kvt", "sub/b.kvt"]);
    assert_eq!(b.with_expected_divergences, 2);
    assert!(d.join("a.expect.json").is_file());

    // Blessed: the 5.19 divergences are expected, not failures.
    let r = corpus::check(&d, None, None).unwrap();
    assert!(r.passed(), "{}", r.render());
    assert!(matches!(
        r.cases[0].verdict,
        Verdict::ExpectedDivergences { .. }
    ));
    let junit = r.to_junit();
    assert!(
        junit.contains("a.kvt") && junit.contains("expected divergences"),
        "{junit}"
    );
    assert!(!junit.contains("<failure"));

    // A policy that was not blessed is an error naming it, never a pass.
    let e = corpus::check(&d, Some(&["kvm-6.0".to_string()]), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no blessed result for policy kvm-6.0"), "{e}");

    // A regression: kvm-6.18 blessed with a divergence count it no longer has.
    let ep = d.join("a.expect.json");
    let text = std::fs::read_to_string(&ep).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["policies"][0]["divergences"] = serde_json::json!(0);
    v["policies"][0]["kept"] = serde_json::json!([]);
    std::fs::write(&ep, serde_json::to_string(&v).unwrap()).unwrap();
    let r = corpus::check(&d, None, None).unwrap();
    assert!(!r.passed());
    assert_eq!(r.failures(), 1);
    let junit = r.to_junit();
    assert!(junit.contains("<failure"), "{junit}");
    match &r.cases[0].verdict {
        Verdict::Fail { message } => {
            assert!(message.contains("kvm-5.19: 2 divergences"), "{message}");
            assert!(message.contains("MONITOR at rip 0x1000"), "{message}");
        }
        v => panic!("{v:?}"),
    }

    // Partitions split the corpus; each trace runs in exactly one.
    let mut seen = 0;
    for i in 1..=3 {
        let r = corpus::check(&d, None, Some((i, 3))).unwrap();
        seen += r.cases.len();
        if r.cases.is_empty() {
            assert!(!r.passed(), "an empty partition is not green");
            assert!(r.to_junit().contains("nothing ran"));
        }
    }
    assert_eq!(seen, 2);

    // A corrupt expect file names the file and position.
    std::fs::write(&ep, "{ not json").unwrap();
    let e = corpus::check(&d, None, None).unwrap_err().to_string();
    assert!(e.contains("a.expect.json:1:"), "{e}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn replay_reader_damaged_trace() {
    use kvmtrace_replayer::{ReplayError, replay_reader};
    let d = tmpdir("damaged");
    let path = d.join("t.kvt");
    let mut h = TraceHeader::default();
    h.host.kvm_module = "kvm_pvm".into();
    h.host.kernel_release = "6.18.44".into();
    h.vm.vcpus = 1;
    let mut w = create(&path, &h).unwrap();
    for seq in 0..50_000u64 {
        w.push(&Record {
            seq,
            vcpu: 0,
            time_ns: seq,
            event: Event::MsrRead {
                index: 0x1a0,
                origin: Origin::Guest,
                outcome: MsrOutcome::Value(0x1),
                decided_by: DecidedBy::Kernel,
                capture: None,
            },
        })
        .unwrap();
    }
    w.finish().unwrap();
    let policies = || vec![Policy::resolve("host", &h).unwrap()];
    let mut r = TraceReader::open(&path).unwrap();
    assert!(r.chunk_count() > 1);
    let rep = replay_reader(&mut r, policies(), Some(2), false).unwrap();
    assert_eq!(rep.events, 50_000);
    assert_eq!(rep.policies[0].divergences, 0);
    // Flip a byte inside the last chunk's payload: an error, or the readable
    // prefix with salvage_ok.
    let mut bytes = std::fs::read(&path).unwrap();
    let last = *r.chunks().last().unwrap();
    let at = last.offset as usize + 40;
    bytes[at] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let mut r = TraceReader::open(&path).unwrap();
    match replay_reader(&mut r, policies(), None, false) {
        Err(ReplayError::ReadChunk { .. }) => {}
        other => panic!("{other:?}"),
    }
    let mut r = TraceReader::open(&path).unwrap();
    let rep = replay_reader(&mut r, policies(), None, true).unwrap();
    assert!(rep.events > 0 && rep.events < 50_000, "{}", rep.events);
    let _ = std::fs::remove_dir_all(&d);
}

/// A policy file is one policy whatever path names it; re-blessing one policy
/// keeps the others' blessings (issue 14, item 11).
#[test]
fn policy_files_by_content_and_blessings_per_policy() {
    let d = tmpdir("corpus-keys");
    let c = d.join("c");
    std::fs::create_dir_all(&c).unwrap();
    write_mwait_trace(&c.join("a.kvt"), "a");
    std::fs::create_dir_all(d.join("pol")).unwrap();
    let pol = d.join("pol/p.toml");
    std::fs::write(&pol, "base = \"kvm-5.19\"\n").unwrap();
    // Blessed through one path ...
    let via_dotdot = format!("{}/c/../pol/p.toml", d.display());
    corpus::bless(&c, &[via_dotdot.clone(), "kvm-6.18".into()]).unwrap();
    // ... checked through another: the same policy.
    let direct = pol.display().to_string();
    let r = corpus::check(&c, Some(std::slice::from_ref(&direct)), None).unwrap();
    assert!(r.passed(), "{}", r.render());
    // Re-blessing one policy keeps the other's blessing.
    corpus::bless(&c, &["kvm-5.10".to_string()]).unwrap();
    let r = corpus::check(&c, None, None).unwrap();
    assert_eq!(r.cases.len(), 1);
    assert!(r.passed(), "{}", r.render());
    let text = std::fs::read_to_string(c.join("a.expect.json")).unwrap();
    let e: corpus::Expectation = serde_json::from_str(&text).unwrap();
    let specs: Vec<&str> = e.policies.iter().map(|p| p.spec.as_str()).collect();
    assert_eq!(specs, [via_dotdot.as_str(), "kvm-6.18", "kvm-5.10"]);
    // An edited file is another policy: not blessed.
    std::fs::write(&pol, "base = \"kvm-6.0\"\n").unwrap();
    let e = corpus::check(&c, Some(&[direct]), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no blessed result for policy file"), "{e}");
    // JUnit carries each case's own time, not a constant zero.
    let r = corpus::check(&c, Some(&["kvm-6.18".to_string()]), None).unwrap();
    assert!(r.cases[0].seconds > 0.0);
    let _ = std::fs::remove_dir_all(&d);
}
