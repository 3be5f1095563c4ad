//! The unmodeled listing (`replay --unmodeled`) and the clock-read rule.

use kvmtrace_format::*;
use kvmtrace_replayer::replay::Selection;
use kvmtrace_replayer::{Policy, Replay};

fn header() -> TraceHeader {
    let mut h = TraceHeader::default();
    h.host.kernel_release = "6.18.2".into();
    h.host.kvm_module = "kvm_intel".into();
    h.vm.vcpus = 1;
    h
}

fn rd(seq: u64, index: u32, outcome: MsrOutcome) -> Record {
    Record {
        seq,
        vcpu: 0,
        time_ns: seq,
        event: Event::MsrRead {
            index,
            origin: Origin::Guest,
            outcome,
            decided_by: DecidedBy::Kernel,
            capture: None,
        },
    }
}

fn replay(records: &[Record], kinds: bool) -> kvmtrace_replayer::PolicyReport {
    let h = header();
    let p = Policy::resolve("kvm-6.18", &h).unwrap();
    let mut r = Replay::new(&h, vec![p])
        .sequential()
        .with_selection(Selection {
            unmodeled_kinds: kinds,
            ..Selection::default()
        });
    r.feed(records);
    r.finish().policies.remove(0)
}

/// A guest TSC read is modelled as "a value" (the number is the clock's):
/// any value agrees, a #GP diverges under the rule that says so.
#[test]
fn tsc_read_agrees_on_any_value_and_diverges_on_gp() {
    let ok = replay(
        &[
            rd(0, 0x10, MsrOutcome::Value(5)),
            rd(1, 0x10, MsrOutcome::Value(u64::MAX)),
        ],
        false,
    );
    assert_eq!((ok.unmodeled, ok.divergences, ok.coverage), (0, 0, 1.0));
    // A host KVM_GET_MSRS of IA32_TSC likewise (the L1 TSC, no failure path).
    let mut host = rd(0, 0x10, MsrOutcome::Value(7));
    if let Event::MsrRead { origin, .. } = &mut host.event {
        *origin = Origin::Host;
    }
    let h = replay(&[host], false);
    assert_eq!((h.unmodeled, h.divergences), (0, 0));
    let gp = replay(&[rd(0, 0x10, MsrOutcome::InjectGp)], false);
    assert_eq!(gp.divergences, 1);
    let first = gp.first.expect("a divergence");
    assert!(
        first.explanation.contains("IA32_TSC read"),
        "{}",
        first.explanation
    );
}

/// Unmodeled outcomes are listed by kind (access and how it was answered,
/// no value), most frequent first, only when asked.
#[test]
fn unmodeled_kinds_are_listed_by_frequency() {
    // 0xc0011020 (LS_CFG) and 0x1234 have no handler in any model.
    let recs = [
        rd(0, 0x1234, MsrOutcome::InjectGp),
        rd(1, 0xc001_1020, MsrOutcome::Value(1)),
        rd(2, 0xc001_1020, MsrOutcome::Value(2)),
    ];
    let off = replay(&recs, false);
    assert!(off.unmodeled_kinds.is_empty());
    let on = replay(&recs, true);
    assert_eq!(on.unmodeled, 3);
    let kinds: Vec<(String, u64, u64)> = on
        .unmodeled_kinds
        .iter()
        .map(|k| (k.what.clone(), k.count, k.first_seq))
        .collect();
    assert_eq!(kinds.len(), 2, "{kinds:?}");
    assert_eq!(kinds[0].1, 2);
    assert_eq!(kinds[0].2, 1);
    assert!(kinds[0].0.starts_with("guest RDMSR") && kinds[0].0.ends_with("-> value"));
    assert_eq!(
        kinds[1],
        ("guest RDMSR MSR 0x1234 -> #GP".to_string(), 1, 0)
    );
    // The listing changes no figure.
    assert_eq!((on.unmodeled, on.coverage), (off.unmodeled, off.coverage));
}
