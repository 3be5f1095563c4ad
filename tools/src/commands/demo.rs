//! `kvmtrace demo`: record `tour` here and replay it against every preset.

use std::io::Write;

use crate::cli::DemoArgs;

pub fn run(args: &DemoArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<i32> {
    let _ = (args, out, err);
    anyhow::bail!("demo is not available in this build yet")
}
