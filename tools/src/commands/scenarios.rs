//! `kvmtrace scenarios [--json]`: the built-in guest scenarios.

use std::io::Write;

use crate::cli::JsonArgs;

pub fn run(args: &JsonArgs, out: &mut dyn Write, _err: &mut dyn Write) -> anyhow::Result<i32> {
    let list = kvmtrace_recorder::scenarios();
    if args.json {
        let v: Vec<_> = list
            .iter()
            .map(|s| serde_json::json!({"name": s.name, "about": s.about}))
            .collect();
        super::write_json(out, &serde_json::json!({ "scenarios": v }))?;
    } else {
        let w = list.iter().map(|s| s.name.len()).max().unwrap_or(0);
        for s in &list {
            writeln!(out, "{:w$}  {}", s.name, s.about)?;
        }
        if list.is_empty() {
            writeln!(out, "(no built-in scenarios in this build)")?;
        }
    }
    Ok(0)
}
