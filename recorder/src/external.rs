//! Recording another VMM: `kvmtrace record -o OUT.kvt -- CMD ARGS…` (wrap) and
//! `kvmtrace record --pid PID -o OUT.kvt` (attach), from the kernel's own KVM
//! tracepoints (`kvmtrace_capture`), with the kernel deciding.
//!
//! - **Capture**: a private tracefs instance, filtered to the VMM's process
//!   tree (`set_event_pid` + `options/event-fork`, so vCPU threads created
//!   later are followed; wrap mode filters on this thread before the VMM is
//!   forked from it, so not one event of the VMM is missed), with
//!   `options/record-tgid` so each line names its process. The reader thread
//!   and this thread drain it; the VMM is never stopped or waited on (the
//!   ring buffer overwrites and counts what nobody read in time).
//! - **VMs and vCPUs**: `kvmtrace_capture::split` ties each thread to one VM
//!   and vCPU; VM 0 is written to OUT, VM k to OUT-vmK (`q.kvt`,
//!   `q-vm1.kvt`, ...), in the order their first event appeared.
//! - **Stopping**: wrap mode runs until the VMM exits and returns its exit
//!   status; SIGINT/SIGTERM/SIGHUP sent to kvmtrace by a process are
//!   forwarded to the VMM (a terminal's Ctrl-C already reached it: same
//!   process group) and the trace is finished once it has exited. Attach mode
//!   stops when the VMM exits, after `duration`, or on a signal (Ctrl-C
//!   detaches: the VMM runs on). Every way ends with finished traces: each
//!   vCPU's `End`, a `Lost { tracefs }` record when the ring buffer overran,
//!   and the footer.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use kvmtrace_capture::split::{SplitError, ThreadDesc, VmSplitter};
use kvmtrace_capture::{CaptureConfig, CaptureStats, ObserveError, Observed, TracefsCapture};
use kvmtrace_capture::{current_tid, procfs};
use kvmtrace_format::{
    CaptureInfo, CaptureMode, EndReason, Event, FormatError, LostSource, Record, TraceHeader,
    TraceWriter, VcpuIdentity,
};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::SignalsInfo;
use signal_hook::iterator::exfiltrator::WithOrigin;
use signal_hook::low_level::siginfo::Cause;

use crate::vmm_tap::{self, TapError, TapEvent, TapStatus};

/// Environment variable (tests): read the capture only when the recording
/// ends, so a small `--buffer-kb` overruns for certain.
pub const READ_AT_END_ENV: &str = "KVMTRACE_CAPTURE_READ_AT_END";

/// What to record.
#[derive(Clone, Debug)]
pub enum Target {
    /// Start this command (the VMM) and record it until it exits.
    Wrap(Vec<OsString>),
    /// Attach to this running VMM.
    Attach(u32),
}

/// One wrap/attach recording.
#[derive(Clone, Debug)]
pub struct ExternalConfig {
    pub target: Target,
    /// VM 0's trace; VM k goes to [`vm_path`]`(output, k)`.
    pub output: PathBuf,
    /// Attach mode: stop after this long.
    pub duration: Option<Duration>,
    /// Ring buffer per CPU.
    pub buffer_kb: u32,
    /// Wrap mode: tap the VMM's KVM configuration ioctls (`vmm_tap`).
    pub ioctl_tap: bool,
}

impl ExternalConfig {
    pub fn new(target: Target, output: impl Into<PathBuf>) -> Self {
        ExternalConfig {
            target,
            output: output.into(),
            duration: None,
            buffer_kb: 8192,
            ioctl_tap: true,
        }
    }
}

/// Why the recording ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The VMM exited (wrap: with this status, passed through).
    VmmExited,
    /// Attach: `--duration` elapsed.
    Duration,
    /// Attach: a signal (Ctrl-C, SIGTERM, SIGHUP) detached kvmtrace.
    Detached { signal: i32 },
}

/// One VM's trace.
#[derive(Clone, Debug)]
pub struct VmTrace {
    pub path: PathBuf,
    pub pid: Option<u32>,
    pub vcpus: Vec<u32>,
    /// vCPUs whose number is a guess.
    pub guessed: Vec<u32>,
    pub records: u64,
}

/// What a wrap/attach recording produced.
#[derive(Clone, Debug)]
pub struct ExternalSummary {
    pub traces: Vec<VmTrace>,
    /// Wrap mode: the VMM's exit status.
    pub exit: Option<ExitStatus>,
    pub stop: StopReason,
    pub vmm_pid: u32,
    /// Events the ring buffer or the reader lost (every trace says so).
    pub lost: u64,
    pub capture: CaptureStats,
    /// The ioctl tap's state, one line.
    pub tap: String,
    /// Configuration events the tap sent (not yet merged into the traces).
    pub tap_events: u64,
    /// VMs were told apart without process ids.
    pub membership_guessed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ExternalError {
    #[error("--pid {0}: no such process")]
    NoProcess(u32),
    #[error("--pid {pid} ({comm}) is not a VMM: it has neither /dev/kvm nor a KVM fd open")]
    NotVmm { pid: u32, comm: String },
    #[error(
        "VMM {pid} is already being recorded by kvmtrace process {other} ({lock}); one recorder per VMM"
    )]
    Busy { pid: u32, other: u32, lock: String },
    #[error("capturing the kernel's KVM tracepoints: {0}")]
    Capture(#[source] ObserveError),
    #[error(transparent)]
    Spawn(#[from] TapError),
    #[error("{what}: nothing recorded")]
    Nothing {
        what: String,
        exit: Option<ExitStatus>,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: FormatError,
    },
    #[error("registering signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error("{0}")]
    Split(#[from] SplitError),
}

pub use kvmtrace_capture::split::vm_path;

/// One recorder per VMM: `NAME` created exclusively, holding our pid; a
/// lock whose owner is gone is taken over. Removed on drop.
struct VmmLock {
    path: PathBuf,
}

impl VmmLock {
    fn claim(vmm: u32) -> Result<VmmLock, ExternalError> {
        let path = std::env::temp_dir().join(format!("kvmtrace-vmm-{vmm}.lock"));
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    use std::io::Write;
                    let _ = write!(f, "{}", std::process::id());
                    return Ok(VmmLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let other: u32 = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|s| s.trim().parse().ok())
                        .unwrap_or(0);
                    if other != 0 && Path::new(&format!("/proc/{other}")).exists() {
                        return Err(ExternalError::Busy {
                            pid: vmm,
                            other,
                            lock: path.display().to_string(),
                        });
                    }
                    // Stale (its recorder was killed): take it over.
                    let _ = std::fs::remove_file(&path);
                }
                // No lock possible (read-only temp dir): record anyway.
                Err(_) => {
                    return Ok(VmmLock {
                        path: PathBuf::new(),
                    });
                }
            }
        }
        Ok(VmmLock {
            path: PathBuf::new(),
        })
    }
}

impl Drop for VmmLock {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// How long records wait to be merged by time with the ioctl tap's (which
/// arrive through a pipe, later than the tracepoints' lines).
const MERGE_WINDOW_NS: u64 = 300_000_000;

/// A VM's trace: records held for the merge window, then written.
struct VmOut {
    path: PathBuf,
    writer: Option<TraceWriter<std::io::BufWriter<File>>>,
    /// (trace-clock time, arrival, vCPU, event), not yet written.
    held: Vec<(u64, u64, u32, Event)>,
    seq: u64,
    base_ns: u64,
    last_ns: u64,
    pid: Option<u32>,
    records: u64,
}

/// Per-VM traces, each created at its first flush.
struct Outs {
    output: PathBuf,
    header: TraceHeader,
    vms: Vec<VmOut>,
    arrivals: u64,
    /// The configuration came from the ioctl tap (header `config_source`).
    tapped_config: Option<Vec<kvmtrace_format::VmConfig>>,
}

impl Outs {
    fn vm(&mut self, splitter: &VmSplitter, vm: usize) -> &mut VmOut {
        while self.vms.len() <= vm {
            let k = self.vms.len();
            self.vms.push(VmOut {
                path: vm_path(&self.output, k),
                writer: None,
                held: Vec::new(),
                seq: 0,
                base_ns: 0,
                last_ns: 0,
                pid: splitter.vms.get(k).and_then(|v| v.tgid),
                records: 0,
            });
        }
        &mut self.vms[vm]
    }

    fn push(&mut self, splitter: &VmSplitter, vm: usize, o: Observed) -> Result<(), ExternalError> {
        self.hold(splitter, vm, o.ts_ns, o.vcpu, o.event);
        Ok(())
    }

    fn hold(&mut self, splitter: &VmSplitter, vm: usize, ts: u64, vcpu: u32, event: Event) {
        self.arrivals += 1;
        let a = self.arrivals;
        self.vm(splitter, vm).held.push((ts, a, vcpu, event));
    }

    /// Write every held record older than `before` (all with `None`), in
    /// time order (arrival order among equal times).
    fn flush(&mut self, before: Option<u64>) -> Result<(), ExternalError> {
        for (k, out) in self.vms.iter_mut().enumerate() {
            if out.held.is_empty() {
                continue;
            }
            out.held.sort_by_key(|h| (h.0, h.1));
            let n = match before {
                None => out.held.len(),
                Some(b) => out.held.partition_point(|h| h.0 < b),
            };
            if n == 0 {
                continue;
            }
            if out.writer.is_none() {
                out.base_ns = out.held[0].0;
                let mut header = self.header.clone();
                header.capture.detail = format!(
                    "{}; VM {k}{}",
                    header.capture.detail,
                    out.pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
                );
                if let Some(configs) = &self.tapped_config {
                    header.config_source = kvmtrace_format::ConfigSource::VmmIoctls;
                    if let Some(c) = configs.get(k) {
                        header.vm = c.clone();
                    }
                }
                let w = kvmtrace_format::create(&out.path, &header).map_err(|source| {
                    ExternalError::Write {
                        path: out.path.clone(),
                        source,
                    }
                })?;
                out.writer = Some(w);
            }
            let Some(writer) = out.writer.as_mut() else {
                continue;
            };
            for (ts, _, vcpu, event) in out.held.drain(..n) {
                let time_ns = ts.saturating_sub(out.base_ns);
                out.last_ns = out.last_ns.max(time_ns);
                let rec = Record {
                    seq: out.seq,
                    vcpu,
                    time_ns,
                    event,
                };
                out.seq += 1;
                out.records += 1;
                writer.push(&rec).map_err(|source| ExternalError::Write {
                    path: out.path.clone(),
                    source,
                })?;
            }
        }
        Ok(())
    }

    /// Each vCPU's `End`, the capture's losses, the footer.
    fn finish(
        mut self,
        splitter: &VmSplitter,
        why: &str,
        lost: u64,
    ) -> Result<Vec<VmTrace>, ExternalError> {
        self.flush(None)?;
        let mut traces = Vec::new();
        for (k, out) in self.vms.iter_mut().enumerate() {
            let Some(writer) = out.writer.as_mut() else {
                continue;
            };
            let vm = &splitter.vms[k];
            let vcpus = vm.vcpu_numbers();
            let mut tail = Vec::new();
            if lost > 0 {
                tail.push((
                    vcpus.first().copied().unwrap_or(0),
                    Event::Lost {
                        source: LostSource::Tracefs,
                        count: lost,
                    },
                ));
            }
            for &v in &vcpus {
                tail.push((
                    v,
                    Event::End {
                        reason: EndReason::Stopped {
                            why: why.to_string(),
                        },
                    },
                ));
            }
            for (vcpu, event) in tail {
                let rec = Record {
                    seq: out.seq,
                    vcpu,
                    time_ns: out.last_ns,
                    event,
                };
                out.seq += 1;
                out.records += 1;
                writer.push(&rec).map_err(|source| ExternalError::Write {
                    path: out.path.clone(),
                    source,
                })?;
            }
            traces.push(VmTrace {
                path: out.path.clone(),
                pid: out.pid,
                vcpus,
                guessed: vm.guessed.clone(),
                records: out.records,
            });
        }
        for out in self.vms {
            let path = out.path.clone();
            if let Some(w) = out.writer {
                w.finish()
                    .map_err(|source| ExternalError::Write { path, source })?;
            }
        }
        Ok(traces)
    }
}

/// The ioctl tap's events, merged into the VM they belong to: the tap's VM
/// k of process P is the k-th VM of P the tracepoints showed (both count in
/// creation order). Events of a VM with no tracepoint event yet wait.
#[derive(Default)]
struct TapMerge {
    /// Per process: the tap's VM indices in order of first event.
    order: Vec<(u32, Vec<u32>)>,
    waiting: Vec<TapEvent>,
    merged: u64,
    newest: Option<u64>,
}

impl TapMerge {
    fn take(
        &mut self,
        rx: &crossbeam_channel::Receiver<TapEvent>,
        splitter: &VmSplitter,
        outs: &mut Outs,
    ) {
        self.waiting.extend(rx.try_iter());
        let waiting = std::mem::take(&mut self.waiting);
        for ev in waiting {
            self.newest = Some(self.newest.map_or(ev.time_ns, |n| n.max(ev.time_ns)));
            let idx = match self.order.iter().position(|o| o.0 == ev.pid) {
                Some(i) => i,
                None => {
                    self.order.push((ev.pid, Vec::new()));
                    self.order.len() - 1
                }
            };
            let order = &mut self.order[idx].1;
            let rank = match order.iter().position(|&v| v == ev.vm) {
                Some(r) => r,
                None => {
                    order.push(ev.vm);
                    order.len() - 1
                }
            };
            let vm = splitter
                .vms
                .iter()
                .enumerate()
                .filter(|(_, v)| v.tgid == Some(ev.pid))
                .nth(rank)
                .map(|(i, _)| i);
            match vm {
                Some(vm) => {
                    self.merged += 1;
                    outs.hold(splitter, vm, ev.time_ns, ev.vcpu.unwrap_or(0), ev.event);
                }
                None => self.waiting.push(ev),
            }
        }
    }
}

/// Threads of `pid`, listed until no new one appears (threads created while
/// the filter was written are then in it too).
fn add_threads(cap: &TracefsCapture, pid: u32, known: &mut Vec<u32>) -> Result<(), ExternalError> {
    for _ in 0..8 {
        let now = procfs::threads_of(pid);
        let new: Vec<u32> = now.into_iter().filter(|t| !known.contains(t)).collect();
        if new.is_empty() {
            return Ok(());
        }
        cap.add_tids(&new).map_err(ExternalError::Capture)?;
        known.extend(new);
    }
    Ok(())
}

/// What is known about a new thread: its process, name and vCPU (from the
/// ioctl tap's `KVM_CREATE_VCPU`, else the fd of the `KVM_RUN` it is in).
fn describe(
    tid: u32,
    tgid: Option<u32>,
    cap: Option<&TracefsCapture>,
    tapped: Option<&vmm_tap::Tapped>,
) -> ThreadDesc {
    let tgid = tgid.or_else(|| procfs::tgid_of(tid));
    let comm = tgid
        .and_then(|p| procfs::comm_of(p, tid))
        .or_else(|| cap.and_then(|c| c.comm_seen(tid)))
        .unwrap_or_default();
    let tap = tapped.and_then(|t| {
        t.vcpus()
            .into_iter()
            .rfind(|v| v.creator_tid == tid)
            .map(|v| (v.id, VcpuIdentity::IoctlTap))
    });
    let vcpu = tap.or_else(|| {
        let p = tgid?;
        // A vCPU thread is back in KVM_RUN within microseconds of a return.
        (0..3).find_map(|i| {
            if i > 0 {
                std::thread::sleep(Duration::from_micros(300));
            }
            procfs::vcpu_in_kvm_run(p, tid).map(|n| (n, VcpuIdentity::RunSyscall))
        })
    });
    ThreadDesc { tgid, comm, vcpu }
}

/// The VMM's process tree, checked again in user space: the kernel's
/// `set_event_pid` filter was seen (once, with other recorders running QEMU on
/// the same machine) to let another process's KVM events through, and a trace
/// must never hold another VMM's VM. A line whose process is alive and provably
/// outside the tree is dropped and counted; one whose process already exited
/// is kept (nothing in `/proc` tells otherwise).
struct TreeFilter {
    root: u32,
    tgids: TgidResolver,
    /// tgid -> in the tree (bounded: cleared when full).
    seen: std::collections::HashMap<u32, bool>,
    dropped: u64,
}

impl TreeFilter {
    const MAX_SEEN: usize = 4096;

    fn new(root: u32) -> TreeFilter {
        TreeFilter {
            root,
            tgids: TgidResolver::new(),
            seen: std::collections::HashMap::new(),
            dropped: 0,
        }
    }

    fn keeps(&mut self, tgid: Option<u32>, tid: u32) -> bool {
        let Some(tgid) = tgid.or_else(|| procfs::tgid_of(tid)) else {
            return true;
        };
        if tgid == self.root {
            return true;
        }
        if let Some(&k) = self.seen.get(&tgid) {
            return k;
        }
        let Some(k) = procfs::descends_from(tgid, self.root) else {
            return true;
        };
        if self.seen.len() >= Self::MAX_SEEN {
            self.seen.clear();
        }
        self.seen.insert(tgid, k);
        k
    }
}

/// The process of each thread the capture shows, from `/proc` while the
/// thread lives. The tgid column of `options/record-tgid` is not trusted
/// first: the kernel prints `tgid_map[pid]`, which it refreshes only when the
/// task is switched out after an event was recorded on its CPU, so a new
/// thread whose pid was used before (pid_max wraps: 32768 here) is printed
/// with the old owner's tgid for as long as it runs — seen here: a QEMU vCPU
/// thread reported as a long-gone process, split into a VM of its own. The
/// column is the fallback for a thread that already exited.
struct TgidResolver {
    known: std::collections::HashMap<u32, Option<u32>>,
}

impl TgidResolver {
    /// Bound on remembered threads (cleared when full: a lookup again).
    const MAX: usize = 8192;

    fn new() -> TgidResolver {
        TgidResolver {
            known: std::collections::HashMap::new(),
        }
    }

    fn tgid(&mut self, tid: u32, column: Option<u32>) -> Option<u32> {
        if let Some(&t) = self.known.get(&tid) {
            return t.or(column);
        }
        if self.known.len() >= Self::MAX {
            self.known.clear();
        }
        let live = procfs::tgid_of(tid);
        self.known.insert(tid, live);
        live.or(column)
    }
}

fn feed_raws(
    raws: Vec<kvmtrace_capture::tracefs::Raw>,
    splitter: &mut VmSplitter,
    outs: &mut Outs,
    cap: Option<&TracefsCapture>,
    tapped: Option<&vmm_tap::Tapped>,
    tree: &mut TreeFilter,
) -> Result<(), ExternalError> {
    let mut placed: Vec<(usize, Observed)> = Vec::new();
    for mut r in raws {
        r.tgid = tree.tgids.tgid(r.tid, r.tgid);
        if !tree.keeps(r.tgid, r.tid) {
            tree.dropped += 1;
            continue;
        }
        splitter.feed(
            r.ts_ns,
            r.tid,
            r.ev,
            &mut |tid| describe(tid, r.tgid, cap, tapped),
            &mut |vm, o| placed.push((vm, o)),
        )?;
        for (vm, o) in placed.drain(..) {
            outs.push(splitter, vm, o)?;
        }
    }
    Ok(())
}

fn status_text(s: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("the VMM exited with status {c}"),
        (None, Some(sig)) => format!("the VMM was killed by signal {sig}"),
        _ => "the VMM exited".to_string(),
    }
}

fn forward(pid: u32, signal: i32) {
    use rustix::process::{Pid, Signal, kill_process};
    let sig = match signal {
        SIGINT => Signal::INT,
        SIGTERM => Signal::TERM,
        SIGHUP => Signal::HUP,
        _ => return,
    };
    if let Some(p) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = kill_process(p, sig);
    }
}

/// Record another VMM (see the module docs). `note` gets one-line progress
/// messages for stderr.
pub fn record_external(
    cfg: &ExternalConfig,
    note: &mut dyn FnMut(&str),
) -> Result<ExternalSummary, ExternalError> {
    let mut lock = None;
    if let Target::Attach(pid) = cfg.target {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return Err(ExternalError::NoProcess(pid));
        }
        if !procfs::is_vmm(pid) {
            return Err(ExternalError::NotVmm {
                pid,
                comm: procfs::comm_of(pid, pid).unwrap_or_default(),
            });
        }
        lock = Some(VmmLock::claim(pid)?);
    }
    // Before anything starts: a signal from now on ends the recording cleanly.
    let mut signals = SignalsInfo::<WithOrigin>::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(ExternalError::Signals)?;
    let wrap = matches!(cfg.target, Target::Wrap(_));
    let mut known_tids = match cfg.target {
        Target::Wrap(_) => current_tid().into_iter().collect(),
        Target::Attach(pid) => procfs::threads_of(pid),
    };
    let cap_cfg = CaptureConfig {
        tids: known_tids.clone(),
        follow_forks: true,
        buffer_kb: cfg.buffer_kb,
        // Test hook: read the ring buffer only at the end, so that a small
        // buffer overruns for certain (`tools/tests/record_external.rs`).
        read_while_running: std::env::var_os(READ_AT_END_ENV).is_none(),
        foreign: true,
        record_tgid: true,
    };
    let mut cap = TracefsCapture::start(&cap_cfg).map_err(ExternalError::Capture)?;
    let instance = cap
        .instance_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let (tx, rx) = crossbeam_channel::unbounded::<TapEvent>();
    let mut tapped = None;
    let (vmm_pid, what) = match &cfg.target {
        Target::Wrap(argv) => {
            // Forked from this thread, which the instance follows.
            let t = vmm_tap::spawn_with(argv, tx, vmm_tap::SpawnOptions { tap: cfg.ioctl_tap })?;
            let pid = t.pid();
            tapped = Some(t);
            let cmd: Vec<String> = argv
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            (pid, format!("wrap: {}", cmd.join(" ")))
        }
        Target::Attach(pid) => {
            drop(tx);
            add_threads(&cap, *pid, &mut known_tids)?;
            (*pid, format!("attach: pid {pid}"))
        }
    };
    if lock.is_none() {
        lock = VmmLock::claim(vmm_pid).ok();
    }
    let mut tree = TreeFilter::new(vmm_pid);
    let (host, _) = crate::observe::host::this_host();
    let config_source = kvmtrace_format::ConfigSource::Unknown {
        why: match &cfg.target {
            Target::Attach(_) => {
                "attach mode cannot tap a running VMM's configuration ioctls".into()
            }
            Target::Wrap(_) => "wrap mode with the ioctl tap off".into(),
        },
    };
    let header = TraceHeader {
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        host,
        capture: CaptureInfo {
            mode: CaptureMode::External,
            detail: format!("{what}; tracefs {instance}"),
            ..Default::default()
        },
        started_unix_ns: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
        config_source,
        ..Default::default()
    };
    let mut outs = Outs {
        output: cfg.output.clone(),
        header,
        vms: Vec::new(),
        arrivals: 0,
        tapped_config: None,
    };
    let mut taps = TapMerge::default();
    let mut splitter = VmSplitter::new(wrap);
    let start = Instant::now();
    let mut tap_events = 0u64;
    let mut exit = None;
    let mut entry_on = true;
    let mut last_new_vcpu = Instant::now();
    let mut vcpus_seen = 0usize;
    let mut entry_seen = false;
    let mut break_with_signal = None;
    let stop = loop {
        for s in signals.pending() {
            let from_terminal = matches!(s.cause, Cause::Kernel);
            if wrap {
                // A terminal's Ctrl-C reached the VMM already (same process
                // group); a signal sent to kvmtrace alone is passed on.
                if !from_terminal {
                    forward(vmm_pid, s.signal);
                }
                note(&format!(
                    "record: signal {} {}: finishing the trace once the VMM has exited",
                    s.signal,
                    if from_terminal {
                        "from the terminal"
                    } else {
                        "forwarded to the VMM"
                    }
                ));
            } else {
                note(&format!(
                    "record: signal {}: detaching from VMM {vmm_pid} (it keeps running)",
                    s.signal
                ));
                break_with_signal = Some(s.signal);
            }
        }
        if let Some(sig) = break_with_signal {
            break StopReason::Detached { signal: sig };
        }
        let raws = cap.drain_raw();
        entry_seen |= raws.iter().any(|r| {
            matches!(
                r.ev,
                kvmtrace_capture::KvmEvent::ExitOrEntry { vcpu_id: Some(_) }
            )
        });
        let newest = raws.iter().map(|r| r.ts_ns).max();
        feed_raws(
            raws,
            &mut splitter,
            &mut outs,
            Some(&cap),
            tapped.as_ref(),
            &mut tree,
        )?;
        taps.take(&rx, &splitter, &mut outs);
        if let Some(t) = tapped.as_ref() {
            outs.tapped_config = (t.tap_status() == TapStatus::Active).then(|| t.vm_configs());
        }
        if let Some(n) = newest.or(taps.newest) {
            outs.flush(Some(n.saturating_sub(MERGE_WINDOW_NS)))?;
        }
        // `kvm_entry` fires on every entry where it fires at all: once it has
        // named every vCPU thread (none new for a second), it goes off.
        let n: usize = splitter.vms.iter().map(|v| v.vcpu_numbers().len()).sum();
        if n != vcpus_seen {
            vcpus_seen = n;
            last_new_vcpu = Instant::now();
        }
        if entry_on && entry_seen && last_new_vcpu.elapsed() > Duration::from_secs(1) {
            cap.disable_event("kvm_entry");
            entry_on = false;
        }
        if let Some(t) = tapped.as_mut() {
            if let Ok(Some(st)) = t.try_wait() {
                exit = Some(st);
                break StopReason::VmmExited;
            }
        } else if !Path::new(&format!("/proc/{vmm_pid}")).exists() {
            break StopReason::VmmExited;
        }
        if !wrap
            && let Some(d) = cfg.duration
            && start.elapsed() >= d
        {
            break StopReason::Duration;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let (rest, stats) = cap.stop_raw();
    feed_raws(
        rest,
        &mut splitter,
        &mut outs,
        None,
        tapped.as_ref(),
        &mut tree,
    )?;
    if tree.dropped > 0 {
        eprintln!(
            "record: dropped {} KVM events of processes outside VMM {vmm_pid}'s process tree \
             (the kernel's pid filter let them through)",
            tree.dropped
        );
    }
    let mut tail = Vec::new();
    splitter.finish(&mut |vm, o| tail.push((vm, o)));
    for (vm, o) in tail {
        outs.push(&splitter, vm, o)?;
    }
    taps.take(&rx, &splitter, &mut outs);
    tap_events += taps.merged;
    if !taps.waiting.is_empty() {
        // A VM the VMM created but never ran (a probe VM, a failed start):
        // its configuration ioctls have no trace to go to. Said, not dropped
        // silently.
        let vms: std::collections::BTreeSet<(u32, u32)> =
            taps.waiting.iter().map(|e| (e.pid, e.vm)).collect();
        note(&format!(
            "record: {} ioctl-tap events of {} VM(s) that ran no vCPU while recorded are not in any trace",
            taps.waiting.len(),
            vms.len()
        ));
    }
    let lost = stats.overrun + stats.overflow + stats.bad_lines;
    let why = match (&stop, &exit) {
        (StopReason::VmmExited, Some(st)) => status_text(st),
        (StopReason::VmmExited, None) => "the VMM exited".to_string(),
        (StopReason::Duration, _) => "--duration elapsed: detached".to_string(),
        (StopReason::Detached { signal }, _) => format!("signal {signal}: detached"),
    };
    let tap = match tapped.as_ref().map(|t| t.tap_status()) {
        Some(TapStatus::Active) => "active".to_string(),
        Some(TapStatus::Off { why }) => format!("off: {why}"),
        None => "off: attach mode cannot tap a running process".to_string(),
    };
    let membership_guessed = splitter.membership_guessed;
    if outs.vms.is_empty() {
        drop(lock);
        return Err(ExternalError::Nothing {
            what: match (&stop, &exit) {
                (StopReason::VmmExited, Some(st)) if wrap => {
                    format!("{} before it ran a vCPU", status_text(st))
                }
                _ => format!("process {vmm_pid} ran no vCPU while kvmtrace watched ({why})"),
            },
            exit,
        });
    }
    let traces = outs.finish(&splitter, &why, lost)?;
    drop(lock);
    Ok(ExternalSummary {
        traces,
        exit,
        stop,
        vmm_pid,
        lost,
        capture: stats,
        tap,
        tap_events,
        membership_guessed,
    })
}
