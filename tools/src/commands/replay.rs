//! `kvmtrace replay FILE --policy P [--policy Q ...] [--json] [--salvage-ok]
//! [--threads N]`: exit 0 no divergence, 1 divergence, 2 bad input.

use std::io::Write;

use crate::cli::ReplayArgs;

pub fn run(args: &ReplayArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<i32> {
    let _ = (args, out, err);
    anyhow::bail!("replay is not available in this build yet (kvmtrace-replayer)")
}
