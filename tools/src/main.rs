//! `kvmtrace`: parse, run, map the outcome to the exit code (0 ok, 1 divergence
//! or check failed, 2 bad input or usage). Everything else is in the library.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use kvmtrace_tools::{cli::Cli, commands};

fn main() -> ExitCode {
    // Clap prints usage errors itself and exits 2 (help/version exit 0).
    let cli = Cli::parse();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut err = std::io::stderr();
    let result = commands::run(cli.command, &mut out, &mut err);
    let flushed = out.flush();
    match result {
        Ok(code) => {
            if let Err(e) = flushed
                && e.kind() != std::io::ErrorKind::BrokenPipe
            {
                let _ = writeln!(err, "kvmtrace: error: writing stdout: {e}");
                return ExitCode::from(2);
            }
            ExitCode::from(u8::try_from(code).unwrap_or(2))
        }
        // `kvmtrace dump big.kvt | head`: the reader went away, not an error.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = write!(err, "{}", commands::format_error(&e));
            ExitCode::from(2)
        }
    }
}
