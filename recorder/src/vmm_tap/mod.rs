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
//! - The tap never leaves the VMM stopped, and survives a SIGKILL of the
//!   caller (see the design notes below once it is built).

use std::ffi::OsString;
use std::process::{Child, Command, ExitStatus};
use std::sync::{Arc, Mutex};

use kvmtrace_format::{Event, VmConfig};

/// One tapped ioctl's effect.
#[derive(Clone, Debug, PartialEq, Eq)]
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TapStatus {
    /// Every configuration ioctl of the VMM's process tree is captured.
    Active,
    /// Not captured (from the start, or from some point on): why, one line.
    Off { why: String },
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
    #[error("waiting for the VMM: {0}")]
    Wait(#[source] std::io::Error),
}

#[derive(Default)]
struct Shared {
    status: Option<TapStatus>,
    configs: Vec<VmConfig>,
}

/// A running VMM started by [`spawn`].
pub struct Tapped {
    child: Child,
    shared: Arc<Mutex<Shared>>,
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
        lock(&self.shared).status.clone().unwrap_or(TapStatus::Off {
            why: "the ioctl tap is not built yet".into(),
        })
    }

    /// Each VM's configuration as the tapped ioctls set it (index = VM index).
    pub fn vm_configs(&self) -> Vec<VmConfig> {
        lock(&self.shared).configs.clone()
    }
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// Start `argv` as the VMM, tapping its KVM configuration ioctls onto `tx`.
pub fn spawn(
    argv: &[OsString],
    tx: crossbeam_channel::Sender<TapEvent>,
) -> Result<Tapped, TapError> {
    let (cmd, args) = argv.split_first().ok_or(TapError::EmptyCommand)?;
    let child = Command::new(cmd)
        .args(args)
        .spawn()
        .map_err(|source| TapError::Spawn {
            cmd: cmd.to_string_lossy().into_owned(),
            source,
        })?;
    drop(tx);
    Ok(Tapped {
        child,
        shared: Arc::new(Mutex::new(Shared::default())),
    })
}
