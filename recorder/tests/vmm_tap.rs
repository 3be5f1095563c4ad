//! The ioctl tap on a real VMM: this test binary re-runs itself as a small
//! kvm-ioctls VMM (`KVMTRACE_TAP_ROLE=vmm`) that configures a VM, sets MSRs
//! (some of which the kernel refuses) and exits with a chosen status; the
//! tests wrap it with `vmm_tap::spawn` and check what the tap saw.

use std::ffi::OsString;
use std::time::{Duration, Instant};

use kvm_bindings::{Msrs, kvm_enable_cap, kvm_msr_entry};
use kvm_ioctls::{Kvm, MsrFilterDefaultAction, MsrFilterRange, MsrFilterRangeFlags};
use kvmtrace_format::{
    CaptureInfo, CaptureMode, ConfigSource, Event, KnownState, MsrOutcome, Origin, Record,
    TraceHeader,
};
use kvmtrace_recorder::kvm_check::require_kvm;
use kvmtrace_recorder::vmm_tap::{self, SpawnOptions, TapEvent, TapStatus};

const ROLE: &str = "KVMTRACE_TAP_ROLE";

fn msrs(entries: &[(u32, u64)]) -> Msrs {
    let e: Vec<_> = entries
        .iter()
        .map(|&(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect();
    Msrs::from_entries(&e).unwrap()
}

/// The fake VMM. Exits 7 on success so the pass-through is visible.
fn fake_vmm(slow: bool) -> ! {
    let kvm = Kvm::new().unwrap();
    let vm = kvm.create_vm().unwrap();
    let quirks = kvm_enable_cap {
        cap: 213,
        args: [0x1, 0, 0, 0],
        ..Default::default()
    };
    vm.enable_cap(&quirks).unwrap();
    let usm = kvm_enable_cap {
        cap: 188,
        args: [0x4, 0, 0, 0],
        ..Default::default()
    };
    vm.enable_cap(&usm).unwrap();
    let bitmap = [0xffu8; 1];
    vm.set_msr_filter(
        MsrFilterDefaultAction::ALLOW,
        &[MsrFilterRange {
            flags: MsrFilterRangeFlags::READ,
            base: 0x10,
            msr_count: 8,
            bitmap: &bitmap,
        }],
    )
    .unwrap();
    vm.create_irq_chip().unwrap();
    let v0 = vm.create_vcpu(0).unwrap();
    let v1 = vm.create_vcpu(1).unwrap();
    let mut cpuid = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .unwrap();
    // Guest CPUID with VMX (leaf 1 ECX bit 5), so that kernels before 6.2
    // (FEAT_CTL host writes checked against guest CPUID) accept the
    // FEAT_CTL write below whatever this host does.
    for e in cpuid.as_mut_slice() {
        if e.function == 1 {
            e.ecx |= 1 << 5;
        }
    }
    v0.set_cpuid2(&cpuid).unwrap();
    v1.set_cpuid2(&cpuid).unwrap();
    // TSC accepted; an MSR no kernel knows refused; the last not attempted.
    let n = v0
        .set_msrs(&msrs(&[(0x10, 1000), (0x4000_1234, 1), (0x1a0, 1)]))
        .unwrap();
    assert_eq!(n, 1);
    let mut get = msrs(&[(0x10, 0), (0x4000_1234, 0)]);
    assert_eq!(v1.get_msrs(&mut get).unwrap(), 1);
    // A dup'ed vCPU fd: found through /proc/PID/fd.
    // SAFETY: dup of an fd we own.
    let dup = unsafe { libc::dup(std::os::fd::AsRawFd::as_raw_fd(&v1)) };
    let entry = msrs(&[(0x10, 5)]);
    // SAFETY: KVM_SET_MSRS with a valid kvm_msrs on a vCPU fd.
    let r = unsafe {
        libc::ioctl(
            dup,
            vmm_tap::filter::KVM_SET_MSRS as _,
            entry.as_fam_struct_ptr(),
        )
    };
    assert_eq!(r, 1);
    // An unreadable argument: the kernel says EFAULT, the tap notes it.
    // SAFETY: the kernel checks the pointer (it faults, nothing is written).
    let r = unsafe { libc::ioctl(dup, vmm_tap::filter::KVM_SET_MSRS as _, 8usize) };
    assert_eq!(r, -1);
    // IA32_FEAT_CTL = lock | VMX outside SMX, host-initiated, as QEMU writes
    // it at vCPU reset: whatever this kernel answers, the tap records it.
    let _ = v1.set_msrs(&msrs(&[(0x3a, 0x5)]));
    if slow {
        // Keep configuring for a while (the SIGKILL test kills the recorder
        // meanwhile); every call must keep working.
        let mut fine = 0;
        for _ in 0..30 {
            std::thread::sleep(Duration::from_millis(50));
            let mut get = msrs(&[(0x10, 0)]);
            if v0.get_msrs(&mut get) == Ok(1) {
                fine += 1;
            }
        }
        let out = std::env::var("KVMTRACE_TAP_OUT").unwrap();
        std::fs::write(out, format!("{fine}")).unwrap();
    }
    std::process::exit(7)
}

/// Play a role if asked to (the tests run this binary as a VMM or recorder).
fn role() {
    match std::env::var(ROLE).as_deref() {
        Ok("vmm") => fake_vmm(false),
        Ok("vmm-slow") => fake_vmm(true),
        Ok("recorder") => {
            // Spawn the slow VMM tapped, print its pid, then wait to be killed.
            let (tx, rx) = crossbeam_channel::unbounded();
            let t = vmm_tap::spawn(&vmm_argv("vmm-slow", "recorder_killed"), tx).unwrap();
            println!("\nVMM-PID {} {:?}", t.pid(), t.tap_status());
            let _keep = rx;
            std::thread::sleep(Duration::from_secs(60));
            std::process::exit(0)
        }
        Ok("recorder-once") => {
            // Under `strace -f`: the VMM is already traced when the tap tries.
            let (tx, rx) = crossbeam_channel::unbounded();
            let mut t = vmm_tap::spawn(&vmm_argv("vmm", "already_traced"), tx).unwrap();
            let code = t.wait().unwrap().code();
            println!(
                "\nTAP-STATUS {code:?} {} {:?}",
                rx.iter().count(),
                t.tap_status()
            );
            std::process::exit(0)
        }
        _ => {}
    }
}

fn vmm_argv(role: &str, test: &str) -> Vec<OsString> {
    // SAFETY (of the env change): set before any thread of this test binary
    // spawns the child; the role is read by the child only.
    vec![
        "/usr/bin/env".into(),
        format!("{ROLE}={role}").into(),
        std::env::current_exe().unwrap().into(),
        "--exact".into(),
        test.into(),
        "--nocapture".into(),
        "--test-threads=1".into(),
    ]
}

fn run_tapped(test: &str, opts: SpawnOptions) -> (i32, Vec<TapEvent>, vmm_tap::Tapped) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut t = vmm_tap::spawn_with(&vmm_argv("vmm", test), tx, opts).unwrap();
    let status = t.wait().unwrap();
    let events: Vec<_> = rx.iter().collect();
    (status.code().unwrap_or(-1), events, t)
}

#[test]
fn tap_captures_config_and_host_msrs() {
    role();
    if !require_kvm("tap_captures_config_and_host_msrs") {
        return;
    }
    let (code, events, t) =
        run_tapped("tap_captures_config_and_host_msrs", SpawnOptions::default());
    assert_eq!(code, 7, "exit status passes through");
    assert_eq!(t.tap_status(), TapStatus::Active);
    // Every KVM_ENABLE_CAP is recorded as it is (format 1.4), besides the
    // configuration events the known caps fold into.
    let caps: Vec<(u32, i32)> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::CapEnabled { cap, result, .. } => Some((*cap, *result)),
            _ => None,
        })
        .collect();
    assert_eq!(
        caps,
        [(213, 0), (188, 0)],
        "DISABLE_QUIRKS2, X86_USER_SPACE_MSR"
    );
    let events: Vec<_> = events
        .into_iter()
        .filter(|e| !matches!(e.event, Event::CapEnabled { .. }))
        .collect();
    let kinds: Vec<_> = events
        .iter()
        .map(|e| (e.vcpu, e.event.kind().name()))
        .collect();
    assert_eq!(
        kinds,
        [
            (None, "quirks_disabled"),
            (None, "user_space_msr"),
            (None, "msr_filter"),
            (Some(0), "cpuid"),
            (Some(1), "cpuid"),
            (Some(0), "msr_write"),
            (Some(0), "msr_write"),
            (Some(1), "msr_read"),
            (Some(1), "msr_read"),
            (Some(1), "msr_write"),
            (Some(1), "msr_write"),
        ],
        "{events:#?}"
    );
    assert!(matches!(
        events[5].event,
        Event::MsrWrite {
            index: 0x10,
            value: 1000,
            origin: Origin::Host,
            outcome: MsrOutcome::Ok,
            ..
        }
    ));
    assert!(matches!(
        events[6].event,
        Event::MsrWrite {
            index: 0x4000_1234,
            origin: Origin::Host,
            outcome: MsrOutcome::InjectGp,
            ..
        }
    ));
    assert!(
        matches!(events[7].event, Event::MsrRead { index: 0x10, outcome: MsrOutcome::Value(v), .. } if v >= 1000)
    );
    assert!(matches!(
        events[8].event,
        Event::MsrRead {
            index: 0x4000_1234,
            outcome: MsrOutcome::InjectGp,
            ..
        }
    ));
    assert!(
        matches!(
            events[9].event,
            Event::MsrWrite {
                index: 0x10,
                value: 5,
                ..
            }
        ),
        "dup'ed fd mapped"
    );
    assert!(events.windows(2).all(|w| w[0].time_ns <= w[1].time_ns));
    assert!(events.iter().all(|e| e.vm == 0));
    let cfg = t.vm_configs();
    assert_eq!(cfg.len(), 1);
    assert_eq!(cfg[0].vcpus, 2);
    assert_eq!(cfg[0].disabled_quirks, 1);
    assert_eq!(cfg[0].user_space_msr, 4);
    assert!(!cfg[0].cpuid.is_empty());
    assert_eq!(cfg[0].irqchip, Some(kvmtrace_format::Irqchip::Kernel));
    assert_eq!(cfg[0].msr_filter.as_ref().unwrap().ranges[0].base, 0x10);
    let notes = t.notes();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("KVM_SET_MSRS") && n.contains("unreadable")),
        "{notes:?}"
    );
    assert!(matches!(
        events[10].event,
        Event::MsrWrite {
            index: 0x3a,
            value: 5,
            origin: Origin::Host,
            ..
        }
    ));

    // Replayed against the presets: `host` agrees with what this kernel
    // answered for every host access; the report names each difference.
    let kvm = kvm_ioctls::Kvm::new().unwrap();
    let header = TraceHeader {
        host: kvmtrace_recorder::vm::host_info(&kvm).unwrap(),
        vm: cfg[0].clone(),
        capture: CaptureInfo {
            mode: CaptureMode::Observe,
            ..Default::default()
        },
        config_source: ConfigSource::VmmIoctls,
        ..Default::default()
    };
    // Each vCPU starts from RESET (as wrap mode's capture records it from
    // `KVM_CREATE_VCPU`), then the tapped events.
    let reset = |vcpu| {
        (
            vcpu,
            0,
            Event::KernelReset {
                known: Box::new(KnownState::UNKNOWN),
            },
        )
    };
    let records: Vec<Record> = [reset(0), reset(1)]
        .into_iter()
        .chain(events.iter().map(|e| {
            (
                e.vcpu.unwrap_or(0),
                e.time_ns - events[0].time_ns,
                e.event.clone(),
            )
        }))
        .enumerate()
        .map(|(seq, (vcpu, time_ns, event))| Record {
            seq: seq as u64,
            vcpu,
            time_ns,
            event,
        })
        .collect();
    let names = ["host", "kvm-5.10", "kvm-6.2", "kvm-6.18"];
    let policies = names
        .iter()
        .map(|p| kvmtrace_replayer::Policy::resolve(p, &header).unwrap())
        .collect();
    let mut replay = kvmtrace_replayer::replay::Replay::new(&header, policies).sequential();
    replay.feed(&records);
    let text = replay.finish().render(usize::MAX);
    println!("{text}\nFEAT_CTL: {:?}", events[10].event);
    let host_line = text.lines().find(|l| l.starts_with("host ")).unwrap();
    let divergent: u64 = host_line
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(divergent, 0, "host disagrees with the kernel:\n{text}");
}

#[test]
fn tap_off_runs_the_vmm_untapped() {
    role();
    if !require_kvm("tap_off_runs_the_vmm_untapped") {
        return;
    }
    let (code, events, t) =
        run_tapped("tap_off_runs_the_vmm_untapped", SpawnOptions { tap: false });
    assert_eq!(code, 7);
    assert!(events.is_empty());
    assert!(matches!(t.tap_status(), TapStatus::Off { .. }));
}

#[test]
fn recorder_killed() {
    role();
    if !require_kvm("recorder_killed") {
        return;
    }
    // The recorder (this binary, role "recorder") starts the slow VMM tapped;
    // we SIGKILL the recorder; the VMM's later KVM_GET_MSRS calls must all work
    // (no ENOSYS) and it must exit normally.
    let out = std::env::temp_dir().join(format!("kvmtrace-tap-killed-{}", std::process::id()));
    let _ = std::fs::remove_file(&out);
    let mut rec = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "recorder_killed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE, "recorder")
        .env("KVMTRACE_TAP_OUT", &out)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut stdout = std::io::BufReader::new(rec.stdout.take().unwrap());
    loop {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut stdout, &mut line).unwrap() > 0,
            "recorder said nothing"
        );
        if line.starts_with("VMM-PID ") {
            assert!(line.ends_with("Active\n"), "{line}");
            break;
        }
    }
    let vmm: i32 = line.split(' ').nth(1).unwrap().parse().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    rec.kill().unwrap();
    rec.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !out.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let fine = std::fs::read_to_string(&out).expect("the VMM finished its run");
    assert_eq!(fine, "30", "every KVM_GET_MSRS after the kill worked");
    // The VMM is not left stopped: it has exited (or is exiting).
    while std::path::Path::new(&format!("/proc/{vmm}/status")).exists() && Instant::now() < deadline
    {
        let s = std::fs::read_to_string(format!("/proc/{vmm}/status")).unwrap_or_default();
        if s.contains("State:\tZ") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_file(&out);
}

#[test]
fn already_traced() {
    role();
    if !require_kvm("already_traced") {
        return;
    }
    // strace -f follows our fork of the VMM before the tap can seize it.
    let Ok(out) = std::process::Command::new("strace")
        .args(["-f", "-o", "/dev/null"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "already_traced",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE, "recorder-once")
        .output()
    else {
        println!("already_traced: strace is not installed; nothing to check");
        return;
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("TAP-STATUS "))
        .unwrap_or_else(|| {
            panic!(
                "no status line: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    // The VMM ran and exited normally, untapped, and the status says why.
    assert!(line.starts_with("TAP-STATUS Some(7) 0 Off"), "{line}");
    assert!(line.contains("already traced by pid"), "{line}");
}

#[test]
fn vmm_behind_a_forking_shell() {
    role();
    if !require_kvm("vmm_behind_a_forking_shell") {
        return;
    }
    // `sh -c 'CMD; exit $?'` forks the VMM as its child (then waits): the tap
    // follows the fork and the exec, and the child's ioctls are captured.
    let mut argv: Vec<OsString> = vec![
        "/bin/sh".into(),
        "-c".into(),
        "\"$@\"; exit $?".into(),
        "sh".into(),
    ];
    argv.extend(vmm_argv("vmm", "vmm_behind_a_forking_shell"));
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut t = vmm_tap::spawn(&argv, tx).unwrap();
    let code = t.wait().unwrap().code();
    let events: Vec<_> = rx.iter().collect();
    assert_eq!(code, Some(7));
    assert_eq!(t.tap_status(), TapStatus::Active);
    // 11 configuration and MSR events, 2 of them KVM_ENABLE_CAPs recorded
    // also as `CapEnabled` (format 1.4).
    assert_eq!(events.len(), 13, "{events:#?}");
    assert!(
        events.iter().all(|e| e.pid != t.pid()),
        "the ioctls came from the forked child"
    );
    let notes = t.notes();
    assert!(notes.iter().any(|n| n.contains("forked")), "{notes:?}");
}
