//! `kvm-5.15` — mainline 5.15 (Oct 2021), read in stable 5.15.55 (SEMANTICS.md §8).
//!
//! - RESET/INIT consolidated into `x86.c kvm_vcpu_reset` (series "KVM: x86: vCPU
//!   RESET/INIT fixes and consolidation", incl. 4c72ab5aa6e0 "Preserve guest's
//!   CR0.CD/NW on INIT"), §2.
//! - SVM shutdown INITs the vCPU: 265e43530cb2 "SVM: Emulate #INIT in response to
//!   triple fault shutdown" (`svm.c shutdown_interception`), §2.
//! - SGX virtualisation in FEAT_CTL valid bits (`vmx.c
//!   vmx_update_msr_ia32_feature_control_valid_bits`), §3.
//! - MCE still -EPERM (§5); 5.15.61+ stable has the 6.0 fix: use a policy file
//!   with `mce_bad_write = "gp"` and `mce_ctl_bit0_ok = true` for those.

use crate::policy::*;

pub const PROVENANCE: &str = "mainline 5.15 (stable 5.15.55 read): x86.c kvm_vcpu_reset \
(4c72ab5aa6e0), svm.c shutdown_interception (265e43530cb2), x86.c set_msr_mce (SEMANTICS.md §8)";

pub fn switches() -> Switches {
    Switches {
        init_model: InitModel::Consolidated,
        init_preserves_cd_nw: true,
        svm_init_zero_dtr_base: true,
        svm_shutdown: SvmShutdown::Init,
        feat_ctl_sgx: true,
        ..super::kvm_5_10::switches()
    }
}

pub fn policy(vendor: Vendor) -> Policy {
    super::make("kvm-5.15", "5.15", vendor, switches())
}
