//! The MSR access pipeline (SEMANTICS.md §0) and the in-kernel handlers the
//! model owns. One `match` on the index per direction; MSRs not listed are
//! unmodeled (their outcome is taken from the recording).

use kvmtrace_format::{MsrExitReason, MsrOutcome, Origin, UserAnswer};

use crate::engine::{Engine, Prediction};
use crate::policy::{FeatCtlHostBits, HwcrWrite, MceBadWrite, ReadRule, Vendor, WriteRule};
use crate::rules;

/// Rules are consts: handlers pass them by reference, so the hot path never
/// copies the three `&str` of a rule through the stack (a store-forwarding
/// stall per event per lane); only a returned `Prediction` owns a copy.
type Rule = &'static rules::Rule;
use crate::state::*;

pub const MSR_IA32_FEAT_CTL: u32 = 0x3a;
pub const MSR_IA32_APICBASE: u32 = 0x1b;
pub const MSR_IA32_MCG_CAP: u32 = 0x179;
pub const MSR_IA32_MCG_STATUS: u32 = 0x17a;
pub const MSR_IA32_MCG_CTL: u32 = 0x17b;
pub const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
pub const MSR_IA32_MCG_EXT_CTL: u32 = 0x4d0;
pub const MSR_K7_HWCR: u32 = 0xc001_0015;
pub const MSR_IA32_CR_PAT: u32 = 0x277;
/// PAT at RESET (`MSR_IA32_CR_PAT_DEFAULT`, §2).
pub const PAT_DEFAULT: u64 = 0x0007_0406_0007_0406;

/// `kvm_pat_valid`: every byte a valid memory type (0, 1, 4, 5, 6, 7).
const fn pat_valid(data: u64) -> bool {
    data & 0xF8F8_F8F8_F8F8_F8F8 == 0 && (data | ((data & 0x0202_0202_0202_0202) << 1)) == data
}

/// MISC_ENABLE bits (§1).
const ME_EMON: u64 = 1 << 7;
const ME_BTS_UNAVAIL: u64 = 1 << 11;
const ME_PEBS_UNAVAIL: u64 = 1 << 12;
const ME_MWAIT: u64 = 1 << 18;

/// The in-kernel handler's return code (§0): r = 0 with the read value, 1, -1, 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum R {
    Ok(u64),
    Fault,
    Fatal,
    Unknown,
    /// r = 1 or r = 2 depending on release details the model does not track:
    /// `#GP` unless INVAL or UNKNOWN deflection could apply (then unmodeled).
    FaultOrUnknown,
    /// The model does not know this MSR (or a `passthrough` rule).
    Unmodeled,
}

/// What a successful write stores in KVM's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Store {
    None,
    /// MISC_ENABLE, and CPUID.1:ECX[3] := bit 18 when MISC_ENABLE_NO_MWAIT is
    /// disabled (applied by `apply`).
    MiscEnable(u64),
    FeatCtl(u64),
    Hwcr(u64),
    Pat(u64),
    ApicBase(u64),
    McgStatus(u64),
    McgCtl(u64),
    McgExtCtl(u64),
    Bank(usize, u64),
    Ctl2(usize, u64),
    /// A register of the MSR tables (`common::reg_slot`) now holds the value.
    Reg(usize, u64),
    /// A register of the MSR tables now holds a value the model does not know.
    Forget(usize),
    /// An x2APIC register write (`model::lapic`; folded by the engine, since
    /// an ICR write can INIT other vCPUs).
    Lapic(super::lapic::LapicStore),
    /// SPEC_CTRL now holds this value (`None`: unknown).
    SpecCtrl(Option<u64>),
    /// A `model::pv` register (slot) now holds this value (`None`: unknown).
    Pv(usize, Option<u64>),
    /// The VM-wide wall clock (folded by the engine).
    WallClock(Option<u64>),
}

impl Store {
    /// What a write the kernel accepted stores, where the model would have
    /// refused it (folding a recorded outcome the model disagrees with).
    pub(crate) fn raw(index: u32, value: u64) -> Store {
        match index {
            MSR_IA32_MISC_ENABLE => Store::MiscEnable(value),
            MSR_IA32_FEAT_CTL => Store::FeatCtl(value),
            MSR_K7_HWCR => Store::Hwcr(value),
            MSR_IA32_CR_PAT => Store::Pat(value),
            MSR_IA32_APICBASE => Store::ApicBase(value),
            MSR_IA32_MCG_STATUS => Store::McgStatus(value),
            MSR_IA32_MCG_CTL => Store::McgCtl(value),
            MSR_IA32_MCG_EXT_CTL => Store::McgExtCtl(value),
            0x400..=0x47f => Store::Bank((index - 0x400) as usize, value),
            0x280..=0x29f => Store::Ctl2((index - 0x280) as usize, value),
            0x800..=0x8ff => super::lapic::raw_store(index, value),
            0x48 => Store::SpecCtrl(None),
            0x11 | 0x4b56_4d00 => Store::WallClock(Some(value)),
            0x3b => Store::Pv(super::pv::P_TSC_ADJUST, None),
            0x4b56_4d02 => Store::Pv(super::pv::P_APF_EN, None),
            0x4b56_4d03 => Store::Pv(super::pv::P_STEAL, None),
            0x4b56_4d04 => Store::Pv(super::pv::P_PV_EOI, None),
            0x4b56_4d06 => Store::Pv(super::pv::P_APF_INT, None),
            // The kernel may have dropped or truncated it: unknown until read.
            _ => match super::common::reg_slot(index) {
                Some(s) => Store::Forget(s),
                None => Store::None,
            },
        }
    }

    pub(crate) fn apply(self, v: &mut VcpuState, quirk_no_mwait: bool) {
        // A stored value is known from now on (imported traces, issue 6 item 5).
        v.unknown &= !match self {
            Store::MiscEnable(_) => U_MISC_ENABLE,
            Store::FeatCtl(_) => U_FEAT_CTL,
            Store::Hwcr(_) => U_HWCR,
            Store::Pat(_) => U_PAT,
            Store::ApicBase(_) => U_APIC_BASE,
            Store::McgStatus(_) => U_MCG_STATUS,
            Store::McgCtl(_) => U_MCG_CTL,
            Store::McgExtCtl(_) => U_MCG_EXT_CTL,
            _ => 0,
        };
        match self {
            Store::None => {}
            Store::MiscEnable(x) => {
                let toggled = (v.misc_enable ^ x) & ME_MWAIT != 0;
                v.misc_enable = x;
                if !quirk_no_mwait && toggled && v.cpuid.has_leaf1 {
                    v.cpuid.mwait = x & ME_MWAIT != 0;
                }
            }
            Store::FeatCtl(x) => v.feat_ctl = x,
            Store::Hwcr(x) => v.hwcr = x,
            Store::Pat(x) => v.pat = x,
            Store::ApicBase(x) => {
                super::lapic::on_apic_base(v, v.apic_base, x);
                v.apic_base = x;
            }
            Store::McgStatus(x) => v.mcg_status = x,
            Store::McgCtl(x) => v.mcg_ctl = x,
            Store::McgExtCtl(x) => v.mcg_ext_ctl = x,
            Store::Bank(i, x) => {
                if let Some(b) = v.mce_banks.get_mut(i) {
                    *b = x;
                }
                super::host::on_bank_store(v, i);
            }
            Store::Ctl2(i, x) => {
                if let Some(b) = v.mci_ctl2.get_mut(i) {
                    *b = x;
                }
            }
            Store::Reg(super::common::SLOT_EFER, x) => super::common::on_efer_store(v, Some(x)),
            Store::Forget(super::common::SLOT_EFER) => super::common::on_efer_store(v, None),
            Store::Reg(s, x) => {
                if s < super::common::NREGS {
                    v.regs[s] = x;
                    v.regs_known |= 1 << s;
                }
            }
            Store::Forget(s) => v.regs_known &= !(1u64 << (s % 64)),
            // Folded by `Engine::apply_msr_write`.
            Store::Lapic(_) => {}
            Store::SpecCtrl(x) => v.spec_ctrl = x,
            Store::Pv(s, x) => v.pv.set(s, x),
            Store::WallClock(_) => {}
        }
    }
}

/// Whether any handler of this model knows `index` (the arms of
/// `read_handler`/`write_handler`). Every other MSR is unmodeled unless a
/// filter or a policy `[[msr]]` rule decides it.
pub(crate) const fn model_handles(index: u32) -> bool {
    matches!(
        index,
        MSR_IA32_APICBASE
            | MSR_IA32_CR_PAT
            | MSR_IA32_FEAT_CTL
            | MSR_IA32_MISC_ENABLE
            | MSR_IA32_MCG_CAP
            | MSR_IA32_MCG_STATUS
            | MSR_IA32_MCG_CTL
            | MSR_IA32_MCG_EXT_CTL
            | MSR_K7_HWCR
            | 0x280..=0x29f
            | 0x400..=0x47f
            | 0x800..=0x8ff
    ) || super::common::table_handles(index)
        || super::pmu::handles(index)
        || super::pv::handles(index)
        || super::host::handles(index)
}

/// [`model_handles`] for one access: an IA32_TSC write matters (a guest
/// write moves TSC_ADJUST, `model::pv`), a read of it never does (no handler
/// predicts the counter; the replay fast path skips those reads).
pub(crate) const fn model_handles_access(index: u32, write: bool) -> bool {
    if index == 0x10 {
        write
    } else {
        model_handles(index)
    }
}

/// A prediction whose rule stays a reference to its const until a report
/// needs a copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MsrPrediction {
    pub outcome: Option<MsrOutcome>,
    pub rule: Rule,
}

impl MsrPrediction {
    fn new(outcome: MsrOutcome, rule: Rule) -> MsrPrediction {
        MsrPrediction {
            outcome: Some(outcome),
            rule,
        }
    }

    fn unmodeled() -> MsrPrediction {
        MsrPrediction {
            outcome: None,
            rule: &rules::UNMODELED,
        }
    }

    pub(crate) fn owned(self) -> Prediction<MsrOutcome> {
        Prediction {
            outcome: self.outcome,
            rule: *self.rule,
        }
    }
}

impl Engine {
    /// Whether an access to an MSR no handler knows is unmodeled whatever the
    /// vCPU: no filter, no `[[msr]]` rules, no dead vCPU (replay fast path).
    pub(crate) fn unknown_msrs_unmodeled(&self) -> bool {
        self.vm.filter.is_none()
            && self.policy.msr.is_empty()
            && !self.hooks_unhandled_msrs()
            && self.dead.iter().all(Option::is_none)
    }

    /// The whole pipeline: `value` is `Some` for a write. Returns the prediction
    /// and, for a write the kernel would accept, what it stores.
    #[inline]
    pub(crate) fn decide_msr(
        &self,
        vcpu: u32,
        index: u32,
        value: Option<u64>,
        origin: Origin,
    ) -> (Prediction<MsrOutcome>, Store) {
        let (p, store) = self.decide_msr_ref(vcpu, index, value, origin);
        (p.owned(), store)
    }

    /// [`Engine::decide_msr`] with the rule by reference (the replay lanes).
    /// The policy's hooks (`crate::external`) first, where they hook the access.
    /// Inlined with the base model into the replay step: the prediction and
    /// the store stay in registers instead of a returned struct the caller
    /// reloads wider than it was written (a store-forwarding stall per event
    /// per lane).
    #[inline(always)]
    pub(crate) fn decide_msr_ref(
        &self,
        vcpu: u32,
        index: u32,
        value: Option<u64>,
        origin: Origin,
    ) -> (MsrPrediction, Store) {
        if vcpu as usize >= MAX_VCPUS {
            return (MsrPrediction::unmodeled(), Store::None);
        }
        if let Some((rule, outcome, store)) = self.hooked_msr(vcpu, index, value, origin) {
            return (MsrPrediction { outcome, rule }, store);
        }
        self.decide_msr_base(vcpu, index, value, origin)
    }

    /// The base model's decision (no hooks).
    #[inline(always)]
    pub(crate) fn decide_msr_base(
        &self,
        vcpu: u32,
        index: u32,
        value: Option<u64>,
        origin: Origin,
    ) -> (MsrPrediction, Store) {
        if vcpu as usize >= MAX_VCPUS {
            return (MsrPrediction::unmodeled(), Store::None);
        }
        let v = self.vcpu_state(vcpu);
        let host = origin == Origin::Host;
        let write = value.is_some();
        let x2apic = (0x800..=0x8ff).contains(&index);

        // §0/§4 kvm_msr_allowed: guest RDMSR/WRMSR only; x2APIC never filtered.
        if !host
            && !x2apic
            && let Some(f) = &self.vm.filter
            && !f.allows(index, write)
        {
            return (
                self.deflect(MsrExitReason::Filter, false, &rules::FILTER_DENY),
                Store::None,
            );
        }

        // A [[msr]] rule decides its own indices; every other MSR keeps the
        // unknown-state guard.
        if !self.policy.msr.iter().any(|r| r.matches(index))
            && super::common::needs_unknown(
                v,
                index,
                value,
                host,
                self.policy
                    .has(crate::vendor::Fact::MiscEnableGuestUnchecked),
                self.policy.vendor == Vendor::Intel,
                self.vm.irqchip_known,
            )
            && !super::host::known_despite_unknown(
                v,
                index,
                value,
                host,
                self.vm.quirk(crate::quirks::MISC_ENABLE_NO_MWAIT),
            )
        {
            return (MsrPrediction::unmodeled(), Store::None);
        }
        let (r, rule, store) = match self.user_rule(index, value) {
            Some(x) => x,
            None => match value {
                None => {
                    let (r, rule) = match self.read_handler(v, index, host) {
                        (R::Unmodeled, _) => match self
                            .pmu_access(v, index, None, host)
                            .or_else(|| self.pv_access(v, index, None, host))
                        {
                            Some((r, rule, _)) => (r, rule),
                            None => self
                                .table_read(v, index, host)
                                .or_else(|| {
                                    self.host_access(v, index, None, host)
                                        .map(|(r, rule, _)| (r, rule))
                                })
                                .unwrap_or((R::Unmodeled, &rules::UNMODELED)),
                        },
                        x => x,
                    };
                    (r, rule, Store::None)
                }
                Some(data) => match self.write_handler(v, index, data, host) {
                    (R::Unmodeled, ..) => match self
                        .pmu_access(v, index, Some(data), host)
                        .or_else(|| self.pv_access(v, index, Some(data), host))
                    {
                        Some(x) => x,
                        None => self
                            .table_write(v, index, data, host)
                            .or_else(|| self.host_access(v, index, Some(data), host))
                            .unwrap_or((R::Unmodeled, &rules::UNMODELED, Store::None)),
                    },
                    x => x,
                },
            },
        };

        let ok = |x: u64, rule: Rule| {
            let o = if write {
                MsrOutcome::Ok
            } else {
                MsrOutcome::Value(x)
            };
            MsrPrediction::new(o, rule)
        };
        match r {
            R::Unmodeled => (
                MsrPrediction {
                    outcome: None,
                    rule,
                },
                Store::None,
            ),
            R::Ok(x) => (ok(x, rule), store),
            R::FaultOrUnknown => {
                let either = MsrExitReason::Inval.bit() | MsrExitReason::Unknown.bit();
                if host || self.policy.switches.ignore_msrs || self.vm.user_space_msr & either != 0
                {
                    (MsrPrediction::unmodeled(), Store::None)
                } else {
                    (MsrPrediction::new(MsrOutcome::InjectGp, rule), Store::None)
                }
            }
            R::Unknown if self.policy.switches.ignore_msrs => {
                (ok(0, &rules::IGNORE_MSRS), Store::None)
            }
            R::Unknown if host => {
                // 6.12+: host read, or host write of 0, of an advertised MSR (§0).
                if self.policy.switches.host_zero_write_advertised
                    && value.unwrap_or(0) == 0
                    && self.advertised(index)
                {
                    (ok(0, &rules::HOST_ZERO_ADVERTISED), Store::None)
                } else {
                    let rule = super::host::host_refusal_rule(
                        &self.host_trace,
                        self.policy.switches.host_zero_write_advertised,
                        index,
                        value,
                        rule,
                    );
                    (MsrPrediction::new(MsrOutcome::InjectGp, rule), Store::None)
                }
            }
            // Host accesses are never deflected: a failing entry is refused.
            _ if host => (MsrPrediction::new(MsrOutcome::InjectGp, rule), Store::None),
            R::Unknown => (
                self.deflect(MsrExitReason::Unknown, x2apic, rule),
                Store::None,
            ),
            R::Fault => (
                self.deflect(MsrExitReason::Inval, x2apic, rule),
                Store::None,
            ),
            R::Fatal => {
                let p = self.deflect(MsrExitReason::Inval, x2apic, rule);
                // WRMSR with r < 0 and no deflection: KVM_RUN returns r (EPERM).
                if write && p.outcome == Some(MsrOutcome::InjectGp) {
                    (
                        MsrPrediction::new(MsrOutcome::VmFailed { errno: 1 }, rule),
                        Store::None,
                    )
                } else {
                    (p, Store::None)
                }
            }
        }
    }

    /// §0: deflect to user space if `reason` is in the mask (and, with
    /// `deflect_unfilterable = false`, the MSR is filterable), else #GP.
    fn deflect(&self, reason: MsrExitReason, unfilterable: bool, rule: Rule) -> MsrPrediction {
        if self.vm.user_space_msr & reason.bit() != 0 {
            if unfilterable && !self.policy.switches.deflect_unfilterable {
                return MsrPrediction::new(
                    MsrOutcome::InjectGp,
                    &rules::DEFLECT_UNFILTERABLE_FALSE,
                );
            }
            let rule = if reason == MsrExitReason::Filter {
                rule
            } else {
                &rules::DEFLECT
            };
            return MsrPrediction::new(
                MsrOutcome::UserExit {
                    reason,
                    answer: UserAnswer::Gp,
                },
                rule,
            );
        }
        MsrPrediction::new(MsrOutcome::InjectGp, rule)
    }

    fn advertised(&self, index: u32) -> bool {
        match &self.policy.advertised_msrs {
            Some(l) => l.binary_search(&index).is_ok(),
            // A preset: what the recording host advertised (the same CPU and
            // vendor module), else SVM's FEAT_CTL in emulated_msrs (§3).
            None => {
                self.host_trace.advertises(index)
                    || (self.policy.vendor == Vendor::Amd && index == MSR_IA32_FEAT_CTL)
            }
        }
    }

    fn user_rule(&self, index: u32, value: Option<u64>) -> Option<(R, Rule, Store)> {
        if self.policy.msr.is_empty() {
            return None;
        }
        let rule = self.policy.msr.iter().find(|r| r.matches(index))?;
        let r = match value {
            None => match rule.read? {
                ReadRule::Value(x) => R::Ok(x),
                ReadRule::Gp => R::Fault,
                ReadRule::Passthrough => R::Unmodeled,
            },
            Some(_) => match rule.write? {
                WriteRule::Ok => R::Ok(0),
                WriteRule::Gp => R::Fault,
                WriteRule::Passthrough => R::Unmodeled,
            },
        };
        Some((r, &rules::USER_RULE, Store::None))
    }

    #[inline(always)]
    fn read_handler(&self, v: &VcpuState, index: u32, host: bool) -> (R, Rule) {
        let vendor = self.policy.vendor;
        let bank_num = v.bank_num();
        match index {
            // ---- §3 IA32_FEAT_CTL: VMX only ----
            MSR_IA32_FEAT_CTL if vendor == Vendor::Intel => {
                (R::Ok(v.feat_ctl), &rules::FEAT_CTL_READ)
            }
            MSR_IA32_FEAT_CTL => (R::Unknown, &rules::FEAT_CTL_NO_HANDLER),
            // ---- §1 ----
            MSR_IA32_MISC_ENABLE => (R::Ok(v.misc_enable), &rules::MISC_ENABLE_READ),
            // ---- §4 APIC base and x2APIC ----
            MSR_IA32_APICBASE => (R::Ok(v.apic_base), &rules::APIC_BASE_READ),
            0x800..=0x8ff => {
                if !self.vm.lapic_in_kernel() || !v.x2apic_mode() {
                    (R::Fault, &rules::X2APIC_OFF)
                } else if !v.id_known && matches!(index, 0x802 | 0x80d) {
                    // vcpu_id unknown (guessed thread mapping): learned.
                    (R::Unmodeled, &rules::UNMODELED)
                } else if !host && let Some(x) = self.x2apic_read(v, index) {
                    x
                } else if index == 0x802 {
                    // x2APIC ID = vcpu_id (HOST.md: 0x802 reads 0 on vCPU 0).
                    (R::Ok(v.id as u64), &rules::APIC_BASE_READ)
                } else if index == 0x803 && self.policy.switches.msr_tables && !self.imported {
                    // kvm_apic_set_version: APIC_VERSION 0x14, max LVT index
                    // (6 LVTs, 7 with MCG_CMCI_P), directed EOI without an
                    // in-kernel IOAPIC (split irqchip). 0x50014 here (HOST.md).
                    let lvts: u64 = if v.mcg_cap & MCG_CMCI_P != 0 { 7 } else { 6 };
                    let deoi = if self.vm.irqchip == kvmtrace_format::Irqchip::Split {
                        1 << 24
                    } else {
                        0
                    };
                    (R::Ok(0x14 | ((lvts - 1) << 16) | deoi), &rules::X2APIC_REG)
                } else if self.policy.switches.msr_tables && !host {
                    x2apic_read(v.id, index)
                } else {
                    // LAPIC register contents are not modelled.
                    (R::Unmodeled, &rules::UNMODELED)
                }
            }
            0x6e0 if !host => match self.tsc_deadline(v, None) {
                Some((r, rule, _)) => (r, rule),
                None => (R::Unmodeled, &rules::UNMODELED),
            },
            // ---- §5 MCE ----
            MSR_IA32_MCG_CAP => (R::Ok(v.mcg_cap), &rules::MCE_READ),
            MSR_IA32_MCG_STATUS => (R::Ok(v.mcg_status), &rules::MCE_READ),
            MSR_IA32_MCG_CTL => {
                if v.mcg_cap & MCG_CTL_P == 0 && !host {
                    (R::Fault, &rules::MCG_CTL_BAD)
                } else {
                    (R::Ok(v.mcg_ctl), &rules::MCE_READ)
                }
            }
            MSR_IA32_MCG_EXT_CTL if vendor == Vendor::Intel => {
                if !host && v.feat_ctl & FEAT_CTL_LMCE == 0 {
                    (R::Fault, &rules::MCG_EXT_CTL_BAD)
                } else {
                    (R::Ok(v.mcg_ext_ctl), &rules::MCE_READ)
                }
            }
            // SVM and kvm_pvm have no case for it (pvm_get_msr; host-notes).
            MSR_IA32_MCG_EXT_CTL => (R::Unknown, &rules::MCG_EXT_CTL_NO_HANDLER),
            0x400..=0x47f => {
                let off = (index - 0x400) as usize;
                if off / 4 >= bank_num {
                    (R::Fault, &rules::MCE_BANK_RANGE)
                } else {
                    (R::Ok(v.mce_banks[off]), &rules::MCE_READ)
                }
            }
            0x280..=0x29f => {
                let i = (index - 0x280) as usize;
                if !self.policy.switches.mce_ctl2 {
                    (R::Unknown, &rules::MCE_CTL2_NONE)
                } else if i >= bank_num {
                    (R::Fault, &rules::MCE_BANK_RANGE)
                } else if !host && v.mcg_cap & MCG_CMCI_P == 0 {
                    // get_msr_mce (6.0+): a guest read of CTL2 needs MCG_CMCI_P.
                    (R::Fault, &rules::MCE_CTL2_NO_CMCI)
                } else {
                    (R::Ok(v.mci_ctl2[i]), &rules::MCE_READ)
                }
            }
            MSR_K7_HWCR => (R::Ok(v.hwcr), &rules::HWCR_READ),
            // ---- other: PAT (common code, every vendor) ----
            MSR_IA32_CR_PAT => (R::Ok(v.pat), &rules::PAT_READ),
            _ => (R::Unmodeled, &rules::UNMODELED),
        }
    }

    #[inline(always)]
    fn write_handler(&self, v: &VcpuState, index: u32, data: u64, host: bool) -> (R, Rule, Store) {
        let s = &self.policy.switches;
        let vendor = self.policy.vendor;
        let bank_num = v.bank_num();
        let fail = |rule| (R::Fault, rule, Store::None);
        match index {
            // ---- §3 IA32_FEAT_CTL (vmx_set_msr) ----
            MSR_IA32_FEAT_CTL if vendor == Vendor::Intel => {
                let valid = v.feat_ctl_valid(s.feat_ctl_sgx);
                let locked = !host && v.feat_ctl & FEAT_CTL_LOCKED != 0;
                match s.feat_ctl_host_bits {
                    FeatCtlHostBits::GuestCpuid => {
                        if data & !valid != 0 {
                            return fail(&rules::FEAT_CTL_INVALID_CPUID);
                        }
                        if locked {
                            return fail(&rules::FEAT_CTL_LOCKED);
                        }
                        (R::Ok(0), &rules::FEAT_CTL_OK_CPUID, Store::FeatCtl(data))
                    }
                    FeatCtlHostBits::Supported => {
                        if locked {
                            return fail(&rules::FEAT_CTL_LOCKED);
                        }
                        if host && data & !FEAT_CTL_SUPPORTED != 0 {
                            return fail(&rules::FEAT_CTL_INVALID_SUPPORTED);
                        }
                        if !host && data & !valid != 0 {
                            return fail(&rules::FEAT_CTL_INVALID_GUEST);
                        }
                        (
                            R::Ok(0),
                            &rules::FEAT_CTL_OK_SUPPORTED,
                            Store::FeatCtl(data),
                        )
                    }
                }
            }
            MSR_IA32_FEAT_CTL => (R::Unknown, &rules::FEAT_CTL_NO_HANDLER, Store::None),
            // ---- §1 MISC_ENABLE (kvm_set_msr_common) ----
            MSR_IA32_MISC_ENABLE => {
                let old = v.misc_enable;
                let mut data = data;
                // kvm_pvm stores a guest's value unchecked: bits 7/11/12 flip,
                // bit 18 sets without SSE3 (measured, host-notes).
                if !host
                    && self
                        .policy
                        .has(crate::vendor::Fact::MiscEnableGuestUnchecked)
                {
                    return (
                        R::Ok(0),
                        &rules::MISC_ENABLE_PVM_RW,
                        Store::MiscEnable(data),
                    );
                }
                if !host && s.misc_enable_guest_ro {
                    if (old ^ data) & (ME_BTS_UNAVAIL | ME_PEBS_UNAVAIL) != 0 {
                        return fail(&rules::MISC_ENABLE_RO);
                    }
                    data = (data & !ME_EMON) | (old & ME_EMON);
                }
                let quirk_on = self.vm.quirk(crate::quirks::MISC_ENABLE_NO_MWAIT);
                if !quirk_on && (old ^ data) & ME_MWAIT != 0 {
                    if !v.cpuid.sse3 {
                        return fail(&rules::MISC_ENABLE_NO_SSE3);
                    }
                    return (
                        R::Ok(0),
                        &rules::MISC_ENABLE_MWAIT_SYNC,
                        Store::MiscEnable(data),
                    );
                }
                (R::Ok(0), &rules::MISC_ENABLE_WRITE, Store::MiscEnable(data))
            }
            // ---- §4 APIC base (kvm_set_apic_base) ----
            MSR_IA32_APICBASE => {
                let reserved = (!0u64 << v.cpuid.maxphyaddr)
                    | 0x2ff
                    | if v.cpuid.x2apic { 0 } else { APIC_BASE_EXTD };
                let mode = |x: u64| x & (APIC_BASE_EN | APIC_BASE_EXTD);
                let (old, new) = (mode(v.apic_base), mode(data));
                if data & reserved != 0 || new == APIC_BASE_EXTD {
                    return fail(&rules::APIC_BASE_RESERVED);
                }
                let x2 = APIC_BASE_EN | APIC_BASE_EXTD;
                if !host && ((old == x2 && new == APIC_BASE_EN) || (old == 0 && new == x2)) {
                    return fail(&rules::APIC_BASE_TRANSITION);
                }
                (R::Ok(0), &rules::APIC_BASE_WRITE, Store::ApicBase(data))
            }
            0x800..=0x8ff => {
                if !self.vm.lapic_in_kernel() || !v.x2apic_mode() {
                    fail(&rules::X2APIC_OFF)
                } else if !host && let Some(x) = self.x2apic_write(v, index, data) {
                    x
                } else if s.msr_tables && !host {
                    let (r, rule) = x2apic_write(index, data);
                    (r, rule, Store::None)
                } else {
                    (R::Unmodeled, &rules::UNMODELED, Store::None)
                }
            }
            0x6e0 if !host => self.tsc_deadline(v, Some(data)).unwrap_or((
                R::Unmodeled,
                &rules::UNMODELED,
                Store::None,
            )),
            // ---- §5 MCE (set_msr_mce) ----
            // kvm_set_msr_common hands MCG_CTL/STATUS and the banks to
            // set_msr_mce; MCG_CAP has no case (KVM_X86_SETUP_MCE sets it).
            MSR_IA32_MCG_CAP => (R::Unknown, &rules::MCG_CAP_NO_WRITE, Store::None),
            MSR_IA32_MCG_STATUS => (R::Ok(0), &rules::MCE_WRITE, Store::McgStatus(data)),
            MSR_IA32_MCG_CTL => {
                if v.mcg_cap & MCG_CTL_P == 0 && (data != 0 || !host) {
                    return fail(&rules::MCG_CTL_BAD);
                }
                if data != 0 && data != !0 {
                    return fail(&rules::MCG_CTL_BAD);
                }
                (R::Ok(0), &rules::MCE_WRITE, Store::McgCtl(data))
            }
            MSR_IA32_MCG_EXT_CTL if vendor == Vendor::Intel => {
                if (!host && v.feat_ctl & FEAT_CTL_LMCE == 0) || data & !1 != 0 {
                    return fail(&rules::MCG_EXT_CTL_BAD);
                }
                (R::Ok(0), &rules::MCE_WRITE, Store::McgExtCtl(data))
            }
            MSR_IA32_MCG_EXT_CTL => (R::Unknown, &rules::MCG_EXT_CTL_NO_HANDLER, Store::None),
            0x400..=0x47f => {
                let off = (index - 0x400) as usize;
                if off / 4 >= bank_num {
                    return fail(&rules::MCE_BANK_RANGE);
                }
                let bad = match s.mce_bad_write {
                    MceBadWrite::Eperm => R::Fatal,
                    MceBadWrite::Gp => R::Fault,
                };
                match off % 4 {
                    0 => {
                        let tolerated = if s.mce_ctl_bit0_ok {
                            (1 << 10) | 1
                        } else {
                            1 << 10
                        };
                        if data != 0 && (data | tolerated) != !0 {
                            let rule = match s.mce_bad_write {
                                MceBadWrite::Eperm => &rules::MCE_CTL_EPERM,
                                MceBadWrite::Gp => &rules::MCE_CTL_GP,
                            };
                            return (bad, rule, Store::None);
                        }
                        let rule = if s.mce_ctl_bit0_ok && data != 0 && data != !0 {
                            &rules::MCE_CTL_BIT0
                        } else {
                            &rules::MCE_WRITE
                        };
                        (R::Ok(0), rule, Store::Bank(off, data))
                    }
                    1 if !host && data != 0 && !v.can_set_mci_status() => {
                        let rule = match s.mce_bad_write {
                            MceBadWrite::Eperm => &rules::MCE_STATUS_EPERM,
                            MceBadWrite::Gp => &rules::MCE_STATUS_GP,
                        };
                        (bad, rule, Store::None)
                    }
                    _ => (R::Ok(0), &rules::MCE_WRITE, Store::Bank(off, data)),
                }
            }
            0x280..=0x29f => {
                let i = (index - 0x280) as usize;
                if !s.mce_ctl2 {
                    return (R::Unknown, &rules::MCE_CTL2_NONE, Store::None);
                }
                if i >= bank_num
                    || (v.mcg_cap & MCG_CMCI_P == 0 && (data != 0 || !host))
                    || data & !((1 << 30) | 0x7fff) != 0
                {
                    return fail(&rules::MCE_CTL2_BAD);
                }
                (R::Ok(0), &rules::MCE_WRITE, Store::Ctl2(i, data))
            }
            // ---- §5 HWCR (kvm_set_msr_common MSR_K7_HWCR) ----
            MSR_K7_HWCR => {
                let data = data & !(0x40 | 0x100 | 0x8);
                match s.hwcr_write {
                    HwcrWrite::SetOnly => {
                        if data == 1 << 18 {
                            (R::Ok(0), &rules::HWCR_WRITE, Store::Hwcr(data))
                        } else if data != 0 {
                            fail(&rules::HWCR_SET_ONLY)
                        } else {
                            // Accepted, but McStatusWrEn cannot be cleared.
                            (R::Ok(0), &rules::HWCR_SET_ONLY, Store::None)
                        }
                    }
                    HwcrWrite::Bits18_24 => {
                        if data & !((1 << 18) | (1 << 24)) != 0 {
                            fail(&rules::HWCR_BITS)
                        } else {
                            (R::Ok(0), &rules::HWCR_WRITE, Store::Hwcr(data))
                        }
                    }
                }
            }
            // ---- other: PAT (kvm_set_msr_common, kvm_pat_valid) ----
            // kvm_pvm stores PAT unchecked (measured, host-notes).
            MSR_IA32_CR_PAT if self.policy.has(crate::vendor::Fact::PatUnchecked) => {
                (R::Ok(0), &rules::PAT_PVM_UNCHECKED, Store::Pat(data))
            }
            MSR_IA32_CR_PAT if !pat_valid(data) => fail(&rules::PAT_INVALID),
            MSR_IA32_CR_PAT => (R::Ok(0), &rules::PAT_WRITE, Store::Pat(data)),
            _ => (R::Unmodeled, &rules::UNMODELED, Store::None),
        }
    }
}

/// lapic.c `kvm_x2apic_msr_read` / `kvm_lapic_reg_read` in x2APIC mode with an
/// in-kernel LAPIC: registers outside `kvm_lapic_readable_reg_mask` (EOI,
/// SELF_IPI, ARBPRI, DFR, ICR2, reserved offsets) → 1; the LDR is derived
/// from the x2APIC ID. Other contents (timers, IRR/ISR, LVTs) are not modelled.
fn x2apic_read(id: u32, index: u32) -> (R, Rule) {
    let reg = (index - 0x800) << 4;
    match reg {
        // APIC_LDR in x2APIC mode: cluster (id >> 4) << 16 | 1 << (id & 0xf).
        0xd0 => (
            R::Ok((((id >> 4) as u64) << 16) | (1 << (id & 0xf))),
            &rules::X2APIC_REG,
        ),
        // ID LVR TASKPRI PROCPRI SPIV ISR TMR IRR ESR ICR LVTs TMICT TMCCT TDCR
        0x20
        | 0x30
        | 0x80
        | 0xa0
        | 0xf0
        | 0x100..=0x270
        | 0x280
        | 0x2f0
        | 0x300
        | 0x320..=0x370
        | 0x380
        | 0x390
        | 0x3e0 => (R::Unmodeled, &rules::UNMODELED),
        _ => (R::Fault, &rules::X2APIC_REG),
    }
}

/// lapic.c `kvm_x2apic_msr_write` / `kvm_lapic_reg_write` in x2APIC mode with an
/// in-kernel LAPIC: bits 63:32 reserved except in the ICR; ID, LDR, DFR and
/// read-only or reserved offsets → 1; ESR only takes 0; EOI of 0 and TPR are
/// accepted. The rest (ICR, LVTs, timer, SPIV, SELF_IPI) is not modelled.
fn x2apic_write(index: u32, data: u64) -> (R, Rule) {
    let reg = (index - 0x800) << 4;
    if reg != 0x300 && data >> 32 != 0 {
        return (R::Fault, &rules::X2APIC_REG);
    }
    match reg {
        0xb0 if data == 0 => (R::Ok(0), &rules::X2APIC_REG),
        0x80 if data <= 0xff => (R::Ok(0), &rules::X2APIC_REG),
        0x280 if data != 0 => (R::Fault, &rules::X2APIC_REG),
        0x20 | 0x30 | 0xa0 | 0xd0 | 0xe0 | 0x100..=0x270 | 0x390 => (R::Fault, &rules::X2APIC_REG),
        0xb0 | 0x80 | 0x280 | 0xf0 | 0x2f0 | 0x300 | 0x320..=0x370 | 0x380 | 0x3e0 | 0x3f0 => {
            (R::Unmodeled, &rules::UNMODELED)
        }
        _ => (R::Fault, &rules::X2APIC_REG),
    }
}
