//! `kvm-6.2` — mainline 6.2 (Feb 2023), read in stable 6.2.1 (SEMANTICS.md §8).
//!
//! - FEAT_CTL: d2a00af2061d "KVM: VMX: Allow userspace to set all supported
//!   FEATURE_CONTROL bits" and "Move MSR_IA32_FEAT_CTL.LOCKED check into is-valid
//!   helper" (kvm-x86-fixes-6.2-1; `vmx.c vmx_set_msr`,
//!   `is_vmx_feature_control_msr_valid`), §3.

use crate::policy::*;

pub const PROVENANCE: &str = "mainline 6.2 (stable 6.2.1 read): vmx.c vmx_set_msr / \
is_vmx_feature_control_msr_valid (d2a00af2061d) (SEMANTICS.md §8)";

pub fn switches() -> Switches {
    Switches {
        feat_ctl_host_bits: FeatCtlHostBits::Supported,
        ..super::kvm_6_0::switches()
    }
}

pub fn policy(vendor: Vendor) -> Policy {
    super::make("kvm-6.2", "6.2", vendor, switches())
}
