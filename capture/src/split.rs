//! Keeping VMs and vCPUs apart in a capture of other VMMs (wrap/attach
//! recording, import): each thread with KVM events is tied to one VM and one
//! vCPU, and each VM's events go to its own trace.
//!
//! - **VM**: the thread's process (tgid) when known (live `/proc`, or the
//!   tgid column of `options/record-tgid` text); within a process (or without
//!   a tgid), a vCPU number already held by another thread of the VM starts a
//!   new VM: two `CPU 0/KVM` threads are never one VM. VMs are numbered in the
//!   order their first event appears.
//! - **vCPU**: in order of preference, the `vcpu N` of `kvm_entry`/`kvm_exit`
//!   (the first line of the thread, where they fire), what the caller
//!   learned (ioctl tap, the fd of the `KVM_RUN` the thread is in), the
//!   thread-name convention (`vmm`), else the next free number in the VM (a
//!   guess, `VcpuIdentity::FirstSeen`, which `info` reports as a taint).
//! - Each vCPU's first record is its `VcpuThread`; with `from_creation`
//!   (vCPUs created while the capture ran: wrap mode) a `KernelReset` with
//!   nothing known follows.
//! - Only events that run on a vCPU's own thread make a thread a vCPU: an
//!   accepted interrupt on another thread (the VMM's I/O thread injecting an
//!   MSI) is not one; an INIT/SIPI accepted there still reaches its target.

use kvmtrace_format::{Event, KnownState, SIPI_FROM_UNKNOWN, VcpuIdentity};

use crate::convert::{ConvertError, ConvertStats, Converter, MAX_VCPUS, Observed, VcpuMap};
use crate::fields::KvmEvent;

/// Most VMs one capture may hold.
pub const MAX_VMS: usize = 256;

/// What is known about a thread when its first event arrives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThreadDesc {
    /// Its process, when known.
    pub tgid: Option<u32>,
    /// Its name (`comm`, or the text's task field).
    pub comm: String,
    /// Its vcpu_id, when the caller knows it, and how.
    pub vcpu: Option<(u32, VcpuIdentity)>,
}

#[derive(Clone, Debug)]
struct Thread {
    tid: u32,
    vm: usize,
}

/// One VM of the capture.
#[derive(Clone, Debug)]
pub struct Vm {
    /// Its process, when known.
    pub tgid: Option<u32>,
    conv: Converter,
    /// (vcpu, tid) of its vCPU threads.
    vcpus: Vec<(u32, u32)>,
    /// vCPUs that have had their first record.
    started: Vec<u32>,
    /// vCPUs whose identity is a guess.
    pub guessed: Vec<u32>,
    /// The trace-clock time of its first event.
    pub first_ns: u64,
}

impl Vm {
    /// The vCPU numbers of this VM, sorted.
    pub fn vcpu_numbers(&self) -> Vec<u32> {
        let mut v = self.started.clone();
        v.sort_unstable();
        v
    }

    pub fn stats(&self) -> &ConvertStats {
        &self.conv.stats
    }

    /// Whether this VM is process `pid`'s, or holds thread `pid`.
    pub fn holds(&self, pid: u32) -> bool {
        self.tgid == Some(pid) || self.vcpus.iter().any(|&(_, t)| t == pid)
    }
}

/// Splits a capture's decoded lines into VMs and vCPUs.
#[derive(Clone, Debug)]
pub struct VmSplitter {
    from_creation: bool,
    threads: Vec<Thread>,
    /// Threads seen with only non-vCPU events (their tgid), not tied to a VM.
    pub vms: Vec<Vm>,
    /// Lines of threads that are not vCPUs (accepted interrupts on I/O threads).
    pub foreign_lines: u64,
    /// Two VMs were told apart without process ids (import of text without
    /// the tgid column): which thread belongs to which VM is a guess.
    pub membership_guessed: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SplitError {
    #[error("more than {MAX_VMS} VMs in one capture")]
    TooManyVms,
    #[error(transparent)]
    Convert(#[from] ConvertError),
}

/// Whether an event runs on the vCPU's own thread.
fn vcpu_context(ev: &KvmEvent) -> bool {
    !matches!(ev, KvmEvent::ApicAcceptIrq { .. })
}

impl VmSplitter {
    /// `from_creation`: every vCPU was created while the capture ran.
    pub fn new(from_creation: bool) -> Self {
        VmSplitter {
            from_creation,
            threads: Vec::new(),
            vms: Vec::new(),
            foreign_lines: 0,
            membership_guessed: false,
        }
    }

    /// The (vm, vcpu) of thread `tid`, once it had a vCPU event.
    pub fn vcpu_of(&self, tid: u32) -> Option<(usize, u32)> {
        let t = self.threads.iter().rfind(|t| t.tid == tid)?;
        let vm = &self.vms[t.vm];
        vm.vcpus
            .iter()
            .find(|&&(_, t)| t == tid)
            .map(|&(v, _)| (t.vm, v))
    }

    fn new_vm(&mut self, tgid: Option<u32>, ts_ns: u64) -> Result<usize, SplitError> {
        if self.vms.len() >= MAX_VMS {
            return Err(SplitError::TooManyVms);
        }
        if tgid.is_none() && self.vms.iter().any(|v| v.tgid.is_none()) {
            self.membership_guessed = true;
        }
        self.vms.push(Vm {
            tgid,
            conv: Converter::new(VcpuMap::Fixed(Vec::new())),
            vcpus: Vec::new(),
            started: Vec::new(),
            guessed: Vec::new(),
            first_ns: ts_ns,
        });
        Ok(self.vms.len() - 1)
    }

    /// The VM of a new vCPU thread with vCPU number `n` (None: to be guessed).
    fn place(
        &mut self,
        tgid: Option<u32>,
        n: Option<u32>,
        ts_ns: u64,
    ) -> Result<usize, SplitError> {
        let fits = |vm: &Vm| {
            vm.tgid == tgid
                && match n {
                    Some(n) => !vm.vcpus.iter().any(|&(v, _)| v == n),
                    None => true,
                }
        };
        match self.vms.iter().rposition(fits) {
            Some(i) => Ok(i),
            None => self.new_vm(tgid, ts_ns),
        }
    }

    /// Feed one decoded line of thread `tid`. `describe` is called once per
    /// new thread. Events come out as (VM index, event).
    pub fn feed(
        &mut self,
        ts_ns: u64,
        tid: u32,
        ev: KvmEvent,
        describe: &mut dyn FnMut(u32) -> ThreadDesc,
        out: &mut dyn FnMut(usize, Observed),
    ) -> Result<(), SplitError> {
        let vm = match self.threads.iter().rposition(|t| t.tid == tid) {
            Some(i) => self.threads[i].vm,
            None => {
                if !vcpu_context(&ev) {
                    return self.foreign(ts_ns, tid, ev, describe, out);
                }
                self.new_thread(ts_ns, tid, &ev, describe, out)?
            }
        };
        let from_creation = self.from_creation;
        let v = &mut self.vms[vm];
        let Vm {
            conv,
            started,
            vcpus,
            ..
        } = v;
        let mut err = None;
        conv.feed(ts_ns, tid, ev, &mut |o| {
            if err.is_none() && o.vcpu >= MAX_VCPUS as u32 {
                err = Some(ConvertError::TooManyVcpus);
                return;
            }
            start(started, vcpus, from_creation, &o, out, vm);
            out(vm, o);
        })?;
        match err {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    fn new_thread(
        &mut self,
        ts_ns: u64,
        tid: u32,
        ev: &KvmEvent,
        describe: &mut dyn FnMut(u32) -> ThreadDesc,
        out: &mut dyn FnMut(usize, Observed),
    ) -> Result<usize, SplitError> {
        let d = describe(tid);
        let known = match ev {
            KvmEvent::ExitOrEntry { vcpu_id: Some(n) } => Some((*n, VcpuIdentity::KvmEntry)),
            _ => d.vcpu.or_else(|| {
                crate::vmm::vcpu_from_name(d.comm.as_bytes())
                    .map(|(n, _)| (n, VcpuIdentity::ThreadName))
            }),
        };
        if self.threads.len() >= MAX_VCPUS * 4 {
            return Err(ConvertError::TooManyVcpus.into());
        }
        let vm = self.place(d.tgid, known.map(|k| k.0), ts_ns)?;
        let v = &mut self.vms[vm];
        let (n, identity) = match known {
            Some(k) => k,
            None => {
                let n = (0..)
                    .find(|n| !v.vcpus.iter().any(|&(x, _)| x == *n))
                    .unwrap_or(0);
                v.guessed.push(n);
                (n, VcpuIdentity::FirstSeen)
            }
        };
        if n >= MAX_VCPUS as u32 {
            return Err(ConvertError::TooManyVcpus.into());
        }
        v.vcpus.push((n, tid));
        v.conv.add_tid(tid, n);
        self.threads.push(Thread { tid, vm });
        let comm: String = d.comm.chars().take(16).collect();
        let o = Observed {
            ts_ns,
            tid,
            vcpu: n,
            run_index: 0,
            event: Event::VcpuThread {
                pid: d.tgid.unwrap_or(0),
                tid,
                comm,
                identity,
            },
        };
        let from_creation = self.from_creation;
        let v = &mut self.vms[vm];
        let first = !v.started.contains(&n);
        if first {
            v.started.push(n);
        }
        out(vm, o.clone());
        if first && from_creation {
            out(
                vm,
                Observed {
                    event: Event::KernelReset {
                        known: Box::new(KnownState::UNKNOWN),
                    },
                    ..o
                },
            );
        }
        Ok(vm)
    }

    /// An event of a thread that is not (yet) a vCPU: INIT/SIPI reach their
    /// target in the thread's process's latest VM; the rest is counted.
    fn foreign(
        &mut self,
        ts_ns: u64,
        tid: u32,
        ev: KvmEvent,
        describe: &mut dyn FnMut(u32) -> ThreadDesc,
        out: &mut dyn FnMut(usize, Observed),
    ) -> Result<(), SplitError> {
        self.foreign_lines += 1;
        let KvmEvent::ApicAcceptIrq {
            apicid,
            vector,
            mode,
            ..
        } = ev
        else {
            return Ok(());
        };
        let event = match mode {
            kvmtrace_format::IpiMode::Init => Event::KernelInit {
                from: None,
                known: Box::new(KnownState::UNKNOWN),
            },
            kvmtrace_format::IpiMode::Sipi => Event::Sipi {
                from: SIPI_FROM_UNKNOWN,
                vector,
            },
            _ => return Ok(()),
        };
        let tgid = describe(tid).tgid;
        let Some(vm) = self.vms.iter().rposition(|v| v.tgid == tgid) else {
            return Ok(());
        };
        let o = Observed {
            ts_ns,
            tid,
            vcpu: apicid,
            run_index: 0,
            event,
        };
        if apicid >= MAX_VCPUS as u32 {
            return Err(ConvertError::TooManyVcpus.into());
        }
        let from_creation = self.from_creation;
        let v = &mut self.vms[vm];
        start(&mut v.started, &v.vcpus, from_creation, &o, out, vm);
        out(vm, o);
        Ok(())
    }

    /// The end of the input: MONITOR/MWAIT intercepts still waiting for their
    /// outcome were skipped (NOP).
    pub fn finish(&mut self, out: &mut dyn FnMut(usize, Observed)) {
        for (i, v) in self.vms.iter_mut().enumerate() {
            v.conv.finish(&mut |o| out(i, o));
        }
    }
}

/// Before a vCPU's first event: its `KernelReset` (vCPUs created under the
/// capture).
fn start(
    started: &mut Vec<u32>,
    _vcpus: &[(u32, u32)],
    from_creation: bool,
    o: &Observed,
    out: &mut dyn FnMut(usize, Observed),
    vm: usize,
) {
    if started.contains(&o.vcpu) {
        return;
    }
    started.push(o.vcpu);
    if from_creation {
        out(
            vm,
            Observed {
                ts_ns: o.ts_ns,
                tid: o.tid,
                vcpu: o.vcpu,
                run_index: 0,
                event: Event::KernelReset {
                    known: Box::new(KnownState::UNKNOWN),
                },
            },
        );
    }
}

#[cfg(test)]
mod tests;

/// The trace of VM `vm` of a capture: `OUT` for VM 0, `OUT-vmK.EXT` for VM k
/// (`q.kvt`, `q-vm1.kvt`, ...).
pub fn vm_path(output: &std::path::Path, vm: usize) -> std::path::PathBuf {
    if vm == 0 {
        return output.to_path_buf();
    }
    let stem = output
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match output.extension() {
        Some(ext) => format!("{stem}-vm{vm}.{}", ext.to_string_lossy()),
        None => format!("{stem}-vm{vm}"),
    };
    output.with_file_name(name)
}
