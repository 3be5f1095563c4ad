//! Golden replay reports for small hand-built traces (JSON and human text).
//! Regenerate with `KVMTRACE_BLESS=1 cargo test -p kvmtrace-replayer --test golden`.

use std::path::PathBuf;

use kvmtrace_format::*;
use kvmtrace_replayer::{Action, Engine, Policy, Replay, Vendor};

fn check(name: &str, got: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("KVMTRACE_BLESS").is_some() {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} missing: run with KVMTRACE_BLESS=1", path.display()));
    assert_eq!(
        got, want,
        "golden {name} differs; rerun with KVMTRACE_BLESS=1 if intended"
    );
}

fn header() -> TraceHeader {
    let mut h = TraceHeader::default();
    h.host.kernel_release = "6.18.44".into();
    h.host.kvm_module = "kvm_intel".into();
    h.payload.name = "tour-mini".into();
    h.vm.vcpus = 2;
    h.vm.irqchip = Some(Irqchip::None);
    h.vm.cpuid = vec![
        CpuidEntry {
            function: 0,
            eax: 0xd,
            ebx: 0x756e_6547,
            edx: 0x4965_6e69,
            ecx: 0x6c65_746e,
            ..Default::default()
        },
        CpuidEntry {
            function: 1,
            eax: 0x906ea,
            ecx: 1, // SSE3, no MWAIT, no VMX
            ..Default::default()
        },
    ];
    h
}

fn rd(index: u32) -> Action {
    Action::Rdmsr {
        index,
        origin: Origin::Guest,
        fallback: MsrOutcome::Value(0x1234_5678),
        answer: UserAnswer::Value(0),
    }
}

fn wr(index: u32, value: u64, origin: Origin) -> Action {
    Action::Wrmsr {
        index,
        value,
        origin,
        fallback: MsrOutcome::Ok,
        answer: UserAnswer::Ok,
    }
}

/// A small tour recorded under `kvm-6.18` (intel): every seed behaviour once.
fn tour() -> (TraceHeader, Vec<Record>) {
    let h = header();
    let mut e = Engine::new(Policy::preset("kvm-6.18", Vendor::Intel).unwrap(), &h);
    let g = Origin::Guest;
    let actions = vec![
        (0, Action::Reset),
        (1, Action::Reset),
        (
            0,
            Action::Other(Event::QuirksDisabled {
                cap: 213,
                mask: 0x40,
            }),
        ),
        (0, Action::Other(Event::SetupMce { mcg_cap: 0x10a })),
        (0, Action::Other(Event::UserSpaceMsr { mask: 0 })),
        (0, rd(0x10)),
        (0, Action::Monitor { rip: 0x1000 }),
        (0, Action::Mwait { rip: 0x1003 }),
        (0, rd(0x1a0)),
        (0, wr(0x3a, 0x5, Origin::Host)),
        (0, rd(0x3a)),
        (0, wr(0x400, !0x401, g)),
        (0, wr(0x401, 1, g)),
        (0, wr(0x400, 1, g)),
        (0, rd(0x802)),
        (0, Action::Shutdown { rip: 0x1010 }),
        (
            1,
            Action::Init {
                source: InitSource::Ipi { from: 0 },
                before: Box::new(ArchState {
                    cr0: 0x6000_0011,
                    apic_base: 0xfee0_0800,
                    ..Default::default()
                }),
            },
        ),
    ];
    let mut recs = Vec::new();
    for (i, (vcpu, a)) in actions.into_iter().enumerate() {
        // The MCE write of 1 kills the guest under 5.19-; keep going under 6.18.
        recs.push(e.decide(i as u64, vcpu, i as u64 * 1000, a));
    }
    (h, recs)
}

#[test]
fn tour_against_presets() {
    let (h, recs) = tour();
    let policies: Vec<Policy> = Policy::milestone_names()
        .iter()
        .map(|n| Policy::resolve(n, &h).unwrap())
        .collect();
    let mut r = Replay::new(&h, policies);
    r.feed(&recs);
    let rep = r.finish();
    check(
        "tour.json",
        &(serde_json::to_string_pretty(&rep).unwrap() + "\n"),
    );
    check("tour.txt", &rep.render(8));
    let p618 = rep.policies.iter().find(|p| p.name == "kvm-6.18").unwrap();
    assert_eq!(p618.divergences, 0, "{}", rep.render(5));
}

#[test]
fn mce_example_of_issue_4() {
    // guest WRMSR 0x400 = 1 after SETUP_MCE: kvm-5.19 vm_failed (EPERM),
    // kvm-6.0 inject_gp; with INVAL in the user-space mask both user_exit (§5, §0).
    for (mask, want) in [
        (0, ["vm_failed", "inject_gp"]),
        (1, ["user_exit", "user_exit"]),
    ] {
        let mut h = header();
        h.vm.mcg_cap = Some(0x10a);
        h.vm.user_space_msr = mask;
        for (preset, want) in ["kvm-5.19", "kvm-6.0"].into_iter().zip(want) {
            let e = Engine::new(Policy::preset(preset, Vendor::Intel).unwrap(), &h);
            let o = e.msr_write(0, 0x400, 1, Origin::Guest).outcome.unwrap();
            let j = serde_json::to_value(o).unwrap();
            let name = match &j {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Object(m) => m.keys().next().unwrap().clone(),
                _ => unreachable!(),
            };
            assert_eq!(name, want, "{preset} mask {mask}: {j}");
        }
    }
}
