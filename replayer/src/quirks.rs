//! `KVM_X86_QUIRK_*` bits (uapi `asm/kvm.h`, SEMANTICS.md §6).

pub const LINT0_REENABLED: u64 = 1 << 0;
pub const CD_NW_CLEARED: u64 = 1 << 1;
pub const LAPIC_MMIO_HOLE: u64 = 1 << 2;
pub const OUT_7E_INC_RIP: u64 = 1 << 3;
pub const MISC_ENABLE_NO_MWAIT: u64 = 1 << 4;
pub const FIX_HYPERCALL_INSN: u64 = 1 << 5;
pub const MWAIT_NEVER_UD_FAULTS: u64 = 1 << 6;
pub const SLOT_ZAP_ALL: u64 = 1 << 7;
pub const STUFF_FEATURE_MSRS: u64 = 1 << 8;
pub const IGNORE_GUEST_PAT: u64 = 1 << 9;
/// Name from the stable shortlog, value from the v1 patch (§6, unverified).
pub const VMCS12_ALLOW_FREEZE_IN_SMM: u64 = 1 << 10;

/// (name without `KVM_X86_QUIRK_`, bit), in bit order.
pub const ALL: [(&str, u64); 11] = [
    ("LINT0_REENABLED", LINT0_REENABLED),
    ("CD_NW_CLEARED", CD_NW_CLEARED),
    ("LAPIC_MMIO_HOLE", LAPIC_MMIO_HOLE),
    ("OUT_7E_INC_RIP", OUT_7E_INC_RIP),
    ("MISC_ENABLE_NO_MWAIT", MISC_ENABLE_NO_MWAIT),
    ("FIX_HYPERCALL_INSN", FIX_HYPERCALL_INSN),
    ("MWAIT_NEVER_UD_FAULTS", MWAIT_NEVER_UD_FAULTS),
    ("SLOT_ZAP_ALL", SLOT_ZAP_ALL),
    ("STUFF_FEATURE_MSRS", STUFF_FEATURE_MSRS),
    ("IGNORE_GUEST_PAT", IGNORE_GUEST_PAT),
    ("VMCS12_ALLOW_FREEZE_IN_SMM", VMCS12_ALLOW_FREEZE_IN_SMM),
];

/// The bit of a quirk name, with or without the `KVM_X86_QUIRK_` prefix, in
/// any case (`mwait_never_ud_faults` is `MWAIT_NEVER_UD_FAULTS`).
pub fn by_name(name: &str) -> Option<u64> {
    let up = name.to_ascii_uppercase();
    let n = up.strip_prefix("KVM_X86_QUIRK_").unwrap_or(&up);
    ALL.iter().find(|(q, _)| *q == n).map(|&(_, b)| b)
}

/// The names of the bits set in `mask` (unknown bits as `bit N`).
pub fn list_of(mask: u64) -> Vec<&'static str> {
    ALL.iter()
        .filter(|(_, b)| mask & b != 0)
        .map(|&(n, _)| n)
        .collect()
}

/// `mask` as text: `none`, or names joined by `|` (unknown bits in hex).
pub fn names_of(mask: u64) -> String {
    let known: u64 = ALL.iter().map(|(_, b)| b).sum();
    let mut parts: Vec<String> = list_of(mask).into_iter().map(String::from).collect();
    if mask & !known != 0 {
        parts.push(format!("{:#x}", mask & !known));
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join("|")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (n, b) in ALL {
            assert_eq!(by_name(n), Some(b));
            assert_eq!(by_name(&format!("KVM_X86_QUIRK_{n}")), Some(b));
        }
        assert_eq!(by_name("MWAIT_NEVER_FAULTS"), None);
        assert_eq!(names_of(0x50), "MISC_ENABLE_NO_MWAIT|MWAIT_NEVER_UD_FAULTS");
        assert_eq!(names_of(0), "none");
    }
}
