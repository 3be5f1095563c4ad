//! Human-readable renderings shared by dump, replay and diff.

use kvmtrace_format::{
    AfterShutdown, Event, InitSource, IpiMode, LostSource, MsrExitReason, MsrOutcome, MwaitOutcome,
    Origin, ShutdownCause, UserAnswer,
};

/// A time relative to the start of a trace, for humans: `12.345678 s`.
pub fn rel_time(ns: u64) -> String {
    format!("{}.{:06} s", ns / 1_000_000_000, ns % 1_000_000_000 / 1000)
}

/// A wall-clock time (nanoseconds since the Unix epoch) as ISO-8601 UTC:
/// `2026-12-03T15:38:18.123Z`; `unknown` for 0 (imports, synthetic traces).
pub fn wall_time(unix_ns: u64) -> String {
    if unix_ns == 0 {
        return "unknown".into();
    }
    let t = chrono::DateTime::from_timestamp_nanos(i64::try_from(unix_ns).unwrap_or(i64::MAX));
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// An event rate for humans: `5.58 M/s`, `812.3 k/s`, `950/s`.
pub fn rate(per_s: f64) -> String {
    if !per_s.is_finite() || per_s < 0.0 {
        return "-".into();
    }
    if per_s >= 1e9 {
        format!("{:.2} G/s", per_s / 1e9)
    } else if per_s >= 1e6 {
        format!("{:.2} M/s", per_s / 1e6)
    } else if per_s >= 1e3 {
        format!("{:.1} k/s", per_s / 1e3)
    } else {
        format!("{per_s:.0}/s")
    }
}

/// `0x401 (MC0_STATUS)` style label, with the replayer's MSR name table (one
/// table for dump, diff and replay reports).
pub fn msr_label(index: u32) -> String {
    match kvmtrace_replayer::names::msr_name(index) {
        "" if (0x800..=0x8ff).contains(&index) => format!("{index:#x} (x2APIC)"),
        "" => format!("{index:#x}"),
        n => format!("{index:#x} ({n})"),
    }
}

pub fn msr_outcome(o: &MsrOutcome) -> String {
    match o {
        MsrOutcome::Value(v) => format!("value {v:#x}"),
        MsrOutcome::Ok => "ok".into(),
        MsrOutcome::InjectGp => "inject_gp".into(),
        MsrOutcome::UserExit { reason, answer } => format!(
            "user_exit({}->{})",
            exit_reason(*reason),
            match answer {
                UserAnswer::Value(v) => format!("value {v:#x}"),
                UserAnswer::Ok => "ok".into(),
                UserAnswer::Gp => "gp".into(),
            }
        ),
        MsrOutcome::VmFailed { errno } => format!("vm_failed(errno {errno})"),
    }
}

pub fn mwait_outcome(o: &MwaitOutcome) -> &'static str {
    match o {
        MwaitOutcome::Nop => "nop",
        MwaitOutcome::InjectUd => "inject_ud",
        MwaitOutcome::NotIntercepted => "not_intercepted",
    }
}

fn exit_reason(r: MsrExitReason) -> &'static str {
    match r {
        MsrExitReason::Inval => "inval",
        MsrExitReason::Unknown => "unknown",
        MsrExitReason::Filter => "filter",
    }
}

/// Where an INIT came from, in words.
pub fn init_source(s: &InitSource) -> String {
    match s {
        InitSource::Ipi { from } => format!("an INIT IPI from vCPU {from}"),
        InitSource::Shutdown => "a shutdown".into(),
        InitSource::Host => "the VMM".into(),
        InitSource::Kernel => "the in-kernel LAPIC".into(),
    }
}

fn ipi_mode(m: &IpiMode) -> String {
    match m {
        IpiMode::Fixed => "fixed".into(),
        IpiMode::LowestPriority => "lowest-priority".into(),
        IpiMode::Smi => "SMI".into(),
        IpiMode::Nmi => "NMI".into(),
        IpiMode::Init => "INIT".into(),
        IpiMode::Sipi => "SIPI".into(),
        IpiMode::Other(n) => format!("delivery mode {n}"),
    }
}

fn lost_source(s: &LostSource) -> &'static str {
    match s {
        LostSource::Channel => "writer channel full",
        LostSource::Tracefs => "kernel trace ring overrun",
        LostSource::Import => "malformed import lines",
    }
}

fn origin(o: &Origin) -> &'static str {
    match o {
        Origin::Guest => "guest",
        Origin::Host => "host",
    }
}

/// One line describing an event.
pub fn describe(e: &Event) -> String {
    match e {
        Event::MsrRead {
            index,
            origin: o,
            outcome,
            ..
        } => format!(
            "rdmsr {} {} -> {}",
            msr_label(*index),
            origin(o),
            msr_outcome(outcome)
        ),
        Event::MsrWrite {
            index,
            value,
            origin: o,
            outcome,
            ..
        } => format!(
            "wrmsr {} = {value:#x} {} -> {}",
            msr_label(*index),
            origin(o),
            msr_outcome(outcome)
        ),
        Event::Monitor { rip, outcome, .. } => {
            format!("monitor rip={rip:#x} -> {}", mwait_outcome(outcome))
        }
        Event::Mwait { rip, outcome, .. } => {
            format!("mwait rip={rip:#x} -> {}", mwait_outcome(outcome))
        }
        Event::Shutdown {
            rip, cause, then, ..
        } => format!(
            "shutdown rip={rip:#x} ({}), then {}",
            match cause {
                ShutdownCause::TripleFault => "triple fault",
                ShutdownCause::Other => "other cause",
            },
            match then {
                AfterShutdown::Reset => "reset",
                AfterShutdown::Init => "init",
                AfterShutdown::Stop => "stop",
                AfterShutdown::Resume => "resume",
            }
        ),
        Event::Reset { state, .. } => format!(
            "reset rip={:#x} cr0={:#x} rdx={:#x} apic_base={:#x}",
            state.rip,
            state.cr0,
            state.rdx(),
            state.apic_base
        ),
        Event::Init {
            source,
            before,
            after,
            ..
        } => format!(
            "init from {}: cr0 {:#x} -> {:#x}, rdx -> {:#x}, rip -> {:#x}",
            init_source(source),
            before.cr0,
            after.cr0,
            after.rdx(),
            after.rip
        ),
        Event::Sipi { from, vector } if *from == kvmtrace_format::SIPI_FROM_UNKNOWN => {
            format!("sipi vector {vector:#x}")
        }
        Event::Sipi { from, vector } => format!("sipi from vcpu {from} vector {vector:#x}"),
        Event::Ipi { dst, vector, mode } => {
            format!("ipi to {dst} vector {vector:#x} {}", ipi_mode(mode))
        }
        Event::Cpuid { entries } => format!("cpuid ({} entries)", entries.len()),
        Event::QuirksDisabled { cap, mask } => {
            format!("quirks disabled (cap {cap}) mask {mask:#x}")
        }
        Event::MsrFilter { filter } => format!(
            "msr filter default_{} with {} ranges",
            if filter.default_deny { "deny" } else { "allow" },
            filter.ranges.len()
        ),
        Event::UserSpaceMsr { mask } => format!("user-space msr exits mask {mask:#x}"),
        Event::SetupMce { mcg_cap } => format!("setup mce mcg_cap={mcg_cap:#x}"),
        Event::Io {
            port,
            size,
            write,
            data,
        } => format!(
            "io {} port {port:#x} size {size} data {data:#x}",
            if *write { "out" } else { "in" }
        ),
        Event::Exception {
            vector,
            error_code,
            reinjected,
        } => format!(
            "exception vector {vector}{}{}",
            error_code.map(|c| format!(" ({c:#x})")).unwrap_or_default(),
            if *reinjected { " [reinjected]" } else { "" }
        ),
        Event::Halt => "hlt".into(),
        Event::RawExit { exit_reason, data } => format!(
            "unhandled exit {} ({} bytes)",
            kvmtrace_format::kvm_exit_name(*exit_reason)
                .map_or_else(|| format!("KVM exit {exit_reason}"), str::to_string),
            data.len()
        ),
        Event::Lost { source, count: 0 } => {
            format!(
                "LOST an uncounted number of events ({})",
                lost_source(source)
            )
        }
        Event::Lost { source, count } => {
            format!("LOST {count} events ({})", lost_source(source))
        }
        Event::End { reason } => format!("end: {}", reason.describe()),
        Event::VmmState { set, result } => format!(
            "vmm {} {}: {}",
            set.ioctl(),
            set.describe(),
            kvmtrace_format::ioctl_result(*result)
        ),
        Event::CapEnabled {
            cap,
            args,
            vcpu_scope,
            result,
        } => format!(
            "vmm KVM_ENABLE_CAP {}: {}",
            kvmtrace_format::describe_cap_enable(*cap, args, *vcpu_scope),
            kvmtrace_format::ioctl_result(*result)
        ),
        Event::KernelReset { known } => format!("reset {}", known_state(known)),
        Event::KernelInit { from, known } => format!(
            "init by the in-kernel lapic{} {}",
            from.map(|f| format!(" from vcpu {f}")).unwrap_or_default(),
            known_state(known)
        ),
        Event::VcpuThread {
            pid,
            tid,
            comm,
            identity,
        } => {
            let identity = format!("{identity:?}").to_lowercase();
            format!("vcpu thread {comm:?} pid {pid} tid {tid} identity {identity}")
        }
    }
}

/// `(registers not seen)` or the registers a capture saw, `name=value`.
fn known_state(k: &kvmtrace_format::KnownState) -> String {
    let mut parts = Vec::new();
    let mut put = |name: &str, v: Option<u64>| {
        if let Some(v) = v {
            parts.push(format!("{name}={v:#x}"));
        }
    };
    put("rip", k.rip);
    put("cs", k.cs_selector.map(u64::from));
    put("cs_base", k.cs_base);
    put("rdx", k.rdx);
    put("cr0", k.cr0);
    put("apic_base", k.apic_base);
    put("mp_state", k.mp_state.map(u64::from));
    if parts.is_empty() {
        "(registers not seen)".to_string()
    } else {
        format!("(seen: {}; the rest unknown)", parts.join(" "))
    }
}
