//! `kvmtrace verify FILE [--salvage OUT] [--json]`: exit 0 intact, 1 damaged
//! (with chunk, byte offset and what failed), 2 unreadable input.

use std::io::Write;

use crate::cli::VerifyArgs;
use crate::trace_io;

pub fn run(args: &VerifyArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<i32> {
    let r = trace_io::verify(&args.file)?;
    let salvaged = match (&args.salvage, r.ok) {
        (Some(o), _) => Some(trace_io::salvage(&args.file, o)?),
        (None, _) => None,
    };
    if args.json {
        let mut v = serde_json::to_value(&r)?;
        if let Some(s) = &salvaged {
            v["salvage"] = serde_json::to_value(s)?;
        }
        super::write_json(out, &v)?;
    } else {
        if r.ok {
            writeln!(
                out,
                "{}: ok ({} events in {} chunks, {} bytes)",
                r.file, r.events, r.chunks, r.bytes
            )?;
        } else {
            writeln!(
                out,
                "{}: DAMAGED: {}",
                r.file,
                r.damage.as_deref().unwrap_or("unknown damage")
            )?;
            writeln!(
                out,
                "readable prefix: {} events in {} complete chunks",
                r.good_events, r.good_chunks
            )?;
        }
        if let (Some(s), Some(o)) = (&salvaged, &args.salvage) {
            writeln!(
                err,
                "salvaged {} events ({} chunks) into {}; lost {} bytes; last kept seq {} at {} ns",
                s.kept_events,
                s.kept_chunks,
                o.display(),
                s.lost_bytes,
                s.last_seq.map_or("-".into(), |v| v.to_string()),
                s.last_time_ns.map_or("-".into(), |v| v.to_string()),
            )?;
        }
    }
    Ok(if r.ok { 0 } else { 1 })
}
