//! Table-driven tests of the model, one table per behaviour; every case cites
//! its SEMANTICS.md section.

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

fn engine(preset: &str, vendor: Vendor, h: &TraceHeader) -> Engine {
    Engine::new(Policy::preset(preset, vendor).unwrap(), h)
}

fn rec(seq: u64, event: Event) -> Record {
    Record {
        seq,
        vcpu: 0,
        time_ns: seq,
        event,
    }
}

fn write_ok(e: &mut Engine, index: u32, value: u64, origin: Origin) {
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

const GP: Option<MsrOutcome> = Some(MsrOutcome::InjectGp);
const OK: Option<MsrOutcome> = Some(MsrOutcome::Ok);
const G: Origin = Origin::Guest;
const H: Origin = Origin::Host;
fn val(x: u64) -> Option<MsrOutcome> {
    Some(MsrOutcome::Value(x))
}
fn ux(reason: MsrExitReason) -> Option<MsrOutcome> {
    Some(MsrOutcome::UserExit {
        reason,
        answer: UserAnswer::Gp,
    })
}

struct Case {
    name: &'static str,
    preset: &'static str,
    vendor: Vendor,
    /// (index, value, origin) writes done first (each must succeed).
    setup: &'static [(u32, u64, Origin)],
    user_space_msr: u32,
    index: u32,
    /// `None`: a read.
    write: Option<u64>,
    origin: Origin,
    expect: Option<MsrOutcome>,
}

fn run(cases: &[Case], h: &TraceHeader) {
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

#[test]
fn mce_section5() {
    // SETUP_MCE with 10 banks | MCG_CTL_P (HOST.md), Intel CPUID.
    let mut h = header("kvm_intel", false, 0);
    h.vm.mcg_cap = Some(0x10a);
    let inval = MsrExitReason::Inval;
    run(
        &[
            case!(
                "§5 WRMSR MC0_CTL=1 5.19 -> EPERM",
                "kvm-5.19",
                Intel,
                &[],
                0,
                0x400,
                Some(1),
                G,
                Some(MsrOutcome::VmFailed { errno: 1 })
            ),
            case!(
                "§5 WRMSR MC0_CTL=1 6.0 -> #GP",
                "kvm-6.0",
                Intel,
                &[],
                0,
                0x400,
                Some(1),
                G,
                GP
            ),
            case!(
                "§5 §0 INVAL deflection 5.19",
                "kvm-5.19",
                Intel,
                &[],
                1,
                0x400,
                Some(1),
                G,
                ux(inval)
            ),
            case!(
                "§5 §0 INVAL deflection 6.0",
                "kvm-6.0",
                Intel,
                &[],
                1,
                0x400,
                Some(1),
                G,
                ux(inval)
            ),
            case!(
                "§5 MC0_CTL bit 10 clear ok 5.10",
                "kvm-5.10",
                Intel,
                &[],
                0,
                0x400,
                Some(!(1 << 10)),
                G,
                OK
            ),
            case!(
                "§5 MC0_CTL bits 0,10 clear 5.19 EPERM",
                "kvm-5.19",
                Intel,
                &[],
                0,
                0x400,
                Some(!0x401),
                G,
                Some(MsrOutcome::VmFailed { errno: 1 })
            ),
            case!(
                "§5 MC0_CTL bits 0,10 clear 6.0 ok",
                "kvm-6.0",
                Intel,
                &[],
                0,
                0x400,
                Some(!0x401),
                G,
                OK
            ),
            case!(
                "§5 host MC0_CTL=1 refused",
                "kvm-6.18",
                Intel,
                &[],
                0,
                0x400,
                Some(1),
                H,
                GP
            ),
            case!(
                "§5 host MC0_CTL=1 refused 5.10 (r=-1)",
                "kvm-5.10",
                Intel,
                &[],
                0,
                0x400,
                Some(1),
                H,
                GP
            ),
            case!(
                "§5 guest MC0_STATUS=1 #GP",
                "kvm-6.18",
                Intel,
                &[],
                0,
                0x401,
                Some(1),
                G,
                GP
            ),
            case!(
                "§5 guest MC0_STATUS=0 ok",
                "kvm-6.18",
                Intel,
                &[],
                0,
                0x401,
                Some(0),
                G,
                OK
            ),
            case!(
                "§5 host MC0_STATUS=1 ok",
                "kvm-6.18",
                Intel,
                &[],
                0,
                0x401,
                Some(1),
                H,
                OK
            ),
            case!(
                "§5 MC10_CTL read #GP",
                "kvm-6.18",
                Intel,
                &[],
                0,
                0x428,
                None,
                G,
                GP
            ),
            case!(
                "§5 MC9_CTL read ~0",
                "kvm-6.18",
                Intel,
                &[],
                0,
                0x424,
                None,
                G,
                val(!0)
            ),
            case!(
                "§5 MCG_CAP read",
                "kvm-6.18",
                Intel,
                &[],
                0,
                0x179,
                None,
                G,
                val(0x10a)
            ),
            case!(
                "§5 MCG_CTL=1 #GP",
                "kvm-6.18",
                Intel,
                &[],
                0,
                0x17b,
                Some(1),
                G,
                GP
            ),
            case!(
                "§5 MCG_CTL=~0 ok",
                "kvm-6.18",
                Intel,
                &[],
                0,
                0x17b,
                Some(!0),
                G,
                OK
            ),
            case!(
                "§5 MC0_CTL2 5.19 unknown -> #GP",
                "kvm-5.19",
                Intel,
                &[],
                0,
                0x280,
                None,
                G,
                GP
            ),
            case!(
                "§5 MC0_CTL2 5.19 unknown -> UNKNOWN exit",
                "kvm-5.19",
                Intel,
                &[],
                2,
                0x280,
                None,
                G,
                ux(MsrExitReason::Unknown)
            ),
            case!(
                "§5 MC0_CTL2 6.0 read",
                "kvm-6.0",
                Intel,
                &[],
                2,
                0x280,
                None,
                G,
                val(0)
            ),
            case!(
                "§5 MC0_CTL2 6.0 guest write w/o CMCI",
                "kvm-6.0",
                Intel,
                &[],
                0,
                0x280,
                Some(0),
                G,
                GP
            ),
            case!(
                "§5 MC0_CTL2 6.0 host write 0",
                "kvm-6.0",
                Intel,
                &[],
                0,
                0x280,
                Some(0),
                H,
                OK
            ),
            case!(
                "§5 HWCR bit 18 ok",
                "kvm-5.10",
                Intel,
                &[],
                0,
                0xc001_0015,
                Some(1 << 18),
                G,
                OK
            ),
            case!(
                "§5 HWCR bit 24 5.10 #GP",
                "kvm-5.10",
                Intel,
                &[],
                0,
                0xc001_0015,
                Some(1 << 24),
                G,
                GP
            ),
            case!(
                "§5 HWCR bit 24 6.18 ok",
                "kvm-6.18",
                Intel,
                &[],
                0,
                0xc001_0015,
                Some(1 << 24),
                G,
                OK
            ),
            case!(
                "§5 HWCR bits 3,6,8 ignored",
                "kvm-5.10",
                Intel,
                &[],
                0,
                0xc001_0015,
                Some(0x148),
                G,
                OK
            ),
            case!(
                "§5 HWCR 0 after 18: 5.10 keeps 18",
                "kvm-5.10",
                Intel,
                &[(0xc001_0015, 1 << 18, G), (0xc001_0015, 0, G)],
                0,
                0xc001_0015,
                None,
                G,
                val(1 << 18)
            ),
            case!(
                "§5 HWCR 0 after 18: 6.18 clears",
                "kvm-6.18",
                Intel,
                &[(0xc001_0015, 1 << 18, G), (0xc001_0015, 0, G)],
                0,
                0xc001_0015,
                None,
                G,
                val(0)
            ),
            case!(
                "§5 HWCR.18 on Intel CPUID: STATUS still #GP",
                "kvm-6.18",
                Intel,
                &[(0xc001_0015, 1 << 18, G)],
                0,
                0x401,
                Some(1),
                G,
                GP
            ),
        ],
        &h,
    );
    // can_set_mci_status: AMD CPUID vendor and HWCR bit 18 (HOST.md measured).
    let mut h = header("kvm_pvm", true, 0);
    h.vm.mcg_cap = Some(0x10a);
    run(
        &[
            case!(
                "§5 pvm MC0_STATUS=1 #GP",
                "kvm-6.18",
                Pvm,
                &[],
                0,
                0x401,
                Some(1),
                G,
                GP
            ),
            case!(
                "§5 pvm HWCR.18 then MC0_STATUS=1 ok",
                "kvm-6.18",
                Pvm,
                &[(0xc001_0015, 1 << 18, G)],
                0,
                0x401,
                Some(1),
                G,
                OK
            ),
            case!(
                "§5 pvm MCG_EXT_CTL unknown",
                "kvm-6.18",
                Pvm,
                &[],
                0,
                0x4d0,
                None,
                G,
                GP
            ),
        ],
        &h,
    );
    // Without SETUP_MCE: 32 banks, no caps (HOST.md: MCG_CAP = 0x20).
    let h = header("kvm_pvm", true, 0);
    run(
        &[case!(
            "§5 MCG_CAP without SETUP_MCE",
            "kvm-6.18",
            Pvm,
            &[],
            0,
            0x179,
            None,
            G,
            val(0x20)
        )],
        &h,
    );
}

#[test]
fn feat_ctl_section3() {
    let h = header("kvm_intel", false, 0); // no VMX in guest CPUID
    let hv = header("kvm_intel", false, 1 << 5); // CPUID.1:ECX.VMX
    let unknown = MsrExitReason::Unknown;
    run(
        &[
            case!(
                "§3 host VMX bits w/o CPUID 6.0 refused",
                "kvm-6.0",
                Intel,
                &[],
                0,
                0x3a,
                Some(0x5),
                H,
                GP
            ),
            case!(
                "§3 host VMX bits w/o CPUID 6.2 ok",
                "kvm-6.2",
                Intel,
                &[],
                0,
                0x3a,
                Some(0x5),
                H,
                OK
            ),
            case!(
                "§3 host reserved bit 6.2 refused",
                "kvm-6.2",
                Intel,
                &[],
                0,
                0x3a,
                Some(0x8),
                H,
                GP
            ),
            case!(
                "§3 guest VMX bits w/o CPUID 6.2 #GP",
                "kvm-6.2",
                Intel,
                &[],
                0,
                0x3a,
                Some(0x5),
                G,
                GP
            ),
            case!(
                "§3 guest LOCKED ok",
                "kvm-6.18",
                Intel,
                &[],
                0,
                0x3a,
                Some(1),
                G,
                OK
            ),
            case!(
                "§3 guest write while LOCKED #GP",
                "kvm-6.18",
                Intel,
                &[(0x3a, 1, G)],
                0,
                0x3a,
                Some(1),
                G,
                GP
            ),
            case!(
                "§3 host rewrite while LOCKED ok",
                "kvm-6.18",
                Intel,
                &[(0x3a, 1, G)],
                0,
                0x3a,
                Some(0),
                H,
                OK
            ),
            case!(
                "§3 read back",
                "kvm-6.2",
                Intel,
                &[(0x3a, 5, H)],
                0,
                0x3a,
                None,
                G,
                val(5)
            ),
            case!(
                "§3 AMD guest read #GP",
                "kvm-6.18",
                Amd,
                &[],
                0,
                0x3a,
                None,
                G,
                GP
            ),
            case!(
                "§3 AMD guest read UNKNOWN exit",
                "kvm-6.18",
                Amd,
                &[],
                2,
                0x3a,
                None,
                G,
                ux(unknown)
            ),
            case!(
                "§3 AMD host write 0, 6.18 ok",
                "kvm-6.18",
                Amd,
                &[],
                0,
                0x3a,
                Some(0),
                H,
                OK
            ),
            case!(
                "§3 AMD host read, 6.18 -> 0",
                "kvm-6.18",
                Amd,
                &[],
                0,
                0x3a,
                None,
                H,
                val(0)
            ),
            case!(
                "§3 AMD host write 1, 6.18 refused",
                "kvm-6.18",
                Amd,
                &[],
                0,
                0x3a,
                Some(1),
                H,
                GP
            ),
            case!(
                "§3 AMD host write 0, 6.2 refused",
                "kvm-6.2",
                Amd,
                &[],
                0,
                0x3a,
                Some(0),
                H,
                GP
            ),
            case!(
                "§3 pvm host write 0 refused (HOST.md)",
                "kvm-6.18",
                Pvm,
                &[],
                0,
                0x3a,
                Some(0),
                H,
                GP
            ),
            case!(
                "§3 pvm guest write #GP",
                "kvm-6.18",
                Pvm,
                &[],
                0,
                0x3a,
                Some(0),
                G,
                GP
            ),
        ],
        &h,
    );
    run(
        &[
            case!(
                "§3 guest VMX bits with CPUID 6.2 ok",
                "kvm-6.2",
                Intel,
                &[],
                0,
                0x3a,
                Some(0x5),
                G,
                OK
            ),
            case!(
                "§3 host VMX bits with CPUID 6.0 ok",
                "kvm-6.0",
                Intel,
                &[],
                0,
                0x3a,
                Some(0x7),
                H,
                OK
            ),
            case!(
                "§3 host LMCE w/o MCG_LMCE_P 6.0 refused",
                "kvm-6.0",
                Intel,
                &[],
                0,
                0x3a,
                Some(1 << 20),
                H,
                GP
            ),
            case!(
                "§3 host LMCE 6.2 ok",
                "kvm-6.2",
                Intel,
                &[],
                0,
                0x3a,
                Some(1 << 20),
                H,
                OK
            ),
        ],
        &hv,
    );
}

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
                "§4 host access never filtered",
                "kvm-6.18",
                Pvm,
                &[],
                4,
                0x1a0,
                None,
                H,
                val(0x1800)
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
                if crate::model::model_handles(i) {
                    continue;
                }
                for o in [Origin::Guest, Origin::Host] {
                    assert_eq!(e.msr_read(0, i, o).outcome, None, "{preset} read {i:#x}");
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
