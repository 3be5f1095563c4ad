//! The engine: a policy plus the guest-visible state it has folded so far.
//! (Skeleton: the replayer issue fills this in; keep the public signatures.)

use kvmtrace_format::{
    AfterShutdown, ArchState, MsrOutcome, MwaitOutcome, Origin, Record, TraceHeader,
};

use crate::policy::Policy;

/// What a policy predicts for one action: `outcome` is `None` where the model
/// cannot know (TSC value, an MSR it does not model): such outcomes are
/// `unmodeled`, never agreement or divergence. `rule` names the rule that decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prediction<T> {
    pub outcome: Option<T>,
    pub rule: &'static str,
}

impl<T> Prediction<T> {
    pub fn unmodeled() -> Self {
        Prediction {
            outcome: None,
            rule: "unmodeled",
        }
    }
}

/// A policy and the state folded from the events so far.
#[derive(Clone, Debug)]
pub struct Engine {
    policy: Policy,
}

impl Engine {
    pub fn new(policy: Policy, header: &TraceHeader) -> Engine {
        let _ = header;
        Engine { policy }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// RDMSR (guest) or `KVM_GET_MSRS` (host) of `index` on `vcpu`.
    pub fn msr_read(&self, vcpu: u32, index: u32, origin: Origin) -> Prediction<MsrOutcome> {
        let _ = (vcpu, index, origin);
        Prediction::unmodeled()
    }

    /// WRMSR (guest) or `KVM_SET_MSRS` (host).
    pub fn msr_write(
        &self,
        vcpu: u32,
        index: u32,
        value: u64,
        origin: Origin,
    ) -> Prediction<MsrOutcome> {
        let _ = (vcpu, index, value, origin);
        Prediction::unmodeled()
    }

    pub fn monitor(&self, vcpu: u32) -> Prediction<MwaitOutcome> {
        let _ = vcpu;
        Prediction::unmodeled()
    }

    pub fn mwait(&self, vcpu: u32) -> Prediction<MwaitOutcome> {
        let _ = vcpu;
        Prediction::unmodeled()
    }

    /// What follows a triple-fault shutdown.
    pub fn shutdown(&self, vcpu: u32) -> Prediction<AfterShutdown> {
        let _ = vcpu;
        Prediction::unmodeled()
    }

    /// The RESET state of `vcpu` right after `KVM_CREATE_VCPU`.
    pub fn reset_state(&self, vcpu: u32) -> Prediction<ArchState> {
        let _ = vcpu;
        Prediction::unmodeled()
    }

    /// The state after an INIT of `vcpu`, which was in `before`.
    pub fn init_state(&self, vcpu: u32, before: &ArchState) -> Prediction<ArchState> {
        let _ = (vcpu, before);
        Prediction::unmodeled()
    }

    /// Fold one event, with the outcome it had, into the state.
    pub fn apply(&mut self, rec: &Record) {
        let _ = rec;
    }
}
