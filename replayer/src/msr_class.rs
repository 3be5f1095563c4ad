//! Per-MSR-class fidelity (issue 12 item 6): which part of the kernel's MSR
//! space the model covers, and how well. Closed loop: every kernel-decided MSR
//! outcome is predicted from the state the recorded guest had (the engine
//! folds the recorded outcomes), so a class's figures are its own rules', not
//! consequences of another class's miss.

use kvmtrace_format::{DecidedBy, Event, Record, TraceHeader};

use crate::engine::Engine;
use crate::policy::Policy;

/// The MSR classes of the fidelity table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MsrClass {
    /// IA32_APIC_BASE, x2APIC 0x800–0x8ff, TSC_DEADLINE.
    Lapic,
    /// Counters, event selects, global controls, PERF_CAPABILITIES, PEBS, DS.
    Pmu,
    /// MCG_*, MCi_*, MCi_CTL2, HWCR (McStatusWrEn), P5_MC.
    Mce,
    /// MTRRcap, variable/fixed MTRRs, MTRRdefType, PAT.
    Mtrr,
    /// kvmclock, async PF, steal time, PV EOI, poll control, Hyper-V,
    /// TSC_ADJUST, TSC_AUX (IA32_TSC itself, a clock, counts under other).
    Pv,
    /// SPEC_CTRL, PRED_CMD, FLUSH_CMD, ARCH_CAPABILITIES, TSX_CTRL, VIRT_SPEC_CTRL.
    Speculation,
    Other,
}

impl MsrClass {
    pub const ALL: [MsrClass; 7] = [
        MsrClass::Lapic,
        MsrClass::Pmu,
        MsrClass::Mce,
        MsrClass::Mtrr,
        MsrClass::Pv,
        MsrClass::Speculation,
        MsrClass::Other,
    ];

    pub fn of(index: u32) -> MsrClass {
        match index {
            0x1b | 0x6e0 | 0x800..=0x8ff => MsrClass::Lapic,
            0xc1..=0xc8
            | 0x186..=0x18f
            | 0x309..=0x30c
            | 0x345
            | 0x38d..=0x392
            | 0x3f1..=0x3f2
            | 0x4c1..=0x4c8
            | 0x600
            | 0xc001_0000..=0xc001_0007
            | 0xc001_0200..=0xc001_020b
            | 0xc000_0300..=0xc000_0303 => MsrClass::Pmu,
            0x0 | 0x1 | 0x179..=0x17b | 0x280..=0x29f | 0x400..=0x47f | 0x4d0 | 0xc001_0015 => {
                MsrClass::Mce
            }
            0xfe | 0x200..=0x2ff => MsrClass::Mtrr,
            0x11
            | 0x12
            | 0x3b
            | 0x4b56_4d00..=0x4b56_4dff
            | 0x4000_0000..=0x4000_01ff
            | 0xc000_0103 => MsrClass::Pv,
            0x48 | 0x49 | 0x10a | 0x10b | 0x122 | 0xc001_011f => MsrClass::Speculation,
            _ => MsrClass::Other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            MsrClass::Lapic => "lapic",
            MsrClass::Pmu => "pmu",
            MsrClass::Mce => "mce",
            MsrClass::Mtrr => "mtrr",
            MsrClass::Pv => "pv",
            MsrClass::Speculation => "speculation",
            MsrClass::Other => "other",
        }
    }
}

/// Scored outcomes: agree / disagree / unmodeled, and the agreement and
/// coverage derived from them. The one counting type of the fidelity tables:
/// [`ClassCell`] here and `kvmtrace fidelity`'s per-behaviour cells embed it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub agree: u64,
    pub disagree: u64,
    pub unmodeled: u64,
}

impl Counts {
    pub fn merge(&mut self, o: &Counts) {
        self.agree += o.agree;
        self.disagree += o.disagree;
        self.unmodeled += o.unmodeled;
    }
    pub fn modelled(&self) -> u64 {
        self.agree + self.disagree
    }
    pub fn total(&self) -> u64 {
        self.modelled() + self.unmodeled
    }
    /// `None` when nothing was modelled.
    pub fn agreement(&self) -> Option<f64> {
        (self.modelled() > 0).then(|| self.agree as f64 / self.modelled() as f64)
    }
    pub fn coverage(&self) -> Option<f64> {
        (self.total() > 0).then(|| self.modelled() as f64 / self.total() as f64)
    }
}

/// Counts for one class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassCell {
    pub counts: Counts,
    /// Unmodeled because the rule needs a CPUID leaf the trace has not shown
    /// (item 5: learnable, never a divergence).
    pub unseen_cpuid: u64,
}

impl ClassCell {
    pub fn merge(&mut self, o: &ClassCell) {
        self.counts.merge(&o.counts);
        self.unseen_cpuid += o.unseen_cpuid;
    }
}

/// A closed-loop per-class tally of one policy over one trace.
pub struct ClassTally {
    engine: Engine,
    pub cells: [ClassCell; 7],
}

impl ClassTally {
    pub fn new(policy: Policy, header: &TraceHeader) -> ClassTally {
        ClassTally {
            engine: Engine::new(policy, header),
            cells: [ClassCell::default(); 7],
        }
    }

    /// Score one record (kernel-decided MSR outcomes only), then fold it.
    pub fn feed(&mut self, rec: &Record) {
        if rec.event.decided_by() == Some(DecidedBy::Kernel) {
            let scored = match &rec.event {
                Event::MsrRead {
                    index,
                    origin,
                    outcome,
                    ..
                } => Some((
                    *index,
                    self.engine.msr_read(rec.vcpu, *index, *origin),
                    outcome,
                )),
                Event::MsrWrite {
                    index,
                    value,
                    origin,
                    outcome,
                    ..
                } => Some((
                    *index,
                    self.engine.msr_write(rec.vcpu, *index, *value, *origin),
                    outcome,
                )),
                _ => None,
            };
            if let Some((index, p, recorded)) = scored {
                let i = MsrClass::ALL
                    .iter()
                    .position(|c| *c == MsrClass::of(index))
                    .unwrap_or(6);
                let cell = &mut self.cells[i];
                match &p.outcome {
                    None => {
                        cell.counts.unmodeled += 1;
                        if p.rule == crate::model::UNSEEN_CPUID {
                            cell.unseen_cpuid += 1;
                        }
                    }
                    Some(o) if crate::replay::msr_agrees(o, recorded) => cell.counts.agree += 1,
                    Some(_) => cell.counts.disagree += 1,
                }
            }
        }
        self.engine.apply(rec);
    }
}
