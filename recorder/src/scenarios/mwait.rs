//! `mwait`: MONITOR then MWAIT with CPUID.1:ECX[3] (MONITOR/MWAIT) cleared in the
//! guest CPUID. SEMANTICS.md §1: NOP on every kernel with the quirks at their
//! defaults; `#UD` once MWAIT_NEVER_UD_FAULTS is disabled (6.0+). On `kvm_pvm`
//! both instructions reach user space as emulation failures (HOST.md).

use super::asm::{Guest, R};
use super::{CpuidEdit, CpuidReg, ScenarioError, ScenarioParams, ScenarioSpec};

const NAME: &str = "mwait";

/// CPUID.1:ECX bit 3, MONITOR/MWAIT.
pub const CPUID_MWAIT: CpuidEdit = CpuidEdit::Clear {
    function: 1,
    index: 0,
    reg: CpuidReg::Ecx,
    bit: 3,
};

/// MONITOR + MWAIT, then report the fault marker (0: both were NOPs).
pub fn body(g: &mut Guest) -> R {
    g.clear_fault()?;
    g.monitor_mwait()?;
    g.report_fault()
}

pub fn spec(params: &ScenarioParams) -> Result<ScenarioSpec, ScenarioError> {
    let mut spec = super::one_program(NAME, params, super::MAX_VCPUS, body)?;
    spec.cpuid.push(CPUID_MWAIT);
    Ok(spec)
}
