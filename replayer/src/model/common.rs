//! The MSRs KVM handles outside §1–§5, from the kernel's own MSR tables
//! (switch `msr_tables`, 6.0+; read in 6.18 x86.c `__kvm_set_msr`,
//! `__kvm_get_msr`, `kvm_{get,set}_msr_common`, `get_msr_mce`, mtrr.c
//! `kvm_mtrr_{get,set}_msr`, and pvm.c `pvm_{get,set}_msr` for vendor `pvm`).
//!
//! Three kinds of prediction, each only where the source decides it alone:
//! - **unknown to KVM**: an index outside every range any KVM handler (common,
//!   VMX, SVM, pvm, PMU, Hyper-V, KVM PV) has a case for → r = 2 (§0);
//! - **CPUID-gated faults**: guest accesses whose handler returns 1 when the
//!   guest CPUID lacks the feature (TSC_AUX, ARCH_CAPABILITIES, PERF_CAPABILITIES,
//!   XSS), or that a guest may never write (PLATFORM_INFO, ARCH_CAPABILITIES);
//! - **registers**: reads return what KVM stored — known from RESET (a trace
//!   that starts at vCPU creation), from a write the model accepted, or taught
//!   by a read (issue 6 item 5: the teaching read is unmodeled).
//!
//! What depends on guest instructions other than RDMSR/WRMSR (FS/GS base and
//! KERNEL_GS_BASE change with SWAPGS and segment loads, EFER.LMA with CR0.PG) or
//! on time (TSC, APERF/MPERF, kvmclock) is not predicted.

use crate::engine::Engine;
use crate::rules;
use crate::vendor::Fact;

/// Rules are consts: handlers pass them by reference, so the hot path never
/// copies the three `&str` of a rule through the stack (a store-forwarding
/// stall per event per lane); only a returned `Prediction` owns a copy.
type Rule = &'static rules::Rule;
use crate::state::{
    LEAF_1, LEAF_7, LEAF_4000_0001, LEAF_8000_0001, LEAF_8000_0008, LEAF_D1, VcpuState,
};

use super::msr::{R, Store};

/// Slots of the registers in `VcpuState::regs`.
pub const NREGS: usize = 46;
/// EFER (`vcpu->arch.efer`) as last written, read or set by `KVM_SET_SREGS`.
/// Its known bit covers every bit but LMA; LMA follows CR0.PG, which no
/// event shows, so it has a known bit of its own ([`SLOT_EFER_LMA`]).
pub(crate) const SLOT_EFER: usize = 40;
/// Not a register: the known bit of EFER.LMA in `regs[SLOT_EFER]`. Set only
/// where LMA cannot change without an EFER write the trace shows: LME = LMA
/// (LME clear: enabling paging leaves LMA clear; both set: long mode is
/// active and only leaving it, which 64-bit code does not do, clears LMA).
/// With LME set and LMA clear, the next CR0.PG write sets LMA unseen.
const SLOT_EFER_LMA: usize = 41;
/// FS_BASE, GS_BASE, KERNEL_GS_BASE as last written or read. A segment
/// load or SWAPGS changes them without an exit; a guest that does either
/// between a write and a read is what the `learned` list warns about.
const SLOT_FS_BASE: usize = 42;
/// MSR_MISC_FEATURES_ENABLES (`msr_misc_features_enables`, 0 at RESET).
const SLOT_MISC_FEATURES: usize = 45;
/// MSR_PLATFORM_INFO bit 31 (`supports_cpuid_fault`).
const PLATFORM_INFO_CPUID_FAULT: u64 = 1 << 31;
/// `vcpu->arch.time`: MSR_KVM_SYSTEM_TIME and _NEW (0 after kvmclock_reset).
const SLOT_KVM_TIME: usize = 38;
/// `msr_kvm_poll_control`: 1 from `kvm_arch_vcpu_postcreate` ("poll control
/// enabled by default", 5.3+), not touched by INIT.
const SLOT_POLL_CONTROL: usize = 39;
/// KVM PV feature bits (CPUID 0x40000001:EAX).
const KVM_FEATURE_CLOCKSOURCE: u32 = 1 << 0;
const KVM_FEATURE_CLOCKSOURCE2: u32 = 1 << 3;
const KVM_FEATURE_POLL_CONTROL: u32 = 1 << 12;
const SLOT_UCODE_REV: usize = 8;
const SLOT_PLATFORM_INFO: usize = 9;
const SLOT_TSC_AUX: usize = 7;
/// Registers whose value at RESET (vCPU creation) is 0 in every vendor's
/// create/reset path: SYSENTER_*, STAR/LSTAR/CSTAR/SFMASK, TSC_AUX, MTRRs.
/// UCODE_REV and PLATFORM_INFO are vendor/quirk-stuffed: taught only.
/// EFER and the FS/GS bases are not: the VMM sets them with `KVM_SET_SREGS`
/// before the first run (kvmtrace's own VMM without a `VmmState` event), so
/// they are known only from a tapped `KVM_SET_SREGS`, a write or a read.
/// KERNEL_GS_BASE is 0 at RESET and not part of `kvm_sregs`.
pub const REGS_KNOWN_AT_RESET: u64 = ((1u64 << NREGS) - 1)
    & !(1 << SLOT_UCODE_REV)
    & !(1 << SLOT_PLATFORM_INFO)
    & !(1 << SLOT_EFER)
    & !(1 << SLOT_EFER_LMA)
    & !(1 << SLOT_FS_BASE)
    & !(1 << (SLOT_FS_BASE + 1));

/// The register values at RESET (vCPU creation): 0 but POLL_CONTROL (1).
pub const REGS_AT_RESET: [u64; NREGS] = {
    let mut r = [0; NREGS];
    r[SLOT_POLL_CONTROL] = 1;
    r
};

pub const fn reg_slot(index: u32) -> Option<usize> {
    Some(match index {
        0x174 => 0,       // SYSENTER_CS
        0x175 => 1,       // SYSENTER_ESP
        0x176 => 2,       // SYSENTER_EIP
        0xc000_0081 => 3, // STAR
        0xc000_0082 => 4, // LSTAR
        0xc000_0083 => 5, // CSTAR
        0xc000_0084 => 6, // SYSCALL_MASK
        0xc000_0103 => SLOT_TSC_AUX,
        0x8b => SLOT_UCODE_REV,
        0xce => SLOT_PLATFORM_INFO,
        0x2ff => 10, // MTRRdefType
        0x250 => 11,
        0x258 => 12,
        0x259 => 13,
        0x268..=0x26f => 14 + (index - 0x268) as usize,
        0x200..=0x20f => 22 + (index - 0x200) as usize,
        0x12 | 0x4b56_4d01 => SLOT_KVM_TIME,
        0x4b56_4d05 => SLOT_POLL_CONTROL,
        0xc000_0080 => SLOT_EFER,
        0xc000_0100..=0xc000_0102 => SLOT_FS_BASE + (index - 0xc000_0100) as usize,
        0x140 => SLOT_MISC_FEATURES,
        _ => return None,
    })
}

/// The MTRR MSRs of mtrr.c (`msr_mtrr_valid`, MTRRcap, the 0x200-0x2ff
/// range x86.c hands to `kvm_mtrr_get/set_msr`; PAT excepted): the same
/// rules in 5.10 (`kvm_mtrr_valid`, `valid_mtrr_type`, MTRRcap 0x508) and
/// 6.18, so they are decided for every release, not only under `msr_tables`.
/// (Before 5.11 `kvm_mtrr_valid` also queued a #GP itself for a bad variable
/// mask; the access's outcome is the same.)
const fn is_mtrr(index: u32) -> bool {
    index == 0xfe || (index >= 0x200 && index <= 0x2ff && index != 0x277)
}

/// kvmclock and POLL_CONTROL (`kvm_set/get_msr_common`: `vcpu->arch.time`,
/// the VM's wall clock, `msr_kvm_poll_control`): the same cases behind the
/// same `guest_pv_has` checks in 5.10 (66570e966dd9) and 6.18.
const fn is_kvm_pv(index: u32) -> bool {
    matches!(index, 0x11 | 0x12 | 0x4b56_4d00 | 0x4b56_4d01 | 0x4b56_4d05)
}

/// EFER bits outside SCE (0), LME (8), LMA (10), NX (11), SVME (12), LMSLE
/// (13), FFXSR (14), TCE (15), AUTOIBRS (21): in `efer_reserved_bits` on
/// every host.
const EFER_NEVER_VALID: u64 = !(1 | 1 << 8 | 0xfc00 | 1 << 21);

const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NX: u64 = 1 << 11;
const EFER_SVME: u64 = 1 << 12;
const EFER_FFXSR: u64 = 1 << 14;
/// The EFER bits the write rule decides: SCE, LME, LMA, NX.
const EFER_DECIDED: u64 = 1 | EFER_LME | EFER_LMA | EFER_NX;

/// Index ranges some KVM handler has cases in (every vendor, PMU, Hyper-V
/// 0x40000000–0x400001ff, KVM PV 0x4b564d00–0x4b564dff incl. pvm's own);
/// anything else falls to `default: return KVM_MSR_RET_UNSUPPORTED` (r = 2).
/// Not covered: a Xen `hvm_config.msr` (any index, only when a VMM enables Xen
/// emulation), which the trace cannot show.
const fn in_kvm_ranges(index: u32) -> bool {
    matches!(
        index,
        0..=0x1fff
            | 0x4000_0000..=0x4000_01ff
            | 0x4b56_4d00..=0x4b56_4dff
            | 0xc000_0000..=0xc000_1fff
            | 0xc001_0000..=0xc001_1fff
    )
}

/// Whether the table can decide `index` for some policy (replay fast path).
pub(crate) const fn table_handles(index: u32) -> bool {
    !in_kvm_ranges(index)
        || reg_slot(index).is_some()
        || matches!(
            index,
            0x0 | 0x1
                | 0x34
                | 0xc000_0080
                | 0xc000_0100..=0xc000_0102
                | 0x11
                | 0x4b56_4d00
                | 0x17
                | 0x2a
                | 0x199
                | 0x1db..=0x1de
                | 0x480..=0x492
                | 0x606
                | 0x611
                | 0x619
                | 0x639
                | 0x641
                | 0xc000_0104
                | 0xc001_0010
                | 0xc001_001f
                | 0xc001_0055
                | 0xc001_0058
                | 0xc001_0112
                | 0xc001_0113
                | 0xc001_0114
                | 0xc001_0117
                | 0xc001_0140
                | 0xc001_0141
                | 0xc001_1022
                | 0xc001_1023
                | 0xc001_1029
                | 0xc001_102a
                | 0xc001_102c
                | 0x10a
                | 0x345
                | 0xda0
                | 0xfe
                | 0x198
                | 0x1d9
                | 0x210..=0x24f
                | 0x251..=0x257
                | 0x25a..=0x267
                | 0x270..=0x276
                | 0x278..=0x27f
                | 0x2a0..=0x2fe
                | 0x4000_0000..=0x4000_01ff
        )
}

/// A guest CPUID feature is known absent: its leaf is in the guest CPUID with
/// the bit clear, or in KVM's supported CPUID with the bit clear.
fn absent(
    c: &crate::state::CpuidBits,
    sup: &crate::state::CpuidBits,
    leaf: u32,
    bit: fn(&crate::state::CpuidBits) -> bool,
) -> bool {
    (c.leaves & leaf != 0 && !bit(c)) || (sup.leaves & leaf != 0 && !bit(sup))
}

/// TSC_AUX needs RDTSCP (0x80000001:EDX[27]) or RDPID (7.0:ECX[22]).
fn no_rdtscp(c: &crate::state::CpuidBits, sup: &crate::state::CpuidBits) -> bool {
    absent(c, sup, LEAF_8000_0001, |x| x.rdtscp) && absent(c, sup, LEAF_7, |x| x.rdpid)
}

/// `__is_canonical_address` for `bits` of virtual address.
const fn canonical(x: u64, bits: u32) -> bool {
    let shift = 64 - bits;
    (((x << shift) as i64) >> shift) as u64 == x
}

/// `valid_mtrr_type`: UC, WC, WT, WP, WB.
const fn mtrr_type_ok(t: u64) -> bool {
    t < 8 && (1u64 << t) & 0x73 != 0
}

impl Engine {
    /// The read side; `None` when the table has no rule (other handlers decide).
    pub(crate) fn table_read(&self, v: &VcpuState, index: u32, host: bool) -> Option<(R, Rule)> {
        if !self.policy.switches.msr_tables && !is_mtrr(index) && !is_kvm_pv(index) {
            return None;
        }
        let c = &v.cpuid;
        let sup = &self.supported;
        let has = |f| self.policy.has(f);
        let intel = self.policy.vendor == crate::policy::Vendor::Intel;
        Some(match index {
            // get_msr_mce: MSR_IA32_P5_MC_ADDR / P5_MC_TYPE read 0.
            0x0 | 0x1 => (R::Ok(0), &rules::TABLE_CONST),
            // kvm_get_msr_common MSR_IA32_PERF_STATUS: ratio 4, multiplier 1000.
            0x198 => (R::Ok(1000 | (4 << 40)), &rules::TABLE_CONST),
            // kvm_mtrr_get_msr MSR_MTRRcap: 0x500 | KVM_NR_VAR_MTRR (8).
            0xfe => (R::Ok(0x508), &rules::TABLE_MTRRCAP),
            // kvm_get_msr_common: PLATFORM_ID, EBL_CR_POWERON, SYSCFG, TSEG,
            // INT_PENDING_MSG, NB_CFG, MMIO_CONF_BASE, BU_CFG2, PERF_CTL,
            // DC_CFG, TW_CFG, EX_CFG and the RAPL MSRs read 0 ("do not want to
            // expose the host data").
            0x17 | 0x2a | 0x199 | 0x606 | 0x611 | 0x619 | 0x639 | 0x641 | 0xc001_0010
            | 0xc001_0112 | 0xc001_0113 | 0xc001_0055 | 0xc001_001f | 0xc001_0058 | 0xc001_102a
            | 0xc001_1022 | 0xc001_1023 | 0xc001_102c => (R::Ok(0), &rules::TABLE_CONST),
            // Same list: LASTBRANCH*/LASTINT* and VM_HSAVE_PA, which svm_get_msr
            // handles itself on AMD (LBR virtualisation, nested): pvm only.
            0x1db..=0x1de | 0xc001_0117 if has(Fact::SvmMsrsAbsent) => {
                (R::Ok(0), &rules::TABLE_CONST)
            }
            // VMX capability MSRs: only vmx_get_msr has cases (r = 2 elsewhere).
            0x480..=0x492 if !intel => (R::Unknown, &rules::TABLE_NO_VENDOR_CASE),
            // SVM-only MSRs (TSC_RATIO, VM_CR, DE_CFG): pvm_get_msr has no case.
            0xc000_0104 | 0xc001_0114 | 0xc001_1029 if has(Fact::SvmMsrsAbsent) => {
                (R::Unknown, &rules::TABLE_NO_VENDOR_CASE)
            }
            // AMD OSVW: kvm_get_msr_common returns 1 without CPUID OSVW.
            0xc001_0140 | 0xc001_0141 if absent(c, sup, LEAF_8000_0001, |x| x.osvw) => {
                (R::Fault, &rules::TABLE_CPUID_GATED)
            }
            // (An earlier build of the host's kvm_pvm refused this read; the
            // 6.18.44 build measured 2026-12-03 (observe msr-sweep) returns
            // the value like upstream, so no pvm rule: the upstream CPUID
            // gate below decides, the value is the host's.)
            // pvm_get_msr MSR_IA32_DEBUGCTLMSR: 0.
            0x1d9 if has(Fact::DebugctlZero) => (R::Ok(0), &rules::TABLE_PVM_DEBUGCTL),
            // find_mtrr() finds no MTRR there: kvm_mtrr_get_msr returns 1.
            0x210..=0x24f
            | 0x251..=0x257
            | 0x25a..=0x267
            | 0x270..=0x276
            | 0x278..=0x27f
            | 0x2a0..=0x2fe => (R::Fault, &rules::TABLE_MTRR_NONE),
            0x10a if !host && absent(c, sup, LEAF_7, |x| x.arch_capabilities) => {
                (R::Fault, &rules::TABLE_CPUID_GATED)
            }
            0x345 if !host && absent(c, sup, LEAF_1, |x| x.pdcm) => {
                (R::Fault, &rules::TABLE_CPUID_GATED)
            }
            0xda0 if !host && absent(c, sup, LEAF_D1, |x| x.xsaves) => {
                (R::Fault, &rules::TABLE_CPUID_GATED)
            }
            0xc000_0103 if !host && no_rdtscp(c, sup) => (R::Fault, &rules::TABLE_CPUID_GATED),
            // kvm_hv_get_msr_common: no Hyper-V CPUID → 1; indices without a
            // case → 2. Either way #GP unless deflected.
            0x4000_0000..=0x4000_01ff if !host && c.leaves & LEAF_4000_0001 != 0 && !c.hyperv => {
                (R::FaultOrUnknown, &rules::TABLE_NO_HYPERV)
            }
            _ if !in_kvm_ranges(index) => (R::Unknown, &rules::TABLE_UNKNOWN),
            // kvm_get_msr_common MSR_SMI_COUNT: vcpu->arch.smi_count for
            // guest and host alike; 0 from kvm_vcpu_reset, changed only by a
            // host write or an SMI, and no SMI enters without SMM support.
            0x34 if self.host_trace.no_smm => match v.host.smi_count {
                Some(x) => (R::Ok(x), &super::host::HOST_SMI_COUNT_READ),
                None => return None,
            },
            // kvm_get_msr_common MSR_EFER: vcpu->arch.efer, where every bit
            // including LMA is known (see SLOT_EFER_LMA); else a read teaches.
            0xc000_0080 => {
                let both = (1 << SLOT_EFER) | (1 << SLOT_EFER_LMA);
                if v.regs_known & both != both {
                    return None;
                }
                (R::Ok(v.regs[SLOT_EFER]), &rules::TABLE_EFER_READ)
            }
            // The vendor's get_msr returns the segment base / kernel_gs_base.
            0xc000_0100..=0xc000_0102 => match reg_slot(index) {
                Some(s) if v.regs_known & (1 << s) != 0 => {
                    (R::Ok(v.regs[s]), &rules::TABLE_SEG_BASE_READ)
                }
                _ => return None,
            },
            _ => match reg_slot(index) {
                Some(s) if v.regs_known & (1 << s) != 0 => {
                    let rule = if is_mtrr(index) {
                        &rules::TABLE_MTRR_READ
                    } else {
                        &rules::TABLE_REG_READ
                    };
                    (R::Ok(v.regs[s]), rule)
                }
                _ => return None,
            },
        })
    }

    /// The write side; `None` when the table has no rule.
    pub(crate) fn table_write(
        &self,
        v: &VcpuState,
        index: u32,
        data: u64,
        host: bool,
    ) -> Option<(R, Rule, Store)> {
        if !self.policy.switches.msr_tables && !is_mtrr(index) && !is_kvm_pv(index) {
            return None;
        }
        let c = &v.cpuid;
        let sup = &self.supported;
        let has = |f| self.policy.has(f);
        let store = |s: usize, x: u64| (R::Ok(0), &rules::TABLE_REG_WRITE, Store::Reg(s, x));
        let pv = self.pv_features(v);
        let mtrr_store = |s: usize, x: u64| (R::Ok(0), &rules::TABLE_MTRR_WRITE, Store::Reg(s, x));
        // __kvm_set_msr: LSTAR/CSTAR/SYSENTER_ESP/EIP must be canonical (host
        // too). 48 vs 57 bits depends on LA57 support: decide only where both agree.
        let canon = |s: usize| {
            if canonical(data, 48) {
                Some(store(s, data))
            } else if !canonical(data, 57) {
                Some((R::Fault, &rules::TABLE_NONCANONICAL, Store::None))
            } else {
                None
            }
        };
        match index {
            // VMX keeps SYSENTER_CS in a 32-bit VMCS field: decide the low half.
            0x174 if data >> 32 == 0 => Some(store(0, data)),
            // SVM drops bits 63:32 of SYSENTER_ESP/EIP for a non-Intel guest
            // (sysenter_*_hi): accepted, value not predicted.
            0x175 | 0x176
                if self.policy.vendor == crate::policy::Vendor::Amd && data >> 32 != 0 =>
            {
                canon(0).map(|(r, rule, _)| (r, rule, Store::Forget(reg_slot(index).unwrap_or(0))))
            }
            0x175 => canon(1),
            0x176 => canon(2),
            // pvm_set_msr checks a guest's STAR selectors (not measured): no rule.
            0xc000_0081 if has(Fact::StarUnmeasured) && !host => None,
            0xc000_0081 => Some(store(3, data)),
            0xc000_0082 => canon(4),
            0xc000_0083 => canon(5),
            // SFMASK: bits 63:32 are reserved in hardware (VMX writes it to the
            // CPU as a user-return MSR): decide only the low half.
            0xc000_0084 if data >> 32 == 0 => Some(store(6, data)),
            0xc000_0103 => {
                if !host && no_rdtscp(c, sup) {
                    Some((R::Fault, &rules::TABLE_CPUID_GATED, Store::None))
                } else if !host && !c.rdtscp && !c.rdpid {
                    // Feature leaves not seen yet (import).
                    None
                } else if !c.known {
                    None
                } else if data >> 32 != 0 && !c.intel_compatible && !c.amd_or_hygon {
                    // A vendor neither Intel/Centaur/Zhaoxin nor AMD/Hygon:
                    // Intel-compatible (#GP) since fd706c9b1674 (6.9, stable
                    // 6.6: `guest_cpuid_is_intel_compatible` = !AMD/Hygon),
                    // not before; no release switch for it yet, so unmodelled.
                    None
                } else if c.intel_compatible && data >> 32 != 0 {
                    Some((R::Fault, &rules::TABLE_TSC_AUX_HIGH, Store::None))
                } else {
                    Some(store(SLOT_TSC_AUX, data & 0xffff_ffff))
                }
            }
            // kvm_set_msr_common, KVM PV MSRs with the feature bit set:
            // wall clock (VM-wide, not stored here) and system time always
            // accepted; POLL_CONTROL takes bit 0 only.
            0x11 if pv & KVM_FEATURE_CLOCKSOURCE != 0 => {
                Some((R::Ok(0), &rules::TABLE_KVM_PV, Store::None))
            }
            0x4b56_4d00 if pv & KVM_FEATURE_CLOCKSOURCE2 != 0 => {
                Some((R::Ok(0), &rules::TABLE_KVM_PV, Store::None))
            }
            0x12 if pv & KVM_FEATURE_CLOCKSOURCE != 0 => Some(store(SLOT_KVM_TIME, data)),
            0x4b56_4d01 if pv & KVM_FEATURE_CLOCKSOURCE2 != 0 => Some(store(SLOT_KVM_TIME, data)),
            0x4b56_4d05 if pv & KVM_FEATURE_POLL_CONTROL != 0 => Some(if data >> 1 != 0 {
                (R::Fault, &rules::TABLE_KVM_PV, Store::None)
            } else {
                store(SLOT_POLL_CONTROL, data)
            }),
            // kvm_set_msr_common MSR_MISC_FEATURES_ENABLES (pvm_set_msr
            // calls it too): bits other than CPUID_FAULT, or CPUID_FAULT
            // without PLATFORM_INFO.CPUID_FAULT, fail (host too).
            0x140 => {
                let platform_known = v.regs_known & (1 << SLOT_PLATFORM_INFO) != 0;
                let fault = Some((R::Fault, &rules::TABLE_MISC_FEATURES, Store::None));
                if data & !1 != 0 {
                    // kvm_pvm stored 0x2 here (observe bit-probe, seq 709):
                    // not the common code's check; left to the recording.
                    if self.policy.vendor == crate::policy::Vendor::Pvm {
                        return None;
                    }
                    fault
                } else if data == 0 {
                    Some((
                        R::Ok(0),
                        &rules::TABLE_MISC_FEATURES,
                        Store::Reg(SLOT_MISC_FEATURES, 0),
                    ))
                } else if !platform_known {
                    None
                } else if v.regs[SLOT_PLATFORM_INFO] & PLATFORM_INFO_CPUID_FAULT == 0 {
                    fault
                } else {
                    Some((
                        R::Ok(0),
                        &rules::TABLE_MISC_FEATURES,
                        Store::Reg(SLOT_MISC_FEATURES, 1),
                    ))
                }
            }
            // kvm_set_msr_common MSR_IA32_UCODE_REV: a guest write is dropped.
            0x8b if !host => Some((R::Ok(0), &rules::TABLE_UCODE_GUEST, Store::None)),
            // ...a host write is stored (microcode_version); unlike the other
            // feature MSRs it stays writable after KVM_RUN
            // (kvm_is_immutable_feature_msr: "all feature MSRs except uCode
            // revID").
            0x8b => Some(store(SLOT_UCODE_REV, data)),
            // MSR_PLATFORM_INFO, MSR_IA32_ARCH_CAPABILITIES and (every
            // release) MSR_SMI_COUNT: host only.
            0x34 | 0xce | 0x10a if !host => Some((R::Fault, &rules::TABLE_HOST_ONLY, Store::None)),
            // PERF_CAPABILITIES: a guest write fails (1 or 2 by release).
            0x345 if !host => Some((R::FaultOrUnknown, &rules::TABLE_HOST_ONLY, Store::None)),
            0xda0 if !host && absent(c, sup, LEAF_D1, |x| x.xsaves) => {
                Some((R::Fault, &rules::TABLE_CPUID_GATED, Store::None))
            }
            // pvm_set_msr MSR_IA32_DEBUGCTLMSR: ignored.
            0x1d9 if has(Fact::DebugctlZero) => {
                Some((R::Ok(0), &rules::TABLE_PVM_DEBUGCTL, Store::None))
            }
            // kvm_mtrr_set_msr: find_mtrr() + kvm_mtrr_valid().
            0x2ff => Some(if data & !0xcff != 0 || !mtrr_type_ok(data & 0xff) {
                (R::Fault, &rules::TABLE_MTRR_INVALID, Store::None)
            } else {
                mtrr_store(10, data)
            }),
            0x250 | 0x258 | 0x259 | 0x268..=0x26f => {
                let ok = (0..8).all(|i| mtrr_type_ok((data >> (i * 8)) & 0xff));
                let s = reg_slot(index).unwrap_or(0);
                Some(if ok {
                    mtrr_store(s, data)
                } else {
                    (R::Fault, &rules::TABLE_MTRR_INVALID, Store::None)
                })
            }
            // Without leaf 0x80000008 the guest MAXPHYADDR is not known (import).
            0x200..=0x20f if c.leaves & LEAF_8000_0008 == 0 && data >> 36 != 0 => None,
            0x200..=0x20f => {
                let reserved_gpa = !0u64 << c.maxphyaddr;
                let (mask, type_ok) = if index & 1 == 0 {
                    (reserved_gpa | 0xf00, mtrr_type_ok(data & 0xff))
                } else {
                    (reserved_gpa | 0x7ff, true)
                };
                Some(if type_ok && data & mask == 0 {
                    mtrr_store(22 + (index - 0x200) as usize, data)
                } else {
                    (R::Fault, &rules::TABLE_MTRR_INVALID, Store::None)
                })
            }
            0x210..=0x24f
            | 0x251..=0x257
            | 0x25a..=0x267
            | 0x270..=0x276
            | 0x278..=0x27f
            | 0x2a0..=0x2fe => Some((R::Fault, &rules::TABLE_MTRR_NONE, Store::None)),
            0x480..=0x492 if self.policy.vendor != crate::policy::Vendor::Intel => {
                Some((R::Unknown, &rules::TABLE_NO_VENDOR_CASE, Store::None))
            }
            0xc000_0104 | 0xc001_0114 | 0xc001_1029 if has(Fact::SvmMsrsAbsent) => {
                Some((R::Unknown, &rules::TABLE_NO_VENDOR_CASE, Store::None))
            }
            0xc001_0140 | 0xc001_0141 if absent(c, sup, LEAF_8000_0001, |x| x.osvw) => {
                Some((R::Fault, &rules::TABLE_CPUID_GATED, Store::None))
            }
            // MTRRcap is read-only: no write case (r = 2).
            0xfe => Some((R::Unknown, &rules::TABLE_UNKNOWN, Store::None)),
            // __kvm_set_msr: FS/GS/KERNEL_GS_BASE must be canonical (host
            // too); the vendor stores them. Their reads are not predicted:
            // segment loads and SWAPGS change them without an exit.
            0xc000_0100..=0xc000_0102 => {
                if canonical(data, 48) {
                    let s = reg_slot(index).unwrap_or(SLOT_FS_BASE);
                    Some((R::Ok(0), &rules::TABLE_SEG_BASE_WRITE, Store::Reg(s, data)))
                } else if !canonical(data, 57) {
                    Some((R::Fault, &rules::TABLE_NONCANONICAL, Store::None))
                } else {
                    None
                }
            }
            // set_efer: bits in efer_reserved_bits fail (host too) before any
            // other check. Only the bits no KVM ever enables (kvm_enable_efer_bits
            // is called for NX, SVME, LMSLE, FFXSR, TCE, AUTOIBRS by host
            // support) are decided here.
            0xc000_0080 if data & EFER_NEVER_VALID != 0 => {
                Some((R::Fault, &rules::TABLE_EFER_RESERVED, Store::None))
            }
            // SVME without guest SVM, FFXSR without guest FFXSR: either in
            // efer_reserved_bits (the host lacks it) or refused by
            // __kvm_valid_efer — r = 1 both ways, for a guest write.
            0xc000_0080
                if !host
                    && ((data & EFER_SVME != 0 && absent(c, sup, LEAF_8000_0001, |x| x.svm))
                        || (data & EFER_FFXSR != 0
                            && absent(c, sup, LEAF_8000_0001, |x| x.fxsr_opt))) =>
            {
                Some((R::Fault, &rules::TABLE_EFER_CPUID, Store::None))
            }
            // set_efer with only SCE/LME/LMA/NX: the host's write is
            // accepted; a guest's needs LM for LME/LMA and NX for NX
            // (__kvm_valid_efer) and, with paging on, an unchanged LME. LME
            // changes only by EFER writes, so an unchanged LME needs no
            // paging state; a changed one does (CR0.PG: not in the trace).
            0xc000_0080 if data & !EFER_DECIDED == 0 => {
                // set_efer keeps the old LMA whoever writes (Store::apply
                // decides whether it is known afterwards).
                let lma_known = v.regs_known & (1 << SLOT_EFER_LMA) != 0;
                let old_lma = if lma_known {
                    v.regs[SLOT_EFER] & EFER_LMA
                } else {
                    0
                };
                let accept = Some((
                    R::Ok(0),
                    &rules::TABLE_EFER_WRITE,
                    Store::Reg(SLOT_EFER, (data & !EFER_LMA) | old_lma),
                ));
                if host {
                    return accept;
                }
                let fault = Some((R::Fault, &rules::TABLE_EFER_CPUID, Store::None));
                if data & (EFER_LME | EFER_LMA) != 0 && absent(c, sup, LEAF_8000_0001, |x| x.lm) {
                    return fault;
                }
                if data & EFER_NX != 0 && absent(c, sup, LEAF_8000_0001, |x| x.nx) {
                    return fault;
                }
                let lm_ok = data & (EFER_LME | EFER_LMA) == 0 || c.lm;
                let nx_ok = data & EFER_NX == 0 || c.nx;
                if !(lm_ok && nx_ok) {
                    return None;
                }
                let lme_known = v.regs_known & (1 << SLOT_EFER) != 0;
                let lme_changes = (v.regs[SLOT_EFER] ^ data) & EFER_LME != 0;
                // set_efer: is_paging() && LME changes -> 1. Paging (CR0.PG)
                // is never known (docs/learned-not-modelled.md): an LME
                // change is learned.
                (lme_known && !lme_changes).then_some(accept).flatten()
            }
            // A Xen guest's hypercall-page MSR can be any index (writes only).
            _ if c.xen => None,
            0x4000_0000..=0x4000_01ff if !host && c.leaves & LEAF_4000_0001 != 0 && !c.hyperv => {
                Some((R::FaultOrUnknown, &rules::TABLE_NO_HYPERV, Store::None))
            }
            _ if !in_kvm_ranges(index) => Some((R::Unknown, &rules::TABLE_UNKNOWN, Store::None)),
            _ => None,
        }
    }
}

/// EFER is known to hold `value` (a read, or a `KVM_SET_SREGS` that set
/// it): LMA too where it cannot change unseen (LME = LMA, [`SLOT_EFER_LMA`]).
pub(crate) fn know_efer(v: &mut VcpuState, value: u64) {
    v.regs[SLOT_EFER] = value;
    v.regs_known |= 1 << SLOT_EFER;
    set_efer_lma_known(v, true);
}

/// After EFER changed to `regs[SLOT_EFER]`: LMA stays known where it was
/// (`was_known`) and cannot change without an EFER write (LME = LMA).
fn set_efer_lma_known(v: &mut VcpuState, was_known: bool) {
    let x = v.regs[SLOT_EFER];
    // LME clear: LMA is clear and stays so (paging without LME is not long
    // mode; a write setting LME is seen). LME set: CR0.PG decides LMA, and a
    // guest may leave long mode unseen (kvm-unit-tests' 5-level-paging
    // switch turns paging off and on), so LMA is not known.
    let stable = x & (EFER_LME | EFER_LMA) == 0;
    if was_known && stable {
        v.regs_known |= 1 << SLOT_EFER_LMA;
    } else {
        v.regs_known &= !(1 << SLOT_EFER_LMA);
    }
}

/// An accepted EFER write stored `x` (`Store::Reg(SLOT_EFER, _)`, LMA
/// already taken from the old value where known), or EFER became unknown.
pub(crate) fn on_efer_store(v: &mut VcpuState, x: Option<u64>) {
    match x {
        Some(x) => {
            let was = v.regs_known & (1 << SLOT_EFER_LMA) != 0;
            v.regs[SLOT_EFER] = x;
            v.regs_known |= 1 << SLOT_EFER;
            set_efer_lma_known(v, was);
        }
        None => v.regs_known &= !((1 << SLOT_EFER) | (1 << SLOT_EFER_LMA)),
    }
}

/// The table registers `kvm_vcpu_reset(init_event = true)` leaves alone:
/// the MTRRs (mtrr.c state, reset nowhere), UCODE_REV, PLATFORM_INFO and
/// POLL_CONTROL (set at vCPU creation only) and MISC_FEATURES_ENABLES
/// (zeroed only when `!init_event`). The vendor's `vcpu_reset` owns the
/// others (SYSENTER/SYSCALL MSRs, TSC_AUX, segment bases): forgotten.
const INIT_KEPT: u64 = (((1u64 << 38) - 1) & !((1u64 << 10) - 1))
    | (1 << SLOT_UCODE_REV)
    | (1 << SLOT_PLATFORM_INFO)
    | (1 << SLOT_POLL_CONTROL)
    | (1 << SLOT_MISC_FEATURES);

/// INIT reached `v` (`kvm_vcpu_reset(init_event = true)`, x86.c 6.18): the
/// registers of [`INIT_KEPT`] keep their values; `exact` (the model knows
/// INIT happened before the vCPU's next event) also sets what INIT sets in
/// common code: EFER 0 (`set_efer(vcpu, 0)`), `vcpu->arch.time` 0
/// (`kvmclock_reset`), `smi_count` 0. Otherwise those are unknown until INIT
/// shows (a 0 stays 0).
pub(crate) fn on_init(v: &mut VcpuState, exact: bool) {
    v.regs_known &= INIT_KEPT;
    if exact {
        for s in [SLOT_EFER, SLOT_KVM_TIME] {
            v.regs[s] = 0;
        }
        v.regs_known |= (1 << SLOT_EFER) | (1 << SLOT_EFER_LMA) | (1 << SLOT_KVM_TIME);
        v.host.smi_count = Some(0);
    } else if v.host.smi_count != Some(0) {
        v.host.smi_count = None;
    }
}

/// A successful `KVM_SET_SREGS`/`SREGS2` (`__set_sregs_common`): EFER is
/// what it passed (`set_efer` of the vendor, LMA included); the FS/GS bases
/// are the passed segments' bases, which the `VmmState` event does not
/// carry: unknown until a write or read shows them.
pub(crate) fn on_set_sregs(v: &mut VcpuState, efer: u64) {
    know_efer(v, efer);
    v.regs_known &= !((1 << SLOT_FS_BASE) | (1 << (SLOT_FS_BASE + 1)));
}

/// A read the model could not predict teaches the register's value.
/// For an imported trace, it also teaches the §1–§5 state it did not know
/// (`VcpuState::unknown`).
pub(crate) fn teach(v: &mut VcpuState, index: u32, value: u64) {
    super::lapic::teach(v, index, value);
    if index == 0xc000_0080 {
        know_efer(v, value);
    } else if let Some(s) = reg_slot(index) {
        v.regs[s] = value;
        v.regs_known |= 1 << s;
    }
    super::host::teach(v, index, value);
    if v.unknown == 0 {
        return;
    }
    use crate::state::*;
    let bit = match index {
        0x1a0 => U_MISC_ENABLE,
        0x277 => U_PAT,
        0x1b => U_APIC_BASE,
        0xc001_0015 => U_HWCR,
        0x3a => U_FEAT_CTL,
        // KVM_X86_SETUP_MCE refuses more than KVM_MAX_MCE_BANKS banks.
        0x179 if value & 0xff <= MAX_MCE_BANKS as u64 => U_MCG_CAP,
        0x17a => U_MCG_STATUS,
        0x17b => U_MCG_CTL,
        0x4d0 => U_MCG_EXT_CTL,
        _ => return,
    };
    if v.unknown & bit == 0 {
        return;
    }
    v.unknown &= !bit;
    match index {
        0x1a0 => v.misc_enable = value,
        0x277 => v.pat = value,
        0x1b => v.apic_base = value,
        0xc001_0015 => v.hwcr = value,
        0x3a => v.feat_ctl = value,
        0x179 => v.mcg_cap = value,
        0x17a => v.mcg_status = value,
        0x17b => v.mcg_ctl = value,
        _ => v.mcg_ext_ctl = value,
    }
}

/// Whether the §1–§5 handlers would decide `index` from state an imported
/// trace has not shown yet (then the access is unmodeled).
pub(crate) fn needs_unknown(
    v: &VcpuState,
    index: u32,
    write: Option<u64>,
    host: bool,
    misc_enable_unchecked: bool,
    intel: bool,
    irqchip_known: bool,
) -> bool {
    use crate::state::*;
    let u = v.unknown;
    let w = write.is_some();
    let d = write.unwrap_or(0);
    let leaves = v.cpuid.leaves;
    // Rules that read the guest CPUID need the leaf (an import lists only the
    // leaves the guest executed).
    let cpuid_missing = match index {
        0x1b => {
            (d & APIC_BASE_EXTD != 0 && leaves & LEAF_1 == 0)
                || (d >> 36 != 0 && leaves & LEAF_8000_0008 == 0)
        }
        0x1a0 => w && !misc_enable_unchecked && leaves & LEAF_1 == 0,
        0x3a => intel && leaves & (LEAF_1 | LEAF_7) != LEAF_1 | LEAF_7,
        0x400..=0x47f => (index - 0x400) % 4 == 1 && d != 0 && !host && !v.cpuid.known,
        _ => false,
    };
    if cpuid_missing {
        return true;
    }
    if u == 0 && irqchip_known {
        return false;
    }
    match index {
        // kvm_pvm stores a guest's MISC_ENABLE unchecked: no state needed.
        0x1a0 => u & U_MISC_ENABLE != 0 && !(w && misc_enable_unchecked && !host),
        0x277 => !w && u & U_PAT != 0,
        0x1b => u & U_APIC_BASE != 0,
        0x800..=0x8ff => u & U_APIC_BASE != 0 || (!irqchip_known && v.x2apic_mode()),
        0xc001_0015 => !w && u & U_HWCR != 0,
        0x3a => intel && u & U_FEAT_CTL != 0,
        0x4d0 => intel && u & (U_FEAT_CTL | U_MCG_EXT_CTL) != 0,
        0x179 => !w && u & U_MCG_CAP != 0,
        0x17a => !w && u & U_MCG_STATUS != 0,
        0x17b => u & U_MCG_CAP != 0 || (!w && u & U_MCG_CTL != 0),
        0x400..=0x47f => {
            let in_range = ((index - 0x400) / 4) < (v.mcg_cap & 0xff) as u32;
            u & U_MCG_CAP != 0
                || (!w && in_range && u & U_BANKS != 0)
                // can_set_mci_status reads HWCR only for an AMD/Hygon guest
                // vendor (the CPUID is known here: see `cpuid_missing`).
                || (write.is_some_and(|d| d != 0)
                    && !host
                    && (index - 0x400) % 4 == 1
                    && u & U_HWCR != 0
                    && v.cpuid.amd_or_hygon)
        }
        0x280..=0x29f => {
            // A guest read without MCG_CMCI_P faults whatever the value.
            let in_range = index - 0x280 < (v.mcg_cap & 0xff) as u32;
            let value_read = !w && (host || v.mcg_cap & MCG_CMCI_P != 0);
            u & U_MCG_CAP != 0 || (value_read && in_range && u & U_CTL2 != 0)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A guest MCi_STATUS write of nonzero data needs HWCR only for an
    /// AMD/Hygon guest vendor (`can_set_mci_status`); an Intel one `#GP`s
    /// whatever HWCR holds, so an unknown HWCR does not leave it unmodelled.
    #[test]
    fn mci_status_write_needs_hwcr_only_for_amd_guests() {
        use crate::state::{U_ALL, U_BANKS, U_HWCR, U_MCG_CAP};
        for amd in [false, true] {
            let mut v = VcpuState::created(0, 1, kvmtrace_format::Irqchip::Kernel);
            v.cpuid.known = true;
            v.cpuid.amd_or_hygon = amd;
            v.mcg_cap = 0x10a;
            v.unknown = U_ALL & !(U_MCG_CAP | U_BANKS);
            assert_eq!(
                needs_unknown(&v, 0x401, Some(1), false, false, true, true),
                amd,
                "amd {amd}"
            );
            v.unknown &= !U_HWCR;
            assert!(!needs_unknown(&v, 0x401, Some(1), false, false, true, true));
        }
    }

    #[test]
    fn canonical_and_mtrr_types() {
        for (x, b48, b57) in [
            (0u64, true, true),
            (0x7fff_ffff_ffff, true, true),
            (0x8000_0000_0000, false, true),
            (0xffff_8000_0000_0000, true, true),
            (0x0100_0000_0000_0000, false, false),
        ] {
            assert_eq!(canonical(x, 48), b48, "{x:#x}/48");
            assert_eq!(canonical(x, 57), b57, "{x:#x}/57");
        }
        let ok: Vec<u64> = (0..8).filter(|&t| mtrr_type_ok(t)).collect();
        assert_eq!(ok, [0, 1, 4, 5, 6]);
    }

    #[test]
    fn slots_are_distinct_and_in_range() {
        let mut seen = [false; NREGS];
        for i in (0..0x300u32)
            .chain(0xc000_0080..0xc000_0110)
            .chain(0x4b56_4d00..0x4b56_4d10)
        {
            if let Some(s) = reg_slot(i) {
                // MSR_KVM_SYSTEM_TIME and _NEW are the same vcpu->arch.time.
                let shared = i == 0x4b56_4d01 && s == SLOT_KVM_TIME;
                assert!(s < NREGS && (!seen[s] || shared), "{i:#x}");
                seen[s] = true;
            }
        }
        // SLOT_EFER_LMA is a known bit, not a register of its own.
        assert!(
            seen.iter()
                .enumerate()
                .all(|(s, &x)| x || s == SLOT_EFER_LMA)
        );
    }
}
