//! `kvmtrace replay FILE --policy P [--policy Q ...] [--json] [--salvage-ok]
//! [--threads N]`: exit 0 no divergence, 1 divergence, 2 bad input.
//!
//! The replay itself is `kvmtrace_replayer::Replay` (one pass, one lane per
//! policy); this command decodes the trace batch by batch, feeds it, and
//! prints the report. Lanes run on a pool of `--threads` threads; the output
//! does not depend on the count.

use std::io::Write;
use std::path::Path;

use kvmtrace_replayer::replay::Selection;
use kvmtrace_replayer::report::Behaviour;
use kvmtrace_replayer::{Divergence, Policy, Replay, ReplayReport};
use serde_json::{Value, json};

use crate::cli::ReplayArgs;
use crate::trace_io::{self, TraceFile};

/// Records decoded and fed per batch (bounded memory on any trace size).
const BATCH: usize = 1 << 16;

/// One replay's result.
pub struct ReplayResult {
    pub report: ReplayReport,
    /// Where the readable prefix ended (`--salvage-ok` on a damaged trace).
    pub damage: Option<String>,
    /// How policies were resolved (distribution kernel mapped to mainline,
    /// vendor guessed), one line each.
    pub notes: Vec<String>,
}

impl ReplayResult {
    pub fn diverged(&self) -> bool {
        self.report.diverged()
    }

    pub fn events(&self) -> u64 {
        self.report.events
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
    replay_file_with(
        file,
        policies,
        salvage_ok,
        threads,
        Selection::default(),
        &mut |_, _| Ok(()),
    )
}

/// [`replay_file`] with a selection of divergences; with `sel.stream`, every
/// selected divergence goes to `each(policy index, divergence)` in trace order
/// as the replay reaches it (bounded memory on any trace).
pub fn replay_file_with(
    file: &Path,
    policies: &[String],
    salvage_ok: bool,
    threads: Option<usize>,
    sel: Selection,
    each: &mut dyn FnMut(usize, Divergence) -> anyhow::Result<()>,
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
    let mut notes: Vec<String> = Vec::new();
    for p in &resolved {
        for n in &p.notes {
            let line = format!("{}: {n}", p.name);
            if !notes.contains(&line) {
                notes.push(line);
            }
        }
    }
    let threads = threads.unwrap_or_else(default_threads).max(1);
    let total = t.summary().events;
    let damage = t.damage.clone();
    let stream = sel.stream;
    let mut replay = Replay::new(&header, resolved)
        .with_trace_name(file.display().to_string())
        .with_selection(sel);
    if threads == 1 {
        replay = replay.sequential();
    }
    // One thread: no pool at all (lanes run on this thread).
    let pool = if threads > 1 {
        Some(
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()?,
        )
    } else {
        None
    };
    let pb = crate::progress::bar(total, "events");
    let mut batch = Vec::with_capacity(BATCH.min(total as usize + 1));
    let mut records = t.records();
    loop {
        trace_io::next_batch(&mut records, &mut batch, BATCH, |e| {
            if salvage_ok {
                e
            } else {
                trace_io::explain(file, e)
            }
        })?;
        if batch.is_empty() {
            break;
        }
        match &pool {
            Some(p) => p.install(|| replay.feed(&batch)),
            None => replay.feed(&batch),
        }
        // A policy hook (script) failed: that policy's report would be wrong.
        if let Some(e) = replay.hook_error() {
            pb.finish_and_clear();
            anyhow::bail!("{e} (replaying {})", file.display());
        }
        if stream {
            for s in replay.take_stream() {
                each(s.policy, s.divergence)?;
            }
        }
        pb.inc(batch.len() as u64);
    }
    pb.finish_and_clear();
    Ok(ReplayResult {
        report: replay.finish(),
        damage,
        notes,
    })
}

pub fn to_json(r: &ReplayResult) -> anyhow::Result<Value> {
    let mut v = serde_json::to_value(&r.report)?;
    if let Some(d) = &r.damage {
        v["damage"] = json!(d);
    }
    Ok(v)
}

/// The selection `replay`'s flags ask for.
fn selection(args: &ReplayArgs) -> anyhow::Result<Selection> {
    let behaviour = match &args.behaviour {
        None => None,
        Some(b) => Some(
            Behaviour::ALL
                .iter()
                .copied()
                .find(|x| x.name() == b)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--behaviour {b:?}: expected one of {}",
                        Behaviour::ALL.map(|x| x.name()).join(", ")
                    )
                })?,
        ),
    };
    let limit = match args.limit {
        Some(0) => usize::MAX,
        Some(n) => n,
        None if args.json => usize::MAX,
        None => 5,
    };
    Ok(Selection {
        // JSON streams every selected divergence; the human report keeps
        // the first `limit` of each policy.
        keep: if args.json { 0 } else { limit },
        direct_only: args.direct_only,
        behaviour,
        vcpu: args.vcpu,
        stream: args.json,
        unmodeled_kinds: args.unmodeled,
    })
}

/// The trace's configuration source (the header was read once already by the
/// replay; a file that fails here failed there first).
fn config_source(file: &Path) -> kvmtrace_format::ConfigSource {
    kvmtrace_format::TraceReader::open(file)
        .map(|r| r.header().config_source.clone())
        .unwrap_or_default()
}

pub fn run(args: &ReplayArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<i32> {
    let sel = selection(args)?;
    for p in &args.policies {
        // Say how a policy was read before the (possibly long) replay.
        if let Ok(t) = TraceFile::open(&args.file)
            && let Ok(pol) = Policy::resolve(p, t.header())
        {
            for n in &pol.notes {
                writeln!(err, "note: {}: {n}", pol.name)?;
            }
        }
    }
    let limit = match args.limit {
        Some(0) | None => usize::MAX,
        Some(n) => n,
    };
    let r = if args.json {
        // One JSON document; the divergences are streamed as the replay
        // reaches them, one a line, the summaries follow.
        write!(
            out,
            "{{\n  \"trace\": {},\n  \"divergences\": [",
            serde_json::to_string(&args.file.display().to_string())?
        )?;
        let mut written = vec![0usize; args.policies.len()];
        let mut first = true;
        let names: Vec<String> = args.policies.clone();
        let r = replay_file_with(
            &args.file,
            &args.policies,
            args.salvage_ok,
            args.threads.map(|t| t as usize),
            sel,
            &mut |pi, d| {
                if written[pi] >= limit {
                    return Ok(());
                }
                written[pi] += 1;
                let mut v = serde_json::to_value(&d)?;
                v["policy"] = json!(names[pi]);
                write!(out, "{}\n    ", if first { "" } else { "," })?;
                first = false;
                serde_json::to_writer(&mut *out, &v)?;
                Ok(())
            },
        )?;
        let mut rest = to_json(&r)?;
        let policies = rest["policies"].take();
        writeln!(out, "\n  ],")?;
        writeln!(out, "  \"events\": {},", r.events())?;
        if let Some(d) = &r.damage {
            writeln!(out, "  \"damage\": {},", serde_json::to_string(d)?)?;
        }
        // Where the VM configuration the policies judged under came from
        // (trace header, format 1.2): `exact` false = every answer rests on
        // an assumed configuration (attach mode, import, tap off).
        let source = config_source(&args.file);
        writeln!(
            out,
            "  \"config\": {{\"exact\": {}, \"source\": {}}},",
            source.is_exact(),
            serde_json::to_string(&source)?
        )?;
        writeln!(out, "  \"policies\": {}", serde_json::to_string(&policies)?)?;
        writeln!(out, "}}")?;
        r
    } else {
        let r = replay_file_with(
            &args.file,
            &args.policies,
            args.salvage_ok,
            args.threads.map(|t| t as usize),
            sel,
            &mut |_, _| Ok(()),
        )?;
        let shown = match args.limit {
            None => 5,
            Some(0) => usize::MAX,
            Some(n) => n,
        };
        out.write_all(r.report.render(shown).as_bytes())?;
        let kinds = match args.limit {
            None => 25,
            Some(0) => usize::MAX,
            Some(n) => n,
        };
        for p in &r.report.policies {
            let text = kvmtrace_replayer::report::render_unmodeled(p, kinds);
            out.write_all(text.as_bytes())?;
        }
        let source = config_source(&args.file);
        if !source.is_exact() {
            writeln!(
                out,
                "note: VM configuration {}: every answer above rests on an assumed \
                 configuration (no quirks disabled, no MSR filter, no user-space MSR exits, \
                 CPUID as the trace shows it)",
                source.describe()
            )?;
        }
        r
    };
    if let Some(d) = &r.damage {
        writeln!(
            err,
            "warning: replayed only the readable prefix ({} events) of a damaged trace: {d}",
            r.events()
        )?;
    }
    Ok(if r.diverged() { 1 } else { 0 })
}

/// The replay figures, on a trace whose every event every policy decides
/// ([`write_modelled`]): `replay_events_per_s` (one policy, decode included)
/// and `replay_n_policies_ratio` (8 distinct policies / 1, one pass); each
/// figure's JSON names the trace and the policies. msr-loop (TSC reads no
/// policy models: every lane skips them) is kept as
/// `replay_unmodelled_events_per_s`, which times decoding.
pub fn bench(dir: &Path, events: u64) -> anyhow::Result<Value> {
    let mpath = dir.join("replay-modelled.kvt");
    write_modelled(&mpath, events)?;
    let header = TraceFile::open(&mpath)?.header().clone();
    let eight = distinct_policies(&header, 8)?;
    let one = vec!["host".to_string()];
    let (t1, t8) = time_one_and_n(&mpath, &one, &eight)?;
    let unmodelled_events = events.min(5_000_000);
    let path = dir.join("replay-msr-loop.kvt");
    super::bench::synth_file(&path, crate::cli::Pattern::MsrLoop, unmodelled_events, 2)?;
    let (u1, _) = time_one_and_n(&path, &one, &one)?;
    let trace = format!(
        "synthetic kvm_pvm 6.18 trace of {events} events, guest MISC_ENABLE reads and MC0_STATUS writes of 0 alternating: every event decided by every policy"
    );
    Ok(json!({
        "replay_events_per_s": events as f64 / t1,
        "replay_n_policies_ratio": t8 / t1,
        "replay_n_policies": eight.len(),
        "replay_trace": trace,
        "replay_policy_one": one[0],
        "replay_policies": eight,
        "replay_unmodelled_events_per_s": unmodelled_events as f64 / u1,
        "replay_unmodelled_trace": format!("synth msr-loop {unmodelled_events} events (TSC reads: no policy models them, every lane skips them; a decode figure)"),
    }))
}

/// `n` presets that differ pairwise for `header` (the releases where rules
/// change, newest first, then `host`): distinct lanes, none shared.
pub fn distinct_policies(
    header: &kvmtrace_format::TraceHeader,
    n: usize,
) -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = Policy::milestone_names();
    names.reverse();
    let mut chosen: Vec<(String, Policy)> = Vec::new();
    for name in names {
        let p = Policy::resolve(&name, header)?;
        if chosen.iter().all(|(_, q)| q.first_difference(&p).is_some()) {
            chosen.push((name, p));
        }
        if chosen.len() == n {
            break;
        }
    }
    anyhow::ensure!(chosen.len() == n, "only {} distinct presets", chosen.len());
    Ok(chosen.into_iter().map(|(n, _)| n).collect())
}

/// A `kvm_pvm` 6.18 trace of guest MISC_ENABLE reads (RESET value 1) and
/// MC0_STATUS writes of 0, alternating: every policy decides every event
/// (as `replay_speed`'s `MODELLED=1` in the replayer's examples).
pub(crate) fn write_modelled(path: &Path, events: u64) -> anyhow::Result<()> {
    use kvmtrace_format::{DecidedBy, Event, MsrExitReason, MsrOutcome, Origin, TraceWriter};
    let mut h = kvmtrace_format::TraceHeader::default();
    h.host.kernel_release = "6.18.44".into();
    h.host.kvm_module = "kvm_pvm".into();
    h.vm.vcpus = 1;
    let out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut w = TraceWriter::new(out, &h)?;
    for seq in 0..events {
        let event = if seq % 2 == 0 {
            Event::MsrRead {
                index: 0x1a0,
                origin: Origin::Guest,
                outcome: MsrOutcome::Value(0x1),
                decided_by: DecidedBy::Vmm,
                capture: Some(MsrExitReason::Filter),
            }
        } else {
            Event::MsrWrite {
                index: 0x401,
                value: 0,
                origin: Origin::Guest,
                outcome: MsrOutcome::Ok,
                decided_by: DecidedBy::Vmm,
                capture: Some(MsrExitReason::Filter),
            }
        };
        w.push(&kvmtrace_format::Record {
            seq,
            vcpu: 0,
            time_ns: seq * 3500,
            event,
        })?;
    }
    w.finish()?;
    Ok(())
}

/// Seconds to replay `path` against `one` and against `many` (one core, as
/// the targets are stated; decode included). A warm-up pass, then the best of
/// three of each, alternating, so neither side pays for cold caches or a
/// noisy neighbour alone.
fn time_one_and_n(path: &Path, one: &[String], many: &[String]) -> anyhow::Result<(f64, f64)> {
    replay_file(path, one, false, Some(1))?;
    let (mut t1, mut tn) = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        let t = std::time::Instant::now();
        replay_file(path, one, false, Some(1))?;
        t1 = t1.min(t.elapsed().as_secs_f64().max(1e-9));
        let t = std::time::Instant::now();
        replay_file(path, many, false, Some(1))?;
        tn = tn.min(t.elapsed().as_secs_f64().max(1e-9));
    }
    Ok((t1, tn))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bench's modelled trace is what it claims: every event decided by
    /// every one of its 8 distinct policies (none ends the guest), and no
    /// divergence against the recording's own policy.
    #[test]
    fn modelled_bench_trace_is_fully_modelled_by_8_distinct_policies() {
        let dir = std::env::temp_dir().join(format!("kvmtrace-modelled-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.kvt");
        write_modelled(&path, 1000).unwrap();
        let header = TraceFile::open(&path).unwrap().header().clone();
        let eight = distinct_policies(&header, 8).unwrap();
        let resolved: Vec<Policy> = eight
            .iter()
            .map(|n| Policy::resolve(n, &header).unwrap())
            .collect();
        for (i, a) in resolved.iter().enumerate() {
            for b in &resolved[i + 1..] {
                assert!(a.first_difference(b).is_some(), "{} = {}", a.name, b.name);
            }
        }
        let r8 = replay_file(&path, &eight, false, Some(1)).unwrap();
        for p in &r8.report.policies {
            assert_eq!(p.unmodeled, 0, "{}", p.name);
            assert_eq!(p.unreachable, 0, "{}", p.name);
            assert_eq!(p.coverage, 1.0, "{}", p.name);
        }
        let r = replay_file(&path, &["host".to_string()], false, Some(1)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let p = &r.report.policies[0];
        assert_eq!(r.events(), 1000);
        assert_eq!(p.divergences, 0);
        assert_eq!(p.unmodeled, 0);
        assert_eq!(p.coverage, 1.0);
    }
}
