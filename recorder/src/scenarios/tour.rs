//! `tour`: one of each behaviour, quickly, on 2 vCPUs (what `kvmtrace demo`
//! records): INIT+SIPI first (vCPU 1 sets CR0.CD and waits), then on vCPU 0
//! MONITOR/MWAIT, MISC_ENABLE[18] toggles, FEAT_CTL host and guest writes, the
//! decisive MCE writes, a short MSR sweep and loop, a triple fault resumed past,
//! and x2APIC on and off.

use super::asm::{Guest, R};
use super::{
    OnShutdown, ScenarioError, ScenarioParams, ScenarioSpec, feat_ctl, init_sipi, mce, misc_enable,
    msr_loop, msr_sweep, mwait, triple_fault, x2apic,
};
use iced_x86::code_asm::*;

const NAME: &str = "tour";

const SWEEP: &[(u32, u32)] = &[
    (0x10, 0x10),
    (0x1b, 0x1b),
    (0x3a, 0x3a),
    (0x179, 0x17b),
    (0x1a0, 0x1a0),
    (0x400, 0x401),
    (0x4b56_4d00, 0x4b56_4d01),
    (0x474f_4f00, 0x474f_4f00),
    (0xc000_0080, 0xc000_0080),
];
const LOOP_ITERATIONS: u64 = 100;

fn body(g: &mut Guest) -> R {
    let mut ap = g.a.create_label();
    g.a.test(edi, edi)?;
    g.a.jnz(ap)?;
    init_sipi::bsp(g, true)?;
    mwait::body(g)?;
    misc_enable::body(g)?;
    feat_ctl::host_bits(g, &[2])?;
    feat_ctl::guest_writes(g)?;
    mce::short(g)?;
    msr_sweep::body(g, SWEEP, false)?;
    msr_loop::body(g, LOOP_ITERATIONS)?;
    triple_fault::body(g)?;
    x2apic::body(g, true)?;
    g.a.mov(eax, r14d)?;
    g.report_eax()?;
    g.done(0)?;
    g.a.set_label(&mut ap)?;
    init_sipi::ap_warm(g)
}

pub fn spec(params: &ScenarioParams) -> Result<ScenarioSpec, ScenarioError> {
    let vcpus = super::vcpus(NAME, params, 2, 2, 2)?;
    let err = super::assemble_err(NAME);
    let mut g = Guest::new().map_err(err)?;
    body(&mut g).map_err(err)?;
    let (code, steps) = g.finish().map_err(err)?;
    let mut spec = ScenarioSpec::new(NAME, vcpus, code, steps);
    spec.regions.push(init_sipi::trampoline().map_err(err)?);
    spec.cpuid.push(mwait::CPUID_MWAIT);
    spec.cpuid.push(x2apic::CPUID_X2APIC);
    spec.mcg_cap = Some(mce::MCG_CAP);
    spec.on_shutdown = OnShutdown::ResumePastFault;
    Ok(spec)
}
