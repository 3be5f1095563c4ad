//! Live capture of the KVM tracepoints from a private tracefs instance.
//!
//! - The instance `instances/kvmtrace-PID-N` (N counts the captures of this
//!   process, so two recordings in one process never share one) is made for the run and removed after
//!   it (on `stop`, on drop, on every error after it was made); the top-level
//!   buffer other users may be reading is never touched.
//! - `trace_clock` is `mono`, so event times are CLOCK_MONOTONIC, the clock of
//!   `std::time::Instant`: a `trace_marker` line written at start ties the two
//!   (`mono_ns_at`).
//! - Only the recorder's own threads are traced (`set_event_pid`, with
//!   `event-fork` when asked to follow threads created later).
//! - Text `trace_pipe`, read on a reader thread with `O_NONBLOCK` (so stopping
//!   never blocks), not the binary `trace_pipe_raw` (measured: 0.75 µs of
//!   reader CPU per event as text, ~37x less as binary; docs/host-notes.md,
//!   "Text or binary"): the text is what the
//!   importer already parses exactly (one parser, fuzzed, for both paths), the
//!   per-event binary layouts (`events/kvm/*/format`) and ring-buffer page
//!   headers would be a second decoder to keep right across releases, and at
//!   guest MSR rates on this host (~400k exits/s at most) text costs little.
//!   The price is microsecond timestamps; ordering inside a vCPU is exact (the
//!   text comes out in ring order), and `Observed::run_index` gives the
//!   recorder an exact merge key against its own `KVM_RUN` returns.
//! - Ring-buffer overruns (`per_cpu/cpuN/stats`: `overrun`, `dropped events`)
//!   are read at stop and returned as `Lost { source: Tracefs }`, never hidden.
//! - Long runs: the caller drains periodically (`drain`); `sync` writes a
//!   marker whose trace time, once read back (`synced_ns`), bounds the events
//!   still unread (ring order), which is what lets the recorder merge and write
//!   as it goes instead of holding the whole run.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvmtrace_format::{Event, LostSource};

use crate::convert::{Converter, Observed, VcpuMap};
use crate::fields::{KvmEvent, parse_event};
use crate::line::{LineKind, MAX_LINE, parse_line};

/// The tracepoints observe mode enables; `kvm_msr` is required, the others are
/// enabled where this kernel has them.
pub const EVENTS: [&str; 5] = [
    "kvm_msr",
    "kvm_inj_exception",
    "kvm_userspace_exit",
    "kvm_apic_ipi",
    "kvm_cpuid",
];
/// What a capture of another VMM enables besides [`EVENTS`] (wrap/attach):
/// INIT/SIPI through the in-kernel LAPIC, and the `vcpu N` of entries and
/// exits where they fire (not on `kvm_pvm`), each with a kernel-side filter
/// so that only the lines kvmtrace uses are formatted (event, filter).
pub const FOREIGN_EVENTS: [(&str, &str); 3] = [
    // APIC_DM_INIT 0x500, APIC_DM_STARTUP 0x600 (`dm` is the ICR's bits 10:8).
    ("kvm_apic_accept_irq", "dm == 1280 || dm == 1536"),
    // VMX MWAIT 36 / MONITOR 39, SVM MONITOR 0x8a / MWAIT 0x8b.
    (
        "kvm_exit",
        "exit_reason == 36 || exit_reason == 39 || exit_reason == 138 || exit_reason == 139",
    ),
    ("kvm_entry", ""),
];
/// Pending decoded events the reader keeps before counting more as lost.
const MAX_PENDING: usize = 1 << 20;
const MARKER: &str = "kvmtrace_clock_sync";
/// The periodic marker of `sync`.
const SYNC_MARKER: &str = "kvmtrace_sync_point";
/// Captures made by this process (the instance name's N).
static INSTANCES: AtomicU64 = AtomicU64::new(0);
const DEFAULT_MOUNT: &str = "/sys/kernel/tracing";

#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error("tracefs is not mounted and `mount -t tracefs nodev {DEFAULT_MOUNT}` failed: {why}")]
    Mount { why: String },
    #[error("creating the tracefs instance {path}: {source}")]
    CreateInstance {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("this kernel has no kvm:kvm_msr tracepoint ({path} missing): is kvm loaded?")]
    NoKvmEvents { path: PathBuf },
    #[error("opening {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the trace_pipe reader thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// What the capture configures.
#[derive(Clone, Debug)]
pub struct CaptureConfig {
    /// Thread ids to trace (the vCPU threads, or the recorder's own thread with
    /// `follow_forks`).
    pub tids: Vec<u32>,
    /// Also trace threads the traced ones create later (`options/event-fork`).
    pub follow_forks: bool,
    /// Ring buffer per CPU.
    pub buffer_kb: u32,
    /// Read `trace_pipe` while the guest runs (default). `false` reads it all
    /// at `stop` (the buffer must hold the whole run; overruns are counted):
    /// the baseline that separates the kernel's tracepoint cost from the
    /// reading side's.
    pub read_while_running: bool,
    /// Also enable [`FOREIGN_EVENTS`] (a capture of another VMM).
    pub foreign: bool,
    /// `options/record-tgid`: lines carry the process id (VMs told apart).
    pub record_tgid: bool,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            tids: Vec::new(),
            follow_forks: false,
            buffer_kb: 8192,
            read_while_running: true,
            foreign: false,
            record_tgid: false,
        }
    }
}

/// A decoded line waiting for `drain` (or returned by `drain_raw`).
#[derive(Clone, Copy, Debug)]
pub struct Raw {
    pub ts_ns: u64,
    pub tid: u32,
    /// The process, when the line had the tgid column.
    pub tgid: Option<u32>,
    pub ev: KvmEvent,
}

/// Most thread names remembered from the lines' task field.
const MAX_COMMS: usize = 4096;

#[derive(Default)]
struct Shared {
    pending: Vec<Raw>,
    /// Decoded events dropped because nobody drained.
    overflow: u64,
    /// Lines of the kvm events that did not parse (counted as lost).
    bad_lines: u64,
    /// `CPU:N [LOST M EVENTS]` lines seen (the stats overrun is authoritative).
    lost_lines: u64,
    /// The marker's trace timestamp.
    marker_ns: Option<u64>,
    /// The latest marker read back: every event before it has been read.
    synced_ns: Option<u64>,
    read_error: Option<String>,
    /// The task field of each thread's first line (tid, name).
    comms: Vec<(u32, String)>,
}

/// Counters of a finished capture.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CaptureStats {
    pub events: u64,
    /// `overrun` + `dropped events` over every CPU of the instance.
    pub overrun: u64,
    pub overflow: u64,
    pub bad_lines: u64,
    pub lost_lines: u64,
    pub enabled: Vec<String>,
    /// A read of `trace_pipe` failed and ended the capture early (the events
    /// after it are missing; say so, never hide it).
    pub read_error: Option<String>,
    /// Observe mode: user-space exits the live engine decided before the
    /// kernel's events of that vCPU's earlier runs could be read (waited
    /// `live::CATCH_UP_TIMEOUT`, then decided anyway).
    pub late_catch_ups: u64,
}

fn tracefs_mount() -> Result<PathBuf, ObserveError> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if let Some(p) = mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, mnt, fstype) = (f.next(), f.next()?, f.next()?);
            (fstype == "tracefs").then(|| PathBuf::from(mnt))
        })
        .find(|p| p.join("instances").is_dir())
    {
        return Ok(p);
    }
    let out = std::process::Command::new("mount")
        .args(["-t", "tracefs", "nodev", DEFAULT_MOUNT])
        .output()
        .map_err(|e| ObserveError::Mount { why: e.to_string() })?;
    if !out.status.success() {
        return Err(ObserveError::Mount {
            why: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(PathBuf::from(DEFAULT_MOUNT))
}

fn write_file(path: &Path, value: &str) -> Result<(), ObserveError> {
    let err = |source| ObserveError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    };
    let mut f = OpenOptions::new().write(true).open(path).map_err(err)?;
    f.write_all(value.as_bytes()).map_err(err)
}

/// Removes the instance directory when dropped.
struct Instance {
    dir: PathBuf,
}

impl Drop for Instance {
    fn drop(&mut self) {
        // Stop recording first so the directory is idle; rmdir frees the buffer.
        let _ = write_file(&self.dir.join("tracing_on"), "0");
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A running capture.
pub struct TracefsCapture {
    instance: Option<Instance>,
    reader: Option<JoinHandle<()>>,
    /// `trace_marker`, kept open for `sync`.
    marker: Option<File>,
    stop: Arc<AtomicBool>,
    shared: Arc<Mutex<Shared>>,
    marker_instant: Instant,
    converter: Converter,
    tid_map: Vec<(u32, u32)>,
    stats: CaptureStats,
}

impl TracefsCapture {
    /// The instance directory (`.../instances/kvmtrace-PID-N`).
    pub fn instance_dir(&self) -> Option<&Path> {
        self.instance.as_ref().map(|i| i.dir.as_path())
    }

    /// Make the instance, enable the KVM tracepoints for `cfg.tids`, start reading.
    pub fn start(cfg: &CaptureConfig) -> Result<Self, ObserveError> {
        let root = tracefs_mount()?;
        remove_stale_instances(&root.join("instances"));
        let dir = root.join("instances").join(format!(
            "kvmtrace-{}-{}",
            std::process::id(),
            INSTANCES.fetch_add(1, Ordering::Relaxed)
        ));
        // A previous run of a process with our pid may have left one behind.
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir).map_err(|source| ObserveError::CreateInstance {
            path: dir.clone(),
            source,
        })?;
        let instance = Instance { dir: dir.clone() };
        write_file(&dir.join("tracing_on"), "0")?;
        write_file(&dir.join("trace_clock"), "mono")?;
        write_file(&dir.join("buffer_size_kb"), &cfg.buffer_kb.to_string())?;
        if !cfg.tids.is_empty() {
            let pids: Vec<String> = cfg.tids.iter().map(|t| t.to_string()).collect();
            write_file(&dir.join("set_event_pid"), &pids.join(" "))?;
        }
        if cfg.follow_forks {
            write_file(&dir.join("options/event-fork"), "1")?;
        }
        let mut enabled = Vec::new();
        for ev in EVENTS {
            let path = dir.join("events/kvm").join(ev).join("enable");
            if !path.exists() {
                if ev == "kvm_msr" {
                    return Err(ObserveError::NoKvmEvents { path });
                }
                continue;
            }
            write_file(&path, "1")?;
            enabled.push(ev.to_string());
        }
        if cfg.foreign {
            for (ev, filter) in FOREIGN_EVENTS {
                let edir = dir.join("events/kvm").join(ev);
                if !edir.join("enable").exists() {
                    continue;
                }
                // A filter this kernel refuses only costs formatting time.
                if !filter.is_empty() {
                    let _ = write_file(&edir.join("filter"), filter);
                }
                write_file(&edir.join("enable"), "1")?;
                enabled.push(ev.to_string());
            }
        }
        if cfg.foreign {
            // Thread names as the VMM sets them (`CPU 0/KVM`), in band: a
            // short-lived thread is gone from /proc before it is drained.
            let rename = dir.join("events/task/task_rename/enable");
            if rename.exists() && write_file(&rename, "1").is_ok() {
                enabled.push("task_rename".to_string());
            }
        }
        if cfg.record_tgid {
            // Absent on old kernels: lines then have no tgid column.
            let _ = write_file(&dir.join("options/record-tgid"), "1");
        }
        let pipe_path = dir.join("trace_pipe");
        let pipe = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&pipe_path)
            .map_err(|source| ObserveError::Open {
                path: pipe_path,
                source,
            })?;
        write_file(&dir.join("tracing_on"), "1")?;
        let marker_instant = Instant::now();
        let marker_path = dir.join("trace_marker");
        let mut marker = OpenOptions::new()
            .write(true)
            .open(&marker_path)
            .map_err(|source| ObserveError::Open {
                path: marker_path.clone(),
                source,
            })?;
        marker
            .write_all(MARKER.as_bytes())
            .map_err(|source| ObserveError::Write {
                path: marker_path,
                value: MARKER.to_string(),
                source,
            })?;

        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Mutex::new(Shared::default()));
        let reader = {
            let (stop, shared) = (stop.clone(), shared.clone());
            let live = cfg.read_while_running;
            std::thread::Builder::new()
                .name("kvmtrace-tracefs".into())
                .spawn(move || {
                    while !live && !stop.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    read_pipe(pipe, &stop, &shared)
                })
                .map_err(ObserveError::Spawn)?
        };
        Ok(TracefsCapture {
            instance: Some(instance),
            reader: Some(reader),
            marker: Some(marker),
            stop,
            shared,
            marker_instant,
            converter: Converter::new(VcpuMap::Fixed(Vec::new())),
            tid_map: Vec::new(),
            stats: CaptureStats {
                enabled,
                ..Default::default()
            },
        })
    }

    /// The decoded lines read so far, unconverted, in trace order (a capture
    /// of another VMM converts them per VM: `split::VmSplitter`). Do not mix
    /// with `drain`.
    pub fn drain_raw(&mut self) -> Vec<Raw> {
        let raws = match self.shared.lock() {
            Ok(mut s) => std::mem::take(&mut s.pending),
            Err(_) => Vec::new(),
        };
        self.stats.events += raws.len() as u64;
        raws
    }

    /// The task name of thread `tid`'s first line.
    pub fn comm_seen(&self, tid: u32) -> Option<String> {
        let s = self.shared.lock().ok()?;
        s.comms.iter().find(|c| c.0 == tid).map(|c| c.1.clone())
    }

    /// Add threads to the instance's pid filter (`set_event_pid`, appended).
    pub fn add_tids(&self, tids: &[u32]) -> Result<(), ObserveError> {
        let Some(inst) = &self.instance else {
            return Ok(());
        };
        let path = inst.dir.join("set_event_pid");
        let value: Vec<String> = tids.iter().map(|t| t.to_string()).collect();
        let value = value.join(" ");
        let err = |source| ObserveError::Write {
            path: path.clone(),
            value: value.clone(),
            source,
        };
        let mut f = OpenOptions::new().append(true).open(&path).map_err(err)?;
        f.write_all(value.as_bytes()).map_err(err)
    }

    /// Turn one enabled KVM event off (e.g. `kvm_entry` once every vCPU
    /// thread is named).
    pub fn disable_event(&mut self, event: &str) {
        if let Some(inst) = &self.instance {
            let _ = write_file(&inst.dir.join("events/kvm").join(event).join("enable"), "0");
            self.stats.enabled.retain(|e| e != event);
        }
    }

    /// Lost so far: the instance's overrun counters (`per_cpu/cpuN/stats`)
    /// plus what the reader could not keep.
    pub fn lost_so_far(&self) -> u64 {
        let overrun = self.instance.as_ref().map_or(0, |i| read_overrun(&i.dir));
        let s = self
            .shared
            .lock()
            .map(|s| s.overflow + s.bad_lines)
            .unwrap_or(0);
        overrun + s
    }

    /// Tell the capture which vCPU a thread is; events of unknown threads are
    /// kept until their thread is named, then converted by `drain`.
    pub fn set_vcpu(&mut self, tid: u32, vcpu: u32) {
        if !self.tid_map.iter().any(|&(t, _)| t == tid) {
            self.tid_map.push((tid, vcpu));
            self.converter.add_tid(tid, vcpu);
        }
    }

    /// Write a sync marker; once it is read back, `synced_ns` moves to its time.
    pub fn sync(&mut self) {
        if let Some(m) = &mut self.marker {
            // A failed marker write only delays `synced_ns`; reads are checked.
            let _ = m.write_all(SYNC_MARKER.as_bytes());
        }
    }

    /// The trace time of the latest marker read back: every event with an
    /// earlier timestamp has been read (and is returned by the next `drain`,
    /// or is pending for a thread not yet named). Load it before `drain`.
    pub fn synced_ns(&self) -> Option<u64> {
        self.shared.lock().ok()?.synced_ns
    }

    /// How many `kvm_userspace_exit` lines of thread `tid` have been drained:
    /// every kernel event of that thread with a smaller `run_index` has been
    /// returned by `drain`.
    pub fn runs_seen(&self, tid: u32) -> u64 {
        self.converter.runs(tid)
    }

    /// A failed read of `trace_pipe` so far (the capture is then incomplete).
    pub fn read_error(&self) -> Option<String> {
        self.shared.lock().ok()?.read_error.clone()
    }

    /// CLOCK_MONOTONIC nanoseconds (the trace clock) at `instant`, once the sync
    /// marker has been read back.
    pub fn mono_ns_at(&self, instant: Instant) -> Option<u64> {
        let marker = self.shared.lock().ok()?.marker_ns?;
        Some(if instant >= self.marker_instant {
            marker + u64::try_from((instant - self.marker_instant).as_nanos()).ok()?
        } else {
            marker.saturating_sub(u64::try_from((self.marker_instant - instant).as_nanos()).ok()?)
        })
    }

    /// The events read so far, converted, in trace order. Events of threads not
    /// yet named with `set_vcpu` stay pending.
    pub fn drain(&mut self) -> Vec<Observed> {
        let raws = match self.shared.lock() {
            Ok(mut s) => std::mem::take(&mut s.pending),
            Err(_) => Vec::new(),
        };
        let mut out = Vec::with_capacity(raws.len());
        let mut keep = Vec::new();
        let mut dropped = 0u64;
        for r in raws {
            if !self.tid_map.iter().any(|&(t, _)| t == r.tid) {
                if keep.len() < MAX_PENDING {
                    keep.push(r);
                } else {
                    dropped += 1;
                }
                continue;
            }
            // Fixed map: only known tids reach here, TooManyVcpus cannot happen.
            let _ = self
                .converter
                .feed(r.ts_ns, r.tid, r.ev, &mut |o| out.push(o));
        }
        if (!keep.is_empty() || dropped > 0)
            && let Ok(mut s) = self.shared.lock()
        {
            keep.append(&mut s.pending);
            s.pending = keep;
            s.overflow += dropped;
        }
        self.stats.events += out.len() as u64;
        out
    }

    /// Stop reading, drain the rest, read the overrun counters, remove the
    /// instance. The returned events end with a `Lost { source: Tracefs }` (on
    /// vCPU 0) when anything was lost.
    pub fn stop(self) -> (Vec<Observed>, CaptureStats) {
        let (out, stats, _) = self.stop_at(Instant::now());
        (out, stats)
    }

    /// Stop reading and return the lines not yet drained, unconverted
    /// (`drain_raw`'s counterpart of `stop`), with the overrun counters.
    pub fn stop_raw(mut self) -> (Vec<Raw>, CaptureStats) {
        // Let the last events of a thread that just returned reach the buffer.
        std::thread::sleep(Duration::from_millis(20));
        // A VMM left running (attach) keeps producing: the buffer stops
        // taking events, so what is left to read is bounded.
        if let Some(inst) = &self.instance {
            let _ = write_file(&inst.dir.join("tracing_on"), "0");
        }
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.reader.take() {
            let _ = h.join();
        }
        let rest = self.drain_raw();
        if let Some(inst) = &self.instance {
            self.stats.overrun = read_overrun(&inst.dir);
        }
        if let Ok(s) = self.shared.lock() {
            self.stats.overflow = s.overflow;
            self.stats.bad_lines = s.bad_lines;
            self.stats.lost_lines = s.lost_lines;
            self.stats.read_error = s.read_error.clone();
        }
        self.marker = None;
        self.instance = None;
        (rest, self.stats.clone())
    }

    /// `stop`, also returning `mono_ns_at(instant)` as known once everything
    /// was read (the recorder's trace-time base).
    pub fn stop_at(mut self, instant: Instant) -> (Vec<Observed>, CaptureStats, Option<u64>) {
        // Let the last events of a vCPU that just returned reach the buffer.
        std::thread::sleep(Duration::from_millis(20));
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.reader.take() {
            let _ = h.join();
        }
        let mut out = self.drain();
        self.converter.finish(&mut |o| out.push(o));
        if let Some(inst) = &self.instance {
            self.stats.overrun = read_overrun(&inst.dir);
        }
        if let Ok(s) = self.shared.lock() {
            self.stats.overflow = s.overflow;
            self.stats.bad_lines = s.bad_lines;
            self.stats.lost_lines = s.lost_lines;
            self.stats.read_error = s.read_error.clone();
        }
        let lost = self.stats.overrun + self.stats.overflow + self.stats.bad_lines;
        if lost > 0 {
            let ts_ns = out.last().map(|o| o.ts_ns).unwrap_or(0);
            out.push(Observed {
                ts_ns,
                tid: 0,
                vcpu: 0,
                run_index: 0,
                event: Event::Lost {
                    source: LostSource::Tracefs,
                    count: lost,
                },
            });
        }
        let base = self.mono_ns_at(instant);
        self.marker = None;
        self.instance = None;
        (out, self.stats.clone(), base)
    }
}

impl Drop for TracefsCapture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.reader.take() {
            let _ = h.join();
        }
        // `instance` drops after the reader closed trace_pipe and the marker is
        // closed: rmdir succeeds.
        self.marker = None;
    }
}

/// Remove `kvmtrace-PID` instances of processes that no longer exist (a
/// recorder killed with SIGKILL cannot remove its own). Others are left alone.
fn remove_stale_instances(instances: &Path) {
    let Ok(entries) = std::fs::read_dir(instances) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("kvmtrace-"))
            // `kvmtrace-PID-N`; older recorders named it `kvmtrace-PID`.
            .and_then(|p| p.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir(e.path());
        }
    }
}

/// Sum of `overrun` and `dropped events` over `per_cpu/cpu*/stats`.
fn read_overrun(dir: &Path) -> u64 {
    let Ok(cpus) = std::fs::read_dir(dir.join("per_cpu")) else {
        return 0;
    };
    let mut total = 0u64;
    for cpu in cpus.flatten() {
        let Ok(text) = std::fs::read_to_string(cpu.path().join("stats")) else {
            continue;
        };
        for line in text.lines() {
            if let Some(v) = line
                .strip_prefix("overrun:")
                .or_else(|| line.strip_prefix("dropped events:"))
            {
                total = total.saturating_add(v.trim().parse().unwrap_or(0));
            }
        }
    }
    total
}

fn handle_line(line: &[u8], shared: &Mutex<Shared>) {
    let Ok(mut s) = shared.lock() else { return };
    match parse_line(line) {
        Ok(LineKind::Event(e)) => {
            if e.event == b"task_rename" {
                if let Some((tid, name)) = parse_rename(e.fields) {
                    if let Some(c) = s.comms.iter_mut().find(|c| c.0 == tid) {
                        c.1 = name;
                    } else if s.comms.len() < MAX_COMMS {
                        s.comms.push((tid, name));
                    }
                }
                return;
            }
            if e.event == b"tracing_mark_write" || e.event == b"print" {
                let clock = e.fields.ends_with(MARKER.as_bytes());
                if clock && s.marker_ns.is_none() {
                    s.marker_ns = Some(e.ts_ns);
                }
                if clock || e.fields.ends_with(SYNC_MARKER.as_bytes()) {
                    s.synced_ns = Some(s.synced_ns.map_or(e.ts_ns, |t| t.max(e.ts_ns)));
                }
                return;
            }
            match parse_event(e.event, e.fields) {
                Some(Ok(ev)) => {
                    if s.comms.len() < MAX_COMMS && !s.comms.iter().any(|c| c.0 == e.pid) {
                        let name = String::from_utf8_lossy(e.task).chars().take(16).collect();
                        s.comms.push((e.pid, name));
                    }
                    if s.pending.len() < MAX_PENDING {
                        s.pending.push(Raw {
                            ts_ns: e.ts_ns,
                            tid: e.pid,
                            tgid: e.tgid,
                            ev,
                        });
                    } else {
                        s.overflow += 1;
                    }
                }
                Some(Err(_)) => s.bad_lines += 1,
                None => {}
            }
        }
        Ok(LineKind::Lost { .. }) => s.lost_lines += 1,
        Ok(_) => {}
        Err(_) => s.bad_lines += 1,
    }
}

/// `task_rename`: `pid=%d oldcomm=%s newcomm=%s oom_score_adj=%hd`
/// (include/trace/events/task.h); names may hold spaces.
pub fn parse_rename(f: &[u8]) -> Option<(u32, String)> {
    let rest = f.strip_prefix(b"pid=")?;
    let sp = rest.iter().position(|&b| b == b' ')?;
    let tid = u32::try_from(crate::line::parse_dec(&rest[..sp], 10)?).ok()?;
    let at = rest.windows(8).position(|w| w == b"newcomm=")? + 8;
    let name = &rest[at..];
    let end = name
        .windows(15)
        .rposition(|w| w == b" oom_score_adj=")
        .unwrap_or(name.len());
    let name = String::from_utf8_lossy(&name[..end])
        .chars()
        .take(16)
        .collect();
    Some((tid, name))
}

/// The reader thread: non-blocking reads of `trace_pipe`, split into lines.
fn read_pipe(mut pipe: File, stop: &AtomicBool, shared: &Mutex<Shared>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut line: Vec<u8> = Vec::with_capacity(MAX_LINE);
    let mut overlong = false;
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(n) => {
                for &b in &buf[..n] {
                    if b == b'\n' {
                        if overlong {
                            if let Ok(mut s) = shared.lock() {
                                s.bad_lines += 1;
                            }
                        } else {
                            handle_line(&line, shared);
                        }
                        line.clear();
                        overlong = false;
                    } else if line.len() < MAX_LINE {
                        line.push(b);
                    } else {
                        overlong = true;
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                // Empty: stop only once nothing is left to read.
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => {
                if let Ok(mut s) = shared.lock() {
                    s.read_error = Some(e.to_string());
                }
                break;
            }
        }
    }
    if !line.is_empty() && !overlong {
        handle_line(&line, shared);
    }
}

/// The calling thread's id (for `CaptureConfig::tids` / `set_vcpu`), read from
/// `/proc/thread-self` (no syscall wrapper, no unsafe).
pub fn current_tid() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_lines() {
        assert_eq!(
            parse_rename(b"pid=4321 oldcomm=qemu-system-x86 newcomm=CPU 0/KVM oom_score_adj=0"),
            Some((4321, "CPU 0/KVM".to_string()))
        );
        assert_eq!(
            parse_rename(b"pid=7 oldcomm=a newcomm=vcpu1 oom_score_adj=-1000"),
            Some((7, "vcpu1".to_string()))
        );
        assert_eq!(parse_rename(b"pid=x oldcomm=a newcomm=b"), None);
        assert_eq!(parse_rename(b""), None);
    }

    /// A failed `trace_pipe` read is kept for `read_error` (the recorder turns
    /// it into an error), never dropped: reading a directory fails (EISDIR).
    #[test]
    fn a_failed_read_is_reported() {
        let dir = File::open(std::env::temp_dir()).unwrap();
        let shared = Mutex::new(Shared::default());
        read_pipe(dir, &AtomicBool::new(false), &shared);
        let s = shared.lock().unwrap();
        assert!(s.read_error.is_some());
    }
}
