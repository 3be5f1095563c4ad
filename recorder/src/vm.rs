//! The VM: `/dev/kvm`, the host facts that go into the trace header, guest
//! memory, CPUID, quirks, MCE and the capture machinery (deny-all MSR filter and
//! user-space MSR exits in intercept mode).

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES, kvm_enable_cap, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, MsrFilterDefaultAction, MsrFilterRange, MsrFilterRangeFlags, VcpuFd, VmFd};
use kvmtrace_format::{
    CaptureInfo, CaptureMode, CpuidEntry, HostInfo, MsrFilter, MsrFilterRange as FilterRange,
};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::scenarios::{CpuidEdit, CpuidReg};

pub const KVM_CAP_DISABLE_QUIRKS2: u32 = 213;
/// `KVM_MSR_EXIT_REASON_INVAL | UNKNOWN | FILTER`.
pub const CAPTURE_USER_SPACE_MSR: u32 = 0x7;
/// MSRs covered by the capture filter's one all-zero range (HOST.md: DEFAULT_DENY
/// with no ranges is EINVAL; MSRs outside any range are denied by default).
const CAPTURE_RANGE_MSRS: u32 = 0x2000;

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot open /dev/kvm: {source}; {hint}")]
    OpenKvm {
        hint: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("KVM_CREATE_VM")]
    CreateVm(#[source] kvm_ioctls::Error),
    #[error("KVM_GET_SUPPORTED_CPUID")]
    GetSupportedCpuid(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_USER_MEMORY_REGION")]
    SetUserMemoryRegion(#[source] kvm_ioctls::Error),
    #[error("KVM_ENABLE_CAP(KVM_CAP_DISABLE_QUIRKS2, {mask:#x})")]
    DisableQuirks {
        mask: u64,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("KVM_ENABLE_CAP(KVM_CAP_X86_USER_SPACE_MSR)")]
    EnableUserSpaceMsr(#[source] kvm_ioctls::Error),
    #[error("KVM_X86_SET_MSR_FILTER")]
    SetMsrFilter(#[source] kvm_ioctls::Error),
    #[error("KVM_CREATE_IRQCHIP")]
    CreateIrqchip(#[source] kvm_ioctls::Error),
    #[error("KVM_CREATE_VCPU {index}")]
    CreateVcpu {
        index: u32,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("KVM_SET_CPUID2 on vCPU {index}")]
    SetCpuid {
        index: u32,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("KVM_X86_SETUP_MCE({mcg_cap:#x}) on vCPU {index}")]
    SetupMce {
        index: u32,
        mcg_cap: u64,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("a CPUID edit names leaf {function:#x}.{index} which KVM_GET_SUPPORTED_CPUID lacks")]
    CpuidLeaf { function: u32, index: u32 },
}

/// Open `/dev/kvm` with a message that names the device and the fix.
pub fn open_kvm() -> Result<Kvm, VmError> {
    Kvm::new().map_err(|source| VmError::OpenKvm {
        hint: open_hint(source.errno()),
        source,
    })
}

/// What to do about a failed open of `/dev/kvm`.
pub fn open_hint(errno: i32) -> &'static str {
    match errno {
        libc::ENOENT | libc::ENODEV | libc::ENXIO => {
            "the device is missing: load the KVM module (modprobe kvm_intel / kvm_amd) \
             or run on a machine with virtualization"
        }
        libc::EACCES | libc::EPERM => {
            "permission denied: run as root or add the user to the group owning /dev/kvm \
             (usually `kvm`)"
        }
        _ => "check that /dev/kvm is a working KVM device",
    }
}

/// The capture filter of intercept mode, as recorded in the header.
pub fn capture_filter() -> MsrFilter {
    MsrFilter {
        default_deny: true,
        ranges: vec![FilterRange {
            flags: 3,
            base: 0,
            nmsrs: CAPTURE_RANGE_MSRS,
            bitmap: vec![0; (CAPTURE_RANGE_MSRS / 8) as usize],
        }],
    }
}

pub fn capture_info(mode: CaptureMode) -> CaptureInfo {
    match mode {
        CaptureMode::Intercept => CaptureInfo {
            mode,
            filter: Some(capture_filter()),
            user_space_msr: CAPTURE_USER_SPACE_MSR,
            detail: "deny-all MSR filter; user-space MSR exits INVAL|UNKNOWN|FILTER".into(),
        },
        _ => CaptureInfo {
            mode,
            filter: None,
            user_space_msr: 0,
            detail: String::new(),
        },
    }
}

/// Capabilities worth keeping in the header (number, as `KVM_CHECK_EXTENSION`
/// names them in include/uapi/linux/kvm.h).
const CAPS: [u32; 16] = [
    kvm_bindings::KVM_CAP_IRQCHIP,
    kvm_bindings::KVM_CAP_SPLIT_IRQCHIP,
    kvm_bindings::KVM_CAP_X86_USER_SPACE_MSR,
    kvm_bindings::KVM_CAP_X86_MSR_FILTER,
    kvm_bindings::KVM_CAP_DISABLE_QUIRKS,
    KVM_CAP_DISABLE_QUIRKS2,
    kvm_bindings::KVM_CAP_X86_DISABLE_EXITS,
    kvm_bindings::KVM_CAP_EXIT_ON_EMULATION_FAILURE,
    kvm_bindings::KVM_CAP_VCPU_EVENTS,
    kvm_bindings::KVM_CAP_MP_STATE,
    kvm_bindings::KVM_CAP_X86_TRIPLE_FAULT_EVENT,
    kvm_bindings::KVM_CAP_X2APIC_API,
    kvm_bindings::KVM_CAP_MCE,
    kvm_bindings::KVM_CAP_GET_MSR_FEATURES,
    kvm_bindings::KVM_CAP_XSAVE,
    kvm_bindings::KVM_CAP_X86_SMM,
];

/// What the recording host is and what its KVM offers.
pub fn host_info(kvm: &Kvm) -> Result<HostInfo, VmError> {
    let mut info = crate::observe::host::basic();
    kvm_offers(kvm, &mut info);
    let supported = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(VmError::GetSupportedCpuid)?;
    info.supported_cpuid = to_entries(&supported);
    Ok(info)
}

/// The capabilities, quirks and MSR lists KVM offers (a list it refuses stays
/// empty), into `info`.
pub fn kvm_offers(kvm: &Kvm, info: &mut HostInfo) {
    info.caps = CAPS
        .iter()
        .map(|&c| (c, i64::from(kvm.check_extension_raw(u64::from(c)))))
        .collect();
    info.valid_quirks = kvm
        .check_extension_raw(u64::from(KVM_CAP_DISABLE_QUIRKS2))
        .max(0) as u64;
    info.msr_index_list = kvm
        .get_msr_index_list()
        .map(|l| l.as_slice().to_vec())
        .unwrap_or_default();
    info.msr_feature_list = kvm
        .get_msr_feature_index_list()
        .map(|l| l.as_slice().to_vec())
        .unwrap_or_default();
}

pub fn to_entries(c: &CpuId) -> Vec<CpuidEntry> {
    c.as_slice()
        .iter()
        .map(|e| CpuidEntry {
            function: e.function,
            index: e.index,
            flags: e.flags,
            eax: e.eax,
            ebx: e.ebx,
            ecx: e.ecx,
            edx: e.edx,
        })
        .collect()
}

/// Apply a scenario's CPUID edits.
pub fn edit_cpuid(entries: &mut [CpuidEntry], edits: &[CpuidEdit]) -> Result<(), VmError> {
    for edit in edits {
        let (function, index, reg, bit, set) = match *edit {
            CpuidEdit::Set {
                function,
                index,
                reg,
                bit,
            } => (function, index, reg, bit, true),
            CpuidEdit::Clear {
                function,
                index,
                reg,
                bit,
            } => (function, index, reg, bit, false),
        };
        let e = entries
            .iter_mut()
            .find(|e| e.function == function && (e.flags & 1 == 0 || e.index == index))
            .ok_or(VmError::CpuidLeaf { function, index })?;
        let r = match reg {
            CpuidReg::Eax => &mut e.eax,
            CpuidReg::Ebx => &mut e.ebx,
            CpuidReg::Ecx => &mut e.ecx,
            CpuidReg::Edx => &mut e.edx,
        };
        let mask = 1u32 << (bit & 31);
        if set {
            *r |= mask;
        } else {
            *r &= !mask;
        }
    }
    Ok(())
}

/// The CPUID of vCPU `index`: its initial APIC ID in leaf 1 EBX[31:24] and the
/// x2APIC ID of leaves 0xb/0x1f.
pub fn vcpu_cpuid(base: &[CpuidEntry], index: u32) -> Vec<CpuidEntry> {
    let mut v = base.to_vec();
    for e in &mut v {
        match e.function {
            1 => e.ebx = (e.ebx & 0x00ff_ffff) | (index << 24),
            0xb | 0x1f => e.edx = index,
            _ => {}
        }
    }
    v
}

pub fn to_kvm_cpuid(entries: &[CpuidEntry]) -> CpuId {
    let kvm: Vec<kvm_bindings::kvm_cpuid_entry2> = entries
        .iter()
        .map(|e| kvm_bindings::kvm_cpuid_entry2 {
            function: e.function,
            index: e.index,
            flags: e.flags,
            eax: e.eax,
            ebx: e.ebx,
            ecx: e.ecx,
            edx: e.edx,
            ..Default::default()
        })
        .collect();
    // At most KVM_MAX_CPUID_ENTRIES: they came from KVM_GET_SUPPORTED_CPUID.
    CpuId::from_entries(&kvm).unwrap_or_else(|_| CpuId::new(0).expect("empty CpuId"))
}

/// `KVM_CREATE_VM` plus memory.
pub fn create_vm(kvm: &Kvm, mem: &GuestMemoryMmap) -> Result<VmFd, VmError> {
    let vm = kvm.create_vm().map_err(VmError::CreateVm)?;
    let host = mem
        .get_host_address(GuestAddress(0))
        .map_err(|_| VmError::SetUserMemoryRegion(kvm_ioctls::Error::new(libc::EFAULT)))?;
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: mem.last_addr().0 + 1,
        userspace_addr: host as u64,
    };
    // SAFETY: `mem` is one contiguous anonymous mapping of `memory_size` bytes at
    // `host`; it outlives the VM (record() drops the VM and its vCPUs first).
    unsafe { vm.set_user_memory_region(region) }.map_err(VmError::SetUserMemoryRegion)?;
    Ok(vm)
}

pub fn disable_quirks(vm: &VmFd, mask: u64) -> Result<(), VmError> {
    let mut cap = kvm_enable_cap {
        cap: KVM_CAP_DISABLE_QUIRKS2,
        ..Default::default()
    };
    cap.args[0] = mask;
    vm.enable_cap(&cap)
        .map_err(|source| VmError::DisableQuirks { mask, source })
}

/// Intercept mode: every filterable RDMSR/WRMSR exits to user space, and so do
/// accesses KVM would fault on or does not know (x2APIC MSRs arrive as INVAL).
pub fn install_capture(vm: &VmFd) -> Result<(), VmError> {
    let mut cap = kvm_enable_cap {
        cap: kvm_bindings::KVM_CAP_X86_USER_SPACE_MSR,
        ..Default::default()
    };
    cap.args[0] = u64::from(CAPTURE_USER_SPACE_MSR);
    vm.enable_cap(&cap).map_err(VmError::EnableUserSpaceMsr)?;
    let bitmap = vec![0u8; (CAPTURE_RANGE_MSRS / 8) as usize];
    let range = MsrFilterRange {
        flags: MsrFilterRangeFlags::READ | MsrFilterRangeFlags::WRITE,
        base: 0,
        msr_count: CAPTURE_RANGE_MSRS,
        bitmap: &bitmap,
    };
    vm.set_msr_filter(MsrFilterDefaultAction::DENY, &[range])
        .map_err(VmError::SetMsrFilter)
}

pub fn create_vcpu(vm: &VmFd, index: u32) -> Result<VcpuFd, VmError> {
    vm.create_vcpu(u64::from(index))
        .map_err(|source| VmError::CreateVcpu { index, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuid_edits_set_and_clear() {
        let mut e = vec![CpuidEntry {
            function: 1,
            ecx: 0b1000,
            ..Default::default()
        }];
        edit_cpuid(
            &mut e,
            &[
                CpuidEdit::Clear {
                    function: 1,
                    index: 0,
                    reg: CpuidReg::Ecx,
                    bit: 3,
                },
                CpuidEdit::Set {
                    function: 1,
                    index: 0,
                    reg: CpuidReg::Edx,
                    bit: 5,
                },
            ],
        )
        .unwrap();
        assert_eq!(e[0].ecx, 0);
        assert_eq!(e[0].edx, 32);
        assert!(
            edit_cpuid(
                &mut e,
                &[CpuidEdit::Set {
                    function: 0x4000_0000,
                    index: 0,
                    reg: CpuidReg::Eax,
                    bit: 0
                }]
            )
            .is_err()
        );
    }

    #[test]
    fn open_errors_say_what_to_do() {
        for (errno, want) in [
            (libc::ENOENT, "modprobe"),
            (libc::EACCES, "run as root"),
            (libc::EPERM, "run as root"),
            (libc::EIO, "working KVM device"),
        ] {
            let e = VmError::OpenKvm {
                hint: open_hint(errno),
                source: kvm_ioctls::Error::new(errno),
            };
            let msg = e.to_string();
            assert!(msg.contains("/dev/kvm") && msg.contains(want), "{msg}");
        }
    }

    #[test]
    fn capture_filter_has_one_all_zero_range() {
        let f = capture_filter();
        assert!(f.default_deny);
        assert_eq!(f.ranges.len(), 1);
        assert!(f.ranges[0].bitmap.iter().all(|&b| b == 0));
        assert!(f.ranges[0].bitmap.len() <= 0x600);
    }

    #[test]
    fn vcpu_cpuid_sets_apic_id() {
        let base = vec![CpuidEntry {
            function: 1,
            ebx: 0xff00_0800,
            ..Default::default()
        }];
        assert_eq!(vcpu_cpuid(&base, 3)[0].ebx, 0x0300_0800);
    }
}
