//! The engine: a policy plus the guest-visible state it has folded so far.
//!
//! The recorder asks an engine what KVM would answer (`msr_read`, `mwait`, ...)
//! and then folds the record with the outcome it used (`apply`); the replayer
//! does the same with each policy's own outcome (open loop, DESIGN.md).

use kvmtrace_format::{
    AfterShutdown, ArchState, CpuidEntry, Event, Irqchip, MsrFilter, MsrOutcome, MwaitOutcome,
    Origin, Record, TraceHeader,
};

use crate::model::Store;
use crate::policy::{Policy, QuirkApi};
use crate::quirks;
use crate::rules::{self, Rule};
use crate::state::{self, Filter, VcpuState, VmState};

/// What a policy predicts for one action: `outcome` is `None` where the model
/// cannot know (TSC value, an MSR it does not model): such outcomes are
/// `unmodeled`, never agreement or divergence. `rule` names the rule that decided
/// (switch or quirk, SEMANTICS.md section, release).
///
/// A predicted `MsrOutcome::UserExit` carries a placeholder `answer`
/// (`UserAnswer::Gp`): the answer is the VMM's, not KVM's; the replay compares
/// the reason and takes the answer from the recording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prediction<T> {
    pub outcome: Option<T>,
    pub rule: Rule,
}

impl<T> Prediction<T> {
    pub fn unmodeled() -> Self {
        Prediction {
            outcome: None,
            rule: rules::UNMODELED,
        }
    }

    pub fn new(outcome: T, rule: Rule) -> Self {
        Prediction {
            outcome: Some(outcome),
            rule,
        }
    }
}

/// A predicted RESET/INIT state: which parts of `state` the model knows.
/// `state.msrs` holds only the MSRs the model knows (sorted); segment attributes
/// are known unless `attrs_known` is false (vendor `pvm`, see host-notes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatePrediction {
    pub state: ArchState,
    pub attrs_known: bool,
    pub rule: Rule,
}

/// A policy and the state folded from the events so far.
#[derive(Clone, Debug)]
pub struct Engine {
    pub(crate) policy: Policy,
    pub(crate) vm: VmState,
    pub(crate) vcpus: Vec<VcpuState>,
    /// Where a vCPU is dead (`vm_failed`), the seq that killed it.
    pub(crate) dead: Vec<Option<u64>>,
    /// Per target vCPU: the vector of the last SIPI the trace showed for it
    /// since its last INIT IPI (`init_prediction_seen`).
    pub(crate) sipi: Vec<Option<u8>>,
    pub(crate) template: VcpuState,
    /// Initial CPUID from the header, applied to vCPUs created later.
    header_cpuid: Vec<CpuidEntry>,
    header_mcg_cap: Option<u64>,
    /// The trace was imported from kernel text (unknown start state).
    pub(crate) imported: bool,
    /// What the header says about the VMM's accesses (`model::host`).
    pub(crate) host_trace: crate::model::HostTrace,
    /// `KVM_GET_SUPPORTED_CPUID` from the header: a feature KVM does not
    /// support is absent for the guest whatever its CPUID (6.13+ cpu_caps =
    /// guest CPUID ∩ KVM caps), which decides CPUID-gated MSRs when the guest
    /// never executed the leaf (imports).
    pub(crate) supported: state::CpuidBits,
    /// Per-vCPU state and errors of the policy's hooks (`crate::external`).
    pub(crate) hooks: crate::external::EngineHooks,
    /// The header says which irqchip the VM has (an import may not).
    pub(crate) header_irqchip_known: bool,
    /// A `KernelInit` was seen: the capture reports each accepted INIT per
    /// target, so sender-side `Ipi` INITs are not needed (`model::lapic`).
    pub(crate) kernel_inits_seen: bool,
    /// A capture of another VMM (wrap/attach): it traces
    /// `kvm_apic_accept_irq` for INIT, so every accepted INIT comes as a
    /// `KernelInit` of its target after the sender's `Ipi` (`model::lapic`).
    pub(crate) accept_irq_traced: bool,
    /// The VMM's `KVM_ENABLE_CAP`s as this policy answered them (`model::host`).
    pub(crate) vmm_caps: crate::model::VmmCaps,
}

impl Engine {
    pub fn new(policy: Policy, header: &TraceHeader) -> Engine {
        let irqchip = header.vm.irqchip.unwrap_or(Irqchip::None);
        // Imports and recordings of other VMMs (tracepoints only) start from
        // unknown state: the VMM set registers and MSRs nobody saw.
        let imported = matches!(
            header.capture.mode,
            kvmtrace_format::CaptureMode::Import | kvmtrace_format::CaptureMode::External
        );
        let vm = VmState {
            disabled_quirks: 0,
            user_space_msr: 0,
            filter: None,
            irqchip,
            irqchip_known: !imported || header.vm.irqchip.is_some(),
            wall_clock: (!imported).then_some(0),
        };
        let mut template = VcpuState::created(u32::MAX, misc_enable_at_reset(&policy), irqchip);
        // An imported text starts mid-run: no register value is known (issue 6
        // item 5); observe/intercept recordings start at vCPU creation.
        if imported {
            template.spec_ctrl = None;
            template.pv = crate::model::PvRegs::default();
            template.regs_known = 0;
            template.unknown = state::U_ALL;
            template.cpuid_complete = false;
            template.cpuid.leaves = 0;
        }
        let host_trace = crate::model::HostTrace::of(header);
        let mut e = Engine {
            policy,
            vm,
            vcpus: Vec::new(),
            dead: Vec::new(),
            sipi: Vec::new(),
            template,
            header_cpuid: header.vm.cpuid.clone(),
            header_mcg_cap: header.vm.mcg_cap,
            imported,
            host_trace,
            supported: state::CpuidBits::from_entries(&header.host.supported_cpuid),
            hooks: Default::default(),
            header_irqchip_known: header.vm.irqchip.is_some(),
            kernel_inits_seen: false,
            accept_irq_traced: header.capture.mode == kvmtrace_format::CaptureMode::External,
            vmm_caps: Default::default(),
        };
        // The scenario's configuration, in the order a VMM applies it: quirks,
        // user-space MSR mask and filter (VM ioctls), then per vCPU CPUID and MCE.
        e.disable_quirks(quirks_cap(&e.policy), header.vm.disabled_quirks);
        e.set_user_space_msr(header.vm.user_space_msr);
        if let Some(f) = &header.vm.msr_filter {
            e.set_msr_filter(f);
        }
        let n = (header.vm.vcpus as usize).clamp(1, state::MAX_VCPUS);
        for i in 0..n {
            e.create_vcpu(i as u32);
        }
        // vCPUs the trace uses beyond the header's count start like the others.
        e.template = e.configured_vcpu(u32::MAX);
        e
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The folded state of `vcpu` (a fresh vCPU's if it never appeared).
    pub fn vcpu_state(&self, vcpu: u32) -> &VcpuState {
        self.vcpus.get(vcpu as usize).unwrap_or(&self.template)
    }

    pub fn vm_state(&self) -> &VmState {
        &self.vm
    }

    /// The seq of the `vm_failed` that killed `vcpu`, if it is dead.
    pub fn dead_since(&self, vcpu: u32) -> Option<u64> {
        self.dead.get(vcpu as usize).copied().flatten()
    }

    /// A vCPU as the VMM configures it at start: RESET state, the header's
    /// CPUID and MCE setup.
    fn configured_vcpu(&self, id: u32) -> VcpuState {
        let mut v = VcpuState::created(id, misc_enable_at_reset(&self.policy), self.vm.irqchip);
        if self.imported {
            v.id_known = false;
            v.spec_ctrl = None;
            v.pv = crate::model::PvRegs::default();
            v.regs_known = 0;
            v.unknown = state::U_ALL;
            v.cpuid_complete = false;
            v.cpuid.leaves = 0;
        }
        // The ioctl tap saw the VMM from its start: every host write is in
        // the trace, so the host-only registers hold their creation values
        // until one shows (`model::host`).
        if self.host_trace.vmm_msrs_seen {
            v.host = crate::model::HostRegs::at_creation();
        }
        if !self.header_cpuid.is_empty() {
            set_cpuid_on(
                &mut v,
                &self.header_cpuid,
                self.vm.quirk(quirks::MISC_ENABLE_NO_MWAIT),
            );
        }
        if let Some(cap) = self.header_mcg_cap {
            setup_mce_on(&mut v, cap);
        }
        v
    }

    fn create_vcpu(&mut self, id: u32) {
        let v = self.configured_vcpu(id);
        self.vcpus.push(v);
        self.dead.push(None);
    }

    /// The vCPU's state for folding, creating vCPUs up to `vcpu` (bounded).
    pub(crate) fn vcpu_mut(&mut self, vcpu: u32) -> Option<&mut VcpuState> {
        let i = vcpu as usize;
        if i >= state::MAX_VCPUS {
            return None;
        }
        while self.vcpus.len() <= i {
            self.create_vcpu(self.vcpus.len() as u32);
        }
        Some(&mut self.vcpus[i])
    }

    /// RDMSR (guest) or `KVM_GET_MSRS` (host) of `index` on `vcpu`.
    pub fn msr_read(&self, vcpu: u32, index: u32, origin: Origin) -> Prediction<MsrOutcome> {
        self.decide_msr(vcpu, index, None, origin).0
    }

    /// WRMSR (guest) or `KVM_SET_MSRS` (host).
    pub fn msr_write(
        &self,
        vcpu: u32,
        index: u32,
        value: u64,
        origin: Origin,
    ) -> Prediction<MsrOutcome> {
        self.decide_msr(vcpu, index, Some(value), origin).0
    }

    pub fn monitor(&self, vcpu: u32) -> Prediction<MwaitOutcome> {
        self.hooked_mwait(vcpu, true, self.decide_mwait(vcpu))
    }

    pub fn mwait(&self, vcpu: u32) -> Prediction<MwaitOutcome> {
        self.hooked_mwait(vcpu, false, self.decide_mwait(vcpu))
    }

    /// What follows a triple-fault shutdown. `Resume` means "no change in the
    /// kernel" (VMX, pvm): the VMM then stops or resumes; replay treats a
    /// recorded `Stop` as agreeing with it.
    pub fn shutdown(&self, vcpu: u32) -> Prediction<AfterShutdown> {
        self.hooked_shutdown(vcpu, self.decide_shutdown(vcpu))
    }

    /// The RESET state of `vcpu` right after `KVM_CREATE_VCPU`.
    pub fn reset_state(&self, vcpu: u32) -> Prediction<ArchState> {
        let p = self.reset_prediction(vcpu);
        Prediction::new(p.state, p.rule)
    }

    /// The state after an INIT of `vcpu`, which was in `before`.
    pub fn init_state(&self, vcpu: u32, before: &ArchState) -> Prediction<ArchState> {
        let p = self.init_prediction(vcpu, before);
        Prediction::new(p.state, p.rule)
    }

    /// Fold one event, with the outcome it had, into the state.
    pub fn apply(&mut self, rec: &Record) {
        match &rec.event {
            Event::MsrWrite {
                index,
                value,
                origin,
                outcome,
                ..
            } => {
                // The decision already ran the policy's hooks: no second commit.
                self.hooks.peek = true;
                let (pred, store) = self.decide_msr(rec.vcpu, *index, Some(*value), *origin);
                self.hooks.peek = false;
                // Where the model agrees, it knows what the kernel stored; where it
                // does not (a kernel-decided outcome), store the value as written.
                let store = if pred.outcome == Some(MsrOutcome::Ok) {
                    store
                } else {
                    Store::raw(*index, *value)
                };
                if (0x800..=0x8ff).contains(index)
                    && *outcome == MsrOutcome::Ok
                    && !self.vm.irqchip_known
                {
                    // Only an in-kernel LAPIC accepts x2APIC writes.
                    self.vm.irqchip = Irqchip::Kernel;
                    self.vm.irqchip_known = true;
                }
                self.apply_msr_write(rec.seq, rec.vcpu, outcome, store);
                if *outcome == MsrOutcome::Ok
                    && let Some(v) = self.vcpu_mut(rec.vcpu)
                {
                    crate::model::host_on_write(v, *index, *value);
                }
            }
            Event::MsrRead { index, outcome, .. } => match outcome {
                MsrOutcome::VmFailed { .. } => self.kill(rec.vcpu, rec.seq),
                MsrOutcome::Value(x) => self.teach_read(rec.vcpu, *index, *x),
                _ => {}
            },
            Event::Shutdown { then, .. } => self.apply_shutdown(rec.vcpu, *then),
            Event::Reset { state, .. } => self.apply_reset(rec.vcpu, state),
            Event::Init { after, .. } => self.apply_init(rec.vcpu, after),
            _ => self.apply_config(rec),
        }
    }

    /// A read value the kernel returned teaches the register it came from
    /// (issue 6 item 5; `model::common`).
    pub(crate) fn teach_read(&mut self, vcpu: u32, index: u32, value: u64) {
        if (0x800..=0x8ff).contains(&index) && !self.vm.irqchip_known {
            // Only an in-kernel LAPIC answers x2APIC reads.
            self.vm.irqchip = Irqchip::Kernel;
            self.vm.irqchip_known = true;
        }
        if let Some(v) = self.vcpu_mut(vcpu) {
            crate::model::teach(v, index, value);
        }
    }

    /// Fold the configuration and control events (no outcome of their own).
    pub(crate) fn apply_config(&mut self, rec: &Record) {
        match &rec.event {
            Event::Sipi { vector, .. } => {
                self.set_sipi(rec.vcpu, Some(*vector));
                if let Some(v) = self.vcpu_mut(rec.vcpu) {
                    v.mp_state = 0;
                }
            }
            Event::Ipi {
                mode: kvmtrace_format::IpiMode::Sipi,
                dst,
                vector,
            } => self.set_sipi(*dst, Some(*vector)),
            Event::Ipi {
                mode: kvmtrace_format::IpiMode::Init,
                dst,
                ..
            } => {
                self.set_sipi(*dst, None);
                self.apply_ipi_init(rec.vcpu)
            }
            Event::KernelInit { from, known } => self.apply_kernel_init(rec.vcpu, *from, known),
            Event::VcpuThread { identity, .. }
                if *identity != kvmtrace_format::VcpuIdentity::FirstSeen =>
            {
                // The capture tied this thread to its vCPU from the VMM or the
                // kernel: the trace's vCPU number is the vcpu_id.
                if let Some(v) = self.vcpu_mut(rec.vcpu) {
                    v.id_known = true;
                }
            }
            Event::Cpuid { entries } => self.set_cpuid(rec.vcpu, entries),
            Event::QuirksDisabled { cap, mask } => self.disable_quirks(*cap, *mask),
            Event::MsrFilter { filter } => self.set_msr_filter(filter),
            Event::UserSpaceMsr { mask } => self.set_user_space_msr(*mask),
            Event::SetupMce { mcg_cap } => self.setup_mce(rec.vcpu, *mcg_cap),
            Event::VmmState { set, result } => self.apply_vmm_state(rec.vcpu, set, *result),
            Event::CapEnabled {
                cap,
                args,
                vcpu_scope,
                result,
            } => self.apply_cap_enabled(*cap, args, *vcpu_scope, *result),
            // Events the capture lost may hold a guest TSC_DEADLINE write,
            // or x2APIC register writes (a TMICT write restarts the timer).
            Event::Lost { .. } => {
                for v in &mut self.vcpus {
                    v.host.tsc_deadline_zero = false;
                    v.lapic.forget_all();
                }
            }
            Event::End {
                reason: kvmtrace_format::EndReason::VmFailed { .. },
            } => self.kill(rec.vcpu, rec.seq),
            _ => {}
        }
    }

    fn set_sipi(&mut self, vcpu: u32, vector: Option<u8>) {
        let i = vcpu as usize;
        if i >= state::MAX_VCPUS {
            return;
        }
        if self.sipi.len() <= i {
            self.sipi.resize(i + 1, None);
        }
        self.sipi[i] = vector;
    }

    /// The SIPI vector the trace showed for `vcpu` since its last INIT IPI.
    pub(crate) fn sipi_seen(&self, vcpu: u32) -> Option<u8> {
        self.sipi.get(vcpu as usize).copied().flatten()
    }

    pub(crate) fn kill(&mut self, vcpu: u32, seq: u64) {
        if self.vcpu_mut(vcpu).is_some() {
            let d = &mut self.dead[vcpu as usize];
            if d.is_none() {
                *d = Some(seq);
            }
        }
    }

    /// Fold an MSR write with `outcome` (the recorded one, or a policy's own in
    /// replay): only an in-kernel success changes KVM's state.
    pub(crate) fn apply_msr_write(
        &mut self,
        seq: u64,
        vcpu: u32,
        outcome: &MsrOutcome,
        store: Store,
    ) {
        // An MSR write of a vCPU with another vCPU's INIT in flight: whether
        // it came before or after the INIT is not in the trace, so what it
        // stored in the LAPIC is not known (model::lapic `PendingInit`).
        let init_in_flight = self
            .vcpu_mut(vcpu)
            .is_some_and(|v| v.lapic.pending.take().is_some());
        match outcome {
            MsrOutcome::Ok if let Store::Lapic(st) = store => self.apply_lapic(vcpu, st),
            MsrOutcome::Ok if let Store::WallClock(x) = store => self.vm.wall_clock = x,
            MsrOutcome::Ok => {
                let quirk_on = self.vm.quirk(quirks::MISC_ENABLE_NO_MWAIT);
                if let Some(v) = self.vcpu_mut(vcpu) {
                    store.apply(v, quirk_on);
                }
            }
            MsrOutcome::VmFailed { .. } => self.kill(vcpu, seq),
            _ => {}
        }
        if init_in_flight && let Some(v) = self.vcpu_mut(vcpu) {
            v.lapic.forget_all();
        }
    }

    /// `KVM_SET_CPUID2` (runtime update of CPUID.1:ECX[3] when
    /// MISC_ENABLE_NO_MWAIT is disabled, §1).
    pub(crate) fn set_cpuid(&mut self, vcpu: u32, entries: &[CpuidEntry]) {
        let quirk_on = self.vm.quirk(quirks::MISC_ENABLE_NO_MWAIT);
        if let Some(v) = self.vcpu_mut(vcpu) {
            set_cpuid_on(v, entries, quirk_on);
        }
    }

    /// `KVM_CAP_DISABLE_QUIRKS` (116) / `KVM_CAP_DISABLE_QUIRKS2` (213), per
    /// `quirk_api` (§6). A refused call changes nothing.
    pub(crate) fn disable_quirks(&mut self, cap: u32, mask: u64) {
        let s = &self.policy.switches;
        let valid = s.valid_quirks;
        let d = &mut self.vm.disabled_quirks;
        match (s.quirk_api, cap) {
            (QuirkApi::V1Assign | QuirkApi::V2Assign, 116) => *d = mask,
            (QuirkApi::V2Sticky, 116) => {
                *d |= mask
                    & match valid {
                        crate::policy::ValidQuirks::Mask(m) => m,
                        crate::policy::ValidQuirks::Any => u64::MAX,
                    }
            }
            (QuirkApi::V2Assign, 213) if valid.allows(mask) => *d = mask,
            (QuirkApi::V2Sticky, 213) if valid.allows(mask) => *d |= mask,
            _ => {}
        }
        // The policy's own disabled quirks model a VMM that always disables
        // them: they survive the trace's own (overwriting) calls.
        *d |= self.policy.disabled_quirks;
    }

    /// `KVM_CAP_X86_USER_SPACE_MSR` (§4): unknown bits are EINVAL since 5.19.
    pub(crate) fn set_user_space_msr(&mut self, mask: u32) {
        if self.policy.switches.msr_flags_validated && mask & !7 != 0 {
            return;
        }
        self.vm.user_space_msr = mask;
    }

    /// `KVM_X86_SET_MSR_FILTER` (§4): an invalid filter keeps the old one.
    pub(crate) fn set_msr_filter(&mut self, f: &MsrFilter) {
        if state::filter_invalid(f).is_none() {
            self.vm.filter = Filter::compile(f);
        }
    }

    /// `KVM_X86_SETUP_MCE` (§5): bank count 1..=32, MCi_CTL and MCG_CTL to ~0.
    pub(crate) fn setup_mce(&mut self, vcpu: u32, mcg_cap: u64) {
        if let Some(v) = self.vcpu_mut(vcpu) {
            setup_mce_on(v, mcg_cap);
            // The recording saw the ioctl succeed: what it set is known.
            crate::model::on_setup_mce(v);
        }
    }
}

/// `KVM_SET_CPUID2` on one vCPU; CPUID.1:ECX[3] follows MISC_ENABLE[18] when
/// MISC_ENABLE_NO_MWAIT is disabled (`quirk_on` false, §1).
fn set_cpuid_on(v: &mut VcpuState, entries: &[CpuidEntry], quirk_on: bool) {
    v.merge_cpuid(entries);
    if !quirk_on && v.cpuid.has_leaf1 {
        v.cpuid.mwait = v.misc_enable & (1 << 18) != 0;
    }
}

/// `KVM_X86_SETUP_MCE` on one vCPU (§5); an invalid bank count is EINVAL.
fn setup_mce_on(v: &mut VcpuState, mcg_cap: u64) {
    let banks = (mcg_cap & 0xff) as usize;
    if banks == 0 || banks > state::MAX_MCE_BANKS {
        return;
    }
    v.mcg_cap = mcg_cap;
    if mcg_cap & state::MCG_CTL_P != 0 {
        v.mcg_ctl = !0;
    }
    for b in 0..banks {
        v.mce_banks[b * 4] = !0;
    }
}

/// MISC_ENABLE at RESET (§1, §2): the `misc_enable_reset` switch, except where
/// the vendor table's measured fact applies (`kvm_pvm` at 6.18 leaves 0x1,
/// FAST_STRING; `crate::vendor`).
pub fn misc_enable_at_reset(policy: &Policy) -> u64 {
    if policy.has(crate::vendor::Fact::MiscEnableResetFastString) {
        0x1
    } else {
        policy.switches.misc_enable_reset
    }
}

/// The cap a header's "quirks disabled at start" went through: QUIRKS2 where
/// the policy's kernel has it.
fn quirks_cap(p: &Policy) -> u32 {
    match p.switches.quirk_api {
        QuirkApi::V1Assign => 116,
        _ => 213,
    }
}
