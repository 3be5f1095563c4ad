//! The thread-name conventions of the VMMs kvmtrace records
//! (docs/vmm-threads.md): a vCPU thread's name gives its vCPU number.
//!
//! | VMM | name | number | source |
//! | --- | --- | --- | --- |
//! | QEMU (KVM accel) | `CPU N/KVM` | `cpu_index` | accel/kvm/kvm-accel-ops.c `kvm_start_vcpu_thread` |
//! | Firecracker | `fc_vcpu N` | vCPU index | src/vmm/src/vstate/vcpu.rs `start_threaded` |
//! | cloud-hypervisor, kvmtrace's own VMM | `vcpuN` | vCPU id | vmm/src/cpu.rs `start_vcpu`; recorder/src/lib.rs |
//! | crosvm | `crosvm_vcpuN` | `cpu_id` | src/crosvm/sys/linux/vcpu.rs `run_vcpu` |
//!
//! QEMU names its threads only with `-name debug-threads=on` (otherwise every
//! thread is `qemu-system-x86`); the kernel keeps 15 bytes of a name.

/// Which convention a thread name matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Convention {
    Qemu,
    Firecracker,
    /// `vcpuN`: cloud-hypervisor and kvmtrace's own VMM.
    CloudHypervisor,
    Crosvm,
}

/// Most vCPUs a name may number (KVM_MAX_VCPUS is 4096 on x86).
pub const MAX_VCPU_INDEX: u32 = 4096;

fn number(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 5 || (s.len() > 1 && s[0] == b'0') {
        return None;
    }
    crate::line::parse_dec(s, 5)
        .and_then(|v| u32::try_from(v).ok())
        .filter(|&v| v < MAX_VCPU_INDEX)
}

/// The vCPU number a thread name gives, and the convention it follows.
pub fn vcpu_from_name(name: &[u8]) -> Option<(u32, Convention)> {
    if let Some(rest) = name.strip_prefix(b"CPU ")
        && let Some(n) = rest.strip_suffix(b"/KVM")
    {
        return number(n).map(|n| (n, Convention::Qemu));
    }
    if let Some(n) = name.strip_prefix(b"fc_vcpu ") {
        return number(n).map(|n| (n, Convention::Firecracker));
    }
    if let Some(n) = name.strip_prefix(b"crosvm_vcpu") {
        return number(n).map(|n| (n, Convention::Crosvm));
    }
    if let Some(n) = name.strip_prefix(b"vcpu") {
        return number(n).map(|n| (n, Convention::CloudHypervisor));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu() {
        assert_eq!(vcpu_from_name(b"CPU 0/KVM"), Some((0, Convention::Qemu)));
        assert_eq!(vcpu_from_name(b"CPU 17/KVM"), Some((17, Convention::Qemu)));
        // Without `-name debug-threads=on` QEMU names no thread.
        assert_eq!(vcpu_from_name(b"qemu-system-x86"), None);
        assert_eq!(vcpu_from_name(b"CPU 0/TCG"), None);
        assert_eq!(vcpu_from_name(b"CPU /KVM"), None);
        assert_eq!(vcpu_from_name(b"CPU 01/KVM"), None);
    }

    #[test]
    fn firecracker() {
        assert_eq!(
            vcpu_from_name(b"fc_vcpu 0"),
            Some((0, Convention::Firecracker))
        );
        assert_eq!(
            vcpu_from_name(b"fc_vcpu 31"),
            Some((31, Convention::Firecracker))
        );
        assert_eq!(vcpu_from_name(b"fc_vcpu"), None);
        assert_eq!(vcpu_from_name(b"fc_vmm"), None);
    }

    #[test]
    fn cloud_hypervisor_and_our_own_vmm() {
        assert_eq!(
            vcpu_from_name(b"vcpu0"),
            Some((0, Convention::CloudHypervisor))
        );
        assert_eq!(
            vcpu_from_name(b"vcpu12"),
            Some((12, Convention::CloudHypervisor))
        );
        assert_eq!(vcpu_from_name(b"vcpu"), None);
        assert_eq!(vcpu_from_name(b"vcpu-1"), None);
        assert_eq!(vcpu_from_name(b"vcpu99999"), None);
    }

    #[test]
    fn crosvm() {
        assert_eq!(
            vcpu_from_name(b"crosvm_vcpu3"),
            Some((3, Convention::Crosvm))
        );
        assert_eq!(vcpu_from_name(b"crosvm_vcpu"), None);
        assert_eq!(vcpu_from_name(b"crosvm"), None);
    }
}
