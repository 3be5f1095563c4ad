//! `feat-ctl`: IA32_FEAT_CTL (0x3a), SEMANTICS.md §3. The host (`KVM_SET_MSRS`)
//! writes each defined bit and one reserved bit alone, the guest reads after each;
//! then the guest writes before and after setting LOCKED. On VMX the host writes
//! of VMX/SGX/LMCE bits without the matching CPUID fail before 6.2 and succeed
//! after; on SVM and `kvm_pvm` every guest access #GPs (no handler).

use super::asm::{Guest, R};
use super::{HostStep, ScenarioError, ScenarioParams, ScenarioSpec};

pub const MSR_FEAT_CTL: u32 = 0x3a;
pub const LOCKED: u64 = 1 << 0;
pub const VMX_OUTSIDE_SMX: u64 = 1 << 2;
/// LOCKED, VMX_INSIDE_SMX, VMX_OUTSIDE_SMX, SGX_LC, SGX, LMCE, and reserved bit 3.
pub const BITS: [u8; 7] = [0, 1, 2, 17, 18, 20, 3];

const NAME: &str = "feat-ctl";

fn host_write_read(vcpu: u32, value: u64) -> HostStep {
    HostStep::Seq(vec![
        HostStep::WriteMsr {
            vcpu,
            index: MSR_FEAT_CTL,
            value,
        },
        HostStep::ReadMsr {
            vcpu,
            index: MSR_FEAT_CTL,
        },
    ])
}

/// Host writes of `bits` one at a time (each followed by a host write of 0, so a
/// LOCKED bit does not stick), guest reads after each.
pub fn host_bits(g: &mut Guest, bits: &[u8]) -> R {
    for &bit in bits {
        g.host(host_write_read(0, 1 << bit))?;
        g.rdmsr(MSR_FEAT_CTL)?;
        g.host(host_write_read(0, 0))?;
    }
    Ok(())
}

/// Guest writes: 0 and VMX_OUTSIDE_SMX while unlocked, then LOCKED|VMX, then the
/// same and 0 again once locked (refused when LOCKED stuck); reads in between.
pub fn guest_writes(g: &mut Guest) -> R {
    g.rdmsr(MSR_FEAT_CTL)?;
    g.wrmsr(MSR_FEAT_CTL, 0)?;
    g.wrmsr(MSR_FEAT_CTL, VMX_OUTSIDE_SMX)?;
    g.rdmsr(MSR_FEAT_CTL)?;
    g.wrmsr(MSR_FEAT_CTL, LOCKED | VMX_OUTSIDE_SMX)?;
    g.rdmsr(MSR_FEAT_CTL)?;
    g.wrmsr(MSR_FEAT_CTL, LOCKED | VMX_OUTSIDE_SMX)?;
    g.wrmsr(MSR_FEAT_CTL, 0)?;
    g.rdmsr(MSR_FEAT_CTL)?;
    g.report_fault()
}

pub fn spec(params: &ScenarioParams) -> Result<ScenarioSpec, ScenarioError> {
    // Host steps act on vCPU 0: one vCPU only.
    super::one_program(NAME, params, 1, |g| {
        host_bits(g, &BITS)?;
        guest_writes(g)?;
        // The host may rewrite a locked FEAT_CTL (SEMANTICS.md §3).
        g.host(host_write_read(0, 0))
    })
}
