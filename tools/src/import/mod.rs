//! `kvmtrace import ftrace TEXT -o FILE`: kernel tracepoint text to a trace.
//! (Stub: the observe/import issue fills this in; keep `ImportArgs` and `run`.)

use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct ImportArgs {
    /// Input format (only `ftrace`).
    pub format: String,
    /// The tracefs text (`trace`, `trace_pipe` or `trace-cmd report` output).
    pub input: PathBuf,
    #[arg(short, long)]
    pub output: PathBuf,
}

pub fn run(args: &ImportArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<i32> {
    let _ = (args, out, err);
    anyhow::bail!("import is not implemented yet")
}
