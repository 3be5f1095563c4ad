//! `diff A B`: two recordings of the same guest (e.g. on two hosts or kernels)
//! compared outcome by outcome, aligned per vCPU by guest action (the kind of
//! action, the MSR index and the written value), not by sequence number: an
//! extra or missing event on one side does not shift every later comparison.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use kvmtrace_format::{ArchState, Event, Origin, Record};
use serde::Serialize;

use crate::engine::StatePrediction;
use crate::model::compare_state;
use crate::report::{Behaviour, OutcomeView, describe_event};
use crate::rules;

/// How far ahead the alignment looks for the next common action.
const WINDOW: usize = 64;
/// Differences and unaligned events listed in full (counts are exact).
pub const KEEP: usize = 1000;

/// Free-running counters whose values always differ between two runs: their
/// outcome kind is compared, not their value.
const VOLATILE: [u32; 4] = [0x10, 0xe7, 0xe8, 0x6e0];

/// The guest action of a record: what is aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    Read(u32, Origin),
    Write(u32, u64, Origin),
    Monitor,
    Mwait,
    Shutdown,
    Reset,
    Init,
}

fn key(e: &Event) -> Option<Key> {
    Some(match e {
        Event::MsrRead { index, origin, .. } => Key::Read(*index, *origin),
        Event::MsrWrite {
            index,
            value,
            origin,
            ..
        } => Key::Write(*index, *value, *origin),
        Event::Monitor { .. } => Key::Monitor,
        Event::Mwait { .. } => Key::Mwait,
        Event::Shutdown { .. } => Key::Shutdown,
        Event::Reset { .. } => Key::Reset,
        Event::Init { .. } => Key::Init,
        _ => return None,
    })
}

/// One aligned action whose outcomes differ.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OutcomeDiff {
    pub vcpu: u32,
    pub seq_a: u64,
    pub seq_b: u64,
    pub event: String,
    pub a: OutcomeView,
    pub b: OutcomeView,
    pub behaviour: Behaviour,
}

/// An action present on one side only.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Unaligned {
    pub vcpu: u32,
    pub seq: u64,
    pub event: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DiffReport {
    pub a: String,
    pub b: String,
    /// Actions aligned on both sides.
    pub aligned: u64,
    /// Aligned actions whose outcomes differ.
    pub differing: u64,
    pub first: Option<OutcomeDiff>,
    pub differences: Vec<OutcomeDiff>,
    pub only_in_a_count: u64,
    pub only_in_b_count: u64,
    pub only_in_a: Vec<Unaligned>,
    pub only_in_b: Vec<Unaligned>,
}

impl DiffReport {
    /// Whether the two recordings differ at all (exit code 1).
    pub fn differs(&self) -> bool {
        self.differing > 0 || self.only_in_a_count > 0 || self.only_in_b_count > 0
    }

    pub fn render(&self, max: usize) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "A = {}\nB = {}\n{} actions aligned, {} with different outcomes; {} only in A, {} only in B",
            self.a,
            self.b,
            self.aligned,
            self.differing,
            self.only_in_a_count,
            self.only_in_b_count
        );
        for d in self.differences.iter().take(max) {
            let _ = writeln!(
                o,
                "  vcpu {} A#{} B#{}  {}  [{}]\n      A: {}\n      B: {}",
                d.vcpu,
                d.seq_a,
                d.seq_b,
                d.event,
                d.behaviour.name(),
                d.a,
                d.b
            );
        }
        if self.differing as usize > max.min(self.differences.len()) {
            let _ = writeln!(
                o,
                "  ... {} more differences",
                self.differing as usize - max.min(self.differences.len())
            );
        }
        for (side, list, n) in [
            ("A", &self.only_in_a, self.only_in_a_count),
            ("B", &self.only_in_b, self.only_in_b_count),
        ] {
            for u in list.iter().take(max) {
                let _ = writeln!(
                    o,
                    "  only in {side}: vcpu {} #{}  {}",
                    u.vcpu, u.seq, u.event
                );
            }
            if n as usize > max.min(list.len()) {
                let _ = writeln!(
                    o,
                    "  ... {} more only in {side}",
                    n as usize - max.min(list.len())
                );
            }
        }
        o
    }
}

/// The outcomes of two records with the same action, if they differ.
fn outcome_diff(a: &Event, b: &Event) -> Option<(OutcomeView, OutcomeView)> {
    match (a, b) {
        (
            Event::MsrRead {
                index, outcome: oa, ..
            },
            Event::MsrRead { outcome: ob, .. },
        )
        | (
            Event::MsrWrite {
                index, outcome: oa, ..
            },
            Event::MsrWrite { outcome: ob, .. },
        ) => {
            let same = oa == ob
                || (VOLATILE.contains(index)
                    && std::mem::discriminant(oa) == std::mem::discriminant(ob));
            (!same).then(|| (OutcomeView::msr(oa, true), OutcomeView::msr(ob, true)))
        }
        (Event::Monitor { outcome: oa, .. }, Event::Monitor { outcome: ob, .. })
        | (Event::Mwait { outcome: oa, .. }, Event::Mwait { outcome: ob, .. }) => {
            (oa != ob).then(|| (OutcomeView::mwait(*oa), OutcomeView::mwait(*ob)))
        }
        (Event::Shutdown { then: ta, .. }, Event::Shutdown { then: tb, .. }) => (ta != tb)
            .then_some((
                OutcomeView::Then { then: *ta },
                OutcomeView::Then { then: *tb },
            )),
        (Event::Reset { state: sa, .. }, Event::Reset { state: sb, .. })
        | (Event::Init { after: sa, .. }, Event::Init { after: sb, .. }) => state_diff(sa, sb),
        _ => None,
    }
}

fn state_diff(a: &ArchState, b: &ArchState) -> Option<(OutcomeView, OutcomeView)> {
    let p = StatePrediction {
        state: a.clone(),
        attrs_known: true,
        rule: rules::UNMODELED,
    };
    let (field, va, vb) = compare_state(&p, b)?;
    Some((
        OutcomeView::State {
            field: field.clone(),
            value: va,
        },
        OutcomeView::State { field, value: vb },
    ))
}

fn by_vcpu(records: &[Record]) -> BTreeMap<u32, Vec<(usize, Key)>> {
    let mut m: BTreeMap<u32, Vec<(usize, Key)>> = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        if let Some(k) = key(&r.event) {
            m.entry(r.vcpu).or_default().push((i, k));
        }
    }
    m
}

/// Compare recordings `a` and `b` (named `a_name`, `b_name` in the report).
pub fn diff(a_name: &str, a: &[Record], b_name: &str, b: &[Record]) -> DiffReport {
    let mut rep = DiffReport {
        a: a_name.to_string(),
        b: b_name.to_string(),
        aligned: 0,
        differing: 0,
        first: None,
        differences: Vec::new(),
        only_in_a_count: 0,
        only_in_b_count: 0,
        only_in_a: Vec::new(),
        only_in_b: Vec::new(),
    };
    let (ma, mb) = (by_vcpu(a), by_vcpu(b));
    let empty = Vec::new();
    let vcpus: std::collections::BTreeSet<u32> = ma.keys().chain(mb.keys()).copied().collect();
    for v in vcpus {
        let xa = ma.get(&v).unwrap_or(&empty);
        let xb = mb.get(&v).unwrap_or(&empty);
        let (mut i, mut j) = (0, 0);
        let only = |rep: &mut DiffReport, side_a: bool, r: &Record| {
            let u = Unaligned {
                vcpu: r.vcpu,
                seq: r.seq,
                event: describe_event(&r.event),
            };
            if side_a {
                rep.only_in_a_count += 1;
                if rep.only_in_a.len() < KEEP {
                    rep.only_in_a.push(u);
                }
            } else {
                rep.only_in_b_count += 1;
                if rep.only_in_b.len() < KEEP {
                    rep.only_in_b.push(u);
                }
            }
        };
        while i < xa.len() && j < xb.len() {
            if xa[i].1 == xb[j].1 {
                let (ra, rb) = (&a[xa[i].0], &b[xb[j].0]);
                rep.aligned += 1;
                if let Some((oa, ob)) = outcome_diff(&ra.event, &rb.event) {
                    rep.differing += 1;
                    let d = OutcomeDiff {
                        vcpu: v,
                        seq_a: ra.seq,
                        seq_b: rb.seq,
                        event: describe_event(&ra.event),
                        a: oa,
                        b: ob,
                        behaviour: Behaviour::of_event(&ra.event),
                    };
                    if rep
                        .first
                        .as_ref()
                        .is_none_or(|f| (d.seq_a, d.seq_b) < (f.seq_a, f.seq_b))
                    {
                        rep.first = Some(d.clone());
                    }
                    if rep.differences.len() < KEEP {
                        rep.differences.push(d);
                    }
                }
                i += 1;
                j += 1;
                continue;
            }
            // Resynchronise on the nearest common action within the window.
            let mut skip = None;
            for d in 1..=WINDOW {
                if i + d < xa.len() && xa[i + d].1 == xb[j].1 {
                    skip = Some((d, 0));
                    break;
                }
                if j + d < xb.len() && xa[i].1 == xb[j + d].1 {
                    skip = Some((0, d));
                    break;
                }
            }
            let (da, db) = skip.unwrap_or((1, 1));
            for k in i..i + da {
                only(&mut rep, true, &a[xa[k].0]);
            }
            for k in j..j + db {
                only(&mut rep, false, &b[xb[k].0]);
            }
            i += da;
            j += db;
        }
        for k in &xa[i..] {
            only(&mut rep, true, &a[k.0]);
        }
        for k in &xb[j..] {
            only(&mut rep, false, &b[k.0]);
        }
    }
    rep.differences.sort_by_key(|d| (d.seq_a, d.seq_b));
    rep
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvmtrace_format::{DecidedBy, MsrOutcome};

    fn rd(seq: u64, vcpu: u32, index: u32, outcome: MsrOutcome) -> Record {
        Record {
            seq,
            vcpu,
            time_ns: seq,
            event: Event::MsrRead {
                index,
                origin: Origin::Guest,
                outcome,
                decided_by: DecidedBy::Kernel,
                capture: None,
            },
        }
    }

    #[test]
    fn aligned_by_action_not_seq() {
        use MsrOutcome::*;
        let a = vec![
            rd(0, 0, 0x10, Value(100)),
            rd(1, 0, 0x1a0, Value(0x1800)),
            rd(2, 1, 0x3a, InjectGp),
            rd(3, 0, 0x401, Value(0)),
        ];
        // B: an extra read on vCPU 0, the vCPUs interleaved differently, a TSC
        // value that differs (volatile) and FEAT_CTL readable.
        let b = vec![
            rd(0, 1, 0x3a, Value(5)),
            rd(1, 0, 0x10, Value(999)),
            rd(2, 0, 0x17a, Value(0)),
            rd(3, 0, 0x1a0, Value(0x1800)),
            rd(4, 0, 0x401, Value(0)),
        ];
        let r = diff("a", &a, "b", &b);
        assert_eq!(r.aligned, 4);
        assert_eq!(r.differing, 1, "{}", r.render(10));
        let f = r.first.unwrap();
        assert_eq!((f.vcpu, f.seq_a, f.seq_b), (1, 2, 0));
        assert_eq!(f.behaviour, Behaviour::FeatCtl);
        assert_eq!(r.only_in_b_count, 1);
        assert_eq!(r.only_in_b[0].seq, 2);
        assert_eq!(r.only_in_a_count, 0);
        assert!(!diff("a", &a, "a", &a).differs());
    }
}
