//! `mce`: machine-check banks after `KVM_X86_SETUP_MCE` with 10 banks and
//! MCG_CTL_P (MCG_CAP 0x10a), SEMANTICS.md §5. Good and bad MCi_CTL/STATUS writes
//! (bad ones #GP since 6.0 and kill `KVM_RUN` with EPERM before), MC0_STATUS once
//! HWCR[18] allows it (AMD), MC1_CTL with bit 10 clear, MC0_CTL with bit 0 clear
//! (tolerated since 6.0), bank 10 beyond the banks, MCG_*, and MC0_CTL2 (6.0+).

use super::asm::{Guest, R};
use super::{ScenarioError, ScenarioParams, ScenarioSpec};

/// 10 banks | MCG_CTL_P (bit 8); HOST.md reads this back as MCG_CAP.
pub const MCG_CAP: u64 = 10 | 1 << 8;
pub const MSR_MCG_CAP: u32 = 0x179;
pub const MSR_MCG_STATUS: u32 = 0x17a;
pub const MSR_MCG_CTL: u32 = 0x17b;
pub const MSR_HWCR: u32 = 0xc001_0015;
pub const HWCR_MCI_STATUS_WREN: u64 = 1 << 18;

pub const fn mc_ctl(bank: u32) -> u32 {
    0x400 + 4 * bank
}
pub const fn mc_status(bank: u32) -> u32 {
    0x401 + 4 * bank
}
pub const fn mc_ctl2(bank: u32) -> u32 {
    0x280 + bank
}

const NAME: &str = "mce";

/// The bank writes that decide the `mce_bad_write` and `mce_ctl_bit0_ok`
/// switches, in a few accesses (the `tour` runs this).
pub fn short(g: &mut Guest) -> R {
    g.wrmsr(mc_ctl(0), !1)?; // bit 0 clear: ok since 6.0, bad before
    g.wrmsr(mc_ctl(0), 1)?; // bad everywhere
    g.wrmsr(mc_status(0), 1)?; // bad without HWCR[18]
    g.rmw_msr(MSR_HWCR, HWCR_MCI_STATUS_WREN, 0)?;
    g.wrmsr(mc_status(0), 1)?; // ok on AMD now
    g.rdmsr(mc_ctl(10))?; // beyond the banks
    g.report_fault()
}

pub fn body(g: &mut Guest) -> R {
    g.rdmsr(MSR_MCG_CAP)?;
    g.report_eax()?;
    g.rdmsr(MSR_MCG_STATUS)?;
    g.rdmsr(MSR_MCG_CTL)?;
    g.rdmsr(mc_ctl(0))?;
    g.rdmsr(mc_status(0))?;
    // MC0_CTL: 0 and all-ones are good, 1 is bad, bit 10 clear is tolerated
    // (K8 GART), bit 0 clear only since 6.0.
    for v in [0, !0, 1, !(1 << 10), !1, !0] {
        g.wrmsr(mc_ctl(0), v)?;
    }
    g.wrmsr(mc_ctl(1), !(1 << 10))?;
    g.rdmsr(mc_ctl(1))?;
    // MC0_STATUS: 0 good, non-zero only with HWCR[18] on AMD guests.
    g.wrmsr(mc_status(0), 0)?;
    g.wrmsr(mc_status(0), 1)?;
    g.rdmsr(MSR_HWCR)?;
    g.rmw_msr(MSR_HWCR, HWCR_MCI_STATUS_WREN, 0)?;
    g.rdmsr(MSR_HWCR)?;
    g.wrmsr(mc_status(0), 1)?;
    g.rdmsr(mc_status(0))?;
    g.wrmsr(mc_status(0), 0)?;
    g.rmw_msr(MSR_HWCR, 0, HWCR_MCI_STATUS_WREN)?;
    // ADDR and MISC take anything.
    g.wrmsr(mc_ctl(0) + 2, 0x1234)?;
    g.wrmsr(mc_ctl(0) + 3, 0x5678)?;
    // The last bank and the first one beyond.
    g.rdmsr(mc_ctl(9))?;
    g.wrmsr(mc_ctl(9), !0)?;
    g.rdmsr(mc_ctl(10))?;
    g.wrmsr(mc_ctl(10), 0)?;
    // MCG_CTL (MCG_CTL_P set): 0 and ~0 only; MCG_STATUS: anything.
    for v in [0, 1, !0] {
        g.wrmsr(MSR_MCG_CTL, v)?;
    }
    g.rdmsr(MSR_MCG_CTL)?;
    g.wrmsr(MSR_MCG_STATUS, 1)?;
    g.wrmsr(MSR_MCG_STATUS, 0)?;
    g.rdmsr(MSR_MCG_STATUS)?;
    // MCG_CAP is read-only to the guest.
    g.wrmsr(MSR_MCG_CAP, MCG_CAP)?;
    // MC0_CTL2: no MCG_CMCI_P, so guest writes fail (6.0+), reads return 0.
    g.rdmsr(mc_ctl2(0))?;
    g.wrmsr(mc_ctl2(0), 0)?;
    g.wrmsr(mc_ctl2(0), 1 << 30)?;
    g.rdmsr(mc_ctl2(10))?;
    g.report_fault()
}

pub fn spec(params: &ScenarioParams) -> Result<ScenarioSpec, ScenarioError> {
    let mut spec = super::one_program(NAME, params, super::MAX_VCPUS, body)?;
    spec.mcg_cap = Some(MCG_CAP);
    Ok(spec)
}
