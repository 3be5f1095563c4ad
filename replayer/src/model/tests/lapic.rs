//! The in-kernel LAPIC behind the x2APIC MSRs (issue 12 items 1, 2): each case
//! cites the lapic.c function it follows.

use kvmtrace_format::*;

use super::*;
use crate::engine::Engine;
use crate::policy::Vendor;

/// A two-vCPU pvm VM with an in-kernel irqchip, x2APIC in CPUID, both vCPUs
/// switched to x2APIC mode through IA32_APIC_BASE.
fn x2_engine() -> Engine {
    let mut h = header("kvm_pvm", true, 1 << 21);
    h.vm.irqchip = Some(Irqchip::Kernel);
    let mut e = engine("kvm-6.18", Vendor::Pvm, &h);
    for (vcpu, base) in [(0u32, 0xfee0_0d00u64), (1, 0xfee0_0c00)] {
        let r = Record {
            seq: 0,
            vcpu,
            time_ns: 0,
            event: Event::MsrWrite {
                index: 0x1b,
                value: base,
                origin: Origin::Guest,
                outcome: MsrOutcome::Ok,
                decided_by: DecidedBy::Kernel,
                capture: None,
            },
        };
        e.apply(&r);
    }
    e
}

fn wr(e: &mut Engine, vcpu: u32, index: u32, value: u64) -> Option<MsrOutcome> {
    let p = e.msr_write(vcpu, index, value, Origin::Guest);
    let outcome = p.outcome.unwrap_or(MsrOutcome::Ok);
    e.apply(&Record {
        seq: 1,
        vcpu,
        time_ns: 1,
        event: Event::MsrWrite {
            index,
            value,
            origin: Origin::Guest,
            outcome,
            decided_by: DecidedBy::Kernel,
            capture: None,
        },
    });
    p.outcome
}

fn rd(e: &Engine, vcpu: u32, index: u32) -> Option<MsrOutcome> {
    e.msr_read(vcpu, index, Origin::Guest).outcome
}

#[test]
fn readable_registers_and_values() {
    let mut e = x2_engine();
    // kvm_x2apic_id = vcpu_id; kvm_apic_calc_x2apic_ldr.
    assert_eq!(rd(&e, 1, 0x802), val(1));
    assert_eq!(rd(&e, 1, 0x80d), val(0x2));
    // kvm_apic_set_version: 6 LVTs (no CMCI), in-kernel IOAPIC: 0x50014.
    assert_eq!(rd(&e, 0, 0x803), val(0x50014));
    // kvm_lapic_readable_reg_mask: EOI, ARBPRI, RRD, DFR, ICR2, SELF_IPI,
    // LVTCMCI without CMCI, reserved offsets and anything past 0x3f0 #GP.
    for i in [
        0x800, 0x801, 0x809, 0x80b, 0x80c, 0x80e, 0x82f, 0x831, 0x83a, 0x83f, 0x840, 0x8ff,
    ] {
        assert_eq!(rd(&e, 0, i), GP, "read {i:#x}");
    }
    // TPR (MOV CR8), PPR, ISR/TMR/IRR: not determined by the trace.
    for i in [0x808, 0x80a, 0x810, 0x818, 0x820] {
        assert_eq!(rd(&e, 0, i), None, "read {i:#x}");
    }
    // Values of SPIV/LVT/TDCR/ICR are unknown after the xAPIC stretch...
    assert_eq!(rd(&e, 0, 0x80f), None);
    // ...and known once written in x2APIC mode (kvm_lapic_reg_write).
    assert_eq!(wr(&mut e, 0, 0x80f, 0x1ff), OK);
    assert_eq!(rd(&e, 0, 0x80f), val(0x1ff));
    // SPIV mask 0x3ff (no directed EOI with an in-kernel IOAPIC).
    assert_eq!(wr(&mut e, 0, 0x80f, 0x11ff), OK);
    assert_eq!(rd(&e, 0, 0x80f), val(0x1ff));
    // LVT0: LINT_MASK; LVTERR: LVT_MASK.
    assert_eq!(wr(&mut e, 0, 0x835, 0xffff_ffff), OK);
    assert_eq!(rd(&e, 0, 0x835), val(0x1f7ff));
    assert_eq!(wr(&mut e, 0, 0x837, 0xffff_ffff), OK);
    assert_eq!(rd(&e, 0, 0x837), val(0x110ff));
    // TDCR & 0xb.
    assert_eq!(wr(&mut e, 0, 0x83e, 0xf), OK);
    assert_eq!(rd(&e, 0, 0x83e), val(0xb));
    // LVTT: timer mode mask 1 << 17 without TSC_DEADLINE in CPUID.
    assert_eq!(wr(&mut e, 0, 0x832, 0x6_00ef), OK);
    assert_eq!(rd(&e, 0, 0x832), val(0x2_00ef));
    // TMICT stored; TMCCT of a running timer is time: unmodeled; 0 with TMICT 0.
    assert_eq!(wr(&mut e, 0, 0x838, 1000), OK);
    assert_eq!(rd(&e, 0, 0x838), val(1000));
    assert_eq!(rd(&e, 0, 0x839), None);
    assert_eq!(wr(&mut e, 0, 0x838, 0), OK);
    assert_eq!(rd(&e, 0, 0x839), val(0));
    // ICR: 64-bit, BUSY cleared (kvm_x2apic_icr_write).
    assert_eq!(wr(&mut e, 0, 0x830, 0x1_0000_10fe), OK);
    assert_eq!(rd(&e, 0, 0x830), val(0x1_0000_00fe));
    // SPIV software-disable masks every LVT.
    assert_eq!(wr(&mut e, 0, 0x80f, 0xff), OK);
    assert_eq!(rd(&e, 0, 0x835), val(0x1f7ff));
    assert_eq!(rd(&e, 0, 0x832), val(0x3_00ef));
    // While software-disabled, LVT writes are masked.
    assert_eq!(wr(&mut e, 0, 0x837, 0x33), OK);
    assert_eq!(rd(&e, 0, 0x837), val(0x1_0033));
}

#[test]
fn write_rules() {
    let mut e = x2_engine();
    // kvm_lapic_msr_write: bits 63:32 reserved except in the ICR.
    assert_eq!(wr(&mut e, 0, 0x80f, 1 << 32), GP);
    // X2APIC_ICR_RESERVED_BITS (6.18).
    for bad in [1u64 << 13, 1 << 16, 1 << 17, 1 << 20, 1 << 31] {
        assert_eq!(wr(&mut e, 0, 0x830, bad | 0xfe), GP, "ICR {bad:#x}");
    }
    // Read-only / reserved: ID, LVR, PPR, ARBPRI, LDR, DFR, ICR2, ISR, TMCCT.
    for i in [
        0x802, 0x803, 0x80a, 0x809, 0x80d, 0x80e, 0x831, 0x810, 0x839, 0x840,
    ] {
        assert_eq!(wr(&mut e, 0, i, 0), GP, "write {i:#x}");
    }
    // EOI any value, TPR any 32-bit value (pvm: no APICv/AVIC).
    assert_eq!(wr(&mut e, 0, 0x80b, 5), OK);
    assert_eq!(wr(&mut e, 0, 0x808, 0x1ff), OK);
    // ESR only 0; SELF_IPI only a vector; LVTCMCI needs MCG_CMCI_P.
    assert_eq!(wr(&mut e, 0, 0x828, 1), GP);
    assert_eq!(wr(&mut e, 0, 0x828, 0), OK);
    assert_eq!(wr(&mut e, 0, 0x83f, 0x100), GP);
    assert_eq!(wr(&mut e, 0, 0x83f, 0xff), OK);
    assert_eq!(wr(&mut e, 0, 0x82f, 0), GP);
    // On VMX, APICv decides nonzero EOI writes: unmodeled.
    let mut h = header("kvm_intel", false, 1 << 21);
    h.vm.irqchip = Some(Irqchip::Kernel);
    let mut ei = engine("kvm-6.18", Vendor::Intel, &h);
    assert_eq!(wr(&mut ei, 0, 0x1b, 0xfee0_0d00), OK);
    assert_eq!(wr(&mut ei, 0, 0x80b, 5), None);
    assert_eq!(wr(&mut ei, 0, 0x80b, 0), OK);
}

#[test]
fn self_init_resets_lapic_keeps_x2apic() {
    let mut e = x2_engine();
    assert_eq!(wr(&mut e, 1, 0x80f, 0x1ff), OK);
    assert_eq!(wr(&mut e, 1, 0x837, 0x33), OK);
    // INIT, shorthand self, edge: kvm_lapic_reset(init_event=true) keeps the
    // APIC base (x2APIC) and resets the registers.
    assert_eq!(wr(&mut e, 1, 0x830, 0x4_0500), OK);
    assert_eq!(rd(&e, 1, 0x1b), val(0xfee0_0c00));
    assert_eq!(rd(&e, 1, 0x80f), val(0xff));
    assert_eq!(rd(&e, 1, 0x837), val(0x1_0000));
    assert_eq!(rd(&e, 1, 0x838), val(0));
    assert_eq!(rd(&e, 1, 0x839), val(0));
    // A level-triggered de-assert is ignored by __apic_accept_irq.
    assert_eq!(wr(&mut e, 1, 0x80f, 0x1ff), OK);
    assert_eq!(wr(&mut e, 1, 0x830, 0x4_8500), OK);
    assert_eq!(rd(&e, 1, 0x80f), val(0x1ff));
}

#[test]
fn init_to_another_vcpu_is_unknown_until_seen() {
    let mut e = x2_engine();
    assert_eq!(wr(&mut e, 1, 0x80f, 0x1ff), OK);
    // vCPU 0 INITs vCPU 1 (physical, dest 1): when vCPU 1 processes it is not
    // in the trace, so what INIT changes is unknown (learned on next read).
    assert_eq!(wr(&mut e, 0, 0x830, 0x1_0000_4500), OK);
    assert_eq!(rd(&e, 1, 0x80f), None);
    // INIT keeps the APIC base (kvm_lapic_reset(init_event = true)), and
    // vCPU 1 is not the BSP: the same before and after it.
    assert_eq!(rd(&e, 1, 0x1b), val(0xfee0_0c00));
    assert_eq!(rd(&e, 1, 0x802), val(1));
    // vCPU 0 keeps its state.
    assert_eq!(rd(&e, 0, 0x1b), val(0xfee0_0d00));
    // The target-side Init event with registers read back applies it once.
    let after = ArchState {
        cr0: 0x6000_0010,
        apic_base: 0xfee0_0c00,
        mp_state: 2,
        ..ArchState::default()
    };
    e.apply(&Record {
        seq: 5,
        vcpu: 1,
        time_ns: 5,
        event: Event::Init {
            source: InitSource::Kernel,
            before: Box::default(),
            after: Box::new(after),
            decided_by: DecidedBy::Kernel,
        },
    });
    assert_eq!(rd(&e, 1, 0x1b), val(0xfee0_0c00));
    assert_eq!(rd(&e, 1, 0x80f), val(0xff));
}

#[test]
fn leaving_x2apic_forgets_registers() {
    let mut e = x2_engine();
    assert_eq!(wr(&mut e, 0, 0x80f, 0x1ff), OK);
    // x2APIC -> disabled -> xAPIC -> x2APIC (kvm_apic_set_base transitions).
    assert_eq!(wr(&mut e, 0, 0x1b, 0xfee0_0100), OK);
    assert_eq!(rd(&e, 0, 0x80f), GP);
    assert_eq!(wr(&mut e, 0, 0x1b, 0xfee0_0900), OK);
    assert_eq!(wr(&mut e, 0, 0x1b, 0xfee0_0d00), OK);
    assert_eq!(rd(&e, 0, 0x80f), None);
}

#[test]
fn kernel_init_from_a_capture() {
    let mut e = x2_engine();
    assert_eq!(wr(&mut e, 1, 0x80f, 0x1ff), OK);
    // kvm_apic_accept_irq INIT for vCPU 1 from vCPU 0, registers not seen.
    e.apply(&Record {
        seq: 9,
        vcpu: 1,
        time_ns: 9,
        event: Event::KernelInit {
            from: Some(0),
            known: Box::new(KnownState::UNKNOWN),
        },
    });
    assert_eq!(rd(&e, 1, 0x80f), None);
    assert_eq!(rd(&e, 1, 0x1b), val(0xfee0_0c00));
    assert_eq!(rd(&e, 0, 0x1b), val(0xfee0_0d00));
    // Later sender-side INIT IPIs are left to the KernelInit events.
    e.apply(&Record {
        seq: 10,
        vcpu: 0,
        time_ns: 10,
        event: Event::Ipi {
            dst: 1,
            vector: 0,
            mode: IpiMode::Init,
        },
    });
    assert_eq!(rd(&e, 0, 0x1b), val(0xfee0_0d00));
}

/// A capture that guessed which thread is which vCPU (perf import of a QEMU
/// whose threads carry no names) cannot derive the x2APIC ID or LDR from the
/// trace's vCPU number: they are learned from the first read of the ID, and a
/// thread tied to its vCPU by the VMM or the kernel makes them exact again.
#[test]
fn id_and_ldr_need_a_known_vcpu_id() {
    let mut h = header("kvm_pvm", true, 1 << 21);
    h.vm.irqchip = Some(Irqchip::Kernel);
    h.capture.mode = CaptureMode::Import;
    let mut e = engine("kvm-6.18", Vendor::Pvm, &h);
    let at = |vcpu: u32, event: Event| Record {
        seq: 0,
        vcpu,
        time_ns: 0,
        event,
    };
    let read = |index: u32, value: u64| Event::MsrRead {
        index,
        origin: Origin::Guest,
        outcome: MsrOutcome::Value(value),
        decided_by: DecidedBy::Kernel,
        capture: None,
    };
    // The base read shows x2APIC mode on both vCPUs.
    e.apply(&at(0, read(0x1b, 0xfee0_0d00)));
    e.apply(&at(1, read(0x1b, 0xfee0_0c00)));
    assert_eq!(rd(&e, 1, 0x80d), None, "LDR: vcpu_id unknown");
    assert_eq!(rd(&e, 1, 0x802), None, "ID: vcpu_id unknown");
    // The kernel says trace vCPU 1 is vcpu_id 0 (the guess was wrong).
    e.apply(&at(1, read(0x802, 0)));
    assert_eq!(rd(&e, 1, 0x80d), Some(MsrOutcome::Value(1)));
    // A thread named by the VMM's convention: its vCPU number is the vcpu_id.
    e.apply(&at(
        0,
        Event::VcpuThread {
            pid: 1,
            tid: 2,
            comm: "CPU 0/KVM".into(),
            identity: VcpuIdentity::ThreadName,
        },
    ));
    assert_eq!(rd(&e, 0, 0x802), Some(MsrOutcome::Value(0)));
    assert_eq!(rd(&e, 0, 0x80d), Some(MsrOutcome::Value(1)));
}

/// IA32_TSC_DEADLINE from the guest (`kvm_set_msr_common` /
/// `kvm_get_msr_common` → `kvm_set/get_lapic_tscdeadline_msr`).
#[test]
fn tsc_deadline_follows_the_timer_mode() {
    let mut h = header("kvm_pvm", true, (1 << 21) | (1 << 24));
    h.vm.irqchip = Some(Irqchip::Kernel);
    let mut e = engine("kvm-6.18", Vendor::Pvm, &h);
    assert_eq!(wr(&mut e, 0, 0x1b, 0xfee0_0d00), OK);
    // LVTT not known yet (a fresh x2APIC mode): learned.
    assert_eq!(rd(&e, 0, 0x6e0), None);
    // A write never fails.
    assert_eq!(wr(&mut e, 0, 0x6e0, 0x1234), OK);
    assert_eq!(wr(&mut e, 0, 0x80f, 0x1ff), OK);
    // One-shot: the MSR reads 0 whatever was written.
    assert_eq!(wr(&mut e, 0, 0x832, 0x42), OK);
    assert_eq!(wr(&mut e, 0, 0x6e0, 0x1234), OK);
    assert_eq!(rd(&e, 0, 0x6e0), val(0));
    // Entering TSC-deadline mode zeroes the deadline (apic_update_lvtt).
    assert_eq!(wr(&mut e, 0, 0x832, 0x4_0042), OK);
    assert_eq!(rd(&e, 0, 0x6e0), val(0));
    // A deadline armed: expiry (time) decides, learned.
    assert_eq!(wr(&mut e, 0, 0x6e0, 0x1234), OK);
    assert_eq!(rd(&e, 0, 0x6e0), None);
    assert_eq!(wr(&mut e, 0, 0x6e0, 0), OK);
    assert_eq!(rd(&e, 0, 0x6e0), val(0));
    // Leaving the mode zeroes it too.
    assert_eq!(wr(&mut e, 0, 0x6e0, 0x99), OK);
    assert_eq!(wr(&mut e, 0, 0x832, 0x1_0042), OK);
    assert_eq!(rd(&e, 0, 0x6e0), val(0));
    // APIC hardware-disabled: kvm_apic_present is false, 0.
    assert_eq!(wr(&mut e, 0, 0x1b, 0xfee0_0100), OK);
    assert_eq!(rd(&e, 0, 0x6e0), val(0));
}

/// A capture of another VMM traces `kvm_apic_accept_irq`: an xAPIC sender's
/// INIT `Ipi` (shorthand not in the event) is left to the targets'
/// `KernelInit`s, so a vCPU it did not reach keeps its state.
#[test]
fn foreign_capture_inits_only_the_kernel_init_targets() {
    let mut h = header("kvm_pvm", true, 1 << 21);
    h.vm.irqchip = Some(Irqchip::Kernel);
    h.capture.mode = CaptureMode::External;
    let mut e = engine("kvm-6.18", Vendor::Pvm, &h);
    let at = |seq: u64, vcpu: u32, event: Event| Record {
        seq,
        vcpu,
        time_ns: seq,
        event,
    };
    let base = |value: u64| Event::MsrRead {
        index: 0x1b,
        origin: Origin::Guest,
        outcome: MsrOutcome::Value(value),
        decided_by: DecidedBy::Kernel,
        capture: None,
    };
    e.apply(&at(1, 0, base(0xfee0_0900)));
    e.apply(&at(2, 1, base(0xfee0_0800)));
    // INIT all-but-self through the xAPIC ICR (MMIO): the sender's line...
    e.apply(&at(
        3,
        0,
        Event::Ipi {
            dst: 0,
            vector: 0,
            mode: IpiMode::Init,
        },
    ));
    assert_eq!(rd(&e, 0, 0x1b), val(0xfee0_0900));
    // ...then the one target's accept line.
    e.apply(&at(
        4,
        1,
        Event::KernelInit {
            from: Some(0),
            known: Box::new(KnownState::UNKNOWN),
        },
    ));
    assert_eq!(rd(&e, 0, 0x1b), val(0xfee0_0900));
    // The AP keeps its base through INIT; its LAPIC registers are unknown.
    assert_eq!(rd(&e, 1, 0x1b), val(0xfee0_0800));
}

/// The BSP INITs itself through the x2APIC ICR in a capture of QEMU (a unit
/// test suite's "INIT to BSP"): the BSP restarts in firmware, which resets the
/// machine; QEMU then sets the APIC base back to xAPIC with KVM_SET_SREGS.
/// INIT alone keeps x2APIC (`kvm_lapic_reset(init_event = true)`); the value
/// the guest reads next is the VMM's.
#[test]
fn bsp_self_init_then_the_vmm_reset() {
    let mut h = header("kvm_pvm", true, 1 << 21);
    h.vm.irqchip = Some(Irqchip::Kernel);
    h.capture.mode = CaptureMode::External;
    let mut e = engine("kvm-6.18", Vendor::Pvm, &h);
    e.apply(&Record {
        seq: 1,
        vcpu: 0,
        time_ns: 1,
        event: Event::MsrRead {
            index: 0x1b,
            origin: Origin::Guest,
            outcome: MsrOutcome::Value(0xfee0_0900),
            decided_by: DecidedBy::Kernel,
            capture: None,
        },
    });
    assert_eq!(wr(&mut e, 0, 0x1b, 0xfee0_0d00), OK);
    e.apply(&Record {
        seq: 2,
        vcpu: 0,
        time_ns: 2,
        event: Event::KernelInit {
            from: Some(0),
            known: Box::new(KnownState::UNKNOWN),
        },
    });
    // The ICR write's own kvm_msr line follows the accept line: the INIT of
    // the BSP already made the machine state unknown (unmodeled, not wrong).
    assert_eq!(wr(&mut e, 0, 0x830, 0x4_0500), None);
    // The firmware runs, and the VMM's reset is not predicted from the INIT:
    // the APIC base is unknown...
    assert_eq!(rd(&e, 0, 0x1b), None);
    // ...and the tapped KVM_SET_SREGS names it.
    e.apply(&Record {
        seq: 3,
        vcpu: 0,
        time_ns: 3,
        event: Event::VmmState {
            set: Box::new(VmmSet::Sregs {
                apic_base: 0xfee0_0900,
                cr0: 0x6000_0010,
                cr4: 0,
                efer: 0,
                cs: Segment::default(),
                sregs2: false,
            }),
            result: 0,
        },
    });
    assert_eq!(rd(&e, 0, 0x1b), val(0xfee0_0900));
    assert_eq!(rd(&e, 0, 0x802), GP);
}

/// Fold a read with the value the kernel returned (it teaches what the model
/// left unmodeled).
fn rd_seen(e: &mut Engine, vcpu: u32, index: u32, value: u64) -> Option<MsrOutcome> {
    let p = rd(e, vcpu, index);
    e.apply(&Record {
        seq: 2,
        vcpu,
        time_ns: 2,
        event: Event::MsrRead {
            index,
            origin: Origin::Guest,
            outcome: MsrOutcome::Value(value),
            decided_by: DecidedBy::Kernel,
            capture: None,
        },
    });
    p
}

/// vCPU 1 in x2APIC mode with SPIV 0x1ff and the registers an exact
/// self-INIT (`kvm_lapic_reset(init_event=true)`) leaves, then INITed by
/// vCPU 0 through the ICR (physical, dest 1).
fn init_in_flight() -> Engine {
    let mut e = x2_engine();
    assert_eq!(wr(&mut e, 1, 0x830, 0x4_0500), OK);
    assert_eq!(wr(&mut e, 1, 0x80f, 0x1ff), OK);
    assert_eq!(wr(&mut e, 0, 0x830, 0x1_0000_4500), OK);
    e
}

/// kvm_apic_accept_events runs on the target when it next enters the guest,
/// which no event shows: registers INIT leaves as they were are known either
/// way; the others are settled by the first read only the INIT state
/// (kvm_lapic_reset) explains.
#[test]
fn init_of_another_vcpu_settled_by_a_read() {
    let mut e = init_in_flight();
    // LVT1, TMICT, TDCR, ICR were already the INIT values: known either way.
    assert_eq!(rd(&e, 1, 0x836), val(0x1_0000));
    assert_eq!(rd(&e, 1, 0x838), val(0));
    assert_eq!(rd(&e, 1, 0x83e), val(0));
    // SPIV 0x1ff before, 0xff after: not predicted.
    assert_eq!(rd(&e, 1, 0x80f), None);
    // A read of the old value: not processed yet, still in flight.
    assert_eq!(rd_seen(&mut e, 1, 0x80f, 0x1ff), None);
    assert_eq!(rd(&e, 1, 0x80f), None);
    // The INIT state's value: processed; every register is kvm_lapic_reset's.
    assert_eq!(rd_seen(&mut e, 1, 0x80f, 0xff), None);
    assert_eq!(rd(&e, 1, 0x80f), val(0xff));
    assert_eq!(rd(&e, 1, 0x835), val(0x1_0000));
    assert_eq!(rd(&e, 1, 0x828), val(0));
    // The APIC base and the sender are untouched.
    assert_eq!(rd(&e, 1, 0x1b), val(0xfee0_0c00));
    assert_eq!(rd(&e, 0, 0x1b), val(0xfee0_0d00));
}

/// A write of the target while the INIT is in flight may come before or after
/// it: the LAPIC registers are unknown (ESR aside) until taught.
#[test]
fn write_of_the_target_with_an_init_in_flight() {
    let mut e = init_in_flight();
    assert_eq!(wr(&mut e, 1, 0x808, 0x20), OK);
    assert_eq!(rd(&e, 1, 0x836), None);
    assert_eq!(rd(&e, 1, 0x828), val(0));
    // No INIT is pending any more: a read teaches as usual.
    assert_eq!(rd_seen(&mut e, 1, 0x80f, 0xff), None);
    assert_eq!(rd(&e, 1, 0x80f), val(0xff));
    assert_eq!(rd(&e, 1, 0x836), None);
}

/// ESR is written only by kvm_lapic_reset (0) and KVM_SET_LAPIC: a guest
/// write stores nothing (kvm_lapic_reg_write APIC_ESR), in xAPIC mode too,
/// so it stays known across an xAPIC stretch.
#[test]
fn esr_is_zero_from_reset() {
    let mut e = x2_engine();
    // x2_engine starts without a Reset event: ESR not known.
    assert_eq!(rd(&e, 0, 0x828), None);
    e.apply(&Record {
        seq: 3,
        vcpu: 0,
        time_ns: 3,
        event: Event::Reset {
            state: Box::new(ArchState {
                cr0: 0x6000_0010,
                apic_base: 0xfee0_0900,
                ..ArchState::default()
            }),
            decided_by: DecidedBy::Kernel,
        },
    });
    assert_eq!(wr(&mut e, 0, 0x1b, 0xfee0_0d00), OK);
    assert_eq!(rd(&e, 0, 0x828), val(0));
    assert_eq!(rd(&e, 0, 0x80f), None);
    // x2APIC -> disabled -> xAPIC (MMIO unseen) -> x2APIC.
    assert_eq!(wr(&mut e, 0, 0x1b, 0xfee0_0100), OK);
    assert_eq!(wr(&mut e, 0, 0x1b, 0xfee0_0900), OK);
    assert_eq!(wr(&mut e, 0, 0x1b, 0xfee0_0d00), OK);
    assert_eq!(rd(&e, 0, 0x828), val(0));
    // x2APIC ESR takes only 0 (kvm_lapic_reg_write).
    assert_eq!(wr(&mut e, 0, 0x828, 1), GP);
    assert_eq!(wr(&mut e, 0, 0x828, 0), OK);
    assert_eq!(rd(&e, 0, 0x828), val(0));

    // With APICv (VMX) the hardware stores an xAPIC ESR write in the page
    // before the trap-like APIC-write exit: unknown after an xAPIC stretch.
    let mut h = header("kvm_intel", false, 1 << 21);
    h.vm.irqchip = Some(Irqchip::Kernel);
    let mut e = engine("kvm-6.18", Vendor::Intel, &h);
    e.apply(&Record {
        seq: 3,
        vcpu: 0,
        time_ns: 3,
        event: Event::Reset {
            state: Box::new(ArchState {
                cr0: 0x6000_0010,
                apic_base: 0xfee0_0900,
                ..ArchState::default()
            }),
            decided_by: DecidedBy::Kernel,
        },
    });
    assert_eq!(wr(&mut e, 0, 0x1b, 0xfee0_0d00), OK);
    assert_eq!(rd(&e, 0, 0x828), None);
}

/// LVTPC: kvm_apic_local_deliver masks it after a PMI for an Intel-compatible
/// guest; with KVM's PMU off (supported CPUID leaf 0xA zero, `enable_pmu=0`)
/// no counter can overflow, so no PMI masks it.
#[test]
fn lvtpc_without_a_pmu() {
    // An AMD guest: never masked by a PMI (x2_engine).
    let mut e = x2_engine();
    assert_eq!(wr(&mut e, 0, 0x80f, 0x1ff), OK);
    assert_eq!(wr(&mut e, 0, 0x834, 0x4fe), OK);
    assert_eq!(rd(&e, 0, 0x834), val(0x4fe));

    // A GenuineIntel guest.
    let mut h = header("kvm_pvm", false, 1 << 21);
    h.vm.irqchip = Some(Irqchip::Kernel);
    let intel = |h: &TraceHeader| {
        let mut e = engine("kvm-6.18", Vendor::Pvm, h);
        assert_eq!(wr(&mut e, 0, 0x1b, 0xfee0_0d00), OK);
        assert_eq!(wr(&mut e, 0, 0x80f, 0x1ff), OK);
        assert_eq!(wr(&mut e, 0, 0x834, 0x4fe), OK);
        e
    };
    // KVM's supported CPUID not known: a PMI may have masked it.
    assert_eq!(rd(&intel(&h), 0, 0x834), None);
    let l0 = h.vm.cpuid[0];
    h.host.supported_cpuid = vec![
        l0,
        CpuidEntry {
            function: 0xa,
            ..Default::default()
        },
    ];
    // LVT_MASK | APIC_MODE_MASK (apic_lvt_mask[LVTPC]).
    assert_eq!(rd(&intel(&h), 0, 0x834), val(0x4fe));
}

/// Without an in-kernel LAPIC an `Ipi` is the VMM's own (user-space LAPIC):
/// its targets' INITs come as `Init` events, so the IPI itself changes nothing
/// (kvm_apic_ipi fires only in kvm_apic_send_ipi).
#[test]
fn vmm_ipi_without_an_in_kernel_lapic() {
    let h = header("kvm_pvm", false, 1 << 21);
    let mut e = engine("kvm-6.18", Vendor::Pvm, &h);
    assert_eq!(rd(&e, 0, 0x1b), val(0xfee0_0900));
    e.apply(&Record {
        seq: 1,
        vcpu: 0,
        time_ns: 1,
        event: Event::Ipi {
            dst: 1,
            vector: 0,
            mode: IpiMode::Init,
        },
    });
    assert_eq!(rd(&e, 0, 0x1b), val(0xfee0_0900));
    assert_eq!(rd(&e, 1, 0x1b), val(0xfee0_0800));
}

/// apic_get_tmcct of a one-shot timer: once a read shows 0 (the target
/// expiration passed; apic_timer_fn does not restart a one-shot timer) TMCCT
/// stays 0 until TMICT or TDCR is written; an LVTT write restarts nothing
/// (apic_update_lvtt). A periodic timer reloads: its 0 is passing.
#[test]
fn tmcct_of_an_expired_one_shot_timer() {
    let mut e = x2_engine();
    assert_eq!(wr(&mut e, 0, 0x80f, 0x1ff), OK);
    // One-shot, vector 0xee; TMICT 0x999999 starts it.
    assert_eq!(wr(&mut e, 0, 0x832, 0xee), OK);
    assert_eq!(wr(&mut e, 0, 0x838, 0x99_9999), OK);
    assert_eq!(rd_seen(&mut e, 0, 0x839, 0x50_0000), None);
    assert_eq!(rd(&e, 0, 0x839), None);
    assert_eq!(rd_seen(&mut e, 0, 0x839, 0), None);
    assert_eq!(rd(&e, 0, 0x839), val(0));
    // A TMICT write restarts it.
    assert_eq!(wr(&mut e, 0, 0x838, 0x99_9999), OK);
    assert_eq!(rd(&e, 0, 0x839), None);
    assert_eq!(rd_seen(&mut e, 0, 0x839, 0), None);
    assert_eq!(rd(&e, 0, 0x839), val(0));
    // One-shot -> periodic: the expired timer stays stopped.
    assert_eq!(wr(&mut e, 0, 0x832, 0x2_00ee), OK);
    assert_eq!(rd(&e, 0, 0x839), val(0));
    // A TDCR write restarts it with a new target.
    assert_eq!(wr(&mut e, 0, 0x83e, 0x3), OK);
    assert_eq!(rd(&e, 0, 0x839), None);
    // Periodic: a 0 read is passing.
    assert_eq!(rd_seen(&mut e, 0, 0x839, 0), None);
    assert_eq!(rd(&e, 0, 0x839), None);
}

/// kvm_get_lapic_tscdeadline_msr returns lapic_timer.tscdeadline in
/// TSC-deadline mode and 0 otherwise: while the deadline is known to be 0
/// (a read showed it, or a 0 write) the read is 0 whatever LVTT holds, also
/// when an xAPIC stretch left LVTT unknown.
#[test]
fn tsc_deadline_zero_with_lvtt_unknown() {
    let mut h = header("kvm_pvm", true, 1 << 21 | 1 << 24);
    h.vm.irqchip = Some(Irqchip::Kernel);
    let mut e = engine("kvm-6.18", Vendor::Pvm, &h);
    assert_eq!(wr(&mut e, 0, 0x1b, 0xfee0_0d00), OK);
    assert_eq!(rd(&e, 0, 0x832), None);
    assert_eq!(rd_seen(&mut e, 0, 0x6e0, 0), None);
    assert_eq!(rd(&e, 0, 0x6e0), val(0));
    // A nonzero write whose mode is unknown: stored or ignored.
    assert_eq!(wr(&mut e, 0, 0x6e0, 0x1234), OK);
    assert_eq!(rd(&e, 0, 0x6e0), None);
}

/// KVM_SET_LAPIC copies the whole page (kvm_apic_set_state): ESR is the
/// page's, also in xAPIC mode, where the other registers stay unknown.
#[test]
fn set_lapic_sets_esr_in_either_mode() {
    let mut h = header("kvm_pvm", true, 1 << 21);
    h.vm.irqchip = Some(Irqchip::Kernel);
    let mut e = engine("kvm-6.18", Vendor::Pvm, &h);
    let page = LapicPage {
        esr: 0x40,
        svr: 0x1ff,
        ..LapicPage::default()
    };
    e.apply(&Record {
        seq: 1,
        vcpu: 0,
        time_ns: 1,
        event: Event::VmmState {
            set: Box::new(VmmSet::Lapic(page)),
            result: 0,
        },
    });
    assert_eq!(wr(&mut e, 0, 0x1b, 0xfee0_0d00), OK);
    assert_eq!(rd(&e, 0, 0x828), val(0x40));
    assert_eq!(rd(&e, 0, 0x80f), None);
}

/// Events a capture lost (tracefs overrun) may hold x2APIC writes: the
/// registers are unknown until taught again (ESR and the version aside).
#[test]
fn lost_events_forget_the_registers() {
    let mut e = x2_engine();
    assert_eq!(wr(&mut e, 0, 0x80f, 0x1ff), OK);
    assert_eq!(wr(&mut e, 0, 0x832, 0xee), OK);
    assert_eq!(wr(&mut e, 0, 0x838, 0x1000), OK);
    assert_eq!(rd_seen(&mut e, 0, 0x839, 0), None);
    assert_eq!(rd(&e, 0, 0x839), val(0));
    e.apply(&Record {
        seq: 4,
        vcpu: 0,
        time_ns: 4,
        event: Event::Lost {
            source: LostSource::Tracefs,
            count: 3,
        },
    });
    assert_eq!(rd(&e, 0, 0x80f), None);
    assert_eq!(rd(&e, 0, 0x839), None);
    assert_eq!(rd(&e, 0, 0x803), val(0x50014));
}

/// INIT to all including self (shorthand 2, kvm_apic_match_dest): the sender
/// resets at once (it processes the INIT before its next event), the other
/// x2APIC vCPU has it in flight; a logical destination (x2APIC cluster 0,
/// bit 1) reaches vCPU 1 only.
#[test]
fn init_all_including_self_and_logical() {
    let mut e = x2_engine();
    for vcpu in [0, 1] {
        assert_eq!(wr(&mut e, vcpu, 0x80f, 0x1ff), OK);
        assert_eq!(wr(&mut e, vcpu, 0x832, 0x1_00ee), OK);
        assert_eq!(wr(&mut e, vcpu, 0x838, 0), OK);
    }
    assert_eq!(wr(&mut e, 0, 0x830, 0x8_4500), OK);
    assert_eq!(rd(&e, 0, 0x80f), val(0xff));
    assert_eq!(rd(&e, 1, 0x80f), None);
    assert_eq!(rd(&e, 1, 0x838), val(0));

    let mut e = x2_engine();
    for vcpu in [0, 1] {
        assert_eq!(wr(&mut e, vcpu, 0x80f, 0x1ff), OK);
    }
    // Logical (bit 11), dest cluster 0 bitmap 0b10 = x2APIC ID 1.
    assert_eq!(wr(&mut e, 0, 0x830, (2u64 << 32) | 0x4d00), OK);
    assert_eq!(rd(&e, 0, 0x80f), val(0x1ff));
    assert_eq!(rd(&e, 1, 0x80f), None);
}
