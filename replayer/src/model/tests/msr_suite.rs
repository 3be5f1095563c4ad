//! The rule families behind the `msr-suite` recordings (issue 12 item 3):
//! speculation on `kvm_pvm` (vendor table, `recorder/tests/host_probes.rs`),
//! the guest TSC write, EFER and segment-base writes, POLL_CONTROL at
//! creation, and the MTRR / KVM PV / PMU families that hold for 5.10 too.

use kvmtrace_format::*;

use super::*;
use crate::policy::Vendor;

const NONE: &[(u32, u64, Origin)] = &[];

/// KVM's leaf 0x80000001 with LM and NX (EDX 29, 20), no SVM/FFXSR; leaf 7
/// without SPEC_CTRL/FLUSH_L1D/TSC_ADJUST; leaf 0xA without a PMU.
fn h() -> TraceHeader {
    let mut h = header("kvm_pvm", false, 0);
    h.vm.cpuid.push(CpuidEntry {
        function: 7,
        ..Default::default()
    });
    h.vm.cpuid.push(CpuidEntry {
        function: 0xa,
        ..Default::default()
    });
    h.vm.cpuid.push(CpuidEntry {
        function: 0x8000_0001,
        edx: (1 << 29) | (1 << 20),
        ..Default::default()
    });
    h.host.supported_cpuid = h.vm.cpuid.clone();
    h
}

#[test]
fn speculation_on_pvm_whatever_the_cpuid() {
    let h = h();
    run(
        &[
            case!(
                "PRED_CMD bit 63, no IBPB",
                "kvm-6.18",
                Pvm,
                NONE,
                0,
                0x49,
                Some(1 << 63),
                G,
                OK
            ),
            case!(
                "FLUSH_CMD bit 5, no FLUSH_L1D",
                "kvm-6.18",
                Pvm,
                NONE,
                0,
                0x10b,
                Some(1 << 5),
                G,
                OK
            ),
            case!("PRED_CMD read", "kvm-6.18", Pvm, NONE, 0, 0x49, None, G, GP),
            case!(
                "SPEC_CTRL 7 then read 0",
                "kvm-6.18",
                Pvm,
                &[(0x48, 7, G)],
                0,
                0x48,
                None,
                G,
                val(0)
            ),
            case!(
                "host SPEC_CTRL read",
                "kvm-6.18",
                Pvm,
                NONE,
                0,
                0x48,
                None,
                H,
                val(0)
            ),
            case!(
                "host TSX_CTRL = 0",
                "kvm-6.18",
                Pvm,
                NONE,
                0,
                0x122,
                Some(0),
                H,
                OK
            ),
            case!(
                "host VIRT_SPEC_CTRL read",
                "kvm-6.18",
                Pvm,
                NONE,
                0,
                0xc001_011f,
                None,
                H,
                val(0)
            ),
            // Measured facts stay with the measured release.
            case!(
                "PRED_CMD bit 63 under kvm-6.4",
                "kvm-6.4",
                Pvm,
                NONE,
                0,
                0x49,
                Some(1 << 63),
                G,
                GP
            ),
        ],
        &h,
    );
}

#[test]
fn tsc_efer_and_segment_bases() {
    let h = h();
    run(
        &[
            // kvm_set_msr_common MSR_IA32_TSC: no failure path for a guest.
            case!(
                "guest TSC write",
                "kvm-6.18",
                Intel,
                NONE,
                0,
                0x10,
                Some(5),
                G,
                OK
            ),
            case!(
                "TSC_ADJUST unknown after it",
                "kvm-6.18",
                Intel,
                &[(0x10, 5, G)],
                0,
                0x3b,
                None,
                G,
                None
            ),
            // pvm stores TSC_ADJUST without the CPUID bit (measured).
            case!(
                "pvm TSC_ADJUST without CPUID",
                "kvm-6.18",
                Pvm,
                &[(0x3b, 9, H)],
                0,
                0x3b,
                None,
                G,
                val(9)
            ),
            case!(
                "upstream drops it",
                "kvm-6.18",
                Intel,
                &[(0x3b, 9, G)],
                0,
                0x3b,
                None,
                G,
                val(0)
            ),
            // set_efer / __kvm_valid_efer.
            case!(
                "EFER reserved bit 1",
                "kvm-6.18",
                Intel,
                NONE,
                0,
                0xc000_0080,
                Some(2),
                H,
                GP
            ),
            case!(
                "EFER SVME without SVM",
                "kvm-6.18",
                Intel,
                NONE,
                0,
                0xc000_0080,
                Some(1 << 12),
                G,
                GP
            ),
            // The VMM's KVM_SET_SREGS after RESET may have set LME: unknown.
            case!(
                "EFER SCE, LME unknown after RESET",
                "kvm-6.18",
                Intel,
                NONE,
                0,
                0xc000_0080,
                Some(1),
                G,
                None
            ),
            case!(
                "EFER LME set: paging unknown",
                "kvm-6.18",
                Intel,
                NONE,
                0,
                0xc000_0080,
                Some(0x100),
                G,
                None
            ),
            case!(
                "EFER read unknown after RESET",
                "kvm-6.18",
                Intel,
                NONE,
                0,
                0xc000_0080,
                None,
                G,
                None
            ),
            // __kvm_set_msr canonical check; reads not predicted.
            case!(
                "FS_BASE canonical",
                "kvm-6.18",
                Intel,
                NONE,
                0,
                0xc000_0100,
                Some(0x1234_5678_9abc),
                G,
                OK
            ),
            case!(
                "KERNEL_GS_BASE non-canonical",
                "kvm-6.18",
                Intel,
                NONE,
                0,
                0xc000_0102,
                Some(0xaaaa_aaaa_aaaa_aaaa),
                H,
                GP
            ),
            case!(
                "GS_BASE read after a write",
                "kvm-6.18",
                Intel,
                &[(0xc000_0101, 7, G)],
                0,
                0xc000_0101,
                None,
                G,
                val(7)
            ),
            case!(
                "KERNEL_GS_BASE read after a host write",
                "kvm-6.18",
                Intel,
                &[(0xc000_0102, 0x1234, H)],
                0,
                0xc000_0102,
                None,
                G,
                val(0x1234)
            ),
            case!(
                "FS_BASE read unknown after RESET (KVM_SET_SREGS)",
                "kvm-6.18",
                Intel,
                NONE,
                0,
                0xc000_0100,
                None,
                G,
                None
            ),
        ],
        &h,
    );
}

#[test]
fn families_that_hold_for_5_10() {
    let h = h();
    run(
        &[
            case!(
                "POLL_CONTROL 1 at creation, 5.10",
                "kvm-5.10",
                Intel,
                NONE,
                0,
                0x4b56_4d05,
                None,
                G,
                val(1)
            ),
            case!(
                "MTRRcap, 5.10",
                "kvm-5.10",
                Intel,
                NONE,
                0,
                0xfe,
                None,
                G,
                val(0x508)
            ),
            case!(
                "MTRR deftype type 2, 5.10",
                "kvm-5.10",
                Intel,
                NONE,
                0,
                0x2ff,
                Some(0x802),
                G,
                GP
            ),
            case!(
                "MTRR fixed round trip, 5.10",
                "kvm-5.15",
                Intel,
                &[(0x250, 0x0606_0606_0606_0606, G)],
                0,
                0x250,
                None,
                G,
                val(0x0606_0606_0606_0606)
            ),
            case!(
                "async PF reserved bits, 5.10",
                "kvm-5.10",
                Intel,
                NONE,
                0,
                0x4b56_4d02,
                Some(0x30),
                G,
                GP
            ),
            case!(
                "P6 PERFCTR0 without a PMU, 5.10",
                "kvm-5.10",
                Intel,
                NONE,
                0,
                0xc1,
                None,
                G,
                val(0)
            ),
            case!(
                "PMC2 without a PMU, 5.10",
                "kvm-5.10",
                Intel,
                NONE,
                0,
                0xc3,
                None,
                G,
                GP
            ),
            // Not read in 5.10: speculation stays unmodeled there.
            case!(
                "SPEC_CTRL under 5.10",
                "kvm-5.10",
                Intel,
                NONE,
                0,
                0x48,
                None,
                G,
                None
            ),
        ],
        &h,
    );
}

/// set_efer / kvm_get_msr_common MSR_EFER after a read taught EFER: reads
/// return the last accepted write with LMA kept; LME cannot change while LMA
/// (paging) is set; setting LME with paging off leaves LMA unknown.
#[test]
fn efer_reads_follow_writes_and_lma() {
    let h = h();
    let mut e = engine("kvm-6.18", Vendor::Intel, &h);
    let efer = 0xc000_0080;
    let read = |e: &mut Engine, value: u64| {
        e.apply(&rec(
            1,
            Event::MsrRead {
                index: efer,
                origin: Origin::Guest,
                outcome: MsrOutcome::Value(value),
                decided_by: DecidedBy::Kernel,
                capture: None,
            },
        ))
    };
    let rd = |e: &Engine| e.msr_read(0, efer, Origin::Guest).outcome;
    let wr = |e: &Engine, x: u64| e.msr_write(0, efer, x, Origin::Guest).outcome;
    // LME set: LMA follows CR0.PG, which a guest may clear unseen (leaving
    // long mode, as kvm-unit-tests' 5-level-paging switch does): a read
    // does not make it known, nor whether paging is on.
    assert_eq!(rd(&e), None);
    read(&mut e, 0x500);
    assert_eq!(rd(&e), None);
    // SCE set, LME unchanged: accepted whatever paging is.
    assert_eq!(wr(&e, 0x501), OK);
    // Clearing LME: #GP with paging on, accepted with it off: unknown.
    assert_eq!(wr(&e, 0x400), None);
    assert_eq!(wr(&e, 0x1), None);
    // LME clear: LMA is clear too, and a read is the value.
    let mut e = engine("kvm-6.18", Vendor::Intel, &h);
    read(&mut e, 0x801);
    assert_eq!(rd(&e), val(0x801));
    write_ok(&mut e, efer, 0x1, Origin::Guest);
    assert_eq!(rd(&e), val(0x1));
    // Paging off, LME = LMA = 0: LME may be set (paging is not known: no
    // prediction), and afterwards LMA depends on CR0.PG.
    let mut e = engine("kvm-6.18", Vendor::Intel, &h);
    read(&mut e, 0x1);
    assert_eq!(rd(&e), val(0x1));
    assert_eq!(wr(&e, 0x101), None);
    e.apply(&rec(
        2,
        Event::MsrWrite {
            index: efer,
            value: 0x101,
            origin: Origin::Guest,
            outcome: MsrOutcome::Ok,
            decided_by: DecidedBy::Kernel,
            capture: None,
        },
    ));
    assert_eq!(rd(&e), None, "LMA follows the next CR0.PG write");
    // A read with LME set and LMA clear does not make LMA known either.
    read(&mut e, 0x101);
    assert_eq!(rd(&e), None);
    // Host writes keep LMA too (set_efer): known where it was (LME clear).
    let mut e = engine("kvm-6.18", Vendor::Intel, &h);
    read(&mut e, 0x1);
    write_ok(&mut e, efer, 0x801, Origin::Host);
    assert_eq!(rd(&e), val(0x801));
}

/// MCG_CAP has no write case (kvm_set_msr_common default, r=2);
/// MISC_FEATURES_ENABLES takes CPUID_FAULT only with PLATFORM_INFO's bit
/// (kvm_set_msr_common, supports_cpuid_fault); on pvm other bits are left to
/// the recording (measured stored, observe bit-probe).
#[test]
fn mcg_cap_write_and_misc_features() {
    let h = h();
    run(
        &[
            case!(
                "MCG_CAP guest write",
                "kvm-6.18",
                Intel,
                NONE,
                0,
                0x179,
                Some(0),
                G,
                GP
            ),
            case!(
                "MCG_CAP guest write, UNKNOWN deflected",
                "kvm-6.18",
                Intel,
                NONE,
                2,
                0x179,
                Some(0x10a),
                G,
                ux(MsrExitReason::Unknown)
            ),
            case!(
                "MISC_FEATURES 0 at RESET",
                "kvm-6.18",
                Intel,
                NONE,
                0,
                0x140,
                None,
                G,
                val(0)
            ),
            case!(
                "MISC_FEATURES bit 1",
                "kvm-6.18",
                Intel,
                NONE,
                0,
                0x140,
                Some(2),
                G,
                GP
            ),
            case!(
                "MISC_FEATURES bit 1 on pvm: left to the recording",
                "kvm-6.18",
                Pvm,
                NONE,
                0,
                0x140,
                Some(2),
                G,
                None
            ),
            case!(
                "MISC_FEATURES CPUID_FAULT, PLATFORM_INFO unknown",
                "kvm-6.18",
                Intel,
                NONE,
                0,
                0x140,
                Some(1),
                G,
                None
            ),
            case!(
                "MISC_FEATURES 0 then read",
                "kvm-6.18",
                Pvm,
                &[(0x140, 0, G)],
                0,
                0x140,
                None,
                G,
                val(0)
            ),
            case!(
                "SMI_COUNT guest write: host only",
                "kvm-6.18",
                Intel,
                NONE,
                0,
                0x34,
                Some(0),
                G,
                GP
            ),
        ],
        &h,
    );
}

/// kvm_get_msr_common MSR_SMI_COUNT for a guest read: 0 from kvm_vcpu_reset
/// (RESET and INIT) where no SMI can enter (KVM_CAP_X86_SMM 0).
#[test]
fn smi_count_read_after_reset_without_smm() {
    let mut h = h();
    let mut e = engine("kvm-6.18", Vendor::Intel, &h);
    e.apply(&rec(
        0,
        Event::Reset {
            state: Box::default(),
            decided_by: DecidedBy::Kernel,
        },
    ));
    assert_eq!(
        e.msr_read(0, 0x34, G).outcome,
        None,
        "SMM support not known"
    );
    h.host.caps.push((117, 0));
    let mut e = engine("kvm-6.18", Vendor::Intel, &h);
    assert_eq!(e.msr_read(0, 0x34, G).outcome, None, "before RESET");
    e.apply(&rec(
        0,
        Event::Reset {
            state: Box::default(),
            decided_by: DecidedBy::Kernel,
        },
    ));
    assert_eq!(e.msr_read(0, 0x34, G).outcome, val(0));
    write_ok(&mut e, 0x34, 5, H);
    assert_eq!(e.msr_read(0, 0x34, G).outcome, val(5));
}

/// A tapped KVM_SET_SREGS sets EFER (LMA included) and the segment bases
/// (which its event does not carry).
#[test]
fn set_sregs_sets_efer_and_forgets_segment_bases() {
    let h = h();
    let mut e = engine("kvm-6.18", Vendor::Intel, &h);
    write_ok(&mut e, 0xc000_0101, 0x1000, G);
    assert_eq!(e.msr_read(0, 0xc000_0101, G).outcome, val(0x1000));
    e.apply(&rec(
        1,
        Event::VmmState {
            set: Box::new(VmmSet::Sregs {
                apic_base: 0xfee0_0900,
                cr0: 0x8000_0011,
                cr4: 0x20,
                efer: 0x500,
                cs: Segment::default(),
                sregs2: false,
            }),
            result: 0,
        },
    ));
    // EFER known but LMA (LME set): the guest may leave long mode unseen.
    assert_eq!(e.msr_read(0, 0xc000_0080, G).outcome, None);
    assert_eq!(e.msr_read(0, 0xc000_0101, G).outcome, None);
    assert_eq!(e.msr_write(0, 0xc000_0080, 0x501, G).outcome, OK);
}

/// kvm_vcpu_reset(init_event = true): MTRRs, MISC_FEATURES_ENABLES kept;
/// EFER and the kvmclock set to 0 (set_efer, kvmclock_reset); the vendor's
/// registers (SYSENTER_CS here) forgotten. An INIT whose moment is unknown
/// keeps what INIT keeps and leaves the rest unknown.
#[test]
fn init_keeps_common_registers() {
    let h = h();
    let mut e = engine("kvm-6.18", Vendor::Intel, &h);
    write_ok(&mut e, 0x2ff, 0xc06, G);
    write_ok(&mut e, 0x174, 0x10, G);
    write_ok(&mut e, 0x140, 0, G);
    e.deliver_init(0, true);
    assert_eq!(e.msr_read(0, 0x2ff, H).outcome, val(0xc06));
    assert_eq!(e.msr_read(0, 0x140, G).outcome, val(0));
    assert_eq!(e.msr_read(0, 0x174, G).outcome, None);
    assert_eq!(e.msr_read(0, 0xc000_0080, G).outcome, val(0));
    assert_eq!(e.msr_read(0, 0x12, H).outcome, val(0));
    e.deliver_init(0, false);
    assert_eq!(e.msr_read(0, 0x2ff, H).outcome, val(0xc06));
    assert_eq!(e.msr_read(0, 0xc000_0080, G).outcome, None);
}

/// A BSP INIT in a recording of another VMM: the VMM then resets the
/// machine. With its MSR ioctls tapped (`ConfigSource::VmmIoctls`) those
/// writes are in the trace, so MSR-held state INIT keeps (MTRRs) stays known;
/// without the tap every table register becomes unknown.
#[test]
fn bsp_init_in_a_tapped_recording_keeps_msr_state() {
    for (tap, want) in [(true, val(0xc06)), (false, None)] {
        let mut h = h();
        h.capture.mode = CaptureMode::External;
        h.vm.irqchip = Some(Irqchip::Kernel);
        h.config_source = if tap {
            ConfigSource::VmmIoctls
        } else {
            ConfigSource::Unknown { why: "test".into() }
        };
        let mut e = engine("kvm-6.18", Vendor::Intel, &h);
        write_ok(&mut e, 0x2ff, 0xc06, H);
        write_ok(&mut e, 0x174, 0x10, H);
        assert_eq!(e.msr_read(0, 0x2ff, H).outcome, val(0xc06));
        e.deliver_init(0, false);
        assert_eq!(e.msr_read(0, 0x2ff, H).outcome, want, "tap {tap}");
        assert_eq!(e.msr_read(0, 0x174, H).outcome, None, "tap {tap}");
    }
}
