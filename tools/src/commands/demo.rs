//! `kvmtrace demo`: record `tour` on this machine (or, without /dev/kvm, take a
//! bundled recording) and replay it against every preset and `host`, printing
//! the divergence matrix (policy x behaviour) and the first divergence of each.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use kvmtrace_replayer::Policy;
use serde_json::{Value, json};

use crate::cli::{DemoArgs, Pattern};
use kvmtrace_replayer::report::Behaviour;

/// The recording shipped with the sources, replayed where /dev/kvm is missing.
pub const BUNDLED_TOUR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/tour.kvt");

/// Why /dev/kvm cannot be used here, if it cannot.
pub fn kvm_unavailable() -> Option<String> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => None,
        Err(e) => Some(format!("cannot open /dev/kvm: {e}")),
    }
}

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(tag: &str) -> anyhow::Result<Scratch> {
    let p = std::env::temp_dir().join(format!("kvmtrace-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
    Ok(Scratch(p))
}

fn record_tour(out: &Path, policy: &str) -> anyhow::Result<kvmtrace_recorder::RecordSummary> {
    Ok(kvmtrace_recorder::record(
        &kvmtrace_recorder::RecordConfig {
            scenario: Some("tour".into()),
            payload: None,
            output: out.to_path_buf(),
            policy: policy.into(),
            mode: kvmtrace_format::CaptureMode::Intercept,
            vcpus: None,
            iterations: None,
            on_full: kvmtrace_recorder::OnFull::Wait,
            discard_events: false,
        },
    )?)
}

/// Which trace the demo replays, and how it was obtained.
fn pick_trace(
    args: &DemoArgs,
    dir: &Path,
    err: &mut dyn Write,
) -> anyhow::Result<(PathBuf, String)> {
    if let Some(t) = &args.trace {
        return Ok((t.clone(), format!("given recording {}", t.display())));
    }
    match kvm_unavailable() {
        None => {
            // Kept after the demo, so the user can go on with it.
            let out = std::env::temp_dir().join("kvmtrace-demo-tour.kvt");
            writeln!(
                err,
                "recording the `tour` scenario on /dev/kvm (live policy host) ..."
            )?;
            match record_tour(&out, "host") {
                Ok(s) => {
                    writeln!(
                        err,
                        "recorded {} events in {:.2} s ({} bytes)",
                        s.events,
                        s.run_ns as f64 / 1e9,
                        s.bytes
                    )?;
                    return Ok((out, "recorded `tour` on this machine just now".into()));
                }
                Err(e) => writeln!(err, "recording failed: {e:#}; falling back")?,
            }
        }
        Some(why) => writeln!(
            err,
            "no usable /dev/kvm here ({why}); replaying a bundled recording instead"
        )?,
    }
    let bundled = Path::new(BUNDLED_TOUR);
    if bundled.is_file() && crate::trace_io::verify(bundled).is_ok_and(|r| r.is_ok()) {
        return Ok((
            bundled.to_path_buf(),
            format!("bundled recording {}", bundled.display()),
        ));
    }
    let out = dir.join("mixed.kvt");
    super::bench::synth_file(&out, Pattern::Mixed, 2000, 1)?;
    Ok((
        out,
        "synthetic `mixed` trace (kvmtrace synth --pattern mixed --events 2000 --seed 1)".into(),
    ))
}

pub fn run(args: &DemoArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<i32> {
    let dir = scratch("demo")?;
    let (trace, source) = pick_trace(args, &dir.0, err)?;
    // The releases where some rule changes, and `host` (every other release
    // equals the milestone before it; `replay --policy kvm-X.Y` for any).
    let policies: Vec<String> = Policy::milestone_names();
    let r = super::replay::replay_file(&trace, &policies, false, None)?;
    if args.json {
        let mut v = super::replay::to_json(&r)?;
        v["source"] = json!(source);
        super::write_json(out, &v)?;
        return Ok(0);
    }
    writeln!(out, "kvmtrace demo: {source}")?;
    writeln!(
        out,
        "{} events replayed against {} policies in one pass.\n",
        r.events(),
        r.report.policies.len()
    )?;
    writeln!(
        out,
        "divergences by behaviour (rows: policy; columns: behaviour, docs/kvm-semantics.md)"
    )?;
    let reports = &r.report.policies;
    let w = reports
        .iter()
        .map(|p| p.name.len())
        .max()
        .unwrap_or(8)
        .max(8);
    write!(out, "{:w$}", "policy")?;
    for b in Behaviour::ALL {
        write!(out, "  {:>10}", b.name())?;
    }
    writeln!(out, "  {:>9}  {:>8}", "agreement", "coverage")?;
    for p in reports {
        write!(out, "{:w$}", p.name)?;
        for b in Behaviour::ALL {
            let n = p.by_behaviour.get(b);
            let u = p.unreachable_by_behaviour.get(b);
            match (n, u) {
                (0, 0) => write!(out, "  {:>10}", ".")?,
                (n, 0) => write!(out, "  {n:>10}")?,
                // Direct and consequent divergences, then the events the
                // policy never reaches because it ended the guest here.
                (n, u) => write!(out, "  {:>10}", format!("{n} (+{u})"))?,
            }
        }
        let agreement = if p.modelled == 0 {
            "—".to_string()
        } else {
            format!("{:.4}", p.agreement)
        };
        writeln!(out, "  {agreement:>9}  {:>8.4}", p.coverage)?;
    }
    writeln!(
        out,
        "(n (+u): n divergences, then u events unreachable because the policy ended the guest there)"
    )?;
    for p in reports {
        if let Some(e) = &p.ended {
            writeln!(
                out,
                "  {:w$}  ends the guest at #{} ({}): {} later events unreachable",
                p.name,
                e.seq,
                e.behaviour.name(),
                p.unreachable
            )?;
        }
    }
    writeln!(out, "\nfirst divergence of each policy:")?;
    for p in reports {
        match &p.first {
            None => writeln!(out, "  {:w$}  none", p.name)?,
            Some(d) => writeln!(
                out,
                "  {:w$}  #{} vcpu{} {}: recorded {}, {} says {} ({}, docs/kvm-semantics.md {}, {}{})",
                p.name,
                d.seq,
                d.vcpu,
                d.event,
                d.recorded,
                p.name,
                d.policy,
                d.rule.name,
                d.rule.section,
                d.rule.release,
                d.rule
                    .citation
                    .as_ref()
                    .map(|c| format!("; {c}"))
                    .unwrap_or_default()
            )?,
        }
    }
    let shown = if trace.starts_with(&dir.0) {
        "TRACE.kvt".to_string()
    } else {
        trace.display().to_string()
    };
    // Run from cargo's target directory (the README's `cargo run --release
    // -- demo`), `kvmtrace` is not on PATH: say how to run it.
    let me = invocation();
    writeln!(out, "\nnext:")?;
    writeln!(
        out,
        "  {me} replay {shown} --policy kvm-5.10   # one policy in full"
    )?;
    writeln!(
        out,
        "  {me} dump {shown} | head                 # the events"
    )?;
    writeln!(
        out,
        "  {me} policies                            # each preset's switches"
    )?;
    if me != "kvmtrace" {
        writeln!(
            out,
            "  (or `cargo install --path tools` once, then `kvmtrace ...`)"
        )?;
    }
    Ok(0)
}

/// The 16 quirk combinations of `offline_vs_live_ratio`: every subset of the
/// four quirks that change guest-visible outcomes in `tour`.
fn quirk_policies(dir: &Path) -> anyhow::Result<Vec<String>> {
    const QUIRKS: [&str; 4] = [
        "MWAIT_NEVER_UD_FAULTS",
        "MISC_ENABLE_NO_MWAIT",
        "CD_NW_CLEARED",
        "LAPIC_MMIO_HOLE",
    ];
    let mut v = Vec::new();
    for mask in 0..16u32 {
        let names: Vec<String> = (0..4)
            .filter(|b| mask & (1 << b) != 0)
            .map(|b| format!("\"{}\"", QUIRKS[b as usize]))
            .collect();
        let p = dir.join(format!("quirks-{mask:02}.toml"));
        std::fs::write(
            &p,
            format!(
                "name = \"host-quirks-{mask:02}\"\nbase = \"host\"\ndisabled_quirks = [{}]\n",
                names.join(", ")
            ),
        )?;
        v.push(p.display().to_string());
    }
    Ok(v)
}

/// `offline_vs_live_ratio`: 16 live runs of `tour` (one per quirk combination)
/// against one offline replay of one recording under the same 16 policies.
pub fn offline_vs_live(dir: &Path, quick: bool) -> anyhow::Result<Value> {
    if let Some(why) = kvm_unavailable() {
        anyhow::bail!("{why}");
    }
    let policies = quirk_policies(dir)?;
    let trace = dir.join("tour-live.kvt");
    // Live: every combination re-run (in --quick, two runs stand for 16).
    let runs = if quick { 2 } else { policies.len() };
    let t = Instant::now();
    for (i, p) in policies.iter().take(runs).enumerate() {
        let out = if i == 0 {
            trace.clone()
        } else {
            dir.join(format!("tour-live-{i}.kvt"))
        };
        record_tour(&out, p)?;
    }
    let live_s = t.elapsed().as_secs_f64() * policies.len() as f64 / runs as f64;
    // Offline: one decode, 16 lanes; best of 5 (the first run pays for cold
    // caches, like the first live run pays for loading the module's pages).
    let mut offline_s = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        super::replay::replay_file(&trace, &policies, false, Some(1))?;
        offline_s = offline_s.min(t.elapsed().as_secs_f64().max(1e-9));
    }
    Ok(json!({
        "offline_vs_live_ratio": live_s / offline_s,
        "offline_vs_live_live_s": live_s,
        "offline_vs_live_offline_s": offline_s,
        "offline_vs_live_combinations": policies.len(),
    }))
}

/// How the user runs this binary: `kvmtrace` when installed, `cargo run
/// --release --` when it runs from cargo's target directory.
fn invocation() -> &'static str {
    let in_target = std::env::current_exe()
        .map(|p| {
            let s = p.to_string_lossy().into_owned();
            s.contains("/target/release/") || s.contains("/target/debug/")
        })
        .unwrap_or(false);
    if in_target {
        "cargo run --release --"
    } else {
        "kvmtrace"
    }
}
