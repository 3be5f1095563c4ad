//! `kvmtrace diff A B [--json]`: compare two traces (e.g. the same scenario
//! recorded on two hosts or kernels) outcome by outcome, aligned by guest
//! action per vCPU rather than by sequence number, since timing and the
//! interleaving of vCPUs differ between recordings. Exit 0 identical outcomes,
//! 1 differences.

use std::collections::BTreeMap;
use std::io::Write;

use kvmtrace_format::{Event, Record};
use serde::Serialize;
use serde_json::json;

use crate::cli::DiffArgs;
use crate::trace_io::{self, TraceFile};

const KEEP: usize = 100;

/// The guest action of an event, without its outcome: what aligns two traces.
fn action(e: &Event) -> Option<String> {
    Some(match e {
        Event::MsrRead { index, origin, .. } => format!("rdmsr {index:#x} {origin:?}"),
        Event::MsrWrite {
            index,
            value,
            origin,
            ..
        } => format!("wrmsr {index:#x}={value:#x} {origin:?}"),
        Event::Monitor { rip, .. } => format!("monitor {rip:#x}"),
        Event::Mwait { rip, .. } => format!("mwait {rip:#x}"),
        Event::Shutdown { rip, cause, .. } => format!("shutdown {rip:#x} {cause:?}"),
        Event::Reset { .. } => "reset".into(),
        Event::Init { source, .. } => format!("init {source:?}"),
        _ => return None,
    })
}

/// The outcome part, rendered.
fn outcome(e: &Event) -> String {
    use super::text::{msr_outcome, mwait_outcome};
    match e {
        // TSC values differ on every run: compare that the read succeeded.
        Event::MsrRead {
            index: 0x10,
            outcome: kvmtrace_format::MsrOutcome::Value(_),
            ..
        } => "value (tsc)".into(),
        Event::MsrRead { outcome, .. } | Event::MsrWrite { outcome, .. } => msr_outcome(outcome),
        Event::Monitor { outcome, .. } | Event::Mwait { outcome, .. } => {
            mwait_outcome(outcome).to_string()
        }
        Event::Shutdown { then, .. } => format!("{then:?}").to_lowercase(),
        Event::Reset { state, .. } => format!("{state:?}"),
        Event::Init { after, .. } => format!("{after:?}"),
        _ => String::new(),
    }
}

#[derive(Serialize, Clone)]
struct Difference {
    vcpu: u32,
    /// Index of the action in the vCPU's sequence of actions.
    action_index: u64,
    seq_a: Option<u64>,
    seq_b: Option<u64>,
    action: String,
    a: String,
    b: String,
    kind: &'static str,
}

type Actions = BTreeMap<u32, Vec<(u64, String, Event)>>;

fn load(path: &std::path::Path) -> anyhow::Result<(Actions, u64)> {
    let mut t = TraceFile::open(path).map_err(|e| trace_io::explain(path, e))?;
    let mut per: Actions = BTreeMap::new();
    let mut n = 0;
    for rec in t.records() {
        let Record {
            seq, vcpu, event, ..
        } = rec.map_err(|e| trace_io::explain(path, e))?;
        n += 1;
        if let Some(a) = action(&event) {
            per.entry(vcpu).or_default().push((seq, a, event));
        }
    }
    Ok((per, n))
}

pub fn run(args: &DiffArgs, out: &mut dyn Write, _err: &mut dyn Write) -> anyhow::Result<i32> {
    let (a, na) = load(&args.a)?;
    let (b, nb) = load(&args.b)?;
    let mut diffs: Vec<Difference> = Vec::new();
    let mut count = 0u64;
    let (mut outcome_diffs, mut action_diffs) = (0u64, 0u64);
    let mut compared = 0u64;
    let vcpus: std::collections::BTreeSet<u32> = a.keys().chain(b.keys()).copied().collect();
    let empty = Vec::new();
    for v in vcpus {
        let (xa, xb) = (a.get(&v).unwrap_or(&empty), b.get(&v).unwrap_or(&empty));
        let (mut i, mut j) = (0usize, 0usize);
        while i < xa.len() || j < xb.len() {
            let mut push = |d: Difference, count: &mut u64| {
                *count += 1;
                if diffs.len() < KEEP {
                    diffs.push(d);
                }
            };
            match (xa.get(i), xb.get(j)) {
                (Some(ea), Some(eb)) if ea.1 == eb.1 => {
                    compared += 1;
                    let (oa, ob) = (outcome(&ea.2), outcome(&eb.2));
                    if oa != ob {
                        outcome_diffs += 1;
                        push(
                            Difference {
                                vcpu: v,
                                action_index: i as u64,
                                seq_a: Some(ea.0),
                                seq_b: Some(eb.0),
                                action: super::text::describe(&ea.2),
                                a: oa,
                                b: ob,
                                kind: "outcome",
                            },
                            &mut count,
                        );
                    }
                    i += 1;
                    j += 1;
                }
                (ea, eb) => {
                    // The actions part ways: resynchronise on the nearest
                    // action of one side that the other side has next.
                    action_diffs += 1;
                    let skip_a = ea.is_some()
                        && eb.is_some_and(|eb| xa[i..].iter().take(64).any(|x| x.1 == eb.1));
                    let take_a = match (ea, eb) {
                        (Some(ea), None) => Some(ea),
                        (Some(ea), Some(_)) if skip_a => Some(ea),
                        _ => None,
                    };
                    let (d, adv_a) = match (take_a, eb) {
                        (Some(ea), _) => (
                            Difference {
                                vcpu: v,
                                action_index: i as u64,
                                seq_a: Some(ea.0),
                                seq_b: None,
                                action: super::text::describe(&ea.2),
                                a: "present".into(),
                                b: "absent".into(),
                                kind: "only_in_a",
                            },
                            true,
                        ),
                        (None, Some(eb)) => (
                            Difference {
                                vcpu: v,
                                action_index: j as u64,
                                seq_a: None,
                                seq_b: Some(eb.0),
                                action: super::text::describe(&eb.2),
                                a: "absent".into(),
                                b: "present".into(),
                                kind: "only_in_b",
                            },
                            false,
                        ),
                        (None, None) => break,
                    };
                    push(d, &mut count);
                    if adv_a {
                        i += 1;
                    } else {
                        j += 1;
                    }
                }
            }
        }
    }
    if args.json {
        super::write_json(
            out,
            &json!({
                "a": args.a.display().to_string(),
                "b": args.b.display().to_string(),
                "events_a": na,
                "events_b": nb,
                "compared": compared,
                "differences": count,
                "outcome_differences": outcome_diffs,
                "action_differences": action_diffs,
                "first": diffs.first(),
                "shown": diffs,
            }),
        )?;
    } else {
        writeln!(
            out,
            "{} ({na} events) vs {} ({nb} events): {compared} actions compared, {outcome_diffs} outcome differences, {action_diffs} unmatched actions",
            args.a.display(),
            args.b.display()
        )?;
        for d in diffs.iter().take(20) {
            writeln!(
                out,
                "  vcpu{} action #{} (seq {} / {}): {}\n      A: {}\n      B: {}",
                d.vcpu,
                d.action_index,
                d.seq_a.map_or("-".into(), |s| s.to_string()),
                d.seq_b.map_or("-".into(), |s| s.to_string()),
                d.action,
                d.a,
                d.b
            )?;
        }
        if count > 20 {
            writeln!(out, "  ... {} more", count - 20)?;
        }
    }
    Ok(if count > 0 { 1 } else { 0 })
}
