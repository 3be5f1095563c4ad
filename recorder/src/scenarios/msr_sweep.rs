//! `msr-sweep`: one RDMSR of each MSR in the architectural, AMD and KVM ranges
//! the kernel knows about (`msrs_to_save`, `emulated_msrs`, the vendor
//! `get_msr` cases, the MCE banks, the VMX capability MSRs), plus one MSR no one
//! defines. Unknown ones #GP and the guest goes on (layout: faults are skipped).

use super::asm::{Guest, R};
use super::{ScenarioError, ScenarioParams, ScenarioSpec};

/// Inclusive ranges, in the order the guest reads them.
pub const SWEEP: &[(u32, u32)] = &[
    // P5 MC, monitor filter size, TSC, platform ID, APIC base, EBL_CR_POWERON
    (0x0, 0x1),
    (0x6, 0x6),
    (0x10, 0x12), // TSC; KVM's old wall clock 0x11 and system time 0x12
    (0x17, 0x17),
    (0x1b, 0x1b),
    (0x2a, 0x2a),
    (0x33, 0x34),   // TEST_CTRL, SMI_COUNT
    (0x3a, 0x3b),   // FEAT_CTL, TSC_ADJUST
    (0x48, 0x49),   // SPEC_CTRL, PRED_CMD (write-only)
    (0x8b, 0x8b),   // UCODE_REV
    (0xc1, 0xc2),   // PMC0, PMC1
    (0xce, 0xce),   // PLATFORM_INFO
    (0xe7, 0xe8),   // MPERF, APERF
    (0xfe, 0xfe),   // MTRRcap
    (0x10a, 0x10b), // ARCH_CAPABILITIES, FLUSH_CMD
    (0x122, 0x122), // TSX_CTRL
    (0x140, 0x140), // MISC_FEATURES_ENABLES
    (0x174, 0x176), // SYSENTER_CS/ESP/EIP
    (0x179, 0x17b), // MCG_CAP, MCG_STATUS, MCG_CTL
    (0x186, 0x187), // PERFEVTSEL0/1
    (0x198, 0x19c), // PERF_STATUS/CTL, CLOCK_MODULATION, THERM_*
    (0x1a0, 0x1a0), // MISC_ENABLE
    (0x1a2, 0x1a2), // TEMPERATURE_TARGET
    (0x1a4, 0x1a4), // MISC_FEATURE_CONTROL
    (0x1b0, 0x1b0), // ENERGY_PERF_BIAS
    (0x1d9, 0x1d9), // DEBUGCTL
    (0x1db, 0x1de), // LBR from/to
    (0x200, 0x20f), // variable MTRRs 0..7
    (0x250, 0x250), // fixed MTRRs
    (0x258, 0x259),
    (0x268, 0x26f),
    (0x277, 0x277),             // PAT
    (0x280, 0x289),             // MC0..9_CTL2
    (0x2ff, 0x2ff),             // MTRRdefType
    (0x309, 0x30b),             // fixed counters
    (0x345, 0x345),             // PERF_CAPABILITIES
    (0x38d, 0x390),             // fixed counter ctrl, global status/ctrl/ovf
    (0x3f1, 0x3f1),             // PEBS_ENABLE
    (0x400, 0x42b),             // MC0..MC10 (bank 10 is beyond `mcg_cap` after SETUP_MCE)
    (0x47c, 0x47f),             // MC31, the last of KVM_MAX_MCE_BANKS
    (0x480, 0x492),             // VMX capability MSRs
    (0x4d0, 0x4d0),             // MCG_EXT_CTL
    (0x600, 0x600),             // DS_AREA
    (0x6e0, 0x6e0),             // TSC_DEADLINE
    (0xda0, 0xda0),             // XSS
    (0x4000_0000, 0x4000_0001), // Hyper-V guest OS ID, hypercall
    (0x4b56_4d00, 0x4b56_4d07), // KVM PV MSRs
    (0x474f_4f00, 0x474f_4f00), // no one's MSR (userspace_msr_exit_test's)
    (0xc000_0080, 0xc000_0084), // EFER, STAR, LSTAR, CSTAR, SFMASK
    (0xc000_0100, 0xc000_0104), // FS/GS/KERNEL_GS base, TSC_AUX, TSC_RATIO
    (0xc001_0000, 0xc001_0007), // K7 PERF_CTL/CTR
    (0xc001_0010, 0xc001_0010), // SYSCFG
    (0xc001_0015, 0xc001_0015), // HWCR
    (0xc001_001a, 0xc001_001a), // TOP_MEM
    (0xc001_001d, 0xc001_001d), // TOP_MEM2
    (0xc001_0055, 0xc001_0055), // INT_PENDING_MSG
    (0xc001_0114, 0xc001_0114), // VM_CR
    (0xc001_0117, 0xc001_0117), // VM_HSAVE_PA
    (0xc001_0140, 0xc001_0141), // OSVW
    (0xc001_0200, 0xc001_0203), // F15h PERF_CTL/CTR
    (0xc001_1020, 0xc001_1023), // LS/IC/DC/BU_CFG
    (0xc001_1029, 0xc001_1029), // DE_CFG
];

const NAME: &str = "msr-sweep";

/// Every MSR index of `ranges`, in order.
pub fn indices(ranges: &[(u32, u32)]) -> impl Iterator<Item = u32> + '_ {
    ranges.iter().flat_map(|&(first, last)| first..=last)
}

/// One RDMSR per index of `ranges`; with `mark`, each followed by a report of
/// the fault marker (0 = read fine, 14 = #GP), so the guest's own Io stream
/// says which reads the kernel refused (observe mode without tracepoints).
pub fn body(g: &mut Guest, ranges: &[(u32, u32)], mark: bool) -> R {
    g.clear_fault()?;
    for index in indices(ranges) {
        g.a.mov(iced_x86::code_asm::ecx, index)?;
        g.a.rdmsr()?;
        if mark {
            g.report_fault()?;
            g.clear_fault()?;
        }
    }
    g.report_fault()
}

pub fn spec(params: &ScenarioParams) -> Result<ScenarioSpec, ScenarioError> {
    super::one_program(NAME, params, super::MAX_VCPUS, |g| body(g, SWEEP, true))
}
