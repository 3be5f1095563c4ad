//! The tap process: a ptrace tracer forked from kvmtrace that follows the
//! VMM's process tree, stops only where the seccomp filter says (the KVM
//! configuration ioctls), and sends what it saw to kvmtrace through a pipe.
//!
//! It outlives kvmtrace on purpose: a tracee of `SECCOMP_RET_TRACE` whose
//! tracer is gone gets ENOSYS from every filtered ioctl, so the tracer must
//! stay until the VMM's last process exits. Once kvmtrace is gone (the pipe
//! breaks) it stops reading arguments and only lets each stop go on.

use std::collections::HashMap;
use std::io::Write;

use super::decode::{self, Arg, Mem};
use super::filter as f;
use super::{TapEvent, VmMsg, WireMsg};

const PTRACE_EVENT_STOP: i32 = 128;

/// One tapped ioctl between its seccomp stop and its syscall-exit stop.
struct Pending {
    req: u32,
    fd: i32,
    arg: u64,
    read: Result<Arg, String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FdKind {
    Vm(u32),
    Vcpu { vm: u32, id: u32 },
}

struct Tracee(i32);

impl Mem for Tracee {
    fn read(&self, addr: u64, buf: &mut [u8]) -> std::io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let remote = libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: buf.len(),
        };
        // SAFETY: `local` covers exactly `buf`, which we own mutably; the
        // remote side is the tracee's memory, which the kernel checks.
        let n = unsafe { libc::process_vm_readv(self.0, &local, 1, &remote, 1, 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if n as usize != buf.len() {
            return Err(std::io::Error::from_raw_os_error(libc::EFAULT));
        }
        Ok(())
    }
}

pub(super) struct Tracer {
    out: Option<std::fs::File>,
    /// (tgid, fd) -> what the fd is.
    fds: HashMap<(i32, i32), FdKind>,
    tgids: HashMap<i32, i32>,
    pending: HashMap<i32, Pending>,
    vms: u32,
    notes: u32,
    /// Stops by kind: seccomp, syscall exit, signal delivery, other.
    pub(super) stops: [u64; 4],
}

const MAX_NOTES: u32 = 64;

fn ptrace(req: libc::c_uint, pid: i32, addr: usize, data: usize) -> i64 {
    // SAFETY: the requests used here (SEIZE, CONT, SYSCALL, LISTEN,
    // GETEVENTMSG into a u64 we own, GETREGS into a user_regs_struct we own)
    // write at most to the addresses we pass for them.
    unsafe {
        libc::ptrace(
            req,
            pid,
            addr as *mut libc::c_void,
            data as *mut libc::c_void,
        )
    }
}

fn regs(tid: i32) -> Option<libc::user_regs_struct> {
    // SAFETY: user_regs_struct is plain integers; all-zero is a valid value.
    let mut r: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    (ptrace(libc::PTRACE_GETREGS, tid, 0, &raw mut r as usize) == 0).then_some(r)
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The thread group of `tid` (from /proc; `tid` itself if unreadable).
fn read_tgid(tid: i32) -> i32 {
    std::fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Tgid:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(tid)
}

impl Tracer {
    pub(super) fn new(out: std::fs::File) -> Tracer {
        Tracer {
            out: Some(out),
            fds: HashMap::new(),
            tgids: HashMap::new(),
            pending: HashMap::new(),
            vms: 0,
            notes: 0,
            stops: [0; 4],
        }
    }

    pub(super) fn send(&mut self, msg: &WireMsg) {
        let Some(out) = self.out.as_mut() else { return };
        let Ok(body) = bincode::serde::encode_to_vec(msg, bincode::config::standard()) else {
            return;
        };
        let mut frame = (body.len() as u32).to_le_bytes().to_vec();
        frame.extend(body);
        if out.write_all(&frame).is_err() {
            // kvmtrace is gone: keep the VMM running, stop reading.
            self.out = None;
        }
    }

    fn note(&mut self, text: String) {
        self.notes += 1;
        if self.notes <= MAX_NOTES {
            self.send(&WireMsg::Note(text));
        }
    }

    fn tgid(&mut self, tid: i32) -> i32 {
        *self.tgids.entry(tid).or_insert_with(|| read_tgid(tid))
    }

    /// What `fd` of `tgid` is: from the map, else from its /proc link
    /// (`anon_inode:kvm-vm`, `anon_inode:kvm-vcpu:N`) when the process has
    /// one VM (a dup'ed fd, or one opened before the tap saw it).
    fn fd_kind(&mut self, tgid: i32, fd: i32) -> Option<FdKind> {
        if let Some(&k) = self.fds.get(&(tgid, fd)) {
            return Some(k);
        }
        let link = std::fs::read_link(format!("/proc/{tgid}/fd/{fd}")).ok()?;
        let link = link.to_string_lossy();
        let mut vms = self
            .fds
            .iter()
            .filter(|((t, _), _)| *t == tgid)
            .map(|(_, k)| match k {
                FdKind::Vm(v) => *v,
                FdKind::Vcpu { vm, .. } => *vm,
            });
        let vm = vms.next()?;
        if vms.any(|v| v != vm) {
            return None;
        }
        let kind = if link == "anon_inode:kvm-vm" {
            FdKind::Vm(vm)
        } else {
            let id = link.strip_prefix("anon_inode:kvm-vcpu:")?.parse().ok()?;
            FdKind::Vcpu { vm, id }
        };
        self.fds.insert((tgid, fd), kind);
        Some(kind)
    }

    /// The seccomp stop of a tapped ioctl: read its argument now (the kernel
    /// reads it during the call), finish at syscall exit.
    fn on_seccomp(&mut self, tid: i32) -> bool {
        if self.out.is_none() {
            return false;
        }
        let Some(r) = regs(tid) else { return false };
        if r.orig_rax != libc::SYS_ioctl as u64 {
            return false;
        }
        let (fd, req, arg) = (r.rdi as i32, r.rsi as u32, r.rdx);
        let read = decode::read_arg(&Tracee(tid), req, arg);
        self.pending.insert(tid, Pending { req, fd, arg, read });
        true
    }

    /// The syscall-exit stop: the result, then the events.
    fn on_exit(&mut self, tid: i32) {
        let Some(p) = self.pending.remove(&tid) else {
            return;
        };
        let Some(r) = regs(tid) else { return };
        let ret = r.rax as i64;
        let time_ns = now_ns();
        let tgid = self.tgid(tid);
        let name = f::request_name(p.req);
        match p.req {
            f::KVM_CREATE_VM => {
                if ret >= 0 {
                    let vm = self.vms;
                    self.vms += 1;
                    self.fds.insert((tgid, ret as i32), FdKind::Vm(vm));
                    self.send(&WireMsg::Vm(VmMsg::Created {
                        vm,
                        pid: tgid as u32,
                    }));
                }
                return;
            }
            f::KVM_CREATE_VCPU => {
                if ret >= 0
                    && let Some(FdKind::Vm(vm)) = self.fd_kind(tgid, p.fd)
                {
                    let id = p.arg as u32;
                    self.fds.insert((tgid, ret as i32), FdKind::Vcpu { vm, id });
                    self.send(&WireMsg::Vm(VmMsg::Vcpu {
                        vm,
                        id,
                        tid: tid as u32,
                    }));
                }
                return;
            }
            _ => {}
        }
        let Some(kind) = self.fd_kind(tgid, p.fd) else {
            // KVM_GET_MSRS on /dev/kvm (feature MSRs), or an fd of a VM the
            // tap cannot place: not a VM's configuration.
            return;
        };
        let (vm, vcpu) = match kind {
            FdKind::Vm(vm) => (vm, None),
            FdKind::Vcpu { vm, id } => (vm, Some(id)),
        };
        let arg = match p.read {
            Ok(a) => a,
            Err(why) => {
                self.note(format!(
                    "pid {tgid} tid {tid}: {name} (vm {vm}{}) not recorded: {why}",
                    vcpu.map(|v| format!(" vcpu {v}")).unwrap_or_default()
                ));
                return;
            }
        };
        // Every KVM_ENABLE_CAP, with its result (format 1.4 `CapEnabled`);
        // the configuration events some caps add follow it.
        let mut events: Vec<kvmtrace_format::Event> = decode::cap_event(&arg, ret, vcpu.is_some())
            .into_iter()
            .collect();
        match (&arg, p.req) {
            (Arg::State(_), _) => events.extend(decode::state_event(&arg, ret)),
            (Arg::Msrs(entries), f::KVM_SET_MSRS) => {
                events = decode::msr_events(true, entries, &[], ret);
            }
            (Arg::Msrs(entries), f::KVM_GET_MSRS) => {
                // The values the kernel wrote back.
                let back = match decode::read_arg(&Tracee(tid), f::KVM_GET_MSRS, p.arg) {
                    Ok(Arg::Msrs(b)) => b,
                    _ => Vec::new(),
                };
                events = decode::msr_events(false, entries, &back, ret);
            }
            (Arg::TooMany { what, n }, _) => {
                self.note(format!(
                    "pid {tgid} tid {tid}: {name} with {what} {n}: refused by the kernel ({ret})"
                ));
            }
            _ if ret == 0 => {
                if let Arg::EnableCap { cap, args } = arg {
                    match cap {
                        decode::CAP_SPLIT_IRQCHIP => {
                            self.send(&WireMsg::Vm(VmMsg::Irqchip { vm, split: true }))
                        }
                        decode::CAP_DISABLE_QUIRKS
                        | decode::CAP_DISABLE_QUIRKS2
                        | decode::CAP_X86_USER_SPACE_MSR => {}
                        _ => self.send(&WireMsg::Vm(VmMsg::Cap {
                            vm,
                            vcpu,
                            cap,
                            args,
                        })),
                    }
                }
                if p.req == f::KVM_CREATE_IRQCHIP {
                    self.send(&WireMsg::Vm(VmMsg::Irqchip { vm, split: false }));
                }
                events.extend(decode::config_event(p.req, &arg));
            }
            _ => {
                self.note(format!(
                    "pid {tgid} tid {tid}: {name} (vm {vm}) failed with errno {}",
                    -ret
                ));
            }
        }
        for event in events {
            self.send(&WireMsg::Event(TapEvent {
                time_ns,
                pid: tgid as u32,
                tid: tid as u32,
                vm,
                vcpu,
                event,
            }));
        }
    }

    /// The loop: until the last tracee is gone. Every stop is resumed.
    pub(super) fn run(&mut self) {
        loop {
            let mut status = 0;
            // SAFETY: waitpid writes the status into our local.
            let tid = unsafe { libc::waitpid(-1, &mut status, libc::__WALL) };
            if tid < 0 {
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return; // ECHILD: no tracee left.
            }
            if !libc::WIFSTOPPED(status) {
                self.pending.remove(&tid);
                self.tgids.remove(&tid);
                continue;
            }
            let sig = libc::WSTOPSIG(status);
            let event = status >> 16;
            let kind = if event == libc::PTRACE_EVENT_SECCOMP {
                0
            } else if sig == libc::SIGTRAP | 0x80 {
                1
            } else if event == 0 {
                2
            } else {
                3
            };
            self.stops[kind] += 1;
            if event == libc::PTRACE_EVENT_SECCOMP {
                let req = if self.on_seccomp(tid) {
                    libc::PTRACE_SYSCALL
                } else {
                    libc::PTRACE_CONT
                };
                ptrace(req, tid, 0, 0);
            } else if sig == libc::SIGTRAP | 0x80 {
                self.on_exit(tid);
                ptrace(libc::PTRACE_CONT, tid, 0, 0);
            } else if event == libc::PTRACE_EVENT_FORK
                || event == libc::PTRACE_EVENT_VFORK
                || event == libc::PTRACE_EVENT_CLONE
            {
                let mut new = 0u64;
                ptrace(libc::PTRACE_GETEVENTMSG, tid, 0, &raw mut new as usize);
                let (parent, child) = (self.tgid(tid), self.tgid(new as i32));
                if parent != child {
                    // A new process: its fd table is a copy of the parent's.
                    let copied: Vec<_> = self
                        .fds
                        .iter()
                        .filter(|((t, _), _)| *t == parent)
                        .map(|(&(_, fd), &k)| ((child, fd), k))
                        .collect();
                    self.fds.extend(copied);
                    self.note(format!("pid {parent} forked pid {child}: followed"));
                }
                ptrace(libc::PTRACE_CONT, tid, 0, 0);
            } else if event == libc::PTRACE_EVENT_EXEC {
                // KVM fds are O_CLOEXEC: none survive an exec.
                let tgid = self.tgid(tid);
                self.fds.retain(|(t, _), _| *t != tgid);
                self.tgids.retain(|_, t| *t != tgid);
                ptrace(libc::PTRACE_CONT, tid, 0, 0);
            } else if event == PTRACE_EVENT_STOP {
                if matches!(
                    sig,
                    libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
                ) {
                    // A group-stop (Ctrl-Z): stay stopped, as untraced.
                    ptrace(libc::PTRACE_LISTEN, tid, 0, 0);
                } else {
                    ptrace(libc::PTRACE_CONT, tid, 0, 0);
                }
            } else if event != 0 {
                ptrace(libc::PTRACE_CONT, tid, 0, 0);
            } else {
                // A signal for the tracee: deliver it.
                ptrace(libc::PTRACE_CONT, tid, 0, sig as usize);
            }
        }
    }
}

/// After a panic in [`Tracer::run`]: resume every stop, read nothing, so the
/// VMM never waits on a tracer that stopped looking.
pub(super) fn service_only() {
    loop {
        let mut status = 0;
        // SAFETY: as in `Tracer::run`.
        let tid = unsafe { libc::waitpid(-1, &mut status, libc::__WALL) };
        if tid < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return;
        }
        if !libc::WIFSTOPPED(status) {
            continue;
        }
        let (sig, event) = (libc::WSTOPSIG(status), status >> 16);
        let data = if event == 0 && sig != (libc::SIGTRAP | 0x80) {
            sig as usize
        } else {
            0
        };
        if event == PTRACE_EVENT_STOP
            && matches!(
                sig,
                libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
            )
        {
            ptrace(libc::PTRACE_LISTEN, tid, 0, 0);
        } else {
            ptrace(libc::PTRACE_CONT, tid, 0, data);
        }
    }
}
