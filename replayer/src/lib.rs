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

pub mod decide;
pub mod engine;
mod model;
pub mod names;
pub mod policy;
pub mod policy_file;
pub mod presets;
pub mod quirks;
pub mod rules;
pub mod state;

pub use decide::Action;
pub use engine::{Engine, Prediction, StatePrediction};
pub use model::compare_state;
pub use policy::{Policy, PolicyError, Vendor};
pub use rules::Rule;
pub mod replay;
pub mod report;

pub use replay::{Replay, ReplayError, replay, replay_reader, replay_reader_with_progress};
pub use report::{Divergence, PolicyReport, ReplayReport};
pub mod diff;
pub use diff::{DiffReport, diff};
pub mod corpus;
