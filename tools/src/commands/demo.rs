//! `kvmtrace demo`: record `tour` on this machine (or, without /dev/kvm, take a
//! bundled recording) and replay it against every preset and `host`, printing
//! the divergence matrix (policy x behaviour) and the first divergence of each.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::cli::DemoArgs;

pub fn run(args: &DemoArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<i32> {
    let _ = (args, out, err);
    anyhow::bail!("demo is not available in this build yet")
}

/// `offline_vs_live_ratio`: 16 live re-runs of `tour` vs replaying one
/// recording against the 16 quirk combinations.
pub fn offline_vs_live(dir: &Path) -> anyhow::Result<Value> {
    let _: PathBuf = dir.to_path_buf();
    anyhow::bail!("needs the recorder and replayer")
}
