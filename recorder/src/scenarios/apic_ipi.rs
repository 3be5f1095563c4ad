//! `apic-ipi` (issue 12 items 1 and 6): the LAPIC workload of a unit-test
//! suite's APIC and IPI tests, written for this project. Two vCPUs, in-kernel
//! irqchip, x2APIC and TSC-deadline in CPUID, so the kernel decides every
//! access (record it in observe mode to measure `host`):
//!
//! - vCPU 0 walks the IA32_APIC_BASE mode matrix (xAPIC, x2APIC, disabled,
//!   the invalid EXTD-only state, x2APIC -> xAPIC and disabled -> x2APIC
//!   refused, reserved low and physical-address bits, relocation and back);
//! - both enable x2APIC and software-enable the APIC (SPIV);
//! - vCPU 0 sends `--iterations` fixed IPIs (default 200) to vCPU 1, which
//!   takes each in its handler and EOIs it (the ICR/EOI loop of an IPI
//!   benchmark), then self-IPIs through the ICR shorthand and SELF_IPI, NMIs
//!   to vCPU 1 and to itself, physical broadcast (0xffffffff), the all and
//!   all-but-self shorthands, a logical (cluster) destination, lowest
//!   priority, an IPI to an APIC ID nobody has;
//! - vCPU 0 runs the timer: one-shot with TDCR, periodic, TSC-deadline mode
//!   with IA32_TSC_DEADLINE, masked; TPR through CR8 and the MSR.
//!
//! The guest installs its own IDT gates for the vectors it takes (the VMM's
//! exception stubs skip an instruction, right for faults, wrong for
//! interrupts): each handler counts in memory and EOIs through 0x80b.

use iced_x86::IcedError;
use iced_x86::code_asm::*;
use kvmtrace_format::Irqchip;

use super::asm::{Guest, R};
use super::x2apic::{APIC_EN, APIC_EXTD, CPUID_X2APIC, MSR_APIC_BASE};
use super::{CpuidEdit, CpuidReg, Region, ScenarioError, ScenarioParams, ScenarioSpec};
use crate::layout::{self, CODE_ADDR, DATA_ADDR, IDT_ADDR};

const NAME: &str = "apic-ipi";

pub const DEFAULT_ITERATIONS: u64 = 200;

/// CPUID.1:ECX bit 24, TSC-deadline timer.
pub const CPUID_TSC_DEADLINE: CpuidEdit = CpuidEdit::Set {
    function: 1,
    index: 0,
    reg: CpuidReg::Ecx,
    bit: 24,
};

/// Where the interrupt handlers are assembled (inside the code area, far
/// from the scenario code).
pub const HANDLERS_ADDR: u64 = CODE_ADDR + 0x70_0000;
/// One dword counter per handled vector.
pub const COUNTERS: u64 = DATA_ADDR + 0x400;
/// vCPU 1 is ready (x2APIC on, interrupts on); vCPU 0 is done.
pub const READY: u64 = DATA_ADDR + 0x380;
pub const STOP: u64 = DATA_ADDR + 0x384;

/// x2APIC MSRs.
pub const X2_TPR: u32 = 0x808;
pub const X2_PPR: u32 = 0x80a;
pub const X2_EOI: u32 = 0x80b;
pub const X2_SPIV: u32 = 0x80f;
pub const X2_ICR: u32 = 0x830;
pub const X2_LVTT: u32 = 0x832;
pub const X2_TMICT: u32 = 0x838;
pub const X2_TMCCT: u32 = 0x839;
pub const X2_TDCR: u32 = 0x83e;
pub const X2_SELF_IPI: u32 = 0x83f;
pub const MSR_TSC_DEADLINE: u32 = 0x6e0;

/// Vectors and what their handler does: (vector, counter slot, EOI?).
pub const V_IPI: u8 = 0x40;
pub const V_SELF: u8 = 0x41;
pub const V_TIMER: u8 = 0x42;
pub const V_SELF_MSR: u8 = 0x43;
pub const V_BCAST: u8 = 0x44;
pub const V_LOGICAL: u8 = 0x45;
pub const V_NMI: u8 = 2;
const HANDLED: [(u8, u32, bool); 7] = [
    (V_IPI, 0, true),
    (V_SELF, 1, true),
    (V_TIMER, 2, true),
    (V_SELF_MSR, 3, true),
    (V_BCAST, 4, true),
    (V_LOGICAL, 5, true),
    (V_NMI, 6, false),
];

/// Counter address of a handled vector.
pub fn counter(vector: u8) -> u64 {
    let slot = HANDLED.iter().find(|h| h.0 == vector).map_or(15, |h| h.1);
    COUNTERS + u64::from(slot) * 4
}

/// Spin bound of the waits (emulated code: about a second).
const SPIN: u32 = 100_000;

/// The handlers, one after another at `HANDLERS_ADDR`: count, EOI, IRETQ.
/// Returns the region and each handler's address.
pub fn handlers() -> Result<(Region, Vec<(u8, u64)>), IcedError> {
    let mut a = CodeAssembler::new(64)?;
    let mut labels = Vec::new();
    for &(vector, _, eoi) in &HANDLED {
        let mut l = a.create_label();
        a.set_label(&mut l)?;
        labels.push((vector, l));
        a.push(rax)?;
        a.push(rcx)?;
        a.push(rdx)?;
        a.mov(rax, counter(vector))?;
        a.lock().inc(dword_ptr(rax))?;
        if eoi {
            a.mov(ecx, X2_EOI)?;
            a.xor(eax, eax)?;
            a.xor(edx, edx)?;
            a.wrmsr()?;
        }
        a.pop(rdx)?;
        a.pop(rcx)?;
        a.pop(rax)?;
        a.iretq()?;
    }
    let result = a.assemble_options(
        HANDLERS_ADDR,
        iced_x86::BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS,
    )?;
    let addrs = labels
        .iter()
        .map(|(v, l)| Ok((*v, result.label_ip(l)?)))
        .collect::<Result<Vec<_>, IcedError>>()?;
    let bytes = result.inner.code_buffer;
    Ok((
        Region {
            addr: HANDLERS_ADDR,
            bytes,
        },
        addrs,
    ))
}

/// Install 64-bit interrupt gates for the handlers in the shared IDT.
pub fn install_gates(g: &mut Guest, addrs: &[(u8, u64)]) -> R {
    for &(vector, addr) in addrs {
        let lo = (addr & 0xffff)
            | (u64::from(layout::CODE64_SEL) << 16)
            | (0x8e << 40)
            | (((addr >> 16) & 0xffff) << 48);
        let gate = IDT_ADDR + u64::from(vector) * 16;
        g.a.mov(rsi, gate)?;
        g.a.mov(rax, lo)?;
        g.a.mov(qword_ptr(rsi), rax)?;
        g.a.mov(rax, addr >> 32)?;
        g.a.mov(qword_ptr(rsi + 8), rax)?;
    }
    Ok(())
}

/// x2APIC on (through the APIC base) and the APIC software-enabled.
pub fn x2apic_on(g: &mut Guest) -> R {
    g.rmw_msr(MSR_APIC_BASE, APIC_EN | APIC_EXTD, 0)?;
    g.wrmsr(X2_SPIV, 0x1ff)
}

/// `sti`, wait until the counter of `vector` is at least `n` (bounded), `cli`.
/// Counts a timeout in R14.
pub fn wait_count(g: &mut Guest, vector: u8, n: u32) -> R {
    let a = &mut g.a;
    let mut top = a.create_label();
    let mut out = a.create_label();
    let mut ok = a.create_label();
    a.mov(rsi, counter(vector))?;
    a.mov(ebx, SPIN)?;
    a.sti()?;
    a.set_label(&mut top)?;
    a.cmp(dword_ptr(rsi), n)?;
    a.jae(out)?;
    a.pause()?;
    a.dec(ebx)?;
    a.jnz(top)?;
    a.set_label(&mut out)?;
    a.cli()?;
    a.cmp(dword_ptr(rsi), n)?;
    a.jae(ok)?;
    a.inc(r14d)?;
    a.set_label(&mut ok)?;
    a.nop()
}

/// ICR write (x2APIC: destination in bits 63:32).
pub fn icr(g: &mut Guest, low: u32, dest: u32) -> R {
    g.wrmsr(X2_ICR, (u64::from(dest) << 32) | u64::from(low))
}

/// The IA32_APIC_BASE mode matrix from xAPIC (vCPU 0; BSP bit kept).
fn apic_base_matrix(g: &mut Guest) -> R {
    const BASE: u64 = 0xfee0_0000 | (1 << 8);
    g.clear_fault()?;
    g.rdmsr(MSR_APIC_BASE)?;
    // xAPIC -> x2APIC (legal), then the refused ones from x2APIC.
    g.wrmsr(MSR_APIC_BASE, BASE | APIC_EN | APIC_EXTD)?;
    g.wrmsr(MSR_APIC_BASE, BASE | APIC_EXTD)?; // invalid state
    g.wrmsr(MSR_APIC_BASE, BASE | APIC_EN)?; // x2APIC -> xAPIC
    g.wrmsr(MSR_APIC_BASE, BASE | APIC_EN | APIC_EXTD)?; // same value
    g.wrmsr(MSR_APIC_BASE, BASE)?; // -> disabled (legal)
    g.rdmsr(MSR_APIC_BASE)?;
    g.rdmsr(0x802)?; // x2APIC off: #GP
    g.wrmsr(MSR_APIC_BASE, BASE | APIC_EXTD)?; // invalid state
    g.wrmsr(MSR_APIC_BASE, BASE | APIC_EN | APIC_EXTD)?; // disabled -> x2APIC
    g.wrmsr(MSR_APIC_BASE, BASE | APIC_EN)?; // disabled -> xAPIC (legal)
    g.wrmsr(MSR_APIC_BASE, BASE | APIC_EN | APIC_EXTD | 1)?; // reserved bit 0
    g.wrmsr(MSR_APIC_BASE, BASE | APIC_EN | (1 << 9))?; // reserved bit 9
    g.wrmsr(MSR_APIC_BASE, BASE | APIC_EN | (1 << 52))?; // beyond MAXPHYADDR
    g.wrmsr(MSR_APIC_BASE, BASE | APIC_EN | (1 << 63))?;
    // Relocate (disable first, as a test suite does), read, and back.
    g.wrmsr(MSR_APIC_BASE, BASE)?;
    g.wrmsr(MSR_APIC_BASE, 0xfed4_0000 | (1 << 8) | APIC_EN)?;
    g.rdmsr(MSR_APIC_BASE)?;
    g.wrmsr(MSR_APIC_BASE, BASE | APIC_EN)?;
    // BSP bit cleared and set again (writable).
    g.wrmsr(MSR_APIC_BASE, 0xfee0_0000 | APIC_EN)?;
    g.rdmsr(MSR_APIC_BASE)?;
    g.wrmsr(MSR_APIC_BASE, BASE | APIC_EN)?;
    g.rdmsr(MSR_APIC_BASE)?;
    g.report_fault()
}

/// Timer registers on vCPU 0 (x2APIC on, interrupts handled).
fn timer(g: &mut Guest) -> R {
    let t = u32::from(V_TIMER);
    g.rdmsr(MSR_TSC_DEADLINE)?; // not in TSC-deadline mode: 0
    g.wrmsr(MSR_TSC_DEADLINE, 0x1234)?; // ignored outside TSC-deadline mode
    g.rdmsr(MSR_TSC_DEADLINE)?;
    // One-shot, divide by 1.
    g.wrmsr(X2_LVTT, u64::from(t))?;
    g.wrmsr(X2_TDCR, 0xb)?;
    g.rdmsr(X2_TDCR)?;
    g.wrmsr(X2_TMICT, 0x2000)?;
    g.rdmsr(X2_TMICT)?;
    wait_count(g, V_TIMER, 1)?;
    // Expired: 0, and it stays 0, also after a switch to periodic that
    // restarts nothing (a unit-test suite's "TMCCT should stay at zero").
    g.rdmsr(X2_TMCCT)?;
    g.rdmsr(X2_TMCCT)?;
    // Periodic (a long period), read back, stopped by TMICT = 0.
    g.wrmsr(X2_LVTT, u64::from(t) | (1 << 17))?;
    g.rdmsr(X2_TMCCT)?;
    g.wrmsr(X2_TMICT, 0x10_0000)?;
    g.rdmsr(X2_LVTT)?;
    g.rdmsr(X2_TMICT)?;
    g.wrmsr(X2_TMICT, 0)?;
    g.rdmsr(X2_TMCCT)?;
    // TSC-deadline mode: TMICT is zeroed and ignored; a deadline in the
    // past fires at once and clears the MSR.
    g.wrmsr(X2_LVTT, u64::from(t) | (2 << 17))?;
    g.rdmsr(X2_LVTT)?;
    g.rdmsr(X2_TMICT)?;
    g.wrmsr(X2_TMICT, 0x100)?;
    g.rdmsr(X2_TMICT)?;
    g.rdmsr(X2_TMCCT)?;
    g.rdmsr(MSR_TSC_DEADLINE)?;
    g.a.rdtsc()?;
    g.wrmsr_edx_eax(MSR_TSC_DEADLINE)?;
    wait_count(g, V_TIMER, 2)?;
    g.rdmsr(MSR_TSC_DEADLINE)?;
    // A deadline far away, then masked, then back to one-shot.
    g.wrmsr(MSR_TSC_DEADLINE, u64::MAX >> 1)?;
    g.wrmsr(X2_LVTT, u64::from(t) | (2 << 17) | (1 << 16))?;
    g.wrmsr(X2_LVTT, u64::from(t) | (1 << 16))?;
    g.rdmsr(X2_LVTT)?;
    g.rdmsr(MSR_TSC_DEADLINE)?;
    g.rdmsr(X2_TMICT)?;
    g.rdmsr(X2_TMCCT)
}

/// TPR through the MSR and CR8; PPR follows.
fn tpr(g: &mut Guest) -> R {
    g.wrmsr(X2_TPR, 0x50)?;
    g.rdmsr(X2_TPR)?;
    g.rdmsr(X2_PPR)?;
    g.a.mov(eax, 3u32)?;
    g.a.mov(cr8, rax)?;
    g.rdmsr(X2_TPR)?;
    g.wrmsr(X2_TPR, 0)?;
    g.a.mov(rax, cr8)?;
    g.report_eax()
}

fn bsp(g: &mut Guest, iterations: u32) -> R {
    g.a.xor(r14d, r14d)?;
    apic_base_matrix(g)?;
    x2apic_on(g)?;
    g.wait_dword(READY, 1, SPIN)?;
    // The IPI loop: fixed, physical, edge, to APIC ID 1; wait for its EOI'd
    // handler to count it.
    let mut top = g.a.create_label();
    g.a.mov(r13d, 1u32)?;
    g.a.set_label(&mut top)?;
    icr(g, 0x4000 | u32::from(V_IPI), 1)?;
    {
        let a = &mut g.a;
        let mut seen = a.create_label();
        let mut spin = a.create_label();
        a.mov(rsi, counter(V_IPI))?;
        a.mov(ebx, SPIN)?;
        a.set_label(&mut spin)?;
        a.cmp(dword_ptr(rsi), r13d)?;
        a.jae(seen)?;
        a.pause()?;
        a.dec(ebx)?;
        a.jnz(spin)?;
        a.inc(r14d)?;
        a.set_label(&mut seen)?;
        a.inc(r13d)?;
        a.cmp(r13d, iterations + 1)?;
        a.jb(top)?;
    }
    // Self-IPIs: ICR shorthand self, SELF_IPI.
    icr(g, 0x4_4000 | u32::from(V_SELF), 0)?;
    wait_count(g, V_SELF, 1)?;
    icr(g, 0x4000 | u32::from(V_SELF), 0)?; // physical to itself (ID 0)
    wait_count(g, V_SELF, 2)?;
    g.wrmsr(X2_SELF_IPI, u64::from(V_SELF_MSR))?;
    wait_count(g, V_SELF_MSR, 1)?;
    g.wrmsr(X2_SELF_IPI, u64::from(V_SELF_MSR))?;
    wait_count(g, V_SELF_MSR, 2)?;
    // NMI to vCPU 1 and to itself.
    icr(g, 0x4400, 1)?;
    icr(g, 0x4_4400, 0)?;
    wait_count(g, V_NMI, 2)?;
    // Broadcast: physical 0xffffffff, all-including, all-but-self.
    icr(g, 0x4000 | u32::from(V_BCAST), u32::MAX)?;
    wait_count(g, V_BCAST, 2)?;
    icr(g, 0x8_4000 | u32::from(V_BCAST), 0)?;
    wait_count(g, V_BCAST, 4)?;
    icr(g, 0xc_4000 | u32::from(V_BCAST), 0)?;
    wait_count(g, V_BCAST, 5)?;
    // Logical: cluster 0, bit 1 (vCPU 1); lowest priority to it; nobody.
    icr(g, 0x4800 | u32::from(V_LOGICAL), 0x2)?;
    wait_count(g, V_LOGICAL, 1)?;
    icr(g, 0x4900 | u32::from(V_LOGICAL), 0x2)?;
    wait_count(g, V_LOGICAL, 2)?;
    icr(g, 0x4000 | u32::from(V_LOGICAL), 0x55)?;
    g.rdmsr(X2_ICR)?;
    timer(g)?;
    tpr(g)?;
    g.a.mov(eax, r14d)?;
    g.report_eax()?;
    // Release vCPU 1: flag, then one more IPI to wake it.
    g.set_dword(STOP, 1)?;
    icr(g, 0x4000 | u32::from(V_IPI), 1)
}

/// vCPU 1: x2APIC on, ready, then `sti; hlt` until vCPU 0 says stop.
fn ap(g: &mut Guest) -> R {
    x2apic_on(g)?;
    g.set_dword(READY, 1)?;
    let a = &mut g.a;
    let mut top = a.create_label();
    let mut out = a.create_label();
    a.mov(r12d, 100_000u32)?;
    a.set_label(&mut top)?;
    a.mov(rsi, STOP)?;
    a.cmp(dword_ptr(rsi), 1)?;
    a.je(out)?;
    a.sti()?;
    a.hlt()?;
    a.cli()?;
    a.dec(r12d)?;
    a.jnz(top)?;
    a.set_label(&mut out)?;
    a.nop()
}

pub fn spec(params: &ScenarioParams) -> Result<ScenarioSpec, ScenarioError> {
    let vcpus = super::vcpus(NAME, params, 2, 2, 2)?;
    let iterations = params.iterations.unwrap_or(DEFAULT_ITERATIONS);
    if iterations == 0 {
        return Err(ScenarioError::Iterations { name: NAME });
    }
    let iterations = u32::try_from(iterations.min(1 << 24)).unwrap_or(1 << 24);
    let err = super::assemble_err(NAME);
    let (region, addrs) = handlers().map_err(err)?;
    let mut g = Guest::new().map_err(err)?;
    (|| -> R {
        install_gates(&mut g, &addrs)?;
        let mut second = g.a.create_label();
        g.a.test(edi, edi)?;
        g.a.jnz(second)?;
        bsp(&mut g, iterations)?;
        g.done(0)?;
        g.a.set_label(&mut second)?;
        ap(&mut g)?;
        g.done(0)
    })()
    .map_err(err)?;
    let (code, steps) = g.finish().map_err(err)?;
    let mut spec = ScenarioSpec::new(NAME, vcpus, code, steps);
    spec.regions.push(region);
    spec.irqchip = Irqchip::Kernel;
    spec.cpuid.push(CPUID_X2APIC);
    spec.cpuid.push(CPUID_TSC_DEADLINE);
    Ok(spec)
}
