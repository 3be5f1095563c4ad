//! `triple-fault`: UD2 with an empty IDT (limit 0): #UD cannot be delivered, nor
//! the #GP that follows, nor the #DF: a triple fault, `KVM_EXIT_SHUTDOWN`
//! (SEMANTICS.md §2). On VMX and `kvm_pvm` the kernel changes nothing, so the
//! VMM resumes the vCPU past UD2 (HOST.md: registers are those at the fault);
//! the guest then reloads the VMM's IDT, which it saved first, and reports.
//! Under an SVM >= 5.15 policy the kernel INITs the vCPU instead.

use iced_x86::code_asm::*;

use super::asm::{Guest, IDTR_EMPTY, IDTR_SAVE, R};
use super::{OnShutdown, ScenarioError, ScenarioParams, ScenarioSpec};

/// Reported right before the fault and right after the guest got past it.
pub const MARK_BEFORE: u32 = 0x7f_0001;
pub const MARK_AFTER: u32 = 0x7f_0002;

const NAME: &str = "triple-fault";

pub fn body(g: &mut Guest) -> R {
    g.clear_fault()?;
    g.report_imm(MARK_BEFORE)?;
    let a = &mut g.a;
    a.mov(rsi, IDTR_SAVE)?;
    a.sidt(ptr(rsi))?;
    // IDTR_EMPTY is in the zeroed data region: limit 0, base 0.
    a.mov(rsi, IDTR_EMPTY)?;
    a.lidt(ptr(rsi))?;
    a.ud2()?;
    a.mov(rsi, IDTR_SAVE)?;
    a.lidt(ptr(rsi))?;
    g.report_imm(MARK_AFTER)?;
    // 0: the VMM's #UD stub never ran (the fault was a shutdown, not an exception).
    g.report_fault()
}

pub fn spec(params: &ScenarioParams) -> Result<ScenarioSpec, ScenarioError> {
    let mut spec = super::one_program(NAME, params, super::MAX_VCPUS, body)?;
    spec.on_shutdown = OnShutdown::ResumePastFault;
    Ok(spec)
}
