//! One module per command; `run` dispatches. Each command writes its report to
//! `out` (stdout: one JSON document with `--json`, human text otherwise) and
//! progress/diagnostics to `err`.

pub mod bench;
pub mod bisect;
pub mod corpus;
pub mod demo;
pub mod diff;
pub mod dump;
pub mod guest;
pub mod info;
pub mod policies;
pub mod record;
pub mod record_external;
pub mod replay;
pub mod scenarios;
pub mod script_bench;
pub mod stats;
pub mod synth;
pub mod text;
pub mod verify;
pub mod wrap_bench;

use std::io::Write;

use crate::cli::{Command, CorpusCommand};

/// Run one command; `Ok(code)` is 0 (ok) or 1 (divergence / check failed), an
/// error means bad input or usage (exit 2).
pub fn run(cmd: Command, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<i32> {
    match cmd {
        Command::Record(a) => record::run(&a, out, err),
        Command::Scenarios(a) => scenarios::run(&a, out, err),
        Command::Replay(a) => replay::run(&a, out, err),
        Command::Policies(a) => policies::run(&a, out, err),
        Command::Dump(a) => dump::run(&a, out, err),
        Command::Stats(a) => stats::run(&a, out, err),
        Command::Verify(a) => verify::run(&a, out, err),
        Command::Info(a) => info::run(&a, out, err),
        Command::Diff(a) => diff::run(&a, out, err),
        Command::Synth(a) => synth::run(&a, out, err),
        Command::Corpus(CorpusCommand::Check(a)) => corpus::check(&a, out, err),
        Command::Corpus(CorpusCommand::Bless(a)) => corpus::bless(&a, out, err),
        Command::Import(a) => crate::import::run(&a, out, err),
        Command::Export(a) => crate::export::run(&a, out, err),
        Command::Fidelity(a) => crate::fidelity::run(&a, out, err),
        Command::Bench(a) => bench::run(&a, out, err),
        Command::Bisect(a) => bisect::run(&a, out, err),
        Command::Demo(a) => demo::run(&a, out, err),
        Command::Guest(a) => guest::run(&a, out, err),
    }
}

/// The error as one line (the README's promise: one line naming the file,
/// offset and what was wrong): the message, then each cause of the chain that
/// it does not already say, after a colon. Most errors carry their cause in
/// their own text (`cannot read X: No such file or directory`), so the cause
/// is not repeated.
pub fn format_error(e: &anyhow::Error) -> String {
    let mut s = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !c.is_empty() && !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
    }
    // A message with a line break (a cause's own text) stays one line.
    let s = s.replace('\n', " ");
    format!("kvmtrace: error: {}\n", s.trim_end())
}

/// Write a JSON document and a newline.
pub fn write_json(out: &mut dyn Write, v: &serde_json::Value) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, v)?;
    writeln!(out)?;
    Ok(())
}
