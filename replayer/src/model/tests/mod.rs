//! Table-driven tests of the model, one table per behaviour; every case cites
//! its SEMANTICS.md section. Shared helpers here; §3 and §5 in `msr_tables`.

use kvmtrace_format::*;

use crate::engine::Engine;
use crate::policy::{Policy, Vendor};
use crate::quirks;

pub(crate) fn cpuid(vendor_amd: bool, ecx1: u32) -> Vec<CpuidEntry> {
    let (b, d, c) = if vendor_amd {
        (0x6874_7541, 0x6974_6e65, 0x444d_4163)
    } else {
        (0x756e_6547, 0x4965_6e69, 0x6c65_746e)
    };
    vec![
        CpuidEntry {
            function: 0,
            ebx: b,
            edx: d,
            ecx: c,
            eax: 0xd,
            ..Default::default()
        },
        CpuidEntry {
            function: 1,
            eax: 0xa00f11,
            ecx: ecx1,
            ..Default::default()
        },
    ]
}

pub(crate) fn header(module: &str, amd_cpuid: bool, ecx1: u32) -> TraceHeader {
    let mut h = TraceHeader::default();
    h.host.kernel_release = "6.18.44".into();
    h.host.kvm_module = module.into();
    h.vm.vcpus = 2;
    h.vm.cpuid = cpuid(amd_cpuid, ecx1);
    h.vm.irqchip = Some(Irqchip::None);
    h
}

pub(crate) fn engine(preset: &str, vendor: Vendor, h: &TraceHeader) -> Engine {
    Engine::new(Policy::preset(preset, vendor).unwrap(), h)
}

pub(crate) fn rec(seq: u64, event: Event) -> Record {
    Record {
        seq,
        vcpu: 0,
        time_ns: seq,
        event,
    }
}

pub(crate) fn write_ok(e: &mut Engine, index: u32, value: u64, origin: Origin) {
    let p = e.msr_write(0, index, value, origin);
    assert_eq!(
        p.outcome,
        Some(MsrOutcome::Ok),
        "setup write {index:#x}={value:#x}"
    );
    e.apply(&rec(
        0,
        Event::MsrWrite {
            index,
            value,
            origin,
            outcome: MsrOutcome::Ok,
            decided_by: DecidedBy::Vmm,
            capture: None,
        },
    ));
}

pub(crate) const GP: Option<MsrOutcome> = Some(MsrOutcome::InjectGp);
pub(crate) const OK: Option<MsrOutcome> = Some(MsrOutcome::Ok);
pub(crate) const G: Origin = Origin::Guest;
pub(crate) const H: Origin = Origin::Host;
pub(crate) fn val(x: u64) -> Option<MsrOutcome> {
    Some(MsrOutcome::Value(x))
}
pub(crate) fn ux(reason: MsrExitReason) -> Option<MsrOutcome> {
    Some(MsrOutcome::UserExit {
        reason,
        answer: UserAnswer::Gp,
    })
}

pub(crate) struct Case {
    pub(crate) name: &'static str,
    pub(crate) preset: &'static str,
    pub(crate) vendor: Vendor,
    /// (index, value, origin) writes done first (each must succeed).
    pub(crate) setup: &'static [(u32, u64, Origin)],
    pub(crate) user_space_msr: u32,
    pub(crate) index: u32,
    /// `None`: a read.
    pub(crate) write: Option<u64>,
    pub(crate) origin: Origin,
    pub(crate) expect: Option<MsrOutcome>,
}

pub(crate) fn run(cases: &[Case], h: &TraceHeader) {
    let mut bad = Vec::new();
    for c in cases {
        let mut e = engine(c.preset, c.vendor, h);
        e.apply(&rec(
            0,
            Event::UserSpaceMsr {
                mask: c.user_space_msr,
            },
        ));
        for &(i, v, o) in c.setup {
            write_ok(&mut e, i, v, o);
        }
        let p = match c.write {
            Some(v) => e.msr_write(0, c.index, v, c.origin),
            None => e.msr_read(0, c.index, c.origin),
        };
        if p.outcome != c.expect {
            bad.push(format!(
                "{}: expected {:?}, got {:?} ({})",
                c.name, c.expect, p.outcome, p.rule
            ));
        }
    }
    assert!(bad.is_empty(), "\n{}", bad.join("\n"));
}

macro_rules! case {
    ($name:literal, $preset:literal, $vendor:ident, $setup:expr, $mask:expr, $idx:expr, $w:expr, $o:expr, $exp:expr) => {
        Case {
            name: $name,
            preset: $preset,
            vendor: Vendor::$vendor,
            setup: $setup,
            user_space_msr: $mask,
            index: $idx,
            write: $w,
            origin: $o,
            expect: $exp,
        }
    };
}

// After `case!`: macro_rules are textually scoped.
mod host_fidelity;
mod lapic;
mod msr_suite;
mod msr_tables;
mod pmu;

#[test]
fn x2apic_section4() {
    let mut h = header("kvm_pvm", true, 0);
    // A deny-all filter: x2APIC MSRs are still not filtered (§4).
    h.vm.msr_filter = Some(MsrFilter {
        default_deny: true,
        ranges: vec![MsrFilterRange {
            flags: 3,
            base: 0,
            nmsrs: 0x2000,
            bitmap: vec![0; 0x400],
        }],
    });
    let (inval, filter) = (MsrExitReason::Inval, MsrExitReason::Filter);
    run(
        &[
            case!(
                "§4 RDMSR 0x802 x2APIC off, INVAL -> exit",
                "kvm-6.18",
                Pvm,
                &[],
                1 | 4,
                0x802,
                None,
                G,
                ux(inval)
            ),
            case!(
                "§4 WRMSR 0x808 x2APIC off, INVAL -> exit",
                "kvm-5.10",
                Pvm,
                &[],
                1,
                0x808,
                Some(0),
                G,
                ux(inval)
            ),
            case!(
                "§4 RDMSR 0x802 FILTER only -> #GP",
                "kvm-6.18",
                Pvm,
                &[],
                4,
                0x802,
                None,
                G,
                GP
            ),
            case!(
                "§4 filtered 0x10 -> FILTER exit",
                "kvm-6.18",
                Pvm,
                &[],
                4,
                0x10,
                None,
                G,
                ux(filter)
            ),
            case!(
                "§4 filtered 0x10 without mask -> #GP",
                "kvm-6.18",
                Pvm,
                &[],
                0,
                0x10,
                None,
                G,
                GP
            ),
            case!(
                "§4 host access never filtered (pvm RESET MISC_ENABLE 0x1)",
                "kvm-6.18",
                Pvm,
                &[],
                4,
                0x1a0,
                None,
                H,
                val(0x1)
            ),
            case!(
                "§4 EFER outside range filtered",
                "kvm-6.18",
                Pvm,
                &[],
                4,
                0xc000_0080,
                None,
                G,
                ux(filter)
            ),
        ],
        &h,
    );
    // deflect_unfilterable = false (unmerged v1 patch): no deflection of 0x802.
    let mut p = Policy::preset("kvm-6.18", Vendor::Pvm).unwrap();
    p.switches.deflect_unfilterable = false;
    let mut e = Engine::new(p, &h);
    e.apply(&rec(0, Event::UserSpaceMsr { mask: 7 }));
    assert_eq!(e.msr_read(0, 0x802, G).outcome, GP);
    assert_eq!(e.msr_read(0, 0x10, G).outcome, ux(filter));
    // x2APIC enabled through 0x1b with an in-kernel irqchip: 0x802 reads the id.
    let mut h = header("kvm_pvm", true, 1 << 21);
    h.vm.irqchip = Some(Irqchip::Kernel);
    let mut e = engine("kvm-6.18", Vendor::Pvm, &h);
    write_ok(&mut e, 0x1b, 0xfee0_0d00, G);
    assert_eq!(e.msr_read(0, 0x802, G).outcome, val(0));
    // x2APIC -> xAPIC is an invalid guest transition (§4).
    assert_eq!(e.msr_write(0, 0x1b, 0xfee0_0900, G).outcome, GP);
}

#[test]
fn mwait_section1() {
    use MwaitOutcome::*;
    // (name, preset, disabled quirks, CPUID.1:ECX, MISC_ENABLE write, expect)
    type MwaitCase = (
        &'static str,
        &'static str,
        u64,
        u32,
        Option<u64>,
        MwaitOutcome,
    );
    let cases: &[MwaitCase] = &[
        (
            "§1 5.19 always NOP",
            "kvm-5.19",
            quirks::MWAIT_NEVER_UD_FAULTS,
            0,
            None,
            Nop,
        ),
        ("§1 6.0 quirk enabled NOP", "kvm-6.0", 0, 0, None, Nop),
        (
            "§1 6.0 quirk off, no MWAIT -> #UD",
            "kvm-6.0",
            quirks::MWAIT_NEVER_UD_FAULTS,
            0,
            None,
            InjectUd,
        ),
        (
            "§1 6.0 quirk off, MWAIT -> NOP",
            "kvm-6.0",
            quirks::MWAIT_NEVER_UD_FAULTS,
            1 << 3,
            None,
            Nop,
        ),
        (
            "§1 6.18 both quirks off, CPUID MWAIT but MISC_ENABLE[18]=0 -> #UD",
            "kvm-6.18",
            quirks::MWAIT_NEVER_UD_FAULTS | quirks::MISC_ENABLE_NO_MWAIT,
            1 << 3 | 1,
            None,
            InjectUd,
        ),
        (
            "§1 6.18 both quirks off, MISC_ENABLE[18] set -> NOP",
            "kvm-6.18",
            quirks::MWAIT_NEVER_UD_FAULTS | quirks::MISC_ENABLE_NO_MWAIT,
            1,
            Some(0x1800 | 1 << 18),
            Nop,
        ),
    ];
    let mut bad = Vec::new();
    for &(name, preset, dq, ecx, me, want) in cases {
        let mut h = header("kvm_intel", false, ecx);
        h.vm.disabled_quirks = dq;
        let mut e = engine(preset, Vendor::Intel, &h);
        if let Some(v) = me {
            write_ok(&mut e, 0x1a0, v, G);
        }
        let got = (e.monitor(0).outcome, e.mwait(0).outcome);
        if got != (Some(want), Some(want)) {
            bad.push(format!("{name}: expected {want:?}, got {got:?}"));
        }
    }
    assert!(bad.is_empty(), "\n{}", bad.join("\n"));
    // §1 MISC_ENABLE: bit 18 toggled without SSE3 fails with the quirk disabled;
    // 6.0+ guest may not toggle bits 11/12.
    let mut h = header("kvm_intel", false, 0);
    h.vm.disabled_quirks = quirks::MISC_ENABLE_NO_MWAIT;
    run(
        &[
            case!(
                "§1 bit 18 without SSE3 #GP",
                "kvm-6.18",
                Intel,
                &[],
                0,
                0x1a0,
                Some(0x1800 | 1 << 18),
                G,
                GP
            ),
            case!(
                "§1 bit 18 without SSE3 host refused",
                "kvm-6.18",
                Intel,
                &[],
                0,
                0x1a0,
                Some(0x1800 | 1 << 18),
                H,
                GP
            ),
            case!(
                "§1 guest clears bit 11 6.0 #GP",
                "kvm-6.0",
                Intel,
                &[],
                0,
                0x1a0,
                Some(0x1000),
                G,
                GP
            ),
            case!(
                "§1 guest bit 11 5.19 ok",
                "kvm-5.19",
                Intel,
                &[],
                0,
                0x1a0,
                Some(0x800),
                G,
                OK
            ),
            case!(
                "§1 RESET MISC_ENABLE 5.19",
                "kvm-5.19",
                Intel,
                &[],
                0,
                0x1a0,
                None,
                G,
                val(0)
            ),
            case!(
                "§1 RESET MISC_ENABLE 6.0",
                "kvm-6.0",
                Intel,
                &[],
                0,
                0x1a0,
                None,
                G,
                val(0x1800)
            ),
            case!(
                "§1 EMON ignored",
                "kvm-6.0",
                Intel,
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
fn reset_init_section2() {
    // (preset, vendor, RESET RDX, INIT RDX, INIT CR0 from CR0=0x60000011, gdtr base kept)
    let cases: &[(&str, Vendor, u64, u64, u64, bool)] = &[
        ("kvm-5.10", Vendor::Intel, 0x600, 0x600, 0x6000_0010, false),
        ("kvm-5.10", Vendor::Amd, 0, 0xa00f11, 0x6000_0010, true),
        (
            "kvm-5.15",
            Vendor::Intel,
            0x600,
            0xa00f11,
            0x6000_0010,
            false,
        ),
        ("kvm-5.15", Vendor::Amd, 0x600, 0xa00f11, 0x6000_0010, false),
        ("kvm-6.18", Vendor::Pvm, 0x600, 0xa00f11, 0x6000_0010, false),
    ];
    let h = header("kvm_intel", false, 0);
    for &(preset, vendor, rdx_reset, rdx_init, cr0, kept) in cases {
        let e = engine(preset, vendor, &h);
        let r = e.reset_state(1).outcome.unwrap();
        assert_eq!(r.rdx(), rdx_reset, "§2 {preset} {vendor:?} RESET RDX");
        assert_eq!(r.cr0, 0x6000_0010);
        assert_eq!(r.cs.selector, 0xf000);
        assert_eq!(r.apic_base, 0xfee0_0800, "§2 AP APIC base");
        assert_eq!(e.reset_state(0).outcome.unwrap().apic_base, 0xfee0_0900);
        let mut before = r.clone();
        before.cr0 = 0x6000_0011;
        before.gdtr.base = 0x1000;
        before.cr3 = 0x5000;
        let i = e.init_state(1, &before).outcome.unwrap();
        assert_eq!(i.rdx(), rdx_init, "§2 {preset} {vendor:?} INIT RDX");
        assert_eq!(i.cr0, cr0, "§2 {preset} {vendor:?} INIT CR0");
        assert_eq!(
            i.gdtr.base == 0x1000,
            kept,
            "§2 {preset} {vendor:?} GDTR base"
        );
        let legacy_vmx = preset == "kvm-5.10" && vendor == Vendor::Intel;
        assert_eq!(i.cr3, if legacy_vmx { 0x5000 } else { 0 }, "§2 CR3");
    }
    // CD/NW preserved at INIT since 5.15 (§2): CR0 = 0x10 | (old & (CD|NW)).
    let e = engine("kvm-5.15", Vendor::Intel, &h);
    let before = ArchState {
        cr0: 0x2000_0011,
        ..Default::default()
    };
    assert_eq!(e.init_state(0, &before).outcome.unwrap().cr0, 0x2000_0010);
    // §2 shutdown.
    use AfterShutdown::*;
    for (preset, vendor, want) in [
        ("kvm-5.10", Vendor::Amd, Reset),
        ("kvm-5.15", Vendor::Amd, Init),
        ("kvm-6.18", Vendor::Intel, Resume),
        ("kvm-6.18", Vendor::Pvm, Resume),
    ] {
        assert_eq!(
            engine(preset, vendor, &h).shutdown(0).outcome,
            Some(want),
            "§2 {preset} {vendor:?}"
        );
    }
}

#[test]
fn quirk_api_section6() {
    let h = header("kvm_intel", false, 0);
    // 5.10 has no QUIRKS2: cap 213 does nothing; cap 116 assigns any bits.
    let mut e = engine("kvm-5.10", Vendor::Intel, &h);
    e.apply(&rec(
        0,
        Event::QuirksDisabled {
            cap: 213,
            mask: 0x40,
        },
    ));
    assert_eq!(e.vm_state().disabled_quirks, 0);
    e.apply(&rec(
        0,
        Event::QuirksDisabled {
            cap: 116,
            mask: 0x1_0000,
        },
    ));
    assert_eq!(e.vm_state().disabled_quirks, 0x1_0000);
    // 5.19 rejects bit 6 (valid 0x3f); assign overwrites.
    let mut e = engine("kvm-5.19", Vendor::Intel, &h);
    e.apply(&rec(
        0,
        Event::QuirksDisabled {
            cap: 213,
            mask: 0x40,
        },
    ));
    assert_eq!(e.vm_state().disabled_quirks, 0);
    e.apply(&rec(
        0,
        Event::QuirksDisabled {
            cap: 213,
            mask: 0x10,
        },
    ));
    e.apply(&rec(
        0,
        Event::QuirksDisabled {
            cap: 213,
            mask: 0x1,
        },
    ));
    assert_eq!(e.vm_state().disabled_quirks, 0x1);
    // 6.18 sticky.
    let mut e = engine("kvm-6.18", Vendor::Intel, &h);
    e.apply(&rec(
        0,
        Event::QuirksDisabled {
            cap: 213,
            mask: 0x10,
        },
    ));
    e.apply(&rec(
        0,
        Event::QuirksDisabled {
            cap: 213,
            mask: 0x40,
        },
    ));
    assert_eq!(e.vm_state().disabled_quirks, 0x50);
}

#[test]
fn model_handles_covers_every_handler_arm() {
    // Any MSR outside `model_handles` must be unmodeled (no filter, no rules),
    // or the replay fast path would miscount it.
    let h = header("kvm_intel", true, 1 << 21);
    for preset in ["kvm-5.10", "kvm-6.18"] {
        for vendor in [Vendor::Intel, Vendor::Amd, Vendor::Pvm] {
            let e = engine(preset, vendor, &h);
            let probe = (0..0x1000u32)
                .chain(0x4b56_4d00..0x4b56_4d10)
                .chain(0xc000_0000..0xc000_0200)
                .chain(0xc001_0000..0xc001_0200);
            for i in probe {
                for o in [Origin::Guest, Origin::Host] {
                    if !crate::model::model_handles_access(i, false) {
                        assert_eq!(e.msr_read(0, i, o).outcome, None, "{preset} read {i:#x}");
                    }
                    if !crate::model::model_handles_access(i, true) {
                        assert_eq!(
                            e.msr_write(0, i, 1, o).outcome,
                            None,
                            "{preset} write {i:#x}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn mwait_quirk_disabled_after_cpuid_section1() {
    // §1: quirks disabled after KVM_SET_CPUID2 (CPUID MWAIT set, MISC_ENABLE[18]
    // clear): 6.0–6.14 check the stale CPUID bit (NOP); 6.15+ (a487f6797c88)
    // read MISC_ENABLE[18] (#UD).
    let h = header("kvm_intel", false, 1 << 3 | 1);
    let mask = quirks::MWAIT_NEVER_UD_FAULTS | quirks::MISC_ENABLE_NO_MWAIT;
    for (preset, want) in [
        ("kvm-6.2", MwaitOutcome::Nop),
        ("kvm-6.18", MwaitOutcome::InjectUd),
    ] {
        let mut e = engine(preset, Vendor::Intel, &h);
        e.apply(&rec(0, Event::QuirksDisabled { cap: 213, mask }));
        assert_eq!(e.mwait(0).outcome, Some(want), "{preset}");
    }
}

#[test]
fn svm_reset_segment_attrs_section2() {
    // svm.c init_vmcb/init_seg + svm_get_segment: CS 0x9a, SS 0x92, DS 0x93,
    // TR 0x83; VMX: CS 0x9b, SS 0x93, TR 0x8b.
    let h = header("kvm_amd", true, 0);
    let a = engine("kvm-6.18", Vendor::Amd, &h)
        .reset_state(0)
        .outcome
        .unwrap();
    assert_eq!(
        (a.cs.attr, a.ss.attr, a.ds.attr, a.tr.attr, a.ldtr.attr),
        (0x9a, 0x92, 0x93, 0x83, 0x82)
    );
    let i = engine("kvm-6.18", Vendor::Intel, &h)
        .reset_state(0)
        .outcome
        .unwrap();
    assert_eq!(
        (i.cs.attr, i.ss.attr, i.ds.attr, i.tr.attr, i.ldtr.attr),
        (0x9b, 0x93, 0x93, 0x8b, 0x82)
    );
}

/// One row per preset (SEMANTICS.md §8): the outcome of the same probes.
#[test]
fn preset_fingerprints_section8() {
    use MsrOutcome::*;
    #[derive(Debug, PartialEq)]
    struct Row {
        mwait_ud: bool,         // §1: MWAIT, MWAIT_NEVER_UD_FAULTS disabled, no CPUID MWAIT
        misc_enable_reset: u64, // §1/§2
        init_rdx: u64,          // §2 (CPUID.1.EAX = 0xa00f11)
        host_feat_ctl_5: MsrOutcome, // §3 without CPUID.VMX
        mc0_ctl_1: MsrOutcome,  // §5
        mc0_ctl_bit0: MsrOutcome, // §5 ~0x401
        mc0_ctl2_read: MsrOutcome, // §5 host read (a guest read needs MCG_CMCI_P)
        quirks2_bit6: bool,     // §6: QUIRKS2 accepts MWAIT_NEVER_UD_FAULTS
    }
    let vmfail = VmFailed { errno: 1 };
    let rows = [
        (
            "kvm-5.10",
            Row {
                mwait_ud: false,
                misc_enable_reset: 0,
                init_rdx: 0x600,
                host_feat_ctl_5: InjectGp,
                mc0_ctl_1: vmfail,
                mc0_ctl_bit0: vmfail,
                mc0_ctl2_read: InjectGp,
                quirks2_bit6: false,
            },
        ),
        (
            "kvm-5.15",
            Row {
                mwait_ud: false,
                misc_enable_reset: 0,
                init_rdx: 0xa00f11,
                host_feat_ctl_5: InjectGp,
                mc0_ctl_1: vmfail,
                mc0_ctl_bit0: vmfail,
                mc0_ctl2_read: InjectGp,
                quirks2_bit6: false,
            },
        ),
        (
            "kvm-5.19",
            Row {
                mwait_ud: false,
                misc_enable_reset: 0,
                init_rdx: 0xa00f11,
                host_feat_ctl_5: InjectGp,
                mc0_ctl_1: vmfail,
                mc0_ctl_bit0: vmfail,
                mc0_ctl2_read: InjectGp,
                quirks2_bit6: false,
            },
        ),
        (
            "kvm-6.0",
            Row {
                mwait_ud: true,
                misc_enable_reset: 0x1800,
                init_rdx: 0xa00f11,
                host_feat_ctl_5: InjectGp,
                mc0_ctl_1: InjectGp,
                mc0_ctl_bit0: Ok,
                mc0_ctl2_read: Value(0),
                quirks2_bit6: true,
            },
        ),
        (
            "kvm-6.2",
            Row {
                mwait_ud: true,
                misc_enable_reset: 0x1800,
                init_rdx: 0xa00f11,
                host_feat_ctl_5: Ok,
                mc0_ctl_1: InjectGp,
                mc0_ctl_bit0: Ok,
                mc0_ctl2_read: Value(0),
                quirks2_bit6: true,
            },
        ),
        (
            "kvm-6.18",
            Row {
                mwait_ud: true,
                misc_enable_reset: 0x1800,
                init_rdx: 0xa00f11,
                host_feat_ctl_5: Ok,
                mc0_ctl_1: InjectGp,
                mc0_ctl_bit0: Ok,
                mc0_ctl2_read: Value(0),
                quirks2_bit6: true,
            },
        ),
    ];
    let mut h = header("kvm_intel", false, 0);
    h.vm.mcg_cap = Some(0x10a);
    let mut bad = Vec::new();
    for (preset, want) in rows {
        let mut e = engine(preset, Vendor::Intel, &h);
        e.apply(&rec(
            0,
            Event::QuirksDisabled {
                cap: 213,
                mask: quirks::MWAIT_NEVER_UD_FAULTS,
            },
        ));
        let quirks2_bit6 = e.vm_state().disabled_quirks == quirks::MWAIT_NEVER_UD_FAULTS;
        e.apply(&rec(
            0,
            Event::QuirksDisabled {
                cap: 116,
                mask: quirks::MWAIT_NEVER_UD_FAULTS,
            },
        ));
        let got = Row {
            mwait_ud: e.mwait(0).outcome == Some(MwaitOutcome::InjectUd),
            misc_enable_reset: e.reset_state(0).outcome.unwrap().msr(0x1a0).unwrap(),
            init_rdx: e
                .init_state(1, &ArchState::default())
                .outcome
                .unwrap()
                .rdx(),
            host_feat_ctl_5: e.msr_write(0, 0x3a, 5, H).outcome.unwrap(),
            mc0_ctl_1: e.msr_write(0, 0x400, 1, G).outcome.unwrap(),
            mc0_ctl_bit0: e.msr_write(0, 0x400, !0x401, G).outcome.unwrap(),
            mc0_ctl2_read: e.msr_read(0, 0x280, H).outcome.unwrap(),
            quirks2_bit6,
        };
        if got != want {
            bad.push(format!(
                "{preset}:\n  expected {want:?}\n  got      {got:?}"
            ));
        }
    }
    assert!(bad.is_empty(), "\n{}", bad.join("\n"));
}

#[test]
fn pvm_reset_and_kernel_init_host_notes() {
    // docs/host-notes.md (recorder probes): MISC_ENABLE is 0x1 at RESET on
    // kvm_pvm; an in-kernel INIT followed by a SIPI (vector 0x8) is read back
    // with CS 0x800/0x8000, RIP 0.
    let mut h = header("kvm_pvm", true, 0);
    h.vm.irqchip = Some(Irqchip::Kernel);
    let e = engine("kvm-6.18", Vendor::Pvm, &h);
    let r = e.reset_state(1).outcome.unwrap();
    assert_eq!(r.msr(0x1a0), Some(0x1));
    assert_eq!(r.mp_state, 1, "AP UNINITIALIZED with an in-kernel irqchip");
    let mut after = e.init_state(1, &r).outcome.unwrap();
    after.cs.selector = 0x800;
    after.cs.base = 0x8000;
    after.rip = 0;
    after.mp_state = 0;
    let p = e.init_prediction_seen(1, InitSource::Kernel, &r, &after);
    assert_eq!(crate::model::compare_state(&p, &after), None);
    // Not for a VMM-performed INIT: there the SIPI is its own event.
    let p = e.init_prediction_seen(1, InitSource::Host, &r, &after);
    assert!(crate::model::compare_state(&p, &after).is_some());
}

#[test]
fn pat_kvm_pat_valid() {
    // kvm_set_msr_common MSR_IA32_CR_PAT: each byte 0, 1, 4, 5, 6 or 7.
    // (kvm_pvm stores PAT unchecked: `host_fidelity`.)
    let h = header("kvm_amd", true, 0);
    let e = engine("kvm-6.18", Vendor::Amd, &h);
    assert_eq!(e.msr_read(0, 0x277, G).outcome, val(0x0007_0406_0007_0406));
    for (v, ok) in [
        (0x0007_0406_0007_0406u64, true),
        (0x0606_0606_0606_0606, true),
        (0x0202, false),
        (0x0303, false),
        (0x08, false),
    ] {
        let want = if ok { OK } else { GP };
        assert_eq!(e.msr_write(0, 0x277, v, G).outcome, want, "PAT {v:#x}");
    }
}

#[test]
fn cpuid_events_merge_by_leaf() {
    // Observe/import traces carry the CPUID leaves the guest executed so far
    // (host-notes): a Cpuid event with leaf 0 only keeps the leaf-1 bits.
    let mut h = header("kvm_intel", false, 1 << 3);
    h.vm.disabled_quirks = quirks::MWAIT_NEVER_UD_FAULTS;
    let mut e = engine("kvm-6.18", Vendor::Intel, &h);
    assert_eq!(e.mwait(0).outcome, Some(MwaitOutcome::Nop));
    let leaf0 = cpuid(false, 0).into_iter().take(1).collect();
    e.apply(&rec(1, Event::Cpuid { entries: leaf0 }));
    assert_eq!(e.mwait(0).outcome, Some(MwaitOutcome::Nop));
    // A new leaf 1 without MWAIT replaces the old one.
    let leaf1 = cpuid(false, 0).into_iter().skip(1).collect();
    e.apply(&rec(2, Event::Cpuid { entries: leaf1 }));
    assert_eq!(e.mwait(0).outcome, Some(MwaitOutcome::InjectUd));
}

#[test]
fn policy_quirks_survive_trace_quirk_calls() {
    // A policy file's disabled_quirks model a VMM that always disables them;
    // the trace's own KVM_CAP_DISABLE_QUIRKS2 (v2-assign overwrites) keeps them.
    let h = header("kvm_intel", false, 0);
    let p = Policy::preset("kvm-6.2", Vendor::Intel)
        .unwrap()
        .with_disabled_quirks(quirks::MWAIT_NEVER_UD_FAULTS);
    let mut e = Engine::new(p, &h);
    e.apply(&rec(
        0,
        Event::QuirksDisabled {
            cap: 213,
            mask: quirks::MISC_ENABLE_NO_MWAIT,
        },
    ));
    assert_eq!(e.vm_state().disabled_quirks, 0x50);
    assert_eq!(e.mwait(0).outcome, Some(MwaitOutcome::InjectUd));
}
