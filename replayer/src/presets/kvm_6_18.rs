//! `kvm-6.18` — mainline 6.18, read in stable 6.18.2 (SEMANTICS.md §8).
//!
//! - Quirks: 6.16+ `disabled |= args & supported` ("sticky"), valid mask 0x3ff
//!   (`x86.c kvm_vm_ioctl_enable_cap`), §6.
//! - 6.12+: host read / host write of 0 of an advertised MSR KVM does not handle
//!   succeeds (`kvm_do_msr_access`, `KVM_MSR_RET_UNSUPPORTED`), §0.
//! - MONITOR/MWAIT in the 6.15 form (a487f6797c88), same guest-visible result as
//!   6.0, §1.
//! - HWCR: 598a790fc20f "Allow HWCR.McStatusWrEn to be cleared once set" and
//!   8b0e00fba934 "Virtualize HWCR.TscFreqSel[bit 24]" (kvm-x86 misc for 6.7),
//!   `kvm_set_msr_common` MSR_K7_HWCR.
//! - The project host's kernel (6.18.44, `kvm_pvm`) is this preset plus the
//!   notes in `docs/host-notes.md`.

use crate::policy::*;

pub const PROVENANCE: &str = "mainline 6.18 (stable 6.18.2 read): x86.c \
kvm_vm_ioctl_enable_cap (sticky quirks), kvm_do_msr_access (6.12), kvm_set_msr_common \
MSR_K7_HWCR (598a790fc20f, 8b0e00fba934) (SEMANTICS.md §8)";

pub fn switches() -> Switches {
    Switches {
        quirk_api: QuirkApi::V2Sticky,
        valid_quirks: ValidQuirks::Mask(0x3ff),
        host_zero_write_advertised: true,
        hwcr_write: HwcrWrite::Bits18_24,
        mwait_reads_misc_enable: true,
        // lapic.c kvm_x2apic_icr_write (X2APIC_ICR_RESERVED_BITS), read in 6.18.
        x2apic_icr_reserved_gp: true,
        // x86.c kvm_set_msr_common MSR_IA32_PRED_CMD / MSR_IA32_FLUSH_CMD (6.4+).
        cmd_msrs_common: true,
        ..super::kvm_6_2::switches()
    }
}

pub fn policy(vendor: Vendor) -> Policy {
    super::make("kvm-6.18", "6.18", vendor, switches())
}
