//! `kvmtrace diff A B [--json]`: compare two traces by guest action.

use std::io::Write;

use crate::cli::DiffArgs;

pub fn run(args: &DiffArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<i32> {
    let _ = (args, out, err);
    anyhow::bail!("diff is not available in this build yet (kvmtrace-replayer)")
}
