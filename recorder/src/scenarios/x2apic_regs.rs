//! `x2apic-regs` (issue 12 item 7): every x2APIC register read, legal and
//! illegal writes (read-only, reserved, bits 63:32, ICR reserved bits, ESR and
//! SELF_IPI rules, LVT masks, timer), the x2APIC -> disabled -> xAPIC mode
//! switches, then PMU MSRs with and without counters, PRED_CMD/FLUSH_CMD and
//! the KVM PV MSRs. In-kernel irqchip, x2APIC in CPUID: the kernel decides
//! (record it in observe mode to measure the `host` model).

use kvmtrace_format::Irqchip;

use super::asm::{Guest, R};
use super::x2apic::{APIC_EN, APIC_EXTD, CPUID_X2APIC, MSR_APIC_BASE};
use super::{ScenarioError, ScenarioParams, ScenarioSpec};

const NAME: &str = "x2apic-regs";

/// Writes in x2APIC mode: (MSR, value). Legal ones first, then illegal ones.
const WRITES: &[(u32, u64)] = &[
    (0x808, 0x20),           // TPR
    (0x808, 0),              //
    (0x80f, 0x1ff),          // SPIV: software enable, vector 0xff
    (0x80f, 0x11ff),         // SPIV: directed EOI bit (masked without it in LVR)
    (0x832, 0x6_00ef),       // LVTT: TSC-deadline mode bits (masked by CPUID)
    (0x832, 0x1_00ef),       // LVTT masked one-shot
    (0x833, 0xffff_ffff),    // LVTTHMR
    (0x834, 0x1_0000),       // LVTPC
    (0x835, 0xffff_ffff),    // LINT0: LINT_MASK
    (0x836, 0x1_0400),       // LINT1
    (0x837, 0xffff_ffff),    // LVTERR
    (0x83e, 0xf),            // TDCR & 0xb
    (0x838, 0),              // TMICT 0: no timer
    (0x828, 0),              // ESR 0
    (0x80b, 0),              // EOI
    (0x80b, 7),              // EOI, nonzero data
    (0x830, 0x55_0000_00fe), // ICR: fixed IPI to an APIC ID no vCPU has
    (0x830, 0x55_0000_10fe), // ICR with BUSY (cleared)
    (0x80f, 0xff),           // SPIV: software disable masks every LVT
    (0x837, 0x33),           // LVTERR while disabled: masked
    (0x80f, 0x1ff),
    // Illegal: read-only, reserved, write rules.
    (0x802, 0),              // ID
    (0x803, 0),              // LVR
    (0x809, 0),              // ARBPRI
    (0x80a, 0),              // PPR
    (0x80d, 0),              // LDR
    (0x80e, 0),              // DFR
    (0x810, 0),              // ISR0
    (0x82f, 0),              // LVTCMCI without MCG_CMCI_P
    (0x831, 0),              // ICR2
    (0x839, 0),              // TMCCT
    (0x840, 0),              // beyond SELF_IPI
    (0x828, 1),              // ESR nonzero
    (0x83f, 0x100),          // SELF_IPI beyond the vector
    (0x80f, 1 << 32),        // bits 63:32
    (0x830, 0x55_0000_20fe), // ICR reserved bit 13
    (0x830, 0x55_0001_00fe), // ICR reserved bit 16
];

/// PMU, command and PV MSRs: (MSR, Some(value) to write / None to read).
const OTHERS: &[(u32, Option<u64>)] = &[
    (0xc1, None),
    (0xc1, Some(0x1234)),
    (0x186, None),
    (0x186, Some(0x43_003c)),
    (0xc3, None),
    (0x188, None),
    (0x309, None),
    (0x38f, None),
    (0x390, Some(0)),
    (0xc001_0000, None),
    (0xc001_0004, Some(0x55)),
    (0xc001_0200, None),
    (0xc000_0300, None),
    (0x49, None),
    (0x49, Some(0)),
    (0x49, Some(1)),
    (0x49, Some(2)),
    (0x10b, None),
    (0x10b, Some(0)),
    (0x10b, Some(1)),
    (0x10b, Some(2)),
    (0x10b, Some(1 << 63)),
    (0x4b56_4d02, None),
    (0x4b56_4d02, Some(0x10)),
    (0x4b56_4d03, Some(0x4)),
    (0x4b56_4d04, Some(0x2)),
    (0x4b56_4d06, Some(0xec)),
    (0x4b56_4d06, None),
    (0x4b56_4d06, Some(0x100)),
    (0x3b, None),
];

/// Every register (`all`), or one of each ISR/TMR/IRR bank: their bits
/// follow interrupt delivery, which no MSR event shows (never predicted).
fn read_all(g: &mut Guest, all: bool) -> R {
    g.clear_fault()?;
    for index in 0x800..=0x83f {
        if !all && (0x811..=0x827).contains(&index) && index % 8 != 0 {
            continue;
        }
        g.rdmsr(index)?;
    }
    g.rdmsr(0x840)?;
    g.rdmsr(0x8ff)?;
    g.report_fault()
}

pub fn body(g: &mut Guest) -> R {
    g.rmw_msr(MSR_APIC_BASE, APIC_EN | APIC_EXTD, 0)?;
    read_all(g, false)?;
    // A write of 0 to every register but ICR and SELF_IPI (which would send
    // vector 0): read-only and reserved ones fault, the others take it.
    g.clear_fault()?;
    for index in (0x800..=0x840).filter(|i| !matches!(i, 0x830 | 0x83f)) {
        g.wrmsr(index, 0)?;
    }
    g.report_fault()?;
    g.clear_fault()?;
    for &(index, value) in WRITES {
        g.wrmsr(index, value)?;
    }
    g.report_fault()?;
    read_all(g, false)?;
    // x2APIC -> xAPIC is invalid; through disabled it is legal.
    g.clear_fault()?;
    g.rmw_msr(MSR_APIC_BASE, 0, APIC_EXTD)?;
    g.rmw_msr(MSR_APIC_BASE, 0, APIC_EN | APIC_EXTD)?;
    g.rdmsr(0x802)?;
    g.rmw_msr(MSR_APIC_BASE, APIC_EN, 0)?;
    g.rdmsr(MSR_APIC_BASE)?;
    g.rdmsr(0x80f)?;
    g.report_fault()?;
    g.clear_fault()?;
    for &(index, write) in OTHERS {
        match write {
            Some(v) => g.wrmsr(index, v)?,
            None => g.rdmsr(index)?,
        }
    }
    g.report_fault()
}

pub fn spec(params: &ScenarioParams) -> Result<ScenarioSpec, ScenarioError> {
    let mut spec = super::one_program(NAME, params, super::MAX_VCPUS, body)?;
    spec.irqchip = Irqchip::Kernel;
    spec.cpuid.push(CPUID_X2APIC);
    Ok(spec)
}
