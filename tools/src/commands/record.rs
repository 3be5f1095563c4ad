//! `kvmtrace record --scenario NAME | --payload FILE -o FILE [--policy P]
//! [--mode intercept|observe] [--vcpus N] [--iterations N] [--on-full wait|drop]`;
//! `-- CMD ARGS…` and `--pid PID` record another VMM (`record_external`).

use std::io::Write;

use kvmtrace_format::CaptureMode;
use kvmtrace_recorder::{OnFull, RecordConfig, RecordSummary};

use crate::cli::{ModeArg, OnFullArg, RecordArgs};

pub fn config(args: &RecordArgs) -> RecordConfig {
    RecordConfig {
        scenario: args.scenario.clone(),
        payload: args.payload.clone(),
        output: args.output.clone(),
        policy: args.policy.clone(),
        mode: match args.mode {
            ModeArg::Intercept => CaptureMode::Intercept,
            ModeArg::Observe => CaptureMode::Observe,
        },
        vcpus: args.vcpus,
        iterations: args.iterations,
        on_full: match args.on_full {
            OnFullArg::Wait => OnFull::Wait,
            OnFullArg::Drop => OnFull::Drop,
        },
        discard_events: false,
    }
}

pub fn summary_json(s: &RecordSummary) -> serde_json::Value {
    serde_json::json!({
        "events": s.events,
        "dropped": s.dropped,
        "channel_wait_ns": s.channel_wait_ns,
        "vcpu_ns_per_event": s.vcpu_ns_per_event,
        "run_ns": s.run_ns,
        "bytes": s.bytes,
        "chunks": s.chunks,
    })
}

pub fn run(args: &RecordArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<i32> {
    if args.pid.is_some() || !args.command.is_empty() {
        return super::record_external::run(args, out, err);
    }
    if args.vcpus == Some(0) {
        anyhow::bail!("--vcpus 0: a VM needs at least one vCPU");
    }
    // Checks that need no /dev/kvm come first, so bad input is one error line.
    if let Some(name) = &args.scenario {
        let known: Vec<&str> = kvmtrace_recorder::scenarios()
            .iter()
            .map(|s| s.name)
            .collect();
        if !known.contains(&name.as_str()) {
            anyhow::bail!("unknown scenario {name:?}; known: {}", known.join(", "));
        }
    }
    if let Some(p) = &args.payload
        && let Err(e) = std::fs::metadata(p)
    {
        anyhow::bail!("cannot read payload {}: {e}", p.display());
    }
    let cfg = config(args);
    let what = args
        .scenario
        .clone()
        .or_else(|| args.payload.as_ref().map(|p| p.display().to_string()))
        .unwrap_or_default();
    writeln!(
        err,
        "recording {what} ({:?} mode, live policy {}) into {}",
        cfg.mode,
        cfg.policy,
        cfg.output.display()
    )?;
    let s = kvmtrace_recorder::record(&cfg)?;
    writeln!(
        err,
        "recorded {} events in {:.3} s: {} bytes in {} chunks ({:.2} bytes/event); \
         channel wait {:.3} ms, dropped {}; vCPU cost {:.0} ns/event",
        s.events,
        s.run_ns as f64 / 1e9,
        s.bytes,
        s.chunks,
        s.bytes as f64 / s.events.max(1) as f64,
        s.channel_wait_ns as f64 / 1e6,
        s.dropped,
        s.vcpu_ns_per_event
    )?;
    if s.dropped > 0 {
        writeln!(
            err,
            "warning: {} events were dropped (--on-full drop); the trace says so",
            s.dropped
        )?;
    }
    if args.json {
        let mut v = summary_json(&s);
        v["file"] = serde_json::json!(cfg.output.display().to_string());
        super::write_json(out, &v)?;
    }
    Ok(0)
}
