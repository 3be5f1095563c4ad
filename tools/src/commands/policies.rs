//! `kvmtrace policies [--json] [--trace FILE]`: the presets and every switch
//! value (SEMANTICS.md §8); `host` is resolved against a trace's header, since
//! it means "the machine that recorded".

use std::io::Write;

use kvmtrace_replayer::policy::describe_presets;

use crate::cli::PoliciesArgs;
use crate::trace_io::TraceFile;

pub fn run(args: &PoliciesArgs, out: &mut dyn Write, _err: &mut dyn Write) -> anyhow::Result<i32> {
    if let Some(f) = &args.check {
        return check(f, args.json, out);
    }
    let header = match &args.trace {
        Some(t) => Some(TraceFile::open(t)?.header().clone()),
        None => None,
    };
    let list = describe_presets(header.as_ref());
    if args.json {
        super::write_json(
            out,
            &serde_json::json!({
                "policies": list,
                "host": if header.is_some() {
                    "resolved from the given trace"
                } else {
                    "resolved from each trace's header: the preset nearest the recorded kernel, the recorded vendor, quirks and capabilities, and docs/host-notes.md"
                },
            }),
        )?;
        return Ok(0);
    }
    // A switch x policy table, as SEMANTICS.md §8 prints it.
    let names: Vec<&str> = list.iter().map(|p| p.name.as_str()).collect();
    let sw = list
        .iter()
        .flat_map(|p| p.switches.iter().map(|(k, _)| k.len()))
        .max()
        .unwrap_or(8)
        .max("disabled_quirks".len());
    let cols: Vec<usize> = list
        .iter()
        .map(|p| {
            p.switches
                .iter()
                .map(|(_, v)| v.len())
                .chain([
                    p.name.len(),
                    p.release.len(),
                    format!("{:?}", p.vendor).len(),
                ])
                .max()
                .unwrap_or(8)
        })
        .collect();
    write!(out, "{:sw$}", "switch")?;
    for (n, w) in names.iter().zip(&cols) {
        write!(out, "  {n:>w$}")?;
    }
    writeln!(out)?;
    let row = |out: &mut dyn Write, label: &str, vals: Vec<String>| -> std::io::Result<()> {
        write!(out, "{label:sw$}")?;
        for (v, w) in vals.iter().zip(&cols) {
            write!(out, "  {v:>w$}")?;
        }
        writeln!(out)
    };
    row(
        out,
        "release",
        list.iter().map(|p| p.release.clone()).collect(),
    )?;
    row(
        out,
        "vendor",
        list.iter()
            .map(|p| format!("{:?}", p.vendor).to_lowercase())
            .collect(),
    )?;
    if let Some(first) = list.first() {
        for (i, (k, _)) in first.switches.iter().enumerate() {
            let vals = list
                .iter()
                .map(|p| {
                    p.switches
                        .get(i)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                })
                .collect();
            row(out, k, vals)?;
        }
    }
    row(
        out,
        "disabled_quirks",
        list.iter()
            .map(|p| {
                if p.disabled_quirks.is_empty() {
                    "-".into()
                } else {
                    p.disabled_quirks.join("|")
                }
            })
            .collect(),
    )?;
    if header.is_none() {
        writeln!(
            out,
            "\nhost: resolved from each trace (nearest preset to its kernel, its vendor and quirks); \
             see it with `kvmtrace policies --trace FILE`"
        )?;
    }
    Ok(0)
}

/// `kvmtrace policies --check FILE`: a script or TOML file, validated without
/// a trace (scripts: header, compilation, each hook called once on a fresh
/// vCPU of the base policy).
fn check(file: &std::path::Path, json: bool, out: &mut dyn Write) -> anyhow::Result<i32> {
    let s = kvmtrace_replayer::script::check(file)?;
    if json {
        super::write_json(
            out,
            &serde_json::json!({
                "file": file.display().to_string(),
                "valid": true,
                "name": s.name,
                "base": s.base,
                "hooks": s.hooks,
            }),
        )?;
    } else {
        writeln!(
            out,
            "{}: ok: policy {} on base {}{}",
            file.display(),
            s.name,
            s.base,
            if s.hooks.is_empty() {
                String::new()
            } else {
                format!("; hooks: {}", s.hooks.join(", "))
            }
        )?;
    }
    Ok(0)
}
