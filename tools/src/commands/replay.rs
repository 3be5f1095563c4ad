//! `kvmtrace replay FILE --policy P [--policy Q ...] [--json] [--salvage-ok]
//! [--threads N]`: exit 0 no divergence, 1 divergence, 2 bad input.

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use kvmtrace_replayer::Policy;
use serde_json::{Value, json};

use crate::cli::ReplayArgs;
use crate::replay_core::{self, PolicyReport};
use crate::trace_io::{self, TraceFile};

/// One replay's result: the DESIGN.md JSON document and whether any policy
/// diverged.
pub struct ReplayResult {
    pub events: u64,
    pub reports: Vec<PolicyReport>,
    /// Where the readable prefix ended (`--salvage-ok` on a damaged trace).
    pub damage: Option<String>,
}

impl ReplayResult {
    pub fn diverged(&self) -> bool {
        self.reports.iter().any(|r| r.divergences > 0)
    }
}

pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Replay `file` against `policies` (preset names, `host`, policy files).
pub fn replay_file(
    file: &Path,
    policies: &[String],
    salvage_ok: bool,
    threads: Option<usize>,
) -> anyhow::Result<ReplayResult> {
    let mut t = if salvage_ok {
        TraceFile::open_prefix(file)?
    } else {
        TraceFile::open(file).map_err(|e| trace_io::explain(file, e))?
    };
    let header = t.header().clone();
    let resolved = policies
        .iter()
        .map(|p| Policy::resolve(p, &header))
        .collect::<Result<Vec<_>, _>>()?;
    let total = t.summary().events;
    let threads = threads.unwrap_or_else(default_threads);
    let damage = t.damage.clone();
    let (events, reports) = replay_core::replay(&header, t.records(), resolved, threads, total)
        .map_err(|e| {
            if salvage_ok {
                e
            } else {
                trace_io::explain(file, e)
            }
        })?;
    Ok(ReplayResult {
        events,
        reports,
        damage,
    })
}

pub fn to_json(file: &Path, r: &ReplayResult) -> Value {
    json!({
        "trace": file.display().to_string(),
        "events": r.events,
        "damage": r.damage,
        "policies": r.reports,
    })
}

pub fn to_human(file: &Path, r: &ReplayResult) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "trace {}: {} events", file.display(), r.events);
    if let Some(d) = &r.damage {
        let _ = writeln!(s, "(readable prefix only: {d})");
    }
    let w = r
        .reports
        .iter()
        .map(|p| p.name.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let _ = writeln!(
        s,
        "{:w$}  {:>11}  {:>6}  {:>10}  {:>9}  {:>8}  {:>9}  by behaviour",
        "policy", "divergences", "direct", "consequent", "agreement", "coverage", "unmodeled"
    );
    for p in &r.reports {
        let by: Vec<String> = p
            .by_behaviour
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(b, n)| format!("{b}={n}"))
            .collect();
        let _ = writeln!(
            s,
            "{:w$}  {:>11}  {:>6}  {:>10}  {:>9.4}  {:>8.4}  {:>9}  {}",
            p.name,
            p.divergences,
            p.direct,
            p.consequent,
            p.agreement,
            p.coverage,
            p.unmodeled,
            if by.is_empty() {
                "-".to_string()
            } else {
                by.join(" ")
            }
        );
    }
    for p in &r.reports {
        if p.list.is_empty() {
            continue;
        }
        let _ = writeln!(s, "\n{}: first divergences", p.name);
        for d in p.list.iter().take(5) {
            let _ = writeln!(
                s,
                "  #{} vcpu{} [{}] {}\n      recorded {}, {} says {} (rule {}){}",
                d.seq,
                d.vcpu,
                d.behaviour,
                d.event,
                d.recorded,
                p.name,
                d.policy,
                d.rule,
                match d.caused_by {
                    Some(c) => format!(", consequent of #{c}"),
                    None => ", direct".into(),
                }
            );
        }
        if p.divergences > 5 {
            let _ = writeln!(
                s,
                "  ... {} more (--json lists up to {})",
                p.divergences - 5,
                replay_core::KEEP_DIVERGENCES
            );
        }
    }
    s
}

pub fn run(args: &ReplayArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<i32> {
    let r = replay_file(&args.file, &args.policies, args.salvage_ok, args.threads)?;
    if let Some(d) = &r.damage {
        writeln!(
            err,
            "warning: replaying the readable prefix ({} events) of a damaged trace: {d}",
            r.events
        )?;
    }
    if args.json {
        super::write_json(out, &to_json(&args.file, &r))?;
    } else {
        out.write_all(to_human(&args.file, &r).as_bytes())?;
    }
    Ok(if r.diverged() { 1 } else { 0 })
}

/// `replay_events_per_s` (one policy) and `replay_n_policies_ratio` (8 / 1).
pub fn bench(dir: &Path, events: u64) -> anyhow::Result<Value> {
    let path = dir.join("replay-msr-loop.kvt");
    super::bench::synth_file(&path, crate::cli::Pattern::MsrLoop, events, 2)?;
    let one = vec!["host".to_string()];
    let eight: Vec<String> = [
        "kvm-5.10", "kvm-5.15", "kvm-5.19", "kvm-6.0", "kvm-6.2", "kvm-6.18", "host", "kvm-6.18",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Single core, as the targets are stated.
    let t = std::time::Instant::now();
    replay_file(&path, &one, false, Some(1))?;
    let t1 = t.elapsed().as_secs_f64().max(1e-9);
    let t = std::time::Instant::now();
    replay_file(&path, &eight, false, Some(1))?;
    let t8 = t.elapsed().as_secs_f64().max(1e-9);
    Ok(json!({
        "replay_events_per_s": events as f64 / t1,
        "replay_n_policies_ratio": t8 / t1,
        "replay_n_policies": 8,
    }))
}
