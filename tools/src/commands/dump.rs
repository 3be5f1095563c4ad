//! `kvmtrace dump FILE [--json] [RANGE] [--vcpu N]`: one event a line (JSON lines
//! with `--json`). RANGE is rr-like: `1000-5000`, `1000-end`, `1000`, `end`.

use std::io::Write;

use anyhow::{Context, bail};

use crate::cli::DumpArgs;
use crate::trace_io::TraceFile;

/// A sequence-number range; `end` is resolved while reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Range {
    All,
    Between(u64, Option<u64>),
    /// The last event only.
    End,
}

pub fn parse_range(s: &str) -> anyhow::Result<Range> {
    let num = |t: &str| -> anyhow::Result<u64> {
        t.trim().parse::<u64>().with_context(|| {
            format!("bad range {s:?}: {t:?} is not a sequence number (use N, N-M, N-end or end)")
        })
    };
    let s = s.trim();
    if s == "end" {
        return Ok(Range::End);
    }
    match s.split_once('-') {
        None => {
            let n = num(s)?;
            Ok(Range::Between(n, Some(n)))
        }
        Some((a, b)) => {
            let lo = if a.is_empty() { 0 } else { num(a)? };
            let hi = if b == "end" || b.is_empty() {
                None
            } else {
                Some(num(b)?)
            };
            if let Some(h) = hi
                && h < lo
            {
                bail!("bad range {s:?}: {h} is before {lo}");
            }
            Ok(Range::Between(lo, hi))
        }
    }
}

pub fn run(args: &DumpArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<i32> {
    let range = match &args.range {
        Some(r) => parse_range(r)?,
        None => Range::All,
    };
    let mut t = TraceFile::open(&args.file)?;
    let mut last = None;
    let mut printed = 0u64;
    for rec in t.records() {
        let rec = rec?;
        if let Some(v) = args.vcpu
            && rec.vcpu != v
        {
            continue;
        }
        match range {
            Range::End => {
                last = Some(rec);
                continue;
            }
            Range::Between(lo, hi) => {
                if rec.seq < lo {
                    continue;
                }
                if let Some(h) = hi
                    && rec.seq > h
                {
                    break;
                }
            }
            Range::All => {}
        }
        print_one(out, &rec, args.json)?;
        printed += 1;
    }
    if let Some(rec) = last {
        print_one(out, &rec, args.json)?;
        printed += 1;
    }
    if printed == 0 {
        return nothing_shown(&mut t, args, range, err);
    }
    Ok(0)
}

/// Nothing matched: say why. A range or vCPU the trace cannot hold is bad
/// input (exit 2); a vCPU with no events in a range is a note (exit 0).
fn nothing_shown(
    t: &mut TraceFile,
    args: &DumpArgs,
    range: Range,
    err: &mut dyn Write,
) -> anyhow::Result<i32> {
    let file = args.file.display();
    let first = t.reader().chunk_info(0).map(|c| c.first_seq);
    let last = t.summary().last_seq;
    let (Some(first), Some(last)) = (first, last) else {
        bail!("{file} holds no events");
    };
    if let Range::Between(lo, hi) = range
        && (lo > last || hi.is_some_and(|h| h < first))
    {
        bail!(
            "range {} is outside {file}: its events are seq {first}-{last}",
            args.range.as_deref().unwrap_or("")
        );
    }
    if let Some(v) = args.vcpu {
        let mut vcpus = std::collections::BTreeSet::new();
        for rec in t.records() {
            vcpus.insert(rec?.vcpu);
        }
        if !vcpus.contains(&v) {
            let list: Vec<String> = vcpus.iter().map(u32::to_string).collect();
            bail!(
                "vCPU {v} is not in {file}: it has vCPUs {}",
                list.join(", ")
            );
        }
        writeln!(
            err,
            "dump: vCPU {v} has no events in range {} of {file}",
            args.range.as_deref().unwrap_or("all"),
        )?;
    }
    Ok(0)
}

fn print_one(out: &mut dyn Write, rec: &kvmtrace_format::Record, json: bool) -> anyhow::Result<()> {
    if json {
        serde_json::to_writer(&mut *out, rec)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "{:>8} vcpu{} {:>14.3}us  {}",
            rec.seq,
            rec.vcpu,
            rec.time_ns as f64 / 1000.0,
            super::text::describe(&rec.event)
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_like_rr() {
        let cases: &[(&str, Option<Range>)] = &[
            ("1000-5000", Some(Range::Between(1000, Some(5000)))),
            ("1000-end", Some(Range::Between(1000, None))),
            ("7", Some(Range::Between(7, Some(7)))),
            ("-20", Some(Range::Between(0, Some(20)))),
            ("end", Some(Range::End)),
            ("5-1", None),
            ("x-1", None),
        ];
        for (s, want) in cases {
            let got = parse_range(s).ok();
            assert_eq!(&got, want, "range {s:?}");
        }
    }
}
