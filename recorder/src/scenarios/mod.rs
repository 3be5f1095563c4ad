//! Built-in guest scenarios: guest code (assembled with iced-x86) plus the VMM-side
//! configuration and host steps around it. The recorder runs a [`ScenarioSpec`];
//! it knows nothing about any particular scenario.
//!
//! (Contract between the recorder and the scenarios: keep these types; extend them.)

use kvmtrace_format::{AfterShutdown, Irqchip, MsrFilter};

use crate::ScenarioInfo;

/// Parameters from the command line.
#[derive(Clone, Debug, Default)]
pub struct ScenarioParams {
    /// `--vcpus`, if given.
    pub vcpus: Option<u32>,
    /// `--iterations`, if given (looping scenarios).
    pub iterations: Option<u64>,
}

/// A block of guest code or data at a guest-physical address.
#[derive(Clone, Debug)]
pub struct Region {
    pub addr: u64,
    pub bytes: Vec<u8>,
}

/// How a vCPU starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VcpuStart {
    /// In 64-bit long mode at this RIP (see `layout`).
    LongMode { rip: u64 },
    /// Waiting for INIT + SIPI from another vCPU (user-space LAPIC); it starts in
    /// real mode at `vector << 12` as the policy's INIT state says.
    WaitForSipi,
}

/// A CPUID edit applied to `KVM_GET_SUPPORTED_CPUID` before `KVM_SET_CPUID2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuidEdit {
    Set {
        function: u32,
        index: u32,
        reg: CpuidReg,
        bit: u8,
    },
    Clear {
        function: u32,
        index: u32,
        reg: CpuidReg,
        bit: u8,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuidReg {
    Eax,
    Ebx,
    Ecx,
    Edx,
}

/// Something the VMM does on the guest's behalf, at start or when the guest
/// executes `out HOSTCALL, eax = n` (n indexes `ScenarioSpec::host_steps`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostStep {
    /// `KVM_SET_MSRS` of one MSR on `vcpu` (recorded as a host-origin `MsrWrite`).
    WriteMsr { vcpu: u32, index: u32, value: u64 },
    /// `KVM_GET_MSRS` of one MSR on `vcpu` (recorded as a host-origin `MsrRead`).
    ReadMsr { vcpu: u32, index: u32 },
    /// Several steps in order.
    Seq(Vec<HostStep>),
}

/// What the VMM does after a triple fault (`KVM_EXIT_SHUTDOWN`), when the policy
/// leaves it to the VMM (VMX / `kvm_pvm`: the kernel changes nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnShutdown {
    /// Stop the VM.
    Stop,
    /// Skip the faulting instruction and continue (HOST.md: registers are those at
    /// the fault).
    ResumePastFault,
    /// Apply the policy's INIT state, as SVM does since 5.15.
    Init,
    /// Apply the policy's RESET state.
    Reset,
}

impl OnShutdown {
    pub fn as_after(self) -> AfterShutdown {
        match self {
            OnShutdown::Stop => AfterShutdown::Stop,
            OnShutdown::ResumePastFault => AfterShutdown::Resume,
            OnShutdown::Init => AfterShutdown::Init,
            OnShutdown::Reset => AfterShutdown::Reset,
        }
    }
}

/// Everything the recorder needs to run one scenario.
#[derive(Clone, Debug)]
pub struct ScenarioSpec {
    pub name: String,
    pub vcpus: u32,
    /// Code and data to load (at least one region at `layout::CODE_ADDR`).
    pub regions: Vec<Region>,
    /// One entry per vCPU.
    pub starts: Vec<VcpuStart>,
    pub cpuid: Vec<CpuidEdit>,
    /// `KVM_X86_QUIRK_*` bits to disable with `KVM_CAP_DISABLE_QUIRKS2`.
    pub disabled_quirks: u64,
    /// `None`: no in-kernel irqchip, user-space LAPIC (needed for INIT/SIPI).
    pub irqchip: Irqchip,
    /// `KVM_X86_SETUP_MCE` with this MCG_CAP before the run.
    pub mcg_cap: Option<u64>,
    /// The scenario's own `KVM_CAP_X86_USER_SPACE_MSR` mask (usually 0).
    pub user_space_msr: u32,
    /// The scenario's own MSR filter (usually none).
    pub msr_filter: Option<MsrFilter>,
    /// Host steps run before any vCPU starts, in order.
    pub setup: Vec<HostStep>,
    /// Host steps the guest triggers with `out HOSTCALL`.
    pub host_steps: Vec<HostStep>,
    pub on_shutdown: OnShutdown,
}

/// The built-in scenarios, one line each.
pub fn list() -> Vec<ScenarioInfo> {
    Vec::new()
}

/// Build a scenario by name.
pub fn build(name: &str, params: &ScenarioParams) -> Option<ScenarioSpec> {
    let _ = (name, params);
    None
}
