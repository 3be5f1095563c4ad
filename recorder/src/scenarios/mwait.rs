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
    let vcpus = super::vcpus(NAME, params, 1, 1, super::MAX_VCPUS)?;
    let err = super::assemble_err(NAME);
    let mut g = Guest::new().map_err(err)?;
    body(&mut g).and_then(|()| g.done(0)).map_err(err)?;
    let (code, steps) = g.finish().map_err(err)?;
    let mut spec = ScenarioSpec::new(NAME, vcpus, code, steps);
    spec.cpuid.push(CPUID_MWAIT);
    Ok(spec)
}
