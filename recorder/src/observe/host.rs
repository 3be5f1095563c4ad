//! What this machine is, for a trace header whose text did not say (`import`
//! without `--kernel/--vendor` assumes the text came from here).

use kvmtrace_format::{CpuVendor, CpuidEntry, HostInfo};

/// `KVM_CAP_DISABLE_QUIRKS2` (SEMANTICS.md §6).
const KVM_CAP_DISABLE_QUIRKS2: u64 = 213;
/// The capabilities whose values the header keeps (HOST.md, "Capabilities seen").
const CAPS: [u32; 12] = [
    0,   // KVM_CAP_IRQCHIP
    84,  // KVM_CAP_SPLIT_IRQCHIP
    188, // KVM_CAP_X86_USER_SPACE_MSR
    189, // KVM_CAP_X86_MSR_FILTER
    213, // KVM_CAP_DISABLE_QUIRKS2
    143, // KVM_CAP_X86_DISABLE_EXITS
    206, // KVM_CAP_EXIT_ON_EMULATION_FAILURE
    41,  // KVM_CAP_VCPU_EVENTS
    129, // KVM_CAP_X2APIC_API
    25,  // KVM_CAP_MCE
    193, // KVM_CAP_X86_TRIPLE_FAULT_EVENT
    117, // KVM_CAP_GET_MSR_FEATURES
];

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

fn cpuinfo() -> (Option<CpuVendor>, String) {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let vendor = field("vendor_id").map(|v| match v.as_str() {
        "GenuineIntel" => CpuVendor::Intel,
        "AuthenticAMD" => CpuVendor::Amd,
        "HygonGenuine" => CpuVendor::Hygon,
        _ => CpuVendor::Other,
    });
    (vendor, field("model name").unwrap_or_default())
}

/// Describe this host: release, module, CPU, and, when `/dev/kvm` opens, the
/// capabilities, `KVM_GET_MSR_INDEX_LIST`, `KVM_GET_MSR_FEATURE_INDEX_LIST` and
/// `KVM_GET_SUPPORTED_CPUID`. Returns whether KVM was queried.
pub fn this_host() -> (HostInfo, bool) {
    let (cpu_vendor, cpu_model) = cpuinfo();
    let mut info = HostInfo {
        kernel_release: read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default(),
        kvm_module: kvm_module(),
        cpu_vendor,
        cpu_model,
        ..Default::default()
    };
    let Ok(kvm) = kvm_ioctls::Kvm::new() else {
        return (info, false);
    };
    for cap in CAPS {
        info.caps
            .push((cap, i64::from(kvm.check_extension_raw(u64::from(cap)))));
    }
    info.valid_quirks =
        u64::try_from(kvm.check_extension_raw(KVM_CAP_DISABLE_QUIRKS2)).unwrap_or(0);
    if let Ok(list) = kvm.get_msr_index_list() {
        info.msr_index_list = list.as_slice().to_vec();
    }
    if let Ok(list) = kvm.get_msr_feature_index_list() {
        info.msr_feature_list = list.as_slice().to_vec();
    }
    if let Ok(cpuid) = kvm.get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES) {
        info.supported_cpuid = cpuid
            .as_slice()
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
            .collect();
    }
    (info, true)
}
