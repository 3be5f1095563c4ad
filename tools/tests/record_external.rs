//! Recording another VMM (issue 9 items 1-4): `kvmtrace record -- CMD` (wrap)
//! and `--pid PID` (attach), with our own `kvmtrace record --scenario ...
//! --mode observe` as the VMM (it creates real VMs on /dev/kvm and names its
//! vCPU threads `vcpuN`, like cloud-hypervisor). The real binary, real
//! signals; tests that need /dev/kvm say so through `require_kvm`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use kvmtrace_format::{Event, EventKind, TraceReader, VcpuIdentity};
use kvmtrace_recorder::kvm_check::require_kvm;

const BIN: &str = env!("CARGO_BIN_EXE_kvmtrace");

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kvmtrace-ext-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Our own VMM recording `scenario` in observe mode (the kernel decides).
fn inner(scenario: &str, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [BIN, "record", "--scenario", scenario, "--mode", "observe"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v.push("-o".into());
    v.push(out.display().to_string());
    v
}

fn records(path: &Path) -> Vec<kvmtrace_format::Record> {
    let mut r = TraceReader::open(path).unwrap();
    r.read_all().unwrap()
}

/// The kernel-decided MSR accesses of one trace, per vCPU, in order.
fn kernel_msrs(recs: &[kvmtrace_format::Record]) -> Vec<(u32, String)> {
    recs.iter()
        .filter(|r| {
            matches!(r.event.kind(), EventKind::MsrRead | EventKind::MsrWrite)
                && r.event.decided_by() == Some(kvmtrace_format::DecidedBy::Kernel)
                && !matches!(
                    r.event,
                    Event::MsrRead {
                        origin: kvmtrace_format::Origin::Host,
                        ..
                    } | Event::MsrWrite {
                        origin: kvmtrace_format::Origin::Host,
                        ..
                    }
                )
        })
        .map(|r| (r.vcpu, format!("{:?}", r.event)))
        .collect()
}

fn verify_ok(path: &Path) {
    let o = run(&["verify", &path.display().to_string()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

fn agreement(path: &Path) -> f64 {
    let o = run(&[
        "replay",
        &path.display().to_string(),
        "--policy",
        "host",
        "--json",
    ]);
    assert!(o.status.code() == Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: no JSON in {out}"));
    find_agreement(&v).unwrap_or_else(|| panic!("no agreement in {v}"))
}

fn find_agreement(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(a) = m.get("agreement").and_then(|a| a.as_f64()) {
                return Some(a);
            }
            m.values().find_map(find_agreement)
        }
        serde_json::Value::Array(a) => a.iter().find_map(find_agreement),
        _ => None,
    }
}

/// Wrap mode sees exactly the kernel decisions our own VMM recorded in
/// observe mode, per vCPU; the VMM's exit status passes through; the trace
/// is finished and replays under `host` with agreement 1.0.
#[test]
fn wrap_records_what_the_kernel_decided() {
    if !require_kvm("record_external::wrap_records_what_the_kernel_decided") {
        return;
    }
    let d = tmpdir("wrap");
    let (outer, own) = (d.join("w.kvt"), d.join("own.kvt"));
    for scenario in ["tour", "x2apic-deflect"] {
        let mut args = vec!["record", "-o"];
        let outer_s = outer.display().to_string();
        args.push(&outer_s);
        args.push("--");
        let inner_args = inner(scenario, &own, &[]);
        args.extend(inner_args.iter().map(|s| s.as_str()));
        let o = run(&args);
        assert_eq!(o.status.code(), Some(0), "{scenario}: {}", text(&o));
        verify_ok(&outer);
        let (w, own_recs) = (records(&outer), records(&own));
        let want = kernel_msrs(&own_recs);
        assert!(!want.is_empty(), "{scenario}");
        assert_eq!(kernel_msrs(&w), want, "{scenario}: wrap vs own observe");
        // Each vCPU: its thread (named `vcpuN`), RESET, ..., End.
        let threads: Vec<_> = w
            .iter()
            .filter_map(|r| match &r.event {
                Event::VcpuThread { identity, .. } => Some((r.vcpu, *identity)),
                _ => None,
            })
            .collect();
        assert!(!threads.is_empty());
        for (_, id) in &threads {
            assert!(
                matches!(id, VcpuIdentity::ThreadName | VcpuIdentity::RunSyscall),
                "{id:?}"
            );
        }
        assert!(w.iter().any(|r| r.event.kind() == EventKind::KernelReset));
        assert_eq!(
            w.iter()
                .filter(|r| r.event.kind() == EventKind::End)
                .count(),
            threads.len()
        );
        let h = TraceReader::open(&outer).unwrap().header().clone();
        assert_eq!(h.capture.mode, kvmtrace_format::CaptureMode::External);
        assert_eq!(agreement(&outer), 1.0, "{scenario}");
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// Several VMs (two VMMs under one wrapped shell) never merge: one trace each.
#[test]
fn wrap_two_vmms_two_traces() {
    if !require_kvm("record_external::wrap_two_vmms_two_traces") {
        return;
    }
    let d = tmpdir("two");
    let outer = d.join("t.kvt");
    let a = inner("feat-ctl", &d.join("a.kvt"), &[]).join(" ");
    let b = inner("feat-ctl", &d.join("b.kvt"), &[]).join(" ");
    let o = run(&[
        "record",
        "-o",
        &outer.display().to_string(),
        "--",
        "sh",
        "-c",
        &format!("{a} && {b}"),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let second = d.join("t-vm1.kvt");
    verify_ok(&outer);
    verify_ok(&second);
    assert!(!d.join("t-vm2.kvt").exists());
    assert_eq!(
        kernel_msrs(&records(&outer)),
        kernel_msrs(&records(&d.join("a.kvt")))
    );
    assert_eq!(
        kernel_msrs(&records(&second)),
        kernel_msrs(&records(&d.join("b.kvt")))
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn wrap_bad_commands_exit_2_with_one_line() {
    let d = tmpdir("badcmd");
    let out = d.join("x.kvt");
    let outs = out.display().to_string();
    for cmd in [
        &["/nonexistent/vmm"][..],
        &["true"][..],
        &["sh", "-c", "exit 3"][..],
    ] {
        let mut args = vec!["record", "-o", &outs, "--"];
        args.extend_from_slice(cmd);
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{cmd:?}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        let errors: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(errors.len(), 1, "{cmd:?}: {err}");
        assert!(!out.exists() && !kvmtrace_format::incomplete_path(&out).exists());
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn attach_bad_pids_exit_2() {
    let d = tmpdir("badpid");
    let out = d.join("x.kvt").display().to_string();
    let o = run(&["record", "--pid", "4000000", "-o", &out]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no such process"), "{}", text(&o));
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    let o = run(&["record", "--pid", &sleeper.id().to_string(), "-o", &out]);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("is not a VMM"), "{}", text(&o));
    // Usage: both or neither.
    let o = run(&["record", "--pid", "1", "-o", &out, "--", "true"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let _ = std::fs::remove_dir_all(&d);
}

/// Without permission for tracefs (an unprivileged user): one line, exit 2.
#[test]
fn no_tracefs_permission_exits_2() {
    if Command::new("setpriv").arg("--help").output().is_err() {
        eprintln!("setpriv missing: skipped");
        return;
    }
    let d = tmpdir("perm");
    let out = std::env::temp_dir().join(format!("kvmtrace-perm-{}.kvt", std::process::id()));
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
        .args(["record", "-o"])
        .arg(&out)
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("tracepoints") || err.contains("tracefs"),
        "{err}"
    );
    assert!(!out.exists());
    let _ = std::fs::remove_dir_all(&d);
}

/// A long-running VMM of our own (a billion TSC reads in observe mode).
fn long_vmm(out: &Path) -> Child {
    Command::new(BIN)
        .args(inner("msr-loop", out, &["--iterations", "1000000000"])[1..].iter())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits until process `pid` has a vCPU fd (its VM runs).
fn wait_for_vcpu(pid: u32) {
    let t = Instant::now();
    loop {
        let has = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| {
                d.flatten().any(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|l| l.to_string_lossy().starts_with("anon_inode:kvm-vcpu"))
                })
            })
            .unwrap_or(false);
        if has {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "no vCPU in {pid}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status();
}

fn info(path: &Path) -> String {
    let o = run(&["info", &path.display().to_string()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Attach: Ctrl-C (SIGINT) detaches and leaves the VMM running; --duration
/// stops by itself; a second recorder on the same VMM is refused; a VMM
/// killed mid-run still leaves a finished trace.
#[test]
fn attach_detach_duration_busy_and_vmm_death() {
    if !require_kvm("record_external::attach_detach_duration_busy_and_vmm_death") {
        return;
    }
    let d = tmpdir("attach");
    let mut vmm = long_vmm(&d.join("own.kvt"));
    let pid = vmm.id();
    wait_for_vcpu(pid);
    let pids = pid.to_string();

    // --duration.
    let dur = d.join("dur.kvt");
    let o = run(&[
        "record",
        "--pid",
        &pids,
        "--duration",
        "1",
        "-o",
        &dur.display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    verify_ok(&dur);
    assert!(
        records(&dur)
            .iter()
            .any(|r| r.event.kind() == EventKind::MsrRead)
    );
    // Attached mid-run: no RESET is claimed.
    assert!(
        !records(&dur)
            .iter()
            .any(|r| r.event.kind() == EventKind::KernelReset)
    );

    // Ctrl-C detaches; meanwhile a second recorder is refused.
    let sig = d.join("sig.kvt");
    let first = Command::new(BIN)
        .args(["record", "--pid", &pids, "-o"])
        .arg(&sig)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let o = run(&[
        "record",
        "--pid",
        &pids,
        "--duration",
        "1",
        "-o",
        &d.join("busy.kvt").display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("already being recorded"), "{}", text(&o));
    kill(first.id(), "INT");
    let o = first.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    verify_ok(&sig);
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the VMM must keep running"
    );

    // The VMM dies mid-run: a finished trace that says how it ended.
    let death = d.join("death.kvt");
    let rec = Command::new(BIN)
        .args(["record", "--pid", &pids, "-o"])
        .arg(&death)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let _ = vmm.kill();
    let _ = vmm.wait();
    let o = rec.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    verify_ok(&death);
    assert!(records(&death).iter().any(|r| matches!(
        &r.event,
        Event::End { reason: kvmtrace_format::EndReason::Stopped { why } } if why.contains("exited")
    )));
    let _ = std::fs::remove_dir_all(&d);
}

/// Wrap: a SIGTERM sent to kvmtrace reaches the VMM, kvmtrace finishes the
/// trace after the VMM exits and passes its status through.
#[test]
fn wrap_forwards_sigterm_and_passes_the_status() {
    if !require_kvm("record_external::wrap_forwards_sigterm_and_passes_the_status") {
        return;
    }
    let d = tmpdir("term");
    let outer = d.join("w.kvt");
    let child = Command::new(BIN)
        .args(["record", "-o"])
        .arg(&outer)
        .arg("--")
        .args(inner(
            "msr-loop",
            &d.join("own.kvt"),
            &["--iterations", "1000000000"],
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The VMM is the wrapper's child: wait for its vCPU.
    let t = Instant::now();
    let vmm = loop {
        let kids = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id()))
            .unwrap_or_default();
        if let Some(p) = kids
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
            .find(|p| {
                // The VMM itself, not the ioctl tap (a fork of kvmtrace that
                // keeps its command line).
                std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| c.split('\0').nth(2) == Some("--scenario"))
            })
        {
            break p;
        }
        assert!(t.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(20));
    };
    wait_for_vcpu(vmm);
    std::thread::sleep(Duration::from_millis(300));
    kill(child.id(), "TERM");
    let o = child.wait_with_output().unwrap();
    // Whatever the VMM answered SIGTERM with is kvmtrace's status, not ours.
    assert!(
        !Path::new(&format!("/proc/{vmm}")).exists()
            || std::fs::read_to_string(format!("/proc/{vmm}/stat"))
                .is_ok_and(|s| s.contains(" Z "))
    );
    let code = o.status.code();
    assert!(code.is_some(), "{}", text(&o));
    verify_ok(&outer);
    assert!(
        records(&outer)
            .iter()
            .any(|r| r.event.kind() == EventKind::MsrRead)
    );
    let _ = std::fs::remove_dir_all(&d);
}

/// A ring-buffer overrun is counted, and `info` names it.
#[test]
fn overrun_is_a_named_gap() {
    if !require_kvm("record_external::overrun_is_a_named_gap") {
        return;
    }
    let d = tmpdir("overrun");
    let outer = d.join("w.kvt");
    let o = Command::new(BIN)
        .env(kvmtrace_recorder::external::READ_AT_END_ENV, "1")
        .args(["record", "--buffer-kb", "4", "-o"])
        .arg(&outer)
        .arg("--")
        .args(inner(
            "msr-loop",
            &d.join("own.kvt"),
            &["--iterations", "20000"],
        ))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("lost"),
        "{}",
        text(&o)
    );
    verify_ok(&outer);
    let i = info(&outer);
    assert!(i.contains("lost") && i.contains("tracefs"), "{i}");
    let _ = std::fs::remove_dir_all(&d);
}
