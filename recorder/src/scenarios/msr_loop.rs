//! `msr-loop`: RDMSR(IA32_TSC) `--iterations` times (default 20,000), the
//! workload of `bench` (bytes/event, record overhead, vCPU cost per event).

use iced_x86::code_asm::*;

use super::asm::{Guest, R};
use super::{ScenarioError, ScenarioParams, ScenarioSpec};

pub const DEFAULT_ITERATIONS: u64 = 20_000;
pub const MSR_TSC: u32 = 0x10;

const NAME: &str = "msr-loop";

/// `iterations` (> 0) RDMSRs of the TSC.
pub fn body(g: &mut Guest, iterations: u64) -> R {
    let a = &mut g.a;
    let mut top = a.create_label();
    a.mov(rbx, iterations)?;
    a.mov(ecx, MSR_TSC)?;
    a.set_label(&mut top)?;
    a.rdmsr()?;
    a.dec(rbx)?;
    a.jnz(top)?;
    Ok(())
}

pub fn spec(params: &ScenarioParams) -> Result<ScenarioSpec, ScenarioError> {
    let vcpus = super::vcpus(NAME, params, 1, 1, super::MAX_VCPUS)?;
    let iterations = params.iterations.unwrap_or(DEFAULT_ITERATIONS);
    if iterations == 0 {
        return Err(ScenarioError::Iterations { name: NAME });
    }
    let err = super::assemble_err(NAME);
    let mut g = Guest::new().map_err(err)?;
    body(&mut g, iterations)
        .and_then(|()| g.done(0))
        .map_err(err)?;
    let (code, steps) = g.finish().map_err(err)?;
    Ok(ScenarioSpec::new(NAME, vcpus, code, steps))
}
