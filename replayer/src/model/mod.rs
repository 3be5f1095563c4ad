//! The KVM model: given the folded state and the next action, the outcome.
//!
//! - `msr`: the MSR pipeline of §0 and the handlers of §1, §3, §4, §5.
//! - `cpu`: MONITOR/MWAIT (§1), RESET/INIT/SHUTDOWN (§2).

mod common;
mod cpu;
mod host;
pub(crate) mod lapic;
mod msr;
mod pmu;
mod pv;

pub use common::{NREGS, REGS_AT_RESET, REGS_KNOWN_AT_RESET};
pub(crate) use common::{reg_slot, teach};
pub use cpu::compare_state;
pub use host::{HostRegs, HostTrace, VmmCaps};
pub(crate) use host::{on_setup_mce, on_write as host_on_write};
pub use lapic::LapicRegs;
pub(crate) use msr::{Store, model_handles_access};
pub use pmu::UNSEEN_CPUID;
pub use pv::PvRegs;
#[cfg(test)]
mod tests;

/// An RDMSR (guest) or KVM_GET_MSRS entry (host) whose success a rule decides but whose value is the guest's
/// clock (IA32_TSC: `kvm_get_msr_common` returns the guest TSC, with no
/// failure path in any release; filter and deflection come first and are
/// decided by the pipeline): the replay predicts "a value" and compares the
/// kind of outcome, never the number. Only where no handler predicted.
pub(crate) fn clock_read_rule(index: u32) -> Option<&'static crate::rules::Rule> {
    // Host reads too: `kvm_get_msr_common` returns the L1 TSC for a
    // host-initiated read, with no failure path either.
    (index == 0x10).then_some(&crate::rules::CLOCK_READ)
}
