//! `kvmtrace-replayer`: the one implementation of KVM policy semantics in kvmtrace.
//!
//! The recorder asks an [`Engine`] what KVM would answer when an exit reaches user
//! space; the replayer folds a recorded trace through one or many engines and
//! reports where each policy's outcome differs from the recording.

pub mod engine;
pub mod policy;

pub use engine::{Engine, Prediction};
pub use policy::{Policy, PolicyError, Vendor};
