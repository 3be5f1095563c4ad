//! The guest-visible state the models depend on, folded from the trace header
//! and events only (never from the capture machinery: DESIGN.md, Policies).

use kvmtrace_format::{CpuidEntry, Irqchip, MsrFilter};

/// KVM_MAX_MCE_BANKS: `mcg_cap` until `KVM_X86_SETUP_MCE` (§5).
pub const MAX_MCE_BANKS: usize = 32;
/// The largest vCPU index a trace may use (KVM_MAX_VCPUS with
/// CONFIG_KVM_MAX_NR_VCPUS = 4096); beyond it events are unmodeled.
pub const MAX_VCPUS: usize = 4096;

/// KVM_MAX_CPUID_ENTRIES: the most CPUID entries a vCPU keeps.
pub const MAX_CPUID_ENTRIES: usize = 256;

pub const MCG_CTL_P: u64 = 1 << 8;
pub const MCG_CMCI_P: u64 = 1 << 10;
pub const MCG_LMCE_P: u64 = 1 << 27;

/// IA32_FEAT_CTL bits (§3).
pub const FEAT_CTL_LOCKED: u64 = 1 << 0;
pub const FEAT_CTL_VMX_INSIDE_SMX: u64 = 1 << 1;
pub const FEAT_CTL_VMX_OUTSIDE_SMX: u64 = 1 << 2;
pub const FEAT_CTL_SGX_LC: u64 = 1 << 17;
pub const FEAT_CTL_SGX: u64 = 1 << 18;
pub const FEAT_CTL_LMCE: u64 = 1 << 20;
/// `KVM_SUPPORTED_FEATURE_CONTROL`.
pub const FEAT_CTL_SUPPORTED: u64 = 0x160007;

pub const APIC_BASE_BSP: u64 = 1 << 8;
pub const APIC_BASE_EXTD: u64 = 1 << 10;
pub const APIC_BASE_EN: u64 = 1 << 11;
pub const APIC_DEFAULT: u64 = 0xfee0_0000;

/// State an imported trace (which starts mid-run) does not know until a read
/// teaches it or a write stores it (`VcpuState::unknown`, issue 6 item 5).
pub const U_MISC_ENABLE: u32 = 1 << 0;
pub const U_PAT: u32 = 1 << 1;
pub const U_APIC_BASE: u32 = 1 << 2;
pub const U_HWCR: u32 = 1 << 3;
pub const U_FEAT_CTL: u32 = 1 << 4;
pub const U_MCG_CAP: u32 = 1 << 5;
pub const U_MCG_STATUS: u32 = 1 << 6;
pub const U_MCG_CTL: u32 = 1 << 7;
pub const U_MCG_EXT_CTL: u32 = 1 << 8;
/// Values of MCi_CTL/STATUS/ADDR/MISC (all banks).
pub const U_BANKS: u32 = 1 << 9;
pub const U_CTL2: u32 = 1 << 10;
pub const U_ALL: u32 = (1 << 11) - 1;

/// CPUID leaves seen (`CpuidBits::leaves`): a feature bit is only trusted
/// absent when its leaf is known.
pub const LEAF_1: u32 = 1 << 0;
pub const LEAF_7: u32 = 1 << 1;
pub const LEAF_D1: u32 = 1 << 2;
pub const LEAF_8000_0001: u32 = 1 << 3;
pub const LEAF_8000_0008: u32 = 1 << 4;
pub const LEAF_4000_0001: u32 = 1 << 5;
pub const LEAF_A: u32 = 1 << 6;
pub const LEAF_8000_0022: u32 = 1 << 7;
pub const LEAF_8000_0021: u32 = 1 << 8;
/// Every leaf: the CPUID a VMM set is complete (a leaf it left out is absent).
pub const LEAF_ALL: u32 = u32::MAX;

/// The guest CPUID bits the models read, per vCPU (`KVM_SET_CPUID2`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuidBits {
    /// A leaf-1 entry exists (runtime CPUID updates need one).
    pub has_leaf1: bool,
    /// CPUID.1:EAX of the leaf-1 entry `kvm_find_cpuid_entry(vcpu, 1)` finds
    /// (consolidated INIT RDX, §2).
    pub leaf1_eax: Option<u32>,
    /// CPUID.1:ECX[3].
    pub mwait: bool,
    /// CPUID.1:ECX[0].
    pub sse3: bool,
    /// CPUID.1:ECX[5].
    pub vmx: bool,
    /// CPUID.1:ECX[21].
    pub x2apic: bool,
    /// CPUID.1:ECX[24] TSC_DEADLINE (LVTT timer mode mask).
    pub tsc_deadline: bool,
    /// CPUID.7.0:EBX[1] TSC_ADJUST.
    pub tsc_adjust: bool,
    /// CPUID.0xA: EAX[7:0] version, EAX[15:8] GP counters, EDX[4:0] fixed.
    pub pmu_version: u8,
    pub pmu_gp: u8,
    pub pmu_fixed: u8,
    /// CPUID.0x80000001:ECX[23] PerfCtrExtCore.
    pub perfctr_core: bool,
    /// CPUID.0x80000022: EAX[0] PerfMonV2, EBX[3:0] core counters.
    pub perfmon_v2: bool,
    pub amd_pmu_gp: u8,
    /// CPUID.7.0:EDX[26] SPEC_CTRL (IBRS/IBPB), EDX[28] FLUSH_L1D.
    pub spec_ctrl: bool,
    pub flush_l1d: bool,
    /// CPUID.0x80000008:EBX[12] AMD_IBPB, [14] AMD_IBRS, [15] AMD_STIBP, [24] AMD_SSBD.
    pub amd_ibpb: bool,
    pub amd_ibrs: bool,
    pub amd_stibp: bool,
    pub amd_ssbd: bool,
    /// CPUID.0x80000021:EAX[27] SBPB.
    pub sbpb: bool,
    /// The vendor string is GenuineIntel (host: which PMU code KVM runs).
    pub genuine_intel: bool,
    /// CPUID.7.0:EBX[2].
    pub sgx: bool,
    /// CPUID.7.0:ECX[30].
    pub sgx_lc: bool,
    /// Vendor string AuthenticAMD or HygonGenuine (`can_set_mci_status`, §5).
    pub amd_or_hygon: bool,
    /// CPUID.0x80000008:EAX[7:0], 36 when absent.
    pub maxphyaddr: u8,
    /// A leaf-0 entry exists (the guest CPUID is known at all).
    pub known: bool,
    /// `LEAF_*` bits of the leaves present.
    pub leaves: u32,
    /// Vendor GenuineIntel, CentaurHauls or "  Shanghai  "
    /// (`guest_cpuid_is_intel_compatible` before fd706c9b1674, 6.9; since
    /// then it is !AMD/Hygon, so a vendor in neither set differs by release).
    pub intel_compatible: bool,
    /// CPUID.7.0:EDX[29] ARCH_CAPABILITIES.
    pub arch_capabilities: bool,
    /// CPUID.1:ECX[15] PDCM.
    pub pdcm: bool,
    /// CPUID.0xD.1:EAX[3] XSAVES.
    pub xsaves: bool,
    /// CPUID.0x80000001:EDX[27] RDTSCP.
    pub rdtscp: bool,
    /// CPUID.0x80000001:EDX[29] LM, EDX[20] NX, EDX[25] FFXSR, ECX[2] SVM
    /// (`__kvm_valid_efer`).
    pub lm: bool,
    pub nx: bool,
    pub fxsr_opt: bool,
    pub svm: bool,
    /// CPUID.0x80000001:ECX[9] OSVW.
    pub osvw: bool,
    /// CPUID.7.0:ECX[22] RDPID.
    pub rdpid: bool,
    /// CPUID.0x40000001:EAX = "Hv#1" (`kvm_cpuid_has_hyperv`).
    pub hyperv: bool,
    /// CPUID.0x40000001:EAX when 0x40000000 has the "KVMKVMKVM" signature: the
    /// KVM PV features (`guest_pv_has` is true for a set bit, enforced or not).
    pub kvm_pv_features: u32,
    /// CPUID.0x40000000 or 0x40000100 signature "XenVMMXenVMM": the VMM may
    /// have set a Xen hypercall-page MSR (`xen_hvm_config.msr`, any index).
    pub xen: bool,
}

impl CpuidBits {
    pub fn from_entries(entries: &[CpuidEntry]) -> CpuidBits {
        let find = |f: u32, i: u32| {
            entries
                .iter()
                .find(|e| e.function == f && (e.index == i || e.flags & 1 == 0))
        };
        let mut c = CpuidBits {
            maxphyaddr: 36,
            ..CpuidBits::default()
        };
        if let Some(l0) = find(0, 0) {
            c.known = true;
            let v = (l0.ebx, l0.edx, l0.ecx);
            c.genuine_intel = v == (0x756e_6547, 0x4965_6e69, 0x6c65_746e);
            c.intel_compatible = v == (0x756e_6547, 0x4965_6e69, 0x6c65_746e)
                || v == (0x746e_6543, 0x4872_7561, 0x736c_7561)
                || v == (0x6853_2020, 0x6961_6867, 0x2020_6961);
            // "AuthenticAMD" = ebx "Auth", edx "enti", ecx "cAMD"; Hygon "HygonGenuine".
            c.amd_or_hygon = (l0.ebx, l0.edx, l0.ecx) == (0x6874_7541, 0x6974_6e65, 0x444d_4163)
                || (l0.ebx, l0.edx, l0.ecx) == (0x6f67_7948, 0x6e65_476e, 0x656e_6975);
        }
        if let Some(l1) = find(1, 0) {
            c.leaves |= LEAF_1;
            c.has_leaf1 = true;
            c.leaf1_eax = Some(l1.eax);
            c.sse3 = l1.ecx & 1 != 0;
            c.mwait = l1.ecx & (1 << 3) != 0;
            c.vmx = l1.ecx & (1 << 5) != 0;
            c.x2apic = l1.ecx & (1 << 21) != 0;
            c.tsc_deadline = l1.ecx & (1 << 24) != 0;
            c.pdcm = l1.ecx & (1 << 15) != 0;
        }
        if let Some(e) = find(0xa, 0) {
            c.leaves |= LEAF_A;
            c.pmu_version = (e.eax & 0xff) as u8;
            c.pmu_gp = ((e.eax >> 8) & 0xff) as u8;
            c.pmu_fixed = (e.edx & 0x1f) as u8;
        }
        if let Some(e) = find(0x8000_0022, 0) {
            c.leaves |= LEAF_8000_0022;
            c.perfmon_v2 = e.eax & 1 != 0;
            c.amd_pmu_gp = (e.ebx & 0xf) as u8;
        }
        if let Some(e) = find(0x8000_0021, 0) {
            c.leaves |= LEAF_8000_0021;
            c.sbpb = e.eax & (1 << 27) != 0;
        }
        if let Some(e) = find(0xd, 1) {
            c.leaves |= LEAF_D1;
            c.xsaves = e.eax & (1 << 3) != 0;
        }
        if let Some(e) = find(0x8000_0001, 0) {
            c.leaves |= LEAF_8000_0001;
            c.rdtscp = e.edx & (1 << 27) != 0;
            c.lm = e.edx & (1 << 29) != 0;
            c.nx = e.edx & (1 << 20) != 0;
            c.fxsr_opt = e.edx & (1 << 25) != 0;
            c.svm = e.ecx & (1 << 2) != 0;
            c.perfctr_core = e.ecx & (1 << 23) != 0;
            c.osvw = e.ecx & (1 << 9) != 0;
        }
        if let Some(e) = find(0x4000_0001, 0) {
            c.leaves |= LEAF_4000_0001;
            c.hyperv = e.eax == 0x3123_7648;
        }
        if find(0x4000_0000, 0)
            .is_some_and(|e| (e.ebx, e.ecx, e.edx) == (0x4b4d_564b, 0x564b_4d56, 0x4d))
        {
            c.kvm_pv_features = find(0x4000_0001, 0).map_or(0, |e| e.eax);
        }
        c.xen = [0x4000_0000, 0x4000_0100]
            .iter()
            .any(|&f| find(f, 0).is_some_and(|e| e.ebx == 0x566e_6558));
        if let Some(l7) = find(7, 0) {
            c.leaves |= LEAF_7;
            c.sgx = l7.ebx & (1 << 2) != 0;
            c.sgx_lc = l7.ecx & (1 << 30) != 0;
            c.rdpid = l7.ecx & (1 << 22) != 0;
            c.arch_capabilities = l7.edx & (1 << 29) != 0;
            c.spec_ctrl = l7.edx & (1 << 26) != 0;
            c.tsc_adjust = l7.ebx & (1 << 1) != 0;
            c.flush_l1d = l7.edx & (1 << 28) != 0;
        }
        if let Some(e) = find(0x8000_0008, 0) {
            c.leaves |= LEAF_8000_0008;
            c.amd_ibpb = e.ebx & (1 << 12) != 0;
            c.amd_ibrs = e.ebx & (1 << 14) != 0;
            c.amd_stibp = e.ebx & (1 << 15) != 0;
            c.amd_ssbd = e.ebx & (1 << 24) != 0;
            let w = (e.eax & 0xff) as u8;
            if w != 0 {
                c.maxphyaddr = w.min(52);
            }
        }
        c
    }
}

/// Per-vCPU state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VcpuState {
    pub id: u32,
    /// `id` is the vCPU's `vcpu_id` (x2APIC ID): false in a capture whose thread
    /// -> vCPU mapping was a guess (`VcpuIdentity::FirstSeen`, or text with no
    /// `VcpuThread` record), until a read of the x2APIC ID teaches it.
    pub id_known: bool,
    pub misc_enable: u64,
    pub feat_ctl: u64,
    pub hwcr: u64,
    pub pat: u64,
    pub apic_base: u64,
    pub mcg_cap: u64,
    pub mcg_status: u64,
    pub mcg_ctl: u64,
    pub mcg_ext_ctl: u64,
    /// MCi_CTL/STATUS/ADDR/MISC, 4 per bank.
    pub mce_banks: [u64; MAX_MCE_BANKS * 4],
    pub mci_ctl2: [u64; MAX_MCE_BANKS],
    /// The MCi_* registers (bit = offset from MC0_CTL) whose value the model
    /// knows while `unknown` has `U_BANKS` (`model::host`).
    pub mce_known: u128,
    /// Registers only host accesses decide (`model::host`).
    pub host: crate::model::HostRegs,
    pub cpuid: CpuidBits,
    /// The guest CPUID entries known so far (at most `MAX_CPUID_ENTRIES`).
    pub cpuid_entries: Vec<CpuidEntry>,
    pub cr0: u64,
    pub mp_state: u32,
    /// The registers of the MSR tables (`model::common::reg_slot`), valid
    /// where the bit of `regs_known` is set.
    pub regs: [u64; crate::model::NREGS],
    pub regs_known: u64,
    /// `U_*` bits of the state above an imported trace does not know yet.
    pub unknown: u32,
    /// The CPUID entries are the VMM's whole `KVM_SET_CPUID2` (recordings), not
    /// the leaves an imported text happened to show.
    pub cpuid_complete: bool,
    /// The in-kernel LAPIC registers the model knows (`model::lapic`).
    pub lapic: crate::model::LapicRegs,
    /// SPEC_CTRL (VMX/SVM `spec_ctrl`, 0 at RESET and INIT) where known.
    pub spec_ctrl: Option<u64>,
    /// KVM PV and TSC_ADJUST values the model knows (`model::pv`).
    pub pv: crate::model::PvRegs,
}

impl VcpuState {
    /// Fold CPUID entries: each replaces the known entry with the same
    /// (function, index), others are kept. A `KVM_SET_CPUID2` lists every leaf;
    /// observe/import traces list the leaves the guest executed so far
    /// (docs/host-notes.md), so replacing the whole set would lose leaves.
    pub fn merge_cpuid(&mut self, entries: &[CpuidEntry]) {
        for e in entries {
            let known = &mut self.cpuid_entries;
            match known
                .iter()
                .position(|k| k.function == e.function && k.index == e.index)
            {
                Some(i) => known[i] = *e,
                None if known.len() < MAX_CPUID_ENTRIES => known.push(*e),
                None => {}
            }
        }
        self.cpuid = CpuidBits::from_entries(&self.cpuid_entries);
        if self.cpuid_complete {
            self.cpuid.leaves = LEAF_ALL;
        }
    }

    /// The state at `KVM_CREATE_VCPU` (RESET, §2; MCE §5; FEAT_CTL 0, §3).
    pub fn created(id: u32, misc_enable_reset: u64, irqchip: Irqchip) -> VcpuState {
        VcpuState {
            id,
            id_known: true,
            misc_enable: misc_enable_reset,
            feat_ctl: 0,
            hwcr: 0,
            pat: 0x0007_0406_0007_0406,
            apic_base: reset_apic_base(id),
            mcg_cap: MAX_MCE_BANKS as u64,
            mcg_status: 0,
            mcg_ctl: 0,
            mcg_ext_ctl: 0,
            mce_banks: [0; MAX_MCE_BANKS * 4],
            mci_ctl2: [0; MAX_MCE_BANKS],
            mce_known: 0,
            host: crate::model::HostRegs::default(),
            cpuid: CpuidBits {
                maxphyaddr: 36,
                leaves: LEAF_ALL,
                ..CpuidBits::default()
            },
            cpuid_entries: Vec::new(),
            cr0: 0x6000_0010,
            mp_state: reset_mp_state(id, irqchip),
            regs: crate::model::REGS_AT_RESET,
            regs_known: crate::model::REGS_KNOWN_AT_RESET,
            unknown: 0,
            cpuid_complete: true,
            lapic: crate::model::LapicRegs::default(),
            spec_ctrl: Some(0),
            pv: crate::model::PvRegs::created(),
        }
    }

    pub fn bank_num(&self) -> usize {
        (self.mcg_cap & 0xff) as usize
    }

    pub fn x2apic_mode(&self) -> bool {
        self.apic_base & (APIC_BASE_EN | APIC_BASE_EXTD) == APIC_BASE_EN | APIC_BASE_EXTD
    }

    /// `msr_ia32_feature_control_valid_bits` (§3).
    pub fn feat_ctl_valid(&self, sgx_supported: bool) -> u64 {
        let mut v = FEAT_CTL_LOCKED;
        if self.cpuid.vmx {
            v |= FEAT_CTL_VMX_INSIDE_SMX | FEAT_CTL_VMX_OUTSIDE_SMX;
        }
        if sgx_supported && self.cpuid.sgx {
            v |= FEAT_CTL_SGX;
        }
        if sgx_supported && self.cpuid.sgx_lc {
            v |= FEAT_CTL_SGX_LC;
        }
        if self.mcg_cap & MCG_LMCE_P != 0 {
            v |= FEAT_CTL_LMCE;
        }
        v
    }

    /// `can_set_mci_status` (§5).
    pub fn can_set_mci_status(&self) -> bool {
        self.cpuid.amd_or_hygon && self.hwcr & (1 << 18) != 0
    }
}

/// APIC base at RESET: 0xfee00000 | EN | BSP for vCPU 0 (bsp_vcpu_id default 0).
pub fn reset_apic_base(id: u32) -> u64 {
    APIC_DEFAULT | APIC_BASE_EN | if id == 0 { APIC_BASE_BSP } else { 0 }
}

/// mp_state after create: RUNNABLE without an in-kernel LAPIC or for the BSP,
/// else UNINITIALIZED (§2).
pub fn reset_mp_state(id: u32, irqchip: Irqchip) -> u32 {
    if irqchip == Irqchip::None || id == 0 {
        0
    } else {
        1
    }
}

/// The scenario's MSR filter, compiled for lookups (§4 `kvm_msr_allowed`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    default_deny: bool,
    ranges: Vec<(u32, u32, u32, Vec<u8>)>,
}

/// Why `KVM_X86_SET_MSR_FILTER` would fail (EINVAL), keeping the old filter.
pub fn filter_invalid(f: &MsrFilter) -> Option<&'static str> {
    if f.ranges.len() > 16 {
        return Some("more than 16 ranges");
    }
    for r in &f.ranges {
        if r.nmsrs == 0 {
            continue;
        }
        if r.flags & !3 != 0 || r.flags == 0 {
            return Some("range flags not READ|WRITE");
        }
        if r.bitmap.len() > 0x600 || r.nmsrs > 0x600 * 8 {
            return Some("bitmap larger than 0x600 bytes");
        }
    }
    if f.default_deny && f.ranges.iter().all(|r| r.nmsrs == 0) {
        return Some("DEFAULT_DENY with no ranges");
    }
    None
}

impl Filter {
    /// A valid filter compiled; `None` when it filters nothing (all ranges empty,
    /// default allow).
    pub fn compile(f: &MsrFilter) -> Option<Filter> {
        let ranges: Vec<_> = f
            .ranges
            .iter()
            .filter(|r| r.nmsrs > 0)
            .map(|r| (r.base, r.nmsrs, r.flags, r.bitmap.clone()))
            .collect();
        if ranges.is_empty() && !f.default_deny {
            return None;
        }
        Some(Filter {
            default_deny: f.default_deny,
            ranges,
        })
    }

    /// `kvm_msr_allowed(idx, type)` without the x2APIC exemption; `write` selects
    /// `KVM_MSR_FILTER_WRITE`.
    pub fn allows(&self, idx: u32, write: bool) -> bool {
        let ty = if write { 2 } else { 1 };
        for (base, n, flags, bitmap) in &self.ranges {
            if flags & ty != 0 && idx >= *base && idx - base < *n {
                let bit = (idx - base) as usize;
                return bitmap
                    .get(bit / 8)
                    .is_some_and(|b| b & (1 << (bit % 8)) != 0);
            }
        }
        !self.default_deny
    }
}

/// Per-VM state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmState {
    pub disabled_quirks: u64,
    pub user_space_msr: u32,
    pub filter: Option<Filter>,
    pub irqchip: Irqchip,
    /// Whether `irqchip` is known: an imported text does not show it until an
    /// x2APIC access succeeds in the kernel.
    pub irqchip_known: bool,
    /// `kvm->arch.wall_clock` (MSR_KVM_WALL_CLOCK/_NEW, VM-wide) where known.
    pub wall_clock: Option<u64>,
}

impl VmState {
    pub fn quirk(&self, bit: u64) -> bool {
        self.disabled_quirks & bit == 0
    }

    pub fn lapic_in_kernel(&self) -> bool {
        self.irqchip != Irqchip::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvmtrace_format::MsrFilterRange;

    #[test]
    fn filter_rules() {
        // SEMANTICS.md §4: DEFAULT_DENY with no ranges is EINVAL.
        let deny_empty = MsrFilter {
            default_deny: true,
            ranges: vec![],
        };
        assert!(filter_invalid(&deny_empty).is_some());
        let f = MsrFilter {
            default_deny: true,
            ranges: vec![MsrFilterRange {
                flags: 3,
                base: 0,
                nmsrs: 0x2000,
                bitmap: {
                    let mut b = vec![0u8; 0x400];
                    b[0x10 / 8] = 1 << (0x10 % 8);
                    b
                },
            }],
        };
        assert!(filter_invalid(&f).is_none());
        let c = Filter::compile(&f).unwrap();
        assert!(c.allows(0x10, false));
        assert!(!c.allows(0x3a, true));
        assert!(!c.allows(0xc000_0080, false));
    }
}
