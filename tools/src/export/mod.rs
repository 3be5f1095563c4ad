//! `kvmtrace export FILE --format chrome|perfetto -o OUT`.
//! (Stub: the observe/import issue fills this in; keep `ExportArgs` and `run`.)

use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    pub trace: PathBuf,
    #[arg(long, default_value = "chrome")]
    pub format: String,
    #[arg(short, long)]
    pub output: PathBuf,
}

pub fn run(args: &ExportArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<i32> {
    let _ = (args, out, err);
    anyhow::bail!("export is not implemented yet")
}
