//! `kvmtrace fidelity FILE... [--json]`: agreement of `host` and every preset with
//! the kernel-decided outcomes in the given traces.
//! (Stub: the observe/import issue fills this in; keep `FidelityArgs` and `run`.)

use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct FidelityArgs {
    #[arg(required = true)]
    pub traces: Vec<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &FidelityArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<i32> {
    let _ = (args, out, err);
    anyhow::bail!("fidelity is not implemented yet")
}
