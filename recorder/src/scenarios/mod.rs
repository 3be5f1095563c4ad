//! Built-in guest scenarios: guest code (assembled with iced-x86) plus the VMM-side
//! configuration and host steps around it. The recorder runs a [`ScenarioSpec`];
//! it knows nothing about any particular scenario.
//!
//! (Contract between the recorder and the scenarios: keep these types; extend them.)
//!
//! One file per scenario; each exposes `spec(&ScenarioParams)` and, where the
//! `tour` reuses it, `body(&mut Guest, ..)` that emits its guest code.

mod apic_ipi;
mod asm;
mod bit_probe;
mod feat_ctl;
mod init_sipi;
mod mce;
mod misc_enable;
mod msr_loop;
mod msr_suite;
mod msr_sweep;
mod mwait;
mod self_init;
mod tour;
mod triple_fault;
mod x2apic;
mod x2apic_regs;

use iced_x86::IcedError;
use kvmtrace_format::{AfterShutdown, Irqchip, MsrFilter};

use crate::ScenarioInfo;
use crate::layout;

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

/// Why a scenario could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("unknown scenario {name:?}; known: {known}")]
    Unknown { name: String, known: String },
    #[error("scenario {name:?} runs on {min}..={max} vCPUs, not {got}")]
    Vcpus {
        name: &'static str,
        got: u32,
        min: u32,
        max: u32,
    },
    #[error("scenario {name:?} takes at least 1 iteration, not 0")]
    Iterations { name: &'static str },
    #[error("assembling the guest code of scenario {name:?}")]
    Assemble {
        name: &'static str,
        #[source]
        source: IcedError,
    },
    #[error("scenario {name:?}: region at {addr:#x} ({len} bytes) is outside the guest layout")]
    Region { name: String, addr: u64, len: usize },
    #[error("scenario {name:?}: {what}")]
    Inconsistent { name: String, what: String },
}

/// Most vCPUs a scenario that runs the same code on every vCPU accepts: what
/// the layout has stacks for.
pub const MAX_VCPUS: u32 = layout::MAX_VCPUS;

struct Entry {
    name: &'static str,
    about: &'static str,
    build: fn(&ScenarioParams) -> Result<ScenarioSpec, ScenarioError>,
}

const SCENARIOS: &[Entry] = &[
    Entry {
        name: "mwait",
        about: "MONITOR then MWAIT with MONITOR/MWAIT cleared in the guest CPUID (§1)",
        build: mwait::spec,
    },
    Entry {
        name: "misc-enable-mwait",
        about: "MISC_ENABLE.ENABLE_MWAIT (bit 18) set and cleared, MONITOR/MWAIT after each (§1)",
        build: misc_enable::spec_default,
    },
    Entry {
        name: "misc-enable-no-mwait",
        about: "misc-enable-mwait with quirk MISC_ENABLE_NO_MWAIT disabled: bit 18 drives CPUID (§1)",
        build: misc_enable::spec_no_mwait_quirk,
    },
    Entry {
        name: "mwait-ud",
        about: "misc-enable-mwait with quirk MWAIT_NEVER_UD_FAULTS disabled (#UD where MWAIT is off)",
        build: misc_enable::spec_ud,
    },
    Entry {
        name: "mwait-strict",
        about: "misc-enable-mwait with both MWAIT quirks disabled (6.15+ follows MISC_ENABLE[18])",
        build: misc_enable::spec_strict,
    },
    Entry {
        name: "feat-ctl",
        about: "IA32_FEAT_CTL: host writes of each bit, guest reads, guest writes before/after LOCKED (§3)",
        build: feat_ctl::spec,
    },
    Entry {
        name: "mce",
        about: "10 MCE banks: good and bad MCi_CTL/STATUS writes, HWCR[18], MCG_*, CTL2, bank 10 (§5)",
        build: mce::spec,
    },
    Entry {
        name: "x2apic-deflect",
        about: "x2APIC MSRs read and written with x2APIC off, then on via APIC base, then off (§4)",
        build: x2apic::spec,
    },
    Entry {
        name: "x2apic-regs",
        about: "every x2APIC register read and written (legal, illegal), mode switches, PMU, PRED/FLUSH_CMD, PV MSRs",
        build: x2apic_regs::spec,
    },
    Entry {
        name: "apic-ipi",
        about: "x2APIC IPI+EOI loop on 2 vCPUs (--iterations, 200), self-IPI, NMI, broadcast, timer, TPR, APIC base",
        build: apic_ipi::spec,
    },
    Entry {
        name: "self-init",
        about: "vCPU 1 INITs itself via the x2APIC ICR, vCPU 0 SIPIs it, it reads the INIT state; then INIT from vCPU 0",
        build: self_init::spec,
    },
    Entry {
        name: "msr-sweep",
        about: "one RDMSR of each architectural, AMD and KVM MSR the kernel knows (~190 reads)",
        build: msr_sweep::spec,
    },
    Entry {
        name: msr_suite::NAME,
        about: "speculation, EFER, segment bases, TSC, kvmclock/PV, MTRR and PMU MSRs as an MSR test suite uses them",
        build: msr_suite::spec,
    },
    Entry {
        name: msr_suite::NAME_BARE,
        about: "msr-suite with the speculation, TSC_ADJUST, RDTSCP and KVM PV CPUID bits cleared",
        build: msr_suite::spec_bare,
    },
    Entry {
        name: "triple-fault",
        about: "UD2 with an empty IDT: triple fault (KVM_EXIT_SHUTDOWN), resumed past the fault (§2)",
        build: triple_fault::spec,
    },
    Entry {
        name: "init-sipi",
        about: "vCPU 0 sends INIT+SIPI to vCPU 1 (CR0.CD set before INIT), which reports from real mode (§2)",
        build: init_sipi::spec,
    },
    Entry {
        name: "init-sipi-cold",
        about: "INIT+SIPI to a vCPU that never ran (INIT from the RESET state) (§2)",
        build: init_sipi::spec_cold,
    },
    Entry {
        name: "msr-loop",
        about: "RDMSR(TSC) in a loop, --iterations N (default 20000)",
        build: msr_loop::spec,
    },
    Entry {
        name: "bit-probe",
        about: "every MSR the model has a rule about: read, write back, flip each special bit, restore",
        build: bit_probe::spec,
    },
    Entry {
        name: "tour",
        about: "a short run through every behaviour above on 2 vCPUs (the demo)",
        build: tour::spec,
    },
];

/// The built-in scenarios, one line each.
pub fn list() -> Vec<ScenarioInfo> {
    SCENARIOS
        .iter()
        .map(|e| ScenarioInfo {
            name: e.name,
            about: e.about,
        })
        .collect()
}

/// Build a scenario by name (`None` if unknown or the parameters do not fit;
/// [`try_build`] says why).
pub fn build(name: &str, params: &ScenarioParams) -> Option<ScenarioSpec> {
    try_build(name, params).ok()
}

/// Build a scenario by name, checked against the guest layout.
pub fn try_build(name: &str, params: &ScenarioParams) -> Result<ScenarioSpec, ScenarioError> {
    let entry =
        SCENARIOS
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| ScenarioError::Unknown {
                name: name.to_string(),
                known: SCENARIOS
                    .iter()
                    .map(|e| e.name)
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
    let spec = (entry.build)(params)?;
    spec.validate()?;
    Ok(spec)
}

impl ScenarioSpec {
    /// Every vCPU enters long mode at `rip` with `regions` loaded; everything
    /// else at its default: no CPUID edits, quirks, irqchip, MCE, MSR filter,
    /// setup or host steps; stop on shutdown.
    pub fn long_mode(name: &str, vcpus: u32, regions: Vec<Region>, rip: u64) -> Self {
        ScenarioSpec {
            name: name.to_string(),
            vcpus,
            regions,
            starts: (0..vcpus).map(|_| VcpuStart::LongMode { rip }).collect(),
            cpuid: Vec::new(),
            disabled_quirks: 0,
            irqchip: Irqchip::None,
            mcg_cap: None,
            user_space_msr: 0,
            msr_filter: None,
            setup: Vec::new(),
            host_steps: Vec::new(),
            on_shutdown: OnShutdown::Stop,
        }
    }

    /// One vCPU-independent scenario: `code` at `CODE_ADDR` run by every vCPU
    /// from there, plus the zeroed data region; everything else at its default.
    fn new(name: &str, vcpus: u32, code: Vec<u8>, host_steps: Vec<HostStep>) -> Self {
        let regions = vec![
            Region {
                addr: layout::CODE_ADDR,
                bytes: code,
            },
            Region {
                addr: layout::DATA_ADDR,
                bytes: vec![0; asm::DATA_REGION_SIZE],
            },
        ];
        ScenarioSpec {
            host_steps,
            ..Self::long_mode(name, vcpus, regions, layout::CODE_ADDR)
        }
    }

    /// Check that regions fit the guest layout, one start per vCPU, host steps
    /// name existing vCPUs.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let bad = |what: String| ScenarioError::Inconsistent {
            name: self.name.clone(),
            what,
        };
        if self.starts.len() != self.vcpus as usize {
            return Err(bad(format!(
                "{} starts for {} vCPUs",
                self.starts.len(),
                self.vcpus
            )));
        }
        if !self.regions.iter().any(|r| r.addr == layout::CODE_ADDR) {
            return Err(bad("no code region at CODE_ADDR".into()));
        }
        let areas = [
            (layout::CODE_ADDR, layout::CODE_MAX),
            (layout::DATA_ADDR, layout::DATA_SIZE),
            (
                layout::SIPI_PAGE_MIN,
                layout::SIPI_PAGE_MAX - layout::SIPI_PAGE_MIN,
            ),
        ];
        for r in &self.regions {
            let len = r.bytes.len() as u64;
            let fits = areas
                .iter()
                .any(|&(start, size)| r.addr >= start && r.addr + len <= start + size);
            if !fits || r.addr + len > layout::MEM_SIZE {
                return Err(ScenarioError::Region {
                    name: self.name.clone(),
                    addr: r.addr,
                    len: r.bytes.len(),
                });
            }
        }
        for (i, s) in self.starts.iter().enumerate() {
            if let VcpuStart::LongMode { rip } = s
                && !(layout::CODE_ADDR..layout::CODE_ADDR + layout::CODE_MAX).contains(rip)
            {
                return Err(bad(format!(
                    "vCPU {i} starts at {rip:#x}, outside the code"
                )));
            }
        }
        // vCPU 0 is the BSP: someone must be running to send the SIPI.
        if self.starts.first() == Some(&VcpuStart::WaitForSipi) {
            return Err(bad("vCPU 0 cannot wait for SIPI".into()));
        }
        let mut steps: Vec<&HostStep> = self.setup.iter().chain(&self.host_steps).collect();
        while let Some(step) = steps.pop() {
            match step {
                HostStep::WriteMsr { vcpu, .. } | HostStep::ReadMsr { vcpu, .. }
                    if *vcpu >= self.vcpus =>
                {
                    return Err(bad(format!("host step on vCPU {vcpu}")));
                }
                HostStep::Seq(inner) => steps.extend(inner),
                _ => {}
            }
        }
        Ok(())
    }
}

/// The vCPU count: `--vcpus` if given and in `min..=max`, else `default`.
fn vcpus(
    name: &'static str,
    params: &ScenarioParams,
    default: u32,
    min: u32,
    max: u32,
) -> Result<u32, ScenarioError> {
    match params.vcpus {
        None => Ok(default),
        Some(n) if (min..=max).contains(&n) => Ok(n),
        Some(got) => Err(ScenarioError::Vcpus {
            name,
            got,
            min,
            max,
        }),
    }
}

/// The prologue of the scenarios whose vCPUs all run one program: the vCPU
/// count (default 1, at most `max_vcpus`), `body` followed by `done(0)`, the
/// spec with everything else at its default (the caller adjusts it).
fn one_program(
    name: &'static str,
    params: &ScenarioParams,
    max_vcpus: u32,
    body: impl FnOnce(&mut asm::Guest) -> asm::R,
) -> Result<ScenarioSpec, ScenarioError> {
    let vcpus = vcpus(name, params, 1, 1, max_vcpus)?;
    let err = assemble_err(name);
    let mut g = asm::Guest::new().map_err(err)?;
    body(&mut g).and_then(|()| g.done(0)).map_err(err)?;
    let (code, steps) = g.finish().map_err(err)?;
    Ok(ScenarioSpec::new(name, vcpus, code, steps))
}

/// Wraps an assembler error with the scenario's name.
fn assemble_err(name: &'static str) -> impl Fn(IcedError) -> ScenarioError + Copy {
    move |source| ScenarioError::Assemble { name, source }
}

#[cfg(test)]
mod tests;
