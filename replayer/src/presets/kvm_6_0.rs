//! `kvm-6.0` — mainline 6.0 (Oct 2022), read in 6.0-rc1 and 6.1-rc7 (SEMANTICS.md §8).
//!
//! - MONITOR/MWAIT: `x86.c kvm_emulate_monitor_mwait` with the
//!   `MWAIT_NEVER_UD_FAULTS` quirk (bfbcc81bb82c, renamed by 43bb9e000ea4), §1.
//! - MISC_ENABLE = 0x1800 at RESET and guest-read-only bits 7/11/12
//!   (`kvm_vcpu_reset`, `kvm_set_msr_common`), §1.
//! - MCE: 2368048bf5c2 "Signal #GP, not -EPERM, on bad WRMSR(MCi_CTL/STATUS)",
//!   "set_msr_mce: Permit guests to ignore single-bit ECC errors", MCi_CTL2
//!   emulation (`set_msr_mce`), §5.
//! - `kvm_inj_exception` prints the error code only when there is one (§6).

use crate::policy::*;

pub const PROVENANCE: &str = "mainline 6.0 (6.0-rc1 read): x86.c kvm_emulate_monitor_mwait \
(bfbcc81bb82c, 43bb9e000ea4), set_msr_mce (2368048bf5c2), kvm_vcpu_reset (SEMANTICS.md §8)";

pub fn switches() -> Switches {
    Switches {
        valid_quirks: ValidQuirks::Mask(0x7f),
        mwait_quirk_exists: true,
        misc_enable_reset: 0x1800,
        misc_enable_guest_ro: true,
        mce_bad_write: MceBadWrite::Gp,
        mce_ctl_bit0_ok: true,
        mce_ctl2: true,
        msr_tables: true,
        lapic_regs: true,
        inj_exception_fmt: InjExceptionFmt::V6,
        ..super::kvm_5_19::switches()
    }
}

pub fn policy(vendor: Vendor) -> Policy {
    super::make("kvm-6.0", "6.0", vendor, switches())
}
