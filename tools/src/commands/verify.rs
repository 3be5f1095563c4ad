//! `kvmtrace verify FILE [--salvage OUT] [--json]`: exit 0 intact, 1 damaged
//! (with chunk, byte offset and what failed), 2 not a trace / unreadable.

use std::io::Write;

use crate::cli::VerifyArgs;
use crate::trace_io;

pub fn run(args: &VerifyArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<i32> {
    let r = trace_io::verify(&args.file)?;
    let salvaged = match &args.salvage {
        Some(o) => Some(trace_io::salvage(&args.file, o)?),
        None => None,
    };
    if args.json {
        let mut v = serde_json::to_value(&r)?;
        v["ok"] = serde_json::json!(r.is_ok());
        if let Some(s) = &salvaged {
            v["salvage"] = serde_json::to_value(s)?;
        }
        super::write_json(out, &v)?;
    } else {
        match &r.damage {
            None => writeln!(
                out,
                "{}: ok ({} events in {} chunks, {} bytes, format {}.{})",
                r.file, r.events_ok, r.chunks_ok, r.bytes, r.version.major, r.version.minor
            )?,
            Some(d) => {
                writeln!(out, "{}: DAMAGED: {}", r.file, d.message)?;
                writeln!(
                    out,
                    "  what: {}, offset {:#x}{}",
                    d.kind.describe(),
                    d.offset,
                    d.chunk.map(|c| format!(", chunk {c}")).unwrap_or_default()
                )?;
                let header_cut = d.chunk.is_none() && r.chunks_ok == 0 && d.offset <= 16;
                if header_cut {
                    writeln!(
                        out,
                        "  nothing can be salvaged: the file ends inside its header, before any event was written"
                    )?;
                } else if r.chunks_ok == 0 {
                    writeln!(
                        out,
                        "  readable prefix: none (the damage is in the first chunk); a salvage keeps only the header, the recording's configuration"
                    )?;
                } else {
                    writeln!(
                        out,
                        "  readable prefix: {} events in {} complete chunks (last seq {}, at {})",
                        r.events_ok,
                        r.chunks_ok,
                        r.last_seq.map_or("-".into(), |v| v.to_string()),
                        r.last_time_ns.map_or("-".into(), super::text::rel_time),
                    )?;
                    if args.salvage.is_none() {
                        writeln!(
                            out,
                            "  to keep it: kvmtrace verify {} --salvage OUT.kvt",
                            args.file.display()
                        )?;
                    }
                }
            }
        }
        if let (Some(s), Some(o)) = (&salvaged, &args.salvage) {
            if s.chunks_kept == 0 {
                writeln!(
                    err,
                    "salvaged no events into {}: no chunk was complete before the damage; it holds the header only; lost {} bytes",
                    o.display(),
                    s.bytes_lost
                )?;
            } else {
                writeln!(
                    err,
                    "salvaged {} events ({} chunks) into {}; lost {} bytes; last kept seq {} at {}",
                    s.events_kept,
                    s.chunks_kept,
                    o.display(),
                    s.bytes_lost,
                    s.last_seq.map_or("-".into(), |v| v.to_string()),
                    s.last_time_ns.map_or("-".into(), super::text::rel_time),
                )?;
            }
        }
    }
    Ok(if r.is_ok() { 0 } else { 1 })
}
