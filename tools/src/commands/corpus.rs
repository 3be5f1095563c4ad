//! `kvmtrace corpus check|bless DIR`: CI corpora of traces with blessed results.

use std::io::Write;

use crate::cli::{CorpusBlessArgs, CorpusCheckArgs};

pub fn check(
    args: &CorpusCheckArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<i32> {
    let _ = (args, out, err);
    anyhow::bail!("corpus check is not available in this build yet (kvmtrace-replayer)")
}

pub fn bless(
    args: &CorpusBlessArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<i32> {
    let _ = (args, out, err);
    anyhow::bail!("corpus bless is not available in this build yet (kvmtrace-replayer)")
}
