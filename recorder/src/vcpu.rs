//! One vCPU thread: a small state machine (running, waiting for INIT/SIPI or a
//! wake-up after HLT, finished) around `KVM_RUN`. Exit handling is in `exits`.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use kvm_ioctls::VcpuFd;
use kvmtrace_format::{
    ArchState, CaptureMode, DecidedBy, EndReason, Event, InitSource, Irqchip, MsrOutcome, Origin,
};
use kvmtrace_replayer::Engine;
use vm_memory::GuestMemoryMmap;

use crate::guest;
use crate::live::KernelFeed;
use crate::scenarios::{HostStep, ScenarioSpec, VcpuStart};
use crate::state;
use crate::writer::EventOut;

/// Messages between vCPU threads (the user-space LAPIC's IPIs) and from the VMM.
#[derive(Clone, Debug)]
pub enum Ctl {
    Init { from: u32 },
    Sipi { from: u32, vector: u8 },
    HostStep(HostStep),
}

/// What every vCPU thread shares.
pub struct VmCtx<'a> {
    pub spec: &'a ScenarioSpec,
    pub mem: &'a GuestMemoryMmap,
    pub engine: &'a Mutex<Engine>,
    pub mode: CaptureMode,
    pub ctl: Vec<Sender<Ctl>>,
    /// vCPUs currently running guest code (not waiting).
    pub running: AtomicU32,
    /// Set when one vCPU ends the whole VM (shutdown stop, dead guest, error).
    pub stop: AtomicBool,
    /// Why the VM was stopped from outside (a signal), for the End events.
    pub stop_why: std::sync::OnceLock<String>,
    /// RESET state of each vCPU as read at creation.
    pub resets: Vec<ArchState>,
    /// CPUID.1.EAX of the guest (INIT's RDX, SEMANTICS.md §2).
    pub cpuid1_eax: u32,
    /// Fatal guest errors, reported by `record()` after the trace is finished.
    pub errors: Mutex<Vec<String>>,
    /// Exits the recorder did not understand (recorded as `RawExit`).
    pub raw_exits: AtomicU32,
    /// Per-vCPU: the thread is inside its run loop (signals may be sent to it).
    pub alive: Vec<AtomicBool>,
    pub tids: Vec<AtomicU64>,
    /// Per-vCPU: waiting inside KVM_RUN for the in-kernel LAPIC's INIT/SIPI.
    pub kernel_wait: Vec<AtomicBool>,
    /// Per-vCPU Linux thread id (observe mode maps tracepoint lines with it).
    pub linux_tids: Vec<AtomicU32>,
    /// Per-vCPU: messages sent to it, and messages it has handled.
    pub sent: Vec<AtomicU64>,
    pub acks: Vec<AtomicU64>,
    /// Observe mode: the kernel's events, folded into `engine` before it
    /// decides a user-space exit (`Vcpu::catch_up`). None in intercept mode.
    pub feed: Option<Arc<KernelFeed>>,
}

/// How long a sender keeps kicking a vCPU that has not taken its message.
const DELIVER_TIMEOUT: Duration = Duration::from_secs(1);

/// The signal that interrupts a vCPU's `KVM_RUN` (EINTR); its handler does nothing.
pub fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN() + 2
}

impl VmCtx<'_> {
    pub fn new<'a>(
        spec: &'a ScenarioSpec,
        mem: &'a GuestMemoryMmap,
        engine: &'a Mutex<Engine>,
        mode: CaptureMode,
        ctl: Vec<Sender<Ctl>>,
        resets: Vec<ArchState>,
        cpuid1_eax: u32,
    ) -> VmCtx<'a> {
        let n = spec.vcpus as usize;
        let atomics = || (0..n).map(|_| AtomicU64::new(0)).collect::<Vec<_>>();
        VmCtx {
            spec,
            mem,
            engine,
            mode,
            ctl,
            running: AtomicU32::new(
                spec.starts
                    .iter()
                    .filter(|s| matches!(s, VcpuStart::LongMode { .. }))
                    .count() as u32,
            ),
            stop: AtomicBool::new(false),
            stop_why: std::sync::OnceLock::new(),
            resets,
            cpuid1_eax,
            errors: Mutex::new(Vec::new()),
            raw_exits: AtomicU32::new(0),
            alive: (0..n).map(|_| AtomicBool::new(false)).collect(),
            tids: atomics(),
            linux_tids: (0..n).map(|_| AtomicU32::new(0)).collect(),
            kernel_wait: (0..n).map(|_| AtomicBool::new(false)).collect(),
            sent: atomics(),
            acks: atomics(),
            feed: None,
        }
    }

    pub fn fail(&self, message: String) {
        if let Ok(mut e) = self.errors.lock() {
            e.push(message);
        }
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Interrupt vCPU `t`'s `KVM_RUN` if its thread is in the run loop.
    pub fn kick(&self, t: usize) {
        if self.alive[t].load(Ordering::SeqCst) {
            let tid = self.tids[t].load(Ordering::SeqCst) as libc::pthread_t;
            // SAFETY: `alive` is set after `tids[t]` and cleared before the thread
            // leaves its run loop; scoped threads are joined only when the scope
            // ends, so `tid` names a live, unjoined thread. The signal's handler
            // is a no-op registered before any vCPU thread started.
            unsafe { libc::pthread_kill(tid, kick_signal()) };
        }
    }

    /// Why the VM stopped, for a vCPU's `End` event.
    pub fn stopped_why(&self) -> String {
        self.stop_why
            .get()
            .cloned()
            .unwrap_or_else(|| "the VM was stopped".into())
    }

    /// Send `msg` to vCPU `t` and kick it until it has taken the message (an
    /// IPI takes effect at once, not at the target's next exit), for at most
    /// `DELIVER_TIMEOUT`.
    pub fn deliver(&self, from: u32, t: u32, msg: Ctl) {
        let ti = t as usize;
        let Some(tx) = self.ctl.get(ti) else { return };
        let n = self.sent[ti].fetch_add(1, Ordering::SeqCst) + 1;
        if tx.send(msg).is_err() || t == from {
            return;
        }
        let deadline = Instant::now() + DELIVER_TIMEOUT;
        while self.acks[ti].load(Ordering::SeqCst) < n
            && self.alive[ti].load(Ordering::SeqCst)
            && !self.stop.load(Ordering::SeqCst)
            && Instant::now() < deadline
        {
            self.kick(ti);
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// How a vCPU is waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// In wait-for-SIPI (initial state of an AP, or after INIT).
    Sipi,
    /// After HLT with no in-kernel irqchip: until an IPI.
    Halt,
}

/// What the loop does after one exit.
#[derive(Debug, PartialEq)]
pub enum Step {
    Continue,
    Wait(Wait),
    /// This vCPU is done; the others go on.
    End(EndReason),
    /// The whole VM stops.
    StopVm(EndReason),
}

/// A vCPU thread's own state.
pub struct Vcpu {
    pub index: u32,
    pub fd: VcpuFd,
    pub out: EventOut,
    pub rx: Receiver<Ctl>,
    pub start: VcpuStart,
    /// The xAPIC ICR high dword (destination) this vCPU last wrote.
    pub icr_hi: u32,
    /// Consecutive exception reports at the same RIP (runaway guard).
    pub last_fault: (u64, u32),
    /// `KVM_RUN` returns so far (observe mode's merge key).
    pub runs: u64,
    /// Observe mode: the run count up to which the kernel's events have been
    /// folded into the engine (`catch_up`).
    pub caught_up: u64,
    /// The state last read from this vCPU (the `before` of an in-kernel INIT).
    pub last_state: Option<ArchState>,
    /// Reused for the kernel's answers to unmodeled MSR exits.
    pub msr: state::OneMsr,
}

const WAIT_POLL: Duration = Duration::from_millis(20);

impl Vcpu {
    /// Run to the end; the `End` event is recorded here.
    /// Returns the vCPU's counters (observe mode's held records went through
    /// the hold link).
    pub fn run(mut self, ctx: &VmCtx<'_>) -> crate::writer::OutStats {
        let i = self.index as usize;
        // SAFETY: pthread_self has no preconditions; it returns this thread's id,
        // which stays valid until the scope joins this thread.
        let tid = unsafe { libc::pthread_self() };
        ctx.tids[i].store(tid as u64, Ordering::SeqCst);
        if ctx.mode == CaptureMode::Observe
            && let Some(t) = crate::observe::current_tid()
        {
            ctx.linux_tids[i].store(t, Ordering::SeqCst);
        }
        ctx.alive[i].store(true, Ordering::SeqCst);
        let (reason, was_running) = self.main(ctx);
        ctx.alive[i].store(false, Ordering::SeqCst);
        if was_running {
            ctx.running.fetch_sub(1, Ordering::SeqCst);
        }
        self.log(ctx, Event::End { reason });
        self.out.close();
        std::mem::take(&mut self.out.stats)
    }

    /// Returns the end reason and whether the vCPU was counted as running.
    fn main(&mut self, ctx: &VmCtx<'_>) -> (EndReason, bool) {
        let mut waiting = match self.start {
            VcpuStart::LongMode { rip } => {
                if let Err(e) = self.enter_long_mode(ctx, rip) {
                    ctx.fail(format!("vCPU {}: {e}", self.index));
                    return (EndReason::Error { message: e }, true);
                }
                None
            }
            // With an in-kernel LAPIC the kernel holds the vCPU in KVM_RUN until
            // INIT and SIPI (HOST.md, INIT / RESET).
            VcpuStart::WaitForSipi if ctx.spec.irqchip != Irqchip::None => {
                ctx.kernel_wait[self.index as usize].store(true, Ordering::SeqCst);
                ctx.running.fetch_add(1, Ordering::SeqCst);
                None
            }
            VcpuStart::WaitForSipi => Some(Wait::Sipi),
        };
        let mut running = waiting.is_none();
        loop {
            if ctx.stop.load(Ordering::SeqCst) {
                return (
                    EndReason::Stopped {
                        why: ctx.stopped_why(),
                    },
                    running,
                );
            }
            if self.out.failed() {
                ctx.fail("the trace output failed".into());
                return (
                    EndReason::Stopped {
                        why: "the trace output failed".into(),
                    },
                    running,
                );
            }
            if let Some(w) = waiting {
                if running {
                    ctx.running.fetch_sub(1, Ordering::SeqCst);
                }
                self.out.before_wait();
                let woke = self.wait(ctx, w);
                self.out.after_blocking();
                match woke {
                    Ok(()) => {
                        waiting = None;
                        ctx.running.fetch_add(1, Ordering::SeqCst);
                        running = true;
                    }
                    Err(end) => return (end, false),
                }
                continue;
            }
            // IPIs and host steps sent while this vCPU runs take effect at its
            // next exit (a user-space LAPIC cannot interrupt KVM_RUN cheaply).
            while let Ok(msg) = self.rx.try_recv() {
                if let Some(w) = self.handle_ctl(ctx, msg, None) {
                    waiting = Some(w);
                }
            }
            if waiting.is_some() {
                continue;
            }
            match self.run_once(ctx) {
                Step::Continue => {}
                Step::Wait(w) => waiting = Some(w),
                Step::End(reason) => return (reason, running),
                Step::StopVm(reason) => {
                    ctx.stop.store(true, Ordering::SeqCst);
                    return (reason, running);
                }
            }
        }
    }

    fn enter_long_mode(&mut self, ctx: &VmCtx<'_>, rip: u64) -> Result<(), String> {
        let sregs = self
            .fd
            .get_sregs()
            .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
        self.fd
            .set_sregs(&guest::long_mode_sregs(sregs))
            .map_err(|e| format!("KVM_SET_SREGS (long mode): {e}"))?;
        self.fd
            .set_regs(&guest::long_mode_regs(self.index, rip))
            .map_err(|e| format!("KVM_SET_REGS (long mode): {e}"))?;
        // With an in-kernel LAPIC an AP is created UNINITIALIZED (waiting for
        // INIT/SIPI, `kvm_arch_vcpu_create`): a scenario that starts it in
        // long mode makes it runnable, as firmware's INIT/SIPI would.
        if ctx.spec.irqchip != Irqchip::None && self.index != 0 {
            self.fd
                .set_mp_state(kvm_bindings::kvm_mp_state {
                    mp_state: kvm_bindings::KVM_MP_STATE_RUNNABLE,
                })
                .map_err(|e| format!("KVM_SET_MP_STATE (runnable): {e}"))?;
        }
        Ok(())
    }

    /// Block until an IPI lets the vCPU run (Ok) or nothing can wake it (Err).
    fn wait(&mut self, ctx: &VmCtx<'_>, mut w: Wait) -> Result<(), EndReason> {
        loop {
            if ctx.stop.load(Ordering::SeqCst) {
                return Err(EndReason::Stopped {
                    why: ctx.stopped_why(),
                });
            }
            let msg = match self.rx.recv_timeout(WAIT_POLL) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    // Senders send before they stop running: check, then look again.
                    if ctx.running.load(Ordering::SeqCst) == 0 {
                        match self.rx.try_recv() {
                            Ok(m) => m,
                            Err(_) => {
                                let why = match w {
                                    Wait::Sipi => "waiting for SIPI; no vCPU left to send one",
                                    Wait::Halt => "halted; no vCPU left to wake it",
                                };
                                return Err(EndReason::Stopped { why: why.into() });
                            }
                        }
                    } else {
                        continue;
                    }
                }
            };
            match self.handle_ctl(ctx, msg, Some(w)) {
                Some(next) => w = next,
                None => return Ok(()),
            }
        }
    }

    /// Handle one message. `waiting` is the current wait (None = running).
    /// Returns the wait state after it (None = run).
    fn handle_msg(&mut self, ctx: &VmCtx<'_>, msg: Ctl, waiting: Option<Wait>) -> Option<Wait> {
        match msg {
            Ctl::Init { from } => {
                if let Err(e) = self.init(ctx, InitSource::Ipi { from }) {
                    ctx.fail(format!("vCPU {}: INIT: {e}", self.index));
                }
                Some(Wait::Sipi)
            }
            Ctl::Sipi { from, vector } => {
                if waiting != Some(Wait::Sipi) {
                    // Outside wait-for-SIPI a startup IPI is dropped (SDM 10.4.7.3).
                    return waiting;
                }
                match self.sipi(ctx, from, vector) {
                    Ok(()) => None,
                    Err(e) => {
                        ctx.fail(format!("vCPU {}: SIPI: {e}", self.index));
                        waiting
                    }
                }
            }
            Ctl::HostStep(step) => {
                self.host_step(ctx, &step);
                waiting
            }
        }
    }

    fn handle_ctl(&mut self, ctx: &VmCtx<'_>, msg: Ctl, waiting: Option<Wait>) -> Option<Wait> {
        let next = self.handle_msg(ctx, msg, waiting);
        ctx.acks[self.index as usize].fetch_add(1, Ordering::SeqCst);
        next
    }

    /// Observe mode: before the live engine decides anything for this vCPU,
    /// fold every kernel event of its runs so far (the kernel decided them
    /// before `KVM_RUN` returned, but the capture delivers them later). Call
    /// it without the engine locked. Nothing to do in intercept mode.
    pub fn catch_up(&mut self, ctx: &VmCtx<'_>) {
        let Some(feed) = &ctx.feed else { return };
        if self.caught_up >= self.runs {
            return;
        }
        let tid = ctx.linux_tids[self.index as usize].load(Ordering::SeqCst);
        if tid != 0 {
            feed.catch_up(self.index, tid, self.runs, ctx.engine);
        }
        self.caught_up = self.runs;
    }

    /// INIT this vCPU with the state the live policy computes (or the ≥5.15
    /// rule when it does not model INIT) and record before/after.
    pub fn init(&mut self, ctx: &VmCtx<'_>, source: InitSource) -> Result<(), String> {
        self.catch_up(ctx);
        let before = state::read(&self.fd).map_err(|e| e.to_string())?;
        let mut eng = ctx.engine.lock().map_err(|_| "engine lock poisoned")?;
        let target = eng
            .init_state(self.index, &before)
            .outcome
            .unwrap_or_else(|| {
                state::fallback_init(&ctx.resets[self.index as usize], &before, ctx.cpuid1_eax)
            });
        state::apply(&self.fd, &target).map_err(|e| e.to_string())?;
        let after = state::read(&self.fd).map_err(|e| e.to_string())?;
        let rec = self.out.stamp(Event::Init {
            source,
            before: Box::new(before),
            after: Box::new(after),
            decided_by: DecidedBy::Vmm,
        });
        eng.apply(&rec);
        drop(eng);
        self.out.push(rec);
        Ok(())
    }

    /// Record an event the engine folds as it is (I/O, IPIs, SIPI, End...).
    pub fn log(&mut self, ctx: &VmCtx<'_>, event: Event) {
        let mut eng = ctx.engine.lock().unwrap_or_else(|p| p.into_inner());
        let rec = self.out.stamp(event);
        eng.apply(&rec);
        drop(eng);
        self.out.push(rec);
    }

    /// Put this vCPU into the state the policy says RESET gives (or the RESET
    /// state read at creation) and record it.
    pub fn reset(&mut self, ctx: &VmCtx<'_>) -> Result<(), String> {
        self.catch_up(ctx);
        let mut eng = ctx.engine.lock().map_err(|_| "engine lock poisoned")?;
        let target = eng
            .reset_state(self.index)
            .outcome
            .unwrap_or_else(|| ctx.resets[self.index as usize].clone());
        state::apply(&self.fd, &target).map_err(|e| e.to_string())?;
        let after = state::read(&self.fd).map_err(|e| e.to_string())?;
        let rec = self.out.stamp(Event::Reset {
            state: Box::new(after),
            decided_by: DecidedBy::Vmm,
        });
        eng.apply(&rec);
        drop(eng);
        self.out.push(rec);
        Ok(())
    }

    fn sipi(&mut self, ctx: &VmCtx<'_>, from: u32, vector: u8) -> Result<(), String> {
        let mut sregs = self.fd.get_sregs().map_err(|e| e.to_string())?;
        sregs.cs.selector = u16::from(vector) << 8;
        sregs.cs.base = u64::from(vector) << 12;
        self.fd.set_sregs(&sregs).map_err(|e| e.to_string())?;
        let mut regs = self.fd.get_regs().map_err(|e| e.to_string())?;
        regs.rip = 0;
        self.fd.set_regs(&regs).map_err(|e| e.to_string())?;
        self.log(ctx, Event::Sipi { from, vector });
        Ok(())
    }

    /// A host step: on this vCPU now, on another vCPU through its channel.
    pub fn host_step(&mut self, ctx: &VmCtx<'_>, step: &HostStep) {
        match step {
            HostStep::Seq(steps) => {
                for s in steps {
                    self.host_step(ctx, s);
                }
            }
            HostStep::WriteMsr { vcpu, .. } | HostStep::ReadMsr { vcpu, .. }
                if *vcpu != self.index =>
            {
                ctx.deliver(self.index, *vcpu, Ctl::HostStep(step.clone()));
            }
            _ => {
                // The kernel's answer is folded after its earlier guest decisions.
                self.catch_up(ctx);
                host_msr_step(&self.fd, ctx.engine, &mut self.out, self.index, step)
            }
        }
    }
}

/// `KVM_SET_MSRS`/`KVM_GET_MSRS` of one MSR on `fd`, recorded as a host-origin
/// event with the kernel's answer.
pub fn host_msr_step(
    fd: &VcpuFd,
    engine: &Mutex<Engine>,
    out: &mut EventOut,
    vcpu: u32,
    step: &HostStep,
) {
    let event = match *step {
        HostStep::WriteMsr { index, value, .. } => {
            let outcome = match state::set_msr(fd, index, value) {
                Ok(true) => MsrOutcome::Ok,
                Ok(false) | Err(_) => MsrOutcome::InjectGp,
            };
            Event::MsrWrite {
                index,
                value,
                origin: Origin::Host,
                outcome,
                decided_by: DecidedBy::Kernel,
                capture: None,
            }
        }
        HostStep::ReadMsr { index, .. } => {
            let outcome = match state::get_msr(fd, index) {
                Ok(Some(v)) => MsrOutcome::Value(v),
                Ok(None) | Err(_) => MsrOutcome::InjectGp,
            };
            Event::MsrRead {
                index,
                origin: Origin::Host,
                outcome,
                decided_by: DecidedBy::Kernel,
                capture: None,
            }
        }
        HostStep::Seq(ref steps) => {
            for s in steps {
                host_msr_step(fd, engine, out, vcpu, s);
            }
            return;
        }
    };
    let mut eng = engine.lock().unwrap_or_else(|p| p.into_inner());
    let rec = out.stamp_for(vcpu, event);
    eng.apply(&rec);
    drop(eng);
    out.push(rec);
}
