//! What a VMM's own accesses (`Origin::Host`: KVM_SET_MSRS / KVM_GET_MSRS
//! entries a wrap or attach recording's ioctl tap saw) and configuration
//! ioctls teach the model about a trace that starts from unknown state.
//!
//! Recordings of other VMMs start with every `U_*` bit set (the VMM configured
//! the vCPU before anyone watched). The tap shows what the VMM then did, and
//! KVM stores some of it verbatim:
//! - `KVM_X86_SETUP_MCE` (x86.c `kvm_vcpu_ioctl_x86_setup_mce`) sets MCG_CAP,
//!   MCG_CTL to all 1s when MCG_CTL_P, and every bank's MCi_CTL to all 1s;
//! - `set_msr_mce` stores an accepted MCi_CTL/STATUS/ADDR/MISC write as
//!   written, and `get_msr_mce` returns it: after a write (or a read) the
//!   model knows that register although the other banks stay unknown
//!   (`VcpuState::mce_known`, one bit per MCi_* offset).
//!
//! Values only hardware or time knows (TSC, kvmclock) are never predicted.

use crate::state::{
    MAX_MCE_BANKS, MCG_CTL_P, U_ALL, U_APIC_BASE, U_BANKS, U_MCG_CAP, U_MCG_CTL, VcpuState,
};

/// The MCi_* offset of `index` (MC0_CTL = 0x400, 4 registers per bank).
const fn bank_offset(index: u32) -> Option<usize> {
    if index >= 0x400 && index < 0x400 + 4 * MAX_MCE_BANKS as u32 {
        Some((index - 0x400) as usize)
    } else {
        None
    }
}

/// A successful `KVM_X86_SETUP_MCE` (the recording's `SetupMce` event, already
/// folded into `v`): MCG_CAP, MCG_CTL (with MCG_CTL_P) and each MCi_CTL are
/// known from now on.
pub(crate) fn on_setup_mce(v: &mut VcpuState) {
    let banks = (v.mcg_cap & 0xff) as usize;
    if banks == 0 || banks > MAX_MCE_BANKS {
        return;
    }
    v.unknown &= !U_MCG_CAP;
    if v.mcg_cap & MCG_CTL_P != 0 {
        v.unknown &= !U_MCG_CTL;
    }
    for b in 0..banks {
        v.mce_known |= 1u128 << (b * 4);
    }
}

/// An accepted write stored `MCi_*` register `off` verbatim (`set_msr_mce`).
pub(crate) fn on_bank_store(v: &mut VcpuState, off: usize) {
    if off < 4 * MAX_MCE_BANKS {
        v.mce_known |= 1u128 << off;
    }
}

/// A read the kernel answered teaches an `MCi_*` register while the banks are
/// unknown (the teaching read itself is unmodeled, issue 6 item 5).
pub(crate) fn teach(v: &mut VcpuState, index: u32, value: u64) {
    if v.unknown & U_BANKS == 0 || v.unknown & U_MCG_CAP != 0 {
        return;
    }
    if let Some(off) = bank_offset(index)
        && off / 4 < (v.mcg_cap & 0xff) as usize
    {
        v.mce_banks[off] = value;
        v.mce_known |= 1u128 << off;
    }
}

/// Whether an access `needs_unknown` would leave unmodeled is decided by
/// state the trace did show: a read of an `MCi_*` register known per
/// register (`get_msr_mce` returns `mce_banks[offset]`) with MCG_CAP known.
pub(crate) fn known_despite_unknown(v: &VcpuState, index: u32, write: Option<u64>) -> bool {
    if write.is_some() || v.unknown & U_MCG_CAP != 0 {
        return false;
    }
    match bank_offset(index) {
        Some(off) => v.mce_known & (1u128 << off) != 0,
        None => false,
    }
}

/// A system reset the trace may not show (`model::lapic`, BSP INIT in a
/// recording of another VMM): the VMM may then set any state with `KVM_SET_*`.
/// Where the ioctl tap saw its MSR ioctls (`ConfigSource::VmmIoctls`), every
/// MSR it sets is a host `MsrWrite` in the trace, so MSR-held state stays
/// known; the APIC base (also set by `KVM_SET_SREGS`, `__set_sregs`) does not.
pub(crate) fn forget_at_system_reset(v: &mut VcpuState, vmm_msrs_seen: bool) {
    if vmm_msrs_seen {
        v.unknown |= U_APIC_BASE;
    } else {
        v.unknown = U_ALL;
        v.mce_known = 0;
    }
}
