//! The VMM's side of the boundary (issue 10): start a VMM for wrap mode and tap
//! its KVM configuration ioctls and host-initiated MSR accesses, with results.
//!
//! Contract for wrap mode (`capture` calls this; nothing else is needed):
//!
//! - [`spawn`] starts `argv` (argv[0] looked up in `PATH`) as a child of the
//!   calling process, inheriting stdio, environment and process group, so the
//!   VMM's exit status passes through ([`Tapped::wait`]) and terminal signals
//!   reach it. It returns once the command has been exec'd (or failed to).
//! - Each tapped ioctl arrives on `tx` as one or more [`TapEvent`]s, stamped
//!   with CLOCK_MONOTONIC nanoseconds (the clock of tracefs `trace_clock=mono`),
//!   the process/thread that issued it and the VM (index in `KVM_CREATE_VM`
//!   order over the whole process tree) and vCPU it applies to. Per thread the
//!   events are in issue order; merge them with tracepoint events by time.
//!   `tx` is dropped (the channel disconnects) when the tap ends, which is at
//!   the latest when the VMM's whole process tree has exited.
//! - If the tap cannot run (ptrace or seccomp forbidden, the VMM already
//!   traced, ...), the VMM still runs, untapped: [`Tapped::tap_status`] says
//!   `Off { why }` with a one-line reason for the header and `info`; record
//!   from tracepoints alone.
//! - [`Tapped::vm_configs`]: the configuration of each VM as its ioctls set it
//!   (index = VM index), exact when the tap was active from the start.
//! - [`spawn_with`] with `tap: false` starts the VMM the same way untapped
//!   (`--no-ioctl-tap`, and the bench's baseline).
//! - The tap never leaves the VMM stopped, and survives a SIGKILL of the
//!   caller: see "Design" below.
//!
//! # Design
//!
//! A seccomp filter ([`filter`]) installed in the VMM before exec returns
//! `SECCOMP_RET_TRACE` for the tapped ioctl requests only; a tracer
//! ([`tracer`]) that `PTRACE_SEIZE`d the VMM before exec (options
//! `TRACESECCOMP`, `TRACECLONE/FORK/VFORK/EXEC`, `TRACESYSGOOD`, never
//! `EXITKILL`) reads the argument at the seccomp stop (`process_vm_readv`,
//! bounded by the kernel's own limits) and the result at the syscall-exit stop
//! (`PTRACE_SYSCALL`), and resumes. Threads and children created later are
//! followed; children inherit the filter.
//!
//! With `SECCOMP_RET_TRACE` and no tracer the kernel fails the syscall with
//! ENOSYS, so a tracer that dies with kvmtrace would break every later
//! configuration ioctl of the VMM (QEMU aborts on a failed `KVM_GET_MSRS`).
//! A filter cannot consult a flag (classic BPF reads only `seccomp_data`), and
//! `SECCOMP_RET_USER_NOTIF` fails with ENOSYS too once its listener is gone,
//! and cannot see a syscall's result. So the tracer is its own process, forked
//! from kvmtrace (no exec: it needs no binary of its own), that ignores the
//! terminal's signals and lives exactly as long as the VMM's process tree:
//! kvmtrace can exit or be SIGKILLed at any time and the VMM goes on tapped
//! (the tap then only resumes stops). Only a SIGKILL of the tap process itself
//! leaves the VMM's later configuration ioctls failing with ENOSYS.

pub mod decode;
pub mod filter;
mod tracer;

use std::ffi::OsString;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use kvmtrace_format::{Event, Irqchip, VmConfig};
use serde::{Deserialize, Serialize};

/// One tapped ioctl's effect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TapEvent {
    /// CLOCK_MONOTONIC in nanoseconds at syscall exit (the same clock as
    /// tracefs with `trace_clock=mono`).
    pub time_ns: u64,
    /// The VMM process (thread group id) that issued the ioctl.
    pub pid: u32,
    /// The thread that issued it.
    pub tid: u32,
    /// VM index, in `KVM_CREATE_VM` order across the VMM's process tree.
    pub vm: u32,
    /// The vCPU id (`KVM_CREATE_VCPU`'s argument) for vCPU ioctls; `None` for
    /// VM-wide ones (`KVM_ENABLE_CAP` on a VM fd, `KVM_X86_SET_MSR_FILTER`).
    pub vcpu: Option<u32>,
    pub event: Event,
}

/// Whether the ioctl tap is running.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TapStatus {
    /// Every configuration ioctl of the VMM's process tree is captured.
    Active,
    /// Not captured (from the start, or from some point on): why, one line.
    Off { why: String },
}

/// A vCPU as `KVM_CREATE_VCPU` made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuInfo {
    pub vm: u32,
    /// The vCPU id (`KVM_CREATE_VCPU`'s argument).
    pub id: u32,
    /// The thread that created it (QEMU: the vCPU thread itself;
    /// Firecracker: its main thread, which hands the fd to a vCPU thread).
    pub creator_tid: u32,
}

/// A `KVM_ENABLE_CAP` that did not become a configuration event (x2APIC API,
/// disable exits, ...), as the VMM passed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnabledCap {
    pub vm: u32,
    pub vcpu: Option<u32>,
    pub cap: u32,
    pub args: [u64; 4],
}

/// Messages of the tap process to kvmtrace (bincode frames on a pipe).
#[derive(Clone, Debug, Serialize, Deserialize)]
enum WireMsg {
    Status(TapStatus),
    Event(TapEvent),
    Vm(VmMsg),
    Note(String),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
enum VmMsg {
    Created {
        vm: u32,
        pid: u32,
    },
    Vcpu {
        vm: u32,
        id: u32,
        tid: u32,
    },
    Irqchip {
        vm: u32,
        split: bool,
    },
    Cap {
        vm: u32,
        vcpu: Option<u32>,
        cap: u32,
        args: [u64; 4],
    },
}

/// Why the VMM could not be started at all.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("empty command")]
    EmptyCommand,
    #[error("cannot run {cmd}: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up the ioctl tap: {0}")]
    Setup(#[source] std::io::Error),
    #[error("waiting for the VMM: {0}")]
    Wait(#[source] std::io::Error),
}

#[derive(Default)]
struct Shared {
    status: Option<TapStatus>,
    configs: Vec<VmConfig>,
    vcpus: Vec<VcpuInfo>,
    caps: Vec<EnabledCap>,
    /// Process of each VM (index = VM index).
    vm_pids: Vec<u32>,
    notes: Vec<String>,
    /// Events forwarded.
    events: u64,
    /// CPU time the tap process used, once it has exited.
    tap_cpu_ns: Option<u64>,
}

/// A running VMM started by [`spawn`].
pub struct Tapped {
    child: Child,
    shared: Arc<(Mutex<Shared>, Condvar)>,
}

impl Tapped {
    /// The VMM's process id (send it signals with `kill(2)` as you like).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait for the VMM to exit; its status, to pass through.
    pub fn wait(&mut self) -> Result<ExitStatus, TapError> {
        self.child.wait().map_err(TapError::Wait)
    }

    /// Non-blocking [`Tapped::wait`].
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, TapError> {
        self.child.try_wait().map_err(TapError::Wait)
    }

    /// Whether the tap is running, or why not.
    pub fn tap_status(&self) -> TapStatus {
        lock(&self.shared.0)
            .status
            .clone()
            .unwrap_or(TapStatus::Off {
                why: "the ioctl tap did not report".into(),
            })
    }

    /// Each VM's configuration as the tapped ioctls set it (index = VM index).
    /// Exact when [`Tapped::tap_status`] is `Active`, except `memory_bytes`
    /// (memory slots are not tapped: 0).
    pub fn vm_configs(&self) -> Vec<VmConfig> {
        lock(&self.shared.0).configs.clone()
    }

    /// The process that created each VM (index = VM index, the `vm` of
    /// [`TapEvent`]), to match the VMs a tracepoint capture tells apart.
    pub fn vm_pids(&self) -> Vec<u32> {
        lock(&self.shared.0).vm_pids.clone()
    }

    /// Every vCPU created, in creation order.
    pub fn vcpus(&self) -> Vec<VcpuInfo> {
        lock(&self.shared.0).vcpus.clone()
    }

    /// `KVM_ENABLE_CAP`s with no configuration event of their own.
    pub fn enabled_caps(&self) -> Vec<EnabledCap> {
        lock(&self.shared.0).caps.clone()
    }

    /// What the tap could not record, one line each (unreadable arguments,
    /// failed ioctls, forks followed); at most 64, in order.
    pub fn notes(&self) -> Vec<String> {
        lock(&self.shared.0).notes.clone()
    }

    /// CPU time (user + system) the tap process used, once it has ended
    /// (after the channel closed): the tap's own cost.
    pub fn tap_cpu_ns(&self) -> Option<u64> {
        lock(&self.shared.0).tap_cpu_ns
    }

    /// Events sent so far.
    pub fn events(&self) -> u64 {
        lock(&self.shared.0).events
    }
}

/// CPU time (user + system) of this process's reaped children so far
/// (`getrusage(RUSAGE_CHILDREN)`): around a [`spawn`]ed run, the VMM's and the
/// tap's CPU time (the bench's CPU-time ratio, steadier than wall time on a
/// busy machine).
pub fn children_cpu_ns() -> u64 {
    // SAFETY: rusage is plain integers (all-zero valid); getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) } != 0 {
        return 0;
    }
    let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    ns(ru.ru_utime) + ns(ru.ru_stime)
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// How to start the VMM.
#[derive(Clone, Copy, Debug)]
pub struct SpawnOptions {
    /// Tap the configuration ioctls (default); `false`: start it untapped.
    pub tap: bool,
}

impl Default for SpawnOptions {
    fn default() -> Self {
        SpawnOptions { tap: true }
    }
}

/// Start `argv` as the VMM, tapping its KVM configuration ioctls onto `tx`.
pub fn spawn(
    argv: &[OsString],
    tx: crossbeam_channel::Sender<TapEvent>,
) -> Result<Tapped, TapError> {
    spawn_with(argv, tx, SpawnOptions::default())
}

fn pipe() -> Result<(OwnedFd, OwnedFd), TapError> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into our array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(TapError::Setup(std::io::Error::last_os_error()));
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// [`spawn`] with options.
pub fn spawn_with(
    argv: &[OsString],
    tx: crossbeam_channel::Sender<TapEvent>,
    opts: SpawnOptions,
) -> Result<Tapped, TapError> {
    let (cmd, args) = argv.split_first().ok_or(TapError::EmptyCommand)?;
    let shared = Arc::new((Mutex::new(Shared::default()), Condvar::new()));
    let mut command = Command::new(cmd);
    command.args(args);
    let spawn_err = |source| TapError::Spawn {
        cmd: cmd.to_string_lossy().into_owned(),
        source,
    };
    if !opts.tap {
        lock(&shared.0).status = Some(TapStatus::Off {
            why: "the ioctl tap is off (--no-ioctl-tap)".into(),
        });
        let child = command.spawn().map_err(spawn_err)?;
        return Ok(Tapped { child, shared });
    }

    let (c2t_r, c2t_w) = pipe()?;
    let (t2c_r, t2c_w) = pipe()?;
    let (ev_r, ev_w) = pipe()?;
    let program = filter::program();

    // SAFETY: the child runs only `tap_process`, which never returns (it ends
    // with `_exit`); glibc keeps malloc usable in a forked child, and the tap
    // takes no lock another thread of ours could hold (no stdio, no env).
    let tap_pid = unsafe { libc::fork() };
    if tap_pid < 0 {
        return Err(TapError::Setup(std::io::Error::last_os_error()));
    }
    if tap_pid == 0 {
        tap_process(c2t_r.as_raw_fd(), t2c_w.as_raw_fd(), ev_w.as_raw_fd());
    }
    drop((c2t_r, t2c_w, ev_w));

    let reader = {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("vmm-tap-reader".into())
            .spawn(move || read_tap(ev_r, tx, &shared, tap_pid))
            .map_err(TapError::Setup)?
    };
    drop(reader);

    let (cw, tr) = (c2t_w.as_raw_fd(), t2c_r.as_raw_fd());
    // SAFETY: the closure runs between fork and exec and makes only
    // async-signal-safe calls (getpid, read, write, prctl, seccomp) on fds and
    // memory (the filter program) that the forked child holds.
    unsafe {
        command.pre_exec(move || {
            child_before_exec(cw, tr, &program);
            Ok(())
        });
    }
    let spawned = command.spawn();
    drop((c2t_w, t2c_r));
    let child = spawned.map_err(spawn_err)?;

    // The tap reports its status right after the VMM's exec (or its failure).
    let (m, cv) = &*shared;
    let guard = lock(m);
    let _ = cv.wait_timeout_while(guard, Duration::from_secs(10), |s| s.status.is_none());
    Ok(Tapped { child, shared })
}

/// The pipe `fd` as a `File` that is never closed here (the caller owns it):
/// std's `write_all`/`read_exact` retry on EINTR and short transfers and
/// allocate nothing, so they serve between fork and exec as well.
fn pipe_file(fd: RawFd) -> std::mem::ManuallyDrop<std::fs::File> {
    use std::os::fd::FromRawFd;
    // SAFETY: `fd` is an open pipe end this module created and still owns;
    // ManuallyDrop keeps the File from closing it.
    std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) })
}

fn write_fd(fd: RawFd, b: &[u8]) -> bool {
    use std::io::Write;
    pipe_file(fd).write_all(b).is_ok()
}

fn read_fd(fd: RawFd, b: &mut [u8]) -> bool {
    use std::io::Read;
    pipe_file(fd).read_exact(b).is_ok()
}

const SECCOMP_FILTER_FLAG_SPEC_ALLOW: libc::c_ulong = 1 << 2;

/// In the VMM between fork and exec: tell the tap our pid, wait until it has
/// seized us, then install the filter (only then: a filter without its tracer
/// would fail the ioctls with ENOSYS) and say how that went.
fn child_before_exec(c2t: RawFd, t2c: RawFd, program: &[libc::sock_filter]) {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    if !write_fd(c2t, &pid.to_le_bytes()) {
        return;
    }
    let mut go = [0u8];
    if !read_fd(t2c, &mut go) || go[0] != b'S' {
        return;
    }
    let prog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr().cast_mut(),
    };
    // SECCOMP_FILTER_FLAG_SPEC_ALLOW: without it the kernel turns on its
    // seccomp speculation mitigations for the VMM (forced SSBD, IBPB/STIBP
    // where spectre_v2_user=seccomp), which would slow the VMM for reasons
    // that have nothing to do with the tap. Kernels before 4.17 lack the flag.
    let install = || {
        for flags in [SECCOMP_FILTER_FLAG_SPEC_ALLOW, 0] {
            // SAFETY: the kernel copies the program from `prog`, which is valid.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    1, /* SECCOMP_SET_MODE_FILTER */
                    flags,
                    &raw const prog,
                )
            };
            if r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
                return r;
            }
        }
        -1
    };
    let mut reply = [b'O', 0, 0, 0, 0];
    if install() != 0 {
        let mut err = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        if err == libc::EACCES {
            // Without CAP_SYS_ADMIN a filter needs no_new_privs.
            // SAFETY: prctl with integer arguments.
            unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
            if install() == 0 {
                reply[0] = b'P';
                err = 0;
            } else {
                err = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            }
        }
        if err != 0 {
            reply[0] = b'F';
            reply[1..].copy_from_slice(&err.to_le_bytes());
        }
    }
    write_fd(c2t, &reply);
}

/// Who traces `pid` already, for the message.
fn tracer_of(pid: i32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let tracer = status
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_default();
    if tracer.is_empty() || tracer == "0" {
        return String::new();
    }
    let comm = std::fs::read_to_string(format!("/proc/{tracer}/comm")).unwrap_or_default();
    format!(" (already traced by pid {tracer} {})", comm.trim())
}

/// The tap process (forked): seize the VMM-to-be, then trace until its whole
/// process tree is gone. Never returns.
fn tap_process(c2t: RawFd, t2c: RawFd, ev: RawFd) -> ! {
    // SAFETY: setting dispositions and the name, and closing fds we do not
    // use (the parent's files and pipes must not be held open by the tap).
    unsafe {
        for sig in [
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGPIPE,
            libc::SIGTSTP,
            libc::SIGTTIN,
            libc::SIGTTOU,
            libc::SIGUSR1,
            libc::SIGUSR2,
        ] {
            libc::signal(sig, libc::SIG_IGN);
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::prctl(libc::PR_SET_NAME, c"kvmtrace-tap".as_ptr());
        // The VMM waits on each stop until the tap runs: on a busy machine a
        // wakeup at normal priority can wait a scheduler slice, so the tap
        // (asleep in waitpid otherwise) asks for a higher one where allowed.
        libc::setpriority(libc::PRIO_PROCESS, 0, -10);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::dup2(null, 1);
        }
        let mut keep = [c2t, t2c, ev];
        keep.sort_unstable();
        let mut from = 3u32;
        for fd in keep {
            let fd = fd as u32;
            if fd > from {
                libc::syscall(libc::SYS_close_range, from, fd - 1, 0);
            }
            from = fd + 1;
        }
        libc::syscall(libc::SYS_close_range, from, u32::MAX, 0);
    }
    // SAFETY: `ev` is ours alone from here on.
    let out = unsafe { std::fs::File::from_raw_fd(ev) };
    let mut tracer = tracer::Tracer::new(out);
    let mut pid = [0u8; 4];
    if !read_fd(c2t, &mut pid) {
        tap_exit();
    }
    let pid = i32::from_le_bytes(pid);
    let opts = libc::PTRACE_O_TRACESECCOMP
        | libc::PTRACE_O_TRACECLONE
        | libc::PTRACE_O_TRACEFORK
        | libc::PTRACE_O_TRACEVFORK
        | libc::PTRACE_O_TRACEEXEC
        | libc::PTRACE_O_TRACESYSGOOD;
    // SAFETY: PTRACE_SEIZE takes no memory.
    let seized = unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0, opts as usize) } == 0;
    if !seized {
        let err = std::io::Error::last_os_error();
        write_fd(t2c, b"N");
        tracer.send(&WireMsg::Status(TapStatus::Off {
            why: format!(
                "cannot ptrace the VMM (pid {pid}): {err}{}; configuration ioctls are not recorded",
                tracer_of(pid)
            ),
        }));
        tap_exit();
    }
    write_fd(t2c, b"S");
    let mut reply = [0u8; 5];
    if !read_fd(c2t, &mut reply) {
        // The VMM died before exec: nothing to tap.
        tracer.send(&WireMsg::Status(TapStatus::Off {
            why: "the command ended before it ran".into(),
        }));
        tap_exit();
    }
    match reply[0] {
        b'O' => tracer.send(&WireMsg::Status(TapStatus::Active)),
        b'P' => {
            tracer.send(&WireMsg::Status(TapStatus::Active));
            tracer.send(&WireMsg::Note(
                "no CAP_SYS_ADMIN: the VMM runs with no_new_privs (setuid helpers get no privileges)".into(),
            ));
        }
        _ => {
            let errno = i32::from_le_bytes([reply[1], reply[2], reply[3], reply[4]]);
            tracer.send(&WireMsg::Status(TapStatus::Off {
                why: format!(
                    "cannot install the seccomp filter: {}; configuration ioctls are not recorded",
                    std::io::Error::from_raw_os_error(errno)
                ),
            }));
            // No filter: leaving detaches the VMM, which then runs untraced.
            tap_exit();
        }
    }
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| tracer.run()));
    if run.is_err() {
        tracer::service_only();
    } else {
        let [seccomp, exit, signal, other] = tracer.stops;
        tracer.send(&WireMsg::Note(format!(
            "tap stops: {seccomp} ioctl, {exit} ioctl exit, {signal} signal delivery, {other} other"
        )));
    }
    tap_exit()
}

fn tap_exit() -> ! {
    // SAFETY: _exit ends the forked tap without running the parent's atexit
    // handlers or destructors.
    unsafe { libc::_exit(0) }
}

/// kvmtrace's side of the pipe: frames in, status and configuration folded,
/// events forwarded; at EOF the tap process is reaped and `tx` dropped.
fn read_tap(
    ev: OwnedFd,
    tx: crossbeam_channel::Sender<TapEvent>,
    shared: &(Mutex<Shared>, Condvar),
    tap_pid: i32,
) {
    let mut file = std::fs::File::from(ev);
    let mut len = [0u8; 4];
    while file.read_exact(&mut len).is_ok() {
        let n = u32::from_le_bytes(len) as usize;
        if n > (1 << 20) {
            break;
        }
        let mut body = vec![0u8; n];
        if file.read_exact(&mut body).is_err() {
            break;
        }
        let cfg = bincode::config::standard().with_limit::<{ 1 << 20 }>();
        let Ok((msg, _)) = bincode::serde::decode_from_slice::<WireMsg, _>(&body, cfg) else {
            break;
        };
        let (m, cv) = shared;
        let mut s = lock(m);
        match msg {
            WireMsg::Status(st) => {
                s.status = Some(st);
                cv.notify_all();
            }
            WireMsg::Note(n) => s.notes.push(n),
            WireMsg::Vm(vm) => fold_vm(&mut s, vm),
            WireMsg::Event(ev) => {
                fold_event(&mut s, &ev);
                s.events += 1;
                drop(s);
                let _ = tx.send(ev);
            }
        }
    }
    let (m, cv) = shared;
    {
        let mut s = lock(m);
        if s.status.is_none() {
            s.status = Some(TapStatus::Off {
                why: "the ioctl tap ended before it started".into(),
            });
        }
        cv.notify_all();
    }
    let mut status = 0;
    // SAFETY: rusage is plain integers (all-zero valid); wait4 reaps our own
    // child, the tap process, and fills both.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::wait4(tap_pid, &mut status, 0, &mut ru) } == tap_pid {
        let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
        lock(m).tap_cpu_ns = Some(ns(ru.ru_utime) + ns(ru.ru_stime));
    }
    // Last: a caller that waits for the channel to close sees the tap's
    // figures complete.
    drop(tx);
}

fn config(s: &mut Shared, vm: u32) -> &mut VmConfig {
    let vm = vm as usize;
    if s.configs.len() <= vm {
        s.configs.resize(vm + 1, VmConfig::default());
    }
    &mut s.configs[vm]
}

fn fold_vm(s: &mut Shared, msg: VmMsg) {
    match msg {
        VmMsg::Created { vm, pid } => {
            config(s, vm);
            if s.vm_pids.len() <= vm as usize {
                s.vm_pids.resize(vm as usize + 1, 0);
            }
            s.vm_pids[vm as usize] = pid;
        }
        VmMsg::Vcpu { vm, id, tid } => {
            let c = config(s, vm);
            c.vcpus = c.vcpus.max(id.saturating_add(1));
            s.vcpus.push(VcpuInfo {
                vm,
                id,
                creator_tid: tid,
            });
        }
        VmMsg::Irqchip { vm, split } => {
            config(s, vm).irqchip = Some(if split {
                Irqchip::Split
            } else {
                Irqchip::Kernel
            });
        }
        VmMsg::Cap {
            vm,
            vcpu,
            cap,
            args,
        } => {
            if s.caps.len() < 1024 {
                s.caps.push(EnabledCap {
                    vm,
                    vcpu,
                    cap,
                    args,
                });
            }
        }
    }
}

/// The start configuration: the first of each (per-vCPU CPUID: the first
/// vCPU's; later changes stay events), quirks and MSR masks as last set.
fn fold_event(s: &mut Shared, ev: &TapEvent) {
    let c = config(s, ev.vm);
    match &ev.event {
        Event::Cpuid { entries } if c.cpuid.is_empty() => c.cpuid = entries.clone(),
        Event::QuirksDisabled { mask, .. } => c.disabled_quirks |= mask,
        Event::MsrFilter { filter } => c.msr_filter = Some(filter.clone()),
        Event::UserSpaceMsr { mask } => c.user_space_msr = *mask,
        Event::SetupMce { mcg_cap } if c.mcg_cap.is_none() => c.mcg_cap = Some(*mcg_cap),
        _ => {}
    }
}
