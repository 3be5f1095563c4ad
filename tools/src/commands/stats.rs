//! `kvmtrace stats FILE [--json]`: `{"events","chunks","bytes","vcpus","by_kind",
//! "bytes_per_event"}`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use kvmtrace_format::EventKind;

use crate::cli::FileJsonArgs;
use crate::trace_io::TraceFile;

pub fn run(args: &FileJsonArgs, out: &mut dyn Write, _err: &mut dyn Write) -> anyhow::Result<i32> {
    let mut t = TraceFile::open(&args.file)?;
    let (chunks, bytes) = (t.summary().chunks, t.summary().bytes);
    let mut events = 0u64;
    // Counted per kind in an array (no map lookup per event), named at the end.
    let mut per_kind = [0u64; EventKind::ALL.len()];
    let mut vcpus = BTreeSet::new();
    let mut last_vcpu = None;
    let (mut first_ns, mut last_ns) = (None, 0u64);
    for rec in t.records() {
        let rec = rec?;
        events += 1;
        per_kind[rec.event.kind() as usize] += 1;
        if last_vcpu != Some(rec.vcpu) {
            vcpus.insert(rec.vcpu);
            last_vcpu = Some(rec.vcpu);
        }
        first_ns.get_or_insert(rec.time_ns);
        last_ns = rec.time_ns;
    }
    let by_kind: BTreeMap<&'static str, u64> = EventKind::ALL
        .iter()
        .filter(|&&k| per_kind[k as usize] > 0)
        .map(|&k| (k.name(), per_kind[k as usize]))
        .collect();
    let bpe = bytes as f64 / events.max(1) as f64;
    let duration_ns = last_ns.saturating_sub(first_ns.unwrap_or(0));
    if args.json {
        super::write_json(
            out,
            &serde_json::json!({
                "file": args.file.display().to_string(),
                "events": events,
                "chunks": chunks,
                "bytes": bytes,
                "vcpus": vcpus.len(),
                "by_kind": by_kind,
                "bytes_per_event": bpe,
                "duration_ns": duration_ns,
            }),
        )?;
    } else {
        writeln!(out, "file      {}", args.file.display())?;
        writeln!(out, "events    {events}")?;
        writeln!(out, "chunks    {}", chunks)?;
        writeln!(out, "bytes     {} ({bpe:.2} bytes/event)", bytes)?;
        writeln!(out, "vcpus     {}", vcpus.len())?;
        writeln!(out, "duration  {:.3} ms", duration_ns as f64 / 1e6)?;
        writeln!(out, "by kind:")?;
        for (k, n) in &by_kind {
            writeln!(out, "  {k:<16} {n}")?;
        }
    }
    Ok(0)
}
