//! The recorder under signals and concurrent runs (issue 14, items 3-4), as a
//! user meets them: the real binary, real signals. Needs /dev/kvm.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kvmtrace_recorder::kvm_check::require_kvm;

const BIN: &str = env!("CARGO_BIN_EXE_kvmtrace");

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kvmtrace-sig-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A recording that runs until stopped (a billion TSC reads).
fn start_long(out: &Path) -> Child {
    Command::new(BIN)
        .args([
            "record",
            "--scenario",
            "msr-loop",
            "--iterations",
            "1000000000",
            "-o",
        ])
        .arg(out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until `file` holds more than `n` bytes (the guest is running).
fn wait_for_bytes(file: &Path, n: u64) {
    let t = Instant::now();
    while std::fs::metadata(file).map(|m| m.len()).unwrap_or(0) <= n {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{} never grew",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([format!("-{sig}"), child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

fn finish(child: Child) -> (i32, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn last_end(trace: &Path) -> String {
    let out = Command::new(BIN)
        .arg("dump")
        .arg(trace)
        .arg("--json")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .rev()
        .find(|l| l.contains("\"end\""))
        .unwrap_or("")
        .to_string()
}

#[test]
fn sigint_and_sigterm_finish_the_trace() {
    if !require_kvm("sigint_and_sigterm_finish_the_trace") {
        return;
    }
    let d = tmpdir("stop");
    for (sig, name) in [("INT", "SIGINT"), ("TERM", "SIGTERM")] {
        let out = d.join(format!("{name}.kvt"));
        let inc = kvmtrace_format::incomplete_path(&out);
        let child = start_long(&out);
        // Past the header and a first chunk: the guest is in its loop.
        wait_for_bytes(&inc, 4096);
        signal(&child, sig);
        let (code, err) = finish(child);
        assert_eq!(code, 0, "{name}: {err}");
        assert!(err.contains(&format!("stopped by {name}")), "{err}");
        assert!(out.exists() && !inc.exists(), "{name}: {err}");
        let v = Command::new(BIN).arg("verify").arg(&out).output().unwrap();
        assert_eq!(
            v.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&v.stdout)
        );
        let end = last_end(&out);
        assert!(end.contains(&format!("stopped by {name}")), "{end}");
    }
}

#[test]
fn a_second_recording_to_one_path_exits_2() {
    if !require_kvm("a_second_recording_to_one_path_exits_2") {
        return;
    }
    let d = tmpdir("two");
    let out = d.join("t.kvt");
    let inc = kvmtrace_format::incomplete_path(&out);
    let first = start_long(&out);
    wait_for_bytes(&inc, 4096);
    let second = Command::new(BIN)
        .args(["record", "--scenario", "msr-loop", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{err}");
    assert!(err.contains("t.kvt.incomplete already exists"), "{err}");
    assert!(err.contains("another recording"), "{err}");
    signal(&first, "INT");
    let (code, err) = finish(first);
    assert_eq!(code, 0, "{err}");
    let v = Command::new(BIN).arg("verify").arg(&out).output().unwrap();
    assert_eq!(
        v.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&v.stdout)
    );
}
