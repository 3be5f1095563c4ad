//! The rules a prediction cites: which switch or quirk decided, the SEMANTICS.md
//! section and the kernel release(s) the rule holds for.

use serde::Serialize;

/// The rule responsible for a predicted outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Rule {
    /// The deciding switch or quirk with its value, e.g. `mce_bad_write=eperm`,
    /// `quirk MWAIT_NEVER_UD_FAULTS disabled`, or the handler (`MCi_CTL handler`).
    pub name: &'static str,
    /// SEMANTICS.md section, e.g. `§5`.
    pub section: &'static str,
    /// Kernel release(s) the rule holds for, e.g. `5.10–5.19`.
    pub release: &'static str,
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        if !(self.section.starts_with('§') || self.section == "-") {
            // A policy script's rule: its file:line and note.
            return write!(f, "{} ({}, {})", self.name, self.section, self.release);
        }
        write!(
            f,
            "{} (docs/kvm-semantics.md {}, {})",
            self.name, self.section, self.release
        )?;
        if let Some(c) = self.citation() {
            write!(f, "; {c}")?;
        }
        Ok(())
    }
}

impl Rule {
    /// The upstream change behind this rule, from the table of changes
    /// (`presets::changes`): `2368048bf5c2 "KVM: x86: ..." — set_msr_mce()` for
    /// a rule that holds since the change, `before 2368048bf5c2 "..." (6.0) —
    /// set_msr_mce()` for the behaviour the change replaced; vendor-table rules
    /// cite the vendor table. `None` for rules no change touched.
    pub fn citation(&self) -> Option<String> {
        if self.name.starts_with("vendor pvm") || self.name.starts_with("kvm_pvm") {
            return Some(
                "vendor table (replayer/src/vendor.rs, docs/kvm-semantics.md \"Vendor peculiarities\")"
                    .to_string(),
            );
        }
        let (switch, rest) = self.name.split_once('=')?;
        if switch.contains(' ') {
            return None;
        }
        let value = rest.split([':', ' ']).next().unwrap_or("");
        let rows: Vec<_> = crate::presets::changes::of_switch(switch).collect();
        let first = rows.first()?;
        Some(match rows.iter().find(|c| c.value == value) {
            Some(c) => c.cite(),
            None => format!("before {} ({})", first.cite(), first.release_name()),
        })
    }
}

macro_rules! rules {
    ($($id:ident = $name:literal, $sec:literal, $rel:literal;)+) => {
        $(pub const $id: Rule = Rule { name: $name, section: $sec, release: $rel };)+
    };
}
/// The rule tables of `model/*` declare their rules with the same macro.
pub(crate) use rules;

rules! {
    UNMODELED = "unmodeled", "-", "-";
    GUEST_DEAD = "guest dead after vm_failed", "§0", "all";
    // ---- §0 pipeline ----
    FILTER_DENY = "MSR filter denies (r=3, FILTER)", "§0 §4", "5.10+";
    X2APIC_UNFILTERABLE = "x2APIC MSRs 0x800-0x8ff never filterable", "§4", "5.10+";
    DEFLECT_UNFILTERABLE_FALSE = "deflect_unfilterable=false (unmerged 2022 v1 patch)", "§4", "none (model only)";
    DEFLECT = "deflected: reason in user-space MSR mask", "§0 §4", "5.10+";
    IGNORE_MSRS = "ignore_msrs=true (unknown MSR reads 0, writes dropped)", "§0", "all";
    HOST_ZERO_ADVERTISED = "host_zero_write_advertised=true (advertised MSR, host read/write 0)", "§0 §3", "6.12+";
    CLOCK_READ = "IA32_TSC read (guest RDMSR or host KVM_GET_MSRS) returns the TSC (kvm_get_msr_common MSR_IA32_TSC: no failure path); the value is the clock's, not compared", "§0", "all";
    HOST_UNKNOWN = "host access to MSR unknown to KVM refused", "§0", "all";
    USER_RULE = "policy [[msr]] rule", "-", "policy file";
    // ---- §1 ----
    MWAIT_NO_QUIRK = "mwait_quirk_exists=false: MONITOR/MWAIT always NOP", "§1", "≤5.19";
    MWAIT_QUIRK_ENABLED = "quirk MWAIT_NEVER_UD_FAULTS enabled: NOP", "§1", "6.0+";
    MWAIT_CPUID_SET = "quirk MWAIT_NEVER_UD_FAULTS disabled, guest CPUID.1:ECX[3] set: NOP", "§1", "6.0+";
    MWAIT_UD = "quirk MWAIT_NEVER_UD_FAULTS disabled, guest CPUID.1:ECX[3] clear: #UD", "§1", "6.0+";
    MISC_ENABLE_READ = "MISC_ENABLE read", "§1", "all";
    MISC_ENABLE_RO = "misc_enable_guest_ro=true: guest toggles bit 11/12", "§1", "6.0+";
    MISC_ENABLE_NO_SSE3 = "quirk MISC_ENABLE_NO_MWAIT disabled: bit 18 toggled without SSE3", "§1", "all";
    MISC_ENABLE_MWAIT_SYNC = "quirk MISC_ENABLE_NO_MWAIT disabled: CPUID MWAIT := bit 18", "§1", "all";
    MISC_ENABLE_WRITE = "MISC_ENABLE write stored", "§1", "all";
    // ---- §2 ----
    RESET_CONSOLIDATED = "init_model=consolidated: kvm_vcpu_reset(RESET)", "§2", "5.15+";
    RESET_LEGACY = "init_model=legacy: vendor reset code", "§2", "≤5.14";
    INIT_CONSOLIDATED = "init_model=consolidated: kvm_vcpu_reset(INIT)", "§2", "5.15+";
    INIT_LEGACY = "init_model=legacy: vendor INIT code", "§2", "≤5.14";
    SHUTDOWN_SVM_INIT = "svm_shutdown=init: kvm_vcpu_reset(INIT) on triple fault", "§2", "5.15+";
    SHUTDOWN_SVM_REINIT = "svm_shutdown=reinit_vmcb: VMCB re-initialised", "§2", "≤5.14";
    SHUTDOWN_VMX = "VMX: KVM_EXIT_SHUTDOWN, no state change", "§2", "all";
    SHUTDOWN_PVM = "kvm_pvm: KVM_EXIT_SHUTDOWN, registers at the fault (host-notes)", "§2", "6.18 pvm";
    // ---- §3 ----
    FEAT_CTL_NO_HANDLER = "FEAT_CTL: no handler on this vendor (r=2)", "§3", "all";
    FEAT_CTL_READ = "FEAT_CTL read", "§3", "all";
    FEAT_CTL_LOCKED = "FEAT_CTL: guest write while LOCKED", "§3", "all";
    FEAT_CTL_INVALID_CPUID = "feat_ctl_host_bits=guest_cpuid: bits outside valid_bits", "§3", "≤6.1";
    FEAT_CTL_INVALID_GUEST = "FEAT_CTL: guest write of bits outside valid_bits", "§3", "6.2+";
    FEAT_CTL_INVALID_SUPPORTED = "feat_ctl_host_bits=supported: host bits outside 0x160007", "§3", "6.2+";
    FEAT_CTL_OK_CPUID = "feat_ctl_host_bits=guest_cpuid: write within valid_bits", "§3", "≤6.1";
    FEAT_CTL_OK_SUPPORTED = "feat_ctl_host_bits=supported: write accepted", "§3", "6.2+";
    // ---- §4 ----
    X2APIC_OFF = "x2APIC MSR with x2APIC off or no in-kernel LAPIC (r=1)", "§4", "all";
    APIC_BASE_READ = "APIC base read", "§2 §4", "all";
    APIC_BASE_RESERVED = "APIC base: reserved bits or invalid mode", "§4", "all";
    APIC_BASE_TRANSITION = "APIC base: invalid guest mode transition", "§4", "all";
    APIC_BASE_WRITE = "APIC base write stored", "§4", "all";
    // ---- §5 ----
    MCE_READ = "MCE MSR read", "§5", "all";
    MCE_CTL2_NO_CMCI = "MCi_CTL2 guest read without MCG_CMCI_P (get_msr_mce)", "§5", "6.0+";
    MCE_BANK_RANGE = "MCE bank >= bank_num (r=1)", "§5", "all";
    MCE_CTL_EPERM = "mce_bad_write=eperm: bad MCi_CTL (r=-1)", "§5", "≤5.19";
    MCE_CTL_GP = "mce_bad_write=gp: bad MCi_CTL (r=1)", "§5", "6.0+";
    MCE_STATUS_EPERM = "mce_bad_write=eperm: guest MCi_STATUS!=0 without can_set_mci_status (r=-1)", "§5", "≤5.19";
    MCE_STATUS_GP = "mce_bad_write=gp: guest MCi_STATUS!=0 without can_set_mci_status (r=1)", "§5", "6.0+";
    MCE_CTL_BIT0 = "mce_ctl_bit0_ok=true: MCi_CTL with bit 0/10 clear accepted", "§5", "6.0+";
    MCE_WRITE = "MCE MSR write stored", "§5", "all";
    MCE_CTL2_NONE = "mce_ctl2=false: MCi_CTL2 unknown (r=2)", "§5", "≤5.19";
    MCE_CTL2_BAD = "MCi_CTL2: bad value or no CMCI (r=1)", "§5", "6.0+";
    MCG_CTL_BAD = "MCG_CTL: no MCG_CTL_P or value not 0/~0 (r=1)", "§5", "all";
    MCG_EXT_CTL_BAD = "MCG_EXT_CTL: guest without FEAT_CTL.LMCE or bits beyond 0 (r=1)", "§5", "all";
    MCG_EXT_CTL_NO_HANDLER = "MCG_EXT_CTL: VMX only (r=2)", "§5", "all";
    HWCR_READ = "HWCR read", "§5", "all";
    HWCR_SET_ONLY = "hwcr_write=set_only: only 0 or bit 18", "§5", "≤6.6";
    HWCR_BITS = "hwcr_write=bits_18_24: only bits 18 and 24", "§5", "6.7+";
    HWCR_WRITE = "HWCR write", "§5", "all";
    PAT_READ = "PAT read", "§2", "all";
    PAT_WRITE = "PAT write stored", "§2", "all";
    PAT_INVALID = "PAT: a byte is not a valid memory type (kvm_pat_valid)", "§2", "all";
    PAT_PVM_UNCHECKED = "vendor pvm: PAT stored without kvm_pat_valid (host-notes, measured)", "§2", "6.18 pvm";
    TABLE_CONST = "KVM handler returns a constant (msr_tables)", "§0", "6.0+";
    TABLE_PVM_DEBUGCTL = "vendor pvm: DEBUGCTL reads 0, writes ignored (pvm_get/set_msr)", "§0", "6.18 pvm";
    TABLE_MTRR_NONE = "no MTRR at this index (kvm_mtrr_*_msr r=1)", "§0", "5.10+";
    TABLE_MTRR_INVALID = "MTRR value invalid (kvm_mtrr_valid)", "§0", "5.10+";
    TABLE_MTRRCAP = "MTRRcap reads 0x500 | KVM_NR_VAR_MTRR (kvm_mtrr_get_msr)", "§0", "5.10+";
    TABLE_MTRR_READ = "MTRR read returns the stored value (kvm_mtrr_get_msr)", "§0", "5.10+";
    TABLE_MTRR_WRITE = "MTRR write with valid types and no reserved bits stored (kvm_mtrr_set_msr)", "§0", "5.10+";
    TABLE_CPUID_GATED = "guest access needs a CPUID feature the guest lacks (r=1)", "§0", "6.0+";
    TABLE_NO_HYPERV = "Hyper-V MSR without Hyper-V CPUID", "§0", "6.0+";
    TABLE_NO_VENDOR_CASE = "no handler on this vendor (r=2): VMX MSRs off Intel, SVM-only MSRs on pvm", "§0", "6.0+";
    TABLE_PVM_ARCH_CAP = "vendor pvm: guest ARCH_CAPABILITIES read #GP (host-notes, measured)", "§0", "6.18 pvm";
    X2APIC_REG = "x2APIC register access (kvm_x2apic_msr_read/write)", "§4", "6.0+";
    TABLE_KVM_PV = "KVM PV MSR with its CPUID feature bit (kvm_set_msr_common)", "§0", "5.10+";
    TABLE_UNKNOWN = "no KVM handler for this index (r=2)", "§0", "all";
    TABLE_REG_READ = "register read returns the stored value", "§0", "6.0+";
    TABLE_REG_WRITE = "register write stored", "§0", "6.0+";
    TABLE_NONCANONICAL = "non-canonical address (__kvm_set_msr)", "§0", "6.0+";
    TABLE_SEG_BASE_WRITE = "FS/GS/KERNEL_GS_BASE canonical write accepted (__kvm_set_msr, vendor set_msr)", "§0", "6.0+";
    TABLE_EFER_RESERVED = "EFER bit no KVM enables in efer_reserved_bits (set_efer r=1)", "§0", "6.0+";
    TABLE_EFER_WRITE = "EFER write of SCE/LME/LMA/NX accepted: host, or guest with the CPUID bits and LME unchanged (set_efer)", "§0", "6.0+";
    TABLE_EFER_CPUID = "guest EFER LME/LMA without CPUID LM, NX without NX, SVME without SVM or FFXSR without FFXSR (__kvm_valid_efer / efer_reserved_bits r=1)", "§0", "6.0+";
    TABLE_EFER_READ = "EFER read returns vcpu->arch.efer: the last accepted write with LMA kept (set_efer, kvm_get_msr_common MSR_EFER)", "§0", "6.0+";
    TABLE_SEG_BASE_READ = "FS/GS/KERNEL_GS_BASE read returns the value last written (vendor get_msr)", "§0", "6.0+";
    TABLE_MISC_FEATURES = "MISC_FEATURES_ENABLES: only CPUID_FAULT (bit 0), and only with PLATFORM_INFO.CPUID_FAULT (kvm_set_msr_common, supports_cpuid_fault)", "§0", "6.0+";
    MCG_CAP_NO_WRITE = "MCG_CAP has no write case (kvm_set_msr_common default: r=2)", "§5", "all";
    TABLE_TSC_AUX_HIGH = "TSC_AUX bits 63:32 for an Intel-compatible guest", "§0", "6.0+";
    TABLE_UCODE_GUEST = "guest write of UCODE_REV ignored", "§0", "6.0+";
    TABLE_HOST_ONLY = "MSR writable by the host only", "§0", "6.0+";
    MISC_ENABLE_PVM_RW = "vendor pvm: guest MISC_ENABLE write stored unchecked (host-notes, measured)", "§1", "6.18 pvm";
}

rules! {
    MISC_ENABLE_RESET_0 = "misc_enable_reset=0", "§1 §2", "≤5.19";
    MISC_ENABLE_RESET_1800 = "misc_enable_reset=0x1800", "§1 §2", "6.0+";
    MISC_ENABLE_RESET_PVM = "vendor pvm: MISC_ENABLE = 0x1 at RESET (host-notes, measured)", "§1 §2", "6.18 pvm";
    INIT_SIPI_SEEN = "in-kernel INIT read back after the SIPI (host-notes)", "§2", "5.15+";
    INIT_CR0_PRESERVE = "init_preserves_cd_nw=true: CR0 = 0x10 | old CD/NW", "§2", "5.15+";
    INIT_CR0_RESET = "init_preserves_cd_nw=false: CR0 = 0x60000010", "§2", "≤5.14";
    SVM_DTR_KEPT = "svm_init_zero_dtr_base=false: GDTR/IDTR bases kept at INIT", "§2", "≤5.14";
    SVM_DTR_ZERO = "svm_init_zero_dtr_base=true: GDTR/IDTR bases zeroed at INIT", "§2", "5.15+";
}

/// Rules whose outcome does not depend on folded MSR/CPUID state (only on the
/// policy's switches, the access and its value): a divergence under one of them
/// is always direct.
const STATELESS: [Rule; 38] = [
    UNMODELED,
    FILTER_DENY,
    X2APIC_UNFILTERABLE,
    DEFLECT_UNFILTERABLE_FALSE,
    IGNORE_MSRS,
    HOST_ZERO_ADVERTISED,
    HOST_UNKNOWN,
    USER_RULE,
    MWAIT_NO_QUIRK,
    MWAIT_QUIRK_ENABLED,
    FEAT_CTL_NO_HANDLER,
    FEAT_CTL_INVALID_SUPPORTED,
    // valid_bits come from guest CPUID and MCG_CAP (configuration), not MSRs.
    FEAT_CTL_INVALID_CPUID,
    FEAT_CTL_INVALID_GUEST,
    MCE_CTL_EPERM,
    MCE_CTL_GP,
    MCE_CTL_BIT0,
    MCE_CTL2_NONE,
    MCG_EXT_CTL_NO_HANDLER,
    HWCR_BITS,
    PAT_INVALID,
    PAT_PVM_UNCHECKED,
    MCE_CTL2_NO_CMCI,
    TABLE_CONST,
    TABLE_PVM_DEBUGCTL,
    TABLE_MTRR_NONE,
    TABLE_MTRRCAP,
    TABLE_UNKNOWN,
    TABLE_NO_VENDOR_CASE,
    TABLE_PVM_ARCH_CAP,
    TABLE_NONCANONICAL,
    TABLE_SEG_BASE_WRITE,
    TABLE_EFER_RESERVED,
    TABLE_UCODE_GUEST,
    TABLE_HOST_ONLY,
    SHUTDOWN_SVM_INIT,
    SHUTDOWN_SVM_REINIT,
    SHUTDOWN_VMX,
];

impl Rule {
    /// Whether the outcome under this rule depends on state folded from
    /// earlier events (so a divergence can be a consequence of an earlier one).
    pub fn reads_state(&self) -> bool {
        !STATELESS.contains(self) && *self != SHUTDOWN_PVM
    }
}
