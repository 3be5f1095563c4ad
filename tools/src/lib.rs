//! The `kvmtrace` command line, as a library so tests can drive it.
//!
//! Every command module exposes `run(&Args, out, err) -> anyhow::Result<i32>`:
//! the exit code on success (0 ok, 1 divergence / check failed), an error for
//! bad input or usage (exit 2, printed once by `main`).

pub mod cli;
pub mod commands;
pub mod export;
pub mod fidelity;
pub mod import;
pub mod progress;
pub mod synth;
pub mod trace_io;
