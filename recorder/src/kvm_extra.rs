//! The one KVM ioctl `kvm-ioctls` 0.25 lacks that the recorder needs:
//! `KVM_X86_SETUP_MCE` (HOST.md, MCE), in the rust-vmm wrapper shape.

use kvm_bindings::KVMIO;
use kvm_ioctls::VcpuFd;
use vmm_sys_util::errno;
use vmm_sys_util::ioctl::ioctl_with_ref;
use vmm_sys_util::ioctl_iow_nr;

// `#define KVM_X86_SETUP_MCE _IOW(KVMIO, 0x9c, __u64)` (include/uapi/linux/kvm.h).
ioctl_iow_nr!(KVM_X86_SETUP_MCE, KVMIO, 0x9c, u64);

/// `KVM_X86_SETUP_MCE`: enable MCE banks on `vcpu` with this MCG_CAP (bank count in
/// bits 7:0 plus MCG_CTL_P etc.).
pub fn setup_mce(vcpu: &VcpuFd, mcg_cap: u64) -> Result<(), errno::Error> {
    // SAFETY: `vcpu` is an open vCPU fd; KVM_X86_SETUP_MCE reads exactly one u64
    // from the pointer, which lives for the duration of the call, and writes nothing.
    let ret = unsafe { ioctl_with_ref(vcpu, KVM_X86_SETUP_MCE(), &mcg_cap) };
    if ret != 0 {
        return Err(errno::Error::last());
    }
    Ok(())
}
