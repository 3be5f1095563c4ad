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
    if let Some(n) = args.iterations {
        // Only looping scenarios (their description names the flag) use it.
        let loops = args.scenario.as_ref().is_some_and(|name| {
            kvmtrace_recorder::scenarios()
                .iter()
                .any(|s| s.name == name && s.about.contains("--iterations"))
        });
        if !loops {
            let what = match &args.scenario {
                Some(name) => format!("scenario {name} has no loop"),
                None => "a payload runs as it is".into(),
            };
            anyhow::bail!("--iterations {n}: {what}; it applies to msr-loop");
        }
    }
    if matches!(args.mode, ModeArg::Observe) && args.policy != "host" {
        // The kernel decides every outcome in observe mode: a live policy
        // would be silently ignored.
        anyhow::bail!(
            "--policy {} has no effect with --mode observe: the kernel decides every outcome there; record without --policy (or use --mode intercept to let the policy answer live), then replay the recording with --policy {}",
            args.policy,
            args.policy
        );
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
        "recording {what} ({} mode, live policy {}) into {}; Ctrl-C stops the guest and keeps the trace",
        match cfg.mode {
            CaptureMode::Observe => "observe",
            _ => "intercept",
        },
        cfg.policy,
        cfg.output.display()
    )?;
    // Ctrl-C / SIGTERM stop the guest; the trace is finished as at its end.
    let stop = kvmtrace_recorder::stop::StopSignal::install()
        .map_err(|e| anyhow::anyhow!("installing the Ctrl-C handler: {e}"))?;
    let pb = crate::progress::recording(&kvmtrace_format::incomplete_path(&cfg.output));
    let res = kvmtrace_recorder::record(&cfg);
    pb.finish_and_clear();
    drop(stop);
    let s = res?;
    if let Some(why) = &s.interrupted {
        writeln!(
            err,
            "{why}: stopped the guest, flushed and finished the trace"
        )?;
    }
    let secs = s.run_ns as f64 / 1e9;
    writeln!(
        err,
        "recorded {} events in {:.3} s ({}): {} in {} chunks ({:.2} bytes/event); \
         channel wait {:.3} ms, dropped {}; {}",
        s.events,
        secs,
        super::text::rate(s.events as f64 / secs.max(1e-9)),
        kvmtrace_format::error::human_bytes(s.bytes),
        s.chunks,
        s.bytes as f64 / s.events.max(1) as f64,
        s.channel_wait_ns as f64 / 1e6,
        s.dropped,
        vcpu_cost(s.vcpu_ns_per_event)
    )?;
    if s.dropped > 0 {
        writeln!(
            err,
            "warning: {} events were dropped (--on-full drop); the trace says so",
            s.dropped
        )?;
    }
    let ended = guest_ended(&cfg.output);
    if let Some(e) = &ended {
        writeln!(
            err,
            "the live policy {} ended the guest: {e}; the recording stops there (replay it with --policy to see what other kernels do)",
            cfg.policy
        )?;
    }
    if args.json {
        let mut v = summary_json(&s);
        v["file"] = serde_json::json!(cfg.output.display().to_string());
        v["guest_ended"] = serde_json::json!(ended);
        super::write_json(out, &v)?;
    }
    Ok(0)
}

/// Where the recorded guest died (`vm_failed`: an outcome, or the end
/// reason), in words; `None` if it did not.
pub fn guest_ended(path: &std::path::Path) -> Option<String> {
    use kvmtrace_format::{EndReason, Event, MsrOutcome};
    let mut r = kvmtrace_format::TraceReader::open(path).ok()?;
    for rec in r.records() {
        let rec = rec.ok()?;
        let errno = match &rec.event {
            Event::MsrRead {
                outcome: MsrOutcome::VmFailed { errno },
                ..
            }
            | Event::MsrWrite {
                outcome: MsrOutcome::VmFailed { errno },
                ..
            } => *errno,
            Event::End {
                reason: EndReason::VmFailed { errno },
            } => *errno,
            _ => continue,
        };
        return Some(format!(
            "#{} vcpu {} {}: vm_failed (KVM_RUN errno {errno})",
            rec.seq,
            rec.vcpu,
            kvmtrace_replayer::report::describe_event(&rec.event)
        ));
    }
    None
}

/// The recorder's own cost on the vCPU threads, explained.
fn vcpu_cost(ns: f64) -> String {
    if ns > 0.0 {
        format!("vCPU cost {ns:.0} ns/event (time on vCPU threads to stamp and queue an event)")
    } else {
        "vCPU cost not measured (too few events were timed: 1 in 64 is)".into()
    }
}
