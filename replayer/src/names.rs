//! Names of common MSRs, for divergence reports ("MC0_STATUS (0x401)").

/// The architectural or KVM name of an MSR, or "" if unknown.
pub fn msr_name(index: u32) -> &'static str {
    match index {
        0x10 => "IA32_TSC",
        0x11 => "KVM_WALL_CLOCK",
        0x12 => "KVM_SYSTEM_TIME",
        0x1b => "IA32_APIC_BASE",
        0x3a => "IA32_FEAT_CTL",
        0x3b => "IA32_TSC_ADJUST",
        0x48 => "IA32_SPEC_CTRL",
        0x49 => "IA32_PRED_CMD",
        0x8b => "IA32_UCODE_REV",
        0x9e => "IA32_SMBASE",
        0xce => "PLATFORM_INFO",
        0xe7 => "IA32_MPERF",
        0xe8 => "IA32_APERF",
        0xfe => "IA32_MTRRCAP",
        0x10a => "IA32_ARCH_CAPABILITIES",
        0x140 => "MISC_FEATURES_ENABLES",
        0x174 => "IA32_SYSENTER_CS",
        0x175 => "IA32_SYSENTER_ESP",
        0x176 => "IA32_SYSENTER_EIP",
        0x179 => "IA32_MCG_CAP",
        0x17a => "IA32_MCG_STATUS",
        0x17b => "IA32_MCG_CTL",
        0x1a0 => "IA32_MISC_ENABLE",
        0x1d9 => "IA32_DEBUGCTL",
        0x277 => "IA32_PAT",
        0x2ff => "IA32_MTRR_DEF_TYPE",
        0x4d0 => "IA32_MCG_EXT_CTL",
        0x6e0 => "IA32_TSC_DEADLINE",
        0x802 => "X2APIC_APICID",
        0x803 => "X2APIC_VERSION",
        0x808 => "X2APIC_TPR",
        0x80b => "X2APIC_EOI",
        0x80d => "X2APIC_LDR",
        0x80f => "X2APIC_SPIV",
        0x830 => "X2APIC_ICR",
        0x832 => "X2APIC_LVT_TIMER",
        0x838 => "X2APIC_TMICT",
        0x839 => "X2APIC_TMCCT",
        0x83e => "X2APIC_TDCR",
        0x83f => "X2APIC_SELF_IPI",
        0x800..=0x8ff => "X2APIC",
        0x480..=0x492 => "IA32_VMX_*",
        0x280..=0x29f => MC_CTL2[(index - 0x280) as usize],
        0x400..=0x47f => {
            let (bank, reg) = ((index - 0x400) / 4, (index - 0x400) % 4);
            MC_BANK[(bank * 4 + reg) as usize]
        }
        0x4b56_4d00 => "KVM_WALL_CLOCK_NEW",
        0x4b56_4d01 => "KVM_SYSTEM_TIME_NEW",
        0x4b56_4d02 => "KVM_ASYNC_PF_EN",
        0x4b56_4d03 => "KVM_STEAL_TIME",
        0x4b56_4d04 => "KVM_PV_EOI_EN",
        0xc000_0080 => "EFER",
        0xc000_0081 => "STAR",
        0xc000_0082 => "LSTAR",
        0xc000_0083 => "CSTAR",
        0xc000_0084 => "SFMASK",
        0xc000_0100 => "FS_BASE",
        0xc000_0101 => "GS_BASE",
        0xc000_0102 => "KERNEL_GS_BASE",
        0xc000_0103 => "TSC_AUX",
        0xc001_0015 => "K7_HWCR",
        0xc001_0114 => "VM_CR",
        0xc001_0117 => "VM_HSAVE_PA",
        _ => "",
    }
}

/// "IA32_MISC_ENABLE (0x1a0)", or "MSR 0x1234" when unnamed.
pub fn msr_label(index: u32) -> String {
    match msr_name(index) {
        "" => format!("MSR {index:#x}"),
        n => format!("{n} ({index:#x})"),
    }
}

macro_rules! bank_names {
    ($($b:literal)+) => {
        [$(
            concat!("MC", $b, "_CTL"),
            concat!("MC", $b, "_STATUS"),
            concat!("MC", $b, "_ADDR"),
            concat!("MC", $b, "_MISC"),
        )+]
    };
}
macro_rules! ctl2_names {
    ($($b:literal)+) => { [$(concat!("MC", $b, "_CTL2"),)+] };
}

static MC_BANK: [&str; 128] = bank_names!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20
    21 22 23 24 25 26 27 28 29 30 31);
static MC_CTL2: [&str; 32] = ctl2_names!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20
    21 22 23 24 25 26 27 28 29 30 31);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(msr_label(0x401), "MC0_STATUS (0x401)");
        assert_eq!(msr_label(0x428), "MC10_CTL (0x428)");
        assert_eq!(msr_label(0x281), "MC1_CTL2 (0x281)");
        assert_eq!(msr_label(0x1234), "MSR 0x1234");
    }
}
