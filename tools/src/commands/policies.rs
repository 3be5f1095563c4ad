//! `kvmtrace policies [--json]`: the presets and their switches.

use std::io::Write;

use kvmtrace_replayer::Policy;

use crate::cli::JsonArgs;

pub fn run(args: &JsonArgs, out: &mut dyn Write, _err: &mut dyn Write) -> anyhow::Result<i32> {
    let names = Policy::preset_names();
    if args.json {
        let v: Vec<_> = names
            .iter()
            .map(|n| serde_json::json!({ "name": n }))
            .collect();
        super::write_json(out, &serde_json::json!({ "policies": v }))?;
    } else {
        for n in names {
            writeln!(out, "{n}")?;
        }
    }
    Ok(0)
}
