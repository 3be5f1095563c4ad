//! What this machine is without asking KVM (kernel release, KVM module, CPU),
//! for trace headers. `kvmtrace_recorder::observe::host::this_host` adds what
//! `/dev/kvm` offers.

use kvmtrace_format::{CpuVendor, HostInfo};

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// The loaded KVM vendor module: "kvm_pvm", "kvm_intel", "kvm_amd" or "".
pub fn kvm_module() -> String {
    ["kvm_pvm", "kvm_intel", "kvm_amd"]
        .into_iter()
        .find(|m| std::path::Path::new(&format!("/sys/module/{m}")).exists())
        .unwrap_or("")
        .to_string()
}

/// The policy vendor name for a module: "pvm", "intel", "amd".
pub fn vendor_of_module(module: &str) -> Option<&'static str> {
    match module {
        "kvm_pvm" => Some("pvm"),
        "kvm_intel" => Some("intel"),
        "kvm_amd" => Some("amd"),
        _ => None,
    }
}

fn cpuinfo_field(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find(|l| l.split(':').next().is_some_and(|k| k.trim() == key))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

fn cpuinfo() -> (Option<CpuVendor>, String) {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let vendor = cpuinfo_field(&text, "vendor_id").map(|v| match v.as_str() {
        "GenuineIntel" => CpuVendor::Intel,
        "AuthenticAMD" => CpuVendor::Amd,
        "HygonGenuine" => CpuVendor::Hygon,
        _ => CpuVendor::Other,
    });
    (
        vendor,
        cpuinfo_field(&text, "model name").unwrap_or_default(),
    )
}

/// What this host is without asking KVM: kernel release, KVM module, CPU.
pub fn basic() -> HostInfo {
    let (cpu_vendor, cpu_model) = cpuinfo();
    HostInfo {
        kernel_release: read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default(),
        kvm_module: kvm_module(),
        cpu_vendor,
        cpu_model,
        ..Default::default()
    }
}
