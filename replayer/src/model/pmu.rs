//! PMU MSRs and the speculation-control command MSRs (issue 12 item 3).
//!
//! PMU (every release: the same cases in 5.10 and 6.18): which PMU MSRs exist for the guest, as pmu.c
//! `kvm_pmu_is_valid_msr`, vmx/pmu_intel.c `intel_pmu_refresh` /
//! `intel_is_valid_msr` / `get_gp_pmc` / `get_fixed_pmc`, svm/pmu.c
//! `amd_pmu_refresh` / `get_gp_pmc_amd` / `amd_is_valid_msr` decide, with
//! KVM's PMU capabilities (`kvm_init_pmu_capability`: all zero with
//! `enable_pmu=0`) read from KVM's supported CPUID in the header (leaf 0xA on
//! Intel hosts, PerfCtrExtCore/PerfMonV2 on AMD hosts). An MSR with no counter
//! behind it falls to x86.c: the legacy P6/K7 cases of
//! `kvm_get_msr_common`/`kvm_set_msr_common` (read 0, any write accepted),
//! anything else `KVM_MSR_RET_UNSUPPORTED` (r = 2). Accesses to counters that
//! exist are not predicted (counter values are time; event selects and global
//! controls are left to a later model).
//!
//! Speculation control (switch `cmd_msrs_common`, 6.4+ where the handlers sit
//! in x86.c `kvm_set_msr_common`): PRED_CMD and FLUSH_CMD are write-only (no
//! read case: r = 2); a guest write needs `guest_has_pred_cmd_msr` /
//! FLUSH_L1D, and only IBPB (SBPB with SBPB) / L1D_FLUSH may be set.
//! SPEC_CTRL (vendor code `vmx/svm_{get,set}_msr`, `guest_has_spec_ctrl_msr`):
//! without the CPUID feature a guest access faults; a write of 0 is stored;
//! other values depend on what the host CPU accepts (`kvm_spec_ctrl_test_value`):
//! unmodeled.

use crate::engine::Engine;
use crate::policy::Vendor;
use crate::rules::Rule;
use crate::state::{
    CpuidBits, LEAF_7, LEAF_8000_0001, LEAF_8000_0008, LEAF_8000_0021, LEAF_8000_0022, LEAF_A,
    VcpuState,
};
use crate::vendor::Fact;

use super::msr::{R, Store};

type RuleRef = &'static Rule;

crate::rules::rules! {
    PMU_LEGACY_NO_COUNTER = "P6/K7 PMU MSR without a counter: read 0, write dropped (kvm_get/set_msr_common)", "pmu.c", "5.10+";
    PMU_NO_COUNTER = "PMU MSR without a counter (kvm_pmu_is_valid_msr false, r=2)", "pmu.c", "5.10+";
    UNSEEN_CPUID = "outcome rests on a CPUID leaf the trace has not shown (learnable)", "-", "-";
    CMD_READ = "PRED_CMD/FLUSH_CMD are write-only (no get case, r=2)", "x86.c", "6.4+";
    CMD_NO_FEATURE = "PRED_CMD/FLUSH_CMD guest write without the CPUID feature (r=1)", "x86.c", "6.4+";
    CMD_RESERVED = "PRED_CMD/FLUSH_CMD reserved bits (r=1)", "x86.c", "6.4+";
    CMD_WRITE = "PRED_CMD/FLUSH_CMD write accepted", "x86.c", "6.4+";
    SPEC_CTRL_NO_FEATURE = "SPEC_CTRL guest access without guest_has_spec_ctrl_msr (r=1)", "vmx.c/svm.c", "6.0+";
    SPEC_CTRL_VALUE = "SPEC_CTRL holds the value stored (0 at RESET and INIT)", "vmx.c/svm.c", "6.0+";
    SPEC_CTRL_PVM = "vendor pvm: SPEC_CTRL reads 0, writes of bits 0-2 dropped, host write 0 accepted (host_probes pvm_speculation_msrs, host-notes)", "-", "6.18 pvm";
    CMD_PVM = "vendor pvm: PRED_CMD/FLUSH_CMD guest writes accepted whatever the value and CPUID (host_probes pvm_speculation_msrs, host-notes)", "-", "6.18 pvm";
    HOST_SPEC_PVM = "vendor pvm: host TSX_CTRL/VIRT_SPEC_CTRL write 0 accepted, read 0 (host_probes pvm_speculation_msrs, host-notes)", "-", "6.18 pvm";
}

/// `guest_cpu_cap_has` (6.13+: guest CPUID ∩ KVM caps) as far as known:
/// `Some(false)` when the guest leaf or KVM's supported leaf has the bit
/// clear, `Some(true)` when both have it set, `None` otherwise.
fn cap(c: &CpuidBits, sup: &CpuidBits, leaf: u32, bit: fn(&CpuidBits) -> bool) -> Option<bool> {
    let g = (c.leaves & leaf != 0).then(|| bit(c));
    // A trace without KVM's supported CPUID (older headers): the guest's.
    let s = if sup.leaves == 0 {
        Some(true)
    } else {
        (sup.leaves & leaf != 0).then(|| bit(sup))
    };
    match (g, s) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    }
}

/// A CPUID feature: its leaf (`LEAF_*`) and how to read the bit.
type Feature = (u32, fn(&CpuidBits) -> bool);

/// Any of several features (`a || b || ...`).
fn any_cap(c: &CpuidBits, sup: &CpuidBits, feats: &[Feature]) -> Option<bool> {
    let mut unknown = false;
    for &(leaf, bit) in feats {
        match cap(c, sup, leaf, bit) {
            Some(true) => return Some(true),
            Some(false) => {}
            None => unknown = true,
        }
    }
    (!unknown).then_some(false)
}

/// The guest's PMU as far as the trace determines it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Shape {
    intel: bool,
    gp: u8,
    fixed: u8,
    global: bool,
    /// AMD: the F15h (PerfCtrExtCore) MSRs address the counters.
    core: bool,
}

const NONE: Shape = Shape {
    intel: false,
    gp: 0,
    fixed: 0,
    global: false,
    core: false,
};

/// Whether an index is one of the PMU MSRs this module decides.
pub(crate) const fn handles(index: u32) -> bool {
    matches!(
        index,
        0xc1..=0xc8
            | 0x186..=0x18f
            | 0x309..=0x30b
            | 0x38d..=0x390
            | 0x4c1..=0x4c8
            | 0xc001_0000..=0xc001_0007
            | 0xc001_0200..=0xc001_020b
            | 0xc000_0300..=0xc000_0302
            | 0x48
            | 0x49
            | 0x10b
            | 0x122
            | 0xc001_011f
    )
}

impl Engine {
    /// `kvm_init_pmu_capability` from KVM's supported CPUID: `Some(true)` when
    /// KVM exposes no PMU at all (`enable_pmu=0`, or no host PMU).
    fn pmu_caps_zero(&self) -> Option<bool> {
        let s = &self.supported;
        if !s.known {
            return None;
        }
        if s.genuine_intel {
            // do_cpuid_7_to_... leaf 0xA is zeroed without enable_pmu.
            (s.leaves & LEAF_A != 0).then_some(s.pmu_version == 0)
        } else {
            // svm_set_cpu_caps sets PerfCtrExtCore (every PMU SVM supports,
            // Fam15h+) and PerfMonV2 only with enable_pmu.
            (s.leaves & LEAF_8000_0001 != 0).then_some(!s.perfctr_core && !s.perfmon_v2)
        }
    }

    /// Whether a PMI may have masked LVTPC unseen: `kvm_apic_local_deliver`
    /// sets its mask bit after delivering a PMI to an Intel-compatible guest
    /// (6.10+, `guest_cpuid_is_intel_compatible`). A PMI needs a counter to
    /// overflow (`__kvm_perf_overflow`, `kvm_pmu_incr_counter` request
    /// `KVM_REQ_PMI`; the VMX-only Intel PT PMI aside), so a vCPU whose PMU
    /// has no counter (`pmu_shape`: `enable_pmu=0`, or none in CPUID) gets
    /// none. `true` when unknown.
    pub(crate) fn pmi_may_mask_lvtpc(&self, v: &VcpuState) -> bool {
        // 6.10+ `guest_cpuid_is_intel_compatible` is !AMD/Hygon
        // (fd706c9b1674): an unknown vendor, or no leaf 0, is Intel-compatible.
        if v.cpuid.amd_or_hygon {
            return false;
        }
        if self.policy.vendor == Vendor::Intel {
            // vmx_handle_intel_pt_intr requests a PMI without a counter.
            return true;
        }
        !self.pmu_shape(v).is_some_and(|s| s.gp == 0 && s.fixed == 0)
    }

    /// `intel_pmu_refresh` / `amd_pmu_refresh`; `None` when a CPUID leaf it
    /// reads has not been seen, or the vendor's PMU code is not known (pvm
    /// with a PMU).
    fn pmu_shape(&self, v: &VcpuState) -> Option<Shape> {
        let caps_zero = self.pmu_caps_zero()?;
        if caps_zero {
            return Some(NONE);
        }
        let c = &v.cpuid;
        let s = &self.supported;
        match self.policy.vendor {
            Vendor::Intel => {
                if c.leaves & LEAF_A == 0 {
                    return None;
                }
                let version = c.pmu_version.min(s.pmu_version);
                if version == 0 {
                    return Some(Shape {
                        intel: true,
                        ..NONE
                    });
                }
                Some(Shape {
                    intel: true,
                    gp: c.pmu_gp.min(s.pmu_gp),
                    fixed: if version > 1 {
                        c.pmu_fixed.min(s.pmu_fixed)
                    } else {
                        0
                    },
                    global: version > 1,
                    core: false,
                })
            }
            Vendor::Amd => {
                let v2 = cap(c, s, LEAF_8000_0022, |x| x.perfmon_v2)?;
                let core = cap(c, s, LEAF_8000_0001, |x| x.perfctr_core)?;
                let caps_gp = if s.perfmon_v2 { s.amd_pmu_gp } else { 6 };
                let gp = if v2 {
                    c.amd_pmu_gp
                } else if core {
                    6
                } else {
                    4
                };
                Some(Shape {
                    intel: false,
                    gp: gp.min(caps_gp),
                    fixed: 0,
                    global: v2,
                    core,
                })
            }
            // kvm_pvm's PMU code was not read: only "no PMU" is predicted.
            Vendor::Pvm => None,
        }
    }

    /// The PMU and command-MSR rules; `None`: no rule here.
    pub(crate) fn pmu_access(
        &self,
        v: &VcpuState,
        index: u32,
        write: Option<u64>,
        host: bool,
    ) -> Option<(R, RuleRef, Store)> {
        if !handles(index) {
            return None;
        }
        // The speculation MSRs were read in 6.18 only (5.10's vendor code
        // differs: `guest_cpuid_has(SPEC_CTRL)` on VMX, PRED_CMD in
        // vmx/svm_set_msr); the PMU cases below are the same in 5.10
        // (`kvm_pmu_is_valid_msr`, `intel/amd_pmu_refresh`, the P6/K7
        // cases and the `KVM_MSR_RET_INVALID` default of
        // `kvm_get/set_msr_common`).
        if !self.policy.switches.msr_tables
            && matches!(index, 0x48 | 0x49 | 0x10b | 0x122 | 0xc001_011f)
        {
            return None;
        }
        let unseen = Some((R::Unmodeled, &UNSEEN_CPUID, Store::None));
        match index {
            0x48 => return self.spec_ctrl(v, write, host),
            0x49 | 0x10b => return self.cmd_msr(v, index, write, host),
            // Measured on the project host only; upstream vendor code not modelled.
            0x122 | 0xc001_011f => {
                return match write {
                    Some(0) | None if host && self.policy.has(Fact::HostSpecMsrsZero) => {
                        Some((R::Ok(0), &HOST_SPEC_PVM, Store::None))
                    }
                    _ => None,
                };
            }
            _ => {}
        }
        let Some(p) = self.pmu_shape(v) else {
            return unseen;
        };
        // Some(i): the counter index the MSR addresses in its family.
        let exists = |valid: bool| {
            if valid {
                // A counter exists: values and controls not predicted.
                Some((R::Unmodeled, &crate::rules::UNMODELED, Store::None))
            } else {
                None
            }
        };
        // Read 0; a write is dropped (kvm_pr_unimpl_wrmsr).
        let legacy = Some((R::Ok(0), &PMU_LEGACY_NO_COUNTER, Store::None));
        let none = Some((R::Unknown, &PMU_NO_COUNTER, Store::None));
        let gp = u32::from(p.gp);
        match index {
            // IA32_PMC0/1, PERFEVTSEL0/1: the legacy x86.c cases.
            0xc1 | 0xc2 => exists(p.intel && index - 0xc1 < gp).or(legacy),
            0x186 | 0x187 => exists(p.intel && index - 0x186 < gp).or(legacy),
            0xc3..=0xc8 => exists(p.intel && index - 0xc1 < gp).or(none),
            0x188..=0x18f => exists(p.intel && index - 0x186 < gp).or(none),
            // Full-width writes also need PERF_CAPABILITIES.FW_WRITE.
            0x4c1..=0x4c8 => exists(p.intel && index - 0x4c1 < gp).or(none),
            0x309..=0x30b => exists(p.intel && index - 0x309 < u32::from(p.fixed)).or(none),
            0x38d..=0x390 => exists(p.intel && p.global).or(none),
            0xc001_0000..=0xc001_0007 => {
                exists(!p.intel && (index - 0xc001_0000) % 4 < gp).or(legacy)
            }
            0xc001_0200..=0xc001_020b => {
                exists(!p.intel && p.core && (index - 0xc001_0200) / 2 < gp).or(none)
            }
            0xc000_0300..=0xc000_0302 => exists(!p.intel && p.global).or(none),
            _ => None,
        }
    }

    /// x86.c `kvm_set_msr_common` MSR_IA32_PRED_CMD / MSR_IA32_FLUSH_CMD (6.4+).
    fn cmd_msr(
        &self,
        v: &VcpuState,
        index: u32,
        write: Option<u64>,
        host: bool,
    ) -> Option<(R, RuleRef, Store)> {
        if !self.policy.switches.cmd_msrs_common {
            return None;
        }
        let Some(data) = write else {
            return Some((R::Unknown, &CMD_READ, Store::None));
        };
        let c = &v.cpuid;
        let s = &self.supported;
        let unseen = Some((R::Unmodeled, &UNSEEN_CPUID, Store::None));
        let fail = |r| Some((R::Fault, r, Store::None));
        let ok = Some((R::Ok(0), &CMD_WRITE, Store::None));
        if self.policy.has(Fact::CmdMsrsUnchecked) {
            // Measured with and without the features in the guest CPUID
            // (every single bit accepted): kvm_pvm does not run the x86.c
            // checks. Host writes: not measured.
            return (!host).then_some((R::Ok(0), &CMD_PVM, Store::None));
        }
        if index == 0x49 {
            if !host {
                let has = any_cap(
                    c,
                    s,
                    &[
                        (LEAF_7, |x| x.spec_ctrl),
                        (LEAF_8000_0008, |x| x.amd_ibpb),
                        (LEAF_8000_0021, |x| x.sbpb),
                    ],
                );
                match has {
                    None => return unseen,
                    Some(false) => return fail(&CMD_NO_FEATURE),
                    Some(true) => {}
                }
            }
            // IBPB (bit 0), SBPB (bit 7); a guest may set SBPB only with it.
            if data & !0x81 != 0 {
                return fail(&CMD_RESERVED);
            }
            if data & 0x80 != 0 {
                return match cap(c, s, LEAF_8000_0021, |x| x.sbpb) {
                    Some(false) if !host => fail(&CMD_RESERVED),
                    // boot_cpu_has(SBPB) is the host's.
                    _ => None,
                };
            }
            // guest_has_pred_cmd_msr implies a host with IBPB (kvm caps).
            if data == 0 || !host {
                return ok;
            }
            return None;
        }
        // FLUSH_CMD
        if !host {
            match cap(c, s, LEAF_7, |x| x.flush_l1d) {
                None => return unseen,
                Some(false) => return fail(&CMD_NO_FEATURE),
                Some(true) => {}
            }
        }
        if data & !1 != 0 {
            return fail(&CMD_RESERVED);
        }
        // The guest's FLUSH_L1D cap implies the host's (kvm caps).
        if !host || data == 0 {
            return ok;
        }
        None
    }

    /// `vmx_get_msr`/`svm_get_msr`, `vmx_set_msr`/`svm_set_msr` MSR_IA32_SPEC_CTRL.
    fn spec_ctrl(
        &self,
        v: &VcpuState,
        write: Option<u64>,
        host: bool,
    ) -> Option<(R, RuleRef, Store)> {
        if self.policy.has(Fact::SpecCtrlZero) {
            // Measured on the project host (observe bit-probe, msr-suite,
            // msr-suite-bare): reads 0 (guest and host), guest writes of
            // 0-7 accepted and not stored with or without the CPUID
            // features, a host write of 0 accepted.
            return match write {
                None => Some((R::Ok(0), &SPEC_CTRL_PVM, Store::None)),
                Some(d) if !host && d & !7 == 0 => Some((R::Ok(0), &SPEC_CTRL_PVM, Store::None)),
                Some(0) => Some((R::Ok(0), &SPEC_CTRL_PVM, Store::None)),
                _ => None,
            };
        }
        let c = &v.cpuid;
        let s = &self.supported;
        if !host {
            let has = any_cap(
                c,
                s,
                &[
                    (LEAF_7, |x| x.spec_ctrl),
                    (LEAF_8000_0008, |x| x.amd_stibp),
                    (LEAF_8000_0008, |x| x.amd_ibrs),
                    (LEAF_8000_0008, |x| x.amd_ssbd),
                ],
            );
            match has {
                None => return Some((R::Unmodeled, &UNSEEN_CPUID, Store::None)),
                Some(false) => return Some((R::Fault, &SPEC_CTRL_NO_FEATURE, Store::None)),
                Some(true) => {}
            }
        }
        match write {
            None => v
                .spec_ctrl
                .map(|x| (R::Ok(x), &SPEC_CTRL_VALUE, Store::None)),
            Some(0) => Some((R::Ok(0), &SPEC_CTRL_VALUE, Store::SpecCtrl(Some(0)))),
            Some(_) => None,
        }
    }
}
