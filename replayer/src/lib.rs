//! `kvmtrace-replayer`: the one implementation of KVM policy semantics in kvmtrace.
//!
//! The recorder asks an [`Engine`] what KVM would answer when an exit reaches user
//! space; the replayer folds a recorded trace through one or many engines and
//! reports where each policy's outcome differs from the recording.
//!
//! - [`policy`]: policies as data, presets (`presets`), TOML policy files.
//! - [`engine`]: a policy plus the folded state (`state`); the model (`model`).
//! - [`replay`]: many policies in one pass; divergences; the human report.
//! - [`diff`]: two recordings aligned by guest action.
//! - [`corpus`]: bless and check a directory of traces for CI.
//!
//! ```
//! use kvmtrace_format::{Origin, TraceHeader};
//! use kvmtrace_replayer::{Action, Engine, Policy, Replay};
//!
//! let mut header = TraceHeader::default();
//! header.host.kernel_release = "6.18.44".into();
//! header.host.kvm_module = "kvm_pvm".into();
//! header.vm.vcpus = 1;
//! header.vm.mcg_cap = Some(0x10a); // KVM_X86_SETUP_MCE: 10 banks | MCG_CTL_P
//!
//! // Live: what KVM answers (SEMANTICS.md §5: bad MCi_CTL is #GP since 6.0).
//! let mut engine = Engine::new(Policy::resolve("host", &header).unwrap(), &header);
//! let p = engine.msr_write(0, 0x400, 1, Origin::Guest);
//! println!("{:?} by {}", p.outcome, p.rule);
//! let rec = engine.decide(0, 0, 0, Action::Wrmsr {
//!     index: 0x400, value: 1, origin: Origin::Guest,
//!     fallback: kvmtrace_format::MsrOutcome::Ok,
//!     answer: kvmtrace_format::UserAnswer::Ok,
//! });
//!
//! // Offline: the same record against other kernels, in one pass.
//! let policies = ["kvm-5.19", "kvm-6.18"]
//!     .iter()
//!     .map(|p| Policy::resolve(p, &header).unwrap())
//!     .collect();
//! let mut replay = Replay::new(&header, policies);
//! replay.feed(&[rec]);
//! let report = replay.finish();
//! assert_eq!(report.policies[0].divergences, 1); // 5.19: vm_failed (EPERM)
//! assert_eq!(report.policies[1].divergences, 0);
//! println!("{}", report.render(5));
//! ```

pub mod decide;
pub mod engine;
pub mod external;
mod model;
pub mod names;
pub mod policy;
pub mod policy_file;
pub mod presets;
pub mod quirks;
pub mod rules;
pub mod script;
pub mod state;
pub mod vendor;

pub use decide::Action;
pub use engine::{Engine, Prediction, StatePrediction};
pub use external::{HookError, PolicyHooks};
pub use model::{UNSEEN_CPUID, compare_state};
pub use policy::{Policy, PolicyError, Vendor};
pub use rules::Rule;
pub mod replay;
pub mod report;

pub use replay::{
    Replay, ReplayError, msr_agrees, replay, replay_reader, replay_reader_with_progress,
};
pub use report::{Divergence, PolicyReport, ReplayReport};
pub mod diff;
pub use diff::{DiffReport, diff};
pub mod bisect;
pub mod corpus;
pub mod msr_class;
