//! Multi-policy open-loop replay over `kvmtrace_replayer::Engine`: decode once,
//! fold N engines, compare each modelled prediction with the recorded outcome.
//!
//! Open loop (DESIGN.md): the guest's actions are the recorded ones, but each
//! engine folds the outcome *its* policy predicted, so a write accepted under
//! policy B but refused when recorded changes what later reads return under B;
//! such later divergences are `consequent` and name the one that caused them.
//!
//! Deterministic: policies are independent, so they may be folded on several
//! threads batch by batch; every report depends only on the trace and policy.

use std::collections::{BTreeMap, HashMap};

use kvmtrace_format::{Event, MsrOutcome, Record, TraceHeader};
use kvmtrace_replayer::{Engine, Policy, Prediction};
use rayon::prelude::*;
use serde::Serialize;

use crate::commands::text;

/// Divergences kept in full per policy (the counts are always complete).
pub const KEEP_DIVERGENCES: usize = 100;

/// The behaviour an event belongs to (SEMANTICS.md sections), the key of
/// `by_behaviour`.
pub fn behaviour(e: &Event) -> &'static str {
    match e {
        Event::Monitor { .. } | Event::Mwait { .. } => "monitor_mwait",
        Event::Reset { .. } | Event::Init { .. } | Event::Shutdown { .. } => "reset_init",
        Event::MsrRead { index, .. } | Event::MsrWrite { index, .. } => match index {
            0x1a0 => "monitor_mwait", // MISC_ENABLE (§1)
            0x3a => "feat_ctl",
            0x800..=0x8ff => "x2apic",
            0x179..=0x17b | 0x4d0 | 0x280..=0x29f | 0x400..=0x47f => "mce",
            0xc001_0015 => "mce", // HWCR bit 18 (§5)
            _ => "msr_other",
        },
        _ => "other",
    }
}

pub const BEHAVIOURS: [&str; 6] = [
    "monitor_mwait",
    "reset_init",
    "feat_ctl",
    "x2apic",
    "mce",
    "msr_other",
];

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Divergence {
    pub seq: u64,
    pub vcpu: u32,
    pub behaviour: &'static str,
    /// The action, with the MSR's name.
    pub event: String,
    pub recorded: String,
    pub policy: String,
    /// The rule that decided the policy's outcome.
    pub rule: String,
    /// `direct`, or `consequent` of the divergence at `caused_by`.
    pub kind: &'static str,
    pub caused_by: Option<u64>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PolicyReport {
    pub name: String,
    pub divergences: u64,
    pub direct: u64,
    pub consequent: u64,
    pub agreement: f64,
    pub coverage: f64,
    pub unmodeled: u64,
    pub modelled: u64,
    pub outcomes: u64,
    pub first: Option<Divergence>,
    pub by_behaviour: BTreeMap<&'static str, u64>,
    /// The first `KEEP_DIVERGENCES` divergences.
    #[serde(rename = "shown")]
    pub list: Vec<Divergence>,
}

/// One policy's fold.
struct Run {
    engine: Engine,
    report: PolicyReport,
    matched: u64,
    /// Where this policy's state first departed from the recording, by the
    /// state it touches: (vcpu or u32::MAX for VM-wide, MSR index or a tag).
    departed: HashMap<(u32, u32), u64>,
}

const TAG_RESET: u32 = u32::MAX;

impl Run {
    fn new(policy: Policy, header: &TraceHeader) -> Run {
        let name = policy.name.clone();
        Run {
            engine: Engine::new(policy, header),
            report: PolicyReport {
                name,
                divergences: 0,
                direct: 0,
                consequent: 0,
                agreement: 1.0,
                coverage: 0.0,
                unmodeled: 0,
                modelled: 0,
                outcomes: 0,
                first: None,
                by_behaviour: BEHAVIOURS.iter().map(|b| (*b, 0)).collect(),
                list: Vec::new(),
            },
            matched: 0,
            departed: HashMap::new(),
        }
    }

    fn step(&mut self, rec: &Record) {
        // (prediction as text, equal?, rule, the record as this policy would
        // have had it)
        let mut folded = None;
        let verdict: Option<(String, String, bool, String)> = match &rec.event {
            Event::MsrRead {
                index,
                origin,
                outcome,
                ..
            } => {
                let p = self.engine.msr_read(rec.vcpu, *index, *origin);
                self.msr_verdict(rec, p, outcome, &mut folded)
            }
            Event::MsrWrite {
                index,
                value,
                origin,
                outcome,
                ..
            } => {
                let p = self.engine.msr_write(rec.vcpu, *index, *value, *origin);
                self.msr_verdict(rec, p, outcome, &mut folded)
            }
            Event::Monitor { outcome, .. } | Event::Mwait { outcome, .. } => {
                let p = if matches!(rec.event, Event::Monitor { .. }) {
                    self.engine.monitor(rec.vcpu)
                } else {
                    self.engine.mwait(rec.vcpu)
                };
                p.outcome.map(|o| {
                    if o != *outcome {
                        let mut r = rec.clone();
                        match &mut r.event {
                            Event::Monitor { outcome, .. } | Event::Mwait { outcome, .. } => {
                                *outcome = o
                            }
                            _ => {}
                        }
                        folded = Some(r);
                    }
                    (
                        text::mwait_outcome(outcome).to_string(),
                        text::mwait_outcome(&o).to_string(),
                        o == *outcome,
                        p.rule.to_string(),
                    )
                })
            }
            Event::Shutdown { then, .. } => {
                let p = self.engine.shutdown(rec.vcpu);
                p.outcome.map(|o| {
                    (
                        format!("{then:?}").to_lowercase(),
                        format!("{o:?}").to_lowercase(),
                        o == *then,
                        p.rule.to_string(),
                    )
                })
            }
            Event::Reset { state, .. } => {
                let p = self.engine.reset_state(rec.vcpu);
                let rule = p.rule.to_string();
                p.outcome.map(|o| {
                    let same = o == **state;
                    let diff = state_diff(state, &o);
                    if !same {
                        let mut r = rec.clone();
                        if let Event::Reset { state, .. } = &mut r.event {
                            **state = o;
                        }
                        folded = Some(r);
                    }
                    (diff.0, diff.1, same, rule)
                })
            }
            Event::Init { before, after, .. } => {
                let p = self.engine.init_state(rec.vcpu, before);
                let rule = p.rule.to_string();
                p.outcome.map(|o| {
                    let same = o == **after;
                    let diff = state_diff(after, &o);
                    if !same {
                        let mut r = rec.clone();
                        if let Event::Init { after, .. } = &mut r.event {
                            **after = o;
                        }
                        folded = Some(r);
                    }
                    (diff.0, diff.1, same, rule)
                })
            }
            _ => None,
        };
        if rec.event.decided_by().is_some() {
            self.report.outcomes += 1;
            match &verdict {
                None => self.report.unmodeled += 1,
                Some((_, _, same, _)) => {
                    self.report.modelled += 1;
                    if *same {
                        self.matched += 1;
                    }
                }
            }
        }
        if let Some((recorded, policy, false, rule)) = verdict {
            self.diverge(rec, recorded, policy, rule);
        }
        self.engine.apply(folded.as_ref().unwrap_or(rec));
    }

    fn msr_verdict(
        &self,
        rec: &Record,
        p: Prediction<MsrOutcome>,
        recorded: &MsrOutcome,
        folded: &mut Option<Record>,
    ) -> Option<(String, String, bool, String)> {
        let o = p.outcome?;
        let same = o == *recorded;
        if !same {
            let mut r = rec.clone();
            match &mut r.event {
                Event::MsrRead { outcome, .. } | Event::MsrWrite { outcome, .. } => *outcome = o,
                _ => {}
            }
            *folded = Some(r);
        }
        Some((
            text::msr_outcome(recorded),
            text::msr_outcome(&o),
            same,
            p.rule.to_string(),
        ))
    }

    /// The state a divergence touches, for `consequent` attribution.
    fn state_key(rec: &Record) -> Option<(u32, u32)> {
        match &rec.event {
            Event::MsrRead { index, .. } | Event::MsrWrite { index, .. } => {
                Some((rec.vcpu, *index))
            }
            Event::Reset { .. } | Event::Init { .. } => Some((rec.vcpu, TAG_RESET)),
            _ => None,
        }
    }

    fn diverge(&mut self, rec: &Record, recorded: String, policy: String, rule: String) {
        let key = Self::state_key(rec);
        // A divergence is consequent when this policy's state for the same MSR
        // (or the vCPU's RESET/INIT state) already departed from the recording.
        let caused_by = key.and_then(|k| {
            self.departed
                .get(&k)
                .or_else(|| self.departed.get(&(rec.vcpu, TAG_RESET)))
                .copied()
        });
        // Writes change state; record where this policy's state departed.
        if let Some(k) = key
            && matches!(
                rec.event,
                Event::MsrWrite { .. } | Event::Reset { .. } | Event::Init { .. }
            )
        {
            self.departed.entry(k).or_insert(rec.seq);
        }
        let b = behaviour(&rec.event);
        let r = &mut self.report;
        r.divergences += 1;
        if caused_by.is_some() {
            r.consequent += 1;
        } else {
            r.direct += 1;
        }
        *r.by_behaviour.entry(b).or_default() += 1;
        if r.list.len() < KEEP_DIVERGENCES || r.first.is_none() {
            let d = Divergence {
                seq: rec.seq,
                vcpu: rec.vcpu,
                behaviour: b,
                event: text::describe(&rec.event),
                recorded,
                policy,
                rule,
                kind: if caused_by.is_some() {
                    "consequent"
                } else {
                    "direct"
                },
                caused_by,
            };
            if r.first.is_none() {
                r.first = Some(d.clone());
            }
            if r.list.len() < KEEP_DIVERGENCES {
                r.list.push(d);
            }
        }
    }

    fn finish(mut self) -> PolicyReport {
        let r = &mut self.report;
        r.agreement = if r.modelled == 0 {
            1.0
        } else {
            self.matched as f64 / r.modelled as f64
        };
        r.coverage = if r.outcomes == 0 {
            0.0
        } else {
            r.modelled as f64 / r.outcomes as f64
        };
        self.report
    }
}

/// The registers that differ between a recorded and a predicted state, as two
/// short strings.
fn state_diff(a: &kvmtrace_format::ArchState, b: &kvmtrace_format::ArchState) -> (String, String) {
    let mut ra = Vec::new();
    let mut rb = Vec::new();
    macro_rules! cmp {
        ($($f:ident),*) => {$(
            if a.$f != b.$f {
                ra.push(format!("{}={:#x}", stringify!($f), a.$f));
                rb.push(format!("{}={:#x}", stringify!($f), b.$f));
            }
        )*};
    }
    cmp!(
        rip, rflags, cr0, cr2, cr3, cr4, efer, dr6, dr7, apic_base, mp_state
    );
    for (i, name) in ["rax", "rcx", "rdx", "rbx"].iter().enumerate() {
        if a.gprs[i] != b.gprs[i] {
            ra.push(format!("{name}={:#x}", a.gprs[i]));
            rb.push(format!("{name}={:#x}", b.gprs[i]));
        }
    }
    if a.gdtr != b.gdtr {
        ra.push(format!("gdtr.base={:#x}", a.gdtr.base));
        rb.push(format!("gdtr.base={:#x}", b.gdtr.base));
    }
    if a.idtr != b.idtr {
        ra.push(format!("idtr.base={:#x}", a.idtr.base));
        rb.push(format!("idtr.base={:#x}", b.idtr.base));
    }
    if a.cs != b.cs {
        ra.push(format!("cs={:#x}", a.cs.selector));
        rb.push(format!("cs={:#x}", b.cs.selector));
    }
    if a.msrs != b.msrs {
        for &(i, v) in &a.msrs {
            if b.msr(i) != Some(v) {
                ra.push(format!("{}={v:#x}", text::msr_label(i)));
                rb.push(match b.msr(i) {
                    Some(w) => format!("{}={w:#x}", text::msr_label(i)),
                    None => format!("{}=-", text::msr_label(i)),
                });
            }
        }
    }
    if ra.is_empty() {
        ra.push("state".into());
        rb.push("other segment/register differences".into());
    }
    (ra.join(" "), rb.join(" "))
}

/// Replay `records` against `policies` in one pass; batches of records are
/// folded by every policy, policies in parallel on `threads` threads.
pub fn replay<I>(
    header: &TraceHeader,
    records: I,
    policies: Vec<Policy>,
    threads: usize,
    total_events: u64,
) -> anyhow::Result<(u64, Vec<PolicyReport>)>
where
    I: Iterator<Item = anyhow::Result<Record>>,
{
    const BATCH: usize = 1 << 16;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()?;
    let mut runs: Vec<Run> = policies.into_iter().map(|p| Run::new(p, header)).collect();
    let mut events = 0u64;
    let mut batch = Vec::with_capacity(BATCH);
    let mut records = records.peekable();
    let pb = crate::progress::bar(total_events, "events");
    loop {
        batch.clear();
        while batch.len() < BATCH {
            match records.next() {
                Some(r) => batch.push(r?),
                None => break,
            }
        }
        if batch.is_empty() {
            break;
        }
        events += batch.len() as u64;
        pb.inc(batch.len() as u64);
        if runs.len() == 1 || threads <= 1 {
            for run in &mut runs {
                for rec in &batch {
                    run.step(rec);
                }
            }
        } else {
            pool.install(|| {
                runs.par_iter_mut().for_each(|run| {
                    for rec in &batch {
                        run.step(rec);
                    }
                })
            });
        }
    }
    pb.finish_and_clear();
    Ok((events, runs.into_iter().map(Run::finish).collect()))
}
