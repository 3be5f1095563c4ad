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

use std::ffi::OsString;
use std::io::Write;

use clap::Parser;

/// The whole program: parse `args` (with the program name first), run the
/// command, print the error chain once. Returns the exit code: 0 ok, 1
/// divergence / check failed, 2 bad input or usage (clap's usage errors are 2,
/// `--help`/`--version` 0).
pub fn run_main<I, T>(args: I, out: &mut dyn Write, err: &mut dyn Write) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match cli::Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let text = e.render().to_string();
            let _ = if e.use_stderr() {
                write!(err, "{text}")
            } else {
                write!(out, "{text}")
            };
            return e.exit_code();
        }
    };
    match commands::run(cli.command, out, err) {
        Ok(code) => code,
        // `kvmtrace dump big.kvt | head`: the reader went away, not an error.
        Err(e)
            if e.chain().any(|c| {
                let pipe = std::io::ErrorKind::BrokenPipe;
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == pipe)
                    || c.downcast_ref::<serde_json::Error>()
                        .is_some_and(|j| j.io_error_kind() == Some(pipe))
            }) =>
        {
            0
        }
        Err(e) => {
            let _ = write!(err, "{}", commands::format_error(&e));
            2
        }
    }
}
