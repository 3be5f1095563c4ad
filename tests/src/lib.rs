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

/// The QEMU tests' guard, like [`require_kvm`]: `Some(qemu)` where `/dev/kvm`
/// opens and `qemu-system-x86_64` is installed. Prints `QEMU-TEST-RAN name` or
/// `QEMU-TEST-SKIPPED name: why` and appends it to `$KVMTRACE_KVM_TEST_LOG`,
/// which `.ci/run` counts. Where QEMU is installed but fails, the test fails: only
/// its absence (or no `/dev/kvm`) skips.
pub fn require_qemu(test: &str) -> Option<PathBuf> {
    let kvm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm");
    let qemu = find_qemu();
    let (found, line) = match (kvm, qemu) {
        (Err(e), _) => (
            None,
            format!("QEMU-TEST-SKIPPED {test}: cannot open /dev/kvm: {e}"),
        ),
        (Ok(_), None) => (
            None,
            format!(
                "QEMU-TEST-SKIPPED {test}: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
            ),
        ),
        (Ok(_), Some(q)) => (Some(q), format!("QEMU-TEST-RAN {test}")),
    };
    kvmtrace_recorder::kvm_check::log_test_line(&line);
    found
}

/// `qemu-system-x86_64` on `PATH`.
pub fn find_qemu() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("qemu-system-x86_64"))
        .find(|p| p.is_file())
}

/// Run a command to completion with a deadline (killed and `None` past it),
/// returning its exit code and stderr.
pub fn run_with_deadline(
    cmd: &mut std::process::Command,
    deadline: std::time::Duration,
) -> Option<(Option<i32>, String)> {
    use std::io::Read;
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let err = reader.join().unwrap_or_default();
            return Some((status.code(), err));
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Write the QEMU guest (`kvmtrace guest qemu`) into `dir`.
pub fn qemu_guest(dir: &TempDir) -> PathBuf {
    let p = dir.join("guest.elf");
    let r = kvmtrace(["guest", "qemu", "-o", p.to_str().expect("utf-8 path")]);
    assert_eq!(r.code, 0, "guest qemu: {r:?}");
    p
}

/// `perf` on `PATH`.
pub fn find_perf() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("perf"))
        .find(|p| p.is_file())
}

/// [`require_qemu`] plus `perf`: `Some((qemu, perf))` or a logged skip.
pub fn require_qemu_perf(test: &str) -> Option<(PathBuf, PathBuf)> {
    let perf = find_perf();
    if perf.is_none() && find_qemu().is_some() {
        let line =
            format!("QEMU-TEST-SKIPPED {test}: perf is not installed (apt-get install linux-perf)");
        kvmtrace_recorder::kvm_check::log_test_line(&line);
        return None;
    }
    let qemu = require_qemu(test)?;
    Some((qemu, perf?))
}

/// `kvmtrace record -o OUT -- qemu-system-x86_64 …` in-process; the VMM's exit
/// status is kvmtrace's.
pub fn wrap_record(qemu: &std::path::Path, args: &[String], out: &std::path::Path) -> i32 {
    let mut argv: Vec<String> = vec![
        "record".into(),
        "-o".into(),
        out.display().to_string(),
        "--".into(),
    ];
    argv.push(qemu.display().to_string());
    argv.extend(args.iter().cloned());
    let r = kvmtrace(&argv);
    assert!(
        r.stderr.contains("recorded VM"),
        "wrap record of QEMU ({}): {r:?}",
        out.display()
    );
    r.code
}

/// `kvmtrace record WHAT --mode observe -o OUT` (`WHAT`: `--payload FILE` or
/// `--scenario NAME`), which must succeed.
pub fn record_observe(what: [&str; 2], out: &std::path::Path) {
    let r = kvmtrace([
        "record",
        what[0],
        what[1],
        "--mode",
        "observe",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{what:?}: {r:?}");
}
