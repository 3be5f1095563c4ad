//! The trace header: the environment a trace was recorded in (rr records uname and
//! CPUID the same way), so that a replay can model the host that produced it.

use serde::{Deserialize, Serialize};

use crate::event::{CpuidEntry, MsrFilter};

/// How the events of a trace were captured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptureMode {
    /// Every filterable MSR access exits to the recorder, whose live policy answers
    /// (outcomes `decided_by: vmm`).
    Intercept,
    /// The kernel decides; its decisions are read from KVM tracepoints
    /// (outcomes `decided_by: kernel`).
    Observe,
    /// Converted from kernel tracepoint text (`kvmtrace import ftrace`).
    Import,
    /// Synthesised (`kvmtrace synth`), as if recorded in intercept mode.
    Synth,
    /// Another VMM recorded from the kernel's KVM tracepoints (`kvmtrace
    /// record -- CMD`, `--pid PID`; format 1.1): the kernel decides, and the
    /// VMM's own configuration (CPUID, MSRs it set) is known only where the
    /// trace shows it, so replay starts from unknown state as for an import.
    External,
}

/// The CPU vendor of the host, from CPUID leaf 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CpuVendor {
    Intel,
    Amd,
    Hygon,
    Other,
}

/// The in-kernel interrupt controller configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Irqchip {
    /// No `KVM_CREATE_IRQCHIP`: the VMM emulates the local APIC (or there is none).
    None,
    /// `KVM_CREATE_IRQCHIP`: in-kernel LAPIC, IOAPIC and PIC.
    Kernel,
    /// `KVM_CAP_SPLIT_IRQCHIP`: in-kernel LAPIC only.
    Split,
}

/// What the recording host was and what its KVM offered.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    /// `uname -r`, e.g. "6.18.44".
    pub kernel_release: String,
    /// The KVM vendor module: "kvm_intel", "kvm_amd", "kvm_pvm", or "" if unknown.
    pub kvm_module: String,
    pub cpu_vendor: Option<CpuVendor>,
    /// CPUID brand string.
    pub cpu_model: String,
    /// `KVM_CHECK_EXTENSION` results that matter: (capability number, value).
    pub caps: Vec<(u32, i64)>,
    /// `KVM_CAP_DISABLE_QUIRKS2`: the valid quirk mask (0 if the cap is absent).
    pub valid_quirks: u64,
    /// `KVM_GET_MSR_INDEX_LIST`.
    pub msr_index_list: Vec<u32>,
    /// `KVM_GET_MSR_FEATURE_INDEX_LIST`.
    pub msr_feature_list: Vec<u32>,
    /// `KVM_GET_SUPPORTED_CPUID`.
    pub supported_cpuid: Vec<CpuidEntry>,
}

/// The VM as the scenario configured it (not the capture machinery).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmConfig {
    pub vcpus: u32,
    pub memory_bytes: u64,
    /// The guest CPUID set with `KVM_SET_CPUID2` at start (per-vCPU changes are
    /// `Cpuid` events).
    pub cpuid: Vec<CpuidEntry>,
    /// Quirks disabled at start (`KVM_X86_QUIRK_*` bits).
    pub disabled_quirks: u64,
    /// The scenario's own MSR filter, if any.
    pub msr_filter: Option<MsrFilter>,
    /// The scenario's own user-space MSR exit mask (INVAL 1, UNKNOWN 2, FILTER 4).
    pub user_space_msr: u32,
    pub irqchip: Option<Irqchip>,
    /// MCG_CAP passed to `KVM_X86_SETUP_MCE`, if the VMM set up MCE at start.
    pub mcg_cap: Option<u64>,
}

/// How the trace was captured, kept apart from the VM config: capture machinery
/// is not part of the modelled VM (DESIGN.md, Policies).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureInfo {
    pub mode: CaptureMode,
    /// The recorder's own (deny-all) MSR filter in intercept mode.
    pub filter: Option<MsrFilter>,
    /// The recorder's own user-space MSR exit mask in intercept mode.
    pub user_space_msr: u32,
    /// Free-form details (tracefs instance, import source file, synth pattern).
    pub detail: String,
}

impl Default for CaptureInfo {
    fn default() -> Self {
        CaptureInfo {
            mode: CaptureMode::Intercept,
            filter: None,
            user_space_msr: 0,
            detail: String::new(),
        }
    }
}

/// The guest code that ran.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    /// Scenario name or payload file name.
    pub name: String,
    /// SHA-256 of the guest code bytes, lower-case hex ("" if none).
    pub sha256: String,
}

/// The trace header (written once, after the file preamble).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceHeader {
    /// The kvmtrace version that wrote the trace.
    pub tool_version: String,
    pub host: HostInfo,
    pub vm: VmConfig,
    pub capture: CaptureInfo,
    /// The name of the policy that answered exits live ("" in observe/import).
    pub live_policy: String,
    pub payload: Payload,
    /// Wall-clock start in nanoseconds since the Unix epoch; 0 where determinism
    /// matters more (synth, golden files).
    pub started_unix_ns: u64,
    /// Format 1.2: where `vm` came from (appended; a 1.0/1.1 header reads as
    /// [`ConfigSource::legacy`] of its capture mode).
    pub config_source: ConfigSource,
}

/// Where a trace's VM configuration (`TraceHeader::vm`, and the configuration
/// events) came from, so replay knows which answers rest on an assumed one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigSource {
    /// kvmtrace's own VMM configured the VM (intercept/observe record, synth):
    /// exact.
    #[default]
    Recorder,
    /// The VMM's own configuration ioctls, captured by the ioctl tap from its
    /// start (wrap mode): exact.
    VmmIoctls,
    /// Not seen (attach mode, import, wrap mode with the tap off or failed):
    /// `vm` holds defaults and what the tracepoints showed (e.g. CPUID leaves
    /// the guest executed); replay assumes the rest. `why`: one line.
    Unknown { why: String },
}

impl ConfigSource {
    /// What a header written before format 1.2 means.
    pub fn legacy(mode: CaptureMode) -> ConfigSource {
        match mode {
            CaptureMode::Import => ConfigSource::Unknown {
                why: "imported tracepoint text holds none of the VMM's configuration ioctls".into(),
            },
            CaptureMode::External => ConfigSource::Unknown {
                why: "recorded from tracepoints alone".into(),
            },
            _ => ConfigSource::Recorder,
        }
    }

    /// Whether the configuration is exactly what the VM had.
    pub fn is_exact(&self) -> bool {
        !matches!(self, ConfigSource::Unknown { .. })
    }

    /// For `info`: "recorder (exact)", "vmm ioctls (exact)", "unknown: WHY".
    pub fn describe(&self) -> String {
        match self {
            ConfigSource::Recorder => "kvmtrace's own VMM (exact)".into(),
            ConfigSource::VmmIoctls => "the VMM's ioctls (exact)".into(),
            ConfigSource::Unknown { why } => format!("unknown, assumed ({why})"),
        }
    }
}

/// The header as formats 1.0 and 1.1 wrote it (no `config_source`).
#[derive(Deserialize)]
pub(crate) struct TraceHeaderV1_1 {
    tool_version: String,
    host: HostInfo,
    vm: VmConfig,
    capture: CaptureInfo,
    live_policy: String,
    payload: Payload,
    started_unix_ns: u64,
}

impl From<TraceHeaderV1_1> for TraceHeader {
    fn from(h: TraceHeaderV1_1) -> TraceHeader {
        TraceHeader {
            config_source: ConfigSource::legacy(h.capture.mode),
            tool_version: h.tool_version,
            host: h.host,
            vm: h.vm,
            capture: h.capture,
            live_policy: h.live_policy,
            payload: h.payload,
            started_unix_ns: h.started_unix_ns,
        }
    }
}

/// The uapi name of a `KVM_CAP_*` number the recorder stores in
/// [`HostInfo::caps`] (include/uapi/linux/kvm.h), for human output.
pub fn kvm_cap_name(cap: u32) -> Option<&'static str> {
    Some(match cap {
        0 => "IRQCHIP",
        14 => "MP_STATE",
        31 => "MCE",
        41 => "VCPU_EVENTS",
        55 => "XSAVE",
        116 => "DISABLE_QUIRKS",
        117 => "X86_SMM",
        121 => "SPLIT_IRQCHIP",
        129 => "X2APIC_API",
        143 => "X86_DISABLE_EXITS",
        153 => "GET_MSR_FEATURES",
        188 => "X86_USER_SPACE_MSR",
        189 => "X86_MSR_FILTER",
        204 => "EXIT_ON_EMULATION_FAILURE",
        213 => "DISABLE_QUIRKS2",
        218 => "X86_TRIPLE_FAULT_EVENT",
        _ => return None,
    })
}

/// The uapi name of a `KVM_EXIT_*` reason (include/uapi/linux/kvm.h), e.g.
/// `KVM_EXIT_INTERNAL_ERROR` for 17.
pub fn kvm_exit_name(reason: u32) -> Option<&'static str> {
    const NAMES: [&str; 40] = [
        "KVM_EXIT_UNKNOWN",
        "KVM_EXIT_EXCEPTION",
        "KVM_EXIT_IO",
        "KVM_EXIT_HYPERCALL",
        "KVM_EXIT_DEBUG",
        "KVM_EXIT_HLT",
        "KVM_EXIT_MMIO",
        "KVM_EXIT_IRQ_WINDOW_OPEN",
        "KVM_EXIT_SHUTDOWN",
        "KVM_EXIT_FAIL_ENTRY",
        "KVM_EXIT_INTR",
        "KVM_EXIT_SET_TPR",
        "KVM_EXIT_TPR_ACCESS",
        "KVM_EXIT_S390_SIEIC",
        "KVM_EXIT_S390_RESET",
        "KVM_EXIT_DCR",
        "KVM_EXIT_NMI",
        "KVM_EXIT_INTERNAL_ERROR",
        "KVM_EXIT_OSI",
        "KVM_EXIT_PAPR_HCALL",
        "KVM_EXIT_S390_UCONTROL",
        "KVM_EXIT_WATCHDOG",
        "KVM_EXIT_S390_TSCH",
        "KVM_EXIT_EPR",
        "KVM_EXIT_SYSTEM_EVENT",
        "KVM_EXIT_S390_STSI",
        "KVM_EXIT_IOAPIC_EOI",
        "KVM_EXIT_HYPERV",
        "KVM_EXIT_ARM_NISV",
        "KVM_EXIT_X86_RDMSR",
        "KVM_EXIT_X86_WRMSR",
        "KVM_EXIT_DIRTY_RING_FULL",
        "KVM_EXIT_AP_RESET_HOLD",
        "KVM_EXIT_X86_BUS_LOCK",
        "KVM_EXIT_XEN",
        "KVM_EXIT_RISCV_SBI",
        "KVM_EXIT_RISCV_CSR",
        "KVM_EXIT_NOTIFY",
        "KVM_EXIT_LOONGARCH_IOCSR",
        "KVM_EXIT_MEMORY_FAULT",
    ];
    NAMES.get(reason as usize).copied()
}

#[cfg(test)]
mod tests {
    #[test]
    fn cap_names_match_uapi_numbers() {
        // Spot checks against HOST.md's list (KVM_CAP_DISABLE_QUIRKS2 = 213 ...).
        assert_eq!(super::kvm_cap_name(213), Some("DISABLE_QUIRKS2"));
        assert_eq!(super::kvm_cap_name(188), Some("X86_USER_SPACE_MSR"));
        assert_eq!(super::kvm_cap_name(1), None);
        // The enabled-cap names of the VMM's KVM_ENABLE_CAPs (QEMU 7.2 enables
        // KVM_CAP_MAX_VCPU_ID = 128 on every VM; include/uapi/linux/kvm.h).
        assert_eq!(crate::cap_name(128), "KVM_CAP_MAX_VCPU_ID");
        assert_eq!(crate::cap_name(121), "KVM_CAP_SPLIT_IRQCHIP");
        assert_eq!(crate::cap_name(1), "KVM_CAP_1");
    }
}
