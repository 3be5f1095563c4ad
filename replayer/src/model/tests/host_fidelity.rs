//! Fixes from observe-mode fidelity runs on the project host: each case is
//! either an upstream rule (SEMANTICS.md section / kernel source cited) or a
//! `kvm_pvm` peculiarity written down in docs/host-notes.md with the recording
//! that shows it.

use kvmtrace_format::*;

use super::*;
use crate::policy::Vendor;

const GUEST_FLIPS: &[(u32, u64, Origin)] = &[];

#[test]
fn mci_ctl2_guest_read_needs_cmci_p() {
    // get_msr_mce (6.0+, and 6.18 read): CTL2 beyond bank_num -> 1; a guest
    // read without MCG_CMCI_P -> 1; a host read returns the bank's value.
    let mut h = header("kvm_intel", false, 0);
    h.vm.mcg_cap = Some(0x10a);
    run(
        &[
            case!(
                "§5 guest RDMSR MC0_CTL2, no CMCI_P, 6.0",
                "kvm-6.0",
                Intel,
                GUEST_FLIPS,
                0,
                0x280,
                None,
                G,
                GP
            ),
            case!(
                "§5 guest RDMSR MC9_CTL2, no CMCI_P, 6.18 pvm",
                "kvm-6.18",
                Pvm,
                GUEST_FLIPS,
                0,
                0x289,
                None,
                G,
                GP
            ),
            case!(
                "§5 guest RDMSR MC0_CTL2 amd",
                "kvm-6.18",
                Amd,
                GUEST_FLIPS,
                0,
                0x280,
                None,
                G,
                GP
            ),
            case!(
                "§5 host read MC0_CTL2, no CMCI_P",
                "kvm-6.18",
                Intel,
                GUEST_FLIPS,
                0,
                0x280,
                None,
                H,
                val(0)
            ),
            case!(
                "§5 guest RDMSR MC10_CTL2 beyond bank_num",
                "kvm-6.18",
                Intel,
                GUEST_FLIPS,
                0,
                0x28a,
                None,
                G,
                GP
            ),
            case!(
                "§5 INVAL deflection of the CTL2 fault",
                "kvm-6.18",
                Intel,
                GUEST_FLIPS,
                1,
                0x280,
                None,
                G,
                ux(MsrExitReason::Inval)
            ),
            case!(
                "§5 5.19 has no CTL2 (r=2)",
                "kvm-5.19",
                Intel,
                GUEST_FLIPS,
                2,
                0x280,
                None,
                G,
                ux(MsrExitReason::Unknown)
            ),
        ],
        &h,
    );
    let mut h = header("kvm_intel", false, 0);
    h.vm.mcg_cap = Some(0x50a); // MCG_CMCI_P
    run(
        &[case!(
            "§5 guest RDMSR MC0_CTL2 with CMCI_P",
            "kvm-6.18",
            Intel,
            GUEST_FLIPS,
            0,
            0x280,
            None,
            G,
            val(0)
        )],
        &h,
    );
}

#[test]
fn pvm_misc_enable_pmu_bits_writable() {
    // Upstream 6.0+ (§1): guest flips of bits 11/12 #GP and bit 7 is ignored.
    // kvm_pvm: accepted and stored (bit-probe observe recording, host-notes).
    let h = header("kvm_pvm", true, 0);
    run(
        &[
            case!(
                "§1 6.18 amd: flip bit 11 -> #GP",
                "kvm-6.18",
                Amd,
                GUEST_FLIPS,
                0,
                0x1a0,
                Some(0x1000),
                G,
                GP
            ),
            case!(
                "host-notes pvm: flip bit 11 ok",
                "kvm-6.18",
                Pvm,
                GUEST_FLIPS,
                0,
                0x1a0,
                Some(0x801),
                G,
                OK
            ),
            case!(
                "host-notes pvm: flip bit 12 ok",
                "kvm-6.18",
                Pvm,
                GUEST_FLIPS,
                0,
                0x1a0,
                Some(0x1001),
                G,
                OK
            ),
            case!(
                "host-notes pvm: EMON stored",
                "kvm-6.18",
                Pvm,
                &[(0x1a0, 0x81, G)],
                0,
                0x1a0,
                None,
                G,
                val(0x81)
            ),
            case!(
                "§1 6.18 amd: EMON ignored",
                "kvm-6.18",
                Amd,
                &[(0x1a0, 0x1880, G)],
                0,
                0x1a0,
                None,
                G,
                val(0x1800)
            ),
        ],
        &h,
    );
}

#[test]
fn pvm_pat_unchecked() {
    // kvm_pat_valid on VMX/SVM (§2); kvm_pvm stored 0x704060007040e (bit-probe).
    let h = header("kvm_pvm", true, 0);
    run(
        &[
            case!(
                "§2 amd: PAT byte 0x0e -> #GP",
                "kvm-6.18",
                Amd,
                GUEST_FLIPS,
                0,
                0x277,
                Some(0x7_0406_0007_040e),
                G,
                GP
            ),
            case!(
                "host-notes pvm: PAT byte 0x0e ok",
                "kvm-6.18",
                Pvm,
                GUEST_FLIPS,
                0,
                0x277,
                Some(0x7_0406_0007_040e),
                G,
                OK
            ),
            case!(
                "host-notes pvm: read back",
                "kvm-6.18",
                Pvm,
                &[(0x277, 0x7_0406_0007_040e, G)],
                0,
                0x277,
                None,
                G,
                val(0x7_0406_0007_040e)
            ),
        ],
        &h,
    );
}

#[test]
fn pvm_mcg_ext_ctl_no_handler() {
    // pvm_get_msr/pvm_set_msr have no MCG_EXT_CTL case and the common code
    // none either (VMX only, §5): r = 2 (observe: guest read/write #GP).
    let h = header("kvm_pvm", true, 0);
    run(
        &[
            case!(
                "pvm read 0x4d0 -> #GP",
                "kvm-6.18",
                Pvm,
                GUEST_FLIPS,
                0,
                0x4d0,
                None,
                G,
                GP
            ),
            case!(
                "pvm write 0x4d0 -> #GP",
                "kvm-6.18",
                Pvm,
                GUEST_FLIPS,
                0,
                0x4d0,
                Some(1),
                G,
                GP
            ),
            case!(
                "pvm read 0x4d0 UNKNOWN deflection",
                "kvm-6.18",
                Pvm,
                GUEST_FLIPS,
                2,
                0x4d0,
                None,
                G,
                ux(MsrExitReason::Unknown)
            ),
        ],
        &h,
    );
}

#[test]
fn msr_tables_common() {
    // model::common: x86.c __kvm_set_msr/__kvm_get_msr, kvm_{get,set}_msr_common,
    // mtrr.c, pvm.c (6.18 read). Leaf 0 + leaf 1 only: no RDTSCP, no XSAVES,
    // no PDCM, no ARCH_CAPABILITIES, no OSVW, not Hyper-V (the leaves present,
    // with those bits clear).
    let mut h = header("kvm_intel", false, 0);
    for (function, index) in [(7, 0), (0xd, 1), (0x8000_0001, 0), (0x4000_0001, 0)] {
        h.vm.cpuid.push(CpuidEntry {
            function,
            index,
            flags: if function == 7 || function == 0xd {
                1
            } else {
                0
            },
            ..Default::default()
        });
    }
    let unk = MsrExitReason::Unknown;
    let inval = MsrExitReason::Inval;
    run(
        &[
            case!(
                "§0 unknown index r=2",
                "kvm-6.18",
                Intel,
                GUEST_FLIPS,
                0,
                0x474f_4f00,
                None,
                G,
                GP
            ),
            case!(
                "§0 unknown index UNKNOWN deflection",
                "kvm-6.18",
                Intel,
                GUEST_FLIPS,
                2,
                0xdead_beef,
                Some(1),
                G,
                ux(unk)
            ),
            case!(
                "§0 unknown index: 5.19 preset has no table",
                "kvm-5.19",
                Intel,
                GUEST_FLIPS,
                0,
                0x474f_4f00,
                None,
                G,
                None
            ),
            case!(
                "ARCH_CAPABILITIES without CPUID",
                "kvm-6.18",
                Intel,
                GUEST_FLIPS,
                0,
                0x10a,
                None,
                G,
                GP
            ),
            case!(
                "ARCH_CAPABILITIES guest write",
                "kvm-6.18",
                Amd,
                GUEST_FLIPS,
                0,
                0x10a,
                Some(0),
                G,
                GP
            ),
            case!(
                "PERF_CAPABILITIES without PDCM",
                "kvm-6.18",
                Amd,
                GUEST_FLIPS,
                0,
                0x345,
                None,
                G,
                GP
            ),
            case!(
                "PERF_CAPABILITIES guest write, mask INVAL: 1 or 2",
                "kvm-6.18",
                Amd,
                GUEST_FLIPS,
                1,
                0x345,
                Some(0),
                G,
                None
            ),
            case!(
                "XSS without XSAVES",
                "kvm-6.18",
                Pvm,
                GUEST_FLIPS,
                0,
                0xda0,
                None,
                G,
                GP
            ),
            case!(
                "TSC_AUX without RDTSCP/RDPID",
                "kvm-6.18",
                Pvm,
                GUEST_FLIPS,
                0,
                0xc000_0103,
                Some(0),
                G,
                GP
            ),
            case!(
                "TSC_AUX host read: RESET 0",
                "kvm-6.18",
                Intel,
                GUEST_FLIPS,
                0,
                0xc000_0103,
                None,
                H,
                val(0)
            ),
            case!(
                "PLATFORM_INFO guest write",
                "kvm-6.18",
                Intel,
                GUEST_FLIPS,
                0,
                0xce,
                Some(0),
                G,
                GP
            ),
            case!(
                "UCODE_REV guest write dropped",
                "kvm-6.18",
                Amd,
                GUEST_FLIPS,
                0,
                0x8b,
                Some(5),
                G,
                OK
            ),
            case!(
                "UCODE_REV: value not known at RESET",
                "kvm-6.18",
                Amd,
                &[(0x8b, 5, G)],
                0,
                0x8b,
                None,
                G,
                None
            ),
            case!(
                "SYSENTER_CS stored",
                "kvm-6.18",
                Intel,
                &[(0x174, 0x10, G)],
                0,
                0x174,
                None,
                G,
                val(0x10)
            ),
            case!(
                "SYSENTER_EIP RESET 0",
                "kvm-6.18",
                Amd,
                GUEST_FLIPS,
                0,
                0x176,
                None,
                G,
                val(0)
            ),
            case!(
                "SYSENTER_EIP non-canonical (57)",
                "kvm-6.18",
                Amd,
                GUEST_FLIPS,
                0,
                0x176,
                Some(0x0100_0000_0000_0000),
                G,
                GP
            ),
            case!(
                "SYSENTER_EIP canonical only with LA57",
                "kvm-6.18",
                Amd,
                GUEST_FLIPS,
                0,
                0x176,
                Some(0x8000_0000_0000),
                G,
                None
            ),
            case!(
                "LSTAR round trip",
                "kvm-6.18",
                Pvm,
                &[(0xc000_0082, 0xffff_8000_0000_1000, G)],
                0,
                0xc000_0082,
                None,
                G,
                val(0xffff_8000_0000_1000)
            ),
            case!(
                "STAR: pvm checks guest selectors (not measured)",
                "kvm-6.18",
                Pvm,
                GUEST_FLIPS,
                0,
                0xc000_0081,
                Some(1),
                G,
                None
            ),
            case!(
                "STAR any value on SVM",
                "kvm-6.18",
                Amd,
                GUEST_FLIPS,
                0,
                0xc000_0081,
                Some(1),
                G,
                OK
            ),
            case!(
                "MTRRcap",
                "kvm-6.18",
                Pvm,
                GUEST_FLIPS,
                0,
                0xfe,
                None,
                G,
                val(0x508)
            ),
            case!(
                "MTRRcap write r=2",
                "kvm-6.18",
                Pvm,
                GUEST_FLIPS,
                0,
                0xfe,
                Some(0),
                G,
                GP
            ),
            case!(
                "MTRRdefType reserved bit 12",
                "kvm-6.18",
                Pvm,
                GUEST_FLIPS,
                0,
                0x2ff,
                Some(0x1000),
                G,
                GP
            ),
            case!(
                "MTRRdefType E|FE|WB",
                "kvm-6.18",
                Pvm,
                GUEST_FLIPS,
                0,
                0x2ff,
                Some(0xc06),
                G,
                OK
            ),
            case!(
                "MTRR base type 2 invalid",
                "kvm-6.18",
                Intel,
                GUEST_FLIPS,
                0,
                0x200,
                Some(2),
                G,
                GP
            ),
            case!(
                "MTRR mask reserved low bits",
                "kvm-6.18",
                Intel,
                GUEST_FLIPS,
                0,
                0x201,
                Some(0x400),
                G,
                GP
            ),
            case!(
                "MTRR fixed round trip",
                "kvm-6.18",
                Intel,
                &[(0x250, 0x0606_0606_0606_0606, G)],
                0,
                0x250,
                None,
                G,
                val(0x0606_0606_0606_0606)
            ),
            case!(
                "no MTRR at 0x210",
                "kvm-6.18",
                Intel,
                GUEST_FLIPS,
                0,
                0x210,
                None,
                G,
                GP
            ),
            case!(
                "PERF_STATUS constant",
                "kvm-6.18",
                Amd,
                GUEST_FLIPS,
                0,
                0x198,
                None,
                G,
                val(1000 | (4 << 40))
            ),
            case!(
                "P5_MC_TYPE 0",
                "kvm-6.18",
                Amd,
                GUEST_FLIPS,
                0,
                0x1,
                None,
                G,
                val(0)
            ),
            case!(
                "VMX MSR on AMD r=2",
                "kvm-6.18",
                Amd,
                GUEST_FLIPS,
                0,
                0x480,
                None,
                G,
                GP
            ),
            case!(
                "VMX MSR on Intel: not in the table",
                "kvm-6.18",
                Intel,
                GUEST_FLIPS,
                0,
                0x480,
                None,
                G,
                None
            ),
            case!(
                "SVM-only VM_CR on pvm r=2",
                "kvm-6.18",
                Pvm,
                GUEST_FLIPS,
                2,
                0xc001_0114,
                None,
                G,
                ux(unk)
            ),
            case!(
                "Hyper-V MSR without Hyper-V CPUID",
                "kvm-6.18",
                Intel,
                GUEST_FLIPS,
                0,
                0x4000_0000,
                None,
                G,
                GP
            ),
            case!(
                "Hyper-V MSR, INVAL mask: 1 or 2",
                "kvm-6.18",
                Intel,
                GUEST_FLIPS,
                1,
                0x4000_0000,
                None,
                G,
                None
            ),
            case!(
                "OSVW without CPUID",
                "kvm-6.18",
                Intel,
                GUEST_FLIPS,
                0,
                0xc001_0140,
                None,
                G,
                GP
            ),
            case!(
                "pvm DEBUGCTL reads 0",
                "kvm-6.18",
                Pvm,
                &[(0x1d9, 1, G)],
                0,
                0x1d9,
                None,
                G,
                val(0)
            ),
            case!(
                "pvm ARCH_CAPABILITIES guest read",
                "kvm-6.18",
                Pvm,
                GUEST_FLIPS,
                0,
                0x10a,
                None,
                G,
                GP
            ),
            case!(
                "§4 x2APIC still its own rule",
                "kvm-6.18",
                Pvm,
                GUEST_FLIPS,
                1,
                0x802,
                None,
                G,
                ux(inval)
            ),
        ],
        &h,
    );
}

#[test]
fn registers_taught_by_reads() {
    // Issue 6 item 5: an imported trace starts with no register known; the
    // first read teaches (unmodeled), the next is predicted.
    let mut h = header("kvm_pvm", true, 0);
    h.capture.mode = CaptureMode::Import;
    let mut e = engine("kvm-6.18", Vendor::Pvm, &h);
    assert_eq!(e.msr_read(0, 0x174, G).outcome, None);
    e.apply(&rec(
        1,
        Event::MsrRead {
            index: 0x174,
            origin: G,
            outcome: MsrOutcome::Value(0x10),
            decided_by: DecidedBy::Kernel,
            capture: None,
        },
    ));
    assert_eq!(e.msr_read(0, 0x174, G).outcome, val(0x10));
    // Observe/intercept recordings start at RESET: 0 is known.
    let h = header("kvm_pvm", true, 0);
    let e = engine("kvm-6.18", Vendor::Pvm, &h);
    assert_eq!(e.msr_read(0, 0x174, G).outcome, val(0));
}

#[test]
fn x2apic_registers_in_x2apic_mode() {
    // lapic.c kvm_x2apic_msr_read/write (6.18 read), x2APIC enabled through
    // 0x1b with an in-kernel irqchip.
    let mut h = header("kvm_pvm", true, 1 << 21);
    h.vm.irqchip = Some(Irqchip::Kernel);
    const X2: &[(u32, u64, Origin)] = &[(0x1b, 0xfee0_0d00, G)];
    run(
        &[
            case!(
                "LDR derived from the id",
                "kvm-6.18",
                Pvm,
                X2,
                0,
                0x80d,
                None,
                G,
                val(1)
            ),
            case!(
                "EOI is write-only",
                "kvm-6.18",
                Pvm,
                X2,
                0,
                0x80b,
                None,
                G,
                GP
            ),
            case!(
                "EOI write of 0",
                "kvm-6.18",
                Pvm,
                X2,
                0,
                0x80b,
                Some(0),
                G,
                OK
            ),
            case!(
                "TPR write",
                "kvm-6.18",
                Pvm,
                X2,
                0,
                0x808,
                Some(0x20),
                G,
                OK
            ),
            case!(
                "bits 63:32 reserved outside the ICR",
                "kvm-6.18",
                Pvm,
                X2,
                0,
                0x808,
                Some(1 << 32),
                G,
                GP
            ),
            case!(
                "ID read-only in x2APIC mode",
                "kvm-6.18",
                Pvm,
                X2,
                0,
                0x802,
                Some(0),
                G,
                GP
            ),
            case!(
                "LDR read-only in x2APIC mode",
                "kvm-6.18",
                Pvm,
                X2,
                0,
                0x80d,
                Some(0),
                G,
                GP
            ),
            case!(
                "ESR takes only 0",
                "kvm-6.18",
                Pvm,
                X2,
                0,
                0x828,
                Some(1),
                G,
                GP
            ),
            case!(
                "TMCCT read: not modelled",
                "kvm-6.18",
                Pvm,
                X2,
                0,
                0x839,
                None,
                G,
                None
            ),
            case!(
                "ICR write (fixed IPI) accepted (kvm_x2apic_icr_write)",
                "kvm-6.18",
                Pvm,
                X2,
                0,
                0x830,
                Some(0x4_0000_00fe),
                G,
                OK
            ),
            case!(
                "reserved offset",
                "kvm-6.18",
                Pvm,
                X2,
                0,
                0x804,
                None,
                G,
                GP
            ),
            case!(
                "5.19 preset: not modelled",
                "kvm-5.19",
                Pvm,
                X2,
                0,
                0x80b,
                Some(0),
                G,
                None
            ),
        ],
        &h,
    );
}

#[test]
fn pvm_misc_enable_mwait_bit_without_sse3() {
    // §1: with MISC_ENABLE_NO_MWAIT disabled, toggling bit 18 needs SSE3.
    // kvm_pvm accepted 0x40001 without SSE3 (observe misc-enable-no-mwait).
    let mut h = header("kvm_pvm", true, 0);
    h.vm.disabled_quirks = crate::quirks::MISC_ENABLE_NO_MWAIT;
    run(
        &[
            case!(
                "§1 amd: bit 18 without SSE3 -> #GP",
                "kvm-6.18",
                Amd,
                GUEST_FLIPS,
                0,
                0x1a0,
                Some(0x41800),
                G,
                GP
            ),
            case!(
                "host-notes pvm: bit 18 without SSE3 ok",
                "kvm-6.18",
                Pvm,
                GUEST_FLIPS,
                0,
                0x1a0,
                Some(0x40001),
                G,
                OK
            ),
        ],
        &h,
    );
}

#[test]
fn xen_guest_writes_not_predicted_unknown() {
    // kvm_set_msr_common: a write to xen_hvm_config.msr (any index) installs
    // the hypercall page; a guest with Xen CPUID may have one configured.
    let mut h = header("kvm_intel", false, 0);
    h.vm.cpuid.push(CpuidEntry {
        function: 0x4000_0000,
        ebx: 0x566e_6558,
        ecx: 0x65584d4d,
        edx: 0x4d4d566e,
        ..Default::default()
    });
    run(
        &[
            case!(
                "Xen guest: write to an unknown index",
                "kvm-6.18",
                Intel,
                GUEST_FLIPS,
                0,
                0xdead_beef,
                Some(1),
                G,
                None
            ),
            case!(
                "Xen guest: read of an unknown index still r=2",
                "kvm-6.18",
                Intel,
                GUEST_FLIPS,
                0,
                0xdead_beef,
                None,
                G,
                GP
            ),
        ],
        &h,
    );
}

fn read_rec(index: u32, value: u64) -> Record {
    rec(
        1,
        Event::MsrRead {
            index,
            origin: G,
            outcome: MsrOutcome::Value(value),
            decided_by: DecidedBy::Kernel,
            capture: None,
        },
    )
}

#[test]
fn imported_trace_learns_state_before_predicting() {
    // Issue 6 item 5: an imported text starts mid-run. Nothing the text has not
    // shown is assumed: not the RESET values, not the MCE setup, not x2APIC
    // mode or the in-kernel LAPIC, not CPUID leaves never executed.
    let mut h = TraceHeader::default();
    h.host.kernel_release = "6.18.44".into();
    h.host.kvm_module = "kvm_amd".into();
    h.capture.mode = CaptureMode::Import;
    let mut e = engine("kvm-6.18", Vendor::Amd, &h);
    let cases: [(u32, Option<u64>, Option<MsrOutcome>); 8] = [
        (0x1a0, None, None),
        (0x277, None, None),
        (0x277, Some(0x0e), GP), // kvm_pat_valid needs no state
        (0x808, None, None),
        (0x401, None, None),
        (0x17b, None, None),
        (0xc000_0103, None, None), // CPUID leaves 7 / 0x80000001 not seen
        (0x474f_4f00, None, GP),   // unknown index needs no state
    ];
    for (i, w, want) in cases {
        let got = match w {
            Some(d) => e.msr_write(0, i, d, G).outcome,
            None => e.msr_read(0, i, G).outcome,
        };
        assert_eq!(got, want, "before teaching: {i:#x} {w:?}");
    }
    // Reads teach.
    for (i, x) in [
        (0x1a0, 0x1),
        (0x1b, 0xfee0_0d00),
        (0x179, 0x10a),
        (0x808, 0),
    ] {
        e.apply(&read_rec(i, x));
    }
    assert_eq!(e.msr_read(0, 0x1a0, G).outcome, val(0x1));
    assert_eq!(e.msr_read(0, 0x428, G).outcome, GP, "bank 10 of 10");
    assert_eq!(
        e.msr_read(0, 0x401, G).outcome,
        None,
        "bank values still unknown"
    );
    assert_eq!(e.msr_write(0, 0x400, 1, G).outcome, GP);
    assert_eq!(e.msr_write(0, 0x401, 1, G).outcome, None, "HWCR unknown");
    // An x2APIC read answered by the kernel shows the in-kernel LAPIC.
    assert_eq!(e.msr_write(0, 0x80b, 0, G).outcome, OK);
    // A write the kernel accepted stores the value.
    e.apply(&rec(
        2,
        Event::MsrWrite {
            index: 0x277,
            value: 0x0606,
            origin: G,
            outcome: MsrOutcome::Ok,
            decided_by: DecidedBy::Kernel,
            capture: None,
        },
    ));
    assert_eq!(e.msr_read(0, 0x277, G).outcome, val(0x0606));
}

#[test]
fn kvm_pv_msrs_with_feature_bits() {
    // kvm_set_msr_common / kvm_get_msr_common: with the feature bit in the
    // KVM leaf, guest_pv_has() is true whether or not the VMM enforces it.
    let mut h = header("kvm_pvm", true, 0);
    h.vm.cpuid.push(CpuidEntry {
        function: 0x4000_0000,
        eax: 0x4000_0001,
        ebx: 0x4b4d_564b,
        ecx: 0x564b_4d56,
        edx: 0x4d,
        ..Default::default()
    });
    h.vm.cpuid.push(CpuidEntry {
        function: 0x4000_0001,
        eax: (1 << 3) | (1 << 12), // CLOCKSOURCE2, POLL_CONTROL; not CLOCKSOURCE
        ..Default::default()
    });
    run(
        &[
            case!(
                "SYSTEM_TIME_NEW write",
                "kvm-6.18",
                Pvm,
                GUEST_FLIPS,
                0,
                0x4b56_4d01,
                Some(0x1001),
                G,
                OK
            ),
            case!(
                "SYSTEM_TIME_NEW round trip",
                "kvm-6.18",
                Pvm,
                &[(0x4b56_4d01, 0x1001, G)],
                0,
                0x4b56_4d01,
                None,
                G,
                val(0x1001)
            ),
            case!(
                "SYSTEM_TIME_NEW 0 after RESET",
                "kvm-6.18",
                Pvm,
                GUEST_FLIPS,
                0,
                0x4b56_4d01,
                None,
                G,
                val(0)
            ),
            case!(
                "WALL_CLOCK_NEW write",
                "kvm-6.18",
                Pvm,
                GUEST_FLIPS,
                0,
                0x4b56_4d00,
                Some(0x2000),
                G,
                OK
            ),
            case!(
                // kvmtrace's own VMM never enforces PV CPUID: guest_pv_has.
                "old SYSTEM_TIME without CLOCKSOURCE: our VMM does not enforce",
                "kvm-6.18",
                Pvm,
                GUEST_FLIPS,
                0,
                0x12,
                Some(1),
                G,
                OK
            ),
            case!(
                "POLL_CONTROL bit 1",
                "kvm-6.18",
                Pvm,
                GUEST_FLIPS,
                0,
                0x4b56_4d05,
                Some(2),
                G,
                GP
            ),
            case!(
                // kvm_arch_vcpu_postcreate: "poll control enabled by default".
                "POLL_CONTROL is 1 at creation",
                "kvm-6.18",
                Pvm,
                GUEST_FLIPS,
                0,
                0x4b56_4d05,
                None,
                G,
                val(1)
            ),
            case!(
                "POLL_CONTROL round trip",
                "kvm-6.18",
                Pvm,
                &[(0x4b56_4d05, 0, G)],
                0,
                0x4b56_4d05,
                None,
                G,
                val(0)
            ),
        ],
        &h,
    );
}
