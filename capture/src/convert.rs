//! Decoded KVM tracepoint lines to kvmtrace events: the part shared by observe
//! mode (live tracefs) and `kvmtrace import ftrace` (pasted text).
//!
//! - `kvm_msr` is traced only for accesses the kernel decided itself (HOST.md):
//!   it becomes `MsrRead`/`MsrWrite` with `decided_by: Kernel, capture: None`,
//!   and its `(#GP)` mark is the outcome `InjectGp`.
//! - The `#GP (0x0)` that KVM injects for a faulting MSR access is explained by
//!   the `kvm_msr ... (#GP)` line before it and is not repeated; every other
//!   injected exception becomes an `Exception` event.
//! - `kvm_userspace_exit` for `KVM_EXIT_X86_RDMSR/WRMSR` means the access was
//!   deflected to user space (no `kvm_msr` line exists for it, so its index is
//!   unknown): it is kept as a flagged `RawExit`, as are SHUTDOWN and
//!   INTERNAL_ERROR; `reason error (E)` other than EAGAIN is the end of the vCPU
//!   (`End { VmFailed }`, e.g. EPERM from an MCi_CTL write before 6.0,
//!   SEMANTICS.md §5); HLT is `Halt`; other exits (I/O, MMIO, ...) are counted.
//! - `kvm_apic_ipi` other than Fixed/LowPrio (INIT, SIPI, NMI, SMI) becomes `Ipi`
//!   on the sending vCPU.
//! - `kvm_apic_accept_irq` with delivery mode INIT (not a level de-assert) or
//!   SIPI becomes `KernelInit` / `Sipi` of the *target* vCPU (`apicid` is its
//!   vcpu_id), from the sending vCPU; registers unknown (the tracepoint shows
//!   none). Other delivery modes are counted and skipped.
//! - `kvm_cpuid` lines teach the guest's CPUID: each new or changed leaf emits a
//!   `Cpuid` event with every leaf seen so far on that vCPU.
//! - `kvm_exit` for MONITOR/MWAIT (VMX/SVM hosts; this pvm host has no
//!   `kvm_exit` lines) becomes `Monitor`/`Mwait` decided by the kernel: `InjectUd`
//!   when the vCPU's next line is `kvm_inj_exception: #UD`, else `Nop`
//!   (SEMANTICS.md §1). RAX/ECX/EDX are not in the tracepoint and read 0.

use kvmtrace_format::{
    CpuidEntry, DecidedBy, EndReason, Event, IpiMode, KnownState, MsrOutcome, MwaitOutcome, Origin,
};

use crate::fields::{KvmEvent, RunReturn};

/// Most vCPUs (distinct tasks with KVM events) an import may have.
pub const MAX_VCPUS: usize = 4096;
/// Most distinct CPUID leaves remembered per vCPU.
pub const MAX_CPUID_LEAVES: usize = 512;

const KVM_EXIT_HLT: u32 = 5;
const EAGAIN: i32 = 11;
const EINTR: i32 = 4;

/// One converted event, before it gets a sequence number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The trace clock timestamp of the line.
    pub ts_ns: u64,
    /// The task (vCPU thread) id.
    pub tid: u32,
    pub vcpu: u32,
    /// How many `kvm_userspace_exit` lines this vCPU had before this event: the
    /// recorder merges kernel events with its own user-space exits on this key
    /// (the k-th user-space exit the VMM saw is the k-th `KVM_RUN` return).
    pub run_index: u64,
    pub event: Event,
}

impl Observed {
    /// The key that merges kernel events into the recorder's own per-vCPU
    /// stream exactly: sort a vCPU's events by key, kernel events by
    /// `merge_key()`, the recorder's by `user_merge_key(returns_seen)`, where
    /// `returns_seen` counts that vCPU's `KVM_RUN` returns so far (every
    /// return, errors and EINTR included: each has its `kvm_userspace_exit`
    /// line). A kernel event of run k comes after the user-space handling of
    /// return k and before that of return k + 1. After a ring-buffer overrun
    /// (`Lost`) the counts no longer line up: fall back to time.
    pub fn merge_key(&self) -> u64 {
        self.run_index.saturating_mul(2).saturating_add(1)
    }

    /// The record of this event, with time relative to `base_mono_ns` (the
    /// trace clock at the trace's start, e.g. `TracefsCapture::mono_ns_at`).
    pub fn into_record(self, seq: u64, base_mono_ns: u64) -> kvmtrace_format::Record {
        kvmtrace_format::Record {
            seq,
            vcpu: self.vcpu,
            time_ns: self.ts_ns.saturating_sub(base_mono_ns),
            event: self.event,
        }
    }
}

/// The merge key of a user-space event after `returns_seen` `KVM_RUN` returns
/// (see `Observed::merge_key`).
pub fn user_merge_key(returns_seen: u64) -> u64 {
    returns_seen.saturating_mul(2)
}

/// How tasks map to vCPUs.
#[derive(Clone, Debug)]
pub enum VcpuMap {
    /// Tasks become vCPUs 0, 1, ... in the order their first KVM event appears.
    InOrder,
    /// Fixed (tid, vcpu) pairs (observe mode); other tasks are ignored.
    Fixed(Vec<(u32, u32)>),
}

#[derive(Clone, Debug, Default)]
struct VcpuState {
    tid: u32,
    vcpu: u32,
    /// `#GP`s announced by `kvm_msr ... (#GP)` not yet seen injected.
    gp_explained: u8,
    runs: u64,
    cpuid: Vec<CpuidEntry>,
    /// A MONITOR/MWAIT intercept (`kvm_exit`) whose outcome the next line of
    /// this vCPU tells: `kvm_inj_exception: #UD` or anything else (NOP).
    pending_mwait: Option<PendingMwait>,
    /// The last `kvm_apic_ipi` this vCPU sent was a level INIT de-assert: the
    /// `kvm_apic_accept_irq` lines that follow it change nothing.
    init_deassert: bool,
}

#[derive(Clone, Copy, Debug)]
struct PendingMwait {
    monitor: bool,
    rip: u64,
    ts_ns: u64,
    run_index: u64,
}

fn mwait_event(p: PendingMwait, outcome: MwaitOutcome) -> Event {
    // The tracepoint does not show RAX/ECX/EDX.
    if p.monitor {
        Event::Monitor {
            rip: p.rip,
            rax: 0,
            ecx: 0,
            edx: 0,
            outcome,
            decided_by: DecidedBy::Kernel,
        }
    } else {
        Event::Mwait {
            rip: p.rip,
            eax: 0,
            ecx: 0,
            outcome,
            decided_by: DecidedBy::Kernel,
        }
    }
}

/// Counters for the summary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConvertStats {
    pub msr: u64,
    pub exceptions: u64,
    pub exceptions_explained: u64,
    pub userspace_exits: u64,
    pub userspace_exits_skipped: u64,
    pub ipis: u64,
    pub ipis_skipped: u64,
    pub cpuid: u64,
    /// MONITOR/MWAIT intercepts (`kvm_exit`, VMX/SVM hosts).
    pub mwait: u64,
    pub exit_entry: u64,
    /// INITs and SIPIs the in-kernel LAPIC accepted (`kvm_apic_accept_irq`).
    pub inits: u64,
    pub sipis: u64,
    /// Other accepted interrupts, and INIT de-asserts (change nothing here).
    pub accepted_skipped: u64,
    /// Events of tasks that are not the recorder's vCPUs (`VcpuMap::Fixed`).
    pub foreign: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConvertError {
    #[error("more than {MAX_VCPUS} tasks with KVM events: not a trace of one VM")]
    TooManyVcpus,
}

/// Converts decoded lines to events, one vCPU state machine per task.
#[derive(Clone, Debug)]
pub struct Converter {
    map: VcpuMap,
    vcpus: Vec<VcpuState>,
    pub stats: ConvertStats,
}

impl Converter {
    pub fn new(map: VcpuMap) -> Self {
        Converter {
            map,
            vcpus: Vec::new(),
            stats: ConvertStats::default(),
        }
    }

    /// Name one more thread's vCPU (`VcpuMap::Fixed`; ignored for `InOrder`).
    pub fn add_tid(&mut self, tid: u32, vcpu: u32) {
        if let VcpuMap::Fixed(pairs) = &mut self.map {
            if !pairs.iter().any(|&(t, _)| t == tid) {
                pairs.push((tid, vcpu));
            }
        }
    }

    /// How many `kvm_userspace_exit` lines task `tid` has had so far.
    pub fn runs(&self, tid: u32) -> u64 {
        self.vcpus
            .iter()
            .rfind(|v| v.tid == tid)
            .map_or(0, |v| v.runs)
    }

    /// The vCPUs seen so far, as (tid, vcpu).
    pub fn vcpus(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.vcpus.iter().map(|v| (v.tid, v.vcpu))
    }

    fn state(&mut self, tid: u32) -> Result<Option<usize>, ConvertError> {
        // vCPU counts are small: a linear scan beats hashing here, and the last
        // task is checked first (runs of lines from one task are the norm).
        if let Some(i) = self.vcpus.iter().rposition(|v| v.tid == tid) {
            return Ok(Some(i));
        }
        let vcpu = match &self.map {
            VcpuMap::InOrder => {
                if self.vcpus.len() >= MAX_VCPUS {
                    return Err(ConvertError::TooManyVcpus);
                }
                u32::try_from(self.vcpus.len()).map_err(|_| ConvertError::TooManyVcpus)?
            }
            VcpuMap::Fixed(pairs) => match pairs.iter().find(|(t, _)| *t == tid) {
                Some(&(_, v)) => v,
                None => return Ok(None),
            },
        };
        self.vcpus.push(VcpuState {
            tid,
            vcpu,
            ..Default::default()
        });
        Ok(Some(self.vcpus.len() - 1))
    }

    /// Feed one decoded line of task `tid` at `ts_ns`; converted events go to `out`.
    pub fn feed(
        &mut self,
        ts_ns: u64,
        tid: u32,
        ev: KvmEvent,
        out: &mut impl FnMut(Observed),
    ) -> Result<(), ConvertError> {
        let Some(i) = self.state(tid)? else {
            self.stats.foreign += 1;
            return Ok(());
        };
        let st = &mut self.vcpus[i];
        if let Some(p) = st.pending_mwait.take() {
            // SEMANTICS.md §1: a #UD injected right after the intercept is the
            // kernel's answer; anything else means it skipped the instruction.
            let ud = matches!(
                ev,
                KvmEvent::InjException {
                    vector: 6,
                    reinjected: false,
                    ..
                }
            );
            out(Observed {
                ts_ns: p.ts_ns,
                tid,
                vcpu: st.vcpu,
                run_index: p.run_index,
                event: mwait_event(
                    p,
                    if ud {
                        MwaitOutcome::InjectUd
                    } else {
                        MwaitOutcome::Nop
                    },
                ),
            });
            if ud {
                self.stats.exceptions_explained += 1;
                return Ok(());
            }
        }
        if matches!(ev, KvmEvent::ExitOrEntry { .. }) {
            self.stats.exit_entry += 1;
            return Ok(());
        }
        let (vcpu, run_index) = (st.vcpu, st.runs);
        let mut emit = |event| {
            out(Observed {
                ts_ns,
                tid,
                vcpu,
                run_index,
                event,
            })
        };
        let stats = &mut self.stats;
        match ev {
            KvmEvent::Msr {
                write,
                index,
                data,
                gp,
            } => {
                stats.msr += 1;
                if gp {
                    st.gp_explained = st.gp_explained.saturating_add(1).min(4);
                }
                let decided_by = DecidedBy::Kernel;
                let origin = Origin::Guest;
                emit(if write {
                    Event::MsrWrite {
                        index,
                        value: data,
                        origin,
                        outcome: if gp {
                            MsrOutcome::InjectGp
                        } else {
                            MsrOutcome::Ok
                        },
                        decided_by,
                        capture: None,
                    }
                } else {
                    Event::MsrRead {
                        index,
                        origin,
                        outcome: if gp {
                            MsrOutcome::InjectGp
                        } else {
                            MsrOutcome::Value(data)
                        },
                        decided_by,
                        capture: None,
                    }
                });
            }
            KvmEvent::InjException {
                vector,
                error_code,
                reinjected,
            } => {
                if vector == 13
                    && matches!(error_code, None | Some(0))
                    && !reinjected
                    && st.gp_explained > 0
                {
                    st.gp_explained -= 1;
                    stats.exceptions_explained += 1;
                } else {
                    stats.exceptions += 1;
                    emit(Event::Exception {
                        vector,
                        error_code,
                        reinjected,
                    });
                }
            }
            KvmEvent::UserspaceExit(ret) => {
                stats.userspace_exits += 1;
                st.runs += 1;
                match ret {
                    RunReturn::Exit(KVM_EXIT_HLT) => emit(Event::Halt),
                    // 8 SHUTDOWN, 17 INTERNAL_ERROR, 29/30 X86_RDMSR/WRMSR.
                    RunReturn::Exit(r @ (8 | 17 | 29 | 30)) => emit(Event::RawExit {
                        exit_reason: r,
                        data: Vec::new(),
                    }),
                    RunReturn::Error(e) if e != EAGAIN && e != EINTR => emit(Event::End {
                        reason: EndReason::VmFailed { errno: e },
                    }),
                    _ => stats.userspace_exits_skipped += 1,
                }
            }
            KvmEvent::ApicIpi {
                dst,
                vector,
                mode,
                deassert,
            } => {
                st.init_deassert = mode == IpiMode::Init && deassert;
                if matches!(mode, IpiMode::Fixed | IpiMode::LowestPriority) {
                    stats.ipis_skipped += 1;
                } else {
                    stats.ipis += 1;
                    emit(Event::Ipi { dst, vector, mode });
                }
            }
            KvmEvent::Cpuid {
                function,
                index,
                eax,
                ebx,
                ecx,
                edx,
            } => {
                stats.cpuid += 1;
                let entry = CpuidEntry {
                    function,
                    index,
                    flags: u32::from(index != 0),
                    eax,
                    ebx,
                    ecx,
                    edx,
                };
                let pos = st
                    .cpuid
                    .binary_search_by_key(&(function, index), |e| (e.function, e.index));
                let changed = match pos {
                    Ok(i) if st.cpuid[i] == entry => false,
                    Ok(i) => {
                        st.cpuid[i] = entry;
                        true
                    }
                    Err(i) if st.cpuid.len() < MAX_CPUID_LEAVES => {
                        st.cpuid.insert(i, entry);
                        true
                    }
                    Err(_) => false,
                };
                if changed {
                    emit(Event::Cpuid {
                        entries: st.cpuid.clone(),
                    });
                }
            }
            KvmEvent::MwaitExit { monitor, rip } => {
                stats.mwait += 1;
                st.pending_mwait = Some(PendingMwait {
                    monitor,
                    rip,
                    ts_ns,
                    run_index,
                });
            }
            KvmEvent::ApicAcceptIrq {
                apicid,
                vector,
                mode,
                level,
            } => {
                // Traced on the sender's thread; the event belongs to the
                // target vCPU (`apicid` is its vcpu_id).
                let target = |event| Observed {
                    ts_ns,
                    tid: 0,
                    vcpu: apicid,
                    run_index: 0,
                    event,
                };
                match mode {
                    // A level-triggered INIT de-assert is ignored by the LAPIC
                    // (`__apic_accept_irq`: `if (!trig_mode || level)`); the
                    // sender's `kvm_apic_ipi` line says which it was.
                    IpiMode::Init if level && st.init_deassert => stats.accepted_skipped += 1,
                    IpiMode::Init => {
                        stats.inits += 1;
                        out(target(Event::KernelInit {
                            from: Some(vcpu),
                            known: Box::new(KnownState::UNKNOWN),
                        }));
                    }
                    IpiMode::Sipi => {
                        stats.sipis += 1;
                        out(target(Event::Sipi { from: vcpu, vector }));
                    }
                    _ => stats.accepted_skipped += 1,
                }
            }
            KvmEvent::ExitOrEntry { .. } => {}
        }
        Ok(())
    }

    /// The end of the input: a MONITOR/MWAIT intercept with no later line of
    /// its vCPU was skipped (NOP).
    pub fn finish(&mut self, out: &mut impl FnMut(Observed)) {
        for st in &mut self.vcpus {
            if let Some(p) = st.pending_mwait.take() {
                out(Observed {
                    ts_ns: p.ts_ns,
                    tid: st.tid,
                    vcpu: st.vcpu,
                    run_index: p.run_index,
                    event: mwait_event(p, MwaitOutcome::Nop),
                });
            }
        }
    }
}
