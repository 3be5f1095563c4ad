//! `kvmtrace export FILE --format chrome|perfetto -o OUT [--policy P]`.
//!
//! Both formats stream: records are read, described and written one at a time
//! (memory is bounded by the vCPU count and the interning tables). With
//! `--policy P`, the replay engine for P folds the trace as it goes and every
//! outcome P would have decided differently is added as a flagged event.

pub mod chrome;
pub mod describe;
pub mod input;
pub mod perfetto;

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use kvmtrace_format::{Record, TraceHeader};
use kvmtrace_replayer::Replay;
use kvmtrace_replayer::policy::Policy;
use kvmtrace_replayer::replay::Selection;
use kvmtrace_replayer::report::OutcomeView;

pub use input::{Input, open_trace};

#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    pub trace: PathBuf,
    /// `chrome` (trace-event JSON) or `perfetto` (native protobuf).
    #[arg(long, default_value = "chrome")]
    pub format: String,
    #[arg(short, long)]
    pub output: PathBuf,
    /// Add the divergences under this policy as flagged events.
    #[arg(long)]
    pub policy: Option<String>,
    /// Only these events, by sequence number, as `dump` takes them:
    /// `1000-5000`, `1000-end`, `-5000`, `1000`.
    #[arg(allow_negative_numbers = true)]
    pub range: Option<String>,
}

/// Perfetto protobuf per event, for the warning before a long export.
pub const PERFETTO_BYTES_PER_EVENT_ESTIMATE: u64 = 60;
/// Past this, the Perfetto UI (a browser tab) struggles to load a trace.
pub const PERFETTO_TOO_BIG_BYTES: u64 = 1 << 30;

/// An outcome a policy would have decided differently (the replayer's
/// divergence, as `replay --json` gives it).
#[derive(Clone, Debug)]
pub struct Divergence {
    pub policy: String,
    pub rule: String,
    pub behaviour: &'static str,
    pub direct: bool,
    pub predicted: serde_json::Value,
    pub recorded: serde_json::Value,
    pub explanation: String,
}

impl Divergence {
    fn of(policy: &str, d: kvmtrace_replayer::Divergence) -> Divergence {
        let json = |v: &OutcomeView| serde_json::to_value(v).unwrap_or(serde_json::Value::Null);
        Divergence {
            policy: policy.to_string(),
            rule: d.rule.name.clone(),
            behaviour: d.behaviour.name(),
            direct: d.direct,
            predicted: json(&d.policy),
            recorded: json(&d.recorded),
            explanation: d.explanation,
        }
    }
}

/// An export format.
pub trait Sink {
    fn record(&mut self, rec: &Record) -> std::io::Result<()>;
    fn divergence(&mut self, rec: &Record, d: &Divergence) -> std::io::Result<()>;
    fn finish(&mut self) -> std::io::Result<()>;
}

/// Counts what was exported.
#[derive(Clone, Debug, Default)]
pub struct ExportSummary {
    pub records: u64,
    pub divergences: u64,
    pub bytes: u64,
}

/// Counts bytes on their way out.
pub struct Counting<W> {
    inner: W,
    pub bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Records fed to the replay per batch (bounded memory).
const BATCH: usize = 1 << 14;

/// Stream `records` into `sink`, with divergences under `policy` if given:
/// the replayer's engine (`Replay`, as `replay` runs it) decides them, and
/// each is written right after its record.
pub fn export_records<E: std::fmt::Display>(
    header: &TraceHeader,
    records: impl Iterator<Item = Result<Record, E>>,
    policy: Option<&str>,
    sink: &mut dyn Sink,
) -> anyhow::Result<ExportSummary> {
    let mut replay = match policy {
        Some(p) => Some(
            Replay::new(
                header,
                vec![Policy::resolve(p, header).map_err(|e| anyhow::anyhow!("policy {p}: {e}"))?],
            )
            .sequential()
            .with_selection(Selection {
                keep: 0,
                stream: true,
                ..Selection::default()
            }),
        ),
        None => None,
    };
    let mut sum = ExportSummary::default();
    let mut batch = Vec::with_capacity(BATCH);
    let mut records = records;
    loop {
        crate::trace_io::next_batch(&mut records, &mut batch, BATCH, |e| anyhow::anyhow!("{e}"))?;
        if batch.is_empty() {
            break;
        }
        let stream = match replay.as_mut() {
            Some(r) => {
                r.feed(&batch);
                if let Some(e) = r.hook_error() {
                    anyhow::bail!("{e}");
                }
                r.take_stream()
            }
            None => Vec::new(),
        };
        let mut next = stream.into_iter().peekable();
        for (i, rec) in batch.iter().enumerate() {
            sink.record(rec)?;
            sum.records += 1;
            while let Some(s) = next.next_if(|s| s.position == i) {
                sum.divergences += 1;
                sink.divergence(rec, &Divergence::of(policy.unwrap_or(""), s.divergence))?;
            }
        }
    }
    sink.finish()?;
    Ok(sum)
}

pub fn run(args: &ExportArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<i32> {
    if !matches!(args.format.as_str(), "chrome" | "perfetto") {
        anyhow::bail!(
            "export format {:?}: expected chrome or perfetto",
            args.format
        );
    }
    let range = match &args.range {
        Some(r) => crate::commands::dump::parse_range(r)?,
        None => crate::commands::dump::Range::All,
    };
    let mut input = open_trace(&args.trace)?;
    let header = input.header().clone();
    let total = input.summary().events;
    // The events the range selects (the last one for `end`), for the
    // estimate and the progress bar.
    let last = input.summary().last_seq.unwrap_or(0);
    let first = input.chunk_info(0).map_or(0, |c| c.first_seq);
    let selected = match range {
        crate::commands::dump::Range::All => total,
        crate::commands::dump::Range::End => total.min(1),
        crate::commands::dump::Range::Between(lo, hi) => {
            let hi = hi.unwrap_or(last).min(last);
            let lo = lo.max(first);
            if lo > hi {
                anyhow::bail!(
                    "range {} is outside {}: its events are seq {first}-{last}",
                    args.range.as_deref().unwrap_or(""),
                    args.trace.display()
                );
            }
            (hi - lo + 1).min(total)
        }
    };
    // Say it before the work, not only after: an MSR event is ~200 bytes of
    // JSON, ~60 of protobuf.
    let (per_event, too_big, advice) = if args.format == "chrome" {
        (
            chrome::BYTES_PER_EVENT_ESTIMATE,
            chrome::TOO_BIG_BYTES,
            "Perfetto UI and chrome://tracing give up on JSON near 300 MB; --format perfetto is several times smaller, a RANGE smaller still",
        )
    } else {
        (
            PERFETTO_BYTES_PER_EVENT_ESTIMATE,
            PERFETTO_TOO_BIG_BYTES,
            "the Perfetto UI loads traces in a browser tab and struggles past 1 GiB; export a RANGE (e.g. 0-1000000)",
        )
    };
    let estimate = selected.saturating_mul(per_event);
    if estimate > too_big {
        writeln!(
            err,
            "warning: {selected} events make about {} of {}: {advice}",
            kvmtrace_format::error::human_bytes(estimate),
            args.format
        )?;
    }
    let file = std::fs::File::create(&args.output)
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", args.output.display()))?;
    let mut counting = Counting {
        inner: BufWriter::new(file),
        bytes: 0,
    };
    let title = format!("kvmtrace {}", args.trace.display());
    let pb = crate::progress::bar(selected, "events exported");
    let records = input
        .records()
        .filter(|r| match (r, range) {
            (Err(_), _) => true,
            (Ok(_), crate::commands::dump::Range::All) => true,
            (Ok(rec), crate::commands::dump::Range::End) => rec.seq == last,
            (Ok(rec), crate::commands::dump::Range::Between(lo, hi)) => {
                rec.seq >= lo && hi.is_none_or(|h| rec.seq <= h)
            }
        })
        .inspect(|r| {
            if r.is_ok() {
                pb.inc(1);
            }
        });
    let sum = if args.format == "chrome" {
        let mut w = chrome::ChromeWriter::new(&mut counting, &title)?;
        export_records(&header, records, args.policy.as_deref(), &mut w)?
    } else {
        let mut w = perfetto::PerfettoWriter::new(&mut counting, &title)?;
        export_records(&header, records, args.policy.as_deref(), &mut w)?
    };
    pb.finish_and_clear();
    let bytes = counting.bytes;
    writeln!(
        out,
        "exported {} records{} to {} ({}, {})",
        sum.records,
        match &args.policy {
            Some(p) => format!(" and {} divergences under {p}", sum.divergences),
            None => String::new(),
        },
        args.output.display(),
        kvmtrace_format::error::human_bytes(bytes),
        args.format
    )?;
    if bytes > too_big && estimate <= too_big {
        writeln!(
            err,
            "warning: {} is {}: {advice}",
            args.output.display(),
            kvmtrace_format::error::human_bytes(bytes),
        )?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests;
