//! `kvm-5.19` — mainline 5.19 (Jul 2022), read in the 5.19 tree (SEMANTICS.md §8).
//!
//! - `KVM_CAP_DISABLE_QUIRKS2` (213), valid mask 0x3f with FIX_HYPERCALL_INSN
//!   (`x86.c kvm_vm_ioctl_enable_cap`), §6.
//! - MSR filtering only for RDMSR/WRMSR ("Only do MSR filtering for MSRs accessed
//!   by rdmsr/wrmsr", 5.19 pull; `kvm_emulate_rdmsr/wrmsr`), §0.
//! - `KVM_CAP_X86_USER_SPACE_MSR` and filter flags validated (§4; 5.18 not read).
//! - MCE still -EPERM (§5).

use crate::policy::*;

pub const PROVENANCE: &str = "mainline 5.19: x86.c kvm_vm_ioctl_enable_cap (DISABLE_QUIRKS2), \
kvm_emulate_rdmsr/wrmsr (filter scope), set_msr_mce (SEMANTICS.md §8)";

pub fn switches() -> Switches {
    Switches {
        quirk_api: QuirkApi::V2Assign,
        valid_quirks: ValidQuirks::Mask(0x3f),
        msr_filter_scope: MsrFilterScope::RdmsrWrmsr,
        msr_flags_validated: true,
        ..super::kvm_5_15::switches()
    }
}

pub fn policy(vendor: Vendor) -> Policy {
    super::make("kvm-5.19", "5.19", vendor, switches())
}
