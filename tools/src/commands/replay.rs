//! `kvmtrace replay FILE --policy P [--policy Q ...] [--json] [--salvage-ok]
//! [--threads N]`: exit 0 no divergence, 1 divergence, 2 bad input.

use std::io::Write;
use std::path::Path;

use serde_json::Value;

use crate::cli::ReplayArgs;

/// One replay's result: the DESIGN.md JSON document and whether any policy
/// diverged.
pub struct ReplayResult {
    pub json: Value,
    pub human: String,
    pub diverged: bool,
}

/// Replay `file` against `policies` (preset names, `host`, policy files).
pub fn replay_file(
    file: &Path,
    policies: &[String],
    salvage_ok: bool,
    threads: Option<usize>,
) -> anyhow::Result<ReplayResult> {
    let _ = (file, policies, salvage_ok, threads);
    anyhow::bail!("replay is not available in this build yet (kvmtrace-replayer)")
}

pub fn run(args: &ReplayArgs, out: &mut dyn Write, _err: &mut dyn Write) -> anyhow::Result<i32> {
    let r = replay_file(&args.file, &args.policies, args.salvage_ok, args.threads)?;
    if args.json {
        super::write_json(out, &r.json)?;
    } else {
        out.write_all(r.human.as_bytes())?;
    }
    Ok(if r.diverged { 1 } else { 0 })
}

/// `replay_events_per_s` (one policy) and `replay_n_policies_ratio` (8 / 1).
pub fn bench(dir: &Path, events: u64) -> anyhow::Result<Value> {
    let path = dir.join("replay-msr-loop.kvt");
    super::bench::synth_file(&path, crate::cli::Pattern::MsrLoop, events, 2)?;
    let one = vec!["host".to_string()];
    let eight: Vec<String> = [
        "kvm-5.10", "kvm-5.15", "kvm-5.19", "kvm-6.0", "kvm-6.2", "kvm-6.18", "host", "kvm-6.18",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let t = std::time::Instant::now();
    replay_file(&path, &one, false, None)?;
    let t1 = t.elapsed().as_secs_f64().max(1e-9);
    let t = std::time::Instant::now();
    replay_file(&path, &eight, false, None)?;
    let t8 = t.elapsed().as_secs_f64().max(1e-9);
    Ok(serde_json::json!({
        "replay_events_per_s": events as f64 / t1,
        "replay_n_policies_ratio": t8 / t1,
        "replay_n_policies": 8,
    }))
}
