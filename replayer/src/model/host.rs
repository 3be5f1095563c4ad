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

use kvmtrace_format::{TraceHeader, VmmSet};

use super::msr::{R, Store};
use crate::engine::Engine;
use crate::rules::Rule;
use crate::state::{
    LEAF_1, LEAF_8000_0008, MAX_MCE_BANKS, MCG_CTL_P, U_ALL, U_APIC_BASE, U_BANKS, U_MCG_CAP,
    U_MCG_CTL, U_MCG_STATUS, VcpuState,
};

type RuleRef = &'static Rule;

macro_rules! hostrules {
    ($($id:ident = $name:literal, $rel:literal;)+) => {
        $(pub const $id: Rule = Rule { name: $name, section: "§0", release: $rel };)+
    };
}

hostrules! {
    HOST_TSX_CTRL_VMX = "host TSX_CTRL write of RTM_DISABLE/CPUID_CLEAR accepted (vmx_set_msr: no CPUID check for the host; the user-return MSR exists where KVM advertises TSX_CTRL)", "all";
    HOST_TSX_CTRL_VMX_BITS = "host TSX_CTRL write with bits other than RTM_DISABLE/CPUID_CLEAR refused (vmx_set_msr)", "all";
    HOST_VIRT_SPEC_CTRL_VMX = "host VIRT_SPEC_CTRL access refused on VMX (no vmx/x86.c case; vmx_has_emulated_msr: AMD only, never advertised, so 6.12's suppression does not apply)", "all";
    HOST_VIRT_SPEC_CTRL_SVM = "host VIRT_SPEC_CTRL write of 0 or SSBD accepted (svm_set_msr: no CPUID check for the host)", "all";
    HOST_VIRT_SPEC_CTRL_SVM_BITS = "host VIRT_SPEC_CTRL write with bits other than SSBD refused (svm_set_msr)", "all";
    HOST_TSC_WRITE = "host IA32_TSC write accepted (kvm_set_msr_common: kvm_synchronize_tsc)", "all";
    HOST_HSAVE_WRITE = "host VM_HSAVE_PA write accepted (kvm_set_msr_common; svm_set_msr: no page_address_valid for the host)", "all";
    HOST_TSC_DEADLINE_WRITE = "host TSC_DEADLINE write accepted (kvm_set_msr_common: kvm_set_lapic_tscdeadline_msr)", "all";
    HOST_TSC_DEADLINE_ZERO = "TSC_DEADLINE reads 0 after a 0 write or from vCPU creation with the VMM tapped from its start (kvm_get_lapic_tscdeadline_msr; zeroed on expiry and mode change)", "all";
    HOST_SMI_COUNT_WRITE = "host SMI_COUNT write stored (kvm_set_msr_common: host only)", "all";
    HOST_SMI_COUNT_READ = "SMI_COUNT holds the value stored (0 from vCPU creation with the VMM tapped from its start): no SMM (KVM_CAP_X86_SMM 0), no SMI (kvm_get_msr_common)", "all";
}

/// A host read, or host write of 0, of an MSR the recording host advertises
/// (`KVM_GET_MSR_INDEX_LIST`) whose handler fails, under a policy without
/// the 6.12 suppression in `kvm_do_msr_access` (64a5d7a1091f for to-be-saved
/// MSRs, 44dd0f5732b4 for "emulated" ones such as FEAT_CTL where no vendor
/// handler exists): refused. The switch names the change, so the report
/// cites it ("before 64a5d7a1091f ... (6.12)").
pub const HOST_ZERO_NOT_SUPPRESSED: Rule = Rule {
    name: "host_zero_write_advertised=false: host write of 0 (or read) of an advertised MSR its handler refuses is refused",
    section: "§0",
    release: "≤6.11",
};

/// What the trace's header says about the VMM's accesses the model can rely on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostTrace {
    /// The recording host's `KVM_GET_MSR_INDEX_LIST`, sorted: which MSRs the
    /// 6.12 host-access suppression covers there (`HOST_ZERO_NOT_SUPPRESSED`).
    pub advertised: std::sync::Arc<[u32]>,
    /// The ioctl tap saw the VMM's configuration and MSR ioctls from its start
    /// (`ConfigSource::VmmIoctls`): its host MSR writes are all in the trace.
    pub vmm_msrs_seen: bool,
    /// `KVM_CAP_X86_SMM` is 0: no SMI ever enters SMM, so SMI_COUNT only
    /// changes by a host write.
    pub no_smm: bool,
    /// kvmtrace's own VMM configured the VM (`ConfigSource::Recorder`): it
    /// never enables `KVM_CAP_ENFORCE_PV_FEATURE_CPUID`, so `guest_pv_has`
    /// is true for every KVM PV feature whatever the guest CPUID.
    pub pv_unenforced: bool,
}

impl HostTrace {
    pub fn of(header: &TraceHeader) -> HostTrace {
        const KVM_CAP_X86_SMM: u32 = 117;
        let mut advertised = header.host.msr_index_list.clone();
        advertised.sort_unstable();
        advertised.dedup();
        HostTrace {
            advertised: advertised.into(),
            vmm_msrs_seen: header.config_source == kvmtrace_format::ConfigSource::VmmIoctls,
            pv_unenforced: header.config_source == kvmtrace_format::ConfigSource::Recorder,
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

impl HostRegs {
    /// At `KVM_CREATE_VCPU`: `smi_count` 0 (the vCPU is zero-allocated, and
    /// INIT/RESET do not touch it), the TSC deadline 0 (`kvm_create_lapic`;
    /// and `kvm_get_lapic_tscdeadline_msr` returns 0 outside TSC-deadline mode).
    pub(crate) fn at_creation() -> HostRegs {
        HostRegs {
            smi_count: Some(0),
            tsc_deadline_zero: true,
        }
    }
}

impl HostTrace {
    /// The recording host advertised `index` (`KVM_GET_MSR_INDEX_LIST`).
    pub fn advertises(&self, index: u32) -> bool {
        self.advertised.binary_search(&index).is_ok()
    }
}

/// The rule for a host access a handler refused (`R::Unknown`, the entry
/// fails): where the access is a read or a write of 0 of an MSR the
/// recording host advertises, and the policy lacks the 6.12 suppression, the
/// refusal is that change's absence; otherwise the handler's own rule.
pub(crate) fn host_refusal_rule(
    trace: &HostTrace,
    suppression: bool,
    index: u32,
    write: Option<u64>,
    handler: RuleRef,
) -> RuleRef {
    if !suppression && write.unwrap_or(0) == 0 && trace.advertises(index) {
        &HOST_ZERO_NOT_SUPPRESSED
    } else {
        handler
    }
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
            // The speculation-control MSRs QEMU writes (0) and reads at every
            // vCPU reset, by vendor (the same in 5.10 and 6.18); pvm's own
            // answer is the vendor table's (`model::pmu`, HostSpecMsrsZero).
            _ if self.policy.switches.ignore_msrs => None,
            (0x122, Some(d)) if self.policy.vendor == crate::policy::Vendor::Intel => {
                if d & !3 != 0 {
                    Some((R::Fault, &HOST_TSX_CTRL_VMX_BITS, Store::None))
                } else if self.host_trace.advertises(0x122) {
                    ok(&HOST_TSX_CTRL_VMX)
                } else {
                    None
                }
            }
            (0xc001_011f, _) if self.policy.vendor == crate::policy::Vendor::Intel => {
                Some((R::Fault, &HOST_VIRT_SPEC_CTRL_VMX, Store::None))
            }
            (0xc001_011f, Some(d)) if self.policy.vendor == crate::policy::Vendor::Amd => {
                if d & !4 != 0 {
                    Some((R::Fault, &HOST_VIRT_SPEC_CTRL_SVM_BITS, Store::None))
                } else {
                    ok(&HOST_VIRT_SPEC_CTRL_SVM)
                }
            }
            _ => None,
        }
    }
}

// ---- The VMM's vCPU state ioctls (format 1.3 `VmmState`, ioctl tap) ----
//
// Folded as the kernel applies them, only where it succeeded (`result` 0;
// a refused ioctl changed nothing the model tracks, except as noted):
// - `KVM_SET_SREGS`/`SREGS2` (x86.c `__set_sregs_common`): the APIC base goes
//   through `kvm_apic_set_base(vcpu, apic_base, true)` (host-initiated: the
//   reserved-bit and invalid-mode checks apply, the x2APIC -> xAPIC and
//   disabled -> x2APIC transition checks do not; an illegal value fails the
//   ioctl with -EINVAL before anything is set) and CR0 is set as passed.
//   QEMU does this at every vCPU reset (0xfee00900 for the BSP), so a guest's
//   x2APIC mode ends there. `KVM_SET_SREGS2` can fail after the APIC base was
//   set (`__set_sregs2`: invalid PDPTRs): then the APIC base is unknown.
// - `KVM_SET_MP_STATE` (`kvm_arch_vcpu_ioctl_set_mpstate`): stored, except
//   SIPI_RECEIVED, which becomes INIT_RECEIVED with a SIPI pending.
// - `KVM_SET_LAPIC` (lapic.c `kvm_apic_set_state`): the page is copied into
//   the APIC; in x2APIC mode the registers the model reads (SVR, ESR, the
//   LVTs, TDCR) are then the page's; TMICT only where the timer mode's
//   TSC-deadline-ness is unchanged (`apic_update_lvtt` zeroes it otherwise);
//   the version is recomputed (`kvm_apic_set_version`, kept); the ICR (whose
//   x2APIC page layout differs across releases) becomes unknown. Outside
//   x2APIC mode the registers stay unknown (MMIO is not seen).
// - `KVM_X86_SET_MCE` (`kvm_vcpu_ioctl_x86_set_mce`): the bank's STATUS,
//   ADDR, MISC and MCG_STATUS may change (or a #MC/triple fault follows):
//   they become unknown until a read teaches them.
// - `KVM_SET_REGS` and `KVM_SET_VCPU_EVENTS`: recorded; no register or
//   event the rules read (RIP, RFLAGS, pending exceptions and NMIs).

impl Engine {
    /// Fold a `VmmState` event (`Event::VmmState`) into `vcpu`'s state.
    pub(crate) fn apply_vmm_state(&mut self, vcpu: u32, set: &VmmSet, result: i32) {
        if result != 0 {
            if let VmmSet::Sregs { sregs2: true, .. } = set
                && let Some(v) = self.vcpu_mut(vcpu)
            {
                // __set_sregs_common set EFER before the PDPTR check failed.
                super::common::on_efer_store(v, None);
                v.unknown |= U_APIC_BASE;
                v.lapic.forget_all();
            }
            return;
        }
        // Read before the fold: the LVTT the model knew (TMICT rule).
        let old_lvtt = match self.x2apic_read(self.vcpu_state(vcpu), 0x832) {
            Some((R::Ok(x), _)) => Some(x),
            _ => None,
        };
        let Some(v) = self.vcpu_mut(vcpu) else {
            return;
        };
        match *set {
            VmmSet::Sregs {
                apic_base,
                cr0,
                efer,
                ..
            } => {
                super::common::on_set_sregs(v, efer);
                let old = if v.unknown & U_APIC_BASE == 0 {
                    v.apic_base
                } else {
                    0
                };
                super::lapic::on_apic_base(v, old, apic_base);
                v.apic_base = apic_base;
                v.unknown &= !U_APIC_BASE;
                v.cr0 = cr0;
            }
            VmmSet::MpState { mp_state } => {
                // KVM_MP_STATE_SIPI_RECEIVED -> INIT_RECEIVED + pending SIPI.
                v.mp_state = if mp_state == 4 { 2 } else { mp_state };
            }
            VmmSet::Lapic(page) => {
                let x2 = v.unknown & U_APIC_BASE == 0 && v.x2apic_mode();
                v.lapic.forget_all();
                // kvm_apic_set_state copies the page: ESR in either mode.
                v.lapic.set_esr(page.esr.into());
                if x2 {
                    // The x2APIC ID after the page (`kvm_apic_state_fixup`):
                    // with the x2APIC API's 32-bit IDs the page's ID must be
                    // the vcpu_id; without, 5.10 stores the page's ID >> 24
                    // and later releases keep the vcpu_id. An xAPIC-layout
                    // ID of the vcpu_id (or 0 on vCPU 0) gives the vcpu_id
                    // either way; any other leaves it unknown.
                    let me = v.id;
                    v.id_known = v.id_known
                        && ((me < 256 && page.id == me << 24) || (me == 0 && page.id == 0));
                }
                if x2 {
                    for (off, val) in page.regs() {
                        let index = 0x800 + u32::from(off >> 4);
                        match off {
                            0xf0 | 0x280 | 0x2f0 | 0x320..=0x370 | 0x3e0 => {
                                super::lapic::teach(v, index, u64::from(val))
                            }
                            0x380 => {
                                let deadline = |x: u64| (x >> 17) & 3 == 2;
                                if old_lvtt
                                    .is_some_and(|o| deadline(o) == deadline(page.lvt_timer.into()))
                                {
                                    super::lapic::teach(v, index, u64::from(val));
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
            VmmSet::Mce { bank, .. } => forget_mce_bank(v, usize::from(bank)),
            VmmSet::Regs { .. } | VmmSet::VcpuEvents(_) => {}
        }
    }
}

// ---- What the kernel answers a VMM state ioctl (the `result` of `VmmState`) ----
//
// Read in 5.10 and 6.18 x86.c/lapic.c (the same failure paths in both unless
// said): every failure below is -EINVAL.
// - `KVM_SET_REGS` (`kvm_arch_vcpu_ioctl_set_regs`): no failure path but a
//   guest with protected state (SEV-ES since 5.11, TDX since 6.16).
// - `KVM_SET_SREGS`/`SREGS2` (`__set_sregs_common`): `kvm_valid_sregs` /
//   `kvm_is_valid_sregs` (EFER.LME with CR0.PG needs CR4.PAE and EFER.LMA;
//   otherwise EFER.LMA and CS.L must be clear; CR4 reserved bits from the
//   guest CPUID; 5.13+: CR3 legal in long mode; later releases also CR0),
//   then `kvm_set_apic_base`/`kvm_apic_set_base(.., host_initiated = true)`
//   (reserved bits, EXTD without EN). The model decides the APIC base as a
//   host write of MSR 0x1b, predicts a failure of either check, and a success
//   only for `KVM_SET_SREGS` outside long mode with CR4 in bits 0-10 (never
//   reserved) and a CR0 every release accepts; `KVM_SET_SREGS2` also fails on
//   its `flags` (PDPTRS_VALID outside PAE paging), which the trace does not
//   hold, so its success stays unmodelled.
// - `KVM_SET_MP_STATE` (`kvm_arch_vcpu_ioctl_set_mpstate`): without an
//   in-kernel LAPIC only RUNNABLE; INIT_RECEIVED/SIPI_RECEIVED fail while
//   INIT is latched (SMM, VMX root, GIF=0), decided only on vendor pvm with
//   `KVM_CAP_X86_SMM` 0; states beyond SIPI_RECEIVED (AP_RESET_HOLD, s390's)
//   are validated differently across releases (not read): unmodelled.
// - `KVM_SET_VCPU_EVENTS` (`kvm_vcpu_ioctl_x86_set_vcpu_events`): unknown
//   flags; TRIPLE_FAULT (0x20) before 6.0 (ed2351174e38) is one, from 6.0 it
//   needs `KVM_CAP_X86_TRIPLE_FAULT_EVENT` enabled and PAYLOAD (0x10)
//   `KVM_CAP_EXCEPTION_PAYLOAD` (the `CapEnabled` events of a format 1.4
//   trace: the section on KVM_ENABLE_CAP below; unmodelled without them);
//   an injected (with PAYLOAD also a pending) exception with a vector above
//   31 or NMI (2).
// - `KVM_SET_LAPIC` (`kvm_vcpu_ioctl_set_lapic`, `kvm_apic_state_fixup`): no
//   in-kernel LAPIC; in x2APIC mode with the x2APIC API's 32-bit IDs
//   (`KVM_CAP_X2APIC_API`, not in the trace) an ID other than the vcpu_id. So
//   a page whose ID is the vcpu_id (or any page in xAPIC mode) is accepted.
// - `KVM_X86_SET_MCE` (`kvm_vcpu_ioctl_x86_set_mce`): a bank at or beyond
//   MCG_CAP's count, or a STATUS without VAL (bit 63); otherwise 0 (the
//   error may be dropped, or end in a triple fault, never an ioctl error).

const EINVAL: i32 = -22;

hostrules! {
    VMM_REGS_OK = "KVM_SET_REGS accepted (kvm_arch_vcpu_ioctl_set_regs: fails only for a guest with protected state)", "all";
    VMM_SREGS_APIC_BASE = "KVM_SET_SREGS refused: illegal APIC base (kvm_apic_set_base, host_initiated: reserved bits or EXTD without EN)", "all";
    VMM_SREGS_LONG_MODE = "KVM_SET_SREGS refused: EFER.LME/LMA, CR0.PG, CR4.PAE and CS.L inconsistent (kvm_is_valid_sregs)", "all";
    VMM_SREGS_OK = "KVM_SET_SREGS accepted (kvm_is_valid_sregs outside long mode, CR4 bits 0-10 only, legal APIC base)", "all";
    VMM_MP_STATE_NO_LAPIC = "KVM_SET_MP_STATE refused: only RUNNABLE without an in-kernel LAPIC (kvm_arch_vcpu_ioctl_set_mpstate)", "all";
    VMM_MP_STATE_OK = "KVM_SET_MP_STATE accepted (kvm_arch_vcpu_ioctl_set_mpstate: a valid state, INIT not latched)", "all";
    VMM_EVENTS_FLAGS = "KVM_SET_VCPU_EVENTS refused: unknown flags (kvm_vcpu_ioctl_x86_set_vcpu_events)", "all";
    VMM_EVENTS_VECTOR = "KVM_SET_VCPU_EVENTS refused: injected exception vector > 31 or NMI (kvm_vcpu_ioctl_x86_set_vcpu_events)", "all";
    VMM_EVENTS_OK = "KVM_SET_VCPU_EVENTS accepted (kvm_vcpu_ioctl_x86_set_vcpu_events: known flags, valid vector)", "all";
    VMM_LAPIC_NO_LAPIC = "KVM_SET_LAPIC refused: no in-kernel LAPIC (kvm_arch_vcpu_ioctl)", "all";
    VMM_LAPIC_OK = "KVM_SET_LAPIC accepted (kvm_apic_state_fixup: xAPIC mode, or the page's ID is the vcpu_id)", "all";
    VMM_MCE_BANK = "KVM_X86_SET_MCE refused: bank beyond MCG_CAP's count or STATUS without VAL (kvm_vcpu_ioctl_x86_set_mce)", "all";
    VMM_MCE_OK = "KVM_X86_SET_MCE accepted (kvm_vcpu_ioctl_x86_set_mce)", "all";
}

/// Before 6.0 (ed2351174e38) `KVM_VCPUEVENT_VALID_TRIPLE_FAULT` is an unknown
/// flag: the switch names the change, so the report cites it.
pub const VMM_EVENTS_NO_TRIPLE_FAULT: Rule = Rule {
    name: "vcpu_events_triple_fault=false: KVM_SET_VCPU_EVENTS with KVM_VCPUEVENT_VALID_TRIPLE_FAULT (0x20) refused, an unknown flag (kvm_vcpu_ioctl_x86_set_vcpu_events); a VMM sets it only after KVM_CAP_X86_TRIPLE_FAULT_EVENT (6.0+) is there, so on this kernel it would not have sent it: the missing capability is the difference",
    section: "§0",
    release: "≤5.19",
};

/// `KVM_VCPUEVENT_VALID_*` before 6.0, and the TRIPLE_FAULT flag 6.0 added.
const EVENTS_VALID_5_10: u32 = 0x1f;
const EVENTS_TRIPLE_FAULT: u32 = 0x20;

impl Engine {
    /// What the kernel answers `set` on `vcpu` under this policy: `Some(0)`
    /// or `Some(-errno)`, with the rule; `None` where the answer depends on
    /// what the trace does not hold (the module comment above).
    pub(crate) fn vmm_state_result(&self, vcpu: u32, set: &VmmSet) -> (Option<i32>, RuleRef) {
        let unmodeled = (None, &crate::rules::UNMODELED);
        if vcpu as usize >= crate::state::MAX_VCPUS {
            return unmodeled;
        }
        let v = self.vcpu_state(vcpu);
        let vendor = self.policy.vendor;
        // A success needs a guest without protected state: no SEV-ES on
        // vendor amd, no TDX on vendor intel from 6.16, none on pvm.
        let unprotected = match vendor {
            crate::policy::Vendor::Pvm => true,
            crate::policy::Vendor::Intel => {
                crate::presets::parse_release(&self.policy.release).is_some_and(|r| r < (6, 16))
            }
            crate::policy::Vendor::Amd => false,
        };
        let ok = |rule| {
            if unprotected {
                (Some(0), rule)
            } else {
                (None, &crate::rules::UNMODELED)
            }
        };
        let lapic = self.vm.irqchip_known.then(|| self.vm.lapic_in_kernel());
        match *set {
            VmmSet::Regs { .. } => ok(&VMM_REGS_OK),
            VmmSet::Sregs {
                apic_base,
                cr0,
                cr4,
                efer,
                cs,
                sregs2,
            } => {
                const LME: u64 = 1 << 8;
                const LMA: u64 = 1 << 10;
                const PG: u64 = 1 << 31;
                const PAE: u64 = 1 << 5;
                let long = efer & LME != 0 && cr0 & PG != 0;
                let cs_l = cs.attr & (1 << 13) != 0;
                if (long && (cr4 & PAE == 0 || efer & LMA == 0))
                    || (!long && (efer & LMA != 0 || cs_l))
                {
                    return (Some(EINVAL), &VMM_SREGS_LONG_MODE);
                }
                let (base, _) = self.decide_msr_base(
                    vcpu,
                    0x1b,
                    Some(apic_base),
                    kvmtrace_format::Origin::Host,
                );
                match base.outcome {
                    Some(kvmtrace_format::MsrOutcome::InjectGp) => {
                        (Some(EINVAL), &VMM_SREGS_APIC_BASE)
                    }
                    Some(kvmtrace_format::MsrOutcome::Ok) => {
                        // CR0 every release accepts (kvm_is_valid_cr0): no
                        // bits 63:32, no NW without CD, no PG without PE.
                        const NW: u64 = 1 << 29;
                        const CD: u64 = 1 << 30;
                        let cr0_ok = cr0 >> 32 == 0
                            && (cr0 & NW == 0 || cr0 & CD != 0)
                            && (cr0 & PG == 0 || cr0 & 1 != 0);
                        let amd_svme =
                            vendor == crate::policy::Vendor::Amd && efer & (1 << 12) != 0;
                        if !sregs2 && !long && cr0_ok && cr4 & !0x7ff == 0 && !amd_svme {
                            ok(&VMM_SREGS_OK)
                        } else {
                            unmodeled
                        }
                    }
                    _ => unmodeled,
                }
            }
            VmmSet::MpState { mp_state } => match (lapic, mp_state) {
                (Some(false), 0) => ok(&VMM_MP_STATE_OK),
                (Some(false), _) => (Some(EINVAL), &VMM_MP_STATE_NO_LAPIC),
                (Some(true), 0 | 1 | 3) => ok(&VMM_MP_STATE_OK),
                (Some(true), 2 | 4)
                    if vendor == crate::policy::Vendor::Pvm && self.host_trace.no_smm =>
                {
                    ok(&VMM_MP_STATE_OK)
                }
                _ => unmodeled,
            },
            VmmSet::VcpuEvents(e) => {
                use kvmtrace_format::{KVM_CAP_EXCEPTION_PAYLOAD, KVM_CAP_X86_TRIPLE_FAULT_EVENT};
                if e.flags & !(EVENTS_VALID_5_10 | EVENTS_TRIPLE_FAULT) != 0 {
                    return (Some(EINVAL), &VMM_EVENTS_FLAGS);
                }
                let tf = e.flags & EVENTS_TRIPLE_FAULT != 0;
                if tf && !self.policy.switches.vcpu_events_triple_fault {
                    return (Some(EINVAL), &VMM_EVENTS_NO_TRIPLE_FAULT);
                }
                // SMM (SMM state not recorded).
                if e.flags & 0x08 != 0 {
                    return unmodeled;
                }
                // The kernel's order: PAYLOAD, the vector, (SMM), TRIPLE_FAULT.
                let payload = e.flags & 0x10 != 0;
                if payload {
                    match self.cap_on(KVM_CAP_EXCEPTION_PAYLOAD) {
                        Some(true) => {}
                        Some(false) => return (Some(EINVAL), &VMM_EVENTS_PAYLOAD_OFF),
                        None => return unmodeled,
                    }
                }
                // Without PAYLOAD, `exception.pending` is cleared first.
                let exception = e.exception_injected || (payload && e.exception_pending);
                if exception && (e.exception_nr > 31 || e.exception_nr == 2) {
                    return (Some(EINVAL), &VMM_EVENTS_VECTOR);
                }
                if tf {
                    match self.cap_on(KVM_CAP_X86_TRIPLE_FAULT_EVENT) {
                        Some(true) => {}
                        Some(false) => return (Some(EINVAL), &VMM_EVENTS_TRIPLE_FAULT_OFF),
                        None => return unmodeled,
                    }
                }
                ok(if payload || tf {
                    &VMM_EVENTS_PAYLOAD_OK
                } else {
                    &VMM_EVENTS_OK
                })
            }
            VmmSet::Lapic(page) => match lapic {
                Some(false) => (Some(EINVAL), &VMM_LAPIC_NO_LAPIC),
                Some(true) => {
                    let xapic = v.unknown & U_APIC_BASE == 0 && !v.x2apic_mode();
                    if xapic || (v.id_known && page.id == v.id) {
                        ok(&VMM_LAPIC_OK)
                    } else {
                        unmodeled
                    }
                }
                None => unmodeled,
            },
            VmmSet::Mce { bank, status, .. } => {
                if v.unknown & U_MCG_CAP != 0 {
                    return unmodeled;
                }
                if u64::from(bank) >= v.mcg_cap & 0xff || status >> 63 == 0 {
                    (Some(EINVAL), &VMM_MCE_BANK)
                } else {
                    (Some(0), &VMM_MCE_OK)
                }
            }
        }
    }
}

// ---- The VMM's KVM_ENABLE_CAPs (format 1.4 `CapEnabled`, ioctl tap) ----
//
// Read in x86.c `kvm_vm_ioctl_enable_cap` (VM fd; kvm_main.c
// `kvm_vm_ioctl_enable_cap_generic` first for the generic caps) and
// `kvm_vcpu_ioctl_enable_cap` (vCPU fd): a capability the release does not
// know falls to `default: r = -EINVAL`. The table below holds the caps QEMU
// 7.2 and Firecracker enable whose answer the model knows:
// - `KVM_CAP_X86_TRIPLE_FAULT_EVENT` (218): 6.0, ed2351174e38 (the
//   `vcpu_events_triple_fault` switch); sets `kvm->arch.triple_fault_event =
//   args[0]`, no failure path; before 6.0 -EINVAL.
// - `KVM_CAP_DISABLE_QUIRKS2` (213): 5.18, 6d8491910fcd (the `quirk_api`
//   switch); -EINVAL for bits outside the valid mask; before 5.18 -EINVAL.
// - `KVM_CAP_EXCEPTION_PAYLOAD` (164): older than every preset (5.10);
//   `kvm->arch.exception_payload_enabled = args[0]`, no failure path.
// - `KVM_CAP_X2APIC_API` (129): older than every preset; -EINVAL for flags
//   outside USE_32BIT_IDS | DISABLE_BROADCAST_QUIRK (later releases add
//   flags: other bits unmodelled).
// - `KVM_CAP_X86_USER_SPACE_MSR` (188): 5.10 (every preset); from 5.19
//   (`msr_flags_validated`) -EINVAL for bits outside INVAL|UNKNOWN|FILTER.
// Not modelled (their answer depends on what the trace does not hold, or the
// release that added them is not established here): KVM_CAP_SPLIT_IRQCHIP
// (irqchip and vCPUs created before it), KVM_CAP_X86_NOTIFY_VMEXIT (hardware
// support), KVM_CAP_MAX_VCPU_ID, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
// KVM_CAP_X86_BUS_LOCK_EXIT, KVM_CAP_HYPERV_* (QEMU 7.2 enables none of them
// without hv-* CPU flags).
//
// What an enabled cap decides later (`kvm_vcpu_ioctl_x86_set_vcpu_events`,
// 6.0+): KVM_VCPUEVENT_VALID_PAYLOAD needs `exception_payload_enabled`,
// KVM_VCPUEVENT_VALID_TRIPLE_FAULT needs `triple_fault_event`; otherwise
// -EINVAL. Where the tap recorded every enable (format 1.4: the trace holds
// `CapEnabled` events and the configuration source is the VMM's ioctls), a
// cap never enabled is known off.

hostrules! {
    VMM_CAP_ON = "KVM_ENABLE_CAP accepted (kvm_vm_ioctl_enable_cap: the release has the capability, valid args)", "all";
    VMM_CAP_ARGS = "KVM_ENABLE_CAP refused: args outside the capability's valid flags (kvm_vm_ioctl_enable_cap)", "all";
    VMM_EVENTS_PAYLOAD_OFF = "KVM_SET_VCPU_EVENTS refused: KVM_VCPUEVENT_VALID_PAYLOAD without KVM_CAP_EXCEPTION_PAYLOAD enabled (kvm_vcpu_ioctl_x86_set_vcpu_events)", "all";
    VMM_EVENTS_PAYLOAD_OK = "KVM_SET_VCPU_EVENTS accepted: PAYLOAD with KVM_CAP_EXCEPTION_PAYLOAD enabled, TRIPLE_FAULT with KVM_CAP_X86_TRIPLE_FAULT_EVENT enabled (kvm_vcpu_ioctl_x86_set_vcpu_events)", "6.0+";
}

/// `KVM_CAP_X86_TRIPLE_FAULT_EVENT` before 6.0 (ed2351174e38): no such
/// capability, so `KVM_ENABLE_CAP` fails; the switch names the change.
pub const VMM_CAP_NO_TRIPLE_FAULT: Rule = Rule {
    name: "vcpu_events_triple_fault=false: KVM_ENABLE_CAP(KVM_CAP_X86_TRIPLE_FAULT_EVENT) refused, no such capability (kvm_vm_ioctl_enable_cap: default -EINVAL)",
    section: "§0",
    release: "≤5.19",
};

/// `KVM_CAP_DISABLE_QUIRKS2` before 5.18 (6d8491910fcd).
pub const VMM_CAP_NO_QUIRKS2: Rule = Rule {
    name: "quirk_api=v1-assign: KVM_ENABLE_CAP(KVM_CAP_DISABLE_QUIRKS2) refused, no such capability (kvm_vm_ioctl_enable_cap: default -EINVAL)",
    section: "§6",
    release: "≤5.17",
};

/// `KVM_CAP_TRIPLE_FAULT_EVENT` with `triple_fault_event` off (6.0+).
pub const VMM_EVENTS_TRIPLE_FAULT_OFF: Rule = Rule {
    name: "vcpu_events_triple_fault=true: KVM_SET_VCPU_EVENTS refused: KVM_VCPUEVENT_VALID_TRIPLE_FAULT without KVM_CAP_X86_TRIPLE_FAULT_EVENT enabled (kvm_vcpu_ioctl_x86_set_vcpu_events)",
    section: "§0",
    release: "6.0+",
};

/// The caps the VMM enabled, as this policy's kernel answered them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VmmCaps {
    /// A `CapEnabled` event was seen: the trace records every enable
    /// (format 1.4), so with the tap's configuration a cap never enabled is off.
    pub seen: bool,
    /// (cap, args[0]) of each enable this policy accepted, the last per cap.
    pub on: Vec<(u32, u64)>,
}

impl VmmCaps {
    /// Whether `cap` is enabled with a nonzero `args[0]`: `Some` where known.
    fn enabled(&self, cap: u32, exact: bool) -> Option<bool> {
        match self.on.iter().find(|(c, _)| *c == cap) {
            Some(&(_, a)) => Some(a != 0),
            None => (self.seen && exact).then_some(false),
        }
    }
}

impl Engine {
    /// What the kernel answers `KVM_ENABLE_CAP(cap, args)` under this policy:
    /// `Some(0)` or `Some(-errno)` with the rule, `None` where unmodelled.
    pub(crate) fn cap_enable_result(
        &self,
        cap: u32,
        args: &[u64; 4],
        vcpu_scope: bool,
    ) -> (Option<i32>, RuleRef) {
        use kvmtrace_format::{
            KVM_CAP_DISABLE_QUIRKS2, KVM_CAP_EXCEPTION_PAYLOAD, KVM_CAP_X2APIC_API,
            KVM_CAP_X86_TRIPLE_FAULT_EVENT, KVM_CAP_X86_USER_SPACE_MSR,
        };
        let unmodeled = (None, &crate::rules::UNMODELED);
        if vcpu_scope {
            // kvm_vcpu_ioctl_enable_cap: Hyper-V SynIC and eVMCS, PMU caps;
            // none in the table.
            return unmodeled;
        }
        let s = &self.policy.switches;
        match cap {
            KVM_CAP_X86_TRIPLE_FAULT_EVENT => {
                if s.vcpu_events_triple_fault {
                    (Some(0), &VMM_CAP_ON)
                } else {
                    (Some(EINVAL), &VMM_CAP_NO_TRIPLE_FAULT)
                }
            }
            KVM_CAP_DISABLE_QUIRKS2 => match s.quirk_api {
                crate::policy::QuirkApi::V1Assign => (Some(EINVAL), &VMM_CAP_NO_QUIRKS2),
                _ if s.valid_quirks.allows(args[0]) => (Some(0), &VMM_CAP_ON),
                _ => (Some(EINVAL), &VMM_CAP_ARGS),
            },
            KVM_CAP_EXCEPTION_PAYLOAD => (Some(0), &VMM_CAP_ON),
            KVM_CAP_X2APIC_API if args[0] & !3 == 0 => (Some(0), &VMM_CAP_ON),
            KVM_CAP_X86_USER_SPACE_MSR if args[0] & !7 == 0 => (Some(0), &VMM_CAP_ON),
            KVM_CAP_X86_USER_SPACE_MSR if s.msr_flags_validated => (Some(EINVAL), &VMM_CAP_ARGS),
            _ => unmodeled,
        }
    }

    /// Fold a `CapEnabled` whose result under this policy is `result`.
    pub(crate) fn apply_cap_enabled(
        &mut self,
        cap: u32,
        args: &[u64; 4],
        vcpu_scope: bool,
        result: i32,
    ) {
        self.vmm_caps.seen = true;
        if result != 0 || vcpu_scope {
            return;
        }
        self.vmm_caps.on.retain(|(c, _)| *c != cap);
        self.vmm_caps.on.push((cap, args[0]));
    }

    /// Whether the VM has `cap` enabled (nonzero `args[0]`), where known.
    pub(crate) fn cap_on(&self, cap: u32) -> Option<bool> {
        self.vmm_caps.enabled(cap, self.host_trace.vmm_msrs_seen)
    }
}

/// `KVM_X86_SET_MCE` succeeded on `bank`: its STATUS/ADDR/MISC and MCG_STATUS
/// are unknown from now on; every other register keeps what the model knew.
fn forget_mce_bank(v: &mut VcpuState, bank: usize) {
    if bank >= MAX_MCE_BANKS {
        return;
    }
    if v.unknown & U_BANKS == 0 {
        let n = v.bank_num().min(MAX_MCE_BANKS);
        v.mce_known = if n == MAX_MCE_BANKS {
            u128::MAX
        } else {
            (1u128 << (4 * n)) - 1
        };
        v.unknown |= U_BANKS;
    }
    for off in 1..4 {
        v.mce_known &= !(1u128 << (bank * 4 + off));
    }
    v.unknown |= U_MCG_STATUS;
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
        CaptureMode, ConfigSource, DecidedBy, Event, MsrOutcome, Origin, TraceHeader, VmmSet,
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

    fn vmm(set: VmmSet, result: i32) -> Event {
        Event::VmmState {
            set: Box::new(set),
            result,
        }
    }

    fn sregs(apic_base: u64, sregs2: bool) -> VmmSet {
        VmmSet::Sregs {
            apic_base,
            cr0: 0x6000_0010,
            cr4: 0,
            efer: 0,
            cs: Default::default(),
            sregs2,
        }
    }

    /// The held-out capture's case: the guest turned x2APIC on, QEMU's reset
    /// put xAPIC back with KVM_SET_SREGS(2) (`__set_sregs_common` ->
    /// `kvm_apic_set_base(.., true)`); the model must follow the VMM.
    #[test]
    fn vmm_reset_sregs_puts_xapic_back() {
        let mut h = header("kvm_intel", false, 1 << 21);
        h.vm.irqchip = Some(kvmtrace_format::Irqchip::Kernel);
        for sregs2 in [false, true] {
            let mut e = engine("kvm-6.18", Vendor::Intel, &h);
            // Guest: xAPIC -> x2APIC (EN | EXTD | BSP).
            assert_eq!(
                e.msr_write(0, 0x1b, 0xfee0_0d00, G).outcome,
                Some(MsrOutcome::Ok)
            );
            fold(&mut e, 0x1b, Some(0xfee0_0d00), G, MsrOutcome::Ok);
            assert_eq!(e.msr_read(0, 0x802, G).outcome, Some(MsrOutcome::Value(0)));
            // The VMM's reset: an illegal value (reserved bit 0) is refused
            // with -EINVAL and changes nothing.
            e.apply(&rec(1, vmm(sregs(0xfee0_0901, false), -22)));
            assert!(e.vcpu_state(0).x2apic_mode());
            e.apply(&rec(2, vmm(sregs(0xfee0_0900, sregs2), 0)));
            assert_eq!(
                e.msr_read(0, 0x1b, G).outcome,
                Some(MsrOutcome::Value(0xfee0_0900))
            );
            // x2APIC MSRs now #GP (X2APIC_OFF), reads and writes.
            assert_eq!(e.msr_read(0, 0x802, G).outcome, Some(MsrOutcome::InjectGp));
            assert_eq!(
                e.msr_write(0, 0x808, 0, G).outcome,
                Some(MsrOutcome::InjectGp)
            );
            // The guest may not go x2APIC -> xAPIC, but from xAPIC on again.
            assert_eq!(
                e.msr_write(0, 0x1b, 0xfee0_0d00, G).outcome,
                Some(MsrOutcome::Ok)
            );
            // The other vCPU is untouched.
            assert_eq!(e.vcpu_state(1).apic_base, 0xfee0_0800);
        }
    }

    /// A failed KVM_SET_SREGS2 may have set the APIC base before it failed.
    #[test]
    fn failed_sregs2_leaves_the_apic_base_unknown() {
        let mut h = header("kvm_intel", false, 1 << 21);
        h.vm.irqchip = Some(kvmtrace_format::Irqchip::Kernel);
        let mut e = engine("kvm-6.18", Vendor::Intel, &h);
        e.apply(&rec(1, vmm(sregs(0xfee0_0900, true), -22)));
        assert_eq!(e.msr_read(0, 0x1b, G).outcome, None);
        e.apply(&rec(2, vmm(sregs(0xfee0_0900, true), 0)));
        assert_eq!(
            e.msr_read(0, 0x1b, G).outcome,
            Some(MsrOutcome::Value(0xfee0_0900))
        );
    }

    /// KVM_SET_LAPIC in x2APIC mode: the page's registers are the APIC's.
    #[test]
    fn set_lapic_in_x2apic_mode() {
        let mut h = header("kvm_intel", false, 1 << 21);
        h.vm.irqchip = Some(kvmtrace_format::Irqchip::Kernel);
        let mut e = engine("kvm-6.18", Vendor::Pvm, &h);
        let page = kvmtrace_format::LapicPage {
            svr: 0x1ff,
            lvt_lint0: 0x700,
            lvt_timer: 0x10000,
            timer_divide: 0xb,
            icr_low: 0x4500,
            ..Default::default()
        };
        // xAPIC mode: nothing learned (MMIO is not seen).
        e.apply(&rec(1, vmm(VmmSet::Lapic(page), 0)));
        fold(&mut e, 0x1b, Some(0xfee0_0d00), G, MsrOutcome::Ok);
        assert_eq!(e.msr_read(0, 0x80f, G).outcome, None);
        e.apply(&rec(2, vmm(VmmSet::Lapic(page), 0)));
        assert_eq!(
            e.msr_read(0, 0x80f, G).outcome,
            Some(MsrOutcome::Value(0x1ff))
        );
        assert_eq!(
            e.msr_read(0, 0x835, G).outcome,
            Some(MsrOutcome::Value(0x700))
        );
        assert_eq!(
            e.msr_read(0, 0x83e, G).outcome,
            Some(MsrOutcome::Value(0xb))
        );
        // ICR and (old timer mode unknown) TMICT stay unknown.
        assert_eq!(e.msr_read(0, 0x830, G).outcome, None);
        assert_eq!(e.msr_read(0, 0x838, G).outcome, None);
        // A refused page changes nothing.
        let other = kvmtrace_format::LapicPage { svr: 0xff, ..page };
        e.apply(&rec(3, vmm(VmmSet::Lapic(other), -22)));
        assert_eq!(
            e.msr_read(0, 0x80f, G).outcome,
            Some(MsrOutcome::Value(0x1ff))
        );
        // Same timer mode as before: TMICT is the page's.
        let timed = kvmtrace_format::LapicPage {
            timer_initial: 0,
            ..page
        };
        e.apply(&rec(4, vmm(VmmSet::Lapic(timed), 0)));
        assert_eq!(e.msr_read(0, 0x838, G).outcome, Some(MsrOutcome::Value(0)));
    }

    #[test]
    fn set_mce_and_mp_state() {
        let mut e = engine("kvm-6.18", Vendor::Intel, &wrap(true, 0));
        e.apply(&rec(0, Event::SetupMce { mcg_cap: 0x10a }));
        fold(&mut e, 0x405, Some(0), H, MsrOutcome::Ok);
        fold(&mut e, 0x406, Some(0), H, MsrOutcome::Ok);
        fold(&mut e, 0x17a, Some(0), H, MsrOutcome::Ok);
        assert_eq!(e.msr_read(0, 0x405, H).outcome, Some(MsrOutcome::Value(0)));
        let mce = VmmSet::Mce {
            bank: 1,
            status: 0xbd80_0000_0000_0134,
            addr: 0x1000,
            misc: 0x86,
            mcg_status: 5,
        };
        e.apply(&rec(1, vmm(mce, 0)));
        // Bank 1's STATUS/ADDR/MISC and MCG_STATUS are unknown; CTL is kept.
        for i in [0x405, 0x406, 0x407, 0x17a] {
            assert_eq!(e.msr_read(0, i, H).outcome, None, "{i:#x}");
        }
        assert_eq!(e.msr_read(0, 0x404, H).outcome, Some(MsrOutcome::Value(!0)));
        e.apply(&rec(2, vmm(VmmSet::MpState { mp_state: 4 }, 0)));
        assert_eq!(e.vcpu_state(0).mp_state, 2);
        e.apply(&rec(3, vmm(VmmSet::MpState { mp_state: 3 }, 0)));
        assert_eq!(e.vcpu_state(0).mp_state, 3);
    }

    /// kvm_pvm advertises IA32_FEAT_CTL without a handler: a host write of 0
    /// (or a read) is accepted only with the 6.12 suppression; presets take
    /// the recording host's advertised list, and an older one cites the
    /// change it lacks.
    #[test]
    fn advertised_msr_host_zero_write_by_release() {
        let mut h = wrap(true, 0);
        h.host.msr_index_list = vec![0x10, 0x3a];
        for (preset, zero, rule) in [
            (
                "kvm-6.11",
                MsrOutcome::InjectGp,
                "host_zero_write_advertised=false",
            ),
            (
                "kvm-6.12",
                MsrOutcome::Ok,
                "host_zero_write_advertised=true",
            ),
        ] {
            let e = engine(preset, Vendor::Pvm, &h);
            let p = e.msr_write(0, 0x3a, 0, H);
            assert_eq!(p.outcome, Some(zero), "{preset}");
            assert!(p.rule.name.starts_with(rule), "{preset}: {}", p.rule);
            if zero == MsrOutcome::InjectGp {
                let cite = p.rule.citation().unwrap();
                assert!(cite.contains("64a5d7a1091f"), "{cite}");
            }
            // A nonzero write is refused by every release, by the handler.
            let p = e.msr_write(0, 0x3a, 1, H);
            assert_eq!(p.outcome, Some(MsrOutcome::InjectGp));
            assert!(p.rule.name.starts_with("FEAT_CTL"), "{}", p.rule);
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
                // Guest accesses are left to other rules (a guest TSC
                // write: model::pv, accepted; a guest TSC_DEADLINE write
                // never fails: model::lapic; a guest SMI_COUNT write fails:
                // host only, model::common).
                let guest = match i {
                    0x10 | 0x6e0 => Some(MsrOutcome::Ok),
                    0x34 => Some(MsrOutcome::InjectGp),
                    _ => None,
                };
                assert_eq!(e.msr_write(0, i, x, G).outcome, guest, "{i:#x}");
            }
            // Tapped from the start: the creation values (0) until a fold.
            let zero = read_known.then_some(MsrOutcome::Value(0));
            assert_eq!(e.msr_read(0, 0x34, H).outcome, zero);
            assert_eq!(e.msr_read(0, 0x6e0, H).outcome, Some(MsrOutcome::Value(0)));
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

    /// A header whose VM has an in-kernel irqchip and a complete CPUID
    /// (x2APIC, MAXPHYADDR 39): the APIC base is decidable.
    fn irqchip_header(irqchip: kvmtrace_format::Irqchip) -> TraceHeader {
        let mut h = header("kvm_intel", false, 1 << 21);
        h.vm.irqchip = Some(irqchip);
        h.vm.cpuid.push(kvmtrace_format::CpuidEntry {
            function: 0x8000_0008,
            eax: 39,
            ..Default::default()
        });
        h
    }

    fn events(flags: u32, exception_nr: Option<u8>) -> VmmSet {
        VmmSet::VcpuEvents(kvmtrace_format::VcpuEventsSet {
            flags,
            exception_injected: exception_nr.is_some(),
            exception_nr: exception_nr.unwrap_or(0),
            ..Default::default()
        })
    }

    /// `kvm_vcpu_ioctl_x86_set_vcpu_events`: QEMU 7.2's flags 0x31 (NMI_PENDING,
    /// PAYLOAD, TRIPLE_FAULT) are refused before 6.0 (ed2351174e38), and
    /// depend on caps the trace does not hold from 6.0.
    #[test]
    fn vcpu_events_result_by_release() {
        let h = irqchip_header(kvmtrace_format::Irqchip::Kernel);
        for (preset, qemu) in [
            ("kvm-5.10", Some(-22)),
            ("kvm-5.19", Some(-22)),
            ("kvm-6.0", None),
        ] {
            let e = engine(preset, Vendor::Intel, &h);
            let (r, rule) = e.vmm_state_result(0, &events(0x31, None));
            assert_eq!(r, qemu, "{preset}");
            if r.is_some() {
                let cite = rule.citation().unwrap();
                assert!(
                    cite.contains("ed2351174e38") && cite.contains("(6.0)"),
                    "{cite}"
                );
            }
            // Known flags, no exception: accepted by every release.
            assert_eq!(
                e.vmm_state_result(0, &events(0x3, None)).0,
                Some(0),
                "{preset}"
            );
            // An unknown flag, an injected NMI or vector 32: refused everywhere.
            assert_eq!(e.vmm_state_result(0, &events(0x40, None)).0, Some(-22));
            assert_eq!(e.vmm_state_result(0, &events(0x1, Some(2))).0, Some(-22));
            assert_eq!(e.vmm_state_result(0, &events(0x1, Some(32))).0, Some(-22));
            assert_eq!(e.vmm_state_result(0, &events(0x1, Some(14))).0, Some(0));
            // PAYLOAD or SMM alone: the caps / SMM state are not in the trace.
            assert_eq!(e.vmm_state_result(0, &events(0x11, None)).0, None);
            assert_eq!(e.vmm_state_result(0, &events(0x9, None)).0, None);
        }
        // A success needs a guest without protected state: never asserted on
        // vendor amd (SEV-ES), nor on intel from 6.16 (TDX); failures hold.
        let amd = engine("kvm-6.18", Vendor::Amd, &h);
        assert_eq!(amd.vmm_state_result(0, &events(0x3, None)).0, None);
        assert_eq!(amd.vmm_state_result(0, &events(0x40, None)).0, Some(-22));
        let tdx = engine("kvm-6.16", Vendor::Intel, &h);
        assert_eq!(tdx.vmm_state_result(0, &events(0x3, None)).0, None);
        let pvm = engine("kvm-6.18", Vendor::Pvm, &h);
        assert_eq!(pvm.vmm_state_result(0, &events(0x3, None)).0, Some(0));
    }

    /// `kvm_arch_vcpu_ioctl_set_mpstate`.
    #[test]
    fn mp_state_result() {
        use kvmtrace_format::Irqchip;
        let none = engine("kvm-6.12", Vendor::Intel, &irqchip_header(Irqchip::None));
        let mp = |e: &Engine, s| e.vmm_state_result(0, &VmmSet::MpState { mp_state: s }).0;
        assert_eq!(mp(&none, 0), Some(0));
        assert_eq!(mp(&none, 3), Some(-22));
        assert_eq!(mp(&none, 2), Some(-22));
        let kernel = engine("kvm-5.10", Vendor::Intel, &irqchip_header(Irqchip::Kernel));
        for s in [0, 1, 3] {
            assert_eq!(mp(&kernel, s), Some(0), "{s}");
        }
        // INIT may be latched (SMM, VMX root): decided on pvm without SMM only;
        // states past SIPI_RECEIVED are validated differently by release.
        assert_eq!(mp(&kernel, 2), None);
        assert_eq!(mp(&kernel, 9), None);
        let mut h = irqchip_header(Irqchip::Kernel);
        h.host.caps.push((117, 0));
        let pvm = engine("kvm-6.18", Vendor::Pvm, &h);
        assert_eq!(mp(&pvm, 2), Some(0));
        assert_eq!(mp(&pvm, 4), Some(0));
    }

    /// `kvm_vcpu_ioctl_x86_set_mce` needs MCG_CAP: a bank past its count or a
    /// STATUS without VAL is -EINVAL, anything else 0.
    #[test]
    fn set_mce_result() {
        let mut e = engine("kvm-5.10", Vendor::Intel, &wrap(true, 0));
        let mce = |bank, status| VmmSet::Mce {
            bank,
            status,
            addr: 0,
            misc: 0,
            mcg_status: 5,
        };
        assert_eq!(e.vmm_state_result(0, &mce(1, 1 << 63)).0, None);
        e.apply(&rec(0, Event::SetupMce { mcg_cap: 0x10a }));
        assert_eq!(
            e.vmm_state_result(0, &mce(1, 0xbd80_0000_0000_0134)).0,
            Some(0)
        );
        assert_eq!(e.vmm_state_result(0, &mce(9, 1 << 63)).0, Some(0));
        assert_eq!(e.vmm_state_result(0, &mce(10, 1 << 63)).0, Some(-22));
        assert_eq!(e.vmm_state_result(0, &mce(1, 0x134)).0, Some(-22));
    }

    /// `kvm_vcpu_ioctl_set_lapic`: no in-kernel LAPIC; in x2APIC mode an ID
    /// other than the vcpu_id depends on the x2APIC API (not in the trace).
    /// The page teaches the x2APIC ID where every release agrees on it.
    #[test]
    fn set_lapic_result_and_apic_id() {
        use kvmtrace_format::{Irqchip, LapicPage};
        let page = |id| {
            VmmSet::Lapic(LapicPage {
                id,
                svr: 0x1ff,
                ..Default::default()
            })
        };
        let none = engine("kvm-6.18", Vendor::Intel, &irqchip_header(Irqchip::None));
        assert_eq!(none.vmm_state_result(0, &page(0)).0, Some(-22));
        let mut e = engine("kvm-6.18", Vendor::Pvm, &irqchip_header(Irqchip::Kernel));
        // xAPIC mode: any ID.
        assert_eq!(e.vmm_state_result(1, &page(0x0500_0000)).0, Some(0));
        // x2APIC mode on vCPU 1.
        let mut r = rec(
            0,
            Event::msr_access(
                0x1b,
                Some(0xfee0_0c00),
                G,
                MsrOutcome::Ok,
                DecidedBy::Kernel,
                None,
            ),
        );
        r.vcpu = 1;
        e.apply(&r);
        assert!(e.vcpu_state(1).x2apic_mode());
        assert_eq!(e.vmm_state_result(1, &page(1)).0, Some(0));
        assert_eq!(e.vmm_state_result(1, &page(1 << 24)).0, None);
        assert_eq!(e.vmm_state_result(1, &page(7)).0, None);
        // The xAPIC-layout ID of the vcpu_id: the x2APIC ID stays 1.
        let mut r = rec(1, vmm(page(1 << 24), 0));
        r.vcpu = 1;
        e.apply(&r);
        assert_eq!(e.msr_read(1, 0x802, G).outcome, Some(MsrOutcome::Value(1)));
        // ID 1 in the 32-bit layout: 5.10 without the x2APIC API stores 0.
        let mut r = rec(2, vmm(page(1), 0));
        r.vcpu = 1;
        e.apply(&r);
        assert_eq!(e.msr_read(1, 0x802, G).outcome, None);
    }

    /// `__set_sregs_common`: the checks every release makes; a KVM_SET_SREGS2
    /// success also depends on its flags, which the trace does not hold.
    #[test]
    fn set_sregs_result() {
        let h = irqchip_header(kvmtrace_format::Irqchip::Kernel);
        let e = engine("kvm-5.10", Vendor::Intel, &h);
        let s = |apic_base, cr0, efer, sregs2| VmmSet::Sregs {
            apic_base,
            cr0,
            cr4: 0,
            efer,
            cs: Default::default(),
            sregs2,
        };
        let qemu = 0x6000_0010;
        assert_eq!(
            e.vmm_state_result(0, &s(0xfee0_0900, qemu, 0, false)).0,
            Some(0)
        );
        assert_eq!(
            e.vmm_state_result(0, &s(0xfee0_0900, qemu, 0, true)).0,
            None
        );
        // Reserved APIC base bit, EXTD without EN, EFER.LMA outside long mode.
        for (base, efer) in [(0xfee0_0901, 0), (0xfee0_0500, 0), (0xfee0_0900, 1 << 10)] {
            for sregs2 in [false, true] {
                let (r, rule) = e.vmm_state_result(0, &s(base, qemu, efer, sregs2));
                assert_eq!(r, Some(-22), "{base:#x} {efer:#x}");
                assert!(
                    rule.name.starts_with("KVM_SET_SREGS refused"),
                    "{}",
                    rule.name
                );
            }
        }
        // Long mode (CR3 legality) and a CR0 later releases refuse: unmodelled.
        let long = (1u64 << 8) | (1 << 10);
        assert_eq!(
            e.vmm_state_result(0, &s(0xfee0_0900, 0x8000_0011, long, false))
                .0,
            Some(-22)
        );
        assert_eq!(
            e.vmm_state_result(0, &s(0xfee0_0900, 0x8000_0001, 0, false))
                .0,
            Some(0)
        );
        assert_eq!(
            e.vmm_state_result(0, &s(0xfee0_0900, 0x2000_0000, 0, false))
                .0,
            None
        );
    }

    /// Replay: a VMM state ioctl the policy's kernel would refuse is a
    /// divergence citing the change; `host` agrees, and the policy's refusal
    /// is what it folds.
    #[test]
    fn replay_compares_vmm_state_results() {
        let h = irqchip_header(kvmtrace_format::Irqchip::Kernel);
        let recs = vec![
            rec(0, vmm(events(0x31, None), 0)),
            rec(1, vmm(events(0x1, None), 0)),
        ];
        let policies = vec![
            crate::policy::Policy::preset("kvm-5.19", Vendor::Intel).unwrap(),
            crate::policy::Policy::preset("kvm-6.0", Vendor::Intel).unwrap(),
        ];
        let r = crate::replay::replay(&h, &recs, policies);
        let (old, new) = (&r.policies[0], &r.policies[1]);
        assert_eq!((old.divergences, old.modelled, old.unmodeled), (1, 2, 0));
        assert_eq!((new.divergences, new.modelled, new.unmodeled), (0, 1, 1));
        let d = old.first.as_ref().unwrap();
        assert_eq!(d.seq, 0);
        assert!(d.explanation.contains("ed2351174e38"), "{}", d.explanation);
        assert!(
            d.explanation
                .contains("failed: Invalid argument (errno 22)"),
            "{}",
            d.explanation
        );
    }

    fn cap(cap: u32, arg0: u64, result: i32) -> Event {
        Event::CapEnabled {
            cap,
            args: Box::new([arg0, 0, 0, 0]),
            vcpu_scope: false,
            result,
        }
    }

    /// `kvm_vm_ioctl_enable_cap` per release: a capability the release lacks
    /// is -EINVAL citing the change that added it; args validated where known.
    #[test]
    fn cap_enable_result_by_release() {
        use kvmtrace_format::{
            KVM_CAP_DISABLE_QUIRKS2, KVM_CAP_EXCEPTION_PAYLOAD, KVM_CAP_X2APIC_API,
            KVM_CAP_X86_TRIPLE_FAULT_EVENT, KVM_CAP_X86_USER_SPACE_MSR,
        };
        let h = wrap(true, 0);
        let r = |preset: &str, c: u32, a: u64| {
            let e = engine(preset, Vendor::Intel, &h);
            let (r, rule) = e.cap_enable_result(c, &[a, 0, 0, 0], false);
            (r, rule.citation().unwrap_or_default())
        };
        // KVM_CAP_X86_TRIPLE_FAULT_EVENT: 6.0 (ed2351174e38).
        for p in ["kvm-5.10", "kvm-5.19"] {
            let (res, cite) = r(p, KVM_CAP_X86_TRIPLE_FAULT_EVENT, 1);
            assert_eq!(res, Some(-22), "{p}");
            assert!(
                cite.contains("ed2351174e38") && cite.contains("(6.0)"),
                "{cite}"
            );
        }
        for p in ["kvm-6.0", "kvm-6.18"] {
            assert_eq!(r(p, KVM_CAP_X86_TRIPLE_FAULT_EVENT, 1).0, Some(0), "{p}");
        }
        // KVM_CAP_DISABLE_QUIRKS2: 5.18 (6d8491910fcd), valid mask checked.
        let (res, cite) = r("kvm-5.17", KVM_CAP_DISABLE_QUIRKS2, 1);
        assert_eq!(res, Some(-22));
        assert!(
            cite.contains("6d8491910fcd") && cite.contains("(5.18)"),
            "{cite}"
        );
        assert_eq!(r("kvm-5.18", KVM_CAP_DISABLE_QUIRKS2, 0x1f).0, Some(0));
        assert_eq!(r("kvm-5.18", KVM_CAP_DISABLE_QUIRKS2, 0x20).0, Some(-22));
        // Older than every preset: accepted with valid args.
        for p in ["kvm-5.10", "kvm-6.18"] {
            assert_eq!(r(p, KVM_CAP_EXCEPTION_PAYLOAD, 1).0, Some(0));
            assert_eq!(r(p, KVM_CAP_X2APIC_API, 3).0, Some(0));
            assert_eq!(r(p, KVM_CAP_X2APIC_API, 4).0, None);
            assert_eq!(r(p, KVM_CAP_X86_USER_SPACE_MSR, 4).0, Some(0));
        }
        // USER_SPACE_MSR's unknown bits: refused from 5.19 only.
        assert_eq!(r("kvm-5.18", KVM_CAP_X86_USER_SPACE_MSR, 8).0, None);
        assert_eq!(r("kvm-5.19", KVM_CAP_X86_USER_SPACE_MSR, 8).0, Some(-22));
        // Not in the table (KVM_CAP_MAX_VCPU_ID), and vCPU-scope enables.
        assert_eq!(r("kvm-6.18", 128, 2).0, None);
        let e = engine("kvm-6.18", Vendor::Intel, &h);
        assert_eq!(
            e.cap_enable_result(KVM_CAP_EXCEPTION_PAYLOAD, &[1, 0, 0, 0], true)
                .0,
            None
        );
    }

    /// `kvm_vcpu_ioctl_x86_set_vcpu_events` from 6.0: PAYLOAD needs
    /// `exception_payload_enabled`, TRIPLE_FAULT `triple_fault_event`, known
    /// from the trace's `CapEnabled` events with the tap's configuration.
    #[test]
    fn vcpu_events_decided_from_enabled_caps() {
        use kvmtrace_format::{KVM_CAP_EXCEPTION_PAYLOAD, KVM_CAP_X86_TRIPLE_FAULT_EVENT};
        let mut h = wrap(true, 0);
        h.vm.irqchip = Some(kvmtrace_format::Irqchip::Kernel);
        let qemu = events(0x31, None);
        // No CapEnabled seen (a 1.3 trace): unknown.
        let e = engine("kvm-6.6", Vendor::Intel, &h);
        assert_eq!(e.vmm_state_result(0, &qemu).0, None);
        // Both enabled: accepted.
        let mut e = engine("kvm-6.6", Vendor::Intel, &h);
        e.apply(&rec(0, cap(KVM_CAP_EXCEPTION_PAYLOAD, 1, 0)));
        e.apply(&rec(0, cap(KVM_CAP_X86_TRIPLE_FAULT_EVENT, 1, 0)));
        let (r, rule) = e.vmm_state_result(0, &qemu);
        assert_eq!(r, Some(0));
        assert_eq!(*rule, super::VMM_EVENTS_PAYLOAD_OK);
        // PAYLOAD with a pending #PF is checked too; an NMI vector is refused.
        let mut pending = events(0x11, None);
        if let VmmSet::VcpuEvents(ev) = &mut pending {
            ev.exception_pending = true;
            ev.exception_nr = 2;
        }
        assert_eq!(e.vmm_state_result(0, &pending).0, Some(-22));
        // Only PAYLOAD enabled: TRIPLE_FAULT refused, PAYLOAD alone accepted.
        let mut e = engine("kvm-6.6", Vendor::Intel, &h);
        e.apply(&rec(0, cap(KVM_CAP_EXCEPTION_PAYLOAD, 1, 0)));
        let (r, rule) = e.vmm_state_result(0, &qemu);
        assert_eq!(r, Some(-22));
        assert_eq!(*rule, super::VMM_EVENTS_TRIPLE_FAULT_OFF);
        assert_eq!(e.vmm_state_result(0, &events(0x11, None)).0, Some(0));
        // The enable failed (recorded): off; args[0] 0 disables.
        let mut e = engine("kvm-6.6", Vendor::Intel, &h);
        e.apply(&rec(0, cap(KVM_CAP_EXCEPTION_PAYLOAD, 1, -22)));
        e.apply(&rec(0, cap(KVM_CAP_X86_TRIPLE_FAULT_EVENT, 0, 0)));
        let (r, rule) = e.vmm_state_result(0, &events(0x11, None));
        assert_eq!((r, *rule), (Some(-22), super::VMM_EVENTS_PAYLOAD_OFF));
        assert_eq!(e.vmm_state_result(0, &events(0x21, None)).0, Some(-22));
        // Without the tap's configuration a cap never seen stays unknown.
        let mut e = engine("kvm-6.6", Vendor::Intel, &wrap(false, 0));
        e.apply(&rec(0, cap(KVM_CAP_EXCEPTION_PAYLOAD, 1, 0)));
        assert_eq!(e.vmm_state_result(0, &events(0x21, None)).0, None);
        // Before 6.0 TRIPLE_FAULT is an unknown flag whatever was enabled.
        let mut e = engine("kvm-5.19", Vendor::Intel, &h);
        e.apply(&rec(0, cap(KVM_CAP_X86_TRIPLE_FAULT_EVENT, 1, 0)));
        assert_eq!(
            *e.vmm_state_result(0, &qemu).1,
            super::VMM_EVENTS_NO_TRIPLE_FAULT
        );
    }

    /// Replay of QEMU's start-up under 5.19: the enable of
    /// KVM_CAP_X86_TRIPLE_FAULT_EVENT is the direct divergence (citing
    /// ed2351174e38); the refused KVM_SET_VCPU_EVENTS its consequence. `host`
    /// (6.18 on pvm) models and agrees with both.
    #[test]
    fn replay_refused_cap_makes_vcpu_events_a_consequence() {
        use kvmtrace_format::{KVM_CAP_EXCEPTION_PAYLOAD, KVM_CAP_X86_TRIPLE_FAULT_EVENT};
        let mut h = wrap(true, 0);
        h.vm.irqchip = Some(kvmtrace_format::Irqchip::Kernel);
        let mut recs = vec![
            rec(0, cap(KVM_CAP_EXCEPTION_PAYLOAD, 1, 0)),
            rec(0, cap(KVM_CAP_X86_TRIPLE_FAULT_EVENT, 1, 0)),
            rec(0, vmm(events(0x31, None), 0)),
            rec(1, vmm(events(0x31, None), 0)),
        ];
        for (i, r) in recs.iter_mut().enumerate() {
            r.seq = i as u64;
        }
        let policies = vec![
            crate::policy::Policy::preset("kvm-5.19", Vendor::Intel).unwrap(),
            crate::policy::Policy::preset("kvm-6.6", Vendor::Intel).unwrap(),
        ];
        let r = crate::replay::replay(&h, &recs, policies);
        let (old, new) = (&r.policies[0], &r.policies[1]);
        assert_eq!((old.divergences, old.direct, old.modelled), (3, 1, 4));
        assert_eq!((new.divergences, new.modelled, new.unmodeled), (0, 4, 0));
        let first = old.first.as_ref().unwrap();
        assert_eq!(first.seq, 1);
        assert!(
            first.explanation.contains("ed2351174e38"),
            "{}",
            first.explanation
        );
        let later: Vec<_> = old.kept.iter().filter(|d| d.seq >= 2).collect();
        assert_eq!(later.len(), 2);
        assert!(later.iter().all(|d| d.consequence_of == Some(1)));
    }

    /// QEMU's host accesses of TSX_CTRL and VIRT_SPEC_CTRL by vendor: the
    /// same answer in every release (no host-write difference by release).
    #[test]
    fn speculation_msrs_by_vendor() {
        let mut h = wrap(true, 0);
        h.host.msr_index_list = vec![0x122, 0xc001_011f];
        for preset in ["kvm-5.10", "kvm-6.0", "kvm-6.12", "kvm-6.18"] {
            let intel = engine(preset, Vendor::Intel, &h);
            assert_eq!(
                intel.msr_write(0, 0x122, 0, H).outcome,
                Some(MsrOutcome::Ok)
            );
            assert_eq!(
                intel.msr_write(0, 0x122, 3, H).outcome,
                Some(MsrOutcome::Ok)
            );
            assert_eq!(
                intel.msr_write(0, 0x122, 4, H).outcome,
                Some(MsrOutcome::InjectGp)
            );
            for (i, w) in [(0xc001_011f, Some(0)), (0xc001_011f, None)] {
                let p = match w {
                    Some(x) => intel.msr_write(0, i, x, H),
                    None => intel.msr_read(0, i, H),
                };
                assert_eq!(p.outcome, Some(MsrOutcome::InjectGp), "{preset}");
                assert!(p.rule.name.contains("vmx_has_emulated_msr"), "{}", p.rule);
            }
            let amd = engine(preset, Vendor::Amd, &h);
            assert_eq!(
                amd.msr_write(0, 0xc001_011f, 0, H).outcome,
                Some(MsrOutcome::Ok)
            );
            assert_eq!(
                amd.msr_write(0, 0xc001_011f, 4, H).outcome,
                Some(MsrOutcome::Ok)
            );
            assert_eq!(
                amd.msr_write(0, 0xc001_011f, 1, H).outcome,
                Some(MsrOutcome::InjectGp)
            );
            // Values read back and AMD's TSX_CTRL are not decided here.
            assert_eq!(amd.msr_read(0, 0xc001_011f, H).outcome, None);
            assert_eq!(intel.msr_read(0, 0x122, H).outcome, None);
        }
    }

    /// With the VMM tapped from its start, the host-only registers hold their
    /// creation values (SMI_COUNT 0, TSC_DEADLINE 0) until an event shows
    /// otherwise; without the tap (attach, import) they stay unknown, and a
    /// lost-events record forgets the deadline.
    #[test]
    fn host_only_registers_from_creation() {
        for tap in [true, false] {
            let mut e = engine("kvm-6.18", Vendor::Pvm, &wrap(tap, 0));
            let want = tap.then_some(MsrOutcome::Value(0));
            assert_eq!(e.msr_read(1, 0x34, H).outcome, want, "tap {tap}");
            assert_eq!(e.msr_read(1, 0x6e0, H).outcome, want, "tap {tap}");
            e.apply(&rec(
                0,
                Event::Lost {
                    source: kvmtrace_format::LostSource::Tracefs,
                    count: 3,
                },
            ));
            assert_eq!(e.msr_read(1, 0x6e0, H).outcome, None);
            assert_eq!(e.msr_read(1, 0x34, H).outcome, want);
        }
    }
}
