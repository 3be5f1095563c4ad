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
pub use host::{HostRegs, HostTrace};
pub(crate) use host::{on_setup_mce, on_write as host_on_write};
pub use lapic::LapicRegs;
pub(crate) use msr::{Store, model_handles_access};
pub use pmu::UNSEEN_CPUID;
pub use pv::PvRegs;
#[cfg(test)]
mod tests;
