//! `bit-probe` (run it in observe mode): for every MSR the policy models have a
//! rule about, read it, write the value back, then flip each bit the model calls
//! reserved, read-only or special, one at a time: write, read back, restore.
//! Faulting accesses are fine (the guest resumes after them). After every access
//! the guest reports what it saw (value read, fault marker), so even the guest's
//! own Io stream tells which accesses the kernel refused. Its replay under
//! `host` is the most direct check of the model against the kernel; every
//! disagreement belongs in the `host` policy and `docs/host-notes.md`.

use iced_x86::code_asm::*;
use kvmtrace_format::Irqchip;

use super::asm::{Guest, R, hi, lo};
use super::mce::{MCG_CAP, mc_ctl, mc_ctl2, mc_status};
use super::{HostStep, ScenarioError, ScenarioParams, ScenarioSpec};

/// One MSR: the bits to flip one at a time, then absolute values to try.
pub struct Probe {
    pub index: u32,
    pub bits: &'static [u8],
    pub values: &'static [u64],
}

const fn p(index: u32, bits: &'static [u8], values: &'static [u64]) -> Probe {
    Probe {
        index,
        bits,
        values,
    }
}

pub const MSR_APIC_BASE: u32 = 0x1b;
pub const MSR_HWCR: u32 = 0xc001_0015;

/// The probes, in order. Section numbers are SEMANTICS.md's.
pub const PROBES: &[Probe] = &[
    // §1: EMON (7, ignored), BTS/PEBS_UNAVAIL (11, 12: #GP for the guest since
    // 6.0), ENABLE_MWAIT (18), LIMIT_CPUID (22); fast strings, EIST, XD_DISABLE.
    p(0x1a0, &[0, 7, 11, 12, 16, 18, 22, 34], &[]),
    // §3: VMX bits, reserved bit 3, SGX_LC, SGX, LMCE; LOCKED last (it sticks).
    p(0x3a, &[1, 2, 3, 17, 18, 20, 0], &[]),
    // §5: MCG_STATUS takes anything; MCG_CTL only 0 or ~0; MCG_CAP read-only.
    p(0x17a, &[0, 1, 2], &[]),
    p(0x17b, &[0, 63], &[0]),
    p(0x179, &[0, 8], &[]),
    // §5: MCi_CTL: bit 10 tolerated, bit 0 since 6.0, others bad.
    p(mc_ctl(0), &[0, 10, 1, 63], &[0, 1]),
    p(mc_ctl(4), &[10], &[]),
    p(mc_ctl(9), &[0], &[]),
    p(mc_ctl(10), &[0], &[]),
    // §5: MCi_STATUS non-zero needs HWCR[18] (probed again below with it set).
    p(mc_status(0), &[0, 63], &[]),
    p(mc_status(0) + 1, &[0], &[]),
    p(mc_status(0) + 2, &[0], &[]),
    // §5: MCi_CTL2 without MCG_CMCI_P; MCG_EXT_CTL (VMX only).
    p(mc_ctl2(0), &[0, 30, 31], &[]),
    p(mc_ctl2(10), &[0], &[]),
    p(mc_ctl(31), &[0], &[]),
    p(0x4d0, &[0], &[]),
    // §5: HWCR: 6.18 takes bits 18 and 24; 5.10 only bit 18 (3, 6, 8 ignored).
    p(MSR_HWCR, &[3, 18, 24, 30], &[]),
    // §2 (APIC base, RESET/INIT): BSP, reserved 9, EXTD (needs a way back
    // through disabled, see `probe`), EN, a reserved high bit.
    p(MSR_APIC_BASE, &[8, 9, 11, 10, 52], &[]),
    // PAT: an invalid type (bit 3 of PA0) and a valid one.
    p(0x277, &[3, 1], &[]),
    // MTRRdefType: FE, E, reserved 12.
    p(0x2ff, &[10, 11, 12], &[]),
    // MISC_FEATURES_ENABLES: CPUID faulting (needs PLATFORM_INFO), reserved 1.
    p(0x140, &[0, 1], &[]),
    p(0xce, &[31], &[]),
    // UCODE_REV, SPEC_CTRL, DEBUGCTL, SYSENTER_CS, TSC_AUX.
    p(0x8b, &[32], &[]),
    p(0x48, &[0, 1, 2], &[]),
    p(0x1d9, &[0, 1, 2], &[]),
    p(0x174, &[0], &[]),
    p(0xc000_0103, &[0, 32], &[]),
    // EFER: reserved bit 1, SVME (without SVM in CPUID).
    p(0xc000_0080, &[1, 12], &[]),
    // AMD VM_CR, VM_HSAVE_PA (low bits reserved), OSVW.
    p(0xc001_0114, &[4], &[]),
    p(0xc001_0117, &[0], &[]),
    p(0xc001_0140, &[0], &[]),
    // §4: x2APIC MSRs with x2APIC off (ID, TPR) fault.
    p(0x802, &[0], &[]),
    p(0x808, &[0], &[]),
    // KVM PV: poll control.
    p(0x4b56_4d05, &[0], &[]),
];

/// Host-side (`KVM_SET_MSRS`/`KVM_GET_MSRS`) accesses where host and guest rules
/// differ: FEAT_CTL bits (§3), MCi_CTL/STATUS (§5), MCG_CTL, MISC_ENABLE.
fn host_probe() -> HostStep {
    let mut steps = Vec::new();
    let mut rw = |index: u32, values: &[u64]| {
        steps.push(HostStep::ReadMsr { vcpu: 0, index });
        for &value in values {
            steps.push(HostStep::WriteMsr {
                vcpu: 0,
                index,
                value,
            });
            steps.push(HostStep::ReadMsr { vcpu: 0, index });
        }
    };
    rw(
        0x3a,
        &[1 << 1, 1 << 2, 1 << 3, 1 << 17, 1 << 18, 1 << 20, 1, 0],
    );
    rw(mc_status(0), &[1, 0]);
    rw(mc_ctl(0), &[1, !1, !0]);
    rw(0x17b, &[1, 0, !0]);
    rw(0x1a0, &[0x1800 | 1 << 18, 0x1800]);
    rw(0x17a, &[1, 0]);
    rw(MSR_APIC_BASE, &[]);
    rw(MSR_HWCR, &[]);
    HostStep::Seq(steps)
}

/// After a write: report the fault marker (0 = accepted) and clear it.
fn mark_write(g: &mut Guest) -> R {
    g.report_fault()?;
    g.clear_fault()
}

/// After a read: report the value (EAX, then EDX) and the fault marker, clear it.
/// So every access's outcome is guest-visible, and an observe-mode recording
/// shows what the kernel decided even without its tracepoints.
fn mark_read(g: &mut Guest) -> R {
    g.a.mov(r10d, edx)?;
    g.report_eax()?;
    g.a.mov(eax, r10d)?;
    g.report_eax()?;
    mark_write(g)
}

/// Write R9:R8 (the value first read) to `index`.
fn restore(g: &mut Guest, index: u32) -> R {
    g.a.mov(eax, r8d)?;
    g.a.mov(edx, r9d)?;
    g.wrmsr_edx_eax(index)?;
    mark_write(g)
}

/// Write EDX:EAX, then read back.
fn write_read(g: &mut Guest, index: u32) -> R {
    g.wrmsr_edx_eax(index)?;
    mark_write(g)?;
    g.rdmsr(index)?;
    mark_read(g)
}

/// Read (saved in R9:R8), write back, then each bit and value: write, read,
/// restore. Every access is followed by its marks (see [`mark_read`]).
pub fn probe(g: &mut Guest, pr: &Probe) -> R {
    g.clear_fault()?;
    g.rdmsr(pr.index)?;
    g.a.mov(r8d, eax)?;
    g.a.mov(r9d, edx)?;
    mark_read(g)?;
    restore(g, pr.index)?;
    for &bit in pr.bits {
        g.a.mov(eax, r8d)?;
        g.a.mov(edx, r9d)?;
        if bit < 32 {
            g.a.xor(eax, 1u32 << bit)?;
        } else {
            g.a.xor(edx, 1u32 << (bit - 32))?;
        }
        write_read(g, pr.index)?;
        restore(g, pr.index)?;
        if pr.index == MSR_APIC_BASE && bit == 10 {
            // x2APIC -> xAPIC is invalid: go back through disabled.
            g.a.mov(eax, r8d)?;
            g.a.and(eax, !0xc00u32)?;
            g.a.mov(edx, r9d)?;
            g.wrmsr_edx_eax(pr.index)?;
            mark_write(g)?;
            restore(g, pr.index)?;
        }
    }
    for &value in pr.values {
        g.a.mov(eax, lo(value))?;
        g.a.mov(edx, hi(value))?;
        write_read(g, pr.index)?;
        restore(g, pr.index)?;
    }
    Ok(())
}

pub fn body(g: &mut Guest) -> R {
    g.host(host_probe())?;
    for pr in PROBES {
        probe(g, pr)?;
    }
    // §5 can_set_mci_status: MC0_STATUS again with HWCR[18] set.
    g.rmw_msr(MSR_HWCR, 1 << 18, 0)?;
    mark_write(g)?;
    probe(g, &p(mc_status(0), &[0, 63], &[]))?;
    g.rmw_msr(MSR_HWCR, 0, 1 << 18)?;
    mark_write(g)
}

const NAME: &str = "bit-probe";

pub fn spec(params: &ScenarioParams) -> Result<ScenarioSpec, ScenarioError> {
    let mut spec = super::one_program(NAME, params, 1, body)?;
    spec.irqchip = Irqchip::Kernel;
    spec.mcg_cap = Some(MCG_CAP);
    spec.cpuid.push(super::x2apic::CPUID_X2APIC);
    Ok(spec)
}
