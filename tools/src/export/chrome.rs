//! Chrome trace-event JSON (`chrome://tracing`, Perfetto UI): one thread track
//! per vCPU, every event an instant with its fields as args, markers as global
//! instants, divergences as flagged instants. Written as the records stream by.

use std::io::Write;

use kvmtrace_format::Record;

use super::describe::{self, Arg};
use super::{Divergence, Sink};

/// Above this, the UIs struggle to open a JSON trace.
pub const TOO_BIG_BYTES: u64 = 300 * 1024 * 1024;
/// JSON bytes per event, for the warning before an export (an MSR instant is
/// 200–250 bytes with its args).
pub const BYTES_PER_EVENT_ESTIMATE: u64 = 220;

const PID: u32 = 1;

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"?\"".into())
}

fn ts(ns: u64) -> String {
    format!("{}.{:03}", ns / 1000, ns % 1000)
}

fn tid(vcpu: u32) -> u64 {
    u64::from(vcpu) + 1
}

pub struct ChromeWriter<W: Write> {
    out: W,
    seen: Vec<u32>,
}

impl<W: Write> ChromeWriter<W> {
    pub fn new(mut out: W, title: &str) -> std::io::Result<Self> {
        out.write_all(b"{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n")?;
        write!(
            out,
            "{{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":{PID},\"tid\":0,\"args\":{{\"name\":{}}}}}",
            json_str(title)
        )?;
        Ok(ChromeWriter {
            out,
            seen: Vec::new(),
        })
    }

    /// Every entry follows the process_name metadata, so always a separator.
    fn sep(&mut self) -> std::io::Result<()> {
        self.out.write_all(b",\n")
    }

    fn args(&mut self, args: &[(String, Arg)]) -> std::io::Result<()> {
        self.out.write_all(b"{")?;
        for (i, (k, v)) in args.iter().enumerate() {
            if i > 0 {
                self.out.write_all(b",")?;
            }
            write!(self.out, "{}:", json_str(k))?;
            write!(self.out, "{}", json_arg(v))?;
        }
        self.out.write_all(b"}")
    }

    fn track(&mut self, vcpu: u32) -> std::io::Result<()> {
        if self.seen.contains(&vcpu) {
            return Ok(());
        }
        self.seen.push(vcpu);
        self.sep()?;
        write!(
            self.out,
            "{{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":{PID},\"tid\":{},\"args\":{{\"name\":\"vCPU {vcpu}\"}}}}",
            tid(vcpu)
        )?;
        self.sep()?;
        write!(
            self.out,
            "{{\"name\":\"thread_sort_index\",\"ph\":\"M\",\"pid\":{PID},\"tid\":{},\"args\":{{\"sort_index\":{vcpu}}}}}",
            tid(vcpu)
        )
    }
}

impl<W: Write> Sink for ChromeWriter<W> {
    fn record(&mut self, rec: &Record) -> std::io::Result<()> {
        self.track(rec.vcpu)?;
        let e = &rec.event;
        let marker = describe::is_marker(e);
        self.sep()?;
        write!(
            self.out,
            "{{\"name\":{},\"cat\":\"{}\",\"ph\":\"i\",\"s\":\"{}\",\"ts\":{},\"pid\":{PID},\"tid\":{},\"args\":",
            json_str(&describe::name(e)),
            if marker { "marker" } else { e.kind().name() },
            if marker { "g" } else { "t" },
            ts(rec.time_ns),
            tid(rec.vcpu)
        )?;
        let mut args = describe::args(e);
        args.push(("seq".into(), Arg::U64(rec.seq)));
        self.args(&args)?;
        self.out.write_all(b"}")
    }

    fn divergence(&mut self, rec: &Record, d: &Divergence) -> std::io::Result<()> {
        self.sep()?;
        write!(
            self.out,
            "{{\"name\":{},\"cat\":\"divergence\",\"ph\":\"i\",\"s\":\"t\",\"cname\":\"terrible\",\"ts\":{},\"pid\":{PID},\"tid\":{},\"args\":",
            json_str(&format!("DIVERGENCE {}", describe::name(&rec.event))),
            ts(rec.time_ns),
            tid(rec.vcpu)
        )?;
        let args = describe::divergence_args(rec, d);
        self.args(&args)?;
        self.out.write_all(b"}")
    }

    fn finish(&mut self) -> std::io::Result<()> {
        self.out.write_all(b"\n]}\n")?;
        self.out.flush()
    }
}

/// An argument as JSON: hex values as `"0x..."` strings, lists as arrays.
fn json_arg(a: &Arg) -> String {
    match a {
        Arg::Str(s) => json_str(s),
        Arg::Hex(n) => format!("\"{n:#x}\""),
        Arg::U64(n) => n.to_string(),
        Arg::I64(n) => n.to_string(),
        Arg::Bool(b) => b.to_string(),
        Arg::List(v) => format!("[{}]", v.iter().map(json_arg).collect::<Vec<_>>().join(",")),
    }
}
