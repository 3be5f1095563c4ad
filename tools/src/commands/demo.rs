//! `kvmtrace demo`: record what the kernel decides here and replay it against
//! every preset and `host`, printing the divergence matrix (policy x behaviour)
//! and the first divergence of each. Three modes, said in the first line: our
//! guest under QEMU in wrap mode (QEMU installed), `tour` under our own VMM in
//! observe mode (no QEMU), the bundled QEMU recording (no /dev/kvm).

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
/// The demo's recording where /dev/kvm is missing: our guest under QEMU in wrap
/// mode (the same as `tests/corpus/fidelity/qemu-guest.kvt`).
pub const BUNDLED_QEMU: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/qemu-guest.kvt");

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

fn record_tour(
    out: &Path,
    policy: &str,
    mode: kvmtrace_format::CaptureMode,
) -> anyhow::Result<kvmtrace_recorder::RecordSummary> {
    Ok(kvmtrace_recorder::record(
        &kvmtrace_recorder::RecordConfig {
            scenario: Some("tour".into()),
            payload: None,
            output: out.to_path_buf(),
            policy: policy.into(),
            mode,
            vcpus: None,
            iterations: None,
            on_full: kvmtrace_recorder::OnFull::Wait,
            discard_events: false,
        },
    )?)
}

/// `qemu-system-x86_64` on `PATH`.
pub fn find_qemu() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("qemu-system-x86_64"))
        .find(|p| p.is_file())
}

/// Mode 1: our guest under QEMU, recorded in wrap mode (the kernel decides).
fn record_qemu(qemu: &Path, out: &Path, err: &mut dyn Write) -> anyhow::Result<()> {
    let guest = std::env::temp_dir().join("kvmtrace-demo-guest.elf");
    std::fs::write(&guest, kvmtrace_recorder::qemu_guest::build()?)
        .with_context(|| format!("writing {}", guest.display()))?;
    let mut argv: Vec<String> = ["kvmtrace", "record", "-o"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    argv.push(out.display().to_string());
    argv.push("--".into());
    argv.push(qemu.display().to_string());
    argv.extend(super::guest::qemu_args(&guest));
    writeln!(err, "$ kvmtrace {}", argv[1..].join(" "))?;
    let cli = <crate::cli::Cli as clap::Parser>::try_parse_from(&argv)?;
    let crate::cli::Command::Record(a) = cli.command else {
        anyhow::bail!("internal: not a record command");
    };
    let code = super::record::run(&a, &mut std::io::sink(), err)?;
    if code != kvmtrace_recorder::qemu_guest::QEMU_EXIT_OK {
        anyhow::bail!(
            "QEMU exited with status {code} (our guest ends it with {})",
            kvmtrace_recorder::qemu_guest::QEMU_EXIT_OK
        );
    }
    Ok(())
}

/// Which trace the demo replays, and how it was obtained (said first in the
/// output): 1. our guest under QEMU in wrap mode; 2. without QEMU, `tour` under
/// our own VMM in observe mode; 3. without /dev/kvm, the bundled recording. In
/// 1 and 2 the kernel decided the outcomes the matrix compares the presets with.
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
            if let Some(qemu) = find_qemu() {
                let out = std::env::temp_dir().join("kvmtrace-demo-qemu.kvt");
                writeln!(
                    err,
                    "QEMU found: recording our guest (`kvmtrace guest qemu`) under QEMU with SeaBIOS, wrap mode ..."
                )?;
                match record_qemu(&qemu, &out, err) {
                    Ok(()) => {
                        return Ok((
                            out,
                            "mode 1 of 3: recorded our guest under QEMU just now in wrap mode (the kernel decided every outcome)".into(),
                        ));
                    }
                    Err(e) => writeln!(
                        err,
                        "recording QEMU failed: {e:#}; falling back to our own VMM"
                    )?,
                }
            } else {
                writeln!(
                    err,
                    "qemu-system-x86_64 not found (apt-get install qemu-system-x86 for mode 1); recording our own VMM in observe mode ..."
                )?;
            }
            let out = std::env::temp_dir().join("kvmtrace-demo-tour.kvt");
            match record_tour(&out, "host", kvmtrace_format::CaptureMode::Observe) {
                Ok(s) => {
                    writeln!(
                        err,
                        "recorded {} events in {:.2} s ({} bytes)",
                        s.events,
                        s.run_ns as f64 / 1e9,
                        s.bytes
                    )?;
                    return Ok((
                        out,
                        "mode 2 of 3: recorded `tour` under our own VMM just now in observe mode (the kernel decided what it handles)".into(),
                    ));
                }
                Err(e) => writeln!(err, "recording failed: {e:#}; falling back")?,
            }
        }
        Some(why) => writeln!(
            err,
            "no usable /dev/kvm here ({why}); replaying a bundled recording instead"
        )?,
    }
    let bundled = Path::new(BUNDLED_QEMU);
    if bundled.is_file() && crate::trace_io::verify(bundled).is_ok_and(|r| r.is_ok()) {
        return Ok((
            bundled.to_path_buf(),
            format!(
                "mode 3 of 3: bundled recording {} (our guest under QEMU, wrap mode, on the build machine)",
                bundled.display()
            ),
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

/// Policy files for every subset of `quirks` (at most 4: 16 combinations).
fn quirk_policies(dir: &Path, quirks: &[&str]) -> anyhow::Result<Vec<String>> {
    let k = quirks.len().min(4);
    let mut v = Vec::new();
    for mask in 0..(1u32 << k) {
        let names: Vec<String> = (0..k)
            .filter(|b| mask & (1 << b) != 0)
            .map(|b| format!("\"{}\"", quirks[b]))
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

/// The quirks whose disabling changes some outcome of `trace` under `host`
/// (replayed against host and host with each quirk disabled, one pass).
fn quirks_that_matter(dir: &Path, trace: &Path) -> anyhow::Result<Vec<&'static str>> {
    let mut specs = vec!["host".to_string()];
    for (name, _) in kvmtrace_replayer::quirks::ALL {
        let p = dir.join(format!("one-quirk-{name}.toml"));
        std::fs::write(
            &p,
            format!("name = \"host-no-{name}\"\nbase = \"host\"\ndisabled_quirks = [\"{name}\"]\n"),
        )?;
        specs.push(p.display().to_string());
    }
    let r = super::replay::replay_file(trace, &specs, false, Some(1))?;
    let base = &r.report.policies[0];
    let same = |p: &kvmtrace_replayer::PolicyReport| {
        p.divergences == base.divergences
            && p.by_behaviour == base.by_behaviour
            && p.unmodeled == base.unmodeled
            && p.unreachable == base.unreachable
            && p.kept
                .iter()
                .map(|d| (d.seq, &d.policy))
                .eq(base.kept.iter().map(|d| (d.seq, &d.policy)))
    };
    Ok(kvmtrace_replayer::quirks::ALL
        .iter()
        .zip(&r.report.policies[1..])
        .filter(|(_, p)| !same(p))
        .map(|((n, _), _)| *n)
        .collect())
}

/// `offline_vs_live_ratio`: live runs of `tour`, one per combination of the
/// quirks that change some outcome of `tour` (found by replaying one
/// recording), against one offline replay of that recording under the same
/// combinations. Settings that change nothing are left out: replaying them
/// would be free and flatter the ratio.
pub fn offline_vs_live(dir: &Path, quick: bool) -> anyhow::Result<Value> {
    if let Some(why) = kvm_unavailable() {
        anyhow::bail!("{why}");
    }
    let trace = dir.join("tour-live.kvt");
    let t0 = Instant::now();
    record_tour(&trace, "host", kvmtrace_format::CaptureMode::Intercept)?;
    let first_live_s = t0.elapsed().as_secs_f64();
    let quirks = quirks_that_matter(dir, &trace)?;
    anyhow::ensure!(
        !quirks.is_empty(),
        "no quirk changes an outcome of tour: no offline-vs-live figure"
    );
    let policies = quirk_policies(dir, &quirks)?;
    // Live: every other combination re-run (in --quick, one more run stands
    // for the rest); the first was the recording itself.
    let runs = if quick { 1 } else { policies.len() - 1 };
    let t = Instant::now();
    for (i, p) in policies.iter().skip(1).take(runs).enumerate() {
        record_tour(
            &dir.join(format!("tour-live-{i}.kvt")),
            p,
            kvmtrace_format::CaptureMode::Intercept,
        )?;
    }
    let per_run = (first_live_s + t.elapsed().as_secs_f64()) / (runs + 1) as f64;
    let live_s = per_run * policies.len() as f64;
    // Offline: one decode, one lane per combination; best of 5.
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
        "offline_vs_live_quirks": quirks.iter().take(4).collect::<Vec<_>>(),
        "offline_vs_live_trace": "tour recorded here under host (intercept); policies: host with every subset of the quirks that change an outcome of it",
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
