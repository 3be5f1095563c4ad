//! The example policy scripts (examples/policies/) are tests: each agrees
//! with the switch or preset it restates on every trace the tests have —
//! tests/golden, tools/assets, synth (mixed and msr-loop) and, with /dev/kvm,
//! a recording of every scenario.

use std::path::{Path, PathBuf};

use kvmtrace_format::{
    DecidedBy, Event, Irqchip, MsrExitReason, MsrOutcome, Origin, Record, TraceHeader, TraceReader,
    UserAnswer,
};
use kvmtrace_replayer::{Policy, PolicyReport, replay};
use kvmtrace_tests::{TempDir, kvmtrace, require_kvm, synth};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn example(name: &str) -> String {
    root()
        .join("examples/policies")
        .join(name)
        .display()
        .to_string()
}

fn read(path: &Path) -> (TraceHeader, Vec<Record>) {
    let mut r = TraceReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let h = r.header().clone();
    (h, r.read_all().unwrap())
}

fn toml(text: &str, h: &TraceHeader) -> Policy {
    kvmtrace_replayer::policy_file::parse(text, "ref.toml", "ref", h).unwrap()
}

/// Every trace the tests have (recordings only with /dev/kvm).
fn traces(d: &TempDir) -> Vec<PathBuf> {
    let mut v = vec![root().join("tests/golden/v1.kvt")];
    for e in std::fs::read_dir(root().join("tools/assets")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "kvt") {
            v.push(p);
        }
    }
    v.sort();
    for seed in 1..=3 {
        v.push(synth(d, &format!("mixed-{seed}.kvt"), "mixed", 4000, seed));
    }
    v.push(synth(d, "loop.kvt", "msr-loop", 2000, 1));
    if require_kvm("tests::policy_scripts_on_recordings") {
        let r = kvmtrace(["scenarios", "--json"]);
        assert_eq!(r.code, 0, "{r:?}");
        let list: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        let names: Vec<String> = list
            .as_array()
            .or_else(|| list["scenarios"].as_array())
            .expect("scenario list")
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect();
        assert!(names.len() >= 10, "{names:?}");
        for n in names {
            let f = d.join(&format!("rec-{n}.kvt"));
            let mut args = vec!["record", "--scenario", &n, "-o", f.to_str().unwrap()];
            if n == "msr-loop" {
                args.extend(["--iterations", "500"]);
            }
            let r = kvmtrace(args);
            assert_eq!(r.code, 0, "{n}: {r:?}");
            v.push(f);
        }
    }
    v
}

/// What must agree between a script and the policy it restates: every
/// count (divergences, modelled, unmodeled, per behaviour) and every kept
/// divergence's event and policy outcome. (Rule names differ by design;
/// direct/consequent may too: a script rule counts as reading state.)
fn same(trace: &Path, a: &PolicyReport, b: &PolicyReport) {
    let t = trace.display();
    assert_eq!(
        a.divergences, b.divergences,
        "{t}: {} vs {}",
        a.name, b.name
    );
    assert_eq!(a.modelled, b.modelled, "{t}");
    assert_eq!(a.unmodeled, b.unmodeled, "{t}");
    assert_eq!(a.outcomes, b.outcomes, "{t}");
    assert_eq!(a.by_behaviour, b.by_behaviour, "{t}");
    assert_eq!(a.kept.len(), b.kept.len(), "{t}");
    for (x, y) in a.kept.iter().zip(&b.kept) {
        assert_eq!((x.seq, &x.policy), (y.seq, &y.policy), "{t}");
    }
}

#[test]
fn examples_agree_with_the_switches_and_presets_on_every_trace() {
    let d = TempDir::new("policy-scripts");
    let deflect = example("no-deflect-unfilterable.rhai");
    let mce = example("mce-gp-6.0.rhai");
    let icr = example("x2apic-icr-reserved.rhai");
    let all = traces(&d);
    let mut mce_seen = 0;
    for t in &all {
        let (h, recs) = read(t);
        let policies = vec![
            Policy::resolve(&deflect, &h).unwrap(),
            toml(
                "base = \"host\"\n[switches]\ndeflect_unfilterable = false\n",
                &h,
            ),
            Policy::resolve(&mce, &h).unwrap(),
            toml(
                "base = \"kvm-5.19\"\n[switches]\nmce_bad_write = \"gp\"\n\
                 mce_ctl_bit0_ok = true\nmce_ctl2 = true\n",
                &h,
            ),
            Policy::resolve("kvm-6.0", &h).unwrap(),
            Policy::resolve(&icr, &h).unwrap(),
            toml(
                "base = \"kvm-6.2\"\n[switches]\nx2apic_icr_reserved_gp = true\n",
                &h,
            ),
        ];
        let r = replay(&h, &recs, policies);
        let p = &r.policies;
        // (a) the never-merged patch as a script = the switch.
        same(t, &p[0], &p[1]);
        // (b) the 6.0 MCE changes on kvm-5.19 = kvm-5.19 with 6.0's MCE
        // switches, and = kvm-6.0 on MCE bank accesses.
        same(t, &p[2], &p[3]);
        assert_eq!(
            p[2].by_behaviour.mce,
            p[4].by_behaviour.mce,
            "{}",
            t.display()
        );
        let mce_kept = |r: &PolicyReport, upto: u64| -> Vec<_> {
            r.kept
                .iter()
                .filter(|d| d.behaviour == kvmtrace_replayer::report::Behaviour::Mce)
                .filter(|d| d.seq <= upto)
                .map(|d| (d.seq, d.policy.clone()))
                .collect()
        };
        let upto = [&p[2], &p[4]]
            .iter()
            .map(|r| {
                if r.kept.len() < kvmtrace_replayer::Replay::KEEP {
                    u64::MAX
                } else {
                    r.kept.last().map_or(u64::MAX, |d| d.seq)
                }
            })
            .min()
            .unwrap();
        assert_eq!(
            mce_kept(&p[2], upto),
            mce_kept(&p[4], upto),
            "{}",
            t.display()
        );
        mce_seen += p[4].by_behaviour.mce;
        // (c) the 2024 ICR patch on kvm-6.2 = kvm-6.2 with the switch.
        same(t, &p[5], &p[6]);
    }
    // Not vacuous: MCE divergences exist in the corpus.
    assert!(
        mce_seen > 0 || all.len() < 6,
        "no MCE divergences in {all:?}"
    );
}

/// Traces that exercise each example where the corpus may not: the
/// deflection the seed patch removes, a reserved-bit ICR write.
#[test]
fn examples_change_what_they_say_they_change() {
    let mut h = TraceHeader::default();
    h.host.kernel_release = "6.18.44".into();
    h.host.kvm_module = "kvm_intel".into();
    h.vm.vcpus = 1;
    h.vm.user_space_msr = 1 | 2;
    h.vm.irqchip = Some(Irqchip::Kernel);
    let rec = |seq: u64, event| Record {
        seq,
        vcpu: 0,
        time_ns: seq,
        event,
    };
    let inval = MsrOutcome::UserExit {
        reason: MsrExitReason::Inval,
        answer: UserAnswer::Gp,
    };
    let recs = vec![
        // x2APIC off: a read of 0x802 faults, deflected (INVAL).
        rec(
            0,
            Event::MsrRead {
                index: 0x802,
                origin: Origin::Guest,
                outcome: inval,
                decided_by: DecidedBy::Kernel,
                capture: None,
            },
        ),
        // x2APIC on.
        rec(
            1,
            Event::MsrWrite {
                index: 0x1b,
                value: 0xfee0_0d00,
                origin: Origin::Guest,
                outcome: MsrOutcome::Ok,
                decided_by: DecidedBy::Kernel,
                capture: None,
            },
        ),
        // ICR with reserved bit 13: r = 1 since the 2024 patch, deflected.
        rec(
            2,
            Event::MsrWrite {
                index: 0x830,
                value: 0x2000,
                origin: Origin::Guest,
                outcome: inval,
                decided_by: DecidedBy::Kernel,
                capture: None,
            },
        ),
    ];
    // CPUID.1:ECX[21]: x2APIC.
    h.vm.cpuid = vec![kvmtrace_format::CpuidEntry {
        function: 1,
        ecx: 1 << 21,
        ..Default::default()
    }];
    let r = replay(
        &h,
        &recs,
        vec![
            Policy::resolve(&example("no-deflect-unfilterable.rhai"), &h).unwrap(),
            Policy::resolve(&example("x2apic-icr-reserved.rhai"), &h).unwrap(),
            Policy::resolve("kvm-6.2", &h).unwrap(),
        ],
    );
    let p = &r.policies;
    // The seed patch: #GP instead of the deflections of x2APIC faults (#0,
    // and #2 where `host` = 6.18 faults the reserved ICR bits).
    assert_eq!(p[0].divergences, 2, "{:#?}", p[0]);
    assert_eq!(p[0].kept[0].seq, 0);
    assert_eq!(p[0].kept[1].seq, 2);
    let rule = &p[0].kept[0].rule;
    assert!(
        rule.section.contains("no-deflect-unfilterable.rhai:"),
        "{rule:?}"
    );
    // The ICR patch on kvm-6.2 predicts the deflection the recording shows,
    // where kvm-6.2 itself cannot say (unmodeled).
    assert_eq!(p[1].divergences, 0);
    assert_eq!(p[1].modelled, p[2].modelled + 1);
}

#[test]
fn policies_check_validates_files_and_reports_positions() {
    for f in [
        "no-deflect-unfilterable.rhai",
        "mce-gp-6.0.rhai",
        "x2apic-icr-reserved.rhai",
    ] {
        let r = kvmtrace(["policies", "--check", &example(f)]);
        assert_eq!(r.code, 0, "{f}: {r:?}");
        assert!(r.stdout.contains(": ok: policy"), "{r:?}");
    }
    let d = TempDir::new("policy-check");
    let cases = [
        (
            "bad-syntax.rhai",
            "//! base = \"kvm-6.18\"\n//! [hooks]\n//! rdmsr = [0x10]\nfn rdmsr(ctx) {\n  if {\n}\n",
            ":5:",
        ),
        (
            "not-outcome.rhai",
            "//! base = \"kvm-6.18\"\n//! [hooks]\n//! rdmsr = [0x10]\nfn rdmsr(ctx) {\n  \"gp\"\n}\n",
            ":4:1: in hook rdmsr",
        ),
        (
            "endless.rhai",
            "//! base = \"kvm-6.18\"\n//! [hooks]\n//! events = [\"mwait\"]\nfn mwait(ctx) {\n  loop { }\n}\n",
            ":4:1: in hook mwait",
        ),
        (
            "io.rhai",
            "//! base = \"kvm-6.18\"\n//! [hooks]\n//! rdmsr = [1]\nfn rdmsr(ctx) {\n  print(\"x\")\n}\n",
            ":5:3:",
        ),
        (
            "unknown-field.rhai",
            "//! base = \"kvm-6.18\"\n//! hoooks = 1\n",
            ":2:5:",
        ),
        (
            "bad.toml",
            "base = \"kvm-6.18\"\n[switches]\nmce_bad_write = 3\n",
            ":3:17:",
        ),
    ];
    for (name, text, want) in cases {
        let f = d.join(name);
        std::fs::write(&f, text).unwrap();
        let r = kvmtrace(["policies", "--check", f.to_str().unwrap()]);
        assert_eq!(r.code, 2, "{name}: {r:?}");
        let first = r.stderr.lines().next().unwrap_or("");
        assert!(
            first.contains(&format!("{name}{want}")),
            "{name}: {first:?}"
        );
        assert_eq!(r.stderr.lines().count(), 1, "{name}: one line: {r:?}");
    }
    // A 10 MB script: refused before it is read whole.
    let big = d.join("big.rhai");
    std::fs::write(&big, vec![b'/'; 10 << 20]).unwrap();
    let r = kvmtrace(["policies", "--check", big.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("big.rhai:1:1:"), "{r:?}");
    // A replay whose script fails mid-trace: exit 2, the script's position.
    let t = synth(&d, "m.kvt", "mixed", 2000, 1);
    let f = d.join("fails.rhai");
    std::fs::write(
        &f,
        "//! base = \"kvm-6.18\"\n//! [hooks]\n//! rdmsr = [[0, 0xffffffff]]\nfn rdmsr(ctx) {\n  value(ctx.nope)\n}\n",
    )
    .unwrap();
    let r = kvmtrace([
        "replay",
        t.to_str().unwrap(),
        "--policy",
        f.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("fails.rhai:5:"), "{r:?}");
    assert!(r.stderr.contains("in hook rdmsr"), "{r:?}");
    // The other commands that replay: the same error, exit 2.
    let fs = f.to_str().unwrap();
    let ts = t.to_str().unwrap();
    let out = d.join("e.json");
    for args in [
        vec!["fidelity", ts, "--policy", fs],
        vec![
            "export",
            ts,
            "--format",
            "chrome",
            "--policy",
            fs,
            "-o",
            out.to_str().unwrap(),
        ],
    ] {
        let r = kvmtrace(&args);
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(r.stderr.contains("fails.rhai:5:"), "{args:?}: {r:?}");
    }
}

/// Same script, same trace: byte-identical reports, whatever the threads.
#[test]
fn script_replays_are_deterministic() {
    let d = TempDir::new("policy-det");
    let t = synth(&d, "m.kvt", "mixed", 4000, 2);
    let run = |threads: &str| {
        let r = kvmtrace([
            "replay",
            t.to_str().unwrap(),
            "--policy",
            &example("mce-gp-6.0.rhai"),
            "--policy",
            &example("no-deflect-unfilterable.rhai"),
            "--policy",
            "kvm-6.0",
            "--threads",
            threads,
            "--json",
        ]);
        assert!(r.code == 0 || r.code == 1, "{r:?}");
        r.stdout
    };
    let a = run("1");
    assert_eq!(a, run("4"));
    assert_eq!(a, run("1"));
}
