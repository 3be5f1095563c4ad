//! Issue 11 item 8: the smaller defects, each pinned by a test.

use kvmtrace_format::*;
use kvmtrace_replayer::policy_file::parse;
use kvmtrace_replayer::{Engine, Policy, Replay, compare_state};

fn header() -> TraceHeader {
    let mut h = TraceHeader::default();
    h.host.kernel_release = "6.18.2".into();
    h.host.kvm_module = "kvm_intel".into();
    h.vm.vcpus = 2;
    h
}

/// A `[[msr]]` rule decides its own index only: an imported trace (unknown
/// start state) keeps MISC_ENABLE unmodeled until something teaches it.
#[test]
fn msr_rule_keeps_the_unknown_state_guard_of_other_msrs() {
    let mut h = header();
    h.capture.mode = CaptureMode::Import;
    let plain = Policy::resolve("kvm-6.18", &h).unwrap();
    let ruled = parse(
        "base = \"kvm-6.18\"\n[[msr]]\nindex = 0x3a\nread = \"gp\"\n",
        "r.toml",
        "r",
        &h,
    )
    .unwrap();
    for p in [plain, ruled] {
        let name = p.name.clone();
        let e = Engine::new(p, &h);
        assert_eq!(
            e.msr_read(0, 0x1a0, Origin::Guest).outcome,
            None,
            "{name}: MISC_ENABLE of an imported trace is unknown"
        );
    }
}

/// Switches that were never read are gone, and saying them is an error that
/// says why.
#[test]
fn removed_switches_are_refused_with_a_reason() {
    for s in [
        "msr_filter_scope = \"all_guest\"",
        "inj_exception_fmt = \"v6\"",
    ] {
        let text = format!("base = \"kvm-6.18\"\n[switches]\n{s}\n");
        let e = parse(&text, "p.toml", "p", &header())
            .unwrap_err()
            .to_string();
        assert!(e.contains("removed") && e.contains("p.toml:3"), "{e}");
    }
}

fn state(cs: u16, rip: u64, mp_state: u32) -> ArchState {
    let mut s = ArchState::default();
    s.cs.selector = cs;
    s.cs.base = u64::from(cs) << 4;
    s.rip = rip;
    s.mp_state = mp_state;
    s.cr0 = 0x6000_0010;
    s
}

/// An in-kernel INIT read back after a SIPI: CS comes from the SIPI the trace
/// showed and mp_state is predicted RUNNABLE, never copied from the recording.
#[test]
fn init_after_sipi_is_predicted_not_copied() {
    let h = header();
    let mut e = Engine::new(Policy::resolve("kvm-6.18", &h).unwrap(), &h);
    let sipi = Record {
        seq: 1,
        vcpu: 0,
        time_ns: 0,
        event: Event::Ipi {
            dst: 1,
            vector: 8,
            mode: IpiMode::Sipi,
        },
    };
    e.apply(&sipi);
    let before = state(0, 0x1000, 0);
    let good = state(0x800, 0, 0);
    let p = e.init_prediction_seen(1, InitSource::Kernel, &before, &good);
    assert_eq!(p.state.cs.selector, 0x800);
    // Another vector than the SIPI's, or another mp_state: a divergence.
    let wrong_cs = state(0x900, 0, 0);
    let p = e.init_prediction_seen(1, InitSource::Kernel, &before, &wrong_cs);
    assert!(compare_state(&p, &wrong_cs).is_some(), "CS copied");
    let wrong_mp = state(0x800, 0, 2);
    let p = e.init_prediction_seen(1, InitSource::Kernel, &before, &wrong_mp);
    let d = compare_state(&p, &wrong_mp);
    assert!(d.is_some(), "mp_state copied");
}

/// A deflected access the policy would keep in the kernel diverges, and the
/// report says the VMM sees the difference even where the guest gets #GP
/// either way.
#[test]
fn a_policy_that_does_not_deflect_is_a_vmm_visible_divergence() {
    let mut h = header();
    h.vm.user_space_msr = 1; // INVAL
    h.vm.irqchip = Some(Irqchip::None);
    let rec = Record {
        seq: 0,
        vcpu: 0,
        time_ns: 0,
        event: Event::MsrRead {
            index: 0x802,
            origin: Origin::Guest,
            outcome: MsrOutcome::UserExit {
                reason: MsrExitReason::Inval,
                answer: UserAnswer::Gp,
            },
            decided_by: DecidedBy::Kernel,
            capture: None,
        },
    };
    let nodefl = parse(
        "base = \"kvm-6.18\"\n[switches]\ndeflect_unfilterable = false\n",
        "n.toml",
        "n",
        &h,
    )
    .unwrap();
    let policies = vec![Policy::resolve("kvm-6.18", &h).unwrap(), nodefl];
    let mut r = Replay::new(&h, policies);
    r.feed(&[rec]);
    let rep = r.finish();
    assert_eq!(rep.policies[0].divergences, 0);
    assert_eq!(rep.policies[1].divergences, 1);
    let d = &rep.policies[1].kept[0];
    assert!(d.explanation.contains("VMM-visible"), "{}", d.explanation);
}
