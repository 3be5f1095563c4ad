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
/// history with the project's `search` tool: stable-review patches ("[PATCH
/// 5.10 471/545] ..." with "[ Upstream commit ... ]" and the diff), stable
/// release announcements ("Linux 5.10.137" shortlogs), -rc announcements, KVM
/// pull requests and kernel.org push logs (kvm.git, Linus's tree). A stable
/// point is tabled only where a review patch or announcement for that line
/// names the upstream commit; "no stable backport" means none was found in the
/// stored stable@vger archive. Functions are those the commit changes.
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
        note: "release from the KVM SGX merge (5.13); a feature: no stable backport mail for it in the stored stable@vger archive",
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
        note: "one of the series \"KVM: x86: vCPU RESET/INIT fixes and consolidation\" (also 49d8665cc20b \"KVM: x86: Move EDX initialization at vCPU RESET to common code\"): kvm.git queue 2021-08-03, in Linus's tree after 5.15-rc1 with the same hashes; no stable backport mail for it in the stored stable@vger archive",
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
        note: "same series and evidence as f39e805ee115 (5.15); no stable backport mail for it in the stored stable@vger archive",
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
        note: "same series and evidence as f39e805ee115 (5.15); no stable backport mail for it in the stored stable@vger archive",
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
        note: "same series and evidence as f39e805ee115 (5.15); no stable backport mail for it in the stored stable@vger archive",
    },
    Change {
        release: (5, 18),
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
        note: "5.18: pushed to kvm.git next on 2022-03-21 (5.18 merge window) and in Linus's tree by 2022-03-30 (perf tools uapi sync \"KVM_CAP_DISABLE_QUIRKS2 213\"); a feature, no stable backport",
    },
    Change {
        release: (5, 18),
        switch: "valid_quirks",
        value: "0x1f",
        apply: set!(valid_quirks = ValidQuirks::Mask(0x1f)),
        commit: "6d8491910fcd",
        subject: "KVM: x86: Introduce KVM_CAP_DISABLE_QUIRKS2",
        function: "kvm_vm_ioctl_check_extension()",
        file: "arch/x86/kvm/x86.c",
        code: Code::Common,
        doc: "§6",
        stable: &[],
        note: "KVM_X86_VALID_QUIRKS = quirk bits 0-4 (LINT0_REENABLED .. MISC_ENABLE_NO_MWAIT); bit 5 came in 5.19",
    },
    Change {
        release: (5, 19),
        switch: "valid_quirks",
        value: "0x3f",
        apply: set!(valid_quirks = ValidQuirks::Mask(0x3f)),
        commit: "f1a9761fbb00",
        subject: "KVM: x86: Allow userspace to opt out of hypercall patching",
        function: "kvm_vm_ioctl_check_extension()",
        file: "arch/x86/kvm/x86.c",
        code: Code::Common,
        doc: "§6",
        stable: &[],
        note: "adds KVM_X86_QUIRK_FIX_HYPERCALL_INSN (bit 5); merged as a feature \"that did not make it into 5.18\" (kvm.git merge 'kvm-older-features', 2022-04-08), in 5.19",
    },
    Change {
        release: (5, 19),
        switch: "msr_flags_validated",
        value: "true",
        apply: set!(msr_flags_validated = true),
        commit: "cf5029d5dd7c",
        subject: "KVM: x86: Protect the unused bits in MSR exiting flags",
        function: "kvm_vm_ioctl_enable_cap() / kvm_vm_ioctl_set_msr_filter()",
        file: "arch/x86/kvm/x86.c",
        code: Code::Common,
        doc: "§4",
        stable: &[((5, 10), 154), ((5, 15), 78)],
        note: "in 5.19-rc8 (Linus's shortlog); backported as a Stable-dep-of 2e3272bc1790 \"KVM: x86: Copy filter arg outside kvm_vm_ioctl_set_msr_filter()\": [PATCH 5.10 010/118] (5.10.154-rc1) and [PATCH 5.15 010/144] (5.15.78-rc1), whose diffs add the -EINVAL checks to kvm_vm_ioctl_enable_cap() and kvm_vm_ioctl_set_msr_filter()",
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
        note: "in the 6.0 merge window: a push log of a tree following Linus's master (2022-08-05) carries it after \"Merge branch 'kvm-5.20-early'\", with b9181c8ef356 and 281b52780b57; no stable backport mail for it in the stored stable@vger archive",
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
        note: "adds KVM_X86_QUIRK_MWAIT_NEVER_UD_FAULTS (bit 6); 6.0 as above",
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
        note: "makes bits 11 and 12 (MSR_IA32_MISC_ENABLE_PMU_RO_MASK) read-only for the guest; bit 12 alone was read-only since the PEBS work of 5.12, which the model does not separate; in the 6.0 KVM merge (August 2022); no stable backport mail for it in the stored stable@vger archive",
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
        note: "0x1800 = BTS_UNAVAIL | PEBS_UNAVAIL as read in the 6.0 tree at RESET; no stable backport mail for it in the stored stable@vger archive",
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
        stable: &[((5, 10), 137), ((5, 15), 61), ((5, 18), 18)],
        note: "stable: the \"Linux 5.10.137\" and \"Linux 5.15.61\" release announcements list it ([PATCH 5.10 471/545], [PATCH 5.15 709/779], \"[ Upstream commit 2368048bf5c2ec4b604ac3431564071e89a0bc71 ]\", diff: set_msr_mce() `return -1` -> `return 1` twice); \"Linux 5.18.18\" lists it too; a 5.19.y backport was not found. 6.1.y and later have it from mainline",
    },
    Change {
        release: (6, 0),
        switch: "mce_ctl_bit0_ok",
        value: "true",
        apply: set!(mce_ctl_bit0_ok = true),
        commit: "0471a7bd1bca",
        subject: "KVM: set_msr_mce: Permit guests to ignore single-bit ECC errors",
        function: "set_msr_mce()",
        file: "arch/x86/kvm/x86.c",
        code: Code::Common,
        doc: "§5",
        stable: &[((5, 10), 137), ((5, 15), 61), ((5, 18), 18), ((5, 19), 2)],
        note: "upstream hash from the stable backports (\"[ Upstream commit 0471a7bd1bca2a47a5f378f2222c5cf39ce94152 ]\"; 7e345a215d35 was an earlier kvm.git next hash of the same patch); not in 5.19 (5.19.2-rc1 [PATCH 5.19 1063/1157] backports it); \"Linux 5.10.137\" and \"Linux 5.15.61\" list it ([PATCH 5.10 470/545]: `(data | (1 << 10))` -> `(data | (1 << 10) | 1)` in set_msr_mce()); 5.18.18-rc1 [PATCH 5.18 0993/1095]",
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
        note: "in the 6.0 KVM merge (August 2022, the CMCI/UCNA series); a feature: no stable backport mail for it in the stored stable@vger archive",
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
        release: (6, 0),
        switch: "vcpu_events_triple_fault",
        value: "true",
        apply: set!(vcpu_events_triple_fault = true),
        commit: "ed2351174e38",
        subject: "KVM: x86: Extend KVM_{G,S}ET_VCPU_EVENTS to support pending triple fault",
        function: "kvm_vcpu_ioctl_x86_set_vcpu_events()",
        file: "arch/x86/kvm/x86.c",
        code: Code::Common,
        doc: "§0",
        stable: &[],
        note: "adds KVM_VCPUEVENT_VALID_TRIPLE_FAULT (0x20) to the flags KVM_SET_VCPU_EVENTS accepts, with KVM_CAP_X86_TRIPLE_FAULT_EVENT; before, any flag outside NMI_PENDING|SIPI_VECTOR|SHADOW|SMM|PAYLOAD fails the ioctl with -EINVAL; in the same 6.0 KVM merge as bfbcc81bb82c (push logs list them together); no stable backport mail for it in the stored stable@vger archive",
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
        note: "in \"Misc KVM x86 fixes and cleanups for 6.2\" (tags/kvm-x86-fixes-6.2-1, \"Let userspace set all supported bits in MSR_IA32_FEAT_CTL irrespective of the current guest CPUID\"); with 2d6cd68636d6 \"KVM: VMX: Move MSR_IA32_FEAT_CTL.LOCKED check into \\\"is valid\\\" helper\"; no Cc: stable, no stable backport mail for it in the stored stable@vger archive (so 6.1.y keeps the old check)",
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
        note: "with da3db168fb67 \"KVM: x86: Virtualize FLUSH_L1D and passthrough MSR_IA32_FLUSH_CMD\"; pushed to kvm.git next on 2023-04-12 (6.4 merge window); no stable backport mail for it in the stored stable@vger archive",
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
        note: "with 8b0e00fba934 \"KVM: x86: Virtualize HWCR.TscFreqSel[bit 24]\"; applied to kvm-x86 misc on 2023-10-09 (6.7 merge window); no stable backport mail for it in the stored stable@vger archive (6.1.y and 6.6.y keep the old rule)",
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
        note: "in \"[GIT PULL] KVM: x86: Misc changes for 6.12\" (tags/kvm-x86-misc-6.12); no stable backport mail for it in the stored stable@vger archive",
    },
    Change {
        release: (6, 12),
        switch: "x2apic_icr_reserved_gp",
        value: "true",
        apply: set!(x2apic_icr_reserved_gp = true),
        commit: "71bf395a276f",
        subject: "KVM: x86: Enforce x2APIC's must-be-zero reserved ICR bits",
        function: "kvm_x2apic_icr_write()",
        file: "arch/x86/kvm/lapic.c",
        code: Code::Common,
        doc: "§4",
        stable: &[((6, 1), 113), ((6, 6), 54), ((6, 10), 13)],
        note: "6.12: in \"[GIT PULL] KVM: x86: Misc changes for 6.12\" (tags/kvm-x86-misc-6.12, based on 6.11-rc4); Cc: stable: [PATCH 6.1 291/798] and [PATCH 6.6 411/538], listed in the \"Linux 6.1.113\" and \"Linux 6.6.54\" announcements, \"commit 71bf395a276f0578d19e0ae137a7d1d816d08e0e upstream\", diff adds X2APIC_ICR_RESERVED_BITS (GENMASK_ULL(31, 20) | GENMASK_ULL(17, 16) | BIT(13)) -> return 1 in kvm_x2apic_icr_write(); \"Linux 6.10.13\" lists it; 5.10.y/5.15.y: the FAILED-to-apply mails name dependencies, no backport found",
    },
    Change {
        release: (6, 12),
        switch: "valid_quirks",
        value: "0xff",
        apply: set!(valid_quirks = ValidQuirks::Mask(0xff)),
        commit: "aa8d1f48d353",
        subject: "KVM: x86/mmu: Introduce a quirk to control memslot zap behavior",
        function: "kvm_vm_ioctl_check_extension()",
        file: "arch/x86/kvm/x86.c",
        code: Code::Common,
        doc: "§6",
        stable: &[],
        note: "adds KVM_X86_QUIRK_SLOT_ZAP_ALL (bit 7); in Linus's tree in the 6.12 merge window (its shadow-MMU fix went to \"KVM fixes for 6.12-rc2\")",
    },
    Change {
        release: (6, 13),
        switch: "valid_quirks",
        value: "0x1ff",
        apply: set!(valid_quirks = ValidQuirks::Mask(0x1ff)),
        commit: "088b8eeb25ec",
        subject: "KVM: x86: Quirk initialization of feature MSRs to KVM's max configuration",
        function: "kvm_vm_ioctl_check_extension()",
        file: "arch/x86/kvm/x86.c",
        code: Code::Common,
        doc: "§6",
        stable: &[((6, 12), 78)],
        note: "adds KVM_X86_QUIRK_STUFF_FEATURE_MSRS (bit 8); in \"[GIT PULL] KVM: x86: Misc changes for 6.13\" (tags/kvm-x86-misc-6.13); backported to 6.12.78 (the \"Linux 6.12.78\" announcement lists it with the quirk series below)",
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
        note: "applied to kvm-x86 misc on 2025-02-14 (the \"applied\" mail names a487f6797c88), i.e. for the 6.15 merge window (6.14 was out of its merge window by then); no stable backport mail for it in the stored stable@vger archive",
    },
    Change {
        release: (6, 16),
        switch: "quirk_api",
        value: "v2-sticky",
        apply: set!(quirk_api = QuirkApi::V2Sticky),
        commit: "9966b7822b3f",
        subject: "KVM: x86: do not allow re-enabling quirks",
        function: "kvm_vm_ioctl_enable_cap()",
        file: "arch/x86/kvm/x86.c",
        code: Code::Common,
        doc: "§6",
        stable: &[((6, 12), 78)],
        note: "6.16: merged into Linus's master on 2025-05-29 (6.16 merge window) with the TDX series, next to bd7d5362b4c4 \"KVM: x86: Introduce supported_quirks to block disabling quirks\" (which masks the set with kvm_caps.supported_quirks); stable 6.12.78: [PATCH 6.12 261/460] (diff: `disabled_quirks = cap->args[0]` -> `|=`), a Stable-dep-of e2ffe85b6d2b \"KVM: x86: Introduce KVM_X86_QUIRK_VMCS12_ALLOW_FREEZE_IN_SMM\"; the \"Linux 6.12.78\" announcement lists it with a4dae7c7a41d, bd7d5362b4c4, c9c1e20b4c7d and 088b8eeb25ec",
    },
    Change {
        release: (6, 16),
        switch: "valid_quirks",
        value: "0x3ff",
        apply: set!(valid_quirks = ValidQuirks::Mask(0x3ff)),
        commit: "c9c1e20b4c7d",
        subject: "KVM: x86: Introduce Intel specific quirk KVM_X86_QUIRK_IGNORE_GUEST_PAT",
        function: "kvm_vm_ioctl_check_extension()",
        file: "arch/x86/kvm/x86.c",
        code: Code::Common,
        doc: "§6",
        stable: &[((6, 12), 78)],
        note: "adds KVM_X86_QUIRK_IGNORE_GUEST_PAT (bit 9), same 6.16 merge as 9966b7822b3f; VMX-only: SVM leaves it out of supported_quirks (a vendor difference the preset does not model; `host` uses the recorded mask); backported to 6.12.78 (\"Linux 6.12.78\" lists it). 6.12.78 and later 6.18.y also add bit 10, KVM_X86_QUIRK_VMCS12_ALLOW_FREEZE_IN_SMM (e2ffe85b6d2b), whose mainline release is after 6.18 (backported to 6.18.y and 6.19.y too): not tabled, so the 6.12.78 preset reports 0x3ff where the kernel reports 0x7ff (VMX) / 0x5ff (SVM)",
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
