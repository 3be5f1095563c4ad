//! `kvmtrace record -o OUT.kvt -- CMD ARGS…` (wrap) and `kvmtrace record --pid
//! PID -o OUT.kvt [--duration S]` (attach): another VMM, recorded from the
//! kernel's KVM tracepoints (`kvmtrace_recorder::external`).
//!
//! Exit status: wrap mode passes the VMM's through (128 + N when a signal N
//! killed it); attach mode 0; 2 when nothing could be recorded (the command
//! does not exist or ran no vCPU, the PID is no VMM, tracefs is missing, the
//! VMM is already recorded), whatever the VMM's own status.

use std::io::Write;
use std::time::Duration;

use kvmtrace_recorder::external::{
    ExternalConfig, ExternalError, ExternalSummary, StopReason, Target, record_external,
};

use crate::cli::RecordArgs;

fn exit_code(st: &std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        _ => 1,
    }
}

pub fn config(args: &RecordArgs) -> anyhow::Result<ExternalConfig> {
    if args.scenario.is_some() || args.payload.is_some() {
        anyhow::bail!("--scenario/--payload run our own VMM; -- CMD and --pid record another");
    }
    let target = match (args.pid, args.command.is_empty()) {
        (Some(_), false) => anyhow::bail!("give either --pid PID or -- CMD, not both"),
        (Some(pid), true) => Target::Attach(pid),
        (None, false) => Target::Wrap(args.command.clone()),
        (None, true) => anyhow::bail!("give --pid PID or -- CMD"),
    };
    let duration = match args.duration {
        Some(d) if !(d > 0.0 && d < 1e9) => {
            anyhow::bail!("--duration {d}: a number of seconds above 0")
        }
        d => d.map(Duration::from_secs_f64),
    };
    if args.buffer_kb == 0 || args.buffer_kb > 1 << 20 {
        anyhow::bail!("--buffer-kb {}: between 1 and 1048576", args.buffer_kb);
    }
    Ok(ExternalConfig {
        target,
        output: args.output.clone(),
        duration,
        buffer_kb: args.buffer_kb,
        ioctl_tap: !args.no_ioctl_tap,
    })
}

fn summary_json(s: &ExternalSummary) -> serde_json::Value {
    let traces: Vec<serde_json::Value> = s
        .traces
        .iter()
        .map(|t| {
            serde_json::json!({
                "file": t.path.display().to_string(),
                "pid": t.pid,
                "vcpus": t.vcpus,
                "guessed_vcpus": t.guessed,
                "records": t.records,
            })
        })
        .collect();
    serde_json::json!({
        "traces": traces,
        "vmm_pid": s.vmm_pid,
        "exit_code": s.exit.as_ref().map(exit_code),
        "stop": match s.stop {
            StopReason::VmmExited => "vmm_exited".to_string(),
            StopReason::Duration => "duration".to_string(),
            StopReason::Detached { signal } => format!("signal {signal}"),
        },
        "lost": s.lost,
        "ioctl_tap": s.tap,
        "tap_events": s.tap_events,
        "vm_membership_guessed": s.membership_guessed,
    })
}

pub fn run(args: &RecordArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<i32> {
    let cfg = config(args)?;
    match &cfg.target {
        Target::Wrap(argv) => writeln!(
            err,
            "recording {} (wrap mode, kernel tracepoints) into {}",
            argv.first()
                .map(|a| a.to_string_lossy().into_owned())
                .unwrap_or_default(),
            cfg.output.display()
        )?,
        Target::Attach(pid) => writeln!(
            err,
            "recording VMM {pid} (attach mode, kernel tracepoints; Ctrl-C detaches) into {}",
            cfg.output.display()
        )?,
    }
    let mut notes = Vec::new();
    let res = record_external(&cfg, &mut |n| {
        notes.push(n.to_string());
    });
    for n in &notes {
        writeln!(err, "{n}")?;
    }
    let s = match res {
        Ok(s) => s,
        Err(ExternalError::Nothing { what, .. }) => {
            writeln!(err, "kvmtrace: error: {what}: nothing recorded")?;
            return Ok(2);
        }
        Err(e) => return Err(e.into()),
    };
    for t in &s.traces {
        writeln!(
            err,
            "recorded VM of pid {} into {}: {} vCPUs, {} records{}",
            t.pid.map_or("?".to_string(), |p| p.to_string()),
            t.path.display(),
            t.vcpus.len(),
            t.records,
            if t.guessed.is_empty() {
                String::new()
            } else {
                format!(" (vCPU numbers guessed for {:?})", t.guessed)
            }
        )?;
    }
    if s.traces.len() > 1 {
        writeln!(
            err,
            "{} VMs, one trace each (VM k in OUTPUT-vmK)",
            s.traces.len()
        )?;
    }
    if s.lost > 0 {
        writeln!(
            err,
            "warning: the kernel's ring buffer lost {} events (every trace says so: `Lost {{ tracefs }}`); raise --buffer-kb",
            s.lost
        )?;
    }
    if args.json {
        super::write_json(out, &summary_json(&s))?;
    }
    Ok(match (&s.stop, &s.exit) {
        (StopReason::VmmExited, Some(st)) => exit_code(st),
        _ => 0,
    })
}
