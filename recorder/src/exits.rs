//! Exit handling: one `KVM_RUN`, the exit copied out of `kvm_run` into a plain
//! [`Exit`], then one small handler per kind. MSR exits are answered with what the
//! live policy decides (or what the kernel answers through `KVM_GET/SET_MSRS`
//! where the policy does not model the MSR).

use std::sync::atomic::Ordering;

use iced_x86::{Decoder, DecoderOptions, Mnemonic};
use kvm_bindings::KVM_INTERNAL_ERROR_EMULATION;
use kvm_ioctls::VcpuExit;
use kvmtrace_format::{
    AfterShutdown, DecidedBy, EndReason, Event, InitSource, IpiMode, MsrExitReason, MsrOutcome,
    MwaitOutcome, Origin, ShutdownCause, UserAnswer,
};

use crate::guest;
use crate::layout::{self, ports};
use crate::vcpu::{Ctl, Step, Vcpu, VmCtx, Wait};

const KVM_EXIT_MMIO: u32 = 6;
/// Exception reports at one RIP in a row before the guest is declared stuck.
const MAX_REPEATED_FAULTS: u32 = 16;

/// An exit, copied out of `kvm_run` so that handlers may issue vCPU ioctls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    IoOut {
        port: u16,
        size: u8,
        data: u32,
    },
    IoIn {
        port: u16,
        size: u8,
    },
    MmioWrite {
        addr: u64,
        len: u8,
        data: u64,
    },
    MmioRead {
        addr: u64,
        len: u8,
    },
    Rdmsr {
        index: u32,
        reason: u32,
    },
    Wrmsr {
        index: u32,
        data: u64,
        reason: u32,
    },
    Hlt,
    Shutdown,
    InternalError,
    /// EINTR / KVM_EXIT_INTR: nothing happened, look at the controls.
    Interrupted,
    /// EAGAIN: with an in-kernel LAPIC, the vCPU was just INITed (HOST.md).
    Again,
    /// `KVM_RUN` failed: the guest is dead.
    RunFailed {
        errno: i32,
    },
    Other {
        exit_reason: u32,
        what: String,
    },
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    let n = b.len().min(4);
    a[..n].copy_from_slice(&b[..n]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    u64::from_le_bytes(a)
}

/// What the user-space xAPIC answers to a read at `offset` of vCPU `index`'s page.
pub fn apic_read(index: u32, offset: u64) -> u32 {
    match offset {
        0x20 => index << 24, // APIC ID
        0x30 => 0x0005_0014, // version (what KVM's LAPIC reports)
        _ => 0,
    }
}

fn is_apic(addr: u64) -> bool {
    (layout::XAPIC_BASE..layout::XAPIC_BASE + 0x1000).contains(&addr)
}

/// The bitness the vCPU executes in (for decoding instruction bytes).
fn bitness(sregs: &kvm_bindings::kvm_sregs) -> u32 {
    if sregs.efer & 0x400 != 0 && sregs.cs.l != 0 {
        64
    } else if sregs.cr0 & 1 != 0 && sregs.cs.db != 0 {
        32
    } else {
        16
    }
}

/// Decode one instruction (length and mnemonic) with iced-x86.
pub fn decode(bytes: &[u8], bitness: u32, ip: u64) -> Option<(usize, Mnemonic)> {
    let mut d = Decoder::with_ip(bitness, bytes, ip, DecoderOptions::NONE);
    let insn = d.decode();
    (!insn.is_invalid()).then(|| (insn.len(), insn.mnemonic()))
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `(data, error)` to answer KVM with, or the errno of a dead guest.
pub fn reply(outcome: MsrOutcome) -> Result<(u64, bool), i32> {
    match outcome {
        MsrOutcome::Value(v)
        | MsrOutcome::UserExit {
            answer: UserAnswer::Value(v),
            ..
        } => Ok((v, false)),
        MsrOutcome::Ok
        | MsrOutcome::UserExit {
            answer: UserAnswer::Ok,
            ..
        } => Ok((0, false)),
        MsrOutcome::InjectGp
        | MsrOutcome::UserExit {
            answer: UserAnswer::Gp,
            ..
        } => Ok((0, true)),
        MsrOutcome::VmFailed { errno } => Err(errno),
    }
}

impl Vcpu {
    /// `KVM_RUN` once and handle the exit.
    pub fn run_once(&mut self, ctx: &VmCtx<'_>) -> Step {
        let index = self.index;
        self.out.before_blocking();
        let exit = match self.fd.run() {
            Ok(VcpuExit::IoOut(port, data)) => Exit::IoOut {
                port,
                size: data.len() as u8,
                data: le_u32(data),
            },
            Ok(VcpuExit::IoIn(port, data)) => {
                data.fill(0xff);
                Exit::IoIn {
                    port,
                    size: data.len() as u8,
                }
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => Exit::MmioWrite {
                addr,
                len: data.len() as u8,
                data: le_u64(data),
            },
            Ok(VcpuExit::MmioRead(addr, data)) => {
                let v = if is_apic(addr) {
                    u64::from(apic_read(index, addr - layout::XAPIC_BASE))
                } else {
                    u64::MAX
                };
                let n = data.len().min(8);
                data[..n].copy_from_slice(&v.to_le_bytes()[..n]);
                Exit::MmioRead { addr, len: n as u8 }
            }
            Ok(VcpuExit::X86Rdmsr(e)) => Exit::Rdmsr {
                index: e.index,
                reason: e.reason.bits(),
            },
            Ok(VcpuExit::X86Wrmsr(e)) => Exit::Wrmsr {
                index: e.index,
                data: e.data,
                reason: e.reason.bits(),
            },
            Ok(VcpuExit::Hlt) => Exit::Hlt,
            Ok(VcpuExit::Shutdown) => Exit::Shutdown,
            Ok(VcpuExit::InternalError) => Exit::InternalError,
            Ok(VcpuExit::Intr) => Exit::Interrupted,
            Ok(other) => Exit::Other {
                exit_reason: 0,
                what: format!("{other:?}"),
            },
            Err(e) if e.errno() == libc::EAGAIN => Exit::Again,
            Err(e) if e.errno() == libc::EINTR => Exit::Interrupted,
            Err(e) => Exit::RunFailed { errno: e.errno() },
        };
        self.out.after_blocking();
        self.runs += 1;
        self.out.set_run_index(self.runs);
        // Per exit: a load, and the (fencing) store only when the flag was set.
        let kernel_wait = &ctx.kernel_wait[index as usize];
        if kernel_wait.load(Ordering::Relaxed) {
            kernel_wait.store(false, Ordering::SeqCst);
        }
        let exit = match exit {
            Exit::Other { what, .. } => Exit::Other {
                exit_reason: self.fd.get_kvm_run().exit_reason,
                what,
            },
            e => e,
        };
        self.handle(ctx, exit)
    }

    fn handle(&mut self, ctx: &VmCtx<'_>, exit: Exit) -> Step {
        match exit {
            Exit::IoOut { port, size, data } => self.io_out(ctx, port, size, data),
            Exit::IoIn { port, size } => {
                self.log(
                    ctx,
                    Event::Io {
                        port,
                        size,
                        write: false,
                        data: u32::MAX >> (32 - 8 * u32::from(size.clamp(1, 4))),
                    },
                );
                Step::Continue
            }
            Exit::MmioWrite { addr, len, data } if is_apic(addr) => {
                self.apic_write(ctx, addr - layout::XAPIC_BASE, data as u32);
                let _ = len;
                Step::Continue
            }
            Exit::MmioRead { addr, .. } if is_apic(addr) => Step::Continue,
            Exit::MmioWrite { addr, len, data } => {
                let mut raw = addr.to_le_bytes().to_vec();
                raw.extend_from_slice(&data.to_le_bytes()[..usize::from(len.min(8))]);
                self.raw_exit(ctx, KVM_EXIT_MMIO, raw);
                Step::Continue
            }
            Exit::MmioRead { addr, .. } => {
                self.raw_exit(ctx, KVM_EXIT_MMIO, addr.to_le_bytes().to_vec());
                Step::Continue
            }
            Exit::Rdmsr { index, reason } => {
                self.catch_up(ctx);
                self.guest_msr(ctx, index, None, reason)
            }
            Exit::Wrmsr {
                index,
                data,
                reason,
            } => {
                self.catch_up(ctx);
                self.guest_msr(ctx, index, Some(data), reason)
            }
            Exit::Hlt => {
                self.log(ctx, Event::Halt);
                Step::Wait(Wait::Halt)
            }
            // Observe mode: the live engine decides these after folding the
            // kernel's events of this vCPU's earlier runs (`Vcpu::catch_up`).
            Exit::Shutdown => {
                self.catch_up(ctx);
                self.shutdown(ctx)
            }
            Exit::InternalError => {
                self.catch_up(ctx);
                self.internal_error(ctx)
            }
            Exit::Interrupted => Step::Continue,
            Exit::Again => {
                self.catch_up(ctx);
                self.kernel_init(ctx)
            }
            Exit::RunFailed { errno } => {
                ctx.fail(format!(
                    "vCPU {}: KVM_RUN failed: {}",
                    self.index,
                    std::io::Error::from_raw_os_error(errno)
                ));
                Step::StopVm(EndReason::VmFailed { errno })
            }
            Exit::Other { exit_reason, what } => {
                let mut data = what.into_bytes();
                data.truncate(256);
                self.raw_exit(ctx, exit_reason, data);
                Step::Continue
            }
        }
    }

    /// The in-kernel LAPIC INITed this vCPU: `KVM_RUN` returned EAGAIN and the
    /// registers now hold the kernel's INIT state (HOST.md); record it. The next
    /// `KVM_RUN` waits in the kernel for the SIPI.
    fn kernel_init(&mut self, ctx: &VmCtx<'_>) -> Step {
        if ctx.spec.irqchip == kvmtrace_format::Irqchip::None {
            return Step::Continue;
        }
        let before = self
            .last_state
            .take()
            .unwrap_or_else(|| ctx.resets[self.index as usize].clone());
        match crate::state::read(&self.fd) {
            Ok(after) => {
                let mut eng = ctx.engine.lock().unwrap_or_else(|p| p.into_inner());
                let rec = self.out.stamp(Event::Init {
                    source: InitSource::Kernel,
                    before: Box::new(before),
                    after: Box::new(after.clone()),
                    decided_by: DecidedBy::Kernel,
                });
                eng.apply(&rec);
                drop(eng);
                self.out.push(rec);
                self.last_state = Some(after);
                ctx.kernel_wait[self.index as usize].store(true, Ordering::SeqCst);
                Step::Continue
            }
            Err(e) => {
                let message = format!("vCPU {}: reading the state after INIT: {e}", self.index);
                ctx.fail(message.clone());
                Step::StopVm(EndReason::Error { message })
            }
        }
    }

    /// Record an exit the recorder does not understand, flagged in the summary.
    fn raw_exit(&mut self, ctx: &VmCtx<'_>, exit_reason: u32, data: Vec<u8>) {
        ctx.raw_exits.fetch_add(1, Ordering::Relaxed);
        self.log(ctx, Event::RawExit { exit_reason, data });
    }

    fn io_out(&mut self, ctx: &VmCtx<'_>, port: u16, size: u8, data: u32) -> Step {
        if port == ports::EXCEPTION {
            return self.exception(ctx, data as u8);
        }
        self.log(
            ctx,
            Event::Io {
                port,
                size,
                write: true,
                data,
            },
        );
        match port {
            ports::DONE => Step::End(EndReason::Finished),
            ports::HOSTCALL => match ctx.spec.host_steps.get(data as usize) {
                Some(step) => {
                    self.host_step(ctx, step);
                    Step::Continue
                }
                None => {
                    let message = format!(
                        "vCPU {}: HOSTCALL {data}: the scenario has {} host steps",
                        self.index,
                        ctx.spec.host_steps.len()
                    );
                    ctx.fail(message.clone());
                    Step::StopVm(EndReason::Error { message })
                }
            },
            _ => Step::Continue,
        }
    }

    /// An IDT stub reported `vector`: skip the faulting instruction in the
    /// interrupt frame, set R15 = vector + 1 (layout.rs).
    fn exception(&mut self, ctx: &VmCtx<'_>, vector: u8) -> Step {
        let fail = |ctx: &VmCtx<'_>, index: u32, what: String| {
            let message = format!("vCPU {index}: exception {vector}: {what}");
            ctx.fail(message.clone());
            Step::StopVm(EndReason::Error { message })
        };
        let mut regs = match self.fd.get_regs() {
            Ok(r) => r,
            Err(e) => return fail(ctx, self.index, format!("KVM_GET_REGS: {e}")),
        };
        // The stub pushed RAX and RDX above the CPU's frame.
        let frame = regs.rsp.wrapping_add(16);
        let rip_addr = if guest::has_error_code(vector) {
            frame + 8
        } else {
            frame
        };
        let saved_rip = match guest::read_u64(ctx.mem, rip_addr) {
            Ok(v) => v,
            Err(e) => return fail(ctx, self.index, e.to_string()),
        };
        let bytes = guest::insn_bytes(ctx.mem, saved_rip);
        let Some((len, _)) = decode(&bytes, 64, saved_rip) else {
            return fail(
                ctx,
                self.index,
                format!("cannot decode the instruction at {saved_rip:#x}"),
            );
        };
        if self.last_fault.0 == saved_rip {
            self.last_fault.1 += 1;
            if self.last_fault.1 >= MAX_REPEATED_FAULTS {
                return fail(
                    ctx,
                    self.index,
                    format!("{MAX_REPEATED_FAULTS} faults in a row at {saved_rip:#x}"),
                );
            }
        } else {
            self.last_fault = (saved_rip, 1);
        }
        let next = saved_rip + len as u64;
        if let Err(e) = guest::write(ctx.mem, rip_addr, &next.to_le_bytes()) {
            return fail(ctx, self.index, e.to_string());
        }
        regs.r15 = u64::from(vector) + 1;
        if let Err(e) = self.fd.set_regs(&regs) {
            return fail(ctx, self.index, format!("KVM_SET_REGS: {e}"));
        }
        self.log(
            ctx,
            Event::Io {
                port: ports::EXCEPTION,
                size: 4,
                write: true,
                data: u32::from(vector),
            },
        );
        Step::Continue
    }

    /// A guest RDMSR (`value` None) or WRMSR exit: the live policy decides, or,
    /// where it does not model the MSR, the kernel answers through
    /// `KVM_GET_MSRS`/`KVM_SET_MSRS` (a refused entry becomes #GP). Recorded,
    /// then answered in `kvm_run`. The hot path: no allocation, one lock.
    fn guest_msr(&mut self, ctx: &VmCtx<'_>, index: u32, value: Option<u64>, reason: u32) -> Step {
        let capture = MsrExitReason::from_bit(reason);
        let mut eng = ctx.engine.lock().unwrap_or_else(|p| p.into_inner());
        let predicted = match value {
            None => eng.msr_read(self.index, index, Origin::Guest).outcome,
            Some(v) => eng.msr_write(self.index, index, v, Origin::Guest).outcome,
        };
        let outcome = match predicted {
            Some(o) => {
                if let (Some(v), MsrOutcome::Ok) = (value, o) {
                    self.write_through(index, v);
                }
                o
            }
            None => {
                let asked = match value {
                    None => self
                        .msr
                        .get(&self.fd, index)
                        .map(|v| v.map_or(MsrOutcome::InjectGp, MsrOutcome::Value)),
                    Some(v) => self.msr.set(&self.fd, index, v).map(|ok| {
                        if ok {
                            MsrOutcome::Ok
                        } else {
                            MsrOutcome::InjectGp
                        }
                    }),
                };
                match asked {
                    Ok(o) => o,
                    Err(e) => {
                        drop(eng);
                        let op = if value.is_some() {
                            "KVM_SET_MSRS"
                        } else {
                            "KVM_GET_MSRS"
                        };
                        let message = format!("vCPU {}: {op}({index:#x}): {e}", self.index);
                        ctx.fail(message.clone());
                        return Step::StopVm(EndReason::Error { message });
                    }
                }
            }
        };
        let (origin, decided_by) = (Origin::Guest, DecidedBy::Vmm);
        let event = Event::msr_access(index, value, origin, outcome, decided_by, capture);
        let rec = self.out.stamp(event);
        eng.apply(&rec);
        drop(eng);
        self.out.push(rec);
        match reply(outcome) {
            Ok((data, error)) => {
                // A WRMSR's reply carries no data.
                self.answer_msr(value.is_none().then_some(data), error);
                Step::Continue
            }
            Err(errno) => Step::StopVm(EndReason::VmFailed { errno }),
        }
    }

    /// A guest WRMSR the live policy accepted also goes to the kernel
    /// (`KVM_SET_MSRS`), because the kernel owns what the value *does*: APIC
    /// base switches the LAPIC to x2APIC, EFER/STAR/LSTAR/SYSENTER_* steer the
    /// guest's next SYSCALL or SYSENTER, PAT its memory types. The policy stays
    /// the authority on the guest-visible outcome: where the host path refuses
    /// (an MSR this vendor module does not have, e.g. FEAT_CTL under an `intel`
    /// policy on `kvm_pvm`), the kernel's copy simply does not follow.
    fn write_through(&mut self, index: u32, value: u64) {
        let _ = self.msr.set(&self.fd, index, value);
    }

    /// Write the reply of the pending MSR exit into `kvm_run`.
    fn answer_msr(&mut self, data: Option<u64>, error: bool) {
        let run = self.fd.get_kvm_run();
        debug_assert!(matches!(
            run.exit_reason,
            kvm_bindings::KVM_EXIT_X86_RDMSR | kvm_bindings::KVM_EXIT_X86_WRMSR
        ));
        // SAFETY: the last KVM_RUN exited with KVM_EXIT_X86_RDMSR/WRMSR (only
        // rdmsr/wrmsr call this, before the next KVM_RUN), so `msr` is the active
        // member of the exit union; we write two plain integer fields.
        let msr = unsafe { &mut run.__bindgen_anon_1.msr };
        if let Some(d) = data {
            msr.data = d;
        }
        msr.error = u8::from(error);
    }

    /// MONITOR/MWAIT arrive here as emulation failures (HOST.md); anything else
    /// ends the run with a clear error.
    fn internal_error(&mut self, ctx: &VmCtx<'_>) -> Step {
        let run = self.fd.get_kvm_run();
        // SAFETY: the last KVM_RUN exited with KVM_EXIT_INTERNAL_ERROR, so
        // `internal` is the active member of the exit union; it is plain data.
        let internal = unsafe { run.__bindgen_anon_1.internal };
        let fail = |ctx: &VmCtx<'_>, message: String| {
            ctx.fail(message.clone());
            Step::StopVm(EndReason::Error { message })
        };
        let (regs, sregs) = match (self.fd.get_regs(), self.fd.get_sregs()) {
            (Ok(r), Ok(s)) => (r, s),
            _ => {
                return fail(
                    ctx,
                    format!("vCPU {}: internal error; cannot read registers", self.index),
                );
            }
        };
        let ndata = internal.ndata.min(16) as usize;
        let mut bytes: Vec<u8> = Vec::new();
        if internal.suberror == KVM_INTERNAL_ERROR_EMULATION
            && ndata >= 3
            && internal.data[0] & 1 != 0
        {
            let mut raw = [0u8; 16];
            raw[..8].copy_from_slice(&internal.data[1].to_le_bytes());
            raw[8..].copy_from_slice(&internal.data[2].to_le_bytes());
            let n = usize::from(raw[0]).min(15);
            bytes.extend_from_slice(&raw[1..1 + n]);
        }
        let decoded = decode(&bytes, bitness(&sregs), regs.rip);
        match decoded {
            Some((len, Mnemonic::Monitor | Mnemonic::Mwait)) => {
                let is_monitor = matches!(decoded, Some((_, Mnemonic::Monitor)));
                self.monitor_mwait(ctx, is_monitor, len, regs)
            }
            _ => fail(
                ctx,
                format!(
                    "vCPU {}: KVM_EXIT_INTERNAL_ERROR suberror {} at RIP {:#x} (CS base {:#x}): \
                     instruction bytes [{}] ({}); only MONITOR/MWAIT are handled",
                    self.index,
                    internal.suberror,
                    regs.rip,
                    sregs.cs.base,
                    hex(&bytes),
                    decoded
                        .map(|(_, m)| format!("{m:?}"))
                        .unwrap_or_else(|| "undecodable".into()),
                ),
            ),
        }
    }

    fn monitor_mwait(
        &mut self,
        ctx: &VmCtx<'_>,
        is_monitor: bool,
        len: usize,
        mut regs: kvm_bindings::kvm_regs,
    ) -> Step {
        let mut eng = ctx.engine.lock().unwrap_or_else(|p| p.into_inner());
        let pred = if is_monitor {
            eng.monitor(self.index)
        } else {
            eng.mwait(self.index)
        };
        // Unmodeled: NOP, what every released kernel up to 5.19 did (SEMANTICS.md §1).
        let outcome = pred.outcome.unwrap_or(MwaitOutcome::Nop);
        let applied = match outcome {
            MwaitOutcome::InjectUd => self.fd.get_vcpu_events().and_then(|mut ev| {
                ev.exception.injected = 1;
                ev.exception.nr = 6;
                ev.exception.has_error_code = 0;
                ev.exception.error_code = 0;
                ev.exception.pending = 0;
                self.fd.set_vcpu_events(&ev)
            }),
            // NotIntercepted cannot happen on this path (the exit reached us);
            // treat it as the hardware would, as a NOP.
            MwaitOutcome::Nop | MwaitOutcome::NotIntercepted => {
                let rip = regs.rip;
                regs.rip = rip + len as u64;
                let r = self.fd.set_regs(&regs);
                regs.rip = rip;
                r
            }
        };
        let event = if is_monitor {
            Event::Monitor {
                rip: regs.rip,
                rax: regs.rax,
                ecx: regs.rcx as u32,
                edx: regs.rdx as u32,
                outcome,
                decided_by: DecidedBy::Vmm,
            }
        } else {
            Event::Mwait {
                rip: regs.rip,
                eax: regs.rax as u32,
                ecx: regs.rcx as u32,
                outcome,
                decided_by: DecidedBy::Vmm,
            }
        };
        let rec = self.out.stamp(event);
        eng.apply(&rec);
        drop(eng);
        self.out.push(rec);
        match applied {
            Ok(()) => Step::Continue,
            Err(e) => {
                let message = format!("vCPU {}: applying {outcome:?}: {e}", self.index);
                ctx.fail(message.clone());
                Step::StopVm(EndReason::Error { message })
            }
        }
    }

    /// `KVM_EXIT_SHUTDOWN`: what follows is the policy's (when it says the kernel
    /// itself resets or INITs, SEMANTICS.md §2), else the scenario's choice.
    fn shutdown(&mut self, ctx: &VmCtx<'_>) -> Step {
        let (regs, sregs) = match (self.fd.get_regs(), self.fd.get_sregs()) {
            (Ok(r), Ok(s)) => (r, s),
            _ => {
                let message = format!("vCPU {}: shutdown; cannot read registers", self.index);
                ctx.fail(message.clone());
                return Step::StopVm(EndReason::Error { message });
            }
        };
        let mut eng = ctx.engine.lock().unwrap_or_else(|p| p.into_inner());
        let then = match eng.shutdown(self.index).outcome {
            Some(AfterShutdown::Init) => AfterShutdown::Init,
            Some(AfterShutdown::Reset) => AfterShutdown::Reset,
            Some(AfterShutdown::Stop) => AfterShutdown::Stop,
            Some(AfterShutdown::Resume) | None => ctx.spec.on_shutdown.as_after(),
        };
        let rec = self.out.stamp(Event::Shutdown {
            rip: regs.rip,
            cause: ShutdownCause::TripleFault,
            then,
            decided_by: DecidedBy::Vmm,
        });
        eng.apply(&rec);
        drop(eng);
        self.out.push(rec);
        let done = |r: Result<(), String>, ctx: &VmCtx<'_>, index: u32| match r {
            // There is no firmware at the reset vector: the vCPU's run ends here.
            Ok(()) => Step::End(EndReason::Shutdown),
            Err(e) => {
                let message = format!("vCPU {index}: after shutdown: {e}");
                ctx.fail(message.clone());
                Step::StopVm(EndReason::Error { message })
            }
        };
        match then {
            AfterShutdown::Stop => Step::StopVm(EndReason::Shutdown),
            AfterShutdown::Init => {
                let r = self.init(ctx, InitSource::Shutdown);
                done(r, ctx, self.index)
            }
            AfterShutdown::Reset => {
                let r = self.reset(ctx);
                done(r, ctx, self.index)
            }
            AfterShutdown::Resume => {
                // HOST.md: the registers are those at the fault; step over it.
                let linear = sregs.cs.base.wrapping_add(regs.rip);
                let bytes = guest::insn_bytes(ctx.mem, linear);
                match decode(&bytes, bitness(&sregs), regs.rip) {
                    Some((len, _)) => {
                        let mut r = regs;
                        r.rip += len as u64;
                        match self.fd.set_regs(&r) {
                            Ok(()) => Step::Continue,
                            Err(e) => done(Err(format!("KVM_SET_REGS: {e}")), ctx, self.index),
                        }
                    }
                    None => done(
                        Err(format!("cannot decode the instruction at {linear:#x}")),
                        ctx,
                        self.index,
                    ),
                }
            }
        }
    }

    /// A write to the user-space xAPIC page: ICR high holds the destination,
    /// ICR low sends (SDM 10.6.1).
    fn apic_write(&mut self, ctx: &VmCtx<'_>, offset: u64, value: u32) {
        match offset {
            0x310 => self.icr_hi = value,
            0x300 => self.send_ipi(ctx, value),
            _ => {}
        }
    }

    fn send_ipi(&mut self, ctx: &VmCtx<'_>, lo: u32) {
        let vector = (lo & 0xff) as u8;
        let delivery = ((lo >> 8) & 7) as u8;
        let assert = (lo >> 14) & 1 != 0;
        let shorthand = (lo >> 18) & 3;
        let dest = self.icr_hi >> 24;
        if delivery == 5 && !assert {
            // INIT level de-assert: no effect on modern CPUs.
            return;
        }
        let n = ctx.spec.vcpus;
        let targets: Vec<u32> = match shorthand {
            0 if dest == 0xff => (0..n).collect(),
            0 => (dest < n).then_some(dest).into_iter().collect(),
            1 => vec![self.index],
            2 => (0..n).collect(),
            _ => (0..n).filter(|&t| t != self.index).collect(),
        };
        let mode = match delivery {
            0 => IpiMode::Fixed,
            1 => IpiMode::LowestPriority,
            2 => IpiMode::Smi,
            4 => IpiMode::Nmi,
            5 => IpiMode::Init,
            6 => IpiMode::Sipi,
            m => IpiMode::Other(m),
        };
        for t in targets {
            self.log(
                ctx,
                Event::Ipi {
                    dst: t,
                    vector,
                    mode,
                },
            );
            let msg = match mode {
                IpiMode::Init => Ctl::Init { from: self.index },
                IpiMode::Sipi => Ctl::Sipi {
                    from: self.index,
                    vector,
                },
                _ => continue,
            };
            ctx.deliver(self.index, t, msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_monitor_mwait_bytes() {
        assert_eq!(
            decode(&[0x0f, 0x01, 0xc8, 0, 0], 64, 0x1000),
            Some((3, Mnemonic::Monitor))
        );
        assert_eq!(
            decode(&[0x0f, 0x01, 0xc9], 64, 0x1000),
            Some((3, Mnemonic::Mwait))
        );
        assert_eq!(decode(&[0x0f, 0x32], 16, 0), Some((2, Mnemonic::Rdmsr)));
        assert_eq!(decode(&[], 64, 0), None);
    }

    #[test]
    fn replies_follow_outcomes() {
        let cases = [
            (MsrOutcome::Value(7), Ok((7, false))),
            (MsrOutcome::Ok, Ok((0, false))),
            (MsrOutcome::InjectGp, Ok((0, true))),
            (
                MsrOutcome::UserExit {
                    reason: MsrExitReason::Filter,
                    answer: UserAnswer::Gp,
                },
                Ok((0, true)),
            ),
            (
                MsrOutcome::UserExit {
                    reason: MsrExitReason::Inval,
                    answer: UserAnswer::Value(5),
                },
                Ok((5, false)),
            ),
            (MsrOutcome::VmFailed { errno: 1 }, Err(1)),
        ];
        for (o, want) in cases {
            assert_eq!(reply(o), want, "{o:?}");
        }
    }

    #[test]
    fn apic_reads() {
        assert_eq!(apic_read(3, 0x20), 3 << 24);
        assert_eq!(apic_read(0, 0x300), 0);
    }
}
