//! Shared helpers of the `format_*` tests: proptest strategies for every event
//! variant, a deterministic trace with every event kind, and a JSON rendering.
#![allow(dead_code)]

use kvmtrace_format::*;
use proptest::collection::vec;
use proptest::prelude::*;

pub fn origin() -> impl Strategy<Value = Origin> {
    prop_oneof![Just(Origin::Guest), Just(Origin::Host)]
}

pub fn decided_by() -> impl Strategy<Value = DecidedBy> {
    prop_oneof![Just(DecidedBy::Kernel), Just(DecidedBy::Vmm)]
}

pub fn exit_reason() -> impl Strategy<Value = MsrExitReason> {
    prop_oneof![
        Just(MsrExitReason::Inval),
        Just(MsrExitReason::Unknown),
        Just(MsrExitReason::Filter)
    ]
}

pub fn msr_outcome() -> impl Strategy<Value = MsrOutcome> {
    let answer = prop_oneof![
        any::<u64>().prop_map(UserAnswer::Value),
        Just(UserAnswer::Ok),
        Just(UserAnswer::Gp)
    ];
    prop_oneof![
        any::<u64>().prop_map(MsrOutcome::Value),
        Just(MsrOutcome::Ok),
        Just(MsrOutcome::InjectGp),
        (exit_reason(), answer)
            .prop_map(|(reason, answer)| MsrOutcome::UserExit { reason, answer }),
        any::<i32>().prop_map(|errno| MsrOutcome::VmFailed { errno }),
    ]
}

pub fn mwait_outcome() -> impl Strategy<Value = MwaitOutcome> {
    prop_oneof![
        Just(MwaitOutcome::Nop),
        Just(MwaitOutcome::InjectUd),
        Just(MwaitOutcome::NotIntercepted)
    ]
}

fn segment() -> impl Strategy<Value = Segment> {
    (any::<u16>(), any::<u64>(), any::<u32>(), any::<u32>()).prop_map(
        |(selector, base, limit, attr)| Segment {
            selector,
            base,
            limit,
            attr,
        },
    )
}

fn desc() -> impl Strategy<Value = DescTable> {
    (any::<u64>(), any::<u16>()).prop_map(|(base, limit)| DescTable { base, limit })
}

pub fn arch_state() -> impl Strategy<Value = ArchState> {
    (
        (any::<[u64; 16]>(), any::<u64>(), any::<u64>()),
        any::<[u64; 5]>(),
        vec(segment(), 8),
        (desc(), desc()),
        (any::<[u64; 4]>(), any::<u64>(), any::<u64>(), any::<u64>()),
        any::<u32>(),
        vec((any::<u32>(), any::<u64>()), 0..4),
    )
        .prop_map(
            |(
                (gprs, rip, rflags),
                cr,
                seg,
                (gdtr, idtr),
                (dr, dr6, dr7, apic_base),
                mp_state,
                mut msrs,
            )| {
                msrs.sort_by_key(|m| m.0);
                ArchState {
                    gprs,
                    rip,
                    rflags,
                    cr0: cr[0],
                    cr2: cr[1],
                    cr3: cr[2],
                    cr4: cr[3],
                    efer: cr[4],
                    cs: seg[0],
                    ds: seg[1],
                    es: seg[2],
                    fs: seg[3],
                    gs: seg[4],
                    ss: seg[5],
                    ldtr: seg[6],
                    tr: seg[7],
                    gdtr,
                    idtr,
                    dr,
                    dr6,
                    dr7,
                    apic_base,
                    mp_state,
                    msrs,
                }
            },
        )
}

fn cpuid_entry() -> impl Strategy<Value = CpuidEntry> {
    any::<[u32; 7]>().prop_map(|a| CpuidEntry {
        function: a[0],
        index: a[1],
        flags: a[2],
        eax: a[3],
        ebx: a[4],
        ecx: a[5],
        edx: a[6],
    })
}

fn msr_filter() -> impl Strategy<Value = MsrFilter> {
    (
        any::<bool>(),
        vec(
            (
                any::<u32>(),
                any::<u32>(),
                any::<u32>(),
                vec(any::<u8>(), 0..16),
            ),
            0..3,
        ),
    )
        .prop_map(|(default_deny, ranges)| MsrFilter {
            default_deny,
            ranges: ranges
                .into_iter()
                .map(|(flags, base, nmsrs, bitmap)| MsrFilterRange {
                    flags,
                    base,
                    nmsrs,
                    bitmap,
                })
                .collect(),
        })
}

fn init_source() -> impl Strategy<Value = InitSource> {
    prop_oneof![
        any::<u32>().prop_map(|from| InitSource::Ipi { from }),
        Just(InitSource::Shutdown),
        Just(InitSource::Host),
        Just(InitSource::Kernel),
    ]
}

fn end_reason() -> impl Strategy<Value = EndReason> {
    prop_oneof![
        Just(EndReason::Finished),
        any::<i32>().prop_map(|errno| EndReason::VmFailed { errno }),
        Just(EndReason::Shutdown),
        ".{0,12}".prop_map(|why| EndReason::Stopped { why }),
        ".{0,12}".prop_map(|message| EndReason::Error { message }),
    ]
}

fn ipi_mode() -> impl Strategy<Value = IpiMode> {
    prop_oneof![
        Just(IpiMode::Fixed),
        Just(IpiMode::LowestPriority),
        Just(IpiMode::Smi),
        Just(IpiMode::Nmi),
        Just(IpiMode::Init),
        Just(IpiMode::Sipi),
        any::<u8>().prop_map(IpiMode::Other),
    ]
}

/// Small MSR indices and TSC-like values are common, so the predictor's paths
/// get exercised; arbitrary ones too.
fn msr_index() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0x10u32), Just(0x3a), Just(0x401), any::<u32>()]
}

/// Every variant of [`VmmSet`] (format 1.3).
fn vmm_set() -> impl Strategy<Value = VmmSet> {
    prop_oneof![
        (any::<u64>(), any::<u64>()).prop_map(|(rip, rflags)| VmmSet::Regs { rip, rflags }),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            segment(),
            any::<bool>()
        )
            .prop_map(|(apic_base, cr0, cr4, efer, cs, sregs2)| VmmSet::Sregs {
                apic_base,
                cr0,
                cr4,
                efer,
                cs,
                sregs2
            }),
        any::<u32>().prop_map(|mp_state| VmmSet::MpState { mp_state }),
        (
            any::<u32>(),
            any::<[bool; 7]>(),
            any::<u8>(),
            proptest::option::of(any::<u32>()),
            any::<u32>(),
            any::<bool>()
        )
            .prop_map(
                |(flags, b, exception_nr, exception_error_code, sipi_vector, latched_init)| {
                    VmmSet::VcpuEvents(VcpuEventsSet {
                        flags,
                        exception_injected: b[0],
                        exception_pending: b[1],
                        exception_nr,
                        exception_error_code,
                        nmi_injected: b[2],
                        nmi_pending: b[3],
                        nmi_masked: b[4],
                        sipi_vector,
                        smi_pending: b[5],
                        latched_init,
                    })
                }
            ),
        vec(any::<u32>(), 18).prop_map(|r| VmmSet::Lapic(LapicPage::from_regs(|off| {
            let i = LapicPage::default()
                .regs()
                .iter()
                .position(|&(o, _)| o == off)
                .unwrap();
            r[i]
        }))),
        (
            any::<u8>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(|(bank, status, addr, misc, mcg_status)| VmmSet::Mce {
                bank,
                status,
                addr,
                misc,
                mcg_status
            }),
    ]
}

/// Every variant of [`Event`].
pub fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        4 => (msr_index(), origin(), msr_outcome(), decided_by(), proptest::option::of(exit_reason()))
            .prop_map(|(index, origin, outcome, decided_by, capture)| Event::MsrRead { index, origin, outcome, decided_by, capture }),
        4 => (msr_index(), any::<u64>(), origin(), msr_outcome(), decided_by(), proptest::option::of(exit_reason()))
            .prop_map(|(index, value, origin, outcome, decided_by, capture)| Event::MsrWrite { index, value, origin, outcome, decided_by, capture }),
        1 => (any::<u64>(), any::<u64>(), any::<u32>(), any::<u32>(), mwait_outcome(), decided_by())
            .prop_map(|(rip, rax, ecx, edx, outcome, decided_by)| Event::Monitor { rip, rax, ecx, edx, outcome, decided_by }),
        1 => (any::<u64>(), any::<u32>(), any::<u32>(), mwait_outcome(), decided_by())
            .prop_map(|(rip, eax, ecx, outcome, decided_by)| Event::Mwait { rip, eax, ecx, outcome, decided_by }),
        1 => (any::<u64>(), prop_oneof![Just(ShutdownCause::TripleFault), Just(ShutdownCause::Other)],
         prop_oneof![Just(AfterShutdown::Reset), Just(AfterShutdown::Init), Just(AfterShutdown::Stop), Just(AfterShutdown::Resume)], decided_by())
            .prop_map(|(rip, cause, then, decided_by)| Event::Shutdown { rip, cause, then, decided_by }),
        1 => (arch_state(), decided_by()).prop_map(|(s, decided_by)| Event::Reset { state: Box::new(s), decided_by }),
        1 => (init_source(), arch_state(), arch_state(), decided_by())
            .prop_map(|(source, b, a, decided_by)| Event::Init { source, before: Box::new(b), after: Box::new(a), decided_by }),
        1 => (any::<u32>(), any::<u8>()).prop_map(|(from, vector)| Event::Sipi { from, vector }),
        1 => (any::<u32>(), any::<u8>(), ipi_mode()).prop_map(|(dst, vector, mode)| Event::Ipi { dst, vector, mode }),
        1 => vec(cpuid_entry(), 0..4).prop_map(|entries| Event::Cpuid { entries }),
        1 => (any::<u32>(), any::<u64>()).prop_map(|(cap, mask)| Event::QuirksDisabled { cap, mask }),
        1 => msr_filter().prop_map(|filter| Event::MsrFilter { filter }),
        1 => any::<u32>().prop_map(|mask| Event::UserSpaceMsr { mask }),
        1 => any::<u64>().prop_map(|mcg_cap| Event::SetupMce { mcg_cap }),
        1 => (any::<u16>(), any::<u8>(), any::<bool>(), any::<u32>()).prop_map(|(port, size, write, data)| Event::Io { port, size, write, data }),
        1 => (any::<u8>(), proptest::option::of(any::<u32>()), any::<bool>())
            .prop_map(|(vector, error_code, reinjected)| Event::Exception { vector, error_code, reinjected }),
        1 => Just(Event::Halt),
        1 => (any::<u32>(), vec(any::<u8>(), 0..32)).prop_map(|(exit_reason, data)| Event::RawExit { exit_reason, data }),
        1 => (prop_oneof![Just(LostSource::Channel), Just(LostSource::Tracefs), Just(LostSource::Import)], any::<u64>())
            .prop_map(|(source, count)| Event::Lost { source, count }),
        1 => end_reason().prop_map(|reason| Event::End { reason }),
        1 => (vmm_set(), any::<i32>()).prop_map(|(set, result)| Event::VmmState { set: Box::new(set), result }),
        1 => (any::<u32>(), any::<[u64; 4]>(), any::<bool>(), any::<i32>())
            .prop_map(|(cap, args, vcpu_scope, result)| Event::CapEnabled { cap, args: Box::new(args), vcpu_scope, result }),
    ]
}

/// Records with mostly increasing sequence numbers and times, sometimes not.
pub fn records(max: usize) -> impl Strategy<Value = Vec<Record>> {
    vec(
        (
            prop_oneof![8 => Just(1u64), 1 => any::<u64>()],
            prop_oneof![4 => 0u32..4, 1 => any::<u32>()],
            prop_oneof![8 => 0u64..10_000, 1 => any::<u64>()],
            event(),
        ),
        0..max,
    )
    .prop_map(|v| {
        let (mut seq, mut t) = (0u64, 0u64);
        v.into_iter()
            .map(|(ds, vcpu, dt, event)| {
                seq = seq.wrapping_add(ds);
                t = t.wrapping_add(dt);
                Record {
                    seq,
                    vcpu,
                    time_ns: t,
                    event,
                }
            })
            .collect()
    })
}

/// A header with every field set, deterministic.
pub fn full_header() -> TraceHeader {
    let cpuid = vec![
        CpuidEntry {
            function: 0,
            index: 0,
            flags: 0,
            eax: 0xd,
            ebx: 0x756e_6547,
            ecx: 0x6c65_746e,
            edx: 0x4965_6e69,
        },
        CpuidEntry {
            function: 1,
            index: 0,
            flags: 0,
            eax: 0x806f8,
            ebx: 0,
            ecx: 0x8 | (1 << 21),
            edx: 0x178b_fbff,
        },
    ];
    let filter = MsrFilter {
        default_deny: true,
        ranges: vec![MsrFilterRange {
            flags: 3,
            base: 0,
            nmsrs: 16,
            bitmap: vec![0, 0],
        }],
    };
    TraceHeader {
        tool_version: "0.1.0".into(),
        host: HostInfo {
            kernel_release: "6.18.44".into(),
            kvm_module: "kvm_pvm".into(),
            cpu_vendor: Some(CpuVendor::Intel),
            cpu_model: "Golden CPU @ 2.60GHz".into(),
            caps: vec![(116, 1), (213, 0x1ff), (126, 1)],
            valid_quirks: 0x1ff,
            msr_index_list: vec![0x10, 0x1b, 0x3a, 0x174, 0xc000_0080],
            msr_feature_list: vec![0x10a, 0x480],
            supported_cpuid: cpuid.clone(),
        },
        vm: VmConfig {
            vcpus: 2,
            memory_bytes: 2 << 20,
            cpuid,
            disabled_quirks: 0,
            msr_filter: None,
            user_space_msr: 0,
            irqchip: Some(Irqchip::None),
            mcg_cap: Some(0x1000a),
        },
        capture: CaptureInfo {
            mode: CaptureMode::Intercept,
            filter: Some(filter),
            user_space_msr: 7,
            detail: "golden".into(),
        },
        live_policy: "host".into(),
        payload: Payload {
            name: "golden".into(),
            sha256: "00".repeat(32),
        },
        started_unix_ns: 0,
        config_source: ConfigSource::VmmIoctls,
    }
}

fn state(rip: u64) -> Box<ArchState> {
    Box::new(ArchState {
        rip,
        rflags: 2,
        cr0: 0x6000_0010,
        gprs: {
            let mut g = [0; 16];
            g[ArchState::RDX] = 0x806f8;
            g
        },
        cs: Segment {
            selector: 0xf000,
            base: 0xffff_0000,
            limit: 0xffff,
            attr: 0x9b,
        },
        apic_base: 0xfee0_0900,
        msrs: vec![(0x10, 0), (0x3a, 0)],
        ..Default::default()
    })
}

/// A deterministic trace with every event kind on three vCPUs, over several
/// chunks: what the newest golden file holds. Returns records and the chunk breaks
/// (flush after these indices).
pub fn golden_records() -> (Vec<Record>, Vec<usize>) {
    let (mut out, breaks) = golden_records_v1_3();
    let mut seq = out.len() as u64;
    let mut t = out.last().map_or(0, |r| r.time_ns);
    // Format 1.4: every KVM_ENABLE_CAP of the VMM (ioctl tap), VM and vCPU
    // scope, accepted and refused.
    let mut push = |vcpu: u32, event: Event| {
        t += 3;
        out.push(Record {
            seq,
            vcpu,
            time_ns: t,
            event,
        });
        seq += 1;
    };
    for (vcpu, cap, args, vcpu_scope, result) in [
        (0, KVM_CAP_X86_TRIPLE_FAULT_EVENT, [1, 0, 0, 0], false, 0),
        (0, KVM_CAP_EXCEPTION_PAYLOAD, [1, 0, 0, 0], false, 0),
        (0, KVM_CAP_SPLIT_IRQCHIP, [24, 0, 0, 0], false, 0),
        (0, KVM_CAP_X2APIC_API, [3, 0, 0, 0], false, -22),
        (2, KVM_CAP_HYPERV_SYNIC2, [0, 0, 0, 0], true, 0),
        (0, 999, [u64::MAX, 1 << 40, 7, 0], false, -22),
    ] {
        push(
            vcpu,
            Event::CapEnabled {
                cap,
                args: Box::new(args),
                vcpu_scope,
                result,
            },
        );
    }
    (out, breaks)
}

/// The golden records of format 1.3 (`tests/golden/v1.3.kvt`).
pub fn golden_records_v1_3() -> (Vec<Record>, Vec<usize>) {
    let (mut out, breaks) = golden_records_v1_2();
    let mut seq = out.len() as u64;
    let mut t = out.last().map_or(0, |r| r.time_ns);
    // Format 1.3: the VMM's vCPU state ioctls (ioctl tap).
    let mut push = |event: Event| {
        t += 7;
        out.push(Record {
            seq,
            vcpu: 2,
            time_ns: t,
            event,
        });
        seq += 1;
    };
    for (set, result) in vmm_sets() {
        push(Event::VmmState {
            set: Box::new(set),
            result,
        });
    }
    (out, breaks)
}

/// One of each `VmmSet` (format 1.3), with its ioctl result.
pub fn vmm_sets() -> Vec<(VmmSet, i32)> {
    vec![
        (
            VmmSet::Sregs {
                apic_base: 0xfee0_0900,
                cr0: 0x6000_0010,
                cr4: 0,
                efer: 0,
                cs: Segment {
                    selector: 0xf000,
                    base: 0xffff_0000,
                    limit: 0xffff,
                    attr: 0x9b,
                },
                sregs2: true,
            },
            0,
        ),
        (
            VmmSet::Regs {
                rip: 0xfff0,
                rflags: 2,
            },
            0,
        ),
        (VmmSet::MpState { mp_state: 1 }, 0),
        (
            VmmSet::VcpuEvents(VcpuEventsSet {
                flags: 0xb,
                exception_nr: 13,
                exception_pending: true,
                exception_error_code: Some(0),
                nmi_masked: true,
                sipi_vector: 0x9f,
                latched_init: true,
                ..Default::default()
            }),
            0,
        ),
        (
            VmmSet::Lapic(LapicPage {
                id: 2 << 24,
                version: 0x50014,
                dfr: 0xffff_ffff,
                svr: 0xff,
                lvt_timer: 0x10000,
                lvt_lint0: 0x10700,
                ..Default::default()
            }),
            0,
        ),
        (
            VmmSet::Sregs {
                apic_base: 0xfee0_0401,
                cr0: 0x6000_0010,
                cr4: 0,
                efer: 0,
                cs: Segment::default(),
                sregs2: false,
            },
            -22,
        ),
        (
            VmmSet::Mce {
                bank: 1,
                status: 0xbd80_0000_0000_0134,
                addr: 0x1000,
                misc: 0x86,
                mcg_status: 5,
            },
            0,
        ),
    ]
}

/// The records of format 1.2's golden file (`tests/golden/v1.2.kvt`), which
/// are those of 1.1 (1.2 changed the header only).
pub fn golden_records_v1_2() -> (Vec<Record>, Vec<usize>) {
    let (mut out, breaks) = golden_records_v1_0();
    let mut seq = out.len() as u64;
    let mut t = out.last().map_or(0, |r| r.time_ns);
    // Format 1.1: a vCPU of another VMM's capture (tracepoints only).
    let mut push = |event: Event| {
        t += 5;
        out.push(Record {
            seq,
            vcpu: 2,
            time_ns: t,
            event,
        });
        seq += 1;
    };
    push(Event::VcpuThread {
        pid: 4000,
        tid: 4002,
        comm: "CPU 2/KVM".into(),
        identity: VcpuIdentity::ThreadName,
    });
    push(Event::KernelReset {
        known: Box::new(KnownState::UNKNOWN),
    });
    push(Event::KernelInit {
        from: Some(0),
        known: Box::new(KnownState {
            mp_state: Some(2),
            ..KnownState::UNKNOWN
        }),
    });
    push(Event::Sipi {
        from: SIPI_FROM_UNKNOWN,
        vector: 0x9f,
    });
    push(Event::KernelInit {
        from: None,
        known: Box::new(KnownState::UNKNOWN),
    });
    (out, breaks)
}

/// The records of format 1.0's golden file (`tests/golden/v1.kvt`): every
/// event kind of 1.0.
pub fn golden_records_v1_0() -> (Vec<Record>, Vec<usize>) {
    let mut out = Vec::new();
    let mut seq = 0u64;
    let mut t = 0u64;
    let mut push = |vcpu: u32, dt: u64, event: Event| {
        t += dt;
        out.push(Record {
            seq,
            vcpu,
            time_ns: t,
            event,
        });
        seq += 1;
    };
    let kernel = DecidedBy::Kernel;
    let vmm = DecidedBy::Vmm;
    push(
        0,
        0,
        Event::Reset {
            state: state(0xfff0),
            decided_by: kernel,
        },
    );
    push(
        0,
        10,
        Event::Cpuid {
            entries: full_header().vm.cpuid,
        },
    );
    push(
        0,
        10,
        Event::QuirksDisabled {
            cap: 213,
            mask: 1 << 7,
        },
    );
    push(
        0,
        10,
        Event::MsrFilter {
            filter: MsrFilter::default(),
        },
    );
    push(0, 10, Event::UserSpaceMsr { mask: 4 });
    push(0, 10, Event::SetupMce { mcg_cap: 0x1000a });
    push(
        0,
        10,
        Event::MsrWrite {
            index: 0x3a,
            value: 5,
            origin: Origin::Host,
            outcome: MsrOutcome::Ok,
            decided_by: kernel,
            capture: None,
        },
    );
    let mut tsc = 1_000_000u64;
    for i in 0..40u64 {
        let dt = 4000 + (i * 37) % 900;
        tsc += dt * 26 / 10;
        push(
            0,
            dt,
            Event::MsrRead {
                index: 0x10,
                origin: Origin::Guest,
                outcome: MsrOutcome::Value(tsc),
                decided_by: vmm,
                capture: Some(MsrExitReason::Filter),
            },
        );
    }
    push(
        1,
        5,
        Event::Sipi {
            from: 0,
            vector: 0x10,
        },
    );
    push(
        0,
        5,
        Event::Ipi {
            dst: 1,
            vector: 0,
            mode: IpiMode::Init,
        },
    );
    push(
        1,
        5,
        Event::Init {
            source: InitSource::Ipi { from: 0 },
            before: state(0x1000),
            after: state(0xfff0),
            decided_by: kernel,
        },
    );
    push(
        1,
        5,
        Event::MsrWrite {
            index: 0x401,
            value: 0x1,
            origin: Origin::Guest,
            outcome: MsrOutcome::InjectGp,
            decided_by: vmm,
            capture: Some(MsrExitReason::Filter),
        },
    );
    push(
        1,
        5,
        Event::MsrWrite {
            index: 0x401,
            value: 0x2,
            origin: Origin::Guest,
            outcome: MsrOutcome::VmFailed { errno: 1 },
            decided_by: kernel,
            capture: None,
        },
    );
    push(
        1,
        5,
        Event::MsrRead {
            index: 0x4b56_4d00,
            origin: Origin::Guest,
            outcome: MsrOutcome::UserExit {
                reason: MsrExitReason::Unknown,
                answer: UserAnswer::Value(0x1234),
            },
            decided_by: vmm,
            capture: Some(MsrExitReason::Unknown),
        },
    );
    push(
        1,
        5,
        Event::MsrWrite {
            index: 0x830,
            value: 0x4_0000_00fe,
            origin: Origin::Guest,
            outcome: MsrOutcome::UserExit {
                reason: MsrExitReason::Filter,
                answer: UserAnswer::Ok,
            },
            decided_by: vmm,
            capture: Some(MsrExitReason::Filter),
        },
    );
    push(
        1,
        5,
        Event::MsrRead {
            index: 0x802,
            origin: Origin::Guest,
            outcome: MsrOutcome::UserExit {
                reason: MsrExitReason::Inval,
                answer: UserAnswer::Gp,
            },
            decided_by: vmm,
            capture: Some(MsrExitReason::Inval),
        },
    );
    push(
        0,
        5,
        Event::Monitor {
            rip: 0x1000,
            rax: 0x2000,
            ecx: 0,
            edx: 0,
            outcome: MwaitOutcome::Nop,
            decided_by: kernel,
        },
    );
    push(
        0,
        5,
        Event::Mwait {
            rip: 0x1003,
            eax: 0,
            ecx: 0,
            outcome: MwaitOutcome::InjectUd,
            decided_by: vmm,
        },
    );
    push(
        0,
        5,
        Event::Io {
            port: 0x3f8,
            size: 1,
            write: true,
            data: u32::from(b'k'),
        },
    );
    push(
        0,
        5,
        Event::Exception {
            vector: 13,
            error_code: Some(0),
            reinjected: false,
        },
    );
    push(0, 5, Event::Halt);
    push(
        0,
        5,
        Event::RawExit {
            exit_reason: 17,
            data: vec![1, 2, 3],
        },
    );
    push(
        0,
        5,
        Event::Shutdown {
            rip: 0x1010,
            cause: ShutdownCause::TripleFault,
            then: AfterShutdown::Resume,
            decided_by: kernel,
        },
    );
    push(
        0,
        5,
        Event::Lost {
            source: LostSource::Channel,
            count: 3,
        },
    );
    push(
        1,
        5,
        Event::End {
            reason: EndReason::Finished,
        },
    );
    push(
        0,
        5,
        Event::End {
            reason: EndReason::Stopped {
                why: "event limit".into(),
            },
        },
    );
    (out, vec![6, 30, 47, 55])
}

/// Writes records with a flush after each listed index.
pub fn write_with_breaks(h: &TraceHeader, recs: &[Record], breaks: &[usize]) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = TraceWriter::new(&mut buf, h).unwrap();
    for (i, r) in recs.iter().enumerate() {
        w.push(r).unwrap();
        if breaks.contains(&i) {
            w.flush_chunk().unwrap();
        }
    }
    w.finish().unwrap();
    buf
}

/// The rendering the golden `.dump` holds: the header as JSON, then one JSON
/// object a record.
pub fn render(h: &TraceHeader, recs: &[Record]) -> String {
    render_with(serde_json::to_string(h).unwrap(), recs)
}

/// [`render`] as formats before 1.2 rendered it: the header without
/// `config_source` (which such files do not hold; it reads as derived).
pub fn render_legacy(h: &TraceHeader, recs: &[Record]) -> String {
    // `config_source` is the header's last field.
    let mut header = serde_json::to_string(h).unwrap();
    let cut = header.rfind(",\"config_source\":").unwrap();
    header.truncate(cut);
    header.push('}');
    render_with(header, recs)
}

fn render_with(header: String, recs: &[Record]) -> String {
    let mut s = header;
    s.push('\n');
    for r in recs {
        s.push_str(&serde_json::to_string(r).unwrap());
        s.push('\n');
    }
    s
}

/// CRC-32 (IEEE), bit by bit, apart from the reader's: enough for a test to
/// forge a header.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xedb8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}
