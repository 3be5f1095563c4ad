//! `kvm-5.10` — mainline 5.10 (Dec 2020), read in the 5.10 tree: the base every
//! later preset is generated from (`changes.rs`). docs/kvm-semantics.md.
//!
//! - MONITOR/MWAIT: `vmx.c handle_monitor/handle_mwait`, `svm.c
//!   monitor_interception/mwait_interception` skip the instruction (§1; the
//!   `MWAIT_NEVER_UD_FAULTS` quirk, bfbcc81bb82c, only came in 6.0).
//! - RESET/INIT: vendor reset code, pre-consolidation (`vmx_vcpu_reset`,
//!   `init_vmcb`, `get_rdx_init_val`), §2 "legacy".
//! - MCE: `x86.c set_msr_mce` returns -1 for bad MCi_CTL/STATUS (EPERM), bit 10
//!   tolerance only (§5; fixed by 2368048bf5c2 in 6.0).
//! - FEAT_CTL: `vmx.c vmx_set_msr`, valid bits from guest CPUID, no SGX (§3).
//! - Quirks: `KVM_CAP_DISABLE_QUIRKS` only (`kvm_vm_ioctl_enable_cap`, §6).
//! - MSR filter in `__kvm_set_msr/__kvm_get_msr` for every guest access (§0).

use crate::policy::*;

pub const PROVENANCE: &str = "mainline 5.10 (read): x86.c set_msr_mce/kvm_set_msr_common, vmx.c \
handle_mwait/vmx_vcpu_reset, svm.c init_vmcb/shutdown_interception (docs/kvm-semantics.md)";

pub fn switches() -> Switches {
    Switches {
        quirk_api: QuirkApi::V1Assign,
        valid_quirks: ValidQuirks::Any,
        mwait_quirk_exists: false,
        misc_enable_reset: 0,
        misc_enable_guest_ro: false,
        init_model: InitModel::Legacy,
        init_preserves_cd_nw: false,
        svm_init_zero_dtr_base: false,
        svm_shutdown: SvmShutdown::ReinitVmcb,
        feat_ctl_host_bits: FeatCtlHostBits::GuestCpuid,
        host_zero_write_advertised: false,
        msr_flags_validated: false,
        deflect_unfilterable: true,
        mce_bad_write: MceBadWrite::Eperm,
        mce_ctl_bit0_ok: false,
        mce_ctl2: false,
        feat_ctl_sgx: false,
        hwcr_write: HwcrWrite::SetOnly,
        ignore_msrs: false,
        mwait_reads_misc_enable: false,
        msr_tables: false,
        lapic_regs: false,
        x2apic_icr_reserved_gp: false,
        cmd_msrs_common: false,
        vcpu_events_triple_fault: false,
    }
}
