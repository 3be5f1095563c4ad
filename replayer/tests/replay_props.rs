//! Property tests of replay (issue 4, Tests): a trace built by deciding each
//! action with a policy replays against that policy with no divergence;
//! N policies in one pass equal N single replays; 1 thread = many threads.

use kvmtrace_format::*;
use kvmtrace_replayer::{Action, Engine, Policy, Replay, Vendor};
use proptest::prelude::*;

const MSRS: [u32; 16] = [
    0x10,
    0x1b,
    0x3a,
    0x179,
    0x17a,
    0x17b,
    0x1a0,
    0x280,
    0x400,
    0x401,
    0x428,
    0x4d0,
    0x802,
    0x808,
    0xc001_0015,
    0xc000_0080,
];
const VALUES: [u64; 10] = [
    0,
    1,
    5,
    0x1800,
    0x1800 | 1 << 18,
    !0,
    !0x401,
    1 << 18,
    1 << 24,
    0xfee0_0d00,
];

fn header(module: &str, quirks: u64, mask: u32, mce: bool, filter: bool) -> TraceHeader {
    let mut h = TraceHeader::default();
    h.host.kernel_release = "6.18.44".into();
    h.host.kvm_module = module.into();
    h.payload.name = "prop".into();
    h.vm.vcpus = 2;
    h.vm.cpuid = vec![
        CpuidEntry {
            function: 0,
            ebx: 0x6874_7541,
            edx: 0x6974_6e65,
            ecx: 0x444d_4163,
            ..Default::default()
        },
        CpuidEntry {
            function: 1,
            eax: 0xa00f11,
            ecx: 1 | 1 << 21,
            ..Default::default()
        },
    ];
    h.vm.disabled_quirks = quirks;
    h.vm.user_space_msr = mask;
    h.vm.irqchip = Some(Irqchip::Kernel);
    h.vm.mcg_cap = mce.then_some(0x10a);
    if filter {
        let mut bitmap = vec![0xffu8; 0x400];
        bitmap[0x10 / 8] &= !(1 << (0x10 % 8));
        bitmap[0x3a / 8] &= !(1 << (0x3a % 8));
        h.vm.msr_filter = Some(MsrFilter {
            default_deny: false,
            ranges: vec![MsrFilterRange {
                flags: 3,
                base: 0,
                nmsrs: 0x2000,
                bitmap,
            }],
        });
    }
    h
}

fn action(kind: u8, msr: usize, val: usize, host: bool) -> Action {
    let origin = if host { Origin::Host } else { Origin::Guest };
    let index = MSRS[msr % MSRS.len()];
    match kind % 8 {
        0..=2 => Action::Rdmsr {
            index,
            origin,
            fallback: MsrOutcome::Value(0x1234),
            answer: UserAnswer::Value(7),
        },
        3..=5 => Action::Wrmsr {
            index,
            value: VALUES[val % VALUES.len()],
            origin,
            fallback: MsrOutcome::Ok,
            answer: UserAnswer::Ok,
        },
        6 => Action::Mwait { rip: 0x1000 },
        _ => Action::Other(Event::QuirksDisabled {
            cap: 213,
            mask: [0x10, 0x40, 0x50, 0][val % 4],
        }),
    }
}

fn build(
    policy: &Policy,
    h: &TraceHeader,
    actions: &[(u8, usize, usize, bool, u32)],
) -> Vec<Record> {
    let mut e = Engine::new(policy.clone(), h);
    let mut out = Vec::new();
    let mut seq = 0;
    for v in 0..2 {
        out.push(e.decide(seq, v, seq, Action::Reset));
        seq += 1;
    }
    for &(k, m, val, host, vcpu) in actions {
        let vcpu = vcpu % 2;
        if e.dead_since(vcpu).is_some() {
            continue;
        }
        out.push(e.decide(seq, vcpu, seq * 10, action(k, m, val, host)));
        seq += 1;
    }
    if e.dead_since(1).is_some() {
        return out;
    }
    let before = Box::new(e.reset_prediction(1).state);
    out.push(e.decide(
        seq,
        1,
        seq * 10,
        Action::Init {
            source: InitSource::Kernel,
            before,
        },
    ));
    out
}

fn policies() -> Vec<Policy> {
    let mut v = Vec::new();
    for name in [
        "kvm-5.10", "kvm-5.15", "kvm-5.19", "kvm-6.0", "kvm-6.2", "kvm-6.18",
    ] {
        for vendor in [Vendor::Intel, Vendor::Amd, Vendor::Pvm] {
            let mut p = Policy::preset(name, vendor).unwrap();
            p.name = format!("{name}-{}", vendor.name());
            v.push(p);
        }
    }
    // The same policies under other names (one lane serves both; each name's
    // report must equal its own single replay, explanations included).
    for i in [0, 7, 17] {
        let mut p = v[i].clone();
        p.name = format!("{}-again", p.name);
        v.push(p);
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn self_replay_has_no_divergence(
        which in 0usize..18,
        quirks in prop::sample::select(vec![0u64, 0x10, 0x40, 0x50]),
        mask in 0u32..8,
        mce: bool,
        filter: bool,
        actions in prop::collection::vec((any::<u8>(), any::<usize>(), any::<usize>(), any::<bool>(), 0u32..2), 0..120),
    ) {
        let all = policies();
        let p = &all[which];
        let h = header(["kvm_intel", "kvm_amd", "kvm_pvm"][which % 3], quirks, mask, mce, filter);
        let recs = build(p, &h, &actions);
        let mut r = Replay::new(&h, vec![p.clone()]);
        r.feed(&recs);
        let rep = r.finish();
        prop_assert_eq!(rep.policies[0].divergences, 0, "{}", rep.render(3));

        // Many policies in one pass = N single replays, whatever the threads
        // and however the records are chunked.
        let mut many = Replay::new(&h, all.clone());
        for c in recs.chunks(7) {
            many.feed(c);
        }
        let many = many.finish();
        let mut seq = Replay::new(&h, all.clone()).sequential();
        seq.feed(&recs);
        let seq = seq.finish();
        prop_assert_eq!(&many, &seq);
        let mut three = Replay::new(&h, all.clone()).with_threads(3).unwrap();
        for c in recs.chunks(50) {
            three.feed(c);
        }
        let three = three.finish();
        prop_assert_eq!(&many, &three);
        prop_assert_eq!(
            serde_json::to_string(&many).unwrap(),
            serde_json::to_string(&three).unwrap()
        );
        for (i, pol) in all.iter().enumerate() {
            let mut one = Replay::new(&h, vec![pol.clone()]);
            one.feed(&recs);
            let one = one.finish();
            prop_assert_eq!(&one.policies[0], &many.policies[i]);
        }
    }
}

fn arb_outcome() -> impl Strategy<Value = MsrOutcome> {
    prop_oneof![
        any::<u64>().prop_map(MsrOutcome::Value),
        Just(MsrOutcome::Ok),
        Just(MsrOutcome::InjectGp),
        Just(MsrOutcome::VmFailed { errno: 1 }),
        Just(MsrOutcome::UserExit {
            reason: MsrExitReason::Inval,
            answer: UserAnswer::Gp
        }),
    ]
}

fn arb_event() -> impl Strategy<Value = Event> {
    let idx = prop_oneof![0u32..0x1000, any::<u32>(), 0x400u32..0x480, 0x800u32..0x900];
    prop_oneof![
        (idx.clone(), arb_outcome(), any::<bool>()).prop_map(|(index, outcome, host)| {
            Event::MsrRead {
                index,
                origin: if host { Origin::Host } else { Origin::Guest },
                outcome,
                decided_by: DecidedBy::Kernel,
                capture: None,
            }
        }),
        (idx, any::<u64>(), arb_outcome()).prop_map(|(index, value, outcome)| Event::MsrWrite {
            index,
            value,
            origin: Origin::Guest,
            outcome,
            decided_by: DecidedBy::Kernel,
            capture: None,
        }),
        any::<u64>().prop_map(|mcg_cap| Event::SetupMce { mcg_cap }),
        // The VMM's vCPU state ioctls (format 1.3), accepted or refused.
        (
            prop_oneof![Just(0xfee0_0900u64), Just(0xfee0_0d00), any::<u64>()],
            any::<u32>(),
            any::<u8>(),
            any::<u64>(),
            prop_oneof![Just(0i32), Just(-22)],
            0u8..4
        )
            .prop_map(|(apic_base, x, bank, status, result, which)| {
                let set = match which {
                    0 => kvmtrace_format::VmmSet::Sregs {
                        apic_base,
                        cr0: 0x6000_0010,
                        cr4: 0,
                        efer: 0,
                        cs: Default::default(),
                        sregs2: x & 1 != 0,
                    },
                    1 => kvmtrace_format::VmmSet::MpState { mp_state: x % 6 },
                    2 => kvmtrace_format::VmmSet::Lapic(kvmtrace_format::LapicPage::from_regs(
                        |off| x.rotate_left(u32::from(off)),
                    )),
                    _ => kvmtrace_format::VmmSet::Mce {
                        bank,
                        status,
                        addr: 0,
                        misc: 0,
                        mcg_status: 0,
                    },
                };
                Event::VmmState {
                    set: Box::new(set),
                    result,
                }
            }),
        any::<u32>().prop_map(|mask| Event::UserSpaceMsr { mask }),
        (any::<u32>(), any::<u64>()).prop_map(|(cap, mask)| Event::QuirksDisabled { cap, mask }),
        (
            any::<bool>(),
            prop::collection::vec(
                (
                    any::<u32>(),
                    any::<u32>(),
                    any::<u32>(),
                    prop::collection::vec(any::<u8>(), 0..16)
                ),
                0..20
            )
        )
            .prop_map(|(default_deny, rs)| Event::MsrFilter {
                filter: MsrFilter {
                    default_deny,
                    ranges: rs
                        .into_iter()
                        .map(|(flags, base, nmsrs, bitmap)| MsrFilterRange {
                            flags,
                            base,
                            nmsrs,
                            bitmap
                        })
                        .collect(),
                },
            }),
        prop::collection::vec((any::<u32>(), any::<u32>(), any::<u32>()), 0..4).prop_map(|v| {
            Event::Cpuid {
                entries: v
                    .into_iter()
                    .map(|(function, ecx, eax)| CpuidEntry {
                        function,
                        ecx,
                        eax,
                        ..Default::default()
                    })
                    .collect(),
            }
        }),
        Just(Event::Mwait {
            rip: 0,
            eax: 0,
            ecx: 0,
            outcome: MwaitOutcome::InjectUd,
            decided_by: DecidedBy::Kernel
        }),
        Just(Event::Reset {
            state: Box::default(),
            decided_by: DecidedBy::Kernel
        }),
        Just(Event::Init {
            source: InitSource::Kernel,
            before: Box::default(),
            after: Box::default(),
            decided_by: DecidedBy::Kernel
        }),
        Just(Event::Shutdown {
            rip: 0,
            cause: ShutdownCause::TripleFault,
            then: AfterShutdown::Stop,
            decided_by: DecidedBy::Kernel
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Untrusted traces never panic the replay, the renderer or diff.
    #[test]
    fn arbitrary_records_never_panic(
        vcpus in any::<u32>(),
        events in prop::collection::vec((arb_event(), prop_oneof![0u32..4, any::<u32>()]), 0..80),
    ) {
        let mut h = header("kvm_pvm", 0, 0, false, false);
        h.vm.vcpus = vcpus;
        let recs: Vec<Record> = events
            .into_iter()
            .enumerate()
            .map(|(i, (event, vcpu))| Record { seq: i as u64, vcpu, time_ns: i as u64, event })
            .collect();
        let mut r = Replay::new(&h, policies().into_iter().take(6).collect());
        r.feed(&recs);
        let rep = r.finish();
        let _ = rep.render(10);
        let _ = serde_json::to_string(&rep).unwrap();
        let d = kvmtrace_replayer::diff("a", &recs, "b", &recs[recs.len() / 2..]);
        let _ = d.render(10);
    }
}
