//! SEMANTICS.md §5 (MCE, HWCR) and §3 (IA32_FEAT_CTL) tables.

use kvmtrace_format::*;

use super::*;
use crate::policy::Vendor;

#[test]
fn mce_section5() {
    // SETUP_MCE with 10 banks | MCG_CTL_P (HOST.md), Intel CPUID.
    let mut h = header("kvm_intel", false, 0);
    h.vm.mcg_cap = Some(0x10a);
    let inval = MsrExitReason::Inval;
    run(
        &[
            case!(
                "§5 WRMSR MC0_CTL=1 5.19 -> EPERM",
                "kvm-5.19",
                Intel,
                &[],
                0,
                0x400,
                Some(1),
                G,
                Some(MsrOutcome::VmFailed { errno: 1 })
            ),
            case!(
                "§5 WRMSR MC0_CTL=1 6.0 -> #GP",
                "kvm-6.0",
                Intel,
                &[],
                0,
                0x400,
                Some(1),
                G,
                GP
            ),
            case!(
                "§5 §0 INVAL deflection 5.19",
                "kvm-5.19",
                Intel,
                &[],
                1,
                0x400,
                Some(1),
                G,
                ux(inval)
            ),
            case!(
                "§5 §0 INVAL deflection 6.0",
                "kvm-6.0",
                Intel,
                &[],
                1,
                0x400,
                Some(1),
                G,
                ux(inval)
            ),
            case!(
                "§5 MC0_CTL bit 10 clear ok 5.10",
                "kvm-5.10",
                Intel,
                &[],
                0,
                0x400,
                Some(!(1 << 10)),
                G,
                OK
            ),
            case!(
                "§5 MC0_CTL bits 0,10 clear 5.19 EPERM",
                "kvm-5.19",
                Intel,
                &[],
                0,
                0x400,
                Some(!0x401),
                G,
                Some(MsrOutcome::VmFailed { errno: 1 })
            ),
            case!(
                "§5 MC0_CTL bits 0,10 clear 6.0 ok",
                "kvm-6.0",
                Intel,
                &[],
                0,
                0x400,
                Some(!0x401),
                G,
                OK
            ),
            case!(
                "§5 host MC0_CTL=1 refused",
                "kvm-6.18",
                Intel,
                &[],
                0,
                0x400,
                Some(1),
                H,
                GP
            ),
            case!(
                "§5 host MC0_CTL=1 refused 5.10 (r=-1)",
                "kvm-5.10",
                Intel,
                &[],
                0,
                0x400,
                Some(1),
                H,
                GP
            ),
            case!(
                "§5 guest MC0_STATUS=1 #GP",
                "kvm-6.18",
                Intel,
                &[],
                0,
                0x401,
                Some(1),
                G,
                GP
            ),
            case!(
                "§5 guest MC0_STATUS=0 ok",
                "kvm-6.18",
                Intel,
                &[],
                0,
                0x401,
                Some(0),
                G,
                OK
            ),
            case!(
                "§5 host MC0_STATUS=1 ok",
                "kvm-6.18",
                Intel,
                &[],
                0,
                0x401,
                Some(1),
                H,
                OK
            ),
            case!(
                "§5 MC10_CTL read #GP",
                "kvm-6.18",
                Intel,
                &[],
                0,
                0x428,
                None,
                G,
                GP
            ),
            case!(
                "§5 MC9_CTL read ~0",
                "kvm-6.18",
                Intel,
                &[],
                0,
                0x424,
                None,
                G,
                val(!0)
            ),
            case!(
                "§5 MCG_CAP read",
                "kvm-6.18",
                Intel,
                &[],
                0,
                0x179,
                None,
                G,
                val(0x10a)
            ),
            case!(
                "§5 MCG_CTL=1 #GP",
                "kvm-6.18",
                Intel,
                &[],
                0,
                0x17b,
                Some(1),
                G,
                GP
            ),
            case!(
                "§5 MCG_CTL=~0 ok",
                "kvm-6.18",
                Intel,
                &[],
                0,
                0x17b,
                Some(!0),
                G,
                OK
            ),
            case!(
                "§5 MC0_CTL2 5.19 unknown -> #GP",
                "kvm-5.19",
                Intel,
                &[],
                0,
                0x280,
                None,
                G,
                GP
            ),
            case!(
                "§5 MC0_CTL2 5.19 unknown -> UNKNOWN exit",
                "kvm-5.19",
                Intel,
                &[],
                2,
                0x280,
                None,
                G,
                ux(MsrExitReason::Unknown)
            ),
            case!(
                "§5 MC0_CTL2 6.0 guest read without MCG_CMCI_P: r=1 (get_msr_mce)",
                "kvm-6.0",
                Intel,
                &[],
                2,
                0x280,
                None,
                G,
                GP
            ),
            case!(
                "§5 MC0_CTL2 6.0 guest write w/o CMCI",
                "kvm-6.0",
                Intel,
                &[],
                0,
                0x280,
                Some(0),
                G,
                GP
            ),
            case!(
                "§5 MC0_CTL2 6.0 host write 0",
                "kvm-6.0",
                Intel,
                &[],
                0,
                0x280,
                Some(0),
                H,
                OK
            ),
            case!(
                "§5 HWCR bit 18 ok",
                "kvm-5.10",
                Intel,
                &[],
                0,
                0xc001_0015,
                Some(1 << 18),
                G,
                OK
            ),
            case!(
                "§5 HWCR bit 24 5.10 #GP",
                "kvm-5.10",
                Intel,
                &[],
                0,
                0xc001_0015,
                Some(1 << 24),
                G,
                GP
            ),
            case!(
                "§5 HWCR bit 24 6.18 ok",
                "kvm-6.18",
                Intel,
                &[],
                0,
                0xc001_0015,
                Some(1 << 24),
                G,
                OK
            ),
            case!(
                "§5 HWCR bits 3,6,8 ignored",
                "kvm-5.10",
                Intel,
                &[],
                0,
                0xc001_0015,
                Some(0x148),
                G,
                OK
            ),
            case!(
                "§5 HWCR 0 after 18: 5.10 keeps 18",
                "kvm-5.10",
                Intel,
                &[(0xc001_0015, 1 << 18, G), (0xc001_0015, 0, G)],
                0,
                0xc001_0015,
                None,
                G,
                val(1 << 18)
            ),
            case!(
                "§5 HWCR 0 after 18: 6.18 clears",
                "kvm-6.18",
                Intel,
                &[(0xc001_0015, 1 << 18, G), (0xc001_0015, 0, G)],
                0,
                0xc001_0015,
                None,
                G,
                val(0)
            ),
            case!(
                "§5 HWCR.18 on Intel CPUID: STATUS still #GP",
                "kvm-6.18",
                Intel,
                &[(0xc001_0015, 1 << 18, G)],
                0,
                0x401,
                Some(1),
                G,
                GP
            ),
        ],
        &h,
    );
    // can_set_mci_status: AMD CPUID vendor and HWCR bit 18 (HOST.md measured).
    let mut h = header("kvm_pvm", true, 0);
    h.vm.mcg_cap = Some(0x10a);
    run(
        &[
            case!(
                "§5 pvm MC0_STATUS=1 #GP",
                "kvm-6.18",
                Pvm,
                &[],
                0,
                0x401,
                Some(1),
                G,
                GP
            ),
            case!(
                "§5 pvm HWCR.18 then MC0_STATUS=1 ok",
                "kvm-6.18",
                Pvm,
                &[(0xc001_0015, 1 << 18, G)],
                0,
                0x401,
                Some(1),
                G,
                OK
            ),
            case!(
                "§5 pvm MCG_EXT_CTL: no pvm case, r=2 (observe: #GP)",
                "kvm-6.18",
                Pvm,
                &[],
                0,
                0x4d0,
                None,
                G,
                GP
            ),
        ],
        &h,
    );
    // Without SETUP_MCE: 32 banks, no caps (HOST.md: MCG_CAP = 0x20).
    let h = header("kvm_pvm", true, 0);
    run(
        &[case!(
            "§5 MCG_CAP without SETUP_MCE",
            "kvm-6.18",
            Pvm,
            &[],
            0,
            0x179,
            None,
            G,
            val(0x20)
        )],
        &h,
    );
}

#[test]
fn feat_ctl_section3() {
    let h = header("kvm_intel", false, 0); // no VMX in guest CPUID
    let hv = header("kvm_intel", false, 1 << 5); // CPUID.1:ECX.VMX
    let unknown = MsrExitReason::Unknown;
    run(
        &[
            case!(
                "§3 host VMX bits w/o CPUID 6.0 refused",
                "kvm-6.0",
                Intel,
                &[],
                0,
                0x3a,
                Some(0x5),
                H,
                GP
            ),
            case!(
                "§3 host VMX bits w/o CPUID 6.2 ok",
                "kvm-6.2",
                Intel,
                &[],
                0,
                0x3a,
                Some(0x5),
                H,
                OK
            ),
            case!(
                "§3 host reserved bit 6.2 refused",
                "kvm-6.2",
                Intel,
                &[],
                0,
                0x3a,
                Some(0x8),
                H,
                GP
            ),
            case!(
                "§3 guest VMX bits w/o CPUID 6.2 #GP",
                "kvm-6.2",
                Intel,
                &[],
                0,
                0x3a,
                Some(0x5),
                G,
                GP
            ),
            case!(
                "§3 guest LOCKED ok",
                "kvm-6.18",
                Intel,
                &[],
                0,
                0x3a,
                Some(1),
                G,
                OK
            ),
            case!(
                "§3 guest write while LOCKED #GP",
                "kvm-6.18",
                Intel,
                &[(0x3a, 1, G)],
                0,
                0x3a,
                Some(1),
                G,
                GP
            ),
            case!(
                "§3 host rewrite while LOCKED ok",
                "kvm-6.18",
                Intel,
                &[(0x3a, 1, G)],
                0,
                0x3a,
                Some(0),
                H,
                OK
            ),
            case!(
                "§3 read back",
                "kvm-6.2",
                Intel,
                &[(0x3a, 5, H)],
                0,
                0x3a,
                None,
                G,
                val(5)
            ),
            case!(
                "§3 AMD guest read #GP",
                "kvm-6.18",
                Amd,
                &[],
                0,
                0x3a,
                None,
                G,
                GP
            ),
            case!(
                "§3 AMD guest read UNKNOWN exit",
                "kvm-6.18",
                Amd,
                &[],
                2,
                0x3a,
                None,
                G,
                ux(unknown)
            ),
            case!(
                "§3 AMD host write 0, 6.18 ok",
                "kvm-6.18",
                Amd,
                &[],
                0,
                0x3a,
                Some(0),
                H,
                OK
            ),
            case!(
                "§3 AMD host read, 6.18 -> 0",
                "kvm-6.18",
                Amd,
                &[],
                0,
                0x3a,
                None,
                H,
                val(0)
            ),
            case!(
                "§3 AMD host write 1, 6.18 refused",
                "kvm-6.18",
                Amd,
                &[],
                0,
                0x3a,
                Some(1),
                H,
                GP
            ),
            case!(
                "§3 AMD host write 0, 6.2 refused",
                "kvm-6.2",
                Amd,
                &[],
                0,
                0x3a,
                Some(0),
                H,
                GP
            ),
            case!(
                "§3 pvm host write 0 refused (HOST.md)",
                "kvm-6.18",
                Pvm,
                &[],
                0,
                0x3a,
                Some(0),
                H,
                GP
            ),
            case!(
                "§3 pvm guest write #GP",
                "kvm-6.18",
                Pvm,
                &[],
                0,
                0x3a,
                Some(0),
                G,
                GP
            ),
        ],
        &h,
    );
    run(
        &[
            case!(
                "§3 guest VMX bits with CPUID 6.2 ok",
                "kvm-6.2",
                Intel,
                &[],
                0,
                0x3a,
                Some(0x5),
                G,
                OK
            ),
            case!(
                "§3 host VMX bits with CPUID 6.0 ok",
                "kvm-6.0",
                Intel,
                &[],
                0,
                0x3a,
                Some(0x7),
                H,
                OK
            ),
            case!(
                "§3 host LMCE w/o MCG_LMCE_P 6.0 refused",
                "kvm-6.0",
                Intel,
                &[],
                0,
                0x3a,
                Some(1 << 20),
                H,
                GP
            ),
            case!(
                "§3 host LMCE 6.2 ok",
                "kvm-6.2",
                Intel,
                &[],
                0,
                0x3a,
                Some(1 << 20),
                H,
                OK
            ),
        ],
        &hv,
    );
}

/// TSC_AUX bits 63:32 (`__kvm_set_msr`): `#GP` for an Intel-compatible guest
/// vendor, truncated for AMD/Hygon; a vendor that is neither (here
/// "KVMKVMKVM") is Intel-compatible only since fd706c9b1674 (6.9,
/// `guest_cpuid_is_intel_compatible` = !AMD/Hygon): unmodelled, not guessed.
#[test]
fn tsc_aux_high_bits_by_guest_vendor() {
    for (name, vendor, want) in [
        (
            "GenuineIntel",
            Some((0x756e_6547, 0x4965_6e69, 0x6c65_746e)),
            GP,
        ),
        (
            "AuthenticAMD",
            Some((0x6874_7541, 0x6974_6e65, 0x444d_4163)),
            OK,
        ),
        (
            "KVMKVMKVM",
            Some((0x4b4d_564b, 0x0000_004d, 0x564b_4d56)),
            None,
        ),
    ] {
        let mut h = header("kvm_intel", false, 0);
        if let Some((b, d, c)) = vendor {
            h.vm.cpuid[0].ebx = b;
            h.vm.cpuid[0].edx = d;
            h.vm.cpuid[0].ecx = c;
        }
        let e = engine("kvm-6.18", Vendor::Intel, &h);
        let p = e.msr_write(0, 0xc000_0103, 1 << 32, H);
        assert_eq!(p.outcome, want, "{name}");
        // The low half alone is accepted whatever the vendor.
        let p = e.msr_write(0, 0xc000_0103, 7, H);
        assert_eq!(p.outcome, OK, "{name}");
    }
}
