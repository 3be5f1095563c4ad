//! The in-kernel local APIC behind the x2APIC MSRs 0x800–0x8ff, and INIT
//! delivered through it (issue 12 items 1 and 2). Switch `lapic_regs`.
//!
//! Read in mainline lapic.c (6.18 era): `kvm_x2apic_msr_read/write`,
//! `kvm_lapic_msr_read/write`, `kvm_lapic_reg_read` (with
//! `kvm_lapic_readable_reg_mask`), `kvm_lapic_reg_write`, `__apic_read`,
//! `apic_get_tmcct`, `kvm_x2apic_icr_write`, `apic_lvt_mask[]`,
//! `kvm_apic_set_version`, `kvm_lapic_reset`, `__apic_accept_irq`,
//! `kvm_apic_match_dest`.
//!
//! What the trace cannot determine is never guessed (docs/learned-not-modelled.md):
//! TPR (MOV CR8 changes it without an MSR event), PPR, ISR/TMR/IRR (interrupt
//! acceptance), TMCCT of a running timer (time), and every register while the
//! APIC is in xAPIC mode (MMIO writes to the in-kernel LAPIC leave no event).
//! Register values become known from an x2APIC write whose stored value the
//! source determines, from an INIT seen exactly, or from a read (taught).

use crate::engine::Engine;
use crate::policy::Vendor;
use crate::rules::Rule;
use crate::state::{LEAF_1, U_APIC_BASE, U_MCG_CAP, VcpuState};

use super::msr::{R, Store};

type RuleRef = &'static Rule;

macro_rules! lrules {
    ($($id:ident = $name:literal, $rel:literal;)+) => {
        $(pub const $id: Rule = Rule { name: $name, section: "lapic.c", release: $rel };)+
    };
}

lrules! {
    X2APIC_ID = "x2APIC ID = vcpu_id (kvm_x2apic_id)", "6.0+";
    X2APIC_LDR = "x2APIC LDR derived from the ID (kvm_apic_calc_x2apic_ldr)", "6.0+";
    X2APIC_VERSION = "APIC version (kvm_apic_set_version)", "6.0+";
    X2APIC_UNREADABLE = "x2APIC read of a write-only/reserved register (kvm_lapic_readable_reg_mask)", "6.0+";
    X2APIC_REG_VALUE = "x2APIC register holds the value stored (kvm_lapic_reg_write/kvm_lapic_reset)", "6.0+";
    X2APIC_TMCCT_ZERO = "TMCCT reads 0: TMICT 0 or TSC-deadline mode (apic_get_tmcct)", "6.0+";
    X2APIC_TMCCT_EXPIRED = "TMCCT stays 0 once an expired one-shot timer read 0, until TMICT/TDCR is written (apic_get_tmcct: target_expiration passed, apic_timer_fn NORESTART; apic_update_lvtt restarts nothing)", "6.0+";
    X2APIC_HIGH_BITS = "x2APIC write with bits 63:32 set (kvm_lapic_msr_write)", "6.0+";
    X2APIC_ICR_RSVD = "x2apic_icr_reserved_gp=true: ICR reserved bits (kvm_x2apic_icr_write)", "6.12+";
    X2APIC_ICR_WRITE = "x2APIC ICR write sends the IPI (kvm_x2apic_icr_write)", "6.0+";
    X2APIC_READ_ONLY = "x2APIC write to a read-only or reserved register (kvm_lapic_reg_write default/ID/LDR/DFR/ICR2)", "6.0+";
    X2APIC_WRITE = "x2APIC register write accepted (kvm_lapic_reg_write)", "6.0+";
    X2APIC_ESR_NONZERO = "x2APIC ESR write of a nonzero value (kvm_lapic_reg_write)", "6.0+";
    X2APIC_SELF_IPI_RESERVED = "SELF_IPI with bits beyond the vector (kvm_lapic_reg_write)", "6.0+";
    X2APIC_LVT_UNSUPPORTED = "LVT CMCI without MCG_CMCI_P (kvm_lapic_lvt_supported)", "6.0+";
    TSC_DEADLINE_WRITE = "guest TSC_DEADLINE write accepted, ignored outside TSC-deadline mode (kvm_set_msr_common: kvm_set_lapic_tscdeadline_msr)", "all";
    TSC_DEADLINE_ZERO = "guest TSC_DEADLINE reads 0: no hardware-enabled in-kernel LAPIC, not in TSC-deadline mode, or 0 since entering it (kvm_get_lapic_tscdeadline_msr, apic_update_lvtt)", "all";
}

/// Register slots of `LapicRegs` (offsets in the APIC page).
const SLOTS: [u32; 13] = [
    0xf0, 0x280, 0x2f0, 0x300, 0x320, 0x330, 0x340, 0x350, 0x360, 0x370, 0x380, 0x3e0, 0x30,
];
const S_SPIV: usize = 0;
const S_ESR: usize = 1;
const S_LVTCMCI: usize = 2;
const S_ICR: usize = 3;
const S_LVTT: usize = 4;
const S_LVTPC: usize = 6;
const S_TMICT: usize = 10;
const S_TDCR: usize = 11;
const S_LVR: usize = 12;

fn slot(reg: u32) -> Option<usize> {
    SLOTS.iter().position(|&r| r == reg)
}

const LVT_MASKED: u64 = 1 << 16;
/// `LVT_MASK` = masked | send pending | vector.
const LVT_MASK: u64 = LVT_MASKED | (1 << 12) | 0xff;
const MODE_MASK: u64 = 0x700;
/// `LINT_MASK`: LVT_MASK | delivery mode | polarity | remote IRR | level.
const LINT_MASK: u64 = LVT_MASK | MODE_MASK | (1 << 13) | (1 << 14) | (1 << 15);
const SPIV_ENABLED: u64 = 1 << 8;
const SPIV_DIRECTED_EOI: u64 = 1 << 12;
const ICR_BUSY: u64 = 1 << 12;
/// `X2APIC_ICR_RESERVED_BITS`: GENMASK(31,20) | GENMASK(17,16) | BIT(13).
const X2APIC_ICR_RESERVED: u64 = 0xfff0_0000 | 0x3_0000 | (1 << 13);
/// LVTT timer mode field (bits 18:17); 2 = TSC-deadline.
const TIMER_MODE_SHIFT: u32 = 17;

/// The LAPIC registers the model tracks, per vCPU. A slot is valid where its
/// bit of `known` is set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LapicRegs {
    pub known: u16,
    pub vals: [u64; 13],
    /// An INIT was applied from an ICR write the model saw (exactly, for a
    /// self-INIT); a target-side `Init` event for it keeps the registers.
    pub init_applied: bool,
    /// Another vCPU's INIT reached this x2APIC-mode vCPU, and no event has
    /// shown yet whether it processed it (`kvm_apic_accept_events`): the
    /// registers are either `pre` or `post`; `known` holds the slots where
    /// both agree. A read that only `post` explains settles it.
    pub pending: Option<PendingInit>,
    /// A TMCCT read returned 0 in one-shot mode: the timer has expired, and
    /// TMCCT stays 0 until TMICT or TDCR is written (`apic_get_tmcct`).
    pub tmcct_expired: bool,
    /// ESR was kept across an xAPIC stretch: exact without APIC
    /// virtualization (pvm); with APICv/AVIC a trap-like APIC-write exit
    /// comes after the hardware stored the guest's ESR write in the page.
    pub esr_after_xapic: bool,
}

/// The two LAPIC states a vCPU with an INIT in flight may be in
/// (docs/learned-not-modelled.md, "INIT of another vCPU").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingInit {
    pub pre_known: u16,
    pub pre: [u64; 13],
    pub post_known: u16,
    pub post: [u64; 13],
}

impl PendingInit {
    fn pre(&self, s: usize) -> Option<u64> {
        (self.pre_known & (1 << s) != 0).then_some(self.pre[s])
    }
    fn post(&self, s: usize) -> Option<u64> {
        (self.post_known & (1 << s) != 0).then_some(self.post[s])
    }
    /// The registers known whichever state the vCPU is in.
    fn common(&self) -> LapicRegs {
        let mut l = LapicRegs::default();
        for s in 0..SLOTS.len() {
            if let (Some(a), Some(b)) = (self.pre(s), self.post(s))
                && a == b
            {
                l.set(s, a);
            }
        }
        l.pending = Some(*self);
        l
    }
}

impl LapicRegs {
    fn get(&self, s: usize) -> Option<u64> {
        (self.known & (1 << s) != 0).then_some(self.vals[s])
    }
    fn set(&mut self, s: usize, x: u64) {
        self.vals[s] = x;
        self.known |= 1 << s;
        if s == S_ESR {
            self.esr_after_xapic = false;
        }
    }
    fn forget(&mut self, s: usize) {
        self.known &= !(1 << s);
    }
    /// Everything but the version register (a VM configuration value) and
    /// ESR: only `kvm_lapic_reset` (0) and `KVM_SET_LAPIC` write ESR; a guest
    /// write stores nothing (`kvm_lapic_reg_write` `APIC_ESR`), in xAPIC
    /// mode too. Drops a pending INIT.
    pub fn forget_all(&mut self) {
        self.known &= (1 << S_LVR) | (1 << S_ESR);
        self.pending = None;
        self.tmcct_expired = false;
        self.esr_after_xapic = true;
    }

    /// `kvm_lapic_reset`: ESR = 0 (RESET; the other registers are reset too,
    /// but xAPIC-mode MMIO may change them unseen).
    pub(crate) fn reset_esr(&mut self) {
        self.set(S_ESR, 0);
    }

    /// `KVM_SET_LAPIC` (`kvm_apic_set_state` copies the whole page).
    pub(crate) fn set_esr(&mut self, x: u64) {
        self.set(S_ESR, x);
    }
}

/// `nr_lvt_entries`: 7 with MCG_CMCI_P (`kvm_apic_calc_nr_lvt_entries`);
/// `None` when MCG_CAP is not known (import).
fn nr_lvt(v: &VcpuState) -> Option<u32> {
    (v.unknown & U_MCG_CAP == 0).then_some(if v.mcg_cap & crate::state::MCG_CMCI_P != 0 {
        7
    } else {
        6
    })
}

/// `timer_mode_mask`: 3 << 17 with CPUID.1:ECX[24] TSC_DEADLINE, else 1 << 17
/// (`kvm_vcpu_after_set_cpuid`); `None` when leaf 1 was not seen.
fn timer_mode_mask(v: &VcpuState) -> Option<u64> {
    if v.cpuid.leaves & LEAF_1 == 0 {
        return None;
    }
    Some(if v.cpuid.tsc_deadline { 3 } else { 1 } << TIMER_MODE_SHIFT)
}

/// `apic_lvt_mask[]` by slot (LVTT gets the timer mode mask at runtime).
fn lvt_mask(s: usize) -> u64 {
    match SLOTS[s] {
        0x330 | 0x340 | 0x2f0 => LVT_MASK | MODE_MASK,
        0x350 | 0x360 => LINT_MASK,
        _ => LVT_MASK,
    }
}

/// What an accepted write stores in the tracked registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LapicStore {
    /// Slot `s` now holds the value (`None`: unknown).
    Reg(usize, Option<u64>),
    /// SPIV write (the value written; the stored value and the LVT masking
    /// are computed when applied).
    Spiv(u64),
    /// LVTT write (value written).
    Lvtt(u64),
    /// TMICT write (value written).
    Tmict(u64),
    /// ICR write: the value written, then the IPI (INIT delivery, item 2).
    Icr(u64),
    /// A write whose effect is not known (SPIV and LVTT masks, TMICT).
    ForgetAll,
}

impl Engine {
    fn lapic_on(&self) -> bool {
        self.policy.switches.lapic_regs
    }

    /// `kvm_apic_set_version` where it is determined: 0x14, max LVT index,
    /// directed EOI with x2APIC in CPUID and no in-kernel IOAPIC (split irqchip).
    fn apic_version(&self, v: &VcpuState) -> Option<u64> {
        if let Some(x) = v.lapic.get(S_LVR) {
            return Some(x);
        }
        let n = nr_lvt(v)?;
        if !self.irqchip_kind_known() || v.cpuid.leaves & LEAF_1 == 0 {
            return None;
        }
        let deoi = v.cpuid.x2apic && self.vm.irqchip == kvmtrace_format::Irqchip::Split;
        Some(0x14 | (u64::from(n - 1) << 16) | if deoi { 1 << 24 } else { 0 })
    }

    pub(crate) fn irqchip_kind_known(&self) -> bool {
        !self.imported || self.header_irqchip_known
    }

    /// `kvm_x2apic_msr_read` with x2APIC on and an in-kernel LAPIC (checked by
    /// the caller). `None`: this module has no rule (switch off).
    pub(crate) fn x2apic_read(&self, v: &VcpuState, index: u32) -> Option<(R, RuleRef)> {
        if !self.lapic_on() {
            return None;
        }
        let reg = (index - 0x800) << 4;
        let l = &v.lapic;
        let known = |s: usize| match l.get(s) {
            Some(x) => (R::Ok(x), &X2APIC_REG_VALUE),
            None => (R::Unmodeled, &crate::rules::UNMODELED),
        };
        let un = (R::Unmodeled, &crate::rules::UNMODELED);
        Some(match reg {
            // ID and LDR need the vcpu_id: learned from a read where the
            // capture only guessed which thread is which vCPU.
            0x20 | 0xd0 if !v.id_known => un,
            0x20 => (R::Ok(u64::from(v.id)), &X2APIC_ID),
            0x30 => match self.apic_version(v) {
                Some(x) => (R::Ok(x), &X2APIC_VERSION),
                None => un,
            },
            0xd0 => (
                R::Ok((u64::from(v.id >> 4) << 16) | (1 << (v.id & 0xf))),
                &X2APIC_LDR,
            ),
            // TPR (MOV CR8), PPR, ISR/TMR/IRR: not determined by the trace.
            0x80 | 0xa0 | 0x100..=0x270 => un,
            0x2f0 => match nr_lvt(v) {
                Some(7) => known(S_LVTCMCI),
                Some(_) => (R::Fault, &X2APIC_UNREADABLE),
                None => un,
            },
            // LVTPC: kvm_apic_local_deliver masks it after a PMI for an
            // Intel-compatible guest (no event): predicted for others, and
            // where the vCPU has no PMU counter to overflow (no PMI).
            0x340 if self.pmi_may_mask_lvtpc(v) => un,
            0x280 if l.esr_after_xapic && self.policy.vendor != Vendor::Pvm => un,
            0xf0 | 0x280 | 0x300 | 0x320..=0x370 | 0x380 | 0x3e0 => match slot(reg) {
                Some(s) => known(s),
                None => un,
            },
            0x390 => {
                let deadline = l
                    .get(S_LVTT)
                    .is_some_and(|x| (x >> TIMER_MODE_SHIFT) & 3 == 2);
                if deadline || l.get(S_TMICT) == Some(0) {
                    (R::Ok(0), &X2APIC_TMCCT_ZERO)
                } else if l.tmcct_expired {
                    (R::Ok(0), &X2APIC_TMCCT_EXPIRED)
                } else {
                    un
                }
            }
            _ => (R::Fault, &X2APIC_UNREADABLE),
        })
    }

    /// `kvm_x2apic_msr_write` with x2APIC on and an in-kernel LAPIC.
    pub(crate) fn x2apic_write(
        &self,
        v: &VcpuState,
        index: u32,
        data: u64,
    ) -> Option<(R, RuleRef, Store)> {
        if !self.lapic_on() {
            return None;
        }
        let reg = (index - 0x800) << 4;
        let vendor = self.policy.vendor;
        // APICv / AVIC hardware (VMX, SVM) virtualizes TPR, EOI, SELF_IPI and
        // ICR writes and does its own reserved-bit checks; kvm_pvm has none.
        let hw = vendor != Vendor::Pvm;
        let un = Some((R::Unmodeled, &crate::rules::UNMODELED, Store::None));
        let fault = |r: RuleRef| Some((R::Fault, r, Store::None));
        let ok = |st: LapicStore| Some((R::Ok(0), &X2APIC_WRITE, Store::Lapic(st)));
        let ok_none = Some((R::Ok(0), &X2APIC_WRITE, Store::None));
        if reg == 0x300 {
            if self.policy.switches.x2apic_icr_reserved_gp && data & X2APIC_ICR_RESERVED != 0 {
                return fault(&X2APIC_ICR_RSVD);
            }
            if !self.policy.switches.x2apic_icr_reserved_gp && data & X2APIC_ICR_RESERVED != 0 {
                return un;
            }
            // "only AMD requires [BUSY] to be zero" with x2AVIC.
            if vendor == Vendor::Amd && data & ICR_BUSY != 0 {
                return un;
            }
            return Some((
                R::Ok(0),
                &X2APIC_ICR_WRITE,
                Store::Lapic(LapicStore::Icr(data)),
            ));
        }
        if data >> 32 != 0 {
            return fault(&X2APIC_HIGH_BITS);
        }
        match reg {
            0x80 if hw && data > 0xff => un,
            0x80 => ok_none,
            0xb0 if hw && data != 0 => un,
            0xb0 => ok_none,
            0xf0 => ok(LapicStore::Spiv(data)),
            0x2f0 => match nr_lvt(v) {
                Some(7) => ok(self.lvt_store(v, S_LVTCMCI, data)),
                Some(_) => fault(&X2APIC_LVT_UNSUPPORTED),
                None => un,
            },
            0x330..=0x370 => match slot(reg) {
                Some(s) => ok(self.lvt_store(v, s, data)),
                None => un,
            },
            0x320 => ok(LapicStore::Lvtt(data)),
            0x380 => ok(LapicStore::Tmict(data)),
            0x3e0 => ok(LapicStore::Reg(S_TDCR, Some(data & 0xb))),
            // ESR: x2APIC takes only 0, and the write changes nothing.
            0x280 if data != 0 => fault(&X2APIC_ESR_NONZERO),
            0x280 => ok_none,
            0x3f0 if data & !0xff != 0 => fault(&X2APIC_SELF_IPI_RESERVED),
            0x3f0 => ok_none,
            _ => fault(&X2APIC_READ_ONLY),
        }
    }

    /// IA32_TSC_DEADLINE (0x6e0) from the guest: `kvm_set_msr_common` /
    /// `kvm_get_msr_common` call `kvm_set/get_lapic_tscdeadline_msr`, never
    /// fail, and read `lapic_timer.tscdeadline` only with a present LAPIC in
    /// TSC-deadline mode. That value is 0 on entering or leaving the mode
    /// (`apic_update_lvtt`) and after a 0 write; otherwise time decides
    /// (expiry zeroes it): learned. `None`: no rule (switch off, or the
    /// irqchip, APIC base or LVTT the answer rests on is unknown).
    pub(crate) fn tsc_deadline(
        &self,
        v: &VcpuState,
        write: Option<u64>,
    ) -> Option<(R, RuleRef, Store)> {
        if !self.lapic_on() {
            return None;
        }
        if write.is_some() {
            return Some((R::Ok(0), &TSC_DEADLINE_WRITE, Store::None));
        }
        let zero = Some((R::Ok(0), &TSC_DEADLINE_ZERO, Store::None));
        if !self.vm.irqchip_known {
            return None;
        }
        // kvm_apic_present: an in-kernel LAPIC, hardware-enabled.
        if !self.vm.lapic_in_kernel() {
            return zero;
        }
        if v.unknown & U_APIC_BASE != 0 {
            return None;
        }
        if v.apic_base & crate::state::APIC_BASE_EN == 0 {
            return zero;
        }
        // lapic_timer.tscdeadline known to be 0: 0 in either mode.
        if v.host.tsc_deadline_zero {
            return zero;
        }
        match v.lapic.get(S_LVTT) {
            Some(t) if (t >> TIMER_MODE_SHIFT) & 3 != 2 => zero,
            _ => None,
        }
    }

    /// An LVT write (not the timer): masked while software-disabled, then
    /// `& apic_lvt_mask[]`.
    fn lvt_store(&self, v: &VcpuState, s: usize, data: u64) -> LapicStore {
        match v.lapic.get(S_SPIV) {
            Some(spiv) => {
                let m = if spiv & SPIV_ENABLED == 0 {
                    LVT_MASKED
                } else {
                    0
                };
                LapicStore::Reg(s, Some((data | m) & lvt_mask(s)))
            }
            None => LapicStore::Reg(s, None),
        }
    }

    /// Fold an accepted x2APIC write (`Store::Lapic`).
    pub(crate) fn apply_lapic(&mut self, vcpu: u32, st: LapicStore) {
        let split = self.vm.irqchip == kvmtrace_format::Irqchip::Split;
        let kind_known = self.irqchip_kind_known();
        let Some(v) = self.vcpu_mut(vcpu) else {
            return;
        };
        let leaf1 = v.cpuid.leaves & LEAF_1 != 0;
        let x2apic_cpuid = v.cpuid.x2apic;
        let tmm = timer_mode_mask(v);
        let deadline = |y: u64| (y >> TIMER_MODE_SHIFT) & 3 == 2;
        let mode_change = match (st, v.lapic.get(S_LVTT), tmm) {
            (LapicStore::Lvtt(x), Some(old), Some(m)) => deadline(old) != deadline(x & m),
            _ => false,
        };
        if mode_change {
            // apic_update_lvtt: entering or leaving TSC-deadline mode zeroes
            // lapic_timer.tscdeadline.
            v.host.tsc_deadline_zero = true;
        }
        let l = &mut v.lapic;
        // A TMICT write restarts the timer, a TDCR write restarts it with a
        // new target (update_target_expiration, restart_apic_timer): TMCCT
        // is time again. An LVTT write restarts nothing (apic_update_lvtt:
        // one-shot <-> periodic keeps the expired target; to or from
        // TSC-deadline zeroes TMICT, and TMCCT reads 0 anyway).
        if matches!(
            st,
            LapicStore::Tmict(_) | LapicStore::ForgetAll | LapicStore::Reg(S_TDCR | S_TMICT, _)
        ) {
            l.tmcct_expired = false;
        }
        match st {
            LapicStore::Reg(s, Some(x)) => l.set(s, x),
            LapicStore::Reg(s, None) => l.forget(s),
            LapicStore::ForgetAll => l.forget_all(),
            LapicStore::Spiv(x) => {
                // mask 0x3ff, plus DIRECTED_EOI when the version has it.
                if x & SPIV_DIRECTED_EOI == 0 {
                    l.set(S_SPIV, x & 0x3ff);
                } else if kind_known && leaf1 {
                    let deoi = x2apic_cpuid && split;
                    l.set(S_SPIV, x & if deoi { 0x13ff } else { 0x3ff });
                } else {
                    l.forget(S_SPIV);
                }
                if x & SPIV_ENABLED == 0 {
                    for s in [S_LVTT, 5, S_LVTPC, 7, 8, 9, S_LVTCMCI] {
                        if let Some(y) = l.get(s) {
                            l.set(s, y | LVT_MASKED);
                        }
                    }
                }
            }
            LapicStore::Lvtt(x) => {
                let (Some(spiv), Some(tmm)) = (l.get(S_SPIV), tmm) else {
                    l.forget(S_LVTT);
                    l.forget(S_TMICT);
                    return;
                };
                let m = if spiv & SPIV_ENABLED == 0 {
                    LVT_MASKED
                } else {
                    0
                };
                let new = (x | m) & (LVT_MASK | tmm);
                let deadline = |y: u64| (y >> TIMER_MODE_SHIFT) & 3 == 2;
                match l.get(S_LVTT) {
                    // apic_update_lvtt: entering or leaving TSC-deadline mode
                    // zeroes TMICT.
                    Some(old) if deadline(old) != deadline(new) => l.set(S_TMICT, 0),
                    Some(_) => {}
                    None => l.forget(S_TMICT),
                }
                l.set(S_LVTT, new);
            }
            LapicStore::Tmict(x) => match l.get(S_LVTT) {
                // Ignored in TSC-deadline mode.
                Some(t) if (t >> TIMER_MODE_SHIFT) & 3 == 2 => {}
                Some(_) => l.set(S_TMICT, x),
                None => l.forget(S_TMICT),
            },
            LapicStore::Icr(x) => {
                l.set(S_ICR, x & !ICR_BUSY);
                self.send_ipi(vcpu, x);
            }
        }
    }

    /// `kvm_apic_send_ipi` of an x2APIC ICR value from `src`: only INIT
    /// changes state the model tracks (item 2). `__apic_accept_irq` ignores
    /// a level-triggered INIT de-assert.
    fn send_ipi(&mut self, src: u32, icr: u64) {
        let mode = (icr >> 8) & 7;
        if mode != 5 {
            return;
        }
        let level_trig = icr & (1 << 15) != 0;
        let assert = icr & (1 << 14) != 0;
        if level_trig && !assert {
            return;
        }
        let dest = (icr >> 32) as u32;
        let logical = icr & (1 << 11) != 0;
        let n = self.vcpus.len() as u32;
        for t in 0..n {
            // kvm_apic_match_dest; a target not in x2APIC mode (or with an
            // unknown mode) is a possible target unless excluded.
            let tv = &self.vcpus[t as usize];
            let tx2 = tv.unknown & U_APIC_BASE == 0 && tv.x2apic_mode();
            let hit = match (icr >> 18) & 3 {
                1 => Some(t == src),
                2 => Some(true),
                3 => Some(t != src),
                _ if dest == u32::MAX => Some(true),
                _ if !tx2 => None,
                _ if !tv.id_known => None,
                _ if logical => {
                    let ldr = ((tv.id >> 4) << 16) | (1 << (tv.id & 0xf));
                    Some(ldr >> 16 == dest >> 16 && ldr & dest & 0xffff != 0)
                }
                _ => Some(dest == tv.id),
            };
            match hit {
                Some(false) => {}
                Some(true) if t == src => self.deliver_init(t, true),
                _ => self.deliver_init(t, false),
            }
        }
    }

    /// An `Ipi` event with delivery mode INIT (`kvm_apic_ipi`, sender side).
    /// From an x2APIC sender, the ICR write that follows it decides; from an
    /// xAPIC sender (MMIO ICR) the shorthand and level are not in the event:
    /// every vCPU is a possible target. A capture of another VMM traces
    /// `kvm_apic_accept_irq` (capture::tracefs::FOREIGN_EVENTS), which
    /// `kvm_apic_send_ipi` → `kvm_irq_delivery_to_apic` → `__apic_accept_irq`
    /// prints after `kvm_apic_ipi` for each target: its `KernelInit`s decide.
    pub(crate) fn apply_ipi_init(&mut self, src: u32) {
        if !self.lapic_on() || self.kernel_inits_seen || self.accept_irq_traced {
            return;
        }
        // kvm_apic_ipi fires only in kvm_apic_send_ipi, an in-kernel LAPIC's
        // ICR write: without one the IPI is the VMM's user-space LAPIC, which
        // records an `Init` with the registers for each target it INITs.
        if self.vm.irqchip_known && !self.vm.lapic_in_kernel() {
            return;
        }
        let v = self.vcpu_state(src);
        if v.unknown & U_APIC_BASE == 0 && v.x2apic_mode() {
            return;
        }
        for t in 0..self.vcpus.len() as u32 {
            self.deliver_init(t, false);
        }
    }

    /// A capture's `KernelInit` (`kvm_apic_accept_irq`, de-asserts already
    /// dropped): the target processes it when it next runs, so its state is
    /// unknown unless it INITed itself; registers the capture saw are taken.
    pub(crate) fn apply_kernel_init(
        &mut self,
        vcpu: u32,
        from: Option<u32>,
        known: &kvmtrace_format::KnownState,
    ) {
        self.kernel_inits_seen = true;
        if !self.lapic_on() {
            return;
        }
        self.deliver_init(vcpu, from == Some(vcpu));
        if let Some(base) = known.apic_base
            && let Some(v) = self.vcpu_mut(vcpu)
        {
            v.apic_base = base;
            v.unknown &= !U_APIC_BASE;
        }
    }

    /// INIT reaches `t` (`kvm_vcpu_reset(init_event=true)` via
    /// `kvm_apic_accept_events`). `exact`: the model knows it happens before
    /// the target's next event (a self-INIT); otherwise what INIT changes is
    /// unknown until a target-side `Init` event or a read shows it.
    pub(crate) fn deliver_init(&mut self, t: u32, exact: bool) {
        let imported = self.imported;
        let pvm = self.policy.vendor == Vendor::Pvm;
        let lint0_quirk = self.vm.quirk(crate::quirks::LINT0_REENABLED);
        let mut system_reset = false;
        if let Some(v) = self.vcpu_mut(t) {
            // Table registers: kept, set or forgotten (model::common).
            super::common::on_init(v, exact);
            // The BSP bit where known, else the reset BSP (bsp_vcpu_id 0).
            let bsp = if v.unknown & U_APIC_BASE == 0 {
                v.apic_base & crate::state::APIC_BASE_BSP != 0
            } else {
                v.id == 0
            };
            v.spec_ctrl = exact.then_some(0);
            v.pv.init(exact);
            if exact {
                init_lapic(v, lint0_quirk);
                v.lapic.init_applied = true;
                // LVTT masked, one-shot (apic_update_lvtt): tscdeadline is 0.
                v.host.tsc_deadline_zero = true;
            } else if !bsp && v.unknown & U_APIC_BASE == 0 && v.x2apic_mode() {
                // x2APIC mode (kept by INIT): the registers change only by
                // MSR events of the target, so they are the old ones until
                // the target processes the INIT, then kvm_lapic_reset's.
                let mut pre = match v.lapic.pending {
                    Some(p) => (p.pre_known, p.pre),
                    None => (v.lapic.known, v.lapic.vals),
                };
                if v.lapic.esr_after_xapic && !pvm {
                    pre.0 &= !(1 << S_ESR);
                }
                let post = init_regs(v, lint0_quirk);
                v.lapic = PendingInit {
                    pre_known: pre.0,
                    pre: pre.1,
                    post_known: post.known,
                    post: post.vals,
                }
                .common();
            } else {
                v.lapic.forget_all();
                // kvm_lapic_reset(init_event = true) keeps the APIC base, so a
                // target that is not the BSP has the same base before and
                // after it. The BSP restarts at the reset vector: firmware,
                // and a VMM's reset after it, may set it unseen.
                if bsp {
                    v.unknown |= U_APIC_BASE;
                }
            }
            // The BSP restarts in firmware; a VMM may then reset the machine
            // with KVM_SET_* calls a kernel-text capture does not show.
            system_reset = imported && bsp;
        }
        if system_reset {
            self.forget_vm_state();
        }
    }

    /// Everything a VMM's invisible host writes may have changed: as at the
    /// start of an imported text.
    fn forget_vm_state(&mut self) {
        let vmm_msrs_seen = self.host_trace.vmm_msrs_seen;
        for v in &mut self.vcpus {
            super::host::forget_at_system_reset(v, vmm_msrs_seen);
            v.lapic = LapicRegs::default();
            // With the VMM's MSR ioctls tapped, every MSR it sets is in the
            // trace and the kernel resets nothing else on a VMM's system
            // reset (EFER and segment bases come with a tapped
            // KVM_SET_SREGS): MSR-held state stays known.
            if !vmm_msrs_seen {
                v.regs_known = 0;
                v.spec_ctrl = None;
                v.pv = super::PvRegs::default();
            }
        }
        // kvm->arch.wall_clock changes only by an MSR write (tapped or not).
        if !vmm_msrs_seen {
            self.vm.wall_clock = None;
        }
    }
}

/// `kvm_lapic_reset(init_event=true)` on the tracked registers: the APIC
/// base (and so the mode) is kept; in xAPIC mode MMIO may follow (forget).
fn init_lapic(v: &mut VcpuState, lint0_quirk: bool) {
    v.lapic = init_regs(v, lint0_quirk);
}

/// The registers `kvm_lapic_reset(init_event=true)` leaves (`init_lapic`).
fn init_regs(v: &VcpuState, lint0_quirk: bool) -> LapicRegs {
    let lvr = v.lapic.get(S_LVR);
    let mut l = LapicRegs::default();
    if let Some(x) = lvr {
        l.set(S_LVR, x);
    }
    // ESR = 0 in either mode.
    l.set(S_ESR, 0);
    if v.unknown & U_APIC_BASE == 0 && v.x2apic_mode() {
        let n = nr_lvt(v);
        for s in [S_LVTT, 5, S_LVTPC, 7, 8, 9] {
            l.set(s, LVT_MASKED);
        }
        match n {
            Some(7) => l.set(S_LVTCMCI, LVT_MASKED),
            Some(_) => {}
            None => l.forget(S_LVTCMCI),
        }
        // kvm_vcpu_is_reset_bsp && quirk LINT0_REENABLED: LVT0 = ExtINT.
        if v.id == 0 && lint0_quirk {
            l.set(7, 0x700);
        }
        l.set(S_SPIV, 0xff);
        l.set(S_ICR, 0);
        l.set(S_TDCR, 0);
        l.set(S_TMICT, 0);
    }
    l
}

/// An `Init` event with the state read back after it (our VMM): the LAPIC is
/// as `kvm_lapic_reset(init_event)` left it, unless an INIT the model already
/// applied exactly from the ICR write is the same delivery (applied once).
pub(crate) fn init_seen(v: &mut VcpuState, lint0_quirk: bool) {
    if v.lapic.init_applied {
        v.lapic.init_applied = false;
    } else {
        init_lapic(v, lint0_quirk);
    }
}

/// A read the model left unmodeled teaches the register (issue 6 item 5).
pub(crate) fn teach(v: &mut VcpuState, index: u32, value: u64) {
    if !(0x800..=0x8ff).contains(&index) {
        return;
    }
    if index == 0x802 && !v.id_known {
        // The x2APIC ID is the vcpu_id (kvm_x2apic_id): the read names it.
        v.id = value as u32;
        v.id_known = true;
    }
    let reg = (index - 0x800) << 4;
    if reg == 0x390 {
        // apic_get_tmcct of a one-shot timer: the remaining time only
        // falls, and once the target expiration has passed it is 0 (the
        // hrtimer does not restart, apic_timer_fn HRTIMER_NORESTART). In
        // periodic mode a 0 is passing (the counter reloads).
        let one_shot = v
            .lapic
            .get(S_LVTT)
            .is_some_and(|t| (t >> TIMER_MODE_SHIFT) & 3 == 0);
        if value == 0 && one_shot && v.lapic.pending.is_none() {
            v.lapic.tmcct_expired = true;
        }
        return;
    }
    let Some(s) = slot(reg) else {
        return;
    };
    let Some(mut p) = v.lapic.pending else {
        v.lapic.set(s, value);
        return;
    };
    match (p.pre(s), p.post(s)) {
        // Known either way: nothing to learn.
        (Some(a), Some(b)) if a == b => {}
        // Only the INIT state explains the value: the target processed the
        // INIT before this read, and no MSR write of its own followed
        // (`Engine::apply_msr_write` drops a pending INIT): the registers,
        // PV MSRs and SPEC_CTRL are kvm_vcpu_reset(init_event=true)'s.
        (Some(_), Some(b)) if value == b => {
            v.lapic = LapicRegs {
                known: p.post_known,
                vals: p.post,
                ..LapicRegs::default()
            };
            v.pv.init(true);
            v.spec_ctrl = Some(0);
            v.host.tsc_deadline_zero = true;
        }
        // Not the INIT state: not processed yet, this is the old value.
        (_, Some(b)) if value != b => {
            p.pre[s] = value;
            p.pre_known |= 1 << s;
            v.lapic = p.common();
        }
        // The value proves nothing (the old one is unknown, or the INIT's).
        _ => {}
    }
}

/// A write the kernel accepted where the model had no rule: the register's
/// value is unknown from now on; an ICR write still delivers its IPI.
pub(crate) fn raw_store(index: u32, value: u64) -> Store {
    let reg = (index - 0x800) << 4;
    match reg {
        0x300 => Store::Lapic(LapicStore::Icr(value)),
        // SPIV/LVTT changes can mask the LVTs or zero TMICT.
        0xf0 | 0x320 => Store::Lapic(LapicStore::ForgetAll),
        _ => match slot(reg) {
            Some(s) => Store::Lapic(LapicStore::Reg(s, None)),
            None => Store::None,
        },
    }
}

/// The APIC base changed: registers survive only x2APIC → x2APIC (xAPIC mode
/// lets MMIO change them unseen).
pub(crate) fn on_apic_base(v: &mut VcpuState, old: u64, new: u64) {
    let x2 = crate::state::APIC_BASE_EN | crate::state::APIC_BASE_EXTD;
    if old & x2 != x2 || new & x2 != x2 {
        v.lapic.forget_all();
    }
}
