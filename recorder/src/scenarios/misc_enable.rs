//! `misc-enable-mwait` and its quirk variants: read MISC_ENABLE (0x1a0), set
//! ENABLE_MWAIT (bit 18), MONITOR/MWAIT, clear it, MONITOR/MWAIT, read back.
//! SEMANTICS.md §1: with MISC_ENABLE_NO_MWAIT disabled, bit 18 drives
//! CPUID.1:ECX[3] (and needs SSE3); with MWAIT_NEVER_UD_FAULTS disabled too,
//! MWAIT #UDs exactly where bit 18 (or the CPUID bit) is clear.

use super::asm::{Guest, R};
use super::{ScenarioError, ScenarioParams, ScenarioSpec};

pub const MSR_MISC_ENABLE: u32 = 0x1a0;
pub const ENABLE_MWAIT: u64 = 1 << 18;
/// `KVM_X86_QUIRK_MISC_ENABLE_NO_MWAIT` (SEMANTICS.md §6).
pub const QUIRK_MISC_ENABLE_NO_MWAIT: u64 = 1 << 4;
/// `KVM_X86_QUIRK_MWAIT_NEVER_UD_FAULTS` (SEMANTICS.md §6).
pub const QUIRK_MWAIT_NEVER_UD_FAULTS: u64 = 1 << 6;

/// Toggle bit 18 on then off with MONITOR/MWAIT after each; report the fault
/// marker after each pair and MISC_ENABLE's low half at the start and the end.
pub fn body(g: &mut Guest) -> R {
    g.rdmsr(MSR_MISC_ENABLE)?;
    g.report_eax()?;
    for (set, clear) in [(ENABLE_MWAIT, 0), (0, ENABLE_MWAIT)] {
        g.clear_fault()?;
        g.rmw_msr(MSR_MISC_ENABLE, set, clear)?;
        g.report_fault()?;
        g.clear_fault()?;
        g.monitor_mwait()?;
        g.report_fault()?;
    }
    g.rdmsr(MSR_MISC_ENABLE)?;
    g.report_eax()
}

fn build(
    name: &'static str,
    params: &ScenarioParams,
    disabled_quirks: u64,
) -> Result<ScenarioSpec, ScenarioError> {
    let mut spec = super::one_program(name, params, super::MAX_VCPUS, body)?;
    spec.disabled_quirks = disabled_quirks;
    // Start from MWAIT absent whatever the host offers, so the outcome depends
    // only on the quirks and bit 18.
    spec.cpuid.push(super::mwait::CPUID_MWAIT);
    Ok(spec)
}

pub fn spec_default(params: &ScenarioParams) -> Result<ScenarioSpec, ScenarioError> {
    build("misc-enable-mwait", params, 0)
}

pub fn spec_no_mwait_quirk(params: &ScenarioParams) -> Result<ScenarioSpec, ScenarioError> {
    build("misc-enable-no-mwait", params, QUIRK_MISC_ENABLE_NO_MWAIT)
}

pub fn spec_ud(params: &ScenarioParams) -> Result<ScenarioSpec, ScenarioError> {
    build("mwait-ud", params, QUIRK_MWAIT_NEVER_UD_FAULTS)
}

pub fn spec_strict(params: &ScenarioParams) -> Result<ScenarioSpec, ScenarioError> {
    build(
        "mwait-strict",
        params,
        QUIRK_MWAIT_NEVER_UD_FAULTS | QUIRK_MISC_ENABLE_NO_MWAIT,
    )
}
