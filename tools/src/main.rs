//! `kvmtrace`: everything is in the library's `run_main` (parse, run, print
//! the error chain once, exit code 0 ok / 1 divergence or check failed / 2 bad
//! input or usage), which the end-to-end tests drive in-process too.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut err = std::io::stderr();
    let code = kvmtrace_tools::run_main(std::env::args_os(), &mut out, &mut err);
    let code = match out.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            let _ = writeln!(err, "kvmtrace: error: writing stdout: {e}");
            2
        }
        _ => code,
    };
    ExitCode::from(u8::try_from(code).unwrap_or(2))
}
