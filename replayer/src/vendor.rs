//! The vendor table: what a vendor module does differently, with the evidence.
//!
//! A preset's *release* decides every rule of common KVM code (`x86.c`,
//! `lapic.c`, ...; `presets/changes.rs`); only behaviour of a vendor module
//! (`vmx.c`, `svm.c`, out-of-tree `pvm.c`) comes from the vendor. Intel and AMD
//! differences are vendor dispatch in the model itself (the kernel's own
//! `kvm_x86_ops`); the peculiarities *measured* on this project's `kvm_pvm`
//! host live here, each with its evidence (docs/host-notes.md) and its scope:
//!
//! - [`Scope::Module`]: code of the pvm module itself (`pvm_get_msr`,
//!   `pvm_set_msr`, its exit handling): true of pvm under any release.
//! - [`Scope::Measured`]: a result that contradicts common code of upstream
//!   `x86.c` at the release it was measured on; without pvm's source it cannot
//!   be placed in a release, so it applies only to policies of the measured
//!   release (`host` on this machine, `kvm-6.18`), never to `kvm-5.10` on a
//!   trace from this host.

use serde::Serialize;

use crate::policy::Vendor;

/// One vendor peculiarity (a bit of `Policy::facts`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fact {
    /// MISC_ENABLE is 0x1 (FAST_STRING) at RESET.
    MiscEnableResetFastString = 0,
    /// A guest's MISC_ENABLE write is stored unchecked (no read-only bits, no
    /// SSE3 check).
    MiscEnableGuestUnchecked = 1,
    /// A guest's PAT write is stored without `kvm_pat_valid`.
    PatUnchecked = 2,
    /// DEBUGCTL reads 0, writes are ignored (`pvm_get/set_msr`).
    DebugctlZero = 4,
    /// SVM-only MSRs (TSC_RATIO, VM_CR, DE_CFG) have no case; the LBR MSRs
    /// read 0.
    SvmMsrsAbsent = 5,
    /// IA32_FEAT_CTL has no handler and is not advertised.
    FeatCtlAbsent = 6,
    /// A triple fault changes nothing in the kernel (KVM_EXIT_SHUTDOWN,
    /// registers at the fault).
    ShutdownResume = 7,
    /// Segment attributes of RESET/INIT state were not measured.
    SegmentAttrsUnknown = 8,
    /// The LAPIC has no hardware acceleration checks of ICR writes.
    NoApicAccel = 9,
    /// STAR selectors of a guest write are checked (not measured: no rule).
    StarUnmeasured = 10,
    /// PRED_CMD/FLUSH_CMD guest writes are accepted whatever the value and
    /// whatever the guest CPUID.
    CmdMsrsUnchecked = 11,
    /// SPEC_CTRL reads 0 and a write of bits 0-2 is accepted and dropped,
    /// whatever the guest CPUID; the host's write of 0 is accepted.
    SpecCtrlZero = 12,
    /// TSX_CTRL (0x122) and VIRT_SPEC_CTRL (0xc001011f): a host write of 0 is
    /// accepted and a host read returns 0.
    HostSpecMsrsZero = 13,
    /// A TSC_ADJUST write (guest or host) is stored without CPUID TSC_ADJUST.
    TscAdjustUngated = 14,
}

/// Where a fact holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The vendor module's own code: every release.
    Module,
    /// Measured against common code at this release only.
    Measured { release: (u32, u32) },
}

/// A row of the vendor table.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct VendorFact {
    pub vendor: Vendor,
    pub fact: Fact,
    pub scope: Scope,
    /// What the model does.
    pub what: &'static str,
    /// Where it was measured or read (docs/host-notes.md).
    pub evidence: &'static str,
}

const HOST: (u32, u32) = (6, 18);

/// Every vendor peculiarity the model applies.
pub const FACTS: &[VendorFact] = &[
    VendorFact {
        vendor: Vendor::Pvm,
        fact: Fact::MiscEnableResetFastString,
        scope: Scope::Measured { release: HOST },
        what: "MISC_ENABLE = 0x1 at RESET (not 0x1800)",
        evidence: "recorder/tests/host_probes.rs pvm_vendor_table_msr_facts: the RESET state read right after KVM_CREATE_VCPU has MISC_ENABLE 0x1 (docs/host-notes.md, RESET state)",
    },
    VendorFact {
        vendor: Vendor::Pvm,
        fact: Fact::MiscEnableGuestUnchecked,
        scope: Scope::Measured { release: HOST },
        what: "guest MISC_ENABLE writes stored unchecked (no bits 11/12 #GP, no SSE3 check)",
        evidence: "recorder/tests/host_probes.rs pvm_vendor_table_msr_facts: wrmsr 0x1a0 = 0x1801 -> ok, read back 0x1801; observe bit-probe, misc-enable-no-mwait (0x40001 without SSE3 -> ok) (docs/host-notes.md)",
    },
    VendorFact {
        vendor: Vendor::Pvm,
        fact: Fact::PatUnchecked,
        scope: Scope::Measured { release: HOST },
        what: "guest PAT writes stored without kvm_pat_valid",
        evidence: "recorder/tests/host_probes.rs pvm_vendor_table_msr_facts: wrmsr 0x277 = 0x704060007040e -> ok, read back (docs/host-notes.md)",
    },
    VendorFact {
        vendor: Vendor::Pvm,
        fact: Fact::DebugctlZero,
        scope: Scope::Module,
        what: "DEBUGCTL reads 0, writes ignored",
        evidence: "pvm.c pvm_get_msr/pvm_set_msr MSR_IA32_DEBUGCTLMSR (virt-pvm/linux); recorder/tests/host_probes.rs pvm_vendor_table_msr_facts: wrmsr 0x1d9 = 1, rdmsr -> 0",
    },
    VendorFact {
        vendor: Vendor::Pvm,
        fact: Fact::SvmMsrsAbsent,
        scope: Scope::Module,
        what: "SVM-only MSRs r=2; LBR MSRs read 0",
        evidence: "pvm.c pvm_get_msr has no case for TSC_RATIO/VM_CR/DE_CFG (virt-pvm/linux)",
    },
    VendorFact {
        vendor: Vendor::Pvm,
        fact: Fact::FeatCtlAbsent,
        scope: Scope::Module,
        what: "IA32_FEAT_CTL: no handler, not advertised (guest #GP, host refused)",
        evidence: "recorder/tests/host_probes.rs pvm_vendor_table_msr_facts: guest rdmsr 0x3a -> #GP; HOST.md: host KVM_GET/SET_MSRS process 0 entries; 0x3a not in KVM_GET_MSR_INDEX_LIST",
    },
    VendorFact {
        vendor: Vendor::Pvm,
        fact: Fact::ShutdownResume,
        scope: Scope::Module,
        what: "triple fault: KVM_EXIT_SHUTDOWN, registers at the fault (no INIT)",
        evidence: "recorder/tests/host_probes.rs shutdown_keeps_registers_at_the_fault; HOST.md: no INIT on shutdown, unlike SVM hosts since 5.15",
    },
    VendorFact {
        vendor: Vendor::Pvm,
        fact: Fact::SegmentAttrsUnknown,
        scope: Scope::Module,
        what: "segment attributes of RESET/INIT state not compared",
        evidence: "not measured (docs/host-notes.md, RESET state)",
    },
    VendorFact {
        vendor: Vendor::Pvm,
        fact: Fact::NoApicAccel,
        scope: Scope::Module,
        what: "no APIC hardware acceleration checks of ICR writes",
        evidence: "kvm_pvm has no APICv/AVIC (HOST.md)",
    },
    VendorFact {
        vendor: Vendor::Pvm,
        fact: Fact::StarUnmeasured,
        scope: Scope::Module,
        what: "guest STAR writes: no rule (pvm_set_msr checks the selectors; not measured)",
        evidence: "pvm.c pvm_set_msr MSR_STAR (virt-pvm/linux)",
    },
    VendorFact {
        vendor: Vendor::Pvm,
        fact: Fact::CmdMsrsUnchecked,
        scope: Scope::Measured { release: HOST },
        what: "PRED_CMD/FLUSH_CMD guest writes accepted whatever the value and the guest CPUID",
        evidence: "recorder/tests/host_probes.rs pvm_speculation_msrs (observe msr-suite and msr-suite-bare: every single bit 0-63 accepted, with and without SPEC_CTRL/FLUSH_L1D/IBPB in CPUID; docs/host-notes.md)",
    },
    VendorFact {
        vendor: Vendor::Pvm,
        fact: Fact::SpecCtrlZero,
        scope: Scope::Measured { release: HOST },
        what: "SPEC_CTRL reads 0, guest writes of bits 0-2 accepted and dropped (any CPUID), host write of 0 accepted",
        evidence: "recorder/tests/host_probes.rs pvm_speculation_msrs (observe msr-suite/msr-suite-bare: wrmsr 0x48 = 1, 2, 4, 7 then rdmsr -> 0; KVM_SET_MSRS 0x48 = 0 ok, KVM_GET_MSRS -> 0; docs/host-notes.md)",
    },
    VendorFact {
        vendor: Vendor::Pvm,
        fact: Fact::HostSpecMsrsZero,
        scope: Scope::Measured { release: HOST },
        what: "host TSX_CTRL/VIRT_SPEC_CTRL: write of 0 accepted, read 0",
        evidence: "recorder/tests/host_probes.rs pvm_speculation_msrs (KVM_SET_MSRS 0x122/0xc001011f = 0 ok, KVM_GET_MSRS -> 0; docs/host-notes.md)",
    },
    VendorFact {
        vendor: Vendor::Pvm,
        fact: Fact::TscAdjustUngated,
        scope: Scope::Measured { release: HOST },
        what: "TSC_ADJUST writes (guest and host) stored without CPUID.7.0:EBX[1] (upstream drops them)",
        evidence: "recorder/tests/host_probes.rs pvm_tsc_adjust_without_cpuid (observe msr-suite-bare: KVM_SET_MSRS 0x3b = 0x1000, guest rdmsr -> 0x1000; wrmsr 0x3b = 100000000000, rdmsr -> 100000000000; docs/host-notes.md)",
    },
];

/// The facts (bit mask of [`Fact`]) that apply to `vendor` at `release`.
pub fn facts_for(vendor: Vendor, release: Option<(u32, u32)>) -> u32 {
    FACTS
        .iter()
        .filter(|f| f.vendor == vendor)
        .filter(|f| match f.scope {
            Scope::Module => true,
            Scope::Measured { release: r } => release == Some(r),
        })
        .fold(0, |m, f| m | 1 << f.fact as u32)
}

/// The rows behind a fact mask, for `policies`.
pub fn rows_of(mask: u32) -> Vec<&'static VendorFact> {
    FACTS
        .iter()
        .filter(|f| mask & (1 << f.fact as u32) != 0)
        .collect()
}

/// The measured rows of `vendor` a policy of another release leaves out.
pub fn left_out(vendor: Vendor, mask: u32) -> Vec<&'static VendorFact> {
    FACTS
        .iter()
        .filter(|f| f.vendor == vendor && mask & (1 << f.fact as u32) == 0)
        .collect()
}
