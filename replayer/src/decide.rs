//! Deciding guest actions live: what the recorder (intercept mode) and `synth`
//! do — ask the engine, record the outcome, fold it. A trace built this way
//! replays against the same policy with no divergence.

use kvmtrace_format::{
    ArchState, DecidedBy, Event, InitSource, MsrOutcome, MwaitOutcome, Origin, Record,
    ShutdownCause, UserAnswer,
};

use crate::engine::Engine;

/// A guest (or VMM) action whose outcome the policy decides.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// RDMSR / `KVM_GET_MSRS`. `fallback` is used where the model cannot know
    /// (e.g. the TSC); `answer` is what the VMM answers a deflected access with.
    Rdmsr {
        index: u32,
        origin: Origin,
        fallback: MsrOutcome,
        answer: UserAnswer,
    },
    /// WRMSR / `KVM_SET_MSRS`.
    Wrmsr {
        index: u32,
        value: u64,
        origin: Origin,
        fallback: MsrOutcome,
        answer: UserAnswer,
    },
    Monitor {
        rip: u64,
    },
    Mwait {
        rip: u64,
    },
    Shutdown {
        rip: u64,
    },
    /// The RESET state at vCPU creation.
    Reset,
    /// An INIT from `before`.
    Init {
        source: InitSource,
        before: Box<ArchState>,
    },
    /// A configuration or control event, folded as is.
    Other(Event),
}

impl Engine {
    /// Decide `action` on `vcpu` with this engine's policy, fold the outcome and
    /// return the record (outcomes `decided_by: vmm`).
    pub fn decide(&mut self, seq: u64, vcpu: u32, time_ns: u64, action: Action) -> Record {
        let answer_of = |o: MsrOutcome, a: UserAnswer| match o {
            MsrOutcome::UserExit { reason, .. } => MsrOutcome::UserExit { reason, answer: a },
            o => o,
        };
        let event = match action {
            Action::Rdmsr {
                index,
                origin,
                fallback,
                answer,
            } => {
                let o = self
                    .msr_read(vcpu, index, origin)
                    .outcome
                    .unwrap_or(fallback);
                Event::MsrRead {
                    index,
                    origin,
                    outcome: answer_of(o, answer),
                    decided_by: DecidedBy::Vmm,
                    capture: None,
                }
            }
            Action::Wrmsr {
                index,
                value,
                origin,
                fallback,
                answer,
            } => {
                let o = self
                    .msr_write(vcpu, index, value, origin)
                    .outcome
                    .unwrap_or(fallback);
                Event::MsrWrite {
                    index,
                    value,
                    origin,
                    outcome: answer_of(o, answer),
                    decided_by: DecidedBy::Vmm,
                    capture: None,
                }
            }
            Action::Monitor { rip } => Event::Monitor {
                rip,
                rax: 0,
                ecx: 0,
                edx: 0,
                outcome: self.monitor(vcpu).outcome.unwrap_or(MwaitOutcome::Nop),
                decided_by: DecidedBy::Vmm,
            },
            Action::Mwait { rip } => Event::Mwait {
                rip,
                eax: 0,
                ecx: 0,
                outcome: self.mwait(vcpu).outcome.unwrap_or(MwaitOutcome::Nop),
                decided_by: DecidedBy::Vmm,
            },
            Action::Shutdown { rip } => Event::Shutdown {
                rip,
                cause: ShutdownCause::TripleFault,
                then: self
                    .shutdown(vcpu)
                    .outcome
                    .unwrap_or(kvmtrace_format::AfterShutdown::Stop),
                decided_by: DecidedBy::Vmm,
            },
            Action::Reset => Event::Reset {
                state: Box::new(self.reset_prediction(vcpu).state),
                decided_by: DecidedBy::Vmm,
            },
            Action::Init { source, before } => {
                let after = self.init_prediction(vcpu, &before).state;
                Event::Init {
                    source,
                    before,
                    after: Box::new(after),
                    decided_by: DecidedBy::Vmm,
                }
            }
            Action::Other(e) => e,
        };
        let rec = Record {
            seq,
            vcpu,
            time_ns,
            event,
        };
        self.apply(&rec);
        rec
    }
}
