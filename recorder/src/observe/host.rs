//! What this machine is, for a trace header whose text did not say (`import`
//! without `--kernel/--vendor` assumes the text came from here).

use kvmtrace_format::HostInfo;

pub use kvmtrace_capture::host::{basic, kvm_module, vendor_of_module};

/// Describe this host: release, module, CPU, and, when `/dev/kvm` opens, what
/// its KVM offers (`vm::host_info`: capabilities, `KVM_GET_MSR_INDEX_LIST`,
/// `KVM_GET_MSR_FEATURE_INDEX_LIST`, `KVM_GET_SUPPORTED_CPUID`). Returns
/// whether KVM was queried.
pub fn this_host() -> (HostInfo, bool) {
    let Ok(kvm) = kvm_ioctls::Kvm::new() else {
        return (basic(), false);
    };
    match crate::vm::host_info(&kvm) {
        Ok(info) => (info, true),
        Err(_) => {
            let mut info = basic();
            crate::vm::kvm_offers(&kvm, &mut info);
            (info, true)
        }
    }
}
