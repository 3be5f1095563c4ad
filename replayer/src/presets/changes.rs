//! The one table of rule changes every preset is generated from.
//!
//! `kvm-5.10` is the base (`kvm_5_10::switches`); the preset of a later mainline
//! release is the base with every row of [`CHANGES`] whose release is at or
//! below it applied, in table order. A stable point release (`5.15.61`) is its
//! mainline release plus the rows backported to its line at or before that
//! point ([`Change::stable`]).
//!
//! Each row names the release, the upstream commit (hash and subject) and the
//! kernel function whose behaviour changed; `docs/kvm-semantics.md` has a section
//! per behaviour and lists the same rows. Where a fact could not be established
//! from the sources (the commit of a change read only in a later tree, a stable
//! backport), the row says so in `note` rather than guess.
//!
//! To add a switch: its 5.10 value in `kvm_5_10.rs`, a row here per change.

use crate::policy::*;

/// Which code a change is in: common x86 code decides for every vendor; a
/// vendor module's change matters only for that vendor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    /// `arch/x86/kvm/x86.c`, `lapic.c`, ...: every vendor.
    Common,
    /// `arch/x86/kvm/vmx/*`: Intel only.
    Vmx,
    /// `arch/x86/kvm/svm/*`: AMD only.
    Svm,
    /// Not a kernel change: how much of the kernel the model covers.
    Model,
}

/// One change of KVM behaviour.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Change {
    /// The mainline release that first has it.
    pub release: (u32, u32),
    /// The switch it sets, and the value (as `policies` prints it).
    pub switch: &'static str,
    pub value: &'static str,
    #[serde(skip)]
    pub apply: fn(&mut Switches),
    /// 12-digit upstream commit, or "" where it was not established.
    pub commit: &'static str,
    pub subject: &'static str,
    /// The kernel function whose behaviour changed, and its file.
    pub function: &'static str,
    pub file: &'static str,
    pub code: Code,
    /// `docs/kvm-semantics.md` section.
    pub doc: &'static str,
    /// Stable lines that got it: (line, first point release).
    pub stable: &'static [((u32, u32), u32)],
    /// What was not established, or how it was.
    pub note: &'static str,
}

impl Change {
    /// `2368048bf5c2 "KVM: x86: ..." — set_msr_mce()` (or the note when the
    /// commit is unknown).
    pub fn cite(&self) -> String {
        if self.commit.is_empty() {
            format!("{} (commit not established)", self.function)
        } else {
            format!("{} \"{}\" — {}", self.commit, self.subject, self.function)
        }
    }

    pub fn release_name(&self) -> String {
        format!("{}.{}", self.release.0, self.release.1)
    }
}

macro_rules! set {
    ($f:ident = $v:expr) => {{
        fn apply(s: &mut Switches) {
            s.$f = $v;
        }
        apply
    }};
}

/// Oldest first. Every hash and subject below was looked up in the kernel's
/// history (stable-review mails and merge logs) with the project's `search`
/// tool; functions are those the commit changes.
pub const CHANGES: &[Change] = &[
    Change {
        release: (5, 13),
        switch: "feat_ctl_sgx",
        value: "true",
        apply: set!(feat_ctl_sgx = true),
        commit: "72add915fbd5",
        subject: "KVM: VMX: Enable SGX virtualization for SGX1, SGX2 and LC",
        function: "vmx_update_msr_ia32_feature_control_valid_bits()",
        file: "arch/x86/kvm/vmx/vmx.c",
        code: Code::Vmx,
        doc: "§3",
        stable: &[],
        note: "release from the KVM SGX merge (5.13); the 5.13 tree itself was not read",
    },
    Change {
        release: (5, 15),
        switch: "init_model",
        value: "consolidated",
        apply: set!(init_model = InitModel::Consolidated),
        commit: "f39e805ee115",
        subject: "KVM: x86: Move setting of sregs during vCPU RESET/INIT to common x86",
        function: "kvm_vcpu_reset()",
        file: "arch/x86/kvm/x86.c",
        code: Code::Common,
        doc: "§2",
        stable: &[],
        note: "one of the series \"KVM: x86: vCPU RESET/INIT fixes and consolidation\" (also 49d8665cc20b \"KVM: x86: Move EDX initialization at vCPU RESET to common code\")",
    },
    Change {
        release: (5, 15),
        switch: "init_preserves_cd_nw",
        value: "true",
        apply: set!(init_preserves_cd_nw = true),
        commit: "4c72ab5aa6e0",
        subject: "KVM: x86: Preserve guest's CR0.CD/NW on INIT",
        function: "kvm_vcpu_reset()",
        file: "arch/x86/kvm/x86.c",
        code: Code::Common,
        doc: "§2",
        stable: &[],
        note: "",
    },
    Change {
        release: (5, 15),
        switch: "svm_init_zero_dtr_base",
        value: "true",
        apply: set!(svm_init_zero_dtr_base = true),
        commit: "4f117ce4aefc",
        subject: "KVM: SVM: Zero out GDTR.base and IDTR.base on INIT",
        function: "init_vmcb()",
        file: "arch/x86/kvm/svm/svm.c",
        code: Code::Svm,
        doc: "§2",
        stable: &[],
        note: "",
    },
    Change {
        release: (5, 15),
        switch: "svm_shutdown",
        value: "init",
        apply: set!(svm_shutdown = SvmShutdown::Init),
        commit: "265e43530cb2",
        subject: "KVM: SVM: Emulate #INIT in response to triple fault shutdown",
        function: "shutdown_interception()",
        file: "arch/x86/kvm/svm/svm.c",
        code: Code::Svm,
        doc: "§2",
        stable: &[],
        note: "",
    },
    Change {
        release: (5, 19),
        switch: "quirk_api",
        value: "v2-assign",
        apply: set!(quirk_api = QuirkApi::V2Assign),
        commit: "6d8491910fcd",
        subject: "KVM: x86: Introduce KVM_CAP_DISABLE_QUIRKS2",
        function: "kvm_vm_ioctl_enable_cap()",
        file: "arch/x86/kvm/x86.c",
        code: Code::Common,
        doc: "§6",
        stable: &[],
        note: "read in the 5.19 tree; 5.18 was not read and may already have it",
    },
    Change {
        release: (5, 19),
        switch: "valid_quirks",
        value: "0x3f",
        apply: set!(valid_quirks = ValidQuirks::Mask(0x3f)),
        commit: "6d8491910fcd",
        subject: "KVM: x86: Introduce KVM_CAP_DISABLE_QUIRKS2",
        function: "kvm_vm_ioctl_check_extension()",
        file: "arch/x86/kvm/x86.c",
        code: Code::Common,
        doc: "§6",
        stable: &[],
        note: "mask with FIX_HYPERCALL_INSN (bit 5), read in 5.19",
    },
    Change {
        release: (5, 19),
        switch: "msr_flags_validated",
        value: "true",
        apply: set!(msr_flags_validated = true),
        commit: "",
        subject: "",
        function: "kvm_vm_ioctl_enable_cap() / kvm_vm_ioctl_set_msr_filter()",
        file: "arch/x86/kvm/x86.c",
        code: Code::Common,
        doc: "§4",
        stable: &[],
        note: "read in the 5.19 tree (unknown flag bits: EINVAL); the commit and whether 5.18 has it were not established",
    },
    Change {
        release: (6, 0),
        switch: "mwait_quirk_exists",
        value: "true",
        apply: set!(mwait_quirk_exists = true),
        commit: "bfbcc81bb82c",
        subject: "KVM: x86: Add a quirk for KVM's \"MONITOR/MWAIT are NOPs!\" behavior",
        function: "kvm_emulate_monitor_mwait()",
        file: "arch/x86/kvm/x86.c",
        code: Code::Common,
        doc: "§1",
        stable: &[],
        note: "",
    },
    Change {
        release: (6, 0),
        switch: "valid_quirks",
        value: "0x7f",
        apply: set!(valid_quirks = ValidQuirks::Mask(0x7f)),
        commit: "bfbcc81bb82c",
        subject: "KVM: x86: Add a quirk for KVM's \"MONITOR/MWAIT are NOPs!\" behavior",
        function: "kvm_vm_ioctl_check_extension()",
        file: "arch/x86/kvm/x86.c",
        code: Code::Common,
        doc: "§6",
        stable: &[],
        note: "",
    },
    Change {
        release: (6, 0),
        switch: "misc_enable_guest_ro",
        value: "true",
        apply: set!(misc_enable_guest_ro = true),
        commit: "b9181c8ef356",
        subject: "KVM: x86/pmu: Avoid exposing Intel BTS feature",
        function: "kvm_set_msr_common()",
        file: "arch/x86/kvm/x86.c",
        code: Code::Common,
        doc: "§1",
        stable: &[],
        note: "makes bits 11 and 12 (MSR_IA32_MISC_ENABLE_PMU_RO_MASK) read-only for the guest; bit 12 alone was read-only since the PEBS work of 5.12, which the model does not separate",
    },
    Change {
        release: (6, 0),
        switch: "misc_enable_reset",
        value: "0x1800",
        apply: set!(misc_enable_reset = 0x1800),
        commit: "b9181c8ef356",
        subject: "KVM: x86/pmu: Avoid exposing Intel BTS feature",
        function: "intel_pmu_refresh() / kvm_vcpu_reset()",
        file: "arch/x86/kvm/vmx/pmu_intel.c",
        code: Code::Common,
        doc: "§1",
        stable: &[],
        note: "0x1800 = BTS_UNAVAIL | PEBS_UNAVAIL as read in the 6.0 tree at RESET",
    },
    Change {
        release: (6, 0),
        switch: "mce_bad_write",
        value: "gp",
        apply: set!(mce_bad_write = MceBadWrite::Gp),
        commit: "2368048bf5c2",
        subject: "KVM: x86: Signal #GP, not -EPERM, on bad WRMSR(MCi_CTL/STATUS)",
        function: "set_msr_mce()",
        file: "arch/x86/kvm/x86.c",
        code: Code::Common,
        doc: "§5",
        stable: &[((5, 15), 61)],
        note: "5.15.61 (stable review \"[PATCH 5.15 000/778] 5.15.61-rc2 review\" lists it); a 5.10.y backport was not established",
    },
    Change {
        release: (6, 0),
        switch: "mce_ctl_bit0_ok",
        value: "true",
        apply: set!(mce_ctl_bit0_ok = true),
        commit: "7e345a215d35",
        subject: "KVM: set_msr_mce: Permit guests to ignore single-bit ECC errors",
        function: "set_msr_mce()",
        file: "arch/x86/kvm/x86.c",
        code: Code::Common,
        doc: "§5",
        stable: &[((5, 15), 61)],
        note: "5.15.61 (same stable review); a 5.10.y backport was not established",
    },
    Change {
        release: (6, 0),
        switch: "mce_ctl2",
        value: "true",
        apply: set!(mce_ctl2 = true),
        commit: "281b52780b57",
        subject: "KVM: x86: Add emulation for MSR_IA32_MCx_CTL2 MSRs.",
        function: "set_msr_mce() / get_msr_mce()",
        file: "arch/x86/kvm/x86.c",
        code: Code::Common,
        doc: "§5",
        stable: &[],
        note: "",
    },
    Change {
        release: (6, 0),
        switch: "msr_tables",
        value: "true",
        apply: set!(msr_tables = true),
        commit: "",
        subject: "",
        function: "kvm_get_msr_common() / kvm_set_msr_common()",
        file: "arch/x86/kvm/x86.c",
        code: Code::Model,
        doc: "§0",
        stable: &[],
        note: "not a kernel change: the MSR tables were read in 6.18 and are assumed from 6.0; older presets leave those MSRs unmodeled",
    },
    Change {
        release: (6, 0),
        switch: "lapic_regs",
        value: "true",
        apply: set!(lapic_regs = true),
        commit: "",
        subject: "",
        function: "kvm_x2apic_msr_read() / kvm_lapic_reg_write()",
        file: "arch/x86/kvm/lapic.c",
        code: Code::Model,
        doc: "§4",
        stable: &[],
        note: "not a kernel change: the LAPIC registers were read in 6.18 and are assumed from 6.0",
    },
    Change {
        release: (6, 2),
        switch: "feat_ctl_host_bits",
        value: "supported",
        apply: set!(feat_ctl_host_bits = FeatCtlHostBits::Supported),
        commit: "d2a00af2061d",
        subject: "KVM: VMX: Allow userspace to set all supported FEATURE_CONTROL bits",
        function: "vmx_set_msr()",
        file: "arch/x86/kvm/vmx/vmx.c",
        code: Code::Vmx,
        doc: "§3",
        stable: &[],
        note: "with 2d6cd68636d6 \"KVM: VMX: Move MSR_IA32_FEAT_CTL.LOCKED check into \\\"is valid\\\" helper\"; no 6.1.y backport was found",
    },
    Change {
        release: (6, 4),
        switch: "cmd_msrs_common",
        value: "true",
        apply: set!(cmd_msrs_common = true),
        commit: "903358c7eddb",
        subject: "KVM: x86: Move MSR_IA32_PRED_CMD WRMSR emulation to common code",
        function: "kvm_set_msr_common()",
        file: "arch/x86/kvm/x86.c",
        code: Code::Common,
        doc: "§0",
        stable: &[],
        note: "with da3db168fb67 \"KVM: x86: Virtualize FLUSH_L1D and passthrough MSR_IA32_FLUSH_CMD\"; release 6.4 as the model notes it (kvm-x86 for 6.4)",
    },
    Change {
        release: (6, 7),
        switch: "hwcr_write",
        value: "bits_18_24",
        apply: set!(hwcr_write = HwcrWrite::Bits18_24),
        commit: "598a790fc20f",
        subject: "KVM: x86: Allow HWCR.McStatusWrEn to be cleared once set",
        function: "kvm_set_msr_common()",
        file: "arch/x86/kvm/x86.c",
        code: Code::Common,
        doc: "§5",
        stable: &[],
        note: "with 8b0e00fba934 \"KVM: x86: Virtualize HWCR.TscFreqSel[bit 24]\"; no 6.1.y backport was found",
    },
    Change {
        release: (6, 12),
        switch: "host_zero_write_advertised",
        value: "true",
        apply: set!(host_zero_write_advertised = true),
        commit: "64a5d7a1091f",
        subject: "KVM: x86: Suppress failures on userspace access to advertised, unsupported MSRs",
        function: "kvm_do_msr_access()",
        file: "arch/x86/kvm/x86.c",
        code: Code::Common,
        doc: "§0",
        stable: &[],
        note: "",
    },
    Change {
        release: (6, 15),
        switch: "mwait_reads_misc_enable",
        value: "true",
        apply: set!(mwait_reads_misc_enable = true),
        commit: "a487f6797c88",
        subject: "KVM: x86: Query X86_FEATURE_MWAIT iff userspace owns the CPUID feature bit",
        function: "kvm_emulate_monitor_mwait()",
        file: "arch/x86/kvm/x86.c",
        code: Code::Common,
        doc: "§1",
        stable: &[],
        note: "",
    },
    Change {
        release: (6, 16),
        switch: "quirk_api",
        value: "v2-sticky",
        apply: set!(quirk_api = QuirkApi::V2Sticky),
        commit: "",
        subject: "",
        function: "kvm_vm_ioctl_enable_cap()",
        file: "arch/x86/kvm/x86.c",
        code: Code::Common,
        doc: "§6",
        stable: &[],
        note: "read in 6.18 (disabled |= args & supported); the commit and whether it is 6.16 were not established",
    },
    Change {
        release: (6, 16),
        switch: "valid_quirks",
        value: "0x3ff",
        apply: set!(valid_quirks = ValidQuirks::Mask(0x3ff)),
        commit: "",
        subject: "",
        function: "kvm_vm_ioctl_check_extension()",
        file: "arch/x86/kvm/x86.c",
        code: Code::Common,
        doc: "§6",
        stable: &[],
        note: "mask read in 6.18; the releases that added quirk bits 7-9 were not established (0x7f is kept until here)",
    },
    Change {
        release: (6, 18),
        switch: "x2apic_icr_reserved_gp",
        value: "true",
        apply: set!(x2apic_icr_reserved_gp = true),
        commit: "71bf395a276f",
        subject: "KVM: x86: Enforce x2APIC's must-be-zero reserved ICR bits",
        function: "kvm_x2apic_icr_write()",
        file: "arch/x86/kvm/lapic.c",
        code: Code::Common,
        doc: "§4",
        stable: &[],
        note: "the commit (2024, Cc: stable) was found; its mainline release was not established, so only the 6.18 preset (read) has it and older presets leave such writes unmodeled",
    },
];

/// The rows of one switch, oldest first.
pub fn of_switch(switch: &str) -> impl Iterator<Item = &'static Change> {
    CHANGES.iter().filter(move |c| c.switch == switch)
}

/// The switches of mainline `release` (any release ≥ 5.10).
pub fn switches_at(release: (u32, u32)) -> Switches {
    let mut s = super::kvm_5_10::switches();
    for c in CHANGES.iter().filter(|c| c.release <= release) {
        (c.apply)(&mut s);
    }
    s
}

/// The switches of stable point release `line.point` (e.g. 5.15.61): the
/// mainline line plus the rows backported to it at or before `point`.
pub fn switches_at_stable(line: (u32, u32), point: u32) -> (Switches, Vec<&'static Change>) {
    let mut s = switches_at(line);
    let mut applied = Vec::new();
    for c in CHANGES.iter().filter(|c| c.release > line) {
        if c.stable.iter().any(|&(l, p)| l == line && p <= point) {
            (c.apply)(&mut s);
            applied.push(c);
        }
    }
    (s, applied)
}
