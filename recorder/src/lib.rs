//! `kvmtrace-recorder`: a KVM vCPU loop that records MSR accesses, MONITOR/MWAIT
//! and INIT/RESET/SHUTDOWN transitions, asking the replayer's engine what to answer.
//!
//! Map:
//! - [`record`] / [`record_spec`]: one recording (this file);
//! - `vm`: `/dev/kvm`, host facts for the header, VM, CPUID, capture filter;
//! - `guest`: guest memory, page tables, GDT, IDT stubs, long-mode registers;
//! - `vcpu`: the per-vCPU state machine, INIT/SIPI, host steps; `exits`: exit handlers;
//! - `state`: RESET/INIT architectural state read from / written to a vCPU;
//! - `writer` + `sink`: batching, the channel, the writer thread, the trace file;
//!   `clock`: the stamps' clock (TSC between per-batch CLOCK_MONOTONIC anchors);
//! - observe mode: `observe` (tracefs capture, line parser), `live` (drains the
//!   capture and the vCPUs' held records while the guest runs), `merge` (their
//!   exact per-vCPU merge, incremental, bounded memory);
//! - `payload`: flat and ELF payloads; `kvm_extra`: `KVM_X86_SETUP_MCE`;
//! - `external`: recording another VMM (`record -- CMD`, `record --pid`) from
//!   the kernel's tracepoints, one trace per VM.

pub mod clock;
pub mod exits;
pub mod external;
pub mod guest;
pub mod kvm_check;
pub mod kvm_extra;
pub mod layout;
pub mod live;
pub mod merge;
pub mod observe;
pub mod payload;
pub mod qemu_guest;
pub mod scenarios;
pub mod sink;
pub mod state;
pub mod stop;
pub mod vcpu;
pub mod vm;
pub mod vmm_tap;
pub mod writer;

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kvmtrace_format::{
    CaptureMode, DecidedBy, Event, Payload as PayloadInfo, TraceHeader, VmConfig,
};
use kvmtrace_replayer::{Engine, Policy, PolicyError};
use sha2::{Digest, Sha256};

use crate::scenarios::{HostStep, ScenarioParams, ScenarioSpec};
use crate::vcpu::{Vcpu, VmCtx, host_msr_step};
use crate::writer::{OutStats, Shared, Writer};

/// What to do when the vCPU-to-writer channel is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnFull {
    /// Lossless: the vCPU waits; the wait time is counted and reported.
    #[default]
    Wait,
    /// Drop the event and count it (recorded as a `Lost` event).
    Drop,
}

/// One `kvmtrace record` run.
#[derive(Clone, Debug)]
pub struct RecordConfig {
    /// A built-in scenario name, or
    pub scenario: Option<String>,
    /// a user payload (flat binary or 64-bit ELF). Exactly one of the two.
    pub payload: Option<PathBuf>,
    pub output: PathBuf,
    /// Live policy spec (preset, `host` or a policy file), default `host`.
    pub policy: String,
    /// `Intercept` (default) or `Observe`.
    pub mode: CaptureMode,
    /// vCPU count; `None` = the scenario's default.
    pub vcpus: Option<u32>,
    /// Loop count for looping scenarios (`msr-loop`); `None` = default.
    pub iterations: Option<u64>,
    pub on_full: OnFull,
    /// Benchmark baseline: build nothing, send nothing; events are discarded
    /// before the channel (`record_overhead_ratio`'s denominator). In observe
    /// mode the kernel's tracepoints stay off too (`observe_overhead_ratio`'s
    /// denominator: the same run untraced).
    pub discard_events: bool,
}

impl RecordConfig {
    /// Defaults: policy `host`, intercept mode, lossless.
    pub fn new(output: impl Into<PathBuf>) -> RecordConfig {
        RecordConfig {
            scenario: None,
            payload: None,
            output: output.into(),
            policy: "host".into(),
            mode: CaptureMode::Intercept,
            vcpus: None,
            iterations: None,
            on_full: OnFull::Wait,
            discard_events: false,
        }
    }
}

/// What a recording produced.
#[derive(Clone, Debug, Default)]
pub struct RecordSummary {
    pub events: u64,
    pub dropped: u64,
    /// Total time vCPU threads waited on a full channel.
    pub channel_wait_ns: u64,
    /// Time on vCPU threads spent building and sending events, per event
    /// (mean of 1-in-64 timed events plus the batch sends).
    pub vcpu_ns_per_event: f64,
    /// The median of the timed events' stamp+push cost (robust to a loaded
    /// machine's cache misses and preemption).
    pub vcpu_ns_per_event_median: f64,
    /// Wall time of the guest run.
    pub run_ns: u64,
    pub bytes: u64,
    pub chunks: u64,
    /// Exits the recorder did not understand (recorded as `RawExit` events).
    pub raw_exits: u64,
    /// Observe mode: the tracefs capture's counters (events read, ring-buffer
    /// overruns and the other losses the trace's `Lost { Tracefs }` sums).
    pub capture: Option<observe::CaptureStats>,
    /// The signal that stopped the recording early (`stop::StopSignal`), by
    /// name; the trace is finished all the same.
    pub interrupted: Option<String>,
}

/// A built-in scenario, for `kvmtrace scenarios`.
#[derive(Clone, Debug)]
pub struct ScenarioInfo {
    pub name: &'static str,
    pub about: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("unknown scenario {name:?}; known: {known}")]
    UnknownScenario { name: String, known: String },
    #[error("recording is not implemented yet")]
    NotImplemented,
    #[error("--mode {mode:?}: a recording is made in intercept or observe mode")]
    Mode { mode: CaptureMode },
    #[error("give exactly one of a scenario and a payload")]
    ScenarioOrPayload,
    #[error("--vcpus {n}: must be between 1 and {max}")]
    Vcpus { n: u32, max: u32 },
    #[error("scenario {name}: {what}")]
    BadSpec { name: String, what: String },
    #[error(transparent)]
    Scenario(scenarios::ScenarioError),
    #[error(transparent)]
    Payload(#[from] payload::PayloadError),
    #[error(transparent)]
    Vm(#[from] vm::VmError),
    #[error(transparent)]
    Guest(#[from] guest::GuestError),
    #[error("reading the RESET state of vCPU {vcpu}")]
    ReadResetState {
        vcpu: u32,
        #[source]
        source: state::StateError,
    },
    #[error("putting vCPU {vcpu} into the live policy's RESET state")]
    ApplyResetState {
        vcpu: u32,
        #[source]
        source: state::StateError,
    },
    #[error("policy {spec:?}")]
    Policy {
        spec: String,
        #[source]
        source: PolicyError,
    },
    #[error("observe mode: capturing the kernel's KVM tracepoints")]
    Observe(#[source] observe::ObserveError),
    #[error("writing the trace")]
    Output(#[from] sink::SinkError),
    #[error("spawning a vCPU thread")]
    SpawnThread(#[source] std::io::Error),
    #[error("the guest run failed (the trace was written to {output}): {}", messages.join("; "))]
    GuestFailed {
        output: PathBuf,
        messages: Vec<String>,
        summary: Box<RecordSummary>,
    },
}

/// The built-in scenarios.
pub fn scenarios() -> Vec<ScenarioInfo> {
    scenarios::list()
}

/// Run a guest and record it.
pub fn record(cfg: &RecordConfig) -> Result<RecordSummary, RecordError> {
    match (&cfg.scenario, &cfg.payload) {
        (Some(name), None) => {
            let params = ScenarioParams {
                vcpus: cfg.vcpus,
                iterations: cfg.iterations,
            };
            if let Some(n) = cfg.vcpus {
                check_vcpus(n)?;
            }
            let spec = scenarios::try_build(name, &params).map_err(|e| match e {
                scenarios::ScenarioError::Unknown { name, known } => {
                    RecordError::UnknownScenario { name, known }
                }
                other => RecordError::Scenario(other),
            })?;
            record_spec(cfg, &spec)
        }
        (None, Some(path)) => {
            let n = cfg.vcpus.unwrap_or(1);
            check_vcpus(n)?;
            let p = payload::load(path)?;
            let name = path
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.display().to_string());
            let spec = payload::spec(&name, &p, n);
            let sha = hex_sha256(&p.file_bytes);
            run(cfg, &spec, sha)
        }
        _ => Err(RecordError::ScenarioOrPayload),
    }
}

/// Record a spec built by the caller (tests, ad-hoc probes).
pub fn record_spec(cfg: &RecordConfig, spec: &ScenarioSpec) -> Result<RecordSummary, RecordError> {
    let mut h = Sha256::new();
    for r in &spec.regions {
        h.update(r.addr.to_le_bytes());
        h.update(&r.bytes);
    }
    let sha = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    run(cfg, spec, sha)
}

fn hex_sha256(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn check_vcpus(n: u32) -> Result<(), RecordError> {
    if n == 0 || n > layout::MAX_VCPUS {
        return Err(RecordError::Vcpus {
            n,
            max: layout::MAX_VCPUS,
        });
    }
    Ok(())
}

fn check_spec(spec: &ScenarioSpec) -> Result<(), RecordError> {
    check_vcpus(spec.vcpus)?;
    let bad = |what: String| RecordError::BadSpec {
        name: spec.name.clone(),
        what,
    };
    if spec.starts.len() != spec.vcpus as usize {
        return Err(bad(format!(
            "{} start entries for {} vCPUs",
            spec.starts.len(),
            spec.vcpus
        )));
    }
    for r in &spec.regions {
        let end = r.addr.saturating_add(r.bytes.len() as u64);
        let sipi = r.addr >= layout::SIPI_PAGE_MIN && end <= layout::SIPI_PAGE_MAX;
        let main = r.addr >= layout::CODE_ADDR && end <= layout::STACK_BASE;
        if !sipi && !main {
            return Err(bad(format!(
                "region {:#x}..{end:#x} is outside the SIPI pages and the code/data area",
                r.addr
            )));
        }
    }
    Ok(())
}

/// Environment variable: stop a guest that runs longer than this many seconds
/// (a runaway payload never hangs a CI job; unset = no limit).
pub const TIMEOUT_ENV: &str = "KVMTRACE_RECORD_TIMEOUT_S";

fn record_timeout() -> Option<Duration> {
    std::env::var(TIMEOUT_ENV)
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|&s| s > 0)
        .map(Duration::from_secs)
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

fn run(
    cfg: &RecordConfig,
    spec: &ScenarioSpec,
    sha256: String,
) -> Result<RecordSummary, RecordError> {
    if !matches!(cfg.mode, CaptureMode::Intercept | CaptureMode::Observe) {
        return Err(RecordError::Mode { mode: cfg.mode });
    }
    check_spec(spec)?;
    let n = spec.vcpus;
    let kvm = vm::open_kvm()?;
    let kvm_max = u32::try_from(kvm.get_max_vcpus()).unwrap_or(u32::MAX);
    if n > kvm_max {
        return Err(RecordError::Vcpus { n, max: kvm_max });
    }
    let host = vm::host_info(&kvm)?;
    let mut cpuid = host.supported_cpuid.clone();
    vm::edit_cpuid(&mut cpuid, &spec.cpuid)?;
    let cpuid1_eax = cpuid
        .iter()
        .find(|e| e.function == 1)
        .map(|e| e.eax)
        .unwrap_or(0);
    let header = TraceHeader {
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        host,
        vm: VmConfig {
            vcpus: n,
            memory_bytes: layout::MEM_SIZE,
            cpuid: vm::vcpu_cpuid(&cpuid, 0),
            disabled_quirks: spec.disabled_quirks,
            msr_filter: spec.msr_filter.clone(),
            user_space_msr: spec.user_space_msr,
            irqchip: Some(spec.irqchip),
            mcg_cap: spec.mcg_cap,
        },
        capture: vm::capture_info(cfg.mode),
        live_policy: String::new(),
        payload: PayloadInfo {
            name: spec.name.clone(),
            sha256,
        },
        started_unix_ns: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
        config_source: kvmtrace_format::ConfigSource::Recorder,
    };
    let policy = Policy::resolve(&cfg.policy, &header).map_err(|source| RecordError::Policy {
        spec: cfg.policy.clone(),
        source,
    })?;
    let header = TraceHeader {
        live_policy: if cfg.mode == CaptureMode::Intercept {
            policy.name.clone()
        } else {
            String::new()
        },
        ..header
    };
    let engine = Mutex::new(Engine::new(policy, &header));

    let mem = guest::alloc(layout::MEM_SIZE)?;
    guest::write_long_mode_tables(&mem)?;
    for r in &spec.regions {
        guest::write(&mem, r.addr, &r.bytes)?;
    }
    let vmfd = vm::create_vm(&kvm, &mem)?;
    if spec.disabled_quirks != 0 {
        vm::disable_quirks(&vmfd, spec.disabled_quirks)?;
    }
    if cfg.mode == CaptureMode::Intercept {
        vm::install_capture(&vmfd)?;
    }
    if spec.irqchip == kvmtrace_format::Irqchip::Kernel {
        vmfd.create_irq_chip().map_err(vm::VmError::CreateIrqchip)?;
    }

    // vCPUs: RESET state read right after creation, then CPUID and MCE.
    let mut fds = Vec::with_capacity(n as usize);
    let mut resets = Vec::with_capacity(n as usize);
    let mut cpuids = Vec::with_capacity(n as usize);
    for i in 0..n {
        let fd = vm::create_vcpu(&vmfd, i)?;
        let reset =
            state::read(&fd).map_err(|source| RecordError::ReadResetState { vcpu: i, source })?;
        let c = vm::vcpu_cpuid(&cpuid, i);
        fd.set_cpuid2(&vm::to_kvm_cpuid(&c))
            .map_err(|source| vm::VmError::SetCpuid { index: i, source })?;
        if let Some(mcg_cap) = spec.mcg_cap {
            kvm_extra::setup_mce(&fd, mcg_cap).map_err(|source| vm::VmError::SetupMce {
                index: i,
                mcg_cap,
                source,
            })?;
        }
        fds.push(fd);
        resets.push(reset);
        cpuids.push(c);
    }

    let observe = cfg.mode == CaptureMode::Observe;
    let mut held: Vec<(u64, kvmtrace_format::Record)> = Vec::new();
    // Observe mode: the kernel's own decisions come from its tracepoints, for
    // this thread and the vCPU threads it is about to create.
    // With `discard_events` an observe-mode run is the bench's untraced
    // baseline: same VM, no MSR filter, no tracepoints, nothing recorded.
    let mut capture = if observe && !cfg.discard_events {
        let cap = observe::TracefsCapture::start(&observe::CaptureConfig {
            tids: observe::current_tid().into_iter().collect(),
            follow_forks: true,
            ..Default::default()
        });
        match cap {
            Ok(c) => Some(c),
            Err(e) => return Err(RecordError::Observe(e)),
        }
    } else {
        None
    };

    let shared = Shared::new(n as usize);
    let writer = Writer::start(&cfg.output, &header, shared.clone())?;

    // Configuration events, then the scenario's setup steps.
    {
        let mut out = writer.out(0, cfg.on_full, cfg.discard_events);
        if observe {
            out.hold();
        }
        let mut log = |vcpu: u32, event: Event| {
            let mut eng = engine.lock().unwrap_or_else(|p| p.into_inner());
            let rec = out.stamp_for(vcpu, event);
            eng.apply(&rec);
            drop(eng);
            out.push(rec);
        };
        if spec.disabled_quirks != 0 {
            log(
                0,
                Event::QuirksDisabled {
                    cap: vm::KVM_CAP_DISABLE_QUIRKS2,
                    mask: spec.disabled_quirks,
                },
            );
        }
        if spec.user_space_msr != 0 {
            log(
                0,
                Event::UserSpaceMsr {
                    mask: spec.user_space_msr,
                },
            );
        }
        if let Some(filter) = &spec.msr_filter {
            log(
                0,
                Event::MsrFilter {
                    filter: filter.clone(),
                },
            );
        }
        for i in 0..n {
            log(
                i,
                Event::Reset {
                    state: Box::new(resets[i as usize].clone()),
                    decided_by: DecidedBy::Kernel,
                },
            );
            // Intercept mode: the guest lives in the policy's RESET state, so the
            // recording stays what the live policy decided (replay folds the
            // policy's RESET state too). Recorded only where it differs.
            if !observe {
                let pred = engine
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .reset_state(i)
                    .outcome;
                let kernel = resets[i as usize].clone();
                if let Some(target) = pred.map(|p| state::overlay(&kernel, &p))
                    && target != kernel
                {
                    let fd = &fds[i as usize];
                    let applied = state::apply(fd, &target).and_then(|_| state::read(fd));
                    match applied {
                        Ok(after) => {
                            // What the vCPU now holds is its RESET state from here on.
                            resets[i as usize] = after.clone();
                            log(
                                i,
                                Event::Reset {
                                    state: Box::new(after),
                                    decided_by: DecidedBy::Vmm,
                                },
                            )
                        }
                        Err(source) => {
                            return Err(RecordError::ApplyResetState { vcpu: i, source });
                        }
                    }
                }
            }
            log(
                i,
                Event::Cpuid {
                    entries: cpuids[i as usize].clone(),
                },
            );
            if let Some(mcg_cap) = spec.mcg_cap {
                log(i, Event::SetupMce { mcg_cap });
            }
        }
        for step in &spec.setup {
            setup_step(&fds, &engine, &mut out, step);
        }
        out.close();
        held.extend(out.take_held());
    }
    let mut pump = capture
        .take()
        .map(|cap| live::ObservePump::new(cap, n, std::mem::take(&mut held), shared.start()));

    let (txs, rxs): (Vec<_>, Vec<_>) = (0..n).map(|_| crossbeam_channel::unbounded()).unzip();
    let mut ctx = VmCtx::new(spec, &mem, &engine, cfg.mode, txs, resets, cpuid1_eax);
    ctx.feed = pump.as_ref().map(|p| p.feed());
    let _ = vmm_sys_util::signal::register_signal_handler(vcpu::kick_signal(), kick_handler);

    let t0 = Instant::now();
    let mut stats = OutStats::default();
    let mut spawn_error = None;
    let mut read_failed = false;
    let mut interrupted = None;
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for ((i, fd), rx) in fds.into_iter().enumerate().zip(rxs) {
            let mut out = writer.out(i as u32, cfg.on_full, cfg.discard_events);
            if let Some(link) = pump.as_ref().and_then(|p| p.link(i as u32)) {
                out.hold_into(link);
            }
            let v = Vcpu {
                index: i as u32,
                fd,
                out,
                rx,
                start: spec.starts[i].clone(),
                icr_hi: 0,
                last_fault: (u64::MAX, 0),
                runs: 0,
                caught_up: 0,
                last_state: None,
                msr: state::OneMsr::default(),
            };
            let ctx = &ctx;
            match std::thread::Builder::new()
                .name(format!("vcpu{i}"))
                .spawn_scoped(s, move || v.run(ctx))
            {
                Ok(h) => handles.push(h),
                Err(e) => {
                    ctx.stop.store(true, Ordering::SeqCst);
                    spawn_error = Some(e);
                    break;
                }
            }
        }
        // Once the VM stops, kick vCPUs out of KVM_RUN until they notice. A vCPU
        // the kernel holds for an INIT/SIPI that can no longer come is stopped
        // once every other vCPU is done.
        let deadline = record_timeout().map(|d| (d, t0 + d));
        while !handles.iter().all(|h| h.is_finished()) {
            if let Some((d, at)) = deadline
                && Instant::now() >= at
                && !ctx.stop.load(Ordering::SeqCst)
            {
                ctx.fail(format!(
                    "the guest ran longer than {TIMEOUT_ENV}={}s: stopped",
                    d.as_secs()
                ));
            }
            let held_in_kernel = (0..handles.len())
                .any(|i| ctx.kernel_wait[i].load(Ordering::SeqCst) && !handles[i].is_finished());
            let others_done = handles
                .iter()
                .enumerate()
                .all(|(i, h)| h.is_finished() || ctx.kernel_wait[i].load(Ordering::SeqCst));
            if held_in_kernel && others_done {
                ctx.stop.store(true, Ordering::SeqCst);
            }
            // Ctrl-C / SIGTERM: stop like the end of the guest (the trace is
            // flushed, finished and renamed below).
            if interrupted.is_none()
                && let Some(sig) = stop::StopSignal::requested()
            {
                let why = format!("stopped by {}", stop::signal_name(sig));
                let _ = ctx.stop_why.set(why.clone());
                interrupted = Some(why);
                ctx.stop.store(true, Ordering::SeqCst);
            }
            if ctx.stop.load(Ordering::SeqCst) || shared.failed() {
                ctx.stop.store(true, Ordering::SeqCst);
                for i in 0..ctx.alive.len() {
                    ctx.kick(i);
                }
            }
            if let Some(p) = &mut pump {
                p.pump(&ctx.linux_tids, &shared, &writer, &engine);
                if !read_failed && let Some(why) = p.read_error() {
                    read_failed = true;
                    ctx.fail(format!(
                        "observe mode: reading trace_pipe failed ({why}): the kernel events after it are missing"
                    ));
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        for h in handles {
            if let Ok(st) = h.join() {
                stats.add(&st);
            }
        }
    });
    let run_ns = t0.elapsed().as_nanos() as u64;
    if let Some(e) = spawn_error {
        let _ = writer.finish();
        return Err(RecordError::SpawnThread(e));
    }
    let mut capture_stats = None;
    if let Some(p) = pump.take() {
        let st = p.finish(&ctx.linux_tids, &shared, &writer);
        // An incomplete capture is an error, never a quietly short trace.
        if let Some(why) = st.read_error.clone().filter(|_| !read_failed) {
            ctx.fail(format!(
                "observe mode: reading trace_pipe failed ({why}): the kernel events after it are missing"
            ));
        }
        capture_stats = Some(st);
    }
    let ws = writer.finish()?;
    let summary = RecordSummary {
        events: if cfg.discard_events { 0 } else { ws.records },
        dropped: stats.dropped,
        channel_wait_ns: stats.channel_wait_ns,
        vcpu_ns_per_event: stats.ns_per_event(),
        vcpu_ns_per_event_median: stats.median_ns(),
        run_ns,
        bytes: ws.bytes,
        chunks: ws.chunks,
        raw_exits: u64::from(ctx.raw_exits.load(Ordering::SeqCst)),
        capture: capture_stats,
        interrupted,
    };
    let messages = ctx.errors.into_inner().unwrap_or_default();
    if !messages.is_empty() {
        return Err(RecordError::GuestFailed {
            output: cfg.output.clone(),
            messages,
            summary: Box::new(summary),
        });
    }
    Ok(summary)
}

fn setup_step(
    fds: &[kvm_ioctls::VcpuFd],
    engine: &Mutex<Engine>,
    out: &mut writer::EventOut,
    step: &HostStep,
) {
    match step {
        HostStep::Seq(steps) => {
            for s in steps {
                setup_step(fds, engine, out, s);
            }
        }
        HostStep::WriteMsr { vcpu, .. } | HostStep::ReadMsr { vcpu, .. } => {
            if let Some(fd) = fds.get(*vcpu as usize) {
                host_msr_step(fd, engine, out, *vcpu, step);
            }
        }
    }
}
