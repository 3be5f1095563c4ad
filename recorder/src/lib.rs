//! `kvmtrace-recorder`: a KVM vCPU loop that records MSR accesses, MONITOR/MWAIT
//! and INIT/RESET/SHUTDOWN transitions, asking the replayer's engine what to answer.
//!
//! (Skeleton: the recorder issue fills this in; keep the public signatures.)

pub mod kvm_check;
pub mod layout;
pub mod observe;
pub mod scenarios;

use std::path::PathBuf;

use kvmtrace_format::CaptureMode;

/// What to do when the vCPU-to-writer channel is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnFull {
    /// Lossless: the vCPU waits; the wait time is counted and reported.
    #[default]
    Wait,
    /// Drop the event and count it (recorded as a `Lost` event).
    Drop,
}

/// One `kvmtrace record` run.
#[derive(Clone, Debug)]
pub struct RecordConfig {
    /// A built-in scenario name, or
    pub scenario: Option<String>,
    /// a user payload (flat binary or 64-bit ELF). Exactly one of the two.
    pub payload: Option<PathBuf>,
    pub output: PathBuf,
    /// Live policy spec (preset, `host` or a policy file), default `host`.
    pub policy: String,
    /// `Intercept` (default) or `Observe`.
    pub mode: CaptureMode,
    /// vCPU count; `None` = the scenario's default.
    pub vcpus: Option<u32>,
    /// Loop count for looping scenarios (`msr-loop`); `None` = default.
    pub iterations: Option<u64>,
    pub on_full: OnFull,
    /// Benchmark baseline: build nothing, send nothing; events are discarded
    /// before the channel (`record_overhead_ratio`'s denominator).
    pub discard_events: bool,
}

/// What a recording produced.
#[derive(Clone, Debug, Default)]
pub struct RecordSummary {
    pub events: u64,
    pub dropped: u64,
    /// Total time vCPU threads waited on a full channel.
    pub channel_wait_ns: u64,
    /// Time on vCPU threads spent building and sending events, per event.
    pub vcpu_ns_per_event: f64,
    /// Wall time of the guest run.
    pub run_ns: u64,
    pub bytes: u64,
    pub chunks: u64,
}

/// A built-in scenario, for `kvmtrace scenarios`.
#[derive(Clone, Debug)]
pub struct ScenarioInfo {
    pub name: &'static str,
    pub about: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("unknown scenario {name:?}; known: {known}")]
    UnknownScenario { name: String, known: String },
    #[error("recording is not implemented yet")]
    NotImplemented,
}

/// The built-in scenarios.
pub fn scenarios() -> Vec<ScenarioInfo> {
    scenarios::list()
}

/// Run a guest and record it.
pub fn record(cfg: &RecordConfig) -> Result<RecordSummary, RecordError> {
    let _ = cfg;
    Err(RecordError::NotImplemented)
}
