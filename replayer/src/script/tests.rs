use std::path::PathBuf;

use kvmtrace_format::{
    DecidedBy, Event, Irqchip, MsrExitReason, MsrOutcome, Origin, Record, TraceHeader, UserAnswer,
};

use super::*;
use crate::policy::PolicyError;

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/policies")
        .join(name)
}

fn hdr() -> TraceHeader {
    let mut h = TraceHeader::default();
    h.host.kernel_release = "6.18.44".into();
    h.host.kvm_module = "kvm_intel".into();
    h.vm.vcpus = 1;
    h
}

fn err_of(text: &str) -> (usize, usize, String) {
    match parse(text, "t.rhai", "t", &hdr()) {
        Err(PolicyError::Parse {
            path,
            line,
            column,
            message,
        }) => {
            assert_eq!(path, "t.rhai");
            (line, column, message)
        }
        Err(e) => panic!("{text:?}: not a parse error: {e}"),
        Ok(_) => panic!("{text:?}: loaded"),
    }
}

const HEAD: &str = "//! base = \"kvm-6.18\"\n//! [hooks]\n//! rdmsr = [0x10]\n";

/// A guest RDMSR of 0x10 under `script`'s policy: outcome and rule, and the
/// engine's hook error.
fn read_10(body: &str) -> (Prediction<MsrOutcome>, Option<HookError>) {
    let p = parse(&format!("{HEAD}{body}"), "t.rhai", "t", &hdr()).unwrap();
    let e = crate::Engine::new(p, &hdr());
    let pred = e.msr_read(0, 0x10, Origin::Guest);
    (pred, e.hook_error())
}

#[test]
fn examples_load_and_check() {
    for f in [
        "no-deflect-unfilterable.rhai",
        "mce-gp-6.0.rhai",
        "x2apic-icr-reserved.rhai",
    ] {
        let s = check(&example(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(!s.hooks.is_empty(), "{f}");
    }
}

#[test]
fn hook_decides_and_report_names_file_line_and_note() {
    let (p, e) = read_10(
        "fn rdmsr(ctx) {\n  if ctx.index == 0x10 {\n    return value(5).note(\"lore:x\");\n  }\n}\n",
    );
    assert_eq!(e, None);
    assert_eq!(p.outcome, Some(MsrOutcome::Value(5)));
    assert_eq!(p.rule.section, "t.rhai:6");
    assert_eq!(p.rule.release, "lore:x");
    assert!(p.rule.name.contains("rdmsr hook"), "{}", p.rule.name);
}

#[test]
fn unhooked_accesses_never_call_the_script() {
    // The hook would fail on any call: unhooked MSRs and events stay silent.
    let p = parse(
        &format!("{HEAD}fn rdmsr(ctx) {{ loop {{}} }}\n"),
        "t.rhai",
        "t",
        &hdr(),
    )
    .unwrap();
    let e = crate::Engine::new(p, &hdr());
    let base = crate::Engine::new(Policy::preset("kvm-6.18", Vendor::Intel).unwrap(), &hdr());
    for i in [0x1a0, 0x3a, 0x400, 0x11] {
        assert_eq!(
            e.msr_read(0, i, Origin::Guest),
            base.msr_read(0, i, Origin::Guest)
        );
    }
    // Host reads and guest writes of 0x10 are other hooks.
    e.msr_read(0, 0x10, Origin::Host);
    e.msr_write(0, 0x10, 1, Origin::Guest);
    e.mwait(0);
    assert_eq!(e.hook_error(), None);
}

#[test]
fn defer_and_nothing_are_the_base() {
    let base = crate::Engine::new(Policy::preset("kvm-6.18", Vendor::Intel).unwrap(), &hdr())
        .msr_read(0, 0x10, Origin::Guest);
    for body in ["fn rdmsr(ctx) { }\n", "fn rdmsr(ctx) { defer() }\n"] {
        let (p, e) = read_10(body);
        assert_eq!(e, None);
        assert_eq!(p, base, "{body}");
    }
}

#[test]
fn per_vcpu_state_persists_and_counts_once_per_event() {
    let p = parse(
        "//! base = \"kvm-6.18\"\n//! [hooks]\n//! wrmsr = [0x10]\n\
         fn wrmsr(ctx) {\n  let n = ctx.get(\"n\");\n  if n == () { n = 0; }\n  \
         ctx.set(\"n\", n + 1);\n  if n >= 1 { return gp(); }\n  ok()\n}\n",
        "t.rhai",
        "t",
        &hdr(),
    )
    .unwrap();
    let mut e = crate::Engine::new(p, &hdr());
    let w = |v| crate::Action::Wrmsr {
        index: 0x10,
        value: v,
        origin: Origin::Guest,
        fallback: MsrOutcome::Ok,
        answer: UserAnswer::Ok,
    };
    let r1 = e.decide(0, 0, 0, w(1));
    let r2 = e.decide(1, 0, 0, w(2));
    let o = |r: &Record| match &r.event {
        Event::MsrWrite { outcome, .. } => *outcome,
        _ => unreachable!(),
    };
    assert_eq!(o(&r1), MsrOutcome::Ok);
    assert_eq!(o(&r2), MsrOutcome::InjectGp);
    assert_eq!(e.hook_state(0).get("n"), Some(2));
    assert_eq!(e.hook_state(1).get("n"), None);
}

#[test]
fn runtime_errors_name_file_line_and_hook() {
    let cases = [
        // Endless loop: the operation limit.
        ("fn rdmsr(ctx) {\n  loop {\n  }\n}\n", 4, "endless loop"),
        // Recursion: the call depth limit.
        (
            "fn f(x) { f(x) }\nfn rdmsr(ctx) {\n  f(1)\n}\n",
            5,
            "recursion",
        ),
        // Not an outcome.
        ("fn rdmsr(ctx) {\n  42\n}\n", 4, "not an outcome"),
        // The wrong outcome for the hook.
        (
            "fn rdmsr(ctx) {\n  ok()\n}\n",
            5,
            "not an outcome of hook rdmsr",
        ),
        // Unknown field of ctx.
        ("fn rdmsr(ctx) {\n  ctx.colour\n}\n", 5, "colour"),
        // Type error.
        ("fn rdmsr(ctx) {\n  value(\"x\")\n}\n", 5, "value"),
        // I/O that does not exist.
        (
            "fn rdmsr(ctx) {\n  open_file(\"/etc/passwd\")\n}\n",
            5,
            "open_file",
        ),
        // Huge strings.
        (
            "fn rdmsr(ctx) {\n  let s = \"x\";\n  loop { s += s; }\n}\n",
            4,
            "too large",
        ),
    ];
    for (body, line, want) in cases {
        let (p, e) = read_10(body);
        assert_eq!(p.outcome, None, "{body}");
        let e = e.unwrap_or_else(|| panic!("{body}: no error"));
        assert!(
            e.location.starts_with(&format!("t.rhai:{line}:")),
            "{body}: {e}"
        );
        assert_eq!(e.hook, "rdmsr");
        assert!(e.message.contains(want), "{body}: {e}");
    }
}

#[test]
fn load_errors_name_line_and_column() {
    let cases: [(&str, usize, usize, &str); 12] = [
        ("fn rdmsr(ctx) {}\n", 1, 1, "`//!` header"),
        (
            "//! base = \"kvm-4.4\"\n//! [hooks]\n//! rdmsr = [1]\nfn rdmsr(c) {}\n",
            1,
            12,
            "unknown base",
        ),
        (
            "//! base = \"kvm-6.18\"\n//! colour = 1\n",
            2,
            5,
            "unknown field",
        ),
        (
            "//! base = \"kvm-6.18\"\n//! [hooks]\n//! rdmsr = [[5, 1]]\n",
            3,
            14,
            "empty",
        ),
        (
            "//! base = \"kvm-6.18\"\n//! [hooks]\n//! events = [\"nmi\"]\n",
            3,
            15,
            "unknown event",
        ),
        (
            "//! base = \"kvm-6.18\"\n//! [hooks]\n//! rdmsr = [1]\n",
            3,
            13,
            "defines no fn rdmsr",
        ),
        (&*format!("{HEAD}fn rdmsr(ctx) {{ 1 +* 2 }}\n"), 4, 20, ""),
        (
            &*format!("{HEAD}fn rdmsr(ctx) {{ print(1) }}\n"),
            4,
            17,
            "not available",
        ),
        (
            &*format!("{HEAD}fn rdmsr(ctx) {{ eval(\"1\") }}\n"),
            4,
            17,
            "not available",
        ),
        (&*format!("{HEAD}fn rdmsr(ctx) {{ y }}\n"), 4, 17, "y"),
        (
            &*format!("{HEAD}fn rdmsr(ctx) {{ }}\nfn mwait(ctx) {{ }}\n"),
            5,
            1,
            "does not declare",
        ),
        (
            &*format!("{HEAD}fn rdmsr(a, b) {{ }}\n"),
            4,
            1,
            "takes 2 parameters",
        ),
    ];
    for (text, line, col, want) in cases {
        let (l, c, m) = err_of(text);
        assert!(m.contains(want), "{text:?}: {m}");
        assert_eq!((l, c), (line, col), "{text:?}: {m}");
    }
    // Modules (file access) do not exist in the sandbox.
    let (l, _, _) = err_of(&format!(
        "{HEAD}fn rdmsr(ctx) {{ }}\nimport \"/etc/passwd\" as p;\n"
    ));
    assert_eq!(l, 5);
    // Deep nesting is a parse error, not a stack overflow.
    let deep = format!(
        "{HEAD}fn rdmsr(ctx) {{ {}1{} }}\n",
        "(".repeat(5000),
        ")".repeat(5000)
    );
    let (l, _, _) = err_of(&deep);
    assert_eq!(l, 4);
    // A 10 MB script is refused before parsing.
    let big = format!("{HEAD}{}", "//\n".repeat((10 << 20) / 3));
    let (l, c, m) = err_of(&big);
    assert_eq!((l, c), (1, 1));
    assert!(m.contains("bytes"), "{m}");
}

#[test]
fn state_hooks_change_init() {
    let p = parse(
        "//! base = \"kvm-6.18\"\n//! [hooks]\n//! events = [\"init\"]\n\
         fn init(ctx) {\n  state(#{ cr0: 0x60000010, rdx: ctx.base_state(\"rdx\") + 1 })\n}\n",
        "t.rhai",
        "t",
        &hdr(),
    )
    .unwrap();
    let e = crate::Engine::new(p, &hdr());
    let before = kvmtrace_format::ArchState {
        cr0: 0x6000_0011,
        ..Default::default()
    };
    let s = e.init_state(0, &before).outcome.unwrap();
    assert_eq!(s.cr0, 0x6000_0010);
    assert_eq!(s.rdx(), 0x601);
}

/// The seed patch script agrees with the switch on a trace that exercises it.
#[test]
fn no_deflect_script_matches_the_switch() {
    let mut h = hdr();
    h.vm.user_space_msr = 1 | 2;
    h.vm.irqchip = Some(Irqchip::None);
    let recs: Vec<Record> = (0..4u64)
        .map(|seq| Record {
            seq,
            vcpu: 0,
            time_ns: seq,
            event: Event::MsrRead {
                index: 0x802 + seq as u32,
                origin: Origin::Guest,
                outcome: MsrOutcome::UserExit {
                    reason: MsrExitReason::Inval,
                    answer: UserAnswer::Gp,
                },
                decided_by: DecidedBy::Kernel,
                capture: None,
            },
        })
        .collect();
    let script = crate::Policy::resolve(
        example("no-deflect-unfilterable.rhai").to_str().unwrap(),
        &h,
    )
    .unwrap();
    let switch = crate::policy_file::parse(
        "base = \"host\"\n[switches]\ndeflect_unfilterable = false\n",
        "s.toml",
        "s",
        &h,
    )
    .unwrap();
    let r = crate::replay(&h, &recs, vec![script, switch]);
    assert_eq!(r.policies[0].divergences, 4);
    assert_eq!(r.policies[1].divergences, 4);
    let d = &r.policies[0].kept[0];
    assert!(
        d.rule.section.ends_with("no-deflect-unfilterable.rhai:19"),
        "{:?}",
        d.rule
    );
    assert_eq!(d.policy, r.policies[1].kept[0].policy);
}

mod fuzzish {
    use super::*;
    use proptest::prelude::*;

    /// The fuzz target's body (fuzz/fuzz_targets/policy_load.rs) on mutated
    /// examples: no panic, positions on every error, hooks bounded.
    fn load_and_poke(text: &str) {
        match parse(text, "f.rhai", "f", &hdr()) {
            Err(PolicyError::Parse { line, column, .. }) => assert!(line >= 1 && column >= 1),
            Err(e) => panic!("unexpected error kind: {e}"),
            Ok(p) => {
                let set = p.hooks.set().cloned().unwrap_or_default();
                let e = crate::Engine::new(p, &hdr());
                for r in set.rdmsr.iter().chain(&set.wrmsr).take(4) {
                    e.msr_read(0, *r.start(), Origin::Guest);
                    e.msr_write(0, *r.end(), u64::MAX, Origin::Guest);
                }
                e.mwait(0);
                e.shutdown(0);
                e.init_state(0, &Default::default());
                if let Some(err) = e.hook_error() {
                    assert!(err.location.starts_with("f.rhai:"), "{err}");
                }
            }
        }
    }

    fn examples() -> Vec<String> {
        [
            "no-deflect-unfilterable.rhai",
            "mce-gp-6.0.rhai",
            "x2apic-icr-reserved.rhai",
        ]
        .iter()
        .map(|f| std::fs::read_to_string(example(f)).unwrap())
        .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        #[test]
        fn mutated_examples_never_panic(which in 0usize..3, at in 0usize..4000, cut in 0usize..64, insert in ".{0,12}") {
            let mut t = examples()[which].clone();
            let at = at.min(t.len());
            let at = (0..=at).rev().find(|&i| t.is_char_boundary(i)).unwrap_or(0);
            let end = (at + cut).min(t.len());
            let end = (end..=t.len()).find(|&i| t.is_char_boundary(i)).unwrap_or(t.len());
            t.replace_range(at..end, &insert);
            load_and_poke(&t);
        }

        #[test]
        fn random_text_never_panics(s in "(//! [a-z_]{1,8} = [^\n]{0,20}\n){0,4}[^\u{0}]{0,200}") {
            load_and_poke(&s);
        }
    }
}

#[test]
fn event_hooks_decide_mwait_shutdown_and_reset() {
    let p = parse(
        "//! base = \"kvm-6.18\"\n//! [hooks]\n//! events = [\"mwait\", \"shutdown\", \"reset\"]\n\
         fn mwait(ctx) {\n  if ctx.monitor { return nop(); }\n  ud().because(\"MWAIT off\")\n}\n\
         fn shutdown(ctx) {\n  if ctx.base_outcome == \"resume\" { then(\"init\") }\n}\n\
         fn reset(ctx) {\n  state(#{ msr_1a0: 0x1800, rdx: 0x806f8 })\n}\n",
        "t.rhai",
        "t",
        &hdr(),
    )
    .unwrap();
    let e = crate::Engine::new(p, &hdr());
    assert_eq!(e.monitor(0).outcome, Some(MwaitOutcome::Nop));
    let m = e.mwait(0);
    assert_eq!(m.outcome, Some(MwaitOutcome::InjectUd));
    assert_eq!(m.rule.section, "t.rhai:6");
    assert_eq!(e.shutdown(0).outcome, Some(AfterShutdown::Init));
    let r = e.reset_state(0).outcome.unwrap();
    assert_eq!(r.msr(0x1a0), Some(0x1800));
    assert_eq!(r.rdx(), 0x806f8);
    assert_eq!(e.hook_error(), None);
}
