//! What `/proc` tells about a running VMM's threads: their process, name, and
//! the vCPU a thread runs, read from the `KVM_RUN` it is in.
//!
//! A vCPU thread spends its life in `ioctl(vcpu_fd, KVM_RUN)`;
//! `/proc/PID/task/TID/syscall` shows the syscall a blocked thread is in
//! (`16 0xFD 0xae80 ...` on x86-64: ioctl, the fd, `KVM_RUN`) and
//! `/proc/PID/fd/FD` links to `anon_inode:kvm-vcpu:N`, N the vcpu_id. Reading
//! either needs the ptrace-read permission a root recorder has; nothing here
//! stops or slows the thread.

use std::path::PathBuf;

/// `ioctl` on x86-64.
const SYS_IOCTL: u64 = 16;
/// `KVM_RUN` = `_IO(KVMIO, 0x80)`.
const KVM_RUN: u64 = 0xae80;

fn task_dir(tgid: u32, tid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{tgid}/task/{tid}"))
}

/// The thread group (process) id of thread `tid`.
pub fn tgid_of(tid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The parent process of `pid` (`PPid:` of `/proc/PID/status`).
pub fn parent_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Whether process `pid` is `root` or a descendant of it: `None` where `/proc`
/// no longer shows `pid` (it exited), so that only a live process provably
/// outside the tree is called foreign. The walk is bounded (64 generations).
pub fn descends_from(pid: u32, root: u32) -> Option<bool> {
    let mut p = pid;
    for step in 0..64 {
        if p == root {
            return Some(true);
        }
        if p <= 1 {
            return Some(false);
        }
        match parent_of(p) {
            Some(pp) => p = pp,
            None if step == 0 => return None,
            None => return Some(false),
        }
    }
    Some(false)
}

/// The name of thread `tid` of process `tgid` (at most 15 bytes).
pub fn comm_of(tgid: u32, tid: u32) -> Option<String> {
    std::fs::read_to_string(task_dir(tgid, tid).join("comm"))
        .ok()
        .map(|s| s.trim_end_matches('\n').chars().take(16).collect())
}

/// The thread ids of process `pid`.
pub fn threads_of(pid: u32) -> Vec<u32> {
    let mut out: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    out.sort_unstable();
    out
}

/// Parses `/proc/.../syscall`: the fd of a `KVM_RUN` ioctl.
pub fn kvm_run_fd(syscall: &str) -> Option<u32> {
    let mut f = syscall.split_whitespace();
    let nr: u64 = f.next()?.parse().ok()?;
    let fd = u64::from_str_radix(f.next()?.strip_prefix("0x")?, 16).ok()?;
    let req = u64::from_str_radix(f.next()?.strip_prefix("0x")?, 16).ok()?;
    (nr == SYS_IOCTL && req == KVM_RUN)
        .then(|| u32::try_from(fd).ok())
        .flatten()
}

/// Parses an fd link target: the vcpu_id of `anon_inode:kvm-vcpu:N`.
pub fn vcpu_of_link(target: &str) -> Option<u32> {
    target
        .strip_prefix("anon_inode:kvm-vcpu:")
        .and_then(|n| n.parse().ok())
}

/// The vcpu_id thread `tid` of `tgid` is running (`KVM_RUN`) right now.
pub fn vcpu_in_kvm_run(tgid: u32, tid: u32) -> Option<u32> {
    let sc = std::fs::read_to_string(task_dir(tgid, tid).join("syscall")).ok()?;
    let fd = kvm_run_fd(&sc)?;
    let link = std::fs::read_link(format!("/proc/{tgid}/fd/{fd}")).ok()?;
    vcpu_of_link(link.to_str()?)
}

/// How many VMs (`anon_inode:kvm-vm` fds) process `pid` holds.
pub fn vm_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .ok()
                        .is_some_and(|l| l.to_str() == Some("anon_inode:kvm-vm"))
                })
                .count()
        })
        .unwrap_or(0)
}

/// Whether process `pid` has `/dev/kvm` or a KVM fd open (a VMM), and is alive.
pub fn is_vmm(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten().any(|e| {
                std::fs::read_link(e.path()).ok().is_some_and(|l| {
                    let s = l.to_string_lossy();
                    s == "/dev/kvm" || s.starts_with("anon_inode:kvm-")
                })
            })
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_tree() {
        let me = std::process::id();
        let parent = parent_of(me).expect("our own /proc entry");
        assert_eq!(descends_from(me, me), Some(true));
        assert_eq!(descends_from(me, parent), Some(true));
        assert_eq!(descends_from(parent, me), Some(false));
        // Beyond pid_max: no such process, so not provably foreign.
        assert_eq!(descends_from(u32::MAX - 1, me), None);
    }

    #[test]
    fn syscall_lines() {
        assert_eq!(
            kvm_run_fd("16 0x1c 0xae80 0x0 0x0 0x0 0x0 0x7ffd 0x7f12"),
            Some(0x1c)
        );
        // Another ioctl, another syscall, a running thread.
        assert_eq!(kvm_run_fd("16 0x1c 0xae9f 0x0 0x0 0x0 0x0 0x1 0x2"), None);
        assert_eq!(kvm_run_fd("7 0x5 0x1 0x0 0x0 0x0 0x0 0x1 0x2"), None);
        assert_eq!(kvm_run_fd("running"), None);
        assert_eq!(kvm_run_fd("-1 0x7ffd 0x7f12"), None);
        assert_eq!(kvm_run_fd(""), None);
    }

    #[test]
    fn fd_links() {
        assert_eq!(vcpu_of_link("anon_inode:kvm-vcpu:3"), Some(3));
        assert_eq!(vcpu_of_link("anon_inode:kvm-vm"), None);
        assert_eq!(vcpu_of_link("/dev/kvm"), None);
        assert_eq!(vcpu_of_link("anon_inode:kvm-vcpu:x"), None);
    }

    #[test]
    fn this_process() {
        let me = std::process::id();
        assert_eq!(tgid_of(me), Some(me));
        assert!(threads_of(me).contains(&me));
        assert!(comm_of(me, me).is_some());
        assert_eq!(vcpu_in_kvm_run(me, me), None);
    }
}
