//! `kvmtrace synth --pattern NAME --events N [--seed S] -o FILE`.

use std::io::Write;

use crate::cli::SynthArgs;
use crate::synth::{self, SynthError};
use crate::trace_io::{TraceWriter, WriteSummary};

/// Generate a pattern straight into a trace file.
pub fn write(args: &SynthArgs) -> anyhow::Result<WriteSummary> {
    if args.pattern == crate::cli::Pattern::Mixed && args.events < synth::mixed::MIN_EVENTS {
        return Err(SynthError::TooFewEvents {
            pattern: "mixed",
            min: synth::mixed::MIN_EVENTS,
            asked: args.events,
        }
        .into());
    }
    let r = write_inner(args);
    // Leave another recorder's `.incomplete` alone (creating ours failed).
    let busy = r.as_ref().is_err_and(|e| {
        matches!(
            e.downcast_ref::<kvmtrace_format::FormatError>(),
            Some(kvmtrace_format::FormatError::Busy { .. })
        )
    });
    if r.is_err() && !busy {
        // Leave nothing that looks like a trace behind.
        let _ = std::fs::remove_file(kvmtrace_format::incomplete_path(&args.output));
    }
    r
}

fn write_inner(args: &SynthArgs) -> anyhow::Result<WriteSummary> {
    let header = synth::header(args.pattern, args.events, args.seed);
    let mut w = TraceWriter::create(&args.output, &header)?;
    let mut write_err = None;
    let r = synth::generate(args.pattern, &header, args.events, args.seed, &mut |rec| {
        w.push(&rec).map_err(|e| {
            let msg = e.to_string();
            write_err = Some(e);
            SynthError::Sink(msg)
        })
    });
    if let Some(e) = write_err {
        return Err(e);
    }
    r?;
    w.finish()
}

pub fn run(args: &SynthArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<i32> {
    let s = write(args)?;
    if args.json {
        super::write_json(
            out,
            &serde_json::json!({
                "file": args.output.display().to_string(),
                "pattern": synth::pattern_name(args.pattern),
                "seed": args.seed,
                "events": s.events,
                "chunks": s.chunks,
                "bytes": s.bytes,
            }),
        )?;
    } else {
        writeln!(
            err,
            "wrote {} ({} events, {} chunks, {} bytes, {:.2} bytes/event)",
            args.output.display(),
            s.events,
            s.chunks,
            s.bytes,
            s.bytes as f64 / s.events.max(1) as f64
        )?;
    }
    Ok(0)
}
