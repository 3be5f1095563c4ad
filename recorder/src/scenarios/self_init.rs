//! `self-init` (issue 12 items 2 and 6): INIT through the x2APIC ICR with an
//! in-kernel irqchip, where the kernel does INIT and SIPI
//! (`kvm_apic_accept_events`, `kvm_vcpu_reset(init_event = true)`,
//! `kvm_lapic_reset(init_event = true)`):
//!
//! 1. vCPU 1 (not the BSP) enables x2APIC, programs TPR, LVTs, the timer
//!    divider and SPIV, reads them back, sends itself a level-triggered INIT
//!    de-assert (ignored), reads again, then INITs itself (shorthand self).
//! 2. vCPU 0 SIPIs it (x2APIC ICR, retried until it runs); vCPU 1 starts in
//!    real mode at [`TRAMPOLINE`] and reads the APIC base (x2APIC kept, BSP
//!    bit clear) and the LAPIC registers INIT reset, then halts.
//! 3. vCPU 0 INITs vCPU 1 from outside (physical destination, assert then
//!    de-assert) and SIPIs it again; vCPU 1 reads the same registers and
//!    finishes. vCPU 0 also sends an INIT to an APIC ID nobody has.

use iced_x86::IcedError;
use iced_x86::code_asm::*;
use kvmtrace_format::Irqchip;

use super::apic_ipi::{X2_ICR, icr, x2apic_on};
use super::asm::{Guest, R};
use super::x2apic::{CPUID_X2APIC, MSR_APIC_BASE};
use super::{Region, ScenarioError, ScenarioParams, ScenarioSpec};
use crate::layout::{DATA_ADDR, ports};

const NAME: &str = "self-init";

/// SIPI vector 0x09: vCPU 1 restarts at CS = 0x0900, IP = 0.
pub const SIPI_VECTOR: u8 = 0x09;
pub const TRAMPOLINE: u64 = (SIPI_VECTOR as u64) << 12;
/// Trampoline runs so far (real-mode side, in the trampoline page).
pub const RUNS: u64 = TRAMPOLINE + 0xf00;
/// vCPU 1 is about to INIT itself (long-mode side).
pub const ABOUT_TO_INIT: u64 = DATA_ADDR + 0x300;

/// Registers read after each INIT: APIC base, then the LAPIC.
const AFTER_INIT: [u32; 15] = [
    MSR_APIC_BASE,
    0x802, // ID
    0x803, // version
    0x808, // TPR
    0x80d, // LDR
    0x80f, // SPIV
    0x828, // ESR
    0x830, // ICR
    0x832, // LVTT
    0x833, // LVTTHMR
    0x834, // LVTPC
    0x835, // LINT0
    0x837, // LVTERR
    0x838, // TMICT
    0x83e, // TDCR
];
const TMCCT: u32 = 0x839;

/// What vCPU 1 programs before INIT.
const PROGRAM: [(u32, u64); 7] = [
    (0x808, 0x30),
    (0x832, 0x42),
    (0x835, 0x700),
    (0x836, 0x400),
    (0x837, 0xfe),
    (0x83e, 0x3),
    (0x838, 0),
];

/// Spin bounds (emulated code).
const SPIN: u32 = 200_000;
const SIPI_TRIES: u32 = 50;

/// The real-mode code at `TRAMPOLINE`: read everything, count the run; the
/// first run halts (vCPU 0 INITs it again), the second finishes.
pub fn trampoline() -> Result<Region, IcedError> {
    let mut a = CodeAssembler::new(16)?;
    for index in AFTER_INIT.into_iter().chain([TMCCT]) {
        a.xor(eax, eax)?;
        a.xor(edx, edx)?;
        a.mov(ecx, index)?;
        a.rdmsr()?;
    }
    // The APIC base once more, reported.
    a.mov(ecx, MSR_APIC_BASE)?;
    a.rdmsr()?;
    a.mov(dx, ports::REPORT as u32)?;
    a.out(dx, eax)?;
    // Software-enable again and write the TPR (x2APIC kept across INIT).
    a.mov(ecx, 0x80fu32)?;
    a.mov(eax, 0x1ffu32)?;
    a.xor(edx, edx)?;
    a.wrmsr()?;
    a.mov(ecx, 0x808u32)?;
    a.mov(eax, 0x10u32)?;
    a.wrmsr()?;
    a.mov(ecx, 0x808u32)?;
    a.rdmsr()?;
    // DS base is 0 after INIT.
    a.inc(dword_ptr(RUNS as u32))?;
    a.cmp(dword_ptr(RUNS as u32), 2)?;
    let mut last = a.create_label();
    a.jae(last)?;
    let mut again = a.create_label();
    a.set_label(&mut again)?;
    a.hlt()?;
    a.jmp(again)?;
    a.set_label(&mut last)?;
    a.mov(dx, ports::DONE as u32)?;
    a.xor(eax, eax)?;
    a.out(dx, eax)?;
    let mut stop = a.create_label();
    a.set_label(&mut stop)?;
    a.hlt()?;
    a.jmp(stop)?;
    let mut bytes = a.assemble(0)?;
    bytes.resize(0x1000, 0);
    Ok(Region {
        addr: TRAMPOLINE,
        bytes,
    })
}

/// Send SIPIs to APIC ID 1 until `RUNS` reaches `n` (bounded); a failure
/// sets bit `fail` in R14.
fn sipi_until(g: &mut Guest, n: u32, fail: u32) -> R {
    let mut top = g.a.create_label();
    let mut ok = g.a.create_label();
    let mut out = g.a.create_label();
    g.a.mov(r13d, SIPI_TRIES)?;
    g.a.set_label(&mut top)?;
    icr(g, 0x4600 | u32::from(SIPI_VECTOR), 1)?;
    g.wait_dword(RUNS, n, SPIN)?;
    g.a.je(ok)?;
    g.a.dec(r13d)?;
    g.a.jnz(top)?;
    g.a.or(r14d, fail)?;
    g.a.jmp(out)?;
    g.a.set_label(&mut ok)?;
    g.a.nop()?;
    g.a.set_label(&mut out)?;
    g.a.nop()
}

fn bsp(g: &mut Guest) -> R {
    g.a.xor(r14d, r14d)?;
    x2apic_on(g)?;
    g.wait_dword(ABOUT_TO_INIT, 1, SPIN * 4)?;
    sipi_until(g, 1, 1)?;
    // INIT from outside: assert, then the level-triggered de-assert.
    icr(g, 0x4500, 1)?;
    icr(g, 0x8500, 1)?;
    g.rdmsr(X2_ICR)?;
    sipi_until(g, 2, 2)?;
    // INIT and SIPI to an APIC ID no vCPU has: nothing happens.
    icr(g, 0x4500, 0x55)?;
    icr(g, 0x4600 | u32::from(SIPI_VECTOR), 0x55)?;
    g.rdmsr(MSR_APIC_BASE)?;
    g.rdmsr(0x80f)?;
    g.a.mov(eax, r14d)?;
    g.report_eax()
}

fn ap(g: &mut Guest) -> R {
    x2apic_on(g)?;
    g.clear_fault()?;
    for (index, value) in PROGRAM {
        g.wrmsr(index, value)?;
    }
    for index in AFTER_INIT {
        g.rdmsr(index)?;
    }
    // A level-triggered INIT de-assert to itself: ignored.
    icr(g, 0x4_8500, 0)?;
    for index in AFTER_INIT {
        g.rdmsr(index)?;
    }
    g.report_fault()?;
    g.set_dword(ABOUT_TO_INIT, 1)?;
    // INIT itself (shorthand self, assert). Nothing after it runs.
    icr(g, 0x4_4500, 0)?;
    let a = &mut g.a;
    let mut again = a.create_label();
    a.set_label(&mut again)?;
    a.hlt()?;
    a.jmp(again)
}

pub fn spec(params: &ScenarioParams) -> Result<ScenarioSpec, ScenarioError> {
    let vcpus = super::vcpus(NAME, params, 2, 2, 2)?;
    let err = super::assemble_err(NAME);
    let mut g = Guest::new().map_err(err)?;
    (|| -> R {
        let mut second = g.a.create_label();
        g.a.test(edi, edi)?;
        g.a.jnz(second)?;
        bsp(&mut g)?;
        g.done(0)?;
        g.a.set_label(&mut second)?;
        ap(&mut g)
    })()
    .map_err(err)?;
    let (code, steps) = g.finish().map_err(err)?;
    let mut spec = ScenarioSpec::new(NAME, vcpus, code, steps);
    spec.regions.push(trampoline().map_err(err)?);
    spec.irqchip = Irqchip::Kernel;
    spec.cpuid.push(CPUID_X2APIC);
    Ok(spec)
}
