//! `msr-suite` and `msr-suite-bare` (record them in observe mode): the MSR
//! families a public x86 test suite's MSR, PMU, TSC and kvmclock tests touch,
//! written here from the architecture and KVM's documentation (no code of any
//! such suite): speculation control (SPEC_CTRL values, PRED_CMD/FLUSH_CMD with
//! every single bit), EFER, the segment-base and SYSCALL MSRs with canonical
//! and non-canonical values (also as a register table read, written with
//! bits kept from the original, read back and restored, and GS_BASE saved
//! and restored as a boot does around segment loads), TSC_ADJUST and a guest TSC write, TSC_AUX, the
//! kvmclock, async-PF, steal-time, PV-EOI and poll-control MSRs, the MTRRs
//! (MTRRcap, deftype, fixed and variable ranges, valid and invalid types and
//! reserved bits), PMU MSRs (counters, event selects, global controls) and
//! the VMM's own KVM_SET_MSRS/KVM_GET_MSRS of the MSRs a QEMU VMM restores
//! at reset. `msr-suite` keeps the guest CPUID KVM supports (like `-cpu
//! max`); `msr-suite-bare` clears the speculation, TSC_ADJUST, RDTSCP/RDPID
//! and KVM PV feature bits (like a plain `-cpu qemu64`), so the same accesses
//! meet the "no CPUID feature" paths.

use kvmtrace_format::Irqchip;

use super::asm::{Guest, R};
use super::{CpuidEdit, CpuidReg, HostStep, ScenarioError, ScenarioParams, ScenarioSpec};
use crate::layout::DATA_ADDR;

pub const NAME: &str = "msr-suite";
pub const NAME_BARE: &str = "msr-suite-bare";

/// A canonical 48-bit address and a non-canonical one.
const ADDR: u64 = 0x0000_1234_5678_9abc;
const NONCANON: u64 = 0xaaaa_aaaa_aaaa_aaaa;
/// Guest-physical pages for the kvmclock and PV structures (data region).
const PV_PAGE: u64 = DATA_ADDR + 0x3000;

/// One access: `Some(value)` writes, `None` reads.
type Access = (u32, Option<u64>);

const fn w(index: u32, value: u64) -> Access {
    (index, Some(value))
}
const fn r(index: u32) -> Access {
    (index, None)
}

/// Speculation control MSRs (other than the single-bit loops).
const SPEC: &[Access] = &[
    r(0x48),
    w(0x48, 0),
    r(0x48),
    w(0x48, 1),
    r(0x48),
    w(0x48, 2),
    r(0x48),
    w(0x48, 4),
    r(0x48),
    w(0x48, 7),
    r(0x48),
    w(0x48, 0),
    r(0x49),
    w(0x49, 0),
    w(0x49, 1),
    r(0x10b),
    w(0x10b, 0),
    w(0x10b, 1),
];

/// Segment bases and SYSCALL/SYSENTER MSRs: read, write, read, restore 0 (the
/// guest does not use FS/GS), then a non-canonical write.
const BASES: &[u32] = &[0xc000_0100, 0xc000_0101, 0xc000_0102];

/// TSC_ADJUST, TSC writes, TSC_AUX.
const TSC: &[Access] = &[
    r(0x3b),
    w(0x3b, 100_000_000_000),
    r(0x3b),
    w(0x3b, 0),
    r(0x3b),
    w(0x10, 100_000_000_000),
    r(0x3b),
    w(0x3b, 0),
    r(0x3b),
    w(0xc000_0103, 0),
    r(0xc000_0103),
    w(0xc000_0103, 10),
    r(0xc000_0103),
    w(0xc000_0103, 0x100),
    r(0xc000_0103),
    w(0xc000_0103, 1 << 32),
    r(0xc000_0103),
];

/// kvmclock (old and new indices), async PF, steal time, PV EOI, poll control.
const PV: &[Access] = &[
    w(0x4b56_4d00, PV_PAGE),
    r(0x4b56_4d00),
    w(0x4b56_4d01, PV_PAGE + 0x40 + 1),
    r(0x4b56_4d01),
    w(0x4b56_4d01, 0),
    r(0x4b56_4d01),
    w(0x11, PV_PAGE),
    w(0x12, PV_PAGE + 0x80 + 1),
    r(0x12),
    w(0x12, 0),
    r(0x4b56_4d02),
    w(0x4b56_4d02, 0x30),
    w(0x4b56_4d02, 0),
    r(0x4b56_4d02),
    r(0x4b56_4d06),
    w(0x4b56_4d06, 0xec),
    r(0x4b56_4d06),
    w(0x4b56_4d06, 0x1ec),
    w(0x4b56_4d06, 0),
    w(0x4b56_4d07, 1),
    r(0x4b56_4d07),
    r(0x4b56_4d03),
    w(0x4b56_4d03, PV_PAGE + 0x100 + 4),
    w(0x4b56_4d03, 0),
    r(0x4b56_4d03),
    r(0x4b56_4d04),
    w(0x4b56_4d04, PV_PAGE + 0x200 + 2),
    w(0x4b56_4d04, 0),
    r(0x4b56_4d04),
    r(0x4b56_4d05),
    w(0x4b56_4d05, 1),
    r(0x4b56_4d05),
    w(0x4b56_4d05, 2),
    w(0x4b56_4d05, 0),
    r(0x4b56_4d05),
];

/// MTRRs: MTRRcap (read-only), deftype, fixed and variable ranges.
const MTRR: &[Access] = &[
    r(0xfe),
    w(0xfe, 0),
    r(0x2ff),
    w(0x2ff, 0xc06),
    r(0x2ff),
    w(0x2ff, 0xc02),
    w(0x2ff, 0x1c06),
    w(0x2ff, 0x806),
    r(0x2ff),
    r(0x250),
    w(0x250, 0x0606_0606_0606_0606),
    r(0x250),
    w(0x250, 0x0606_0606_0606_0602),
    w(0x258, 0x0505_0505_0404_0101),
    r(0x258),
    w(0x268, 0x0707_0707_0707_0707),
    w(0x26f, 0),
    r(0x26f),
    r(0x200),
    w(0x200, 0x8000_0006),
    r(0x200),
    w(0x200, 0x8000_0002),
    w(0x200, 0x8000_0106),
    w(0x201, 0xf_8000_0800),
    r(0x201),
    w(0x201, 0xf_8000_0400),
    w(0x20e, 0x4),
    w(0x20f, 0),
    r(0x20f),
    w(0x210, 0),
    r(0x210),
    w(0x2ff, 0),
    r(0x2ff),
];

/// PMU MSRs: legacy counters and selects, global controls, fixed counters,
/// full-width counters, PERF_CAPABILITIES, AMD counters.
const PMU: &[Access] = &[
    r(0xc1),
    w(0xc1, 0x1234),
    r(0xc1),
    r(0xc2),
    r(0x186),
    w(0x186, 0x43_00c0),
    r(0x186),
    w(0x187, 0x53_00c4),
    r(0x187),
    r(0x188),
    w(0x188, 0),
    r(0x309),
    w(0x309, 0),
    r(0x38d),
    w(0x38d, 0xb),
    r(0x38e),
    r(0x38f),
    w(0x38f, 0),
    w(0x38f, 0x7_0000_0003),
    r(0x390),
    w(0x390, 0),
    r(0x4c1),
    w(0x4c1, 0xffff),
    r(0x345),
    r(0xc001_0000),
    w(0xc001_0000, 0x43_0076),
    r(0xc001_0004),
    r(0xc001_0200),
    r(0xc000_0300),
];

/// What a QEMU VMM does around reset: KVM_SET_MSRS of 0 to the speculation,
/// TSX and segment-base MSRs and of `tsc_adjust` to TSC_ADJUST, then
/// KVM_GET_MSRS of them and of the PV MSRs.
fn vmm_steps(tsc_adjust: u64) -> HostStep {
    let mut s = Vec::new();
    for (index, value) in [
        (0x48, 0),
        (0x122, 0),
        (0xc001_011f, 0),
        (0xc000_0102, 0),
        (0x3b, tsc_adjust),
    ] {
        s.push(HostStep::WriteMsr {
            vcpu: 0,
            index,
            value,
        });
    }
    for index in [
        0x48,
        0x122,
        0xc001_011f,
        0xc000_0102,
        0x3b,
        0x4b56_4d02,
        0x4b56_4d03,
        0x4b56_4d04,
        0x4b56_4d06,
        0x4b56_4d01,
        0x2ff,
        0x200,
        0x250,
    ] {
        s.push(HostStep::ReadMsr { vcpu: 0, index });
    }
    HostStep::Seq(s)
}

/// An MSR test's read/write/read/restore of one register: read the original,
/// write `value` with the `keep` bits taken from the original (`keep` all
/// ones ORs `value` into it), read back, write the original back.
fn rw_keep(g: &mut Guest, index: u32, value: u64, keep: u64) -> R {
    use iced_x86::code_asm::{rax, rdx};
    g.rdmsr(index)?;
    g.a.push(rax)?;
    g.a.push(rdx)?;
    g.a.shl(rdx, 32u32)?;
    g.a.or(rax, rdx)?;
    // (orig | set) & !clear = (value & !keep) | (orig & keep); keep = !0
    // means value | orig.
    let (set, clear) = if keep == !0 {
        (value, 0)
    } else {
        (value & !keep, !keep & !value)
    };
    if set != 0 {
        g.a.mov(rdx, set)?;
        g.a.or(rax, rdx)?;
    }
    if clear != 0 {
        g.a.mov(rdx, !clear)?;
        g.a.and(rax, rdx)?;
    }
    g.a.mov(rdx, rax)?;
    g.a.shr(rdx, 32u32)?;
    g.wrmsr_edx_eax(index)?;
    g.rdmsr(index)?;
    g.a.pop(rdx)?;
    g.a.pop(rax)?;
    g.wrmsr_edx_eax(index)
}

/// The register table of a public MSR test (value, bits kept from the
/// original; EFER ORs its value in), then a non-canonical write to the
/// address MSRs; and a boot's save/restore of GS_BASE around segment loads.
const RW_TABLE: &[(u32, u64, u64)] = &[
    (0x174, 0x1234, 0),
    (0x175, ADDR, 0),
    (0x176, ADDR, 0),
    (0x1a0, 0x4_00c5_0809, 0x1880),
    (0x277, 0x0707_0707, 0),
    (0xc000_0100, ADDR, 0),
    (0xc000_0101, ADDR, 0),
    (0xc000_0102, ADDR, 0),
    (0xc000_0080, 1, !0),
    (0xc000_0082, ADDR, 0),
    (0xc000_0083, ADDR, 0),
    (0xc000_0084, 0xffff_ffff, 0),
];

fn rw_table(g: &mut Guest) -> R {
    g.clear_fault()?;
    for &(index, value, keep) in RW_TABLE {
        rw_keep(g, index, value, keep)?;
        if value == ADDR && index >= 0xc000_0000 {
            g.wrmsr(index, NONCANON)?;
        }
    }
    // Save GS_BASE, (segment loads), restore it.
    rw_keep(g, 0xc000_0101, 0, !0)?;
    g.report_fault()
}

fn run(g: &mut Guest, list: &[Access]) -> R {
    g.clear_fault()?;
    for &(index, v) in list {
        match v {
            Some(v) => g.wrmsr(index, v)?,
            None => g.rdmsr(index)?,
        }
    }
    g.report_fault()
}

pub fn body(g: &mut Guest) -> R {
    // A host TSC_ADJUST write the guest then reads (stored or not: CPUID).
    g.host(vmm_steps(0x1000))?;
    run(g, SPEC)?;
    // PRED_CMD and FLUSH_CMD with each single bit 1..63.
    g.clear_fault()?;
    for index in [0x49, 0x10b] {
        for bit in 1..64 {
            g.wrmsr(index, 1 << bit)?;
        }
    }
    g.report_fault()?;
    // EFER: set and clear SCE; a reserved bit; LME cleared under paging.
    g.clear_fault()?;
    g.rdmsr(0xc000_0080)?;
    g.rmw_msr(0xc000_0080, 1, 0)?;
    g.rdmsr(0xc000_0080)?;
    g.rmw_msr(0xc000_0080, 0, 1)?;
    g.rmw_msr(0xc000_0080, 1 << 1, 0)?;
    g.rmw_msr(0xc000_0080, 0, 1 << 8)?;
    g.rdmsr(0xc000_0080)?;
    g.report_fault()?;
    // Segment bases.
    g.clear_fault()?;
    for &index in BASES {
        g.rdmsr(index)?;
        g.wrmsr(index, ADDR)?;
        g.rdmsr(index)?;
        g.wrmsr(index, 0)?;
        g.wrmsr(index, NONCANON)?;
    }
    g.report_fault()?;
    // SYSCALL/SYSENTER MSRs the way an MSR test checks them.
    run(
        g,
        &[
            w(0x174, 0x1234),
            r(0x174),
            w(0x175, ADDR),
            r(0x175),
            w(0x176, ADDR),
            r(0x176),
            w(0xc000_0083, ADDR),
            r(0xc000_0083),
            w(0xc000_0083, NONCANON),
            r(0xc000_0082),
            w(0xc000_0082, ADDR),
            r(0xc000_0082),
            w(0xc000_0082, NONCANON),
            w(0xc000_0082, 0),
            w(0xc000_0084, 0xffff_ffff),
            r(0xc000_0084),
            w(0xc000_0084, 0),
            w(0x277, 0x0707_0707),
            r(0x277),
            w(0x277, 0x0007_0406_0007_0406),
        ],
    )?;
    rw_table(g)?;
    run(g, TSC)?;
    run(g, PV)?;
    run(g, MTRR)?;
    run(g, PMU)?;
    // The VMM reads back after the guest ran.
    g.host(vmm_steps(0))
}

/// CPUID bits `msr-suite-bare` clears: leaf 7 EDX SPEC_CTRL (26), STIBP (27),
/// FLUSH_L1D (28), ARCH_CAPABILITIES (29), SSBD (31); leaf 7 EBX TSC_ADJUST
/// (1); leaf 7 ECX RDPID (22); 0x80000001 EDX RDTSCP (27); 0x80000008 EBX
/// AMD IBPB (12), IBRS (14), STIBP (15), SSBD (24), VIRT_SSBD (25); and the
/// KVM PV features in 0x40000001 EAX (clocksource 0, clocksource2 3,
/// async PF 4, steal time 5, PV EOI 6, poll control 12, async PF INT 14).
fn bare_edits() -> Vec<CpuidEdit> {
    let clear = |function: u32, reg: CpuidReg, bit: u8| CpuidEdit::Clear {
        function,
        index: 0,
        reg,
        bit,
    };
    let mut v = Vec::new();
    for bit in [26, 27, 28, 29, 31] {
        v.push(clear(7, CpuidReg::Edx, bit));
    }
    v.push(clear(7, CpuidReg::Ebx, 1));
    v.push(clear(7, CpuidReg::Ecx, 22));
    v.push(clear(0x8000_0001, CpuidReg::Edx, 27));
    for bit in [12, 14, 15, 24, 25] {
        v.push(clear(0x8000_0008, CpuidReg::Ebx, bit));
    }
    for bit in [0, 3, 4, 5, 6, 12, 14] {
        v.push(clear(0x4000_0001, CpuidReg::Eax, bit));
    }
    v
}

pub fn spec(params: &ScenarioParams) -> Result<ScenarioSpec, ScenarioError> {
    let mut spec = super::one_program(NAME, params, 1, body)?;
    spec.irqchip = Irqchip::Kernel;
    Ok(spec)
}

pub fn spec_bare(params: &ScenarioParams) -> Result<ScenarioSpec, ScenarioError> {
    let mut spec = super::one_program(NAME_BARE, params, 1, body)?;
    spec.irqchip = Irqchip::Kernel;
    spec.cpuid = bare_edits();
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_clears_every_feature_the_suite_checks() {
        let e = bare_edits();
        assert!(e.contains(&CpuidEdit::Clear {
            function: 7,
            index: 0,
            reg: CpuidReg::Edx,
            bit: 26
        }));
        assert_eq!(e.len(), 20);
    }
}
