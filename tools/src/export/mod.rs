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
use kvmtrace_replayer::engine::Engine;
use kvmtrace_replayer::policy::Policy;

pub use input::{Input, open_trace};

use crate::fidelity::{Verdict, check_any};

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
}

/// An outcome a policy would have decided differently.
#[derive(Clone, Debug)]
pub struct Divergence {
    pub policy: String,
    pub rule: &'static str,
    pub behaviour: &'static str,
    pub predicted: serde_json::Value,
    pub recorded: serde_json::Value,
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

/// Stream `records` into `sink`, with divergences under `policy` if given.
pub fn export_records<E: std::fmt::Display>(
    header: &TraceHeader,
    records: impl Iterator<Item = Result<Record, E>>,
    policy: Option<&str>,
    sink: &mut dyn Sink,
) -> anyhow::Result<ExportSummary> {
    let mut engine = match policy {
        Some(p) => Some(Engine::new(
            Policy::resolve(p, header).map_err(|e| anyhow::anyhow!("policy {p}: {e}"))?,
            header,
        )),
        None => None,
    };
    let mut sum = ExportSummary::default();
    for rec in records {
        let rec = rec.map_err(|e| anyhow::anyhow!("{e}"))?;
        sink.record(&rec)?;
        sum.records += 1;
        if let Some(engine) = engine.as_mut() {
            if let Some(c) = check_any(engine, &rec) {
                if c.verdict == Verdict::Disagree {
                    sum.divergences += 1;
                    let d = Divergence {
                        policy: engine.policy().name.clone(),
                        rule: c.rule,
                        behaviour: c.behaviour,
                        predicted: c.predicted,
                        recorded: c.recorded,
                    };
                    sink.divergence(&rec, &d)?;
                }
            }
            engine.apply(&rec);
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
    let mut input = open_trace(&args.trace)?;
    let header = input.header().clone();
    // Say it before the work, not only after: an MSR event is ~200 bytes of JSON.
    let estimate = input
        .summary()
        .events
        .saturating_mul(chrome::BYTES_PER_EVENT_ESTIMATE);
    if args.format == "chrome" && estimate > chrome::TOO_BIG_BYTES {
        writeln!(
            err,
            "warning: {} events make about {} MB of JSON: Perfetto UI and chrome://tracing give up near 300 MB; --format perfetto is several times smaller",
            input.summary().events,
            estimate / (1024 * 1024)
        )?;
    }
    let file = std::fs::File::create(&args.output)
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", args.output.display()))?;
    let mut counting = Counting {
        inner: BufWriter::new(file),
        bytes: 0,
    };
    let title = format!("kvmtrace {}", args.trace.display());
    let sum = if args.format == "chrome" {
        let mut w = chrome::ChromeWriter::new(&mut counting, &title)?;
        export_records(&header, input.records(), args.policy.as_deref(), &mut w)?
    } else {
        let mut w = perfetto::PerfettoWriter::new(&mut counting, &title)?;
        export_records(&header, input.records(), args.policy.as_deref(), &mut w)?
    };
    let bytes = counting.bytes;
    writeln!(
        out,
        "exported {} records{} to {} ({} bytes, {})",
        sum.records,
        match &args.policy {
            Some(p) => format!(" and {} divergences under {p}", sum.divergences),
            None => String::new(),
        },
        args.output.display(),
        bytes,
        args.format
    )?;
    if args.format == "chrome" && bytes > chrome::TOO_BIG_BYTES && estimate <= chrome::TOO_BIG_BYTES
    {
        writeln!(
            err,
            "warning: {} is {} MB: Perfetto UI and chrome://tracing give up on JSON near 300 MB; use --format perfetto (several times smaller)",
            args.output.display(),
            bytes / (1024 * 1024)
        )?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests;
