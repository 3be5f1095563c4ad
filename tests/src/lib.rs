//! Helpers for kvmtrace's end-to-end tests.

use std::path::PathBuf;

/// The `kvmtrace` binary, when one was built next to the tests (`cargo build`
/// first); `kvmtrace()` does not need it.
pub fn kvmtrace_bin() -> PathBuf {
    // CARGO_BIN_EXE_* is only set for the package that owns the binary, so find
    // it next to the test executable (target/<profile>/deps/..).
    let mut p = std::env::current_exe().expect("current_exe");
    p.pop();
    if p.ends_with("deps") {
        p.pop();
    }
    p.join("kvmtrace")
}

pub use kvmtrace_recorder::kvm_check::require_kvm;

/// What one `kvmtrace` run produced.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Run `kvmtrace ARGS` and capture everything. The command line runs
/// in-process through `kvmtrace_tools::run_main`, the function the binary's
/// `main` is made of, so the tests need no pre-built binary.
pub fn kvmtrace<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let argv: Vec<std::ffi::OsString> = std::iter::once("kvmtrace".into())
        .chain(args.into_iter().map(|a| a.as_ref().to_os_string()))
        .collect();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = kvmtrace_tools::run_main(argv, &mut out, &mut err);
    Run {
        code,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
    }
}

/// A fresh, empty directory for one test (removed when dropped).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(test: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "kvmtrace-test-{test}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `kvmtrace synth` into `dir/name`, asserting success.
pub fn synth(dir: &TempDir, name: &str, pattern: &str, events: u64, seed: u64) -> PathBuf {
    let p = dir.join(name);
    let r = kvmtrace([
        "synth",
        "--pattern",
        pattern,
        "--events",
        &events.to_string(),
        "--seed",
        &seed.to_string(),
        "-o",
        p.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(r.code, 0, "synth failed: {r:?}");
    p
}
