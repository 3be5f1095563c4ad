//! `kvmtrace diff A B [--json]`: compare two recordings (e.g. the same
//! scenario on two hosts or kernels) outcome by outcome, aligned by guest action
//! per vCPU (`kvmtrace_replayer::diff`). Exit 0 same outcomes, 1 differences.

use std::io::Write;
use std::path::Path;

use kvmtrace_format::Record;

use crate::cli::DiffArgs;
use crate::trace_io::{self, TraceFile};

fn load(path: &Path) -> anyhow::Result<Vec<Record>> {
    let mut t = TraceFile::open(path).map_err(|e| trace_io::explain(path, e))?;
    t.records()
        .collect::<anyhow::Result<Vec<_>>>()
        .map_err(|e| trace_io::explain(path, e))
}

pub fn run(args: &DiffArgs, out: &mut dyn Write, _err: &mut dyn Write) -> anyhow::Result<i32> {
    let a = load(&args.a)?;
    let b = load(&args.b)?;
    let r = kvmtrace_replayer::diff(
        &args.a.display().to_string(),
        &a,
        &args.b.display().to_string(),
        &b,
    );
    if args.json {
        super::write_json(out, &serde_json::to_value(&r)?)?;
    } else {
        out.write_all(r.render(20).as_bytes())?;
    }
    Ok(if r.differs() { 1 } else { 0 })
}
