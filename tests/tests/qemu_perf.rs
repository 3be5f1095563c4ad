//! `import perf` of files the real `perf` made while QEMU ran our guest (issue 9
//! item 5): `perf record -e kvm:…` with a command, with `-p PID` and with `-a`,
//! `perf kvm stat record`, and `perf script` text. QEMU tests (counted by
//! `.ci/run`); they skip only where QEMU or perf is missing.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use kvmtrace_tests::{TempDir, kvmtrace, qemu_guest, require_qemu_perf, run_with_deadline};

const DEADLINE: Duration = Duration::from_secs(180);
/// The events kvmtrace decodes (`kvm:*` works the same but also records
/// millions of `kvm_emulate_insn` while SeaBIOS runs: half a gigabyte).
const EVENTS: &str = "kvm:kvm_msr,kvm:kvm_inj_exception,kvm:kvm_userspace_exit,kvm:kvm_apic_ipi,kvm:kvm_apic_accept_irq,kvm:kvm_cpuid";

fn qemu_cmd(qemu: &Path, guest: &Path) -> Vec<String> {
    std::iter::once(qemu.display().to_string())
        .chain(kvmtrace_tools::commands::guest::qemu_args(guest))
        .collect()
}

fn perf_record(perf: &Path, args: &[&str], cmd: &[String]) {
    let mut c = Command::new(perf);
    c.arg("record").arg("-q").args(args).arg("--").args(cmd);
    let (code, stderr) = run_with_deadline(&mut c, DEADLINE).expect("perf record finished in time");
    // perf passes the workload's status on: isa-debug-exit's 1 is our success.
    assert!(
        matches!(code, Some(0) | Some(1)),
        "perf record {args:?}: {code:?} {stderr}"
    );
}

fn import(file: &Path, out: &Path) -> serde_json::Value {
    let r = kvmtrace([
        "import",
        "perf",
        file.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(r.code, 0, "import perf {}: {r:?}", file.display());
    serde_json::from_str(&r.stdout).expect("json")
}

fn host_replay(trace: &Path) -> serde_json::Value {
    let r = kvmtrace([
        "replay",
        trace.to_str().unwrap(),
        "--policy",
        "host",
        "--json",
    ]);
    assert_eq!(r.code, 0, "replay --policy host diverged: {r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    v["policies"][0].clone()
}

#[test]
fn perf_data_and_perf_script_of_qemu_import_alike_and_replay_clean() {
    let Some((qemu, perf)) =
        require_qemu_perf("tests::perf_data_and_perf_script_of_qemu_import_alike_and_replay_clean")
    else {
        return;
    };
    let d = TempDir::new("qemu-perf");
    let guest = qemu_guest(&d);
    let data = d.join("perf.data");
    perf_record(
        &perf,
        &["-e", EVENTS, "-o", data.to_str().unwrap()],
        &qemu_cmd(&qemu, &guest),
    );
    let from_data = d.join("data.kvt");
    let v = import(&data, &from_data);
    // Our guest alone makes 100+ MSR accesses the kernel decides, SeaBIOS more.
    assert!(v["msr"].as_u64().unwrap() >= 100, "{v}");
    assert_eq!(v["vcpus"], 2, "{v}");
    assert!(v["ipis"].as_u64().unwrap() >= 4, "INIT+SIPI twice: {v}");
    let p = host_replay(&from_data);
    assert_eq!(p["divergences"], 0, "{p}");
    assert_eq!(p["agreement"], 1.0, "{p}");

    // The same file through `perf script`.
    let text = d.join("perf.txt");
    let out = std::fs::File::create(&text).unwrap();
    let st = Command::new(&perf)
        .args(["script", "-i", data.to_str().unwrap()])
        .stdout(out)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let from_text = d.join("text.kvt");
    let t = import(&text, &from_text);
    assert_eq!(t["msr"], v["msr"], "text {t} vs data {v}");
    assert_eq!(t["records"], v["records"], "text {t} vs data {v}");
    let r = kvmtrace([
        "diff",
        from_data.to_str().unwrap(),
        from_text.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(r.code, 0, "perf.data and perf script differ: {r:?}");
}

#[test]
fn perf_record_pid_system_wide_and_kvm_stat_import() {
    let Some((qemu, perf)) =
        require_qemu_perf("tests::perf_record_pid_system_wide_and_kvm_stat_import")
    else {
        return;
    };
    let d = TempDir::new("qemu-perf-modes");
    let guest = qemu_guest(&d);
    let cmd = qemu_cmd(&qemu, &guest);

    // -a: every VM on the machine (other users' too): it imports.
    let all = d.join("all.data");
    perf_record(
        &perf,
        &["-a", "-e", EVENTS, "-o", all.to_str().unwrap()],
        &cmd,
    );
    let v = import(&all, &d.join("all.kvt"));
    assert!(v["msr"].as_u64().unwrap() >= 100, "{v}");

    // perf kvm stat record: kvm_entry/exit/mmio/pio/msr; the MSR accesses import.
    let stat = d.join("stat.data");
    let mut c = Command::new(&perf);
    c.args(["kvm", "stat", "record", "-o", stat.to_str().unwrap(), "--"])
        .args(&cmd);
    let (code, stderr) = run_with_deadline(&mut c, DEADLINE).expect("perf kvm stat in time");
    assert!(matches!(code, Some(0) | Some(1)), "{code:?} {stderr}");
    let v = import(&stat, &d.join("stat.kvt"));
    assert!(v["msr"].as_u64().unwrap() >= 100, "{v}");
    assert!(
        v["other_events"].as_u64().unwrap() > 0,
        "pio/mmio counted: {v}"
    );

    // -p PID: attach to a running QEMU; perf ends when QEMU does.
    let mut q = Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = q.id().to_string();
    // perf -p follows the threads there are when it attaches, not those created
    // later: wait for QEMU's vCPU threads (main, RCU, 2 vCPUs).
    for _ in 0..200 {
        let n = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count());
        if n >= 4 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let byp = d.join("pid.data");
    let mut c = Command::new(&perf);
    c.args([
        "record",
        "-q",
        "-e",
        EVENTS,
        "-p",
        &pid,
        "-o",
        byp.to_str().unwrap(),
    ]);
    let res = run_with_deadline(&mut c, DEADLINE);
    let status = q.wait().unwrap();
    assert_eq!(status.code(), Some(1), "QEMU under perf -p");
    let (code, stderr) = res.expect("perf -p finished with QEMU");
    assert!(
        matches!(code, Some(0) | Some(1) | Some(2)),
        "{code:?} {stderr}"
    );
    let v = import(&byp, &d.join("pid.kvt"));
    assert!(
        v["msr"].as_u64().unwrap() >= 50,
        "our guest's accesses at least: {v}"
    );
    let p = host_replay(&d.join("pid.kvt"));
    assert_eq!(p["divergences"], 0, "{p}");
}
