//! What a VMM's own accesses (`Origin::Host`: KVM_SET_MSRS / KVM_GET_MSRS
//! entries a wrap or attach recording's ioctl tap saw) and configuration
//! ioctls teach the model about a trace that starts from unknown state.
//!
//! Recordings of other VMMs start with every `U_*` bit set (the VMM configured
//! the vCPU before anyone watched). The tap shows what the VMM then did, and
//! KVM stores some of it verbatim:
//! - `KVM_X86_SETUP_MCE` (x86.c `kvm_vcpu_ioctl_x86_setup_mce`) sets MCG_CAP,
//!   MCG_CTL to all 1s when MCG_CTL_P, and every bank's MCi_CTL to all 1s;
//! - `set_msr_mce` stores an accepted MCi_CTL/STATUS/ADDR/MISC write as
//!   written, and `get_msr_mce` returns it: after a write (or a read) the
//!   model knows that register although the other banks stay unknown
//!   (`VcpuState::mce_known`, one bit per MCi_* offset).
//!
//! - host accesses of MSRs no other handler decides, from x86.c
//!   `kvm_set_msr_common`/`kvm_get_msr_common` (6.18, same in 5.10): host
//!   writes of IA32_TSC (`kvm_synchronize_tsc`), VM_HSAVE_PA (dropped;
//!   `svm_set_msr` skips `page_address_valid` for the host), TSC_DEADLINE
//!   (`kvm_set_lapic_tscdeadline_msr`, no failure path) and SMI_COUNT
//!   (host only, stored) are accepted; a host read of SMI_COUNT returns what
//!   was written when no SMI can enter (`KVM_CAP_X86_SMM` 0), and of
//!   TSC_DEADLINE 0 after a 0 was written (`kvm_get_lapic_tscdeadline_msr`:
//!   0 outside TSC-deadline mode, and the deadline is zeroed on expiry and on a
//!   timer-mode change, `apic_update_lvtt`);
//! - host writes of MISC_ENABLE and the APIC base do not depend on the old
//!   value where `needs_unknown` would wait for it: the host skips the
//!   read-only bits and the mode-transition checks (`kvm_set_msr_common`,
//!   `kvm_apic_set_base`), and the MWAIT toggle check needs the old value
//!   only with MISC_ENABLE_NO_MWAIT disabled and no SSE3.
//!
//! Values only hardware or time knows (TSC, kvmclock) are never predicted.

use kvmtrace_format::TraceHeader;

use super::msr::{R, Store};
use crate::engine::Engine;
use crate::rules::Rule;
use crate::state::{
    LEAF_1, LEAF_8000_0008, MAX_MCE_BANKS, MCG_CTL_P, U_ALL, U_APIC_BASE, U_BANKS, U_MCG_CAP,
    U_MCG_CTL, VcpuState,
};

type RuleRef = &'static Rule;

macro_rules! hostrules {
    ($($id:ident = $name:literal, $rel:literal;)+) => {
        $(pub const $id: Rule = Rule { name: $name, section: "§0", release: $rel };)+
    };
}

hostrules! {
    HOST_TSC_WRITE = "host IA32_TSC write accepted (kvm_set_msr_common: kvm_synchronize_tsc)", "all";
    HOST_HSAVE_WRITE = "host VM_HSAVE_PA write accepted (kvm_set_msr_common; svm_set_msr: no page_address_valid for the host)", "all";
    HOST_TSC_DEADLINE_WRITE = "host TSC_DEADLINE write accepted (kvm_set_msr_common: kvm_set_lapic_tscdeadline_msr)", "all";
    HOST_TSC_DEADLINE_ZERO = "TSC_DEADLINE reads 0 after a 0 write (kvm_get_lapic_tscdeadline_msr; zeroed on expiry and mode change)", "all";
    HOST_SMI_COUNT_WRITE = "host SMI_COUNT write stored (kvm_set_msr_common: host only)", "all";
    HOST_SMI_COUNT_READ = "SMI_COUNT holds the value stored: no SMM (KVM_CAP_X86_SMM 0), no SMI (kvm_get_msr_common)", "all";
}

/// What the trace's header says about the VMM's accesses the model can rely on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostTrace {
    /// The ioctl tap saw the VMM's configuration and MSR ioctls from its start
    /// (`ConfigSource::VmmIoctls`): its host MSR writes are all in the trace.
    pub vmm_msrs_seen: bool,
    /// `KVM_CAP_X86_SMM` is 0: no SMI ever enters SMM, so SMI_COUNT only
    /// changes by a host write.
    pub no_smm: bool,
}

impl HostTrace {
    pub fn of(header: &TraceHeader) -> HostTrace {
        const KVM_CAP_X86_SMM: u32 = 117;
        HostTrace {
            vmm_msrs_seen: header.config_source == kvmtrace_format::ConfigSource::VmmIoctls,
            no_smm: header
                .host
                .caps
                .iter()
                .any(|&(c, v)| c == KVM_CAP_X86_SMM && v == 0),
        }
    }
}

/// Host-register values the model knows (`VcpuState::host`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostRegs {
    /// `vcpu->arch.smi_count` where known.
    pub smi_count: Option<u64>,
    /// The last TSC_DEADLINE write the trace showed stored 0 (or was ignored
    /// outside TSC-deadline mode): the read returns 0.
    pub tsc_deadline_zero: bool,
}

/// The MSRs [`Engine::host_access`] can decide (the replay fast path).
pub(crate) const fn handles(index: u32) -> bool {
    matches!(index, 0x10 | 0x34 | 0x6e0 | 0xc001_0117)
}

/// The MCi_* offset of `index` (MC0_CTL = 0x400, 4 registers per bank).
const fn bank_offset(index: u32) -> Option<usize> {
    if index >= 0x400 && index < 0x400 + 4 * MAX_MCE_BANKS as u32 {
        Some((index - 0x400) as usize)
    } else {
        None
    }
}

/// A successful `KVM_X86_SETUP_MCE` (the recording's `SetupMce` event, already
/// folded into `v`): MCG_CAP, MCG_CTL (with MCG_CTL_P) and each MCi_CTL are
/// known from now on.
pub(crate) fn on_setup_mce(v: &mut VcpuState) {
    let banks = (v.mcg_cap & 0xff) as usize;
    if banks == 0 || banks > MAX_MCE_BANKS {
        return;
    }
    v.unknown &= !U_MCG_CAP;
    if v.mcg_cap & MCG_CTL_P != 0 {
        v.unknown &= !U_MCG_CTL;
    }
    for b in 0..banks {
        v.mce_known |= 1u128 << (b * 4);
    }
}

/// An accepted write stored `MCi_*` register `off` verbatim (`set_msr_mce`).
pub(crate) fn on_bank_store(v: &mut VcpuState, off: usize) {
    if off < 4 * MAX_MCE_BANKS {
        v.mce_known |= 1u128 << off;
    }
}

/// A read the kernel answered teaches an `MCi_*` register while the banks are
/// unknown (the teaching read itself is unmodeled, issue 6 item 5).
pub(crate) fn teach(v: &mut VcpuState, index: u32, value: u64) {
    match index {
        0x34 => v.host.smi_count = Some(value),
        0x6e0 => v.host.tsc_deadline_zero = value == 0,
        _ => {}
    }
    if v.unknown & U_BANKS == 0 || v.unknown & U_MCG_CAP != 0 {
        return;
    }
    if let Some(off) = bank_offset(index)
        && off / 4 < (v.mcg_cap & 0xff) as usize
    {
        v.mce_banks[off] = value;
        v.mce_known |= 1u128 << off;
    }
}

/// Whether an access `needs_unknown` would leave unmodeled is decided by
/// state the trace did show: a read of an `MCi_*` register known per
/// register (`get_msr_mce` returns `mce_banks[offset]`) with MCG_CAP known.
/// For a host write of MISC_ENABLE or the APIC base, the handler decides from
/// the value and the guest CPUID alone (see the module comment).
pub(crate) fn known_despite_unknown(
    v: &VcpuState,
    index: u32,
    write: Option<u64>,
    host: bool,
    misc_enable_quirk: bool,
) -> bool {
    let leaves = v.cpuid.leaves;
    match (index, write) {
        (0x1a0, Some(_)) if host => leaves & LEAF_1 != 0 && (misc_enable_quirk || v.cpuid.sse3),
        (0x1b, Some(_)) if host => leaves & (LEAF_1 | LEAF_8000_0008) == LEAF_1 | LEAF_8000_0008,
        (_, None) if v.unknown & U_MCG_CAP == 0 => match bank_offset(index) {
            Some(off) => v.mce_known & (1u128 << off) != 0,
            None => false,
        },
        _ => false,
    }
}

/// An accepted write (any origin) the trace showed, folded after the model's
/// own store: what [`HostRegs`] tracks.
pub(crate) fn on_write(v: &mut VcpuState, index: u32, value: u64) {
    match index {
        0x34 => v.host.smi_count = Some(value),
        0x6e0 => v.host.tsc_deadline_zero = value == 0,
        _ => {}
    }
}

impl Engine {
    /// Host accesses no other handler decided (the last handler tried).
    pub(crate) fn host_access(
        &self,
        v: &VcpuState,
        index: u32,
        write: Option<u64>,
        host: bool,
    ) -> Option<(R, RuleRef, Store)> {
        if !host {
            return None;
        }
        let ok = |rule| Some((R::Ok(0), rule, Store::None));
        match (index, write) {
            (0x10, Some(_)) => ok(&HOST_TSC_WRITE),
            (0xc001_0117, Some(_)) => ok(&HOST_HSAVE_WRITE),
            (0x6e0, Some(_)) => ok(&HOST_TSC_DEADLINE_WRITE),
            (0x6e0, None) if v.host.tsc_deadline_zero => {
                Some((R::Ok(0), &HOST_TSC_DEADLINE_ZERO, Store::None))
            }
            (0x34, Some(_)) => ok(&HOST_SMI_COUNT_WRITE),
            (0x34, None) if self.host_trace.no_smm => v
                .host
                .smi_count
                .map(|x| (R::Ok(x), &HOST_SMI_COUNT_READ, Store::None)),
            _ => None,
        }
    }
}

/// A system reset the trace may not show (`model::lapic`, BSP INIT in a
/// recording of another VMM): the VMM may then set any state with `KVM_SET_*`.
/// Where the ioctl tap saw its MSR ioctls (`ConfigSource::VmmIoctls`), every
/// MSR it sets is a host `MsrWrite` in the trace, so MSR-held state stays
/// known (here and the VM-wide wall clock, `model::lapic`); the APIC base
/// (also set by `KVM_SET_SREGS`, `__set_sregs`) does not.
pub(crate) fn forget_at_system_reset(v: &mut VcpuState, vmm_msrs_seen: bool) {
    if vmm_msrs_seen {
        v.unknown |= U_APIC_BASE;
    } else {
        v.unknown = U_ALL;
        v.mce_known = 0;
        v.host = HostRegs::default();
    }
}

#[cfg(test)]
mod tests {
    use kvmtrace_format::{
        CaptureMode, ConfigSource, DecidedBy, Event, MsrOutcome, Origin, TraceHeader,
    };

    use crate::engine::Engine;
    use crate::model::tests::{engine, header, rec};
    use crate::policy::Vendor;

    const H: Origin = Origin::Host;
    const G: Origin = Origin::Guest;

    /// A wrap recording: external capture, the tap saw the VMM's ioctls.
    fn wrap(tap: bool, smm: i64) -> TraceHeader {
        let mut h = header("kvm_intel", false, 1);
        h.capture.mode = CaptureMode::External;
        h.config_source = if tap {
            ConfigSource::VmmIoctls
        } else {
            ConfigSource::Unknown { why: "test".into() }
        };
        h.host.caps.push((117, smm));
        h
    }

    /// Fold a recorded access with `outcome`.
    fn fold(e: &mut Engine, index: u32, value: Option<u64>, origin: Origin, outcome: MsrOutcome) {
        let ev = Event::msr_access(index, value, origin, outcome, DecidedBy::Kernel, None);
        e.apply(&rec(0, ev));
    }

    #[test]
    fn setup_mce_and_host_writes_make_banks_known() {
        let mut e = engine("kvm-6.18", Vendor::Intel, &wrap(true, 0));
        // External: MCE state unknown until the tap's SETUP_MCE.
        assert_eq!(e.msr_write(0, 0x401, 0, H).outcome, None);
        e.apply(&rec(0, Event::SetupMce { mcg_cap: 0x10a }));
        // set_msr_mce: a host MCi_STATUS write is accepted.
        assert_eq!(e.msr_write(0, 0x401, 0, H).outcome, Some(MsrOutcome::Ok));
        assert_eq!(
            e.msr_read(0, 0x179, H).outcome,
            Some(MsrOutcome::Value(0x10a))
        );
        // MCi_CTL is all 1s after SETUP_MCE; MCi_STATUS is not known yet.
        assert_eq!(e.msr_read(0, 0x400, H).outcome, Some(MsrOutcome::Value(!0)));
        assert_eq!(e.msr_read(0, 0x401, G).outcome, None);
        fold(&mut e, 0x401, Some(0), H, MsrOutcome::Ok);
        assert_eq!(e.msr_read(0, 0x401, H).outcome, Some(MsrOutcome::Value(0)));
        assert_eq!(e.msr_read(0, 0x401, G).outcome, Some(MsrOutcome::Value(0)));
        // A read teaches a register.
        assert_eq!(e.msr_read(0, 0x402, H).outcome, None);
        fold(&mut e, 0x402, None, H, MsrOutcome::Value(7));
        assert_eq!(e.msr_read(0, 0x402, H).outcome, Some(MsrOutcome::Value(7)));
        // Another vCPU saw neither.
        assert_eq!(e.msr_read(1, 0x401, H).outcome, None);
    }

    #[test]
    fn system_reset_forgets_msr_state_only_without_the_tap() {
        for tap in [true, false] {
            let mut v = crate::state::VcpuState::created(0, 0, kvmtrace_format::Irqchip::Kernel);
            v.mce_known = 1;
            v.host.smi_count = Some(0);
            super::forget_at_system_reset(&mut v, tap);
            assert_eq!(
                v.unknown,
                if tap {
                    crate::state::U_APIC_BASE
                } else {
                    crate::state::U_ALL
                }
            );
            assert_eq!(v.mce_known, if tap { 1 } else { 0 }, "tap {tap}");
            assert_eq!(v.host.smi_count.is_some(), tap, "tap {tap}");
        }
    }

    #[test]
    fn host_only_registers() {
        for (smm, read_known) in [(0, true), (1, false)] {
            let mut e = engine("kvm-6.18", Vendor::Pvm, &wrap(true, smm));
            for (i, x) in [(0x10, 5), (0xc001_0117, 0x1000), (0x6e0, 0), (0x34, 3)] {
                assert_eq!(
                    e.msr_write(0, i, x, H).outcome,
                    Some(MsrOutcome::Ok),
                    "{i:#x}"
                );
                // Guest accesses are left to other rules (a guest
                // TSC_DEADLINE write never fails: model::lapic).
                let guest = (i == 0x6e0).then_some(MsrOutcome::Ok);
                assert_eq!(e.msr_write(0, i, x, G).outcome, guest, "{i:#x}");
            }
            assert_eq!(e.msr_read(0, 0x34, H).outcome, None);
            assert_eq!(e.msr_read(0, 0x6e0, H).outcome, None);
            fold(&mut e, 0x34, Some(3), H, MsrOutcome::Ok);
            fold(&mut e, 0x6e0, Some(0), H, MsrOutcome::Ok);
            let want = read_known.then_some(MsrOutcome::Value(3));
            assert_eq!(e.msr_read(0, 0x34, H).outcome, want, "SMM cap {smm}");
            assert_eq!(e.msr_read(0, 0x6e0, H).outcome, Some(MsrOutcome::Value(0)));
            // No in-kernel LAPIC in this header: kvm_get_lapic_tscdeadline_msr
            // returns 0 to the guest (model::lapic).
            assert_eq!(e.msr_read(0, 0x6e0, G).outcome, Some(MsrOutcome::Value(0)));
            // A guest's deadline makes the value unknown again.
            fold(&mut e, 0x6e0, Some(99), G, MsrOutcome::Ok);
            assert_eq!(e.msr_read(0, 0x6e0, H).outcome, None);
            // The TSC is time: never predicted.
            assert_eq!(e.msr_read(0, 0x10, H).outcome, None);
        }
    }

    #[test]
    fn host_writes_that_need_no_old_value() {
        let mut e = engine("kvm-6.18", Vendor::Intel, &wrap(true, 0));
        let mut entries = header("kvm_intel", false, 1).vm.cpuid;
        entries.push(kvmtrace_format::CpuidEntry {
            function: 0x8000_0008,
            eax: 39,
            ..Default::default()
        });
        e.apply(&rec(0, Event::Cpuid { entries }));
        // MISC_ENABLE and the APIC base are unknown in a wrap recording.
        assert_eq!(e.msr_read(0, 0x1a0, H).outcome, None);
        // The quirk MISC_ENABLE_NO_MWAIT is enabled: any host value is stored.
        assert_eq!(e.msr_write(0, 0x1a0, 1, H).outcome, Some(MsrOutcome::Ok));
        // A guest write still needs the old value (read-only bits).
        assert_eq!(e.msr_write(0, 0x1a0, 1, G).outcome, None);
        // The host skips the mode-transition checks: valid values are accepted,
        // reserved bits refused, whatever the old mode.
        assert_eq!(
            e.msr_write(0, 0x1b, 0xfee0_0900, H).outcome,
            Some(MsrOutcome::Ok)
        );
        assert_eq!(
            e.msr_write(0, 0x1b, 0xfee0_0901, H).outcome,
            Some(MsrOutcome::InjectGp)
        );
        assert_eq!(e.msr_write(0, 0x1b, 0xfee0_0900, G).outcome, None);
    }
}
