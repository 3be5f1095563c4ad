//! `kvmtrace fidelity FILE... [--json]`: agreement of `host` and every preset with
//! the kernel-decided outcomes in the given traces, as a behaviour × policy table.
//!
//! Only outcomes the kernel decided (observe mode, import, state read back) are
//! scored: VMM-decided ones are a policy's own answers, not a measurement.
//! `agreement` = matching / modelled, `coverage` = modelled / all (DESIGN.md,
//! Policies). Rows are the replayer's behaviours (`replay`'s `by_behaviour`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use kvmtrace_format::{DecidedBy, Event, Record, TraceHeader};
use kvmtrace_replayer::Replay;
use kvmtrace_replayer::msr_class::{ClassCell, ClassTally, Counts, MsrClass};
use kvmtrace_replayer::policy::Policy;
use kvmtrace_replayer::replay::Selection;
use kvmtrace_replayer::report::{Behaviour, Tally};

#[derive(Debug, Clone, clap::Args)]
pub struct FidelityArgs {
    #[arg(required = true)]
    pub traces: Vec<PathBuf>,
    #[arg(long)]
    pub json: bool,
    /// Policies to score (default: `host` and every preset).
    #[arg(long = "policy")]
    pub policies: Vec<String>,
    /// Also list `host`'s unmodeled kernel-decided outcomes by kind over all
    /// traces (every policy's with --json), most frequent first.
    #[arg(long)]
    pub unmodeled: bool,
}

/// The behaviour an event counts under: the replayer's classification, so
/// fidelity rows and `replay`'s `by_behaviour` name the same things.
pub fn behaviour(e: &Event) -> &'static str {
    Behaviour::of_event(e).name()
}

fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// Counts for one (policy, behaviour) cell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cell {
    /// Agree = matching, disagree = direct divergences (the policy's own rule
    /// disagrees with the kernel), unmodeled.
    pub counts: Counts,
    /// Divergences that follow from an earlier one (the policy's state
    /// differs from the guest's): not scored.
    pub consequent: u64,
    /// After the policy ended the guest: not scored.
    pub unreachable: u64,
}

impl Cell {
    fn of(t: &Tally) -> Cell {
        Cell {
            counts: Counts {
                agree: t.agree,
                disagree: t.direct,
                unmodeled: t.unmodeled,
            },
            consequent: t.consequent,
            unreachable: t.unreachable,
        }
    }
    fn merge(&mut self, o: &Cell) {
        self.counts.merge(&o.counts);
        self.consequent += o.consequent;
        self.unreachable += o.unreachable;
    }
}

/// A policy's scores over all traces.
#[derive(Clone, Debug, Default)]
pub struct PolicyScore {
    pub name: String,
    pub total: Cell,
    pub by_behaviour: BTreeMap<&'static str, Cell>,
    /// Disagreements grouped by (behaviour, what: "rdmsr 0x3a", "mwait", ...),
    /// with the first example; at most `MAX_GROUPS` groups.
    pub disagreements: BTreeMap<(&'static str, String), Group>,
    /// Kernel-decided MSR outcomes by MSR class (closed loop, `msr_class`).
    pub by_class: [ClassCell; 7],
    /// Unmodeled kernel-decided outcomes by kind (`report::unmodeled_kind`):
    /// count and the first (trace, seq); only with `--unmodeled`.
    pub unmodeled: BTreeMap<String, (u64, String)>,
}

/// An empty score for each policy name, in order.
fn empty_scores<'a>(names: impl IntoIterator<Item = &'a String>) -> Vec<PolicyScore> {
    names
        .into_iter()
        .map(|name| PolicyScore {
            name: name.clone(),
            ..Default::default()
        })
        .collect()
}

/// One group of disagreements.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub count: u64,
    pub rule: String,
    pub predicted: serde_json::Value,
    pub recorded: serde_json::Value,
    pub first_seq: u64,
}

/// Disagreement groups kept per policy (counts stay exact in the cells).
pub const MAX_GROUPS: usize = 256;

/// What a disagreement is about, for grouping.
fn what(e: &Event) -> String {
    match e {
        Event::MsrRead { index, .. } => format!("rdmsr {index:#x}"),
        Event::MsrWrite { index, .. } => format!("wrmsr {index:#x}"),
        other => other.kind().name().to_string(),
    }
}

/// Score `policies` over one trace's records (any iterator: bounded memory).
///
/// The replayer's engine (`kvmtrace_replayer::Replay`, the same as `replay`,
/// `export --policy`, `demo` and `corpus`) replays the trace open-loop; only
/// kernel-decided outcomes are scored: VMM-decided ones are a policy's own
/// answers, not a measurement. A consequent divergence (the policy's state
/// already differs) and an event after the policy ended the guest are counted
/// apart, outside agreement and coverage.
pub fn score_trace<E: std::fmt::Display>(
    header: &TraceHeader,
    records: impl Iterator<Item = Result<Record, E>>,
    policies: &[String],
    scores: &mut [PolicyScore],
    unmodeled: Option<&str>,
) -> anyhow::Result<()> {
    let mut resolved = Vec::with_capacity(policies.len());
    for p in policies {
        resolved.push(Policy::resolve(p, header).map_err(|e| anyhow::anyhow!("policy {p}: {e}"))?);
    }
    let mut replay = Replay::new(header, resolved)
        .sequential()
        .with_kernel_tally()
        .with_selection(Selection {
            keep: 0,
            stream: true,
            direct_only: true,
            unmodeled_kinds: unmodeled.is_some(),
            ..Selection::default()
        });
    let mut classes: Vec<ClassTally> = policies
        .iter()
        .map(|p| Policy::resolve(p, header).map(|p| ClassTally::new(p, header)))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut batch = Vec::with_capacity(BATCH);
    let mut records = records;
    loop {
        crate::trace_io::next_batch(&mut records, &mut batch, BATCH, |e| anyhow::anyhow!("{e}"))?;
        if batch.is_empty() {
            break;
        }
        replay.feed(&batch);
        // A policy script failed: its scores would be wrong (exit 2).
        if let Some(e) = replay.hook_error() {
            anyhow::bail!("{e}");
        }
        for c in classes.iter_mut() {
            for rec in &batch {
                c.feed(rec);
            }
        }
        for s in replay.take_stream() {
            let rec = &batch[s.position];
            let d = &s.divergence;
            if d.decided_by != Some(DecidedBy::Kernel) {
                continue;
            }
            let score = &mut scores[s.policy];
            let key = (d.behaviour.name(), what(&rec.event));
            let full = score.disagreements.len() >= MAX_GROUPS;
            match score.disagreements.get_mut(&key) {
                Some(g) => g.count += 1,
                None if !full => {
                    score.disagreements.insert(
                        key,
                        Group {
                            count: 1,
                            rule: d.rule.name.clone(),
                            predicted: json(&d.policy),
                            recorded: json(&d.recorded),
                            first_seq: rec.seq,
                        },
                    );
                }
                None => {}
            }
        }
    }
    for (score, c) in scores.iter_mut().zip(&classes) {
        for (a, b) in score.by_class.iter_mut().zip(&c.cells) {
            a.merge(b);
        }
    }
    let report = replay.finish();
    if let Some(trace) = unmodeled {
        for (score, p) in scores.iter_mut().zip(&report.policies) {
            // Kernel-decided outcomes only, as everything fidelity scores.
            for k in p
                .unmodeled_kinds
                .iter()
                .filter(|k| !k.what.ends_with(VMM_DECIDED))
            {
                let e = score
                    .unmodeled
                    .entry(k.what.clone())
                    .or_insert_with(|| (0, format!("{trace} #{}", k.first_seq)));
                e.0 += k.count;
            }
        }
    }
    for (score, p) in scores.iter_mut().zip(&report.policies) {
        for (b, t) in Behaviour::ALL.iter().zip(&p.kernel_decided) {
            let c = Cell::of(t);
            if c.counts.total() + c.consequent + c.unreachable == 0 {
                continue;
            }
            score.total.merge(&c);
            score.by_behaviour.entry(b.name()).or_default().merge(&c);
        }
    }
    Ok(())
}

/// Unmodeled kinds listed over all traces (the rest counted together).
const MAX_UNMODELED_KINDS: usize = 4096;
const OTHER_KINDS: &str = "(other kinds, past the listing's bound)";

/// How `report::unmodeled_kind` marks an outcome the VMM decided.
const VMM_DECIDED: &str = " (the VMM decided)";

/// Records fed to the replay per batch.
const BATCH: usize = 1 << 14;

/// `host` first, then the preset of every release where a rule changes.
pub fn default_policies() -> Vec<String> {
    let mut v = vec!["host".to_string()];
    v.extend(
        Policy::milestone_names()
            .into_iter()
            .filter(|p| p != "host"),
    );
    v
}

fn pct(x: Option<f64>) -> String {
    x.map(|v| format!("{:.1}%", v * 100.0))
        .unwrap_or_else(|| "-".into())
}

/// The behaviour × policy table, human form.
pub fn write_table(out: &mut dyn Write, scores: &[PolicyScore]) -> std::io::Result<()> {
    let mut behaviours: Vec<&'static str> = scores
        .iter()
        .flat_map(|s| s.by_behaviour.keys().copied())
        .collect();
    behaviours.sort_unstable();
    behaviours.dedup();
    write!(out, "{:<14}", "behaviour")?;
    for s in scores {
        write!(out, " {:>19}", s.name)?;
    }
    writeln!(out)?;
    let row = |out: &mut dyn Write, name: &str, cells: Vec<Cell>| -> std::io::Result<()> {
        write!(out, "{name:<14}")?;
        for c in cells {
            write_counts(out, &c.counts)?;
        }
        writeln!(out)
    };
    for b in &behaviours {
        let cells = scores
            .iter()
            .map(|s| s.by_behaviour.get(b).copied().unwrap_or_default())
            .collect();
        row(out, b, cells)?;
    }
    row(out, "ALL", scores.iter().map(|s| s.total).collect())?;
    writeln!(
        out,
        "(agreement = matching / modelled kernel-decided outcomes; cov = modelled / all; consequent divergences and events after a policy ended the guest are outside both)"
    )?;
    write_class_table(out, scores)
}

/// The MSR class × policy table (closed loop: each outcome predicted from the
/// recorded guest's state), with the outcomes that rested on unseen CPUID.
pub fn write_class_table(out: &mut dyn Write, scores: &[PolicyScore]) -> std::io::Result<()> {
    if scores
        .iter()
        .all(|s| s.by_class.iter().all(|c| c.counts.total() == 0))
    {
        return Ok(());
    }
    writeln!(out)?;
    write!(out, "{:<14}", "MSR class")?;
    for s in scores {
        write!(out, " {:>19}", s.name)?;
    }
    writeln!(out, " {:>9}", "outcomes")?;
    for (i, class) in MsrClass::ALL.iter().enumerate() {
        let n = scores.first().map_or(0, |s| s.by_class[i].counts.total());
        if n == 0 {
            continue;
        }
        write!(out, "{:<14}", class.name())?;
        for s in scores {
            write_counts(out, &s.by_class[i].counts)?;
        }
        writeln!(out, " {n:>9}")?;
    }
    write!(out, "{:<14}", "unseen CPUID")?;
    for s in scores {
        let n: u64 = s.by_class.iter().map(|c| c.unseen_cpuid).sum();
        write!(out, " {n:>19}")?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "(MSR outcomes by class, closed loop; unseen CPUID = unmodeled outcomes whose rule needs a CPUID leaf the trace has not shown)"
    )
}

/// One cell of a text table: agreement and coverage.
fn write_counts(out: &mut dyn Write, c: &Counts) -> std::io::Result<()> {
    write!(
        out,
        " {:>8} cov {:>6}",
        pct(c.agreement()),
        pct(c.coverage())
    )
}

/// The JSON of the counts a cell has, with `extra` counts of its own.
fn counts_json(c: &Counts, extra: &[(&str, u64)]) -> serde_json::Value {
    let mut v = serde_json::json!({
        "agreement": c.agreement(),
        "coverage": c.coverage(),
        "agree": c.agree,
        "disagree": c.disagree,
        "unmodeled": c.unmodeled,
        "outcomes": c.total(),
    });
    for (k, n) in extra {
        v[*k] = (*n).into();
    }
    v
}

fn class_json(c: &ClassCell) -> serde_json::Value {
    counts_json(&c.counts, &[("unseen_cpuid", c.unseen_cpuid)])
}

fn cell_json(c: &Cell) -> serde_json::Value {
    counts_json(
        &c.counts,
        &[("consequent", c.consequent), ("unreachable", c.unreachable)],
    )
}

/// The JSON document of `fidelity --json`.
pub fn to_json(traces: &[String], scores: &[PolicyScore]) -> serde_json::Value {
    let policies: Vec<_> = scores
        .iter()
        .map(|s| {
            let mut v = cell_json(&s.total);
            v["name"] = serde_json::json!(s.name);
            v["by_behaviour"] = s
                .by_behaviour
                .iter()
                .map(|(b, c)| ((*b).to_string(), cell_json(c)))
                .collect::<serde_json::Map<_, _>>()
                .into();
            v["by_msr_class"] = MsrClass::ALL
                .iter()
                .zip(&s.by_class)
                .map(|(k, c)| (k.name().to_string(), class_json(c)))
                .collect::<serde_json::Map<_, _>>()
                .into();
            v["unseen_cpuid"] = s
                .by_class
                .iter()
                .map(|c| c.unseen_cpuid)
                .sum::<u64>()
                .into();
            if !s.unmodeled.is_empty() {
                v["unmodeled_kinds"] = s
                    .unmodeled
                    .iter()
                    .map(|(w, (count, first))| {
                        serde_json::json!({ "what": w, "count": count, "first": first })
                    })
                    .collect::<Vec<_>>()
                    .into();
            }
            v["disagreements"] = s
                .disagreements
                .iter()
                .map(|((b, w), g)| {
                    serde_json::json!({
                        "behaviour": b, "what": w, "count": g.count, "rule": g.rule,
                        "predicted": g.predicted, "recorded": g.recorded,
                        "first_seq": g.first_seq,
                    })
                })
                .collect::<Vec<_>>()
                .into();
            v
        })
        .collect();
    serde_json::json!({ "traces": traces, "policies": policies })
}

pub fn run(args: &FidelityArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<i32> {
    let policies = if args.policies.is_empty() {
        default_policies()
    } else {
        args.policies.clone()
    };
    let mut scores = empty_scores(&policies);
    let mut names = Vec::new();
    for path in &args.traces {
        let mut reader = crate::export::open_trace(path)?;
        let header = reader.header().clone();
        let mut per_trace = empty_scores(scores.iter().map(|s| &s.name));
        let trace = path.display().to_string();
        let kinds = args.unmodeled.then_some(trace.as_str());
        score_trace(&header, reader.records(), &policies, &mut per_trace, kinds)?;
        if per_trace.iter().all(|s| s.total.counts.total() == 0) {
            writeln!(
                err,
                "warning: {}: no kernel-decided outcomes (capture mode {:?}): nothing to score",
                path.display(),
                header.capture.mode
            )?;
        }
        for (s, t) in scores.iter_mut().zip(per_trace) {
            s.total.merge(&t.total);
            for (b, c) in &t.by_behaviour {
                s.by_behaviour.entry(b).or_default().merge(c);
            }
            for (a, b) in s.by_class.iter_mut().zip(&t.by_class) {
                a.merge(b);
            }
            for (what, (count, first)) in t.unmodeled {
                let full = s.unmodeled.len() >= MAX_UNMODELED_KINDS;
                match s.unmodeled.get_mut(&what) {
                    Some(e) => e.0 += count,
                    None if !full => {
                        s.unmodeled.insert(what, (count, first));
                    }
                    None => {
                        s.unmodeled
                            .entry(OTHER_KINDS.to_string())
                            .or_insert((0, first))
                            .0 += count;
                    }
                }
            }
            for (k, g) in t.disagreements {
                let full = s.disagreements.len() >= MAX_GROUPS;
                match s.disagreements.get_mut(&k) {
                    Some(e) => e.count += g.count,
                    None if !full => {
                        s.disagreements.insert(k, g);
                    }
                    None => {}
                }
            }
        }
        names.push(path.display().to_string());
    }
    if args.json {
        serde_json::to_writer(&mut *out, &to_json(&names, &scores))?;
        writeln!(out)?;
    } else {
        write_table(out, &scores)?;
        // The model to fix first: `host`'s disagreements (others with --json).
        if let Some(host) = scores.iter().find(|s| s.name == "host")
            && !host.disagreements.is_empty()
        {
            writeln!(
                out,
                "\nhost disagreements (behaviour, access: count, predicted vs recorded, rule):"
            )?;
            for ((b, w), g) in &host.disagreements {
                writeln!(
                    out,
                    "  {b:<11} {w:<18} x{:<5} predicted {} recorded {} ({}; first seq {})",
                    g.count, g.predicted, g.recorded, g.rule, g.first_seq
                )?;
            }
        }
        if args.unmodeled
            && let Some(host) = scores.iter().find(|s| s.name == "host")
        {
            write_unmodeled(out, host)?;
        }
    }
    Ok(0)
}

/// The most frequent unmodeled kinds of one policy (a bounded listing).
fn write_unmodeled(out: &mut dyn Write, score: &PolicyScore) -> std::io::Result<()> {
    const SHOWN: usize = 40;
    let mut kinds: Vec<(&String, &(u64, String))> = score.unmodeled.iter().collect();
    kinds.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(b.0)));
    let total: u64 = kinds.iter().map(|k| k.1.0).sum();
    writeln!(
        out,
        "\n{} unmodeled kernel-decided outcomes by kind ({total} outcomes, {} kinds; most frequent first):",
        score.name,
        kinds.len()
    )?;
    for (what, (count, first)) in kinds.iter().take(SHOWN) {
        writeln!(out, "  {count:>8}  {what}  (first: {first})")?;
    }
    if kinds.len() > SHOWN {
        writeln!(
            out,
            "  ... {} more kinds (--json lists all)",
            kinds.len() - SHOWN
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use kvmtrace_format::{MsrOutcome, Origin};

    use super::*;

    fn scored(recs: &[Record], policies: &[String], kinds: Option<&str>) -> Vec<PolicyScore> {
        let mut scores = empty_scores(policies);
        let records = recs.iter().map(|r| Ok::<_, String>(r.clone()));
        score_trace(
            &TraceHeader::default(),
            records,
            policies,
            &mut scores,
            kinds,
        )
        .unwrap();
        scores
    }

    #[test]
    fn only_kernel_decided_outcomes_are_scored() {
        let rec = |decided_by| Record {
            seq: 0,
            vcpu: 0,
            time_ns: 0,
            event: Event::MsrRead {
                index: 0x3a,
                origin: Origin::Guest,
                outcome: MsrOutcome::InjectGp,
                decided_by,
                capture: None,
            },
        };
        let recs = [
            rec(DecidedBy::Kernel),
            rec(DecidedBy::Vmm),
            rec(DecidedBy::Kernel),
        ];
        let policies = default_policies();
        assert_eq!(policies[0], "host");
        let scores = scored(&recs, &policies, None);
        for s in &scores {
            assert_eq!(s.total.counts.total(), 2, "{}", s.name);
            assert_eq!(s.by_behaviour["feat_ctl"].counts.total(), 2);
            // SEMANTICS.md §3: no kernel's FEAT_CTL read without VMX... every
            // preset models 0x3a, so these outcomes are modelled.
            assert_eq!(s.total.counts.unmodeled, 0, "{}", s.name);
        }
        let doc = to_json(&["t.kvt".into()], &scores);
        assert_eq!(doc["policies"][0]["name"], "host");
        assert_eq!(doc["policies"][0]["outcomes"], 2);
        let mut table = Vec::new();
        write_table(&mut table, &scores).unwrap();
        let table = String::from_utf8(table).unwrap();
        assert!(table.contains("feat_ctl"), "{table}");
    }

    /// `--unmodeled`: kernel-decided unmodeled outcomes by kind, with the
    /// first trace and seq; the VMM's answers are not listed.
    #[test]
    fn unmodeled_kinds_list_kernel_decided_outcomes_only() {
        let rec = |seq, decided_by| Record {
            seq,
            vcpu: 0,
            time_ns: seq,
            event: Event::MsrRead {
                index: 0x1234,
                origin: Origin::Guest,
                outcome: MsrOutcome::InjectGp,
                decided_by,
                capture: None,
            },
        };
        let recs = [
            rec(0, DecidedBy::Vmm),
            rec(1, DecidedBy::Kernel),
            rec(2, DecidedBy::Kernel),
        ];
        let scores = scored(&recs, &["host".to_string()], Some("t.kvt"));
        let got: Vec<_> = scores[0].unmodeled.iter().collect();
        assert_eq!(
            got,
            vec![(
                &"guest RDMSR MSR 0x1234 -> #GP".to_string(),
                &(2, "t.kvt #1".to_string())
            )]
        );
        let mut text = Vec::new();
        write_unmodeled(&mut text, &scores[0]).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("(2 outcomes, 1 kinds"), "{text}");
    }

    #[test]
    fn behaviours() {
        for (index, want) in [
            (0x3a, "feat_ctl"),
            (0x401, "mce"),
            (0x802, "x2apic"),
            (0x1a0, "mwait"),
            (0xc000_0080, "other"),
        ] {
            let e = Event::MsrRead {
                index,
                origin: Origin::Guest,
                outcome: MsrOutcome::Ok,
                decided_by: DecidedBy::Kernel,
                capture: None,
            };
            assert_eq!(behaviour(&e), want, "{index:#x}");
        }
    }
}
