//! MONITOR/MWAIT (SEMANTICS.md §1) and RESET, INIT, SHUTDOWN (§2).

use kvmtrace_format::{AfterShutdown, ArchState, DescTable, MwaitOutcome, Segment};

use crate::engine::{Engine, Prediction, StatePrediction};
use crate::policy::{InitModel, SvmShutdown, Vendor};
use crate::quirks;
use crate::rules;
use crate::state::{self, MAX_VCPUS};

pub const CR0_ET: u64 = 1 << 4;
pub const CR0_NW: u64 = 1 << 29;
pub const CR0_CD: u64 = 1 << 30;
pub const CR0_RESET: u64 = 0x6000_0010;

/// Segment attributes in the VMX access-rights layout `Segment.attr` documents.
/// VMX (`vmx_vcpu_reset` `seg_setup`): data RW accessed 0x93, code 0x9b, LDT
/// 0x82, busy 32-bit TSS 0x8b (§2 table). SVM, as `KVM_GET_SREGS` reports it
/// (checked in svm.c: `init_vmcb`/`init_seg` store CS READ|CODE = type 0xa and
/// data W = type 2; `svm_get_segment` sets the accessed bit for DS/ES/FS/GS
/// only and the busy bit for TR): CS 0x9a, SS 0x92, DS/ES/FS/GS 0x93, LDT 0x82,
/// TR busy 16-bit TSS 0x83.
const AR_DATA: u32 = 0x93;
const AR_CODE: u32 = 0x9b;
const AR_LDT: u32 = 0x82;
const AR_TSS_VMX: u32 = 0x8b;
const AR_CODE_SVM: u32 = 0x9a;
const AR_SS_SVM: u32 = 0x92;
const AR_TSS_SVM: u32 = 0x83;

/// MSRs the RESET model knows (§2 "MSRs"), sorted by index.
fn reset_msrs(misc_enable: u64, vendor: Vendor) -> Vec<(u32, u64)> {
    let mut m = vec![
        (0x9e, 0x30000),                // SMBASE
        (0x140, 0),                     // MISC_FEATURES_ENABLES
        (0x174, 0),                     // SYSENTER_CS
        (0x175, 0),                     // SYSENTER_ESP
        (0x176, 0),                     // SYSENTER_EIP
        (0x1a0, misc_enable),           // MISC_ENABLE (§1)
        (0x1d9, 0),                     // DEBUGCTL
        (0x277, 0x0007_0406_0007_0406), // PAT
        (0xc000_0080, 0),               // EFER
    ];
    if vendor == Vendor::Intel {
        // FEAT_CTL is 0 at vCPU creation (§3); other vendors have no handler.
        m.push((0x3a, 0));
    }
    m.sort_unstable();
    m
}

/// MSRs INIT clears (§2 "RESET and INIT"): EFER, SPEC_CTRL, kvmclock, async-PF,
/// steal time, PV-EOI.
const INIT_CLEARED: [u32; 9] = [
    0x48,
    0x11,
    0x12,
    0x4b56_4d00,
    0x4b56_4d01,
    0x4b56_4d02,
    0x4b56_4d03,
    0x4b56_4d04,
    0xc000_0080,
];

/// MSRs INIT leaves alone (§2 "Not written by the reset code", and the RESET-only
/// list): their value after INIT is their value before.
fn init_kept(index: u32) -> bool {
    matches!(
        index,
        0x3a | 0x9e
            | 0x140
            | 0x174..=0x176
            | 0x1a0
            | 0x1d9
            | 0x277
            | 0x179..=0x17b
            | 0x400..=0x47f
            | 0x200..=0x2ff
            | 0xc000_0081..=0xc000_0084
            | 0xc000_0102
    )
}

impl Engine {
    /// §1 `kvm_emulate_monitor_mwait` (6.0+), NOP before 6.0. MWAIT in guest
    /// (`KVM_X86_DISABLE_EXITS_MWAIT`) is not recorded in traces, so both
    /// instructions are taken as intercepted.
    pub(crate) fn decide_mwait(&self, vcpu: u32) -> Prediction<MwaitOutcome> {
        if vcpu as usize >= MAX_VCPUS {
            return Prediction::unmodeled();
        }
        if !self.policy.switches.mwait_quirk_exists {
            return Prediction::new(MwaitOutcome::Nop, rules::MWAIT_NO_QUIRK);
        }
        if self.vm.quirk(quirks::MWAIT_NEVER_UD_FAULTS) {
            return Prediction::new(MwaitOutcome::Nop, rules::MWAIT_QUIRK_ENABLED);
        }
        // 6.0–6.14 read guest CPUID MWAIT, kept equal to MISC_ENABLE[18] by
        // runtime CPUID updates when MISC_ENABLE_NO_MWAIT is disabled; 6.15+
        // reads MISC_ENABLE[18] directly then (a487f6797c88). They differ only
        // when the quirk is disabled after KVM_SET_CPUID2 (no runtime update yet).
        let v = self.vcpu_state(vcpu);
        let enabled = if self.policy.switches.mwait_reads_misc_enable
            && !self.vm.quirk(quirks::MISC_ENABLE_NO_MWAIT)
        {
            v.misc_enable & (1 << 18) != 0
        } else {
            v.cpuid.mwait
        };
        if enabled {
            Prediction::new(MwaitOutcome::Nop, rules::MWAIT_CPUID_SET)
        } else {
            Prediction::new(MwaitOutcome::InjectUd, rules::MWAIT_UD)
        }
    }

    /// §2 shutdown: SVM INITs (≥5.15) or re-initialises the VMCB (≤5.14); VMX
    /// and kvm_pvm change nothing (`Resume`: registers as at the fault).
    pub(crate) fn decide_shutdown(&self, vcpu: u32) -> Prediction<AfterShutdown> {
        if vcpu as usize >= MAX_VCPUS {
            return Prediction::unmodeled();
        }
        match (self.policy.vendor, self.policy.switches.svm_shutdown) {
            (Vendor::Amd, SvmShutdown::Init) => {
                Prediction::new(AfterShutdown::Init, rules::SHUTDOWN_SVM_INIT)
            }
            (Vendor::Amd, SvmShutdown::ReinitVmcb) => {
                Prediction::new(AfterShutdown::Reset, rules::SHUTDOWN_SVM_REINIT)
            }
            (Vendor::Intel, _) => Prediction::new(AfterShutdown::Resume, rules::SHUTDOWN_VMX),
            (Vendor::Pvm, _) => Prediction::new(AfterShutdown::Resume, rules::SHUTDOWN_PVM),
        }
    }

    fn svm(&self) -> bool {
        self.policy.vendor == Vendor::Amd
    }

    /// The register state both RESET and INIT define (§2 table).
    fn arch_reset_common(&self) -> ArchState {
        let data = Segment {
            selector: 0,
            base: 0,
            limit: 0xffff,
            attr: AR_DATA,
        };
        ArchState {
            rip: 0xfff0,
            rflags: 0x2,
            cr0: CR0_RESET,
            cs: Segment {
                selector: 0xf000,
                base: 0xffff_0000,
                limit: 0xffff,
                attr: if self.svm() { AR_CODE_SVM } else { AR_CODE },
            },
            ds: data,
            es: data,
            fs: data,
            gs: data,
            ss: Segment {
                attr: if self.svm() { AR_SS_SVM } else { AR_DATA },
                ..data
            },
            ldtr: Segment {
                attr: AR_LDT,
                ..data
            },
            tr: Segment {
                attr: if self.svm() { AR_TSS_SVM } else { AR_TSS_VMX },
                ..data
            },
            gdtr: DescTable {
                base: 0,
                limit: 0xffff,
            },
            idtr: DescTable {
                base: 0,
                limit: 0xffff,
            },
            dr6: 0xffff_0ff0,
            dr7: 0x400,
            ..ArchState::default()
        }
    }

    /// The RESET state at `KVM_CREATE_VCPU` (§2). CPUID is not set yet, so RDX is
    /// KVM's 0x600 fallback — except legacy SVM, which used an inexact CPUID(1)
    /// lookup that found nothing: 0.
    pub fn reset_prediction(&self, vcpu: u32) -> StatePrediction {
        let mut s = self.arch_reset_common();
        let legacy = self.policy.switches.init_model == InitModel::Legacy;
        s.gprs[ArchState::RDX] = if legacy && self.svm() { 0 } else { 0x600 };
        s.apic_base = state::reset_apic_base(vcpu);
        s.mp_state = state::reset_mp_state(vcpu, self.vm.irqchip);
        s.msrs = reset_msrs(
            crate::engine::misc_enable_at_reset(&self.policy),
            self.policy.vendor,
        );
        let p = StatePrediction {
            state: s,
            attrs_known: !self.policy.has(crate::vendor::Fact::SegmentAttrsUnknown),
            rule: if legacy {
                rules::RESET_LEGACY
            } else {
                rules::RESET_CONSOLIDATED
            },
        };
        self.hooked_reset(vcpu, p)
    }

    /// The state after INIT from `before` (§2): consolidated `kvm_vcpu_reset(INIT)`
    /// or the legacy vendor code.
    pub fn init_prediction(&self, vcpu: u32, before: &ArchState) -> StatePrediction {
        let sw = &self.policy.switches;
        let v = self.vcpu_state(vcpu);
        let legacy = sw.init_model == InitModel::Legacy;
        let mut s = self.arch_reset_common();
        s.gprs[ArchState::RDX] = match (legacy, self.svm()) {
            // Consolidated: CPUID.1.EAX of an exact leaf-1 entry, else 0x600.
            (false, _) => v.cpuid.leaf1_eax.map_or(0x600, u64::from),
            // Legacy VMX: get_rdx_init_val() = 0x600.
            (true, false) => 0x600,
            // Legacy SVM: inexact kvm_cpuid(1): any leaf-1 EAX, else 0.
            (true, true) => v.cpuid.leaf1_eax.map_or(0, u64::from),
        };
        s.cr0 = if sw.init_preserves_cd_nw {
            CR0_ET | (before.cr0 & (CR0_CD | CR0_NW))
        } else {
            CR0_RESET
        };
        if self.svm() && !sw.svm_init_zero_dtr_base {
            s.gdtr.base = before.gdtr.base;
            s.idtr.base = before.idtr.base;
        }
        if legacy && !self.svm() {
            s.cr3 = before.cr3; // legacy VMX keeps CR3 (§2, code reading only)
        }
        s.apic_base = before.apic_base;
        s.mp_state = if !self.vm.lapic_in_kernel() || vcpu == 0 {
            0
        } else {
            2
        };
        let mut msrs: Vec<(u32, u64)> = before
            .msrs
            .iter()
            .filter(|(i, _)| init_kept(*i))
            .copied()
            .collect();
        for (i, _) in before.msrs.iter() {
            if INIT_CLEARED.contains(i) {
                msrs.push((*i, 0));
            }
        }
        msrs.sort_unstable();
        s.msrs = msrs;
        let p = StatePrediction {
            state: s,
            attrs_known: !self.policy.has(crate::vendor::Fact::SegmentAttrsUnknown),
            rule: if legacy {
                rules::INIT_LEGACY
            } else {
                rules::INIT_CONSOLIDATED
            },
        };
        self.hooked_init(vcpu, before, p)
    }

    /// The rule behind the value of `field` in a RESET (`init` false) or INIT
    /// prediction: the switch that decides that field.
    pub(crate) fn state_rule(&self, field: &str, init: bool, default: rules::Rule) -> rules::Rule {
        let sw = &self.policy.switches;
        match field {
            "IA32_MISC_ENABLE"
                if self
                    .policy
                    .has(crate::vendor::Fact::MiscEnableResetFastString) =>
            {
                rules::MISC_ENABLE_RESET_PVM
            }
            "IA32_MISC_ENABLE" if sw.misc_enable_reset == 0 => rules::MISC_ENABLE_RESET_0,
            "IA32_MISC_ENABLE" => rules::MISC_ENABLE_RESET_1800,
            "cr0" if init && sw.init_preserves_cd_nw => rules::INIT_CR0_PRESERVE,
            "cr0" if init => rules::INIT_CR0_RESET,
            "gdtr" | "idtr" if init && self.svm() && sw.svm_init_zero_dtr_base => {
                rules::SVM_DTR_ZERO
            }
            "gdtr" | "idtr" if init && self.svm() => rules::SVM_DTR_KEPT,
            _ => default,
        }
    }

    /// The INIT prediction for a recorded INIT: an in-kernel INIT followed at
    /// once by a SIPI is read back (at the target's EAGAIN) with the SIPI
    /// already applied — CS = vector << 8, base vector << 12, RIP 0, mp_state
    /// RUNNABLE (docs/host-notes.md, recorder probes); whether the SIPI landed
    /// before the read-back is a race, so a recorded post-SIPI state selects
    /// that branch. The vector is the one of the SIPI the trace showed for
    /// this vCPU (an `Ipi` SIPI or a `Sipi` event); only when the trace shows
    /// none (an in-kernel LAPIC's SIPI is invisible to the recorder) is the
    /// recorded vector taken. mp_state is predicted, never copied.
    pub fn init_prediction_seen(
        &self,
        vcpu: u32,
        source: kvmtrace_format::InitSource,
        before: &ArchState,
        after: &ArchState,
    ) -> StatePrediction {
        let mut p = self.init_prediction(vcpu, before);
        let cs = &after.cs;
        let post_sipi = source == kvmtrace_format::InitSource::Kernel
            && after.rip == 0
            && cs.selector & 0xff == 0
            && cs.base == u64::from(cs.selector) << 4
            && cs.selector != 0xf000;
        if post_sipi {
            let vector = self.sipi_seen(vcpu).unwrap_or((cs.selector >> 8) as u8);
            p.state.cs.selector = u16::from(vector) << 8;
            p.state.cs.base = u64::from(vector) << 12;
            p.state.rip = 0;
            // KVM_MP_STATE_RUNNABLE after the SIPI.
            p.state.mp_state = 0;
        }
        p
    }

    /// Fold a RESET (recorded or predicted state).
    pub(crate) fn apply_reset(&mut self, vcpu: u32, s: &ArchState) {
        let me = s
            .msr(0x1a0)
            .unwrap_or(crate::engine::misc_enable_at_reset(&self.policy));
        let pat = s.msr(0x277).unwrap_or(super::msr::PAT_DEFAULT);
        if let Some(v) = self.vcpu_mut(vcpu) {
            v.misc_enable = me;
            v.pat = pat;
            v.apic_base = s.apic_base;
            v.cr0 = s.cr0;
            v.mp_state = s.mp_state;
            // RESET: the table registers are 0, or what the recording read.
            v.pv = super::PvRegs::created();
            v.spec_ctrl = Some(0);
            // kvm_lapic_reset(init_event=false): ESR 0 (model::lapic).
            v.lapic.reset_esr();
            v.regs = super::REGS_AT_RESET;
            v.regs_known = super::REGS_KNOWN_AT_RESET;
            for &(i, x) in &s.msrs {
                super::common::teach(v, i, x);
            }
            // The VMM's KVM_SET_SREGS after RESET (untapped in our own
            // recordings) sets EFER and the segment bases.
            v.regs_known &= super::REGS_KNOWN_AT_RESET;
            // kvm_vcpu_reset (RESET and INIT): smi_count = 0.
            v.host.smi_count = Some(0);
        }
    }

    /// Fold an INIT: MISC_ENABLE, FEAT_CTL and MCE state are kept (§2).
    pub(crate) fn apply_init(&mut self, vcpu: u32, s: &ArchState) {
        // A target-side INIT whose registers were not read back (a capture's
        // `kvm_apic_accept_irq`: CR0 is never 0 after INIT): what INIT
        // changes is unknown, as for an INIT IPI (model::lapic).
        if s.cr0 == 0 {
            self.deliver_init(vcpu, false);
            return;
        }
        let lint0 = self.vm.quirk(crate::quirks::LINT0_REENABLED);
        if let Some(v) = self.vcpu_mut(vcpu) {
            // Common code keeps or sets some table registers; the vendor's
            // (which differ) are forgotten.
            super::common::on_init(v, true);
            v.apic_base = s.apic_base;
            v.unknown &= !crate::state::U_APIC_BASE;
            v.cr0 = s.cr0;
            v.mp_state = s.mp_state;
            // vmx/svm vcpu_reset: spec_ctrl = 0 at RESET and INIT.
            v.spec_ctrl = Some(0);
            v.pv.init(true);
            super::lapic::init_seen(v, lint0);
        }
    }

    /// Fold what followed a shutdown.
    pub(crate) fn apply_shutdown(&mut self, vcpu: u32, then: AfterShutdown) {
        let before = {
            let v = self.vcpu_state(vcpu);
            ArchState {
                cr0: v.cr0,
                apic_base: v.apic_base,
                ..ArchState::default()
            }
        };
        match then {
            AfterShutdown::Init => {
                let p = self.init_prediction(vcpu, &before);
                self.apply_init(vcpu, &p.state);
            }
            AfterShutdown::Reset => {
                // SVM ≤5.14 re-initialises the VMCB: CR0 back to its RESET value.
                if let Some(v) = self.vcpu_mut(vcpu) {
                    v.cr0 = CR0_RESET;
                }
            }
            AfterShutdown::Stop | AfterShutdown::Resume => {}
        }
    }
}

/// The first field where `pred` and a recorded state differ, as
/// (field, predicted, recorded); `None` if they agree on everything known.
pub fn compare_state(pred: &StatePrediction, rec: &ArchState) -> Option<(String, String, String)> {
    let p = &pred.state;
    let hex = |x: u64| format!("{x:#x}");
    macro_rules! cmp {
        ($($f:ident),+) => {$(
            if p.$f != rec.$f {
                return Some((stringify!($f).to_string(), hex(p.$f as u64), hex(rec.$f as u64)));
            }
        )+};
    }
    for (i, (a, b)) in p.gprs.iter().zip(rec.gprs.iter()).enumerate() {
        if a != b {
            const N: [&str; 16] = [
                "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11",
                "r12", "r13", "r14", "r15",
            ];
            return Some((N[i].to_string(), hex(*a), hex(*b)));
        }
    }
    cmp!(rip, rflags, cr0, cr2, cr3, cr4, efer);
    let segs = [
        ("cs", &p.cs, &rec.cs),
        ("ds", &p.ds, &rec.ds),
        ("es", &p.es, &rec.es),
        ("fs", &p.fs, &rec.fs),
        ("gs", &p.gs, &rec.gs),
        ("ss", &p.ss, &rec.ss),
        ("ldtr", &p.ldtr, &rec.ldtr),
        ("tr", &p.tr, &rec.tr),
    ];
    for (n, a, b) in segs {
        let same = a.selector == b.selector
            && a.base == b.base
            && a.limit == b.limit
            && (!pred.attrs_known || a.attr == b.attr);
        if !same {
            let show = |s: &Segment| {
                format!(
                    "sel {:#x} base {:#x} limit {:#x} attr {:#x}",
                    s.selector, s.base, s.limit, s.attr
                )
            };
            return Some((n.to_string(), show(a), show(b)));
        }
    }
    for (n, a, b) in [("gdtr", &p.gdtr, &rec.gdtr), ("idtr", &p.idtr, &rec.idtr)] {
        if a != b {
            let show = |d: &DescTable| format!("base {:#x} limit {:#x}", d.base, d.limit);
            return Some((n.to_string(), show(a), show(b)));
        }
    }
    for i in 0..4 {
        if p.dr[i] != rec.dr[i] {
            return Some((format!("dr{i}"), hex(p.dr[i]), hex(rec.dr[i])));
        }
    }
    cmp!(dr6, dr7, apic_base, mp_state);
    for &(i, want) in &p.msrs {
        if let Some(got) = rec.msr(i)
            && got != want
        {
            return Some((crate::names::msr_name(i).to_string(), hex(want), hex(got)));
        }
    }
    None
}
