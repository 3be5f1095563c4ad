//! KVM paravirtual and TSC MSRs beyond `common`'s table (issue 12 item 3),
//! every release 5.10+ (the same cases in 5.10 and 6.18). Read in x86.c
//! `kvm_get_msr_common` / `kvm_set_msr_common` (6.18, 5.10), `kvm_pv_enable_async_pf`,
//! `kvm_pv_enable_async_pf_int`, lapic.c `kvm_lapic_set_pv_eoi`.
//!
//! `guest_pv_has(vcpu, F)` is true when the feature bit is in CPUID
//! 0x40000001:EAX or when the VMM did not enforce PV CPUID
//! (`KVM_CAP_ENFORCE_PV_FEATURE_CPUID`, invisible in a trace): rules are
//! predicted only with the bit set. Enabling async PF or PV EOI at a guest
//! address depends on the VM's memslots (`kvm_gfn_to_hva_cache_init`): not
//! predicted. STEAL_TIME needs `sched_info_on()` (host kernel config,
//! CONFIG_SCHED_INFO=y on the project host: /proc/config.gz, vendor table).
//!
//! Values: 0 at vCPU creation, stored by accepted writes, 0 again at INIT
//! (`kvm_vcpu_reset`: apf.msr_en_val, apf.msr_int_val, st.msr_val;
//! `kvm_lapic_reset`: pv_eoi.msr_val); TSC_ADJUST survives INIT and is
//! changed by a guest TSC write (`adjust_tsc_offset_guest`: unknown).
//! The wall clock is VM-wide (`kvm->arch.wall_clock`), never per vCPU.

use crate::engine::Engine;
use crate::rules::Rule;
use crate::state::{LEAF_7, VcpuState};

use super::msr::{R, Store};

type RuleRef = &'static Rule;

macro_rules! pvrules {
    ($($id:ident = $name:literal;)+) => {
        $(pub const $id: Rule = Rule { name: $name, section: "x86.c", release: "5.10+" };)+
    };
}

pvrules! {
    PV_VALUE = "KVM PV MSR holds the value stored (kvm_get_msr_common, 0 at RESET/INIT)";
    PV_WRITE = "KVM PV MSR write accepted (kvm_set_msr_common)";
    PV_RESERVED = "KVM PV MSR reserved bits or missing feature (r=1)";
    WALL_CLOCK_VM = "wall clock is VM-wide (kvm->arch.wall_clock)";
    TSC_ADJUST_VALUE = "TSC_ADJUST holds the value stored (ia32_tsc_adjust_msr)";
    TSC_ADJUST_NO_FEATURE = "TSC_ADJUST guest write without CPUID TSC_ADJUST ignored";
    TSC_GUEST_WRITE = "guest IA32_TSC write accepted, TSC_ADJUST moved by an unknown amount (kvm_set_msr_common: adjust_tsc_offset_guest)";
}

crate::rules::rules! {
    TSC_ADJUST_PVM = "vendor pvm: TSC_ADJUST write (guest or host) stored without CPUID TSC_ADJUST (host_probes pvm_tsc_adjust_without_cpuid, host-notes)", "-", "6.18 pvm";
}

/// Slots of `PvRegs`.
pub(crate) const P_APF_EN: usize = 0;
pub(crate) const P_APF_INT: usize = 1;
pub(crate) const P_STEAL: usize = 2;
pub(crate) const P_PV_EOI: usize = 3;
pub(crate) const P_TSC_ADJUST: usize = 4;

/// Per-vCPU PV register values the model knows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PvRegs {
    pub known: u8,
    pub vals: [u64; 5],
}

impl PvRegs {
    /// At vCPU creation: everything 0.
    pub const fn created() -> PvRegs {
        PvRegs {
            known: 0x1f,
            vals: [0; 5],
        }
    }
    pub(crate) fn get(&self, s: usize) -> Option<u64> {
        (self.known & (1 << s) != 0).then_some(self.vals[s])
    }
    pub(crate) fn set(&mut self, s: usize, x: Option<u64>) {
        match x {
            Some(x) => {
                self.vals[s] = x;
                self.known |= 1 << s;
            }
            None => self.known &= !(1 << s),
        }
    }
    /// `kvm_vcpu_reset(init_event)`: `exact` zeroes what INIT clears,
    /// otherwise it becomes unknown; TSC_ADJUST is kept.
    pub(crate) fn init(&mut self, exact: bool) {
        for s in [P_APF_EN, P_APF_INT, P_STEAL, P_PV_EOI] {
            self.set(s, exact.then_some(0));
        }
    }
}

const F_CLOCKSOURCE: u32 = 1 << 0;
const F_CLOCKSOURCE2: u32 = 1 << 3;
const F_ASYNC_PF: u32 = 1 << 4;
const F_STEAL_TIME: u32 = 1 << 5;
const F_PV_EOI: u32 = 1 << 6;
const F_ASYNC_PF_VMEXIT: u32 = 1 << 10;
const F_ASYNC_PF_INT: u32 = 1 << 14;

/// Whether this module decides `index`.
pub(crate) const fn handles(index: u32) -> bool {
    matches!(
        index,
        0x3b | 0x10
            | 0x11
            | 0x4b56_4d00
            | 0x4b56_4d02
            | 0x4b56_4d03
            | 0x4b56_4d04
            | 0x4b56_4d06
            | 0x4b56_4d07
    )
}

impl Engine {
    /// The KVM PV features `guest_pv_has` grants (x86.h, 5.10+): all of
    /// them unless the VMM enforced PV CPUID, else CPUID 0x40000001:EAX.
    /// Enforcement is not in a trace: only kvmtrace's own VMM is known not
    /// to enable it.
    pub(crate) fn pv_features(&self, v: &VcpuState) -> u32 {
        if self.host_trace.pv_unenforced {
            u32::MAX
        } else {
            v.cpuid.kvm_pv_features
        }
    }

    pub(crate) fn pv_access(
        &self,
        v: &VcpuState,
        index: u32,
        write: Option<u64>,
        host: bool,
    ) -> Option<(R, RuleRef, Store)> {
        // The same cases in 5.10 and 6.18 (`guest_pv_has` gates since
        // 66570e966dd9, 5.10; ASYNC_PF_INT 5.8; POLL_CONTROL 5.3): every
        // release, not only under `msr_tables`.
        if !(handles(index) || index == 0x10) {
            return None;
        }
        let f = self.pv_features(v);
        let has = |bit: u32| f & bit != 0;
        let value = |x: Option<u64>, rule: RuleRef| x.map(|x| (R::Ok(x), rule, Store::None));
        let fail = Some((R::Fault, &PV_RESERVED, Store::None));
        let ok = |s: usize, x: Option<u64>| Some((R::Ok(0), &PV_WRITE, Store::Pv(s, x)));
        match (index, write) {
            // IA32_TSC: kvm_set_msr_common has no failure path for a guest
            // write; it moves TSC_ADJUST by an amount the trace cannot know.
            (0x10, Some(_)) if !host => {
                Some((R::Ok(0), &TSC_GUEST_WRITE, Store::Pv(P_TSC_ADJUST, None)))
            }
            (0x10, _) => None,
            (0x3b, None) => value(v.pv.get(P_TSC_ADJUST), &TSC_ADJUST_VALUE),
            (0x3b, Some(d)) if self.policy.has(crate::vendor::Fact::TscAdjustUngated) => {
                Some((R::Ok(0), &TSC_ADJUST_PVM, Store::Pv(P_TSC_ADJUST, Some(d))))
            }
            (0x3b, Some(d)) => {
                let leaf7 = v.cpuid.leaves & LEAF_7 != 0;
                match (leaf7, v.cpuid.tsc_adjust) {
                    (true, true) => Some((
                        R::Ok(0),
                        &TSC_ADJUST_VALUE,
                        Store::Pv(P_TSC_ADJUST, Some(d)),
                    )),
                    (true, false) => Some((R::Ok(0), &TSC_ADJUST_NO_FEATURE, Store::None)),
                    _ => Some((R::Unmodeled, &super::pmu::UNSEEN_CPUID, Store::None)),
                }
            }
            (0x11, None) if has(F_CLOCKSOURCE) => value(self.vm.wall_clock, &WALL_CLOCK_VM),
            (0x4b56_4d00, None) if has(F_CLOCKSOURCE2) => value(self.vm.wall_clock, &WALL_CLOCK_VM),
            (0x11 | 0x4b56_4d00, Some(d)) => {
                let bit = if index == 0x11 {
                    F_CLOCKSOURCE
                } else {
                    F_CLOCKSOURCE2
                };
                has(bit).then_some((R::Ok(0), &WALL_CLOCK_VM, Store::WallClock(Some(d))))
            }
            (0x4b56_4d02, None) if has(F_ASYNC_PF) => value(v.pv.get(P_APF_EN), &PV_VALUE),
            (0x4b56_4d02, Some(d)) if has(F_ASYNC_PF) => {
                // kvm_pv_enable_async_pf
                if d & 0x30 != 0 {
                    return fail;
                }
                if d & (1 << 2) != 0 && !has(F_ASYNC_PF_VMEXIT) {
                    return None;
                }
                if d & (1 << 3) != 0 && !has(F_ASYNC_PF_INT) {
                    return None;
                }
                if !self.vm.lapic_in_kernel() {
                    return if d != 0 { fail } else { ok(P_APF_EN, Some(0)) };
                }
                // Enabled with interrupt delivery: the GPA must be in a memslot.
                if d & 0x9 == 0x9 {
                    return Some((
                        R::Unmodeled,
                        &crate::rules::UNMODELED,
                        Store::Pv(P_APF_EN, None),
                    ));
                }
                ok(P_APF_EN, Some(d))
            }
            (0x4b56_4d06, None) if has(F_ASYNC_PF_INT) => value(v.pv.get(P_APF_INT), &PV_VALUE),
            (0x4b56_4d06, Some(d)) if has(F_ASYNC_PF_INT) => {
                if d >> 8 != 0 || !self.vm.lapic_in_kernel() {
                    fail
                } else {
                    ok(P_APF_INT, Some(d))
                }
            }
            (0x4b56_4d07, None) if has(F_ASYNC_PF_INT) => Some((R::Ok(0), &PV_VALUE, Store::None)),
            (0x4b56_4d07, Some(_)) if has(F_ASYNC_PF_INT) => {
                Some((R::Ok(0), &PV_WRITE, Store::None))
            }
            (0x4b56_4d03, None) if has(F_STEAL_TIME) => value(v.pv.get(P_STEAL), &PV_VALUE),
            (0x4b56_4d03, Some(d)) if has(F_STEAL_TIME) => {
                // KVM_STEAL_RESERVED_MASK (bits 5:2); sched_info_on() is the
                // host's (CONFIG_SCHED_INFO): predicted only for pvm hosts
                // measured to have it.
                if d & 0x3c != 0 {
                    fail
                } else if self.policy.vendor == crate::policy::Vendor::Pvm {
                    ok(P_STEAL, Some(d))
                } else {
                    Some((
                        R::Unmodeled,
                        &crate::rules::UNMODELED,
                        Store::Pv(P_STEAL, None),
                    ))
                }
            }
            (0x4b56_4d04, None) if has(F_PV_EOI) => value(v.pv.get(P_PV_EOI), &PV_VALUE),
            (0x4b56_4d04, Some(d)) if has(F_PV_EOI) => {
                // kvm_lapic_set_pv_eoi: 4-byte aligned; enabling maps the GPA.
                if d & 0x2 != 0 {
                    fail
                } else if d & 1 != 0 {
                    Some((
                        R::Unmodeled,
                        &crate::rules::UNMODELED,
                        Store::Pv(P_PV_EOI, None),
                    ))
                } else {
                    ok(P_PV_EOI, Some(d))
                }
            }
            _ => None,
        }
    }
}
