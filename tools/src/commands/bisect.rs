//! `kvmtrace bisect FILE [--json] [--threads N]`: for each behaviour whose
//! outcome changes across kvm-5.10 ... kvm-6.18, the first release (and stable
//! point release) where it changes, the tabled commit, and whether the vendor
//! or quirks matter. Every policy the answer needs is a lane of one replay
//! (`kvmtrace_replayer::bisect::plan`), not a loop of replays.
//!
//! Exit 0 with an answer (also "nothing changes"), 2 on bad input.

use std::io::Write;

use kvmtrace_replayer::Replay;
use kvmtrace_replayer::bisect;
use kvmtrace_replayer::replay::Selection;

use crate::cli::BisectArgs;
use crate::trace_io::{self, TraceFile};

const BATCH: usize = 1 << 16;

pub fn run(args: &BisectArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<i32> {
    let mut t = TraceFile::open(&args.file).map_err(|e| trace_io::explain(&args.file, e))?;
    let header = t.header().clone();
    let (_, why) = kvmtrace_replayer::Vendor::of_header_explained(&header);
    if let Some(w) = why {
        writeln!(err, "note: {w}")?;
    }
    let plan = bisect::plan(&header);
    let mut replay = Replay::new(&header, plan.policies.clone())
        .with_trace_name(args.file.display().to_string())
        .with_selection(Selection {
            keep: 20,
            ..Selection::default()
        });
    let threads = args
        .threads
        .unwrap_or_else(super::replay::default_threads)
        .max(1);
    if threads == 1 {
        replay = replay.sequential();
    } else {
        replay = replay.with_threads(threads)?;
    }
    let mut batch = Vec::with_capacity(BATCH);
    let mut records = t.records();
    loop {
        trace_io::next_batch(&mut records, &mut batch, BATCH, |e| {
            trace_io::explain(&args.file, e)
        })?;
        if batch.is_empty() {
            break;
        }
        replay.feed(&batch);
    }
    let report = bisect::analyse(&plan, &replay.finish());
    if args.json {
        super::write_json(out, &serde_json::to_value(&report)?)?;
    } else {
        out.write_all(report.render().as_bytes())?;
    }
    Ok(0)
}
