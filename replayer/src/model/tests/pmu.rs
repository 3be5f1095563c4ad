//! PMU and speculation-control command MSRs (issue 12 item 3); each case cites
//! the kernel function it follows.

use kvmtrace_format::*;

use super::*;
use crate::policy::Vendor;

/// KVM's supported CPUID of an Intel host with `enable_pmu=0` (leaf 0xA zero),
/// guest CPUID with SPEC_CTRL and FLUSH_L1D, no leaf 0xA.
fn no_pmu_header() -> TraceHeader {
    let mut h = header("kvm_intel", false, 0);
    let l0 = h.vm.cpuid[0];
    h.host.supported_cpuid = vec![
        l0,
        CpuidEntry {
            function: 0xa,
            ..Default::default()
        },
        CpuidEntry {
            function: 7,
            edx: (1 << 26) | (1 << 28),
            ..Default::default()
        },
        CpuidEntry {
            function: 0x8000_0008,
            ..Default::default()
        },
        CpuidEntry {
            function: 0x8000_0021,
            ..Default::default()
        },
    ];
    h.vm.cpuid.push(CpuidEntry {
        function: 7,
        edx: (1 << 26) | (1 << 28),
        ..Default::default()
    });
    h
}

#[test]
fn no_pmu_counters() {
    let h = no_pmu_header();
    for vendor in [Vendor::Intel, Vendor::Pvm] {
        let e = engine("kvm-6.18", vendor, &h);
        // x86.c legacy P6/K7 cases: read 0, any write dropped.
        for i in [0xc1, 0xc2, 0x186, 0x187, 0xc001_0000, 0xc001_0007] {
            assert_eq!(
                e.msr_read(0, i, G).outcome,
                val(0),
                "{vendor:?} read {i:#x}"
            );
            assert_eq!(
                e.msr_write(0, i, 0x1234_5678, G).outcome,
                OK,
                "{vendor:?} write {i:#x}"
            );
        }
        // No counter and no legacy case: r = 2 (#GP without deflection).
        for i in [
            0xc3,
            0x188,
            0x309,
            0x38d,
            0x38f,
            0x4c1,
            0xc001_0200,
            0xc000_0300,
        ] {
            assert_eq!(e.msr_read(0, i, G).outcome, GP, "{vendor:?} read {i:#x}");
        }
    }
}

#[test]
fn cmd_msrs() {
    let h = no_pmu_header();
    let e = engine("kvm-6.18", Vendor::Intel, &h);
    // Write-only: no get case.
    assert_eq!(e.msr_read(0, 0x49, G).outcome, GP);
    assert_eq!(e.msr_read(0, 0x10b, G).outcome, GP);
    // guest_has_pred_cmd_msr (SPEC_CTRL) / FLUSH_L1D: 0 and the one bit.
    assert_eq!(e.msr_write(0, 0x49, 0, G).outcome, OK);
    assert_eq!(e.msr_write(0, 0x49, 1, G).outcome, OK);
    assert_eq!(e.msr_write(0, 0x10b, 1, G).outcome, OK);
    for b in 1..64 {
        assert_eq!(
            e.msr_write(0, 0x10b, 1 << b, G).outcome,
            GP,
            "FLUSH_CMD bit {b}"
        );
    }
    assert_eq!(e.msr_write(0, 0x49, 2, G).outcome, GP);
    // Without the features: #GP.
    let h = header("kvm_intel", false, 0);
    let e = engine("kvm-6.18", Vendor::Intel, &h);
    assert_eq!(e.msr_write(0, 0x49, 0, G).outcome, GP);
    assert_eq!(e.msr_write(0, 0x10b, 0, G).outcome, GP);
    assert_eq!(e.msr_read(0, 0x48, G).outcome, GP);
}

#[test]
fn unseen_cpuid_is_learnable() {
    // An import lists only the CPUID leaves the guest executed: no leaf 7, so
    // the PRED_CMD check rests on an unseen bit (unmodeled, rule UNSEEN_CPUID).
    let mut h = header("kvm_intel", false, 0);
    h.capture.mode = CaptureMode::Import;
    h.vm.cpuid.clear();
    let e = engine("kvm-6.18", Vendor::Intel, &h);
    let p = e.msr_write(0, 0x49, 1, G);
    assert_eq!(p.outcome, None);
    assert_eq!(p.rule, crate::model::UNSEEN_CPUID);
}

#[test]
fn pv_msrs() {
    // Guest CPUID with the KVM leaf: ASYNC_PF, STEAL_TIME, PV_EOI,
    // ASYNC_PF_INT, CLOCKSOURCE(2) (kvm_get/set_msr_common).
    let mut h = header("kvm_pvm", false, 0);
    h.vm.irqchip = Some(Irqchip::Kernel);
    h.vm.cpuid.push(CpuidEntry {
        function: 0x4000_0000,
        ebx: 0x4b4d_564b,
        ecx: 0x564b_4d56,
        edx: 0x4d,
        ..Default::default()
    });
    h.vm.cpuid.push(CpuidEntry {
        function: 0x4000_0001,
        eax: 0x1007efb,
        ..Default::default()
    });
    let mut e = engine("kvm-6.18", Vendor::Pvm, &h);
    // Values at vCPU creation.
    for i in [
        0x4b56_4d02,
        0x4b56_4d03,
        0x4b56_4d04,
        0x4b56_4d06,
        0x3b,
        0x11,
    ] {
        assert_eq!(e.msr_read(0, i, G).outcome, val(0), "{i:#x}");
    }
    // Reserved bits: async PF 5:4, steal 5:2, PV EOI alignment, ASYNC_PF_INT 63:8.
    assert_eq!(e.msr_write(0, 0x4b56_4d02, 0x10, G).outcome, GP);
    assert_eq!(e.msr_write(0, 0x4b56_4d03, 0x4, G).outcome, GP);
    assert_eq!(e.msr_write(0, 0x4b56_4d04, 0x2, G).outcome, GP);
    assert_eq!(e.msr_write(0, 0x4b56_4d06, 0x100, G).outcome, GP);
    // Enabling at a guest address depends on memslots: unmodeled.
    assert_eq!(e.msr_write(0, 0x4b56_4d04, 0x1001, G).outcome, None);
    // Stored values read back; the wall clock is VM-wide.
    write_ok(&mut e, 0x4b56_4d06, 0xec, G);
    assert_eq!(e.msr_read(0, 0x4b56_4d06, G).outcome, val(0xec));
    write_ok(&mut e, 0x4b56_4d00, 0x5000, G);
    assert_eq!(e.msr_read(1, 0x11, G).outcome, val(0x5000));
}

/// `kvm_apic_local_deliver` masks LVTPC after a PMI for an Intel-compatible
/// guest (6.10+): since fd706c9b1674 anything but AMD/Hygon, so an unknown
/// vendor may have LVTPC masked unseen, an AMD one may not.
#[test]
fn pmi_lvtpc_mask_by_guest_vendor() {
    for (ebx, edx, ecx, may) in [
        (0x6874_7541, 0x6974_6e65, 0x444d_4163, false), // AuthenticAMD
        (0x4b4d_564b, 0x0000_004d, 0x564b_4d56, true),  // KVMKVMKVM
        (0x756e_6547, 0x4965_6e69, 0x6c65_746e, true),  // GenuineIntel
    ] {
        let mut h = super::header("kvm_intel", false, 0);
        h.vm.cpuid[0].ebx = ebx;
        h.vm.cpuid[0].edx = edx;
        h.vm.cpuid[0].ecx = ecx;
        let e = super::engine("kvm-6.18", crate::policy::Vendor::Intel, &h);
        assert_eq!(e.pmi_may_mask_lvtpc(e.vcpu_state(0)), may, "{ebx:#x}");
    }
}
