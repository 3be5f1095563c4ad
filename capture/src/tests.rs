//! Parser tests on real-format lines (HOST.md "Kernel tracepoints" samples and
//! the formats of SEMANTICS.md §6).

use kvmtrace_format::{DecidedBy, EndReason, Event, IpiMode, MsrOutcome, Origin};

use super::*;

fn ev(line: &str) -> EventLine<'_> {
    match parse_line(line.as_bytes()) {
        Ok(LineKind::Event(e)) => e,
        other => panic!("{line:?}: expected an event line, got {other:?}"),
    }
}

#[test]
fn line_layouts() {
    // (line, task, pid, cpu, ts_ns, event, fields)
    let cases: &[(&str, &str, u32, u32, u64, &str, &str)] = &[
        // trace_pipe / trace, flags `.....`
        (
            "        kvmprobe-2990    [001] ..... 8161.637664: kvm_msr: msr_write 401 = 0x1 (#GP)",
            "kvmprobe",
            2990,
            1,
            8_161_637_664_000,
            "kvm_msr",
            "msr_write 401 = 0x1 (#GP)",
        ),
        // need-resched flag
        (
            "           probe-12998   [000] .N... 580.597810: kvm_userspace_exit: reason KVM_EXIT_INTERNAL_ERROR (17)",
            "probe",
            12998,
            0,
            580_597_810_000,
            "kvm_userspace_exit",
            "reason KVM_EXIT_INTERNAL_ERROR (17)",
        ),
        // irqs-off + preempt depth, 4-char flags of older kernels
        (
            "qemu-system-x86-4016  [003] d..1 1016.563226: kvm_cpuid: func 0 idx 0 rax d rbx 68747541 rcx 444d4163 rdx 69746e65, cpuid entry found",
            "qemu-system-x86",
            4016,
            3,
            1_016_563_226_000,
            "kvm_cpuid",
            "func 0 idx 0 rax d rbx 68747541 rcx 444d4163 rdx 69746e65, cpuid entry found",
        ),
        // task name with spaces and a slash (QEMU vCPU threads), tgid column
        (
            "       CPU 0/KVM-1234    (   1200) [002] d..2. 12.000001: kvm_msr: msr_read 10 = 0x5",
            "CPU 0/KVM",
            1234,
            2,
            12_000_001_000,
            "kvm_msr",
            "msr_read 10 = 0x5",
        ),
        // task name with a dash
        (
            "   kvm-probe-x-77 [000] ..... 1.5: kvm_inj_exception: #UD",
            "kvm-probe-x",
            77,
            0,
            1_500_000_000,
            "kvm_inj_exception",
            "#UD",
        ),
        // trace-cmd report: no flags, padded event name
        (
            "        kvmprobe-2990  [001]  8161.637664: kvm_msr:              msr_read 10 = 0x1227083af590",
            "kvmprobe",
            2990,
            1,
            8_161_637_664_000,
            "kvm_msr",
            "msr_read 10 = 0x1227083af590",
        ),
        // trace-cmd report with flags and nanosecond timestamps
        (
            "        kvmprobe-2990  [001] d..1. 8161.637664123: kvm_apic_ipi:         dst 1 vec 0 (INIT|physical|assert|edge|dst)",
            "kvmprobe",
            2990,
            1,
            8_161_637_664_123,
            "kvm_apic_ipi",
            "dst 1 vec 0 (INIT|physical|assert|edge|dst)",
        ),
        // x86-tsc / counter clocks print a bare integer
        (
            "   qemu-kvm-9 [000] d..1. 123456789012345: kvm_msr: msr_read 10 = 0x1",
            "qemu-kvm",
            9,
            0,
            123_456_789_012_345,
            "kvm_msr",
            "msr_read 10 = 0x1",
        ),
        // tgid unknown
        (
            "           <...>-13007 (-------) [000] ..... 1.000001: kvm_msr: msr_read 10 = 0x1",
            "<...>",
            13007,
            0,
            1_000_001_000,
            "kvm_msr",
            "msr_read 10 = 0x1",
        ),
        // <...> task (comm not cached), CRLF line end
        (
            "           <...>-13007   [000] ..... 580.717973: kvm_userspace_exit: reason error (11)\r",
            "<...>",
            13007,
            0,
            580_717_973_000,
            "kvm_userspace_exit",
            "reason error (11)",
        ),
    ];
    for &(line, task, pid, cpu, ts, event, fields) in cases {
        let e = ev(line);
        assert_eq!(
            (e.task, e.pid, e.cpu, e.ts_ns, e.event, e.fields),
            (
                task.as_bytes(),
                pid,
                cpu,
                ts,
                event.as_bytes(),
                fields.as_bytes()
            ),
            "{line}"
        );
    }
}

#[test]
fn non_event_lines() {
    let cases: &[(&str, LineKind<'static>)] = &[
        ("", LineKind::Blank),
        ("   ", LineKind::Blank),
        ("# tracer: nop", LineKind::Comment),
        (
            "#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION",
            LineKind::Comment,
        ),
        (
            "#              | |         |   |||||     |         |",
            LineKind::Comment,
        ),
        ("cpus=2", LineKind::Preamble),
        ("version = 6", LineKind::Preamble),
        ("CPU 1 is empty", LineKind::Preamble),
        (
            "CPU:1 [LOST 123 EVENTS]",
            LineKind::Lost { cpu: 1, count: 123 },
        ),
    ];
    for (line, want) in cases {
        assert_eq!(parse_line(line.as_bytes()), Ok(*want), "{line:?}");
    }
}

#[test]
fn bad_lines() {
    let cases: &[(&[u8], LineError)] = &[
        (b"hello world", LineError::NoCpuField),
        (b"fn main() { let x = [1]; }", LineError::NoPid),
        (
            b"  kvmprobe-2990 [001] ..... 8161.6",
            LineError::NoTimestamp,
        ),
        (
            b"  kvmprobe-2990 [001] ..... 8161.637664: kvm_m",
            LineError::NoEventName,
        ),
        (b"  kvmprobe-2990 [001]", LineError::NoTimestamp),
        (
            b"  kvmprobe [001] ..... 1.0: kvm_msr: msr_read 10 = 0x5",
            LineError::NoPid,
        ),
        (
            b"  kvmprobe-99999999999 [001] ..... 1.0: kvm_msr: x",
            LineError::BadPid,
        ),
        (
            b"  kvmprobe-1 [001] ..... 99999999999999.0: kvm_msr: x",
            LineError::BadTimestamp,
        ),
        (
            b"  kvmprobe-1 [001] ..... 1.0000000001: kvm_msr: x",
            LineError::BadTimestamp,
        ),
        (
            b"  kvmprobe-1 [999999] ..... 1.0: kvm_msr: x",
            LineError::BadCpu,
        ),
        (b"\x7fELF\x02\x01\x01\x00\x00", LineError::Binary),
    ];
    for (line, want) in cases {
        assert_eq!(
            parse_line(line),
            Err(*want),
            "{:?}",
            String::from_utf8_lossy(line)
        );
    }
}

#[test]
fn event_fields() {
    use KvmEvent as K;
    let cases: &[(&str, &str, KvmEvent)] = &[
        (
            "kvm_msr",
            "msr_read 10 = 0x1227083af590",
            K::Msr {
                write: false,
                index: 0x10,
                data: 0x1227083af590,
                gp: false,
            },
        ),
        (
            "kvm_msr",
            "msr_write 401 = 0x1 (#GP)",
            K::Msr {
                write: true,
                index: 0x401,
                data: 1,
                gp: true,
            },
        ),
        (
            "kvm_msr",
            "msr_read c0000080 = 0x0 (#GP)",
            K::Msr {
                write: false,
                index: 0xc000_0080,
                data: 0,
                gp: true,
            },
        ),
        (
            "kvm_msr",
            "msr_write 1b = 0xfee00d00",
            K::Msr {
                write: true,
                index: 0x1b,
                data: 0xfee0_0d00,
                gp: false,
            },
        ),
        // 6.0+
        (
            "kvm_inj_exception",
            "#GP (0x0)",
            K::InjException {
                vector: 13,
                error_code: Some(0),
                reinjected: false,
            },
        ),
        (
            "kvm_inj_exception",
            "#UD",
            K::InjException {
                vector: 6,
                error_code: None,
                reinjected: false,
            },
        ),
        (
            "kvm_inj_exception",
            "#UD [reinjected]",
            K::InjException {
                vector: 6,
                error_code: None,
                reinjected: true,
            },
        ),
        (
            "kvm_inj_exception",
            "#PF (0x2) [reinjected]",
            K::InjException {
                vector: 14,
                error_code: Some(2),
                reinjected: true,
            },
        ),
        // ≤5.19 always printed an error code
        (
            "kvm_inj_exception",
            "#UD (0x0)",
            K::InjException {
                vector: 6,
                error_code: None,
                reinjected: false,
            },
        ),
        (
            "kvm_inj_exception",
            "#GP (0x18)",
            K::InjException {
                vector: 13,
                error_code: Some(0x18),
                reinjected: false,
            },
        ),
        (
            "kvm_inj_exception",
            "0x2",
            K::InjException {
                vector: 2,
                error_code: None,
                reinjected: false,
            },
        ),
        (
            "kvm_userspace_exit",
            "reason KVM_EXIT_X86_RDMSR (29)",
            K::UserspaceExit(RunReturn::Exit(29)),
        ),
        (
            "kvm_userspace_exit",
            "reason KVM_EXIT_SHUTDOWN (8)",
            K::UserspaceExit(RunReturn::Exit(8)),
        ),
        (
            "kvm_userspace_exit",
            "reason error (1)",
            K::UserspaceExit(RunReturn::Error(1)),
        ),
        (
            "kvm_userspace_exit",
            "reason error (11)",
            K::UserspaceExit(RunReturn::Error(11)),
        ),
        (
            "kvm_userspace_exit",
            "reason restart (4)",
            K::UserspaceExit(RunReturn::Restart),
        ),
        (
            "kvm_userspace_exit",
            "reason 0x40 (64)",
            K::UserspaceExit(RunReturn::Exit(64)),
        ),
        (
            "kvm_apic_ipi",
            "dst 1 vec 0 (INIT|physical|assert|edge|dst)",
            K::ApicIpi {
                dst: 1,
                vector: 0,
                mode: IpiMode::Init,
                deassert: false,
            },
        ),
        (
            "kvm_apic_ipi",
            "dst 1 vec 0 (INIT|physical|de-assert|level|dst)",
            K::ApicIpi {
                dst: 1,
                vector: 0,
                mode: IpiMode::Init,
                deassert: true,
            },
        ),
        (
            "kvm_apic_accept_irq",
            "apicid 1 vec 0 (INIT|edge)",
            K::ApicAcceptIrq {
                apicid: 1,
                vector: 0,
                mode: IpiMode::Init,
                level: false,
            },
        ),
        (
            "kvm_apic_accept_irq",
            "apicid 1f vec 159 (SIPI|edge)",
            K::ApicAcceptIrq {
                apicid: 0x1f,
                vector: 159,
                mode: IpiMode::Sipi,
                level: false,
            },
        ),
        (
            "kvm_apic_accept_irq",
            "apicid 0 vec 239 (Fixed|level) (coalesced)",
            K::ApicAcceptIrq {
                apicid: 0,
                vector: 239,
                mode: IpiMode::Fixed,
                level: true,
            },
        ),
        (
            "kvm_apic_ipi",
            "dst 1 vec 16 (SIPI|physical|assert|edge|dst)",
            K::ApicIpi {
                dst: 1,
                vector: 16,
                mode: IpiMode::Sipi,
                deassert: false,
            },
        ),
        (
            "kvm_apic_ipi",
            "dst ff vec 236 (Fixed|logical|assert|edge|all-but-self)",
            K::ApicIpi {
                dst: 0xff,
                vector: 236,
                mode: IpiMode::Fixed,
                deassert: false,
            },
        ),
        (
            "kvm_cpuid",
            "func 1 idx 0 rax a00f11 rbx 800 rcx f6d8320b rdx 178bfbff, cpuid entry found",
            K::Cpuid {
                function: 1,
                index: 0,
                eax: 0xa00f11,
                ebx: 0x800,
                ecx: 0xf6d8320b,
                edx: 0x178bfbff,
            },
        ),
        (
            "kvm_cpuid",
            "func 40000000 idx 0 rax 0 rbx 0 rcx 0 rdx 0, cpuid entry not found, used max basic",
            K::Cpuid {
                function: 0x4000_0000,
                index: 0,
                eax: 0,
                ebx: 0,
                ecx: 0,
                edx: 0,
            },
        ),
        (
            "kvm_exit",
            "vcpu 0 reason MSR_READ rip 0x1000 info1 0x0000000000000000 info2 0x0 intr_info 0x00000000 error_code 0x00000000",
            K::ExitOrEntry { vcpu_id: Some(0) },
        ),
        (
            "kvm_entry",
            "vcpu 3, rip 0x1000",
            K::ExitOrEntry { vcpu_id: Some(3) },
        ),
        ("kvm_entry", "vcpu 2", K::ExitOrEntry { vcpu_id: Some(2) }),
        (
            "kvm_exit",
            "reason EXTERNAL_INTERRUPT rip 0xffffffff8100 info1 0x0 info2 0x0",
            K::ExitOrEntry { vcpu_id: None },
        ),
        (
            "kvm_exit",
            "vcpu 1 reason MWAIT_INSTRUCTION rip 0xffffffff81a0c2d5 info1 0x0000000000000000 info2 0x0000000000000000 intr_info 0x00000000 error_code 0x00000000 requests 0x0000000000000000",
            K::MwaitExit {
                monitor: false,
                rip: 0xffff_ffff_81a0_c2d5,
            },
        ),
        (
            "kvm_exit",
            "reason MONITOR_INSTRUCTION rip 0x1003 info1 0x0 info2 0x0 intr_info 0x00000000 error_code 0x00000000",
            K::MwaitExit {
                monitor: true,
                rip: 0x1003,
            },
        ),
        (
            "kvm_exit",
            "vcpu 0 reason mwait rip 0x1006 info1 0x0000000000000000 info2 0x0000000000000000 intr_info 0x00000000 error_code 0x00000000",
            K::MwaitExit {
                monitor: false,
                rip: 0x1006,
            },
        ),
    ];
    for (event, fields, want) in cases {
        assert_eq!(
            parse_event(event.as_bytes(), fields.as_bytes()),
            Some(Ok(*want)),
            "{event}: {fields}"
        );
    }
    assert_eq!(parse_event(b"sched_switch", b"prev_comm=x"), None);
}

#[test]
fn malformed_fields() {
    let cases: &[(&str, &str)] = &[
        ("kvm_msr", "msr_read 10 = "),
        ("kvm_msr", "msr_read 10"),
        ("kvm_msr", "msr_peek 10 = 0x1"),
        ("kvm_msr", "msr_read 100000000 = 0x1"),
        ("kvm_msr", "msr_read 10 = 0x11111111111111111"),
        ("kvm_msr", "msr_write 401 = 0x1 (#G"),
        ("kvm_msr", "msr_read zz = 0x1"),
        ("kvm_inj_exception", "#XX (0x0)"),
        ("kvm_inj_exception", "#GP (0x"),
        ("kvm_inj_exception", ""),
        ("kvm_userspace_exit", "reason KVM_EXIT_X86_RDMSR"),
        ("kvm_userspace_exit", "reason KVM_EXIT_X86_RDMSR (2"),
        ("kvm_userspace_exit", "reason error (99999999)"),
        (
            "kvm_apic_ipi",
            "dst 1 vec 300 (INIT|physical|assert|edge|dst)",
        ),
        ("kvm_apic_ipi", "dst 1 vec 0 (INIT|phys"),
        ("kvm_cpuid", "func 1 idx 0 rax a00f11 rbx 800"),
        (
            "kvm_cpuid",
            "func 1 idx 0 rax 1ffffffff rbx 0 rcx 0 rdx 0, cpuid entry found",
        ),
    ];
    for (event, fields) in cases {
        assert!(
            matches!(
                parse_event(event.as_bytes(), fields.as_bytes()),
                Some(Err(_))
            ),
            "{event}: {fields} should be malformed"
        );
    }
}

/// Feed lines through parse_line + parse_event + Converter.
fn convert(lines: &[&str]) -> (Vec<Observed>, ConvertStats) {
    let mut c = Converter::new(VcpuMap::InOrder);
    let mut out = Vec::new();
    for l in lines {
        let e = ev(l);
        let k = parse_event(e.event, e.fields).unwrap().unwrap();
        c.feed(e.ts_ns, e.pid, k, &mut |o| out.push(o)).unwrap();
    }
    c.finish(&mut |o| out.push(o));
    (out, c.stats)
}

#[test]
fn conversion() {
    let (out, stats) = convert(&[
        " kvmprobe-2990 [001] ..... 8161.637639: kvm_msr: msr_read 10 = 0x1227083af590",
        " kvmprobe-2990 [001] ..... 8161.637664: kvm_msr: msr_write 401 = 0x1 (#GP)",
        " kvmprobe-2990 [001] ..... 8161.637666: kvm_inj_exception: #GP (0x0)",
        " kvmprobe-2991 [000] ..... 8161.637667: kvm_inj_exception: #GP (0x0)",
        " kvmprobe-2990 [001] ..... 8161.637670: kvm_userspace_exit: reason KVM_EXIT_X86_RDMSR (29)",
        " kvmprobe-2990 [001] ..... 8161.637671: kvm_apic_ipi: dst 1 vec 0 (INIT|physical|assert|edge|dst)",
        " kvmprobe-2990 [001] ..... 8161.637672: kvm_apic_ipi: dst 1 vec 236 (Fixed|physical|assert|edge|dst)",
        " kvmprobe-2990 [001] ..... 8161.637680: kvm_userspace_exit: reason error (1)",
        " kvmprobe-2991 [000] ..... 8161.637690: kvm_userspace_exit: reason error (11)",
    ]);
    let events: Vec<(u32, u64, &Event)> = out
        .iter()
        .map(|o| (o.vcpu, o.run_index, &o.event))
        .collect();
    assert_eq!(
        events,
        vec![
            (
                0,
                0,
                &Event::MsrRead {
                    index: 0x10,
                    origin: Origin::Guest,
                    outcome: MsrOutcome::Value(0x1227083af590),
                    decided_by: DecidedBy::Kernel,
                    capture: None
                }
            ),
            (
                0,
                0,
                &Event::MsrWrite {
                    index: 0x401,
                    value: 1,
                    origin: Origin::Guest,
                    outcome: MsrOutcome::InjectGp,
                    decided_by: DecidedBy::Kernel,
                    capture: None
                }
            ),
            // vCPU 1's #GP is not explained by vCPU 0's MSR line.
            (
                1,
                0,
                &Event::Exception {
                    vector: 13,
                    error_code: Some(0),
                    reinjected: false
                }
            ),
            (
                0,
                0,
                &Event::RawExit {
                    exit_reason: 29,
                    data: vec![]
                }
            ),
            (
                0,
                1,
                &Event::Ipi {
                    dst: 1,
                    vector: 0,
                    mode: IpiMode::Init
                }
            ),
            (
                0,
                1,
                &Event::End {
                    reason: EndReason::VmFailed { errno: 1 }
                }
            ),
        ]
    );
    assert_eq!(stats.exceptions_explained, 1);
    assert_eq!(stats.ipis_skipped, 1);
    assert_eq!(stats.userspace_exits_skipped, 1);
}

#[test]
fn mwait_outcome_from_the_next_line() {
    use kvmtrace_format::MwaitOutcome;
    let (out, stats) = convert(&[
        // 6.0+ with MWAIT_NEVER_UD_FAULTS disabled: #UD follows the intercept.
        " q-7 [000] d..1. 1.0: kvm_exit: vcpu 0 reason MWAIT_INSTRUCTION rip 0x1006 info1 0x0 info2 0x0 intr_info 0x00000000 error_code 0x00000000",
        " q-7 [000] d..1. 1.1: kvm_inj_exception: #UD",
        " q-7 [000] d..1. 1.2: kvm_entry: vcpu 0, rip 0x1006",
        // ≤5.19 / quirk enabled: the instruction is skipped.
        " q-7 [000] d..1. 2.0: kvm_exit: vcpu 0 reason MONITOR_INSTRUCTION rip 0x1003 info1 0x0 info2 0x0 intr_info 0x00000000 error_code 0x00000000",
        " q-7 [000] d..1. 2.1: kvm_entry: vcpu 0, rip 0x1006",
        // Last line of the text: NOP at finish.
        " q-7 [000] d..1. 3.0: kvm_exit: vcpu 0 reason mwait rip 0x2000 info1 0x0 info2 0x0 intr_info 0x00000000 error_code 0x00000000",
    ]);
    let outcomes: Vec<_> = out
        .iter()
        .map(|o| match &o.event {
            Event::Mwait { rip, outcome, .. } => ("mwait", *rip, *outcome),
            Event::Monitor { rip, outcome, .. } => ("monitor", *rip, *outcome),
            e => panic!("{e:?}"),
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("mwait", 0x1006, MwaitOutcome::InjectUd),
            ("monitor", 0x1003, MwaitOutcome::Nop),
            ("mwait", 0x2000, MwaitOutcome::Nop),
        ]
    );
    assert_eq!(stats.mwait, 3);
    assert_eq!(stats.exceptions, 0, "the #UD is the MWAIT's outcome");
}

#[test]
fn cpuid_lines_accumulate() {
    let (out, _) = convert(&[
        " p-1 [000] ..... 1.0: kvm_cpuid: func 0 idx 0 rax d rbx 68747541 rcx 444d4163 rdx 69746e65, cpuid entry found",
        " p-1 [000] ..... 1.1: kvm_cpuid: func 0 idx 0 rax d rbx 68747541 rcx 444d4163 rdx 69746e65, cpuid entry found",
        " p-1 [000] ..... 1.2: kvm_cpuid: func 1 idx 0 rax a00f11 rbx 800 rcx f6d8320b rdx 178bfbff, cpuid entry found",
    ]);
    assert_eq!(out.len(), 2, "a repeated leaf teaches nothing new");
    match &out[1].event {
        Event::Cpuid { entries } => assert_eq!(entries.len(), 2),
        e => panic!("{e:?}"),
    }
}

#[test]
fn fixed_vcpu_map_ignores_other_tasks() {
    let mut c = Converter::new(VcpuMap::Fixed(vec![(50, 3)]));
    let mut out = Vec::new();
    let k = KvmEvent::Msr {
        write: false,
        index: 0x10,
        data: 1,
        gp: false,
    };
    c.feed(1, 49, k, &mut |o| out.push(o)).unwrap();
    c.feed(2, 50, k, &mut |o| out.push(o)).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].vcpu, 3);
    assert_eq!(c.stats.foreign, 1);
}
