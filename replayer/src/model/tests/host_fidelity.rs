//! Fixes from observe-mode fidelity runs on the project host: each case is
//! either an upstream rule (SEMANTICS.md section / kernel source cited) or a
//! `kvm_pvm` peculiarity written down in docs/host-notes.md with the recording
//! that shows it.

use kvmtrace_format::*;

use super::*;
use crate::policy::Vendor;

const GUEST_FLIPS: &[(u32, u64, Origin)] = &[];

#[test]
fn mci_ctl2_guest_read_needs_cmci_p() {
    // get_msr_mce (6.0+, and 6.18 read): CTL2 beyond bank_num -> 1; a guest
    // read without MCG_CMCI_P -> 1; a host read returns the bank's value.
    let mut h = header("kvm_intel", false, 0);
    h.vm.mcg_cap = Some(0x10a);
    run(
        &[
            case!(
                "§5 guest RDMSR MC0_CTL2, no CMCI_P, 6.0",
                "kvm-6.0",
                Intel,
                GUEST_FLIPS,
                0,
                0x280,
                None,
                G,
                GP
            ),
            case!(
                "§5 guest RDMSR MC9_CTL2, no CMCI_P, 6.18 pvm",
                "kvm-6.18",
                Pvm,
                GUEST_FLIPS,
                0,
                0x289,
                None,
                G,
                GP
            ),
            case!(
                "§5 guest RDMSR MC0_CTL2 amd",
                "kvm-6.18",
                Amd,
                GUEST_FLIPS,
                0,
                0x280,
                None,
                G,
                GP
            ),
            case!(
                "§5 host read MC0_CTL2, no CMCI_P",
                "kvm-6.18",
                Intel,
                GUEST_FLIPS,
                0,
                0x280,
                None,
                H,
                val(0)
            ),
            case!(
                "§5 guest RDMSR MC10_CTL2 beyond bank_num",
                "kvm-6.18",
                Intel,
                GUEST_FLIPS,
                0,
                0x28a,
                None,
                G,
                GP
            ),
            case!(
                "§5 INVAL deflection of the CTL2 fault",
                "kvm-6.18",
                Intel,
                GUEST_FLIPS,
                1,
                0x280,
                None,
                G,
                ux(MsrExitReason::Inval)
            ),
            case!(
                "§5 5.19 has no CTL2 (r=2)",
                "kvm-5.19",
                Intel,
                GUEST_FLIPS,
                2,
                0x280,
                None,
                G,
                ux(MsrExitReason::Unknown)
            ),
        ],
        &h,
    );
    let mut h = header("kvm_intel", false, 0);
    h.vm.mcg_cap = Some(0x50a); // MCG_CMCI_P
    run(
        &[case!(
            "§5 guest RDMSR MC0_CTL2 with CMCI_P",
            "kvm-6.18",
            Intel,
            GUEST_FLIPS,
            0,
            0x280,
            None,
            G,
            val(0)
        )],
        &h,
    );
}

#[test]
fn pvm_misc_enable_pmu_bits_writable() {
    // Upstream 6.0+ (§1): guest flips of bits 11/12 #GP and bit 7 is ignored.
    // kvm_pvm: accepted and stored (bit-probe observe recording, host-notes).
    let h = header("kvm_pvm", true, 0);
    run(
        &[
            case!(
                "§1 6.18 amd: flip bit 11 -> #GP",
                "kvm-6.18",
                Amd,
                GUEST_FLIPS,
                0,
                0x1a0,
                Some(0x1000),
                G,
                GP
            ),
            case!(
                "host-notes pvm: flip bit 11 ok",
                "kvm-6.18",
                Pvm,
                GUEST_FLIPS,
                0,
                0x1a0,
                Some(0x801),
                G,
                OK
            ),
            case!(
                "host-notes pvm: flip bit 12 ok",
                "kvm-6.18",
                Pvm,
                GUEST_FLIPS,
                0,
                0x1a0,
                Some(0x1001),
                G,
                OK
            ),
            case!(
                "host-notes pvm: EMON stored",
                "kvm-6.18",
                Pvm,
                &[(0x1a0, 0x81, G)],
                0,
                0x1a0,
                None,
                G,
                val(0x81)
            ),
            case!(
                "§1 6.18 amd: EMON ignored",
                "kvm-6.18",
                Amd,
                &[(0x1a0, 0x1880, G)],
                0,
                0x1a0,
                None,
                G,
                val(0x1800)
            ),
        ],
        &h,
    );
}

#[test]
fn pvm_pat_unchecked() {
    // kvm_pat_valid on VMX/SVM (§2); kvm_pvm stored 0x704060007040e (bit-probe).
    let h = header("kvm_pvm", true, 0);
    run(
        &[
            case!(
                "§2 amd: PAT byte 0x0e -> #GP",
                "kvm-6.18",
                Amd,
                GUEST_FLIPS,
                0,
                0x277,
                Some(0x7_0406_0007_040e),
                G,
                GP
            ),
            case!(
                "host-notes pvm: PAT byte 0x0e ok",
                "kvm-6.18",
                Pvm,
                GUEST_FLIPS,
                0,
                0x277,
                Some(0x7_0406_0007_040e),
                G,
                OK
            ),
            case!(
                "host-notes pvm: read back",
                "kvm-6.18",
                Pvm,
                &[(0x277, 0x7_0406_0007_040e, G)],
                0,
                0x277,
                None,
                G,
                val(0x7_0406_0007_040e)
            ),
        ],
        &h,
    );
}

#[test]
fn pvm_mcg_ext_ctl_no_handler() {
    // pvm_get_msr/pvm_set_msr have no MCG_EXT_CTL case and the common code
    // none either (VMX only, §5): r = 2 (observe: guest read/write #GP).
    let h = header("kvm_pvm", true, 0);
    run(
        &[
            case!(
                "pvm read 0x4d0 -> #GP",
                "kvm-6.18",
                Pvm,
                GUEST_FLIPS,
                0,
                0x4d0,
                None,
                G,
                GP
            ),
            case!(
                "pvm write 0x4d0 -> #GP",
                "kvm-6.18",
                Pvm,
                GUEST_FLIPS,
                0,
                0x4d0,
                Some(1),
                G,
                GP
            ),
            case!(
                "pvm read 0x4d0 UNKNOWN deflection",
                "kvm-6.18",
                Pvm,
                GUEST_FLIPS,
                2,
                0x4d0,
                None,
                G,
                ux(MsrExitReason::Unknown)
            ),
        ],
        &h,
    );
}
