//! `kvmtrace policies [--json] [--trace FILE]`: the presets and every switch
//! value (docs/kvm-semantics.md); `host` is resolved against a trace's header,
//! since it means "the machine that recorded". With `--trace`, every preset is
//! shown with the vendor replay will use for that trace, and the vendor-table
//! facts that apply.

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
    let all = describe_presets(header.as_ref());
    if args.json {
        super::write_json(
            out,
            &serde_json::json!({
                "policies": all,
                "changes": kvmtrace_replayer::presets::changes::CHANGES,
                "vendor_table": kvmtrace_replayer::vendor::FACTS,
                "host": if header.is_some() {
                    "resolved from the given trace"
                } else {
                    "resolved from each trace's header: the preset nearest the recorded kernel, the recorded vendor, quirks and capabilities, and docs/host-notes.md"
                },
            }),
        )?;
        return Ok(0);
    }
    // A switch x policy table over the releases where a rule changes (every
    // other release equals the one before it) and `host`.
    let milestones = kvmtrace_replayer::Policy::milestone_names();
    let list: Vec<_> = all
        .iter()
        .filter(|p| milestones.contains(&p.name))
        .cloned()
        .collect();
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
    writeln!(
        out,
        "\nevery mainline release kvm-5.10 ... kvm-6.18 is a preset (columns above: the releases where a rule changes, and the newest; the others equal the column before them), and kvm-X.Y.Z a stable point release; changes with commits: docs/kvm-semantics.md"
    )?;
    match &header {
        None => writeln!(
            out,
            "host: resolved from each trace (its kernel release, vendor, quirks); \
             see it with `kvmtrace policies --trace FILE`"
        )?,
        Some(h) => {
            let (vendor, why) = kvmtrace_replayer::Vendor::of_header_explained(h);
            writeln!(
                out,
                "vendor replay will use for this trace: {} (kvm_module {:?}, cpu vendor {:?})",
                vendor.name(),
                h.host.kvm_module,
                h.host.cpu_vendor
            )?;
            if let Some(w) = why {
                writeln!(out, "  note: {w}")?;
            }
            if let Some(host) = all.iter().find(|p| p.name == "host") {
                writeln!(out, "host = {} ({})", host.base, host.provenance)?;
                for n in &host.notes {
                    writeln!(out, "  note: {n}")?;
                }
                for f in &host.vendor_facts {
                    writeln!(out, "  vendor fact: {f}")?;
                }
            }
            let older = all.iter().find(|p| p.name == "kvm-5.10");
            if let (Some(o), Some(host)) = (older, all.iter().find(|p| p.name == "host"))
                && o.vendor_facts.len() < host.vendor_facts.len()
            {
                writeln!(
                    out,
                    "  (facts measured against common code apply only at the release they were measured on: kvm-5.10 uses {} of them)",
                    o.vendor_facts.len()
                )?;
            }
        }
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
                "note": s.note,
                "provenance": s.provenance,
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
        if let Some(p) = &s.provenance {
            writeln!(out, "provenance: {p}")?;
        }
    }
    Ok(0)
}
