//! `x2apic-deflect`: x2APIC MSRs (0x800..0x8ff, never filterable) read and
//! written with x2APIC off, where the kernel refuses them (r = 1, so with the
//! INVAL reason enabled they are deflected to user space, SEMANTICS.md §4), then
//! with x2APIC on through the APIC base (0x1b bits 10 and 11), then back off
//! through the disabled state (x2APIC -> xAPIC directly is an invalid transition).
//! In-kernel irqchip, so the "on" half reads real LAPIC registers (HOST.md).

use kvmtrace_format::Irqchip;

use super::asm::{Guest, R};
use super::{CpuidEdit, CpuidReg, ScenarioError, ScenarioParams, ScenarioSpec};

pub const MSR_APIC_BASE: u32 = 0x1b;
pub const APIC_EN: u64 = 1 << 11;
pub const APIC_EXTD: u64 = 1 << 10;

/// CPUID.1:ECX bit 21, x2APIC: KVM refuses EXTD without it.
pub const CPUID_X2APIC: CpuidEdit = CpuidEdit::Set {
    function: 1,
    index: 0,
    reg: CpuidReg::Ecx,
    bit: 21,
};

/// ID, version, TPR, LDR, SVR, ICR, and EOI (write-only: reads fault).
const READS: [u32; 7] = [0x802, 0x803, 0x808, 0x80d, 0x80f, 0x830, 0x80b];
/// TPR = 0 and EOI = 0 are harmless; ID is read-only (write faults).
const WRITES: [(u32, u64); 3] = [(0x808, 0), (0x80b, 0), (0x802, 0)];

const NAME: &str = "x2apic-deflect";

/// The accesses of one half; `short` keeps one read and one write.
pub fn accesses(g: &mut Guest, short: bool) -> R {
    let (reads, writes) = if short {
        (&READS[..1], &WRITES[..1])
    } else {
        (&READS[..], &WRITES[..])
    };
    g.clear_fault()?;
    for &index in reads {
        g.rdmsr(index)?;
    }
    for &(index, value) in writes {
        g.wrmsr(index, value)?;
    }
    g.report_fault()
}

/// Off, on, back off (through disabled), with the accesses in the first two.
pub fn body(g: &mut Guest, short: bool) -> R {
    g.rdmsr(MSR_APIC_BASE)?;
    g.report_eax()?;
    accesses(g, short)?;
    g.rmw_msr(MSR_APIC_BASE, APIC_EN | APIC_EXTD, 0)?;
    g.rdmsr(MSR_APIC_BASE)?;
    g.report_eax()?;
    accesses(g, short)?;
    g.clear_fault()?;
    if !short {
        // x2APIC -> xAPIC is invalid (#GP).
        g.rmw_msr(MSR_APIC_BASE, 0, APIC_EXTD)?;
    }
    g.rmw_msr(MSR_APIC_BASE, 0, APIC_EN | APIC_EXTD)?;
    g.rmw_msr(MSR_APIC_BASE, APIC_EN, 0)?;
    g.rdmsr(MSR_APIC_BASE)?;
    g.report_eax()?;
    g.report_fault()
}

pub fn spec(params: &ScenarioParams) -> Result<ScenarioSpec, ScenarioError> {
    let mut spec = super::one_program(NAME, params, super::MAX_VCPUS, |g| body(g, false))?;
    spec.irqchip = Irqchip::Kernel;
    spec.cpuid.push(CPUID_X2APIC);
    Ok(spec)
}
