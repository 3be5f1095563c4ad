//! `kvmtrace bench [--json] [--quick]`: performance figures as ratios from one run.

use std::io::Write;

use crate::cli::BenchArgs;

pub fn run(args: &BenchArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<i32> {
    let _ = (args, out, err);
    anyhow::bail!("bench is not available in this build yet")
}
