//! `mixed`: every event kind and every seed behaviour, on four vCPUs, as if
//! recorded in intercept mode under `kvm-6.18` with vendor intel (so the VMX
//! rules of IA32_FEAT_CTL apply, SEMANTICS.md §3).
//!
//! Outcomes are not invented here: each one is what `kvmtrace_replayer::Engine`
//! predicts for `kvm-6.18` (decide, then `apply`), so a replay against `kvm-6.18`
//! has no divergence by construction. Where the engine cannot know (`unmodeled`:
//! TSC values, MSRs it does not model) the generator falls back to what a 6.18
//! VMX host would answer.
//!
//! The script follows the five seed behaviours so that older presets diverge:
//! - MONITOR/MWAIT with MWAIT_NEVER_UD_FAULTS and MISC_ENABLE_NO_MWAIT disabled
//!   and MONITOR clear in CPUID: `#UD` from 6.0, NOP before (§1);
//! - RESET at vCPU creation, INIT by IPI with CR0.CD/NW set (§2): the legacy
//!   model (5.10) drops CD/NW and uses RDX 0x600;
//! - IA32_FEAT_CTL host writes of SGX/LMCE bits the guest CPUID lacks: accepted
//!   from 6.2, refused before (§3);
//! - bad WRMSR MCi_CTL/STATUS after SetupMce: `#GP` from 6.0, `vm_failed` EPERM
//!   before (§5);
//! - x2APIC MSRs with x2APIC off and the scenario's INVAL user-space exits on:
//!   deflected to user space in every real kernel, `#GP` with
//!   `deflect_unfilterable = false` (§4).

use std::collections::BTreeMap;

use kvmtrace_format::{
    AfterShutdown, ArchState, CpuVendor, CpuidEntry, DecidedBy, DescTable, EndReason, Event,
    HostInfo, InitSource, IpiMode, Irqchip, LostSource, MsrExitReason, MsrFilter, MsrFilterRange,
    MsrOutcome, MwaitOutcome, Origin, Record, Segment, ShutdownCause, TraceHeader, UserAnswer,
    VmConfig,
};
use kvmtrace_replayer::{Engine, Policy, state};

use super::prng::SplitMix64;
use super::{Sink, SynthError};
use crate::cli::Pattern;

/// The preset the trace is synthesised under.
pub const RECORDED_UNDER: &str = "kvm-6.18";
pub const VCPUS: u32 = 4;
/// The script needs this many events; the rest is filler.
pub const MIN_EVENTS: u64 = 200;

const QUIRK_MISC_ENABLE_NO_MWAIT: u64 = 1 << 4;
const QUIRK_MWAIT_NEVER_UD_FAULTS: u64 = 1 << 6;
const DISABLED_QUIRKS: u64 = QUIRK_MISC_ENABLE_NO_MWAIT | QUIRK_MWAIT_NEVER_UD_FAULTS;
const KVM_CAP_DISABLE_QUIRKS2: u32 = 213;
const KVM_CAP_X86_USER_SPACE_MSR: u32 = 188;
const KVM_CAP_X86_MSR_FILTER: u32 = 189;
const KVM_CAP_MCE: u32 = 31;
const USER_SPACE_MSR_INVAL: u32 = 1;
/// 10 banks | MCG_CTL_P, as the project host's probe used (HOST.md).
const MCG_CAP: u64 = 0x10a;
const CPUID1_EAX: u32 = 0x0009_06ea;

const MSR_TSC: u32 = 0x10;
const MSR_APIC_BASE: u32 = 0x1b;
const MSR_FEAT_CTL: u32 = 0x3a;
const MSR_MCG_CAP: u32 = 0x179;
const MSR_MCG_STATUS: u32 = 0x17a;
const MSR_MISC_ENABLE: u32 = 0x1a0;
const MSR_PAT: u32 = 0x277;
const MSR_MC0_CTL: u32 = 0x400;
const MSR_KVM_PV_BASE: u32 = 0x4b56_4d00;
const CONSOLE_PORT: u16 = 0x3f8;
const REPORT_PORT: u16 = 0xe9;

fn guest_cpuid() -> Vec<CpuidEntry> {
    let leaf1_ecx_supported: u32 =
        1 | (1 << 3) | (1 << 5) | (1 << 19) | (1 << 20) | (1 << 21) | (1 << 31);
    vec![
        CpuidEntry {
            function: 0,
            eax: 0x16,
            ebx: 0x756e_6547, // "Genu"
            edx: 0x4965_6e69, // "ineI"
            ecx: 0x6c65_746e, // "ntel"
            ..CpuidEntry::default()
        },
        CpuidEntry {
            function: 1,
            eax: CPUID1_EAX,
            ebx: 0x0000_0800,
            // SSE3, VMX, SSE4.1/4.2, x2APIC, hypervisor; MONITOR (bit 3) cleared
            // by the VMM, as QEMU does without `-overcommit cpu-pm=on`.
            ecx: leaf1_ecx_supported & !(1 << 3),
            edx: 0x178b_fbff,
            ..CpuidEntry::default()
        },
        CpuidEntry {
            function: 7,
            index: 0,
            flags: 1,
            ..CpuidEntry::default()
        },
        CpuidEntry {
            function: 0x8000_0001,
            edx: (1 << 29) | (1 << 20) | (1 << 11),
            ..CpuidEntry::default()
        },
    ]
}

pub fn header(events: u64, seed: u64) -> TraceHeader {
    let mut h = super::synth_header_base(Pattern::Mixed, events, seed);
    let mut supported = guest_cpuid();
    supported[1].ecx |= 1 << 3;
    h.host = HostInfo {
        kernel_release: "6.18.2".into(),
        kvm_module: "kvm_intel".into(),
        cpu_vendor: Some(CpuVendor::Intel),
        cpu_model: "Intel Xeon (synthetic)".into(),
        caps: vec![
            (KVM_CAP_MCE, 32),
            (KVM_CAP_X86_USER_SPACE_MSR, 7),
            (KVM_CAP_X86_MSR_FILTER, 1),
            (KVM_CAP_DISABLE_QUIRKS2, 0x3ff),
        ],
        valid_quirks: 0x3ff,
        msr_index_list: vec![
            MSR_TSC,
            MSR_APIC_BASE,
            MSR_MCG_STATUS,
            MSR_MISC_ENABLE,
            MSR_PAT,
        ],
        msr_feature_list: vec![0x10a, 0x345],
        supported_cpuid: supported,
    };
    h.vm = VmConfig {
        vcpus: VCPUS,
        memory_bytes: 2 << 20,
        cpuid: guest_cpuid(),
        disabled_quirks: DISABLED_QUIRKS,
        msr_filter: None,
        user_space_msr: 0,
        irqchip: Some(Irqchip::None),
        mcg_cap: None,
    };
    // As the recorder captures in intercept mode: deny-all filter with one empty
    // range (HOST.md: DENY with no range is EINVAL), every reason to user space.
    h.capture.filter = Some(MsrFilter {
        default_deny: true,
        ranges: vec![MsrFilterRange {
            flags: 3,
            base: 0,
            nmsrs: 0x2000,
            bitmap: vec![0; 0x400],
        }],
    });
    h.capture.user_space_msr = 7;
    h.live_policy = RECORDED_UNDER.into();
    h
}

/// SEMANTICS.md §2, consolidated model, VMX: the fallback RESET state.
fn reset_state(vcpu: u32) -> ArchState {
    let data = Segment {
        selector: 0,
        base: 0,
        limit: 0xffff,
        attr: 0x93,
    };
    let mut s = ArchState {
        rip: 0xfff0,
        rflags: 0x2,
        cr0: 0x6000_0010,
        cs: Segment {
            selector: 0xf000,
            base: 0xffff_0000,
            limit: 0xffff,
            attr: 0x9b,
        },
        ds: data,
        es: data,
        fs: data,
        gs: data,
        ss: data,
        ldtr: Segment { attr: 0x82, ..data },
        tr: Segment { attr: 0x8b, ..data },
        gdtr: DescTable {
            base: 0,
            limit: 0xffff,
        },
        idtr: DescTable {
            base: 0,
            limit: 0xffff,
        },
        dr6: 0xffff_0ff0,
        dr7: 0x400,
        apic_base: state::reset_apic_base(vcpu),
        mp_state: 0,
        msrs: vec![(MSR_MISC_ENABLE, 0x1800), (MSR_PAT, 0x0007_0406_0007_0406)],
        ..ArchState::default()
    };
    s.gprs[ArchState::RDX] = 0x600;
    s
}

/// SEMANTICS.md §2, consolidated INIT: CR0.CD/NW kept, RDX = CPUID.1.EAX, APIC
/// base and RESET-only MSRs kept.
fn init_state(vcpu: u32, before: &ArchState) -> ArchState {
    let mut s = reset_state(vcpu);
    s.cr0 = 0x10 | (before.cr0 & 0x6000_0000);
    s.gprs[ArchState::RDX] = u64::from(CPUID1_EAX);
    s.apic_base = before.apic_base;
    s.msrs = before.msrs.clone();
    s.mp_state = 2;
    s
}

/// A vCPU in long mode with caching disabled (CR0.CD|NW), as `init-sipi` sets it.
fn long_mode_state(vcpu: u32) -> ArchState {
    let code = Segment {
        selector: 0x8,
        base: 0,
        limit: 0xffff_ffff,
        attr: 0xa09b,
    };
    let data = Segment {
        selector: 0x10,
        base: 0,
        limit: 0xffff_ffff,
        attr: 0xc093,
    };
    let mut s = reset_state(vcpu);
    s.cr0 = 0xe000_0011;
    s.cr3 = 0x1000;
    s.cr4 = 0x20;
    s.efer = 0x500;
    s.cs = code;
    s.ds = data;
    s.es = data;
    s.ss = data;
    s.rip = 0x0010_0040;
    s.gdtr = DescTable {
        base: 0x500,
        limit: 0x17,
    };
    s.gprs[ArchState::RDX] = 0;
    s
}

struct Gen<'s, 'a> {
    engine: Engine,
    rng: SplitMix64,
    sink: &'s mut Sink<'a>,
    seq: u64,
    time_ns: u64,
    tsc_base: u64,
    /// Fallback MSR values for the engine's unmodeled reads: what was written.
    msrs: BTreeMap<(u32, u32), u64>,
}

impl Gen<'_, '_> {
    fn emit(&mut self, vcpu: u32, event: Event) -> Result<(), SynthError> {
        let rec = Record {
            seq: self.seq,
            vcpu,
            time_ns: self.time_ns,
            event,
        };
        self.engine.apply(&rec);
        (self.sink)(rec)?;
        self.seq += 1;
        self.time_ns += self.rng.range(800, 9_000);
        Ok(())
    }

    fn tsc(&mut self) -> u64 {
        self.tsc_base + self.time_ns * 5 / 2 + self.rng.range(0, 64)
    }

    fn capture(index: u32, origin: Origin) -> Option<MsrExitReason> {
        match origin {
            Origin::Host => None,
            // x2APIC MSRs are never filterable (§4): the recorder sees them only
            // when they fault, through its INVAL exits.
            Origin::Guest if (0x800..=0x8ff).contains(&index) => Some(MsrExitReason::Inval),
            Origin::Guest => Some(MsrExitReason::Filter),
        }
    }

    /// Synthetic outcomes are the policy's, never a kernel's measurement
    /// (`fidelity` scores only kernel-decided outcomes).
    fn decided(_origin: Origin) -> DecidedBy {
        DecidedBy::Vmm
    }

    fn rdmsr(&mut self, vcpu: u32, index: u32, origin: Origin) -> Result<MsrOutcome, SynthError> {
        let fallback = match index {
            MSR_TSC => MsrOutcome::Value(self.tsc()),
            0x800..=0x8ff => MsrOutcome::UserExit {
                reason: MsrExitReason::Inval,
                answer: UserAnswer::Gp,
            },
            // Bank 10 of 10 and the range the scenario's filter denies.
            0x428 | MSR_KVM_PV_BASE => MsrOutcome::InjectGp,
            _ => match self.msrs.get(&(vcpu, index)) {
                Some(&v) => MsrOutcome::Value(v),
                None => MsrOutcome::Value(0),
            },
        };
        let outcome = self
            .engine
            .msr_read(vcpu, index, origin)
            .outcome
            .unwrap_or(fallback);
        self.emit(
            vcpu,
            Event::MsrRead {
                index,
                origin,
                outcome,
                decided_by: Self::decided(origin),
                capture: Self::capture(index, origin),
            },
        )?;
        Ok(outcome)
    }

    /// `fallback_ok`: what a 6.18 VMX host does when the engine cannot say.
    fn wrmsr(
        &mut self,
        vcpu: u32,
        index: u32,
        value: u64,
        origin: Origin,
        fallback: MsrOutcome,
    ) -> Result<MsrOutcome, SynthError> {
        let outcome = self
            .engine
            .msr_write(vcpu, index, value, origin)
            .outcome
            .unwrap_or(fallback);
        if outcome == MsrOutcome::Ok {
            self.msrs.insert((vcpu, index), value);
        }
        self.emit(
            vcpu,
            Event::MsrWrite {
                index,
                value,
                origin,
                outcome,
                decided_by: Self::decided(origin),
                capture: Self::capture(index, origin),
            },
        )?;
        Ok(outcome)
    }

    fn monitor_mwait(
        &mut self,
        vcpu: u32,
        rip: u64,
        fallback: MwaitOutcome,
    ) -> Result<(), SynthError> {
        let outcome = self.engine.monitor(vcpu).outcome.unwrap_or(fallback);
        let rax = 0x20_0000 + u64::from(vcpu) * 0x40;
        self.emit(
            vcpu,
            Event::Monitor {
                rip,
                rax,
                ecx: 0,
                edx: 0,
                outcome,
                decided_by: DecidedBy::Vmm,
            },
        )?;
        if outcome == MwaitOutcome::InjectUd {
            self.emit(
                vcpu,
                Event::Io {
                    port: REPORT_PORT,
                    size: 1,
                    write: true,
                    data: 6,
                },
            )?;
        }
        let outcome = self.engine.mwait(vcpu).outcome.unwrap_or(fallback);
        self.emit(
            vcpu,
            Event::Mwait {
                rip: rip + 3,
                eax: 0,
                ecx: 0,
                outcome,
                decided_by: DecidedBy::Vmm,
            },
        )
    }

    fn reset(&mut self, vcpu: u32) -> Result<(), SynthError> {
        let state = self
            .engine
            .reset_state(vcpu)
            .outcome
            .unwrap_or_else(|| reset_state(vcpu));
        self.emit(
            vcpu,
            Event::Reset {
                state: Box::new(state),
                decided_by: DecidedBy::Vmm,
            },
        )
    }

    fn init(&mut self, vcpu: u32, source: InitSource, before: ArchState) -> Result<(), SynthError> {
        let after = self
            .engine
            .init_state(vcpu, &before)
            .outcome
            .unwrap_or_else(|| init_state(vcpu, &before));
        self.emit(
            vcpu,
            Event::Init {
                source,
                before: Box::new(before),
                after: Box::new(after),
                decided_by: DecidedBy::Vmm,
            },
        )
    }

    fn io(&mut self, vcpu: u32, port: u16, data: u32) -> Result<(), SynthError> {
        self.emit(
            vcpu,
            Event::Io {
                port,
                size: 1,
                write: true,
                data,
            },
        )
    }
}

pub fn generate(
    header: &TraceHeader,
    events: u64,
    seed: u64,
    sink: &mut Sink<'_>,
) -> Result<(), SynthError> {
    if events < MIN_EVENTS {
        return Err(SynthError::TooFewEvents {
            pattern: "mixed",
            min: MIN_EVENTS,
            asked: events,
        });
    }
    let policy =
        Policy::resolve(RECORDED_UNDER, header).map_err(|e| SynthError::Policy(e.to_string()))?;
    let mut rng = SplitMix64::new(seed);
    let tsc_base = 0x0000_0a10_0000_0000 + rng.range(0, 1 << 36);
    let mut g = Gen {
        engine: Engine::new(policy, header),
        rng,
        sink,
        seq: 0,
        time_ns: 0,
        tsc_base,
        msrs: BTreeMap::new(),
    };
    // What a 6.18 VMX host holds at start, for the engine's unmodeled reads.
    for v in 0..VCPUS {
        g.msrs.insert((v, MSR_MISC_ENABLE), 0x1800);
        g.msrs.insert((v, MSR_MCG_CAP), MCG_CAP);
        g.msrs.insert((v, MSR_APIC_BASE), reset_state(v).apic_base);
        for bank in 0..(MCG_CAP & 0xff) as u32 {
            g.msrs.insert((v, MSR_MC0_CTL + 4 * bank), u64::MAX);
        }
    }
    let mut live = vec![true; VCPUS as usize];
    script(&mut g, &mut live)?;

    // Filler up to `events`, leaving one End per live vCPU.
    let ends = live.iter().filter(|&&l| l).count() as u64;
    let runners: Vec<u32> = (0..VCPUS).filter(|&v| live[v as usize]).collect();
    while g.seq + ends < events {
        let vcpu = runners[g.rng.range(0, runners.len() as u64 - 1) as usize];
        match g.rng.range(0, 99) {
            0..=54 => {
                g.rdmsr(vcpu, MSR_TSC, Origin::Guest)?;
            }
            55..=69 => {
                let ch = u32::from(b'a') + g.rng.range(0, 25) as u32;
                g.io(vcpu, CONSOLE_PORT, ch)?;
            }
            70..=77 => {
                g.rdmsr(vcpu, MSR_MISC_ENABLE, Origin::Guest)?;
            }
            78..=84 => {
                g.rdmsr(vcpu, MSR_APIC_BASE, Origin::Guest)?;
            }
            85..=91 => {
                g.rdmsr(vcpu, MSR_FEAT_CTL, Origin::Guest)?;
            }
            92..=96 => {
                g.wrmsr(vcpu, MSR_MCG_STATUS, 0, Origin::Guest, MsrOutcome::Ok)?;
            }
            _ => g.emit(vcpu, Event::Halt)?,
        }
    }
    for vcpu in runners {
        g.emit(
            vcpu,
            Event::End {
                reason: EndReason::Finished,
            },
        )?;
    }
    Ok(())
}

/// The fixed part: configuration, then the five behaviours. Marks vCPUs that
/// stopped (`live[v] = false`, their `End` already emitted).
fn script(g: &mut Gen<'_, '_>, live: &mut [bool]) -> Result<(), SynthError> {
    use MsrOutcome::{InjectGp, Ok as WOk};
    let gp = InjectGp;

    // VM setup: quirks, the scenario's own filter (KVM PV MSRs denied), then
    // each vCPU's RESET state as read back after KVM_CREATE_VCPU, and CPUID.
    g.emit(
        0,
        Event::QuirksDisabled {
            cap: KVM_CAP_DISABLE_QUIRKS2,
            mask: DISABLED_QUIRKS,
        },
    )?;
    g.emit(
        0,
        Event::MsrFilter {
            filter: MsrFilter {
                default_deny: false,
                ranges: vec![MsrFilterRange {
                    flags: 3,
                    base: MSR_KVM_PV_BASE,
                    nmsrs: 8,
                    bitmap: vec![0],
                }],
            },
        },
    )?;
    for v in 0..VCPUS {
        g.reset(v)?;
        g.emit(
            v,
            Event::Cpuid {
                entries: guest_cpuid(),
            },
        )?;
    }
    g.emit(0, Event::SetupMce { mcg_cap: MCG_CAP })?;

    // ---- §1 MONITOR/MWAIT: #UD while MWAIT is off, NOP once MISC_ENABLE[18] on.
    let misc = g.rdmsr(0, MSR_MISC_ENABLE, Origin::Guest)?;
    let misc = match misc {
        MsrOutcome::Value(v) => v,
        _ => 0x1800,
    };
    g.monitor_mwait(0, 0x10_0100, MwaitOutcome::InjectUd)?;
    g.monitor_mwait(1, 0x10_0100, MwaitOutcome::InjectUd)?;
    // Flipping BTS/PEBS_UNAVAIL (bits 11, 12) is refused from 6.0.
    g.wrmsr(0, MSR_MISC_ENABLE, misc ^ (1 << 11), Origin::Guest, gp)?;
    g.wrmsr(0, MSR_MISC_ENABLE, misc | (1 << 18), Origin::Guest, WOk)?;
    g.rdmsr(0, MSR_MISC_ENABLE, Origin::Guest)?;
    g.monitor_mwait(0, 0x10_0140, MwaitOutcome::Nop)?;
    g.monitor_mwait(1, 0x10_0140, MwaitOutcome::InjectUd)?;
    g.wrmsr(0, MSR_MISC_ENABLE, misc, Origin::Guest, WOk)?;
    g.monitor_mwait(0, 0x10_0180, MwaitOutcome::InjectUd)?;

    // ---- §3 IA32_FEAT_CTL, VMX rules: host writes of bits the guest CPUID lacks.
    g.rdmsr(0, MSR_FEAT_CTL, Origin::Host)?;
    g.wrmsr(0, MSR_FEAT_CTL, 1 << 18, Origin::Host, WOk)?; // SGX, no CPUID.SGX
    g.wrmsr(0, MSR_FEAT_CTL, 1 << 20, Origin::Host, WOk)?; // LMCE, no MCG_LMCE_P
    g.wrmsr(0, MSR_FEAT_CTL, 0, Origin::Host, WOk)?;
    g.rdmsr(0, MSR_FEAT_CTL, Origin::Guest)?;
    g.wrmsr(0, MSR_FEAT_CTL, 0x4, Origin::Guest, WOk)?;
    g.wrmsr(0, MSR_FEAT_CTL, 0x5, Origin::Guest, WOk)?;
    g.rdmsr(0, MSR_FEAT_CTL, Origin::Guest)?;
    g.wrmsr(0, MSR_FEAT_CTL, 0x5, Origin::Guest, gp)?; // locked: #GP
    g.wrmsr(0, MSR_FEAT_CTL, 0x7, Origin::Host, WOk)?; // host may rewrite when locked
    g.wrmsr(1, MSR_FEAT_CTL, 0x3, Origin::Guest, WOk)?;
    g.rdmsr(1, MSR_FEAT_CTL, Origin::Guest)?;

    // The scenario's own filter denies the KVM PV range; FILTER is not in its
    // user-space mask, so the guest gets #GP.
    g.rdmsr(2, MSR_KVM_PV_BASE, Origin::Guest)?;

    // ---- §4 x2APIC MSRs with x2APIC off and INVAL exits enabled by the VMM.
    g.emit(
        0,
        Event::UserSpaceMsr {
            mask: USER_SPACE_MSR_INVAL,
        },
    )?;
    g.rdmsr(0, 0x802, Origin::Guest)?;
    g.rdmsr(1, 0x803, Origin::Guest)?;
    g.wrmsr(
        0,
        0x808,
        0,
        Origin::Guest,
        MsrOutcome::UserExit {
            reason: MsrExitReason::Inval,
            answer: UserAnswer::Gp,
        },
    )?;
    g.rdmsr(2, 0x830, Origin::Guest)?;
    g.rdmsr(0, MSR_APIC_BASE, Origin::Guest)?;

    // ---- §2 INIT/SIPI: vCPU 0 INITs vCPU 1, which had set CR0.CD|NW.
    g.emit(
        0,
        Event::Ipi {
            dst: 1,
            vector: 0,
            mode: IpiMode::Init,
        },
    )?;
    g.init(1, InitSource::Ipi { from: 0 }, long_mode_state(1))?;
    g.emit(
        0,
        Event::Ipi {
            dst: 1,
            vector: 0x10,
            mode: IpiMode::Sipi,
        },
    )?;
    g.emit(
        1,
        Event::Sipi {
            from: 0,
            vector: 0x10,
        },
    )?;
    g.io(1, REPORT_PORT, 0x51)?;

    // A #UD the guest raised itself (ud2), which the kernel injected.
    g.emit(
        2,
        Event::Exception {
            vector: 6,
            error_code: None,
            reinjected: false,
        },
    )?;
    // An exit the recorder could not decode, kept raw.
    g.emit(
        2,
        Event::RawExit {
            exit_reason: 17,
            data: vec![0x01, 0x00, 0x00, 0x00, 0x0f, 0x0b],
        },
    )?;
    // The writer fell behind once under `--on-full drop`.
    g.emit(
        2,
        Event::Lost {
            source: LostSource::Channel,
            count: 3,
        },
    )?;

    // ---- §5 MCE banks after KVM_X86_SETUP_MCE (10 banks | MCG_CTL_P), on
    // vCPU 2, last: before 6.0 a bad write kills the guest (vm_failed, EPERM),
    // after which everything that vCPU does would diverge as a consequence.
    g.rdmsr(2, MSR_MCG_CAP, Origin::Guest)?;
    g.rdmsr(2, MSR_MC0_CTL, Origin::Guest)?;
    g.wrmsr(2, MSR_MC0_CTL, 0, Origin::Guest, WOk)?;
    g.wrmsr(2, MSR_MC0_CTL, u64::MAX, Origin::Guest, WOk)?;
    g.wrmsr(2, MSR_MC0_CTL + 8 + 2, 0xdead_b000, Origin::Guest, WOk)?; // MC2_ADDR
    g.rdmsr(2, MSR_MC0_CTL + 40, Origin::Guest)?; // MC10_CTL: bank 10 >= bank_num
    g.wrmsr(2, MSR_MC0_CTL + 1, 1, Origin::Host, WOk)?;
    g.wrmsr(2, MSR_MC0_CTL, 1, Origin::Host, gp)?;
    g.wrmsr(2, MSR_MC0_CTL, 1, Origin::Guest, gp)?;
    g.wrmsr(2, MSR_MC0_CTL + 1, 1, Origin::Guest, gp)?;
    // Bit 0 clear: tolerated from 6.0 (single-bit ECC patch).
    g.wrmsr(2, MSR_MC0_CTL + 4, !1, Origin::Guest, WOk)?;
    g.emit(
        2,
        Event::End {
            reason: EndReason::Finished,
        },
    )?;
    live[2] = false;

    // ---- §2 SHUTDOWN: vCPU 3 triple-faults.
    let rip = 0x10_0200;
    let then = g.engine.shutdown(3).outcome.unwrap_or(AfterShutdown::Stop);
    g.emit(
        3,
        Event::Shutdown {
            rip,
            cause: ShutdownCause::TripleFault,
            then,
            decided_by: DecidedBy::Vmm,
        },
    )?;
    match then {
        AfterShutdown::Reset => g.reset(3)?,
        AfterShutdown::Init => g.init(3, InitSource::Shutdown, long_mode_state(3))?,
        AfterShutdown::Stop | AfterShutdown::Resume => {}
    }
    g.emit(
        3,
        Event::End {
            reason: EndReason::Shutdown,
        },
    )?;
    live[3] = false;
    Ok(())
}
