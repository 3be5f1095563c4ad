//! `init-sipi` and `init-sipi-cold`: vCPU 0 sends INIT then SIPI (vector 0x08)
//! to vCPU 1 through the xAPIC ICR; vCPU 1 starts in real mode at 0x8000 and
//! reports CR0 and the RDX it got at INIT (SEMANTICS.md §2), then finishes.
//!
//! No in-kernel irqchip: the VMM's user-space LAPIC performs INIT/SIPI with the
//! state the live policy computes (an in-kernel irqchip shows the kernel's own,
//! HOST.md).
//!
//! The INIT's `before` state is what makes it discriminating. In `init-sipi`
//! vCPU 1 first runs in long mode (CR0.CD/NW clear) and sets CR0.CD alone, so:
//! 5.15+ keeps CD and NW as they were (CR0 = 0x40000010), pre-5.15 loads
//! 0x60000010. (Setting NW as well would make both models agree; a vCPU that
//! never ran is `init-sipi-cold`, where CD and NW are the RESET ones, both set.)

use iced_x86::IcedError;
use iced_x86::code_asm::*;

use super::asm::{FLAGS, Guest, R};
use super::{Region, ScenarioError, ScenarioParams, ScenarioSpec, VcpuStart};
use crate::layout::ports;

/// SIPI vector: vCPU 1 starts at CS = 0x0800, IP = 0, i.e. 0x8000.
pub const SIPI_VECTOR: u8 = 0x08;
pub const TRAMPOLINE: u64 = (SIPI_VECTOR as u64) << 12;
/// Set by the trampoline (reachable from real mode) once vCPU 1 has reported.
pub const AP_DONE_FLAG: u64 = TRAMPOLINE + 0xf00;
pub const AP_DONE_MARK: u32 = 0x5151;
/// Reported by the trampoline after CR0 and RDX.
pub const AP_MARK: u32 = 0x51b1;
/// Set by vCPU 1 in long mode once CR0.CD is set.
pub const AP_READY_FLAG: u64 = FLAGS;
/// CR0.CD.
pub const CR0_CD: u32 = 1 << 30;
/// ICR low: INIT, level assert, edge; SIPI with the vector.
pub const ICR_INIT: u32 = 0x4500;
pub const ICR_SIPI: u32 = 0x4600 | SIPI_VECTOR as u32;
/// Bounds on the spin loops (a few seconds of emulated code), so a VMM that
/// never delivers INIT ends the run with a failure status instead of a hang.
/// vCPU 0 spins on flags in memory (vCPU 1 runs meanwhile, on its own thread).
pub const SPIN_READY: u32 = 2_000_000;
pub const SPIN_DONE: u32 = 5_000_000;
pub const HLT_AP: u32 = 1_000;

/// vCPU 0: wait for vCPU 1 (warm), INIT + SIPI to APIC ID 1, wait for its done
/// flag and report it. Leaves status in R14 (0 ok).
pub fn bsp(g: &mut Guest, warm: bool) -> R {
    g.a.xor(r14d, r14d)?;
    if warm {
        let mut ready = g.a.create_label();
        g.wait_dword(AP_READY_FLAG, 1, SPIN_READY)?;
        g.a.je(ready)?;
        g.a.mov(r14d, 1)?;
        g.a.set_label(&mut ready)?;
        g.a.nop()?;
    }
    g.map_xapic()?;
    let a = &mut g.a;
    for icr in [ICR_INIT, ICR_SIPI] {
        a.mov(dword_ptr(rax + 0x310), 1u32 << 24)?;
        a.mov(dword_ptr(rax + 0x300), icr)?;
    }
    let mut done = a.create_label();
    g.wait_dword(AP_DONE_FLAG, AP_DONE_MARK, SPIN_DONE)?;
    g.a.je(done)?;
    g.a.or(r14d, 2)?;
    g.a.set_label(&mut done)?;
    g.a.mov(rsi, AP_DONE_FLAG)?;
    g.a.mov(eax, dword_ptr(rsi))?;
    g.report_eax()
}

/// vCPU 1 in long mode: set CR0.CD, report CR0, raise the ready flag, then HLT
/// until INIT takes it away. HLT, not a spin: a user-space LAPIC delivers IPIs
/// when the target exits (here `KVM_EXIT_HLT`), and an in-kernel one wakes it.
/// Bounded: after `HLT_AP` wake-ups without INIT it reports DONE with status 1.
pub fn ap_warm(g: &mut Guest) -> R {
    let a = &mut g.a;
    a.mov(rax, cr0)?;
    a.or(eax, CR0_CD)?;
    a.mov(cr0, rax)?;
    a.mov(rax, cr0)?;
    g.report_eax()?;
    g.set_dword(AP_READY_FLAG, 1)?;
    let a = &mut g.a;
    let mut again = a.create_label();
    a.mov(ebx, HLT_AP)?;
    a.set_label(&mut again)?;
    a.hlt()?;
    a.dec(ebx)?;
    a.jnz(again)?;
    g.done(1)
}

/// The real-mode code at `TRAMPOLINE` (a whole page, code then zeros).
pub fn trampoline() -> Result<Region, IcedError> {
    let mut a = CodeAssembler::new(16)?;
    a.mov(ebx, edx)?; // RDX as INIT left it
    a.mov(eax, cr0)?;
    a.mov(dx, ports::REPORT as u32)?;
    a.out(dx, eax)?;
    a.mov(eax, ebx)?;
    a.out(dx, eax)?;
    a.mov(eax, AP_MARK)?;
    a.out(dx, eax)?;
    // DS base is 0 after INIT.
    a.mov(dword_ptr(AP_DONE_FLAG as u32), AP_DONE_MARK)?;
    a.mov(dx, ports::DONE as u32)?;
    a.xor(eax, eax)?;
    a.out(dx, eax)?;
    let mut again = a.create_label();
    a.set_label(&mut again)?;
    a.hlt()?;
    a.jmp(again)?;
    // CS base = TRAMPOLINE, IP starts at 0.
    let mut bytes = a.assemble(0)?;
    bytes.resize(0x1000, 0);
    Ok(Region {
        addr: TRAMPOLINE,
        bytes,
    })
}

fn build(
    name: &'static str,
    params: &ScenarioParams,
    warm: bool,
) -> Result<ScenarioSpec, ScenarioError> {
    let vcpus = super::vcpus(name, params, 2, 2, 2)?;
    let err = super::assemble_err(name);
    let mut g = Guest::new().map_err(err)?;
    let mut ap = g.a.create_label();
    (|| -> R {
        g.a.test(edi, edi)?;
        g.a.jnz(ap)?;
        bsp(&mut g, warm)?;
        g.a.mov(eax, r14d)?;
        g.report_eax()?;
        g.done(0)?;
        g.a.set_label(&mut ap)?;
        if warm {
            ap_warm(&mut g)
        } else {
            // Never runs: vCPU 1 waits for SIPI.
            g.done(1)
        }
    })()
    .map_err(err)?;
    let (code, steps) = g.finish().map_err(err)?;
    let mut spec = ScenarioSpec::new(name, vcpus, code, steps);
    spec.regions.push(trampoline().map_err(err)?);
    if !warm {
        spec.starts[1] = VcpuStart::WaitForSipi;
    }
    Ok(spec)
}

pub fn spec(params: &ScenarioParams) -> Result<ScenarioSpec, ScenarioError> {
    build("init-sipi", params, true)
}

pub fn spec_cold(params: &ScenarioParams) -> Result<ScenarioSpec, ScenarioError> {
    build("init-sipi-cold", params, false)
}
