//! Observe mode on this machine: a tiny real-mode guest does RDMSRs with no MSR
//! filter, and the kernel's own `kvm_msr` lines must come back through a
//! private tracefs instance, converted to kernel-decided events.

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuExit};
use kvmtrace_format::{DecidedBy, Event, MsrOutcome};
use kvmtrace_recorder::kvm_check::require_kvm;
use kvmtrace_recorder::observe::{CaptureConfig, TracefsCapture, current_tid};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// xor eax,eax; cpuid; mov ecx,0x10; rdmsr; mov ecx,0x1b; rdmsr;
/// mov ecx,0x3a; rdmsr (#GP); hlt
const CODE: [u8; 30] = [
    0x66, 0x31, 0xc0, 0x0f, 0xa2, //
    0x66, 0xb9, 0x10, 0, 0, 0, 0x0f, 0x32, //
    0x66, 0xb9, 0x1b, 0, 0, 0, 0x0f, 0x32, //
    0x66, 0xb9, 0x3a, 0, 0, 0, 0x0f, 0x32, //
    0xf4,
];

#[test]
fn observe_kvm_msr_lines_arrive() {
    if !require_kvm("observe_kvm_msr_lines_arrive") {
        return;
    }
    let tid = current_tid().expect("/proc/thread-self");
    // Started from another thread, as a recorder's main thread would for its
    // vCPU threads: the clock marker it writes must pass the pid filter.
    let started = std::thread::spawn(move || {
        TracefsCapture::start(&CaptureConfig {
            tids: vec![tid],
            ..Default::default()
        })
    })
    .join()
    .unwrap();
    let mut cap = match started {
        Ok(c) => c,
        Err(e) => {
            println!("KVM-TEST-SKIPPED observe_kvm_msr_lines_arrive: tracefs unavailable: {e}");
            return;
        }
    };
    let run_start = std::time::Instant::now();
    let dir = cap.instance_dir().unwrap().to_path_buf();
    let top_enable = dir.join("../../events/kvm/kvm_msr/enable");
    let top_before = std::fs::read_to_string(&top_enable).unwrap_or_default();
    assert!(dir.is_dir());
    cap.set_vcpu(tid, 0);

    let exits = run_guest(&CODE);
    // The clock sync marker ties Instant (CLOCK_MONOTONIC) to the trace clock.
    let mut start_mono = None;
    for _ in 0..100 {
        start_mono = cap.mono_ns_at(run_start);
        if start_mono.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let start_mono = start_mono.expect("the trace_marker line is read back");
    assert_eq!(
        std::fs::read_to_string(&top_enable).unwrap_or_default(),
        top_before,
        "the top-level buffer's events are not touched"
    );
    let (events, stats) = cap.stop();
    assert!(!dir.exists(), "the instance is removed after stop");
    println!("exits: {exits:?}");
    println!("stats: {stats:?}");
    for o in &events {
        println!(
            "{} tid {} run {} {:?}",
            o.ts_ns, o.tid, o.run_index, o.event
        );
    }
    let msrs: Vec<(u32, MsrOutcome)> = events
        .iter()
        .filter_map(|o| match &o.event {
            Event::MsrRead {
                index,
                outcome,
                decided_by: DecidedBy::Kernel,
                ..
            } => Some((*index, *outcome)),
            _ => None,
        })
        .collect();
    assert_eq!(msrs.len(), 3, "three kvm_msr lines: {msrs:?}");
    assert_eq!(msrs[0].0, 0x10);
    assert!(matches!(msrs[0].1, MsrOutcome::Value(_)));
    assert_eq!(msrs[1].0, 0x1b);
    assert_eq!(msrs[2], (0x3a, MsrOutcome::InjectGp));
    assert!(
        !events
            .iter()
            .any(|o| matches!(o.event, Event::Exception { .. })),
        "the #GP is explained by its kvm_msr line"
    );
    assert!(events.iter().any(|o| o.event == Event::Halt));
    assert!(cap_mono_sane(&events));
    // Microsecond text timestamps: allow the rounding.
    assert!(
        events[0].ts_ns + 1000 >= start_mono,
        "{} < {start_mono}",
        events[0].ts_ns
    );
}

/// Run a real-mode guest with `code` at 0x1000 (IVT #GP -> a HLT at 0x1100)
/// until HLT; returns the exits seen.
fn run_guest(code: &[u8]) -> Vec<String> {
    let kvm = Kvm::new().unwrap();
    let vm = kvm.create_vm().unwrap();
    let mem: GuestMemoryMmap<()> =
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
    mem.write_slice(code, GuestAddress(0x1000)).unwrap();
    // Real-mode IVT entry 13 (#GP) -> 0000:1100, a HLT.
    mem.write_slice(&[0x00, 0x11, 0x00, 0x00], GuestAddress(13 * 4))
        .unwrap();
    mem.write_slice(&[0xf4], GuestAddress(0x1100)).unwrap();
    let host = mem.get_host_address(GuestAddress(0)).unwrap() as u64;
    let region = kvm_userspace_memory_region {
        slot: 0,
        guest_phys_addr: 0,
        memory_size: 0x10000,
        userspace_addr: host,
        flags: 0,
    };
    // SAFETY: `mem` maps 0x10000 bytes at `host` and outlives the VM.
    unsafe { vm.set_user_memory_region(region).unwrap() };
    let mut vcpu = vm.create_vcpu(0).unwrap();
    let mut sregs = vcpu.get_sregs().unwrap();
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs).unwrap();
    let mut regs = vcpu.get_regs().unwrap();
    regs.rip = 0x1000;
    regs.rflags = 2;
    vcpu.set_regs(&regs).unwrap();
    let mut exits = Vec::new();
    for _ in 0..4 {
        match vcpu.run() {
            Ok(VcpuExit::Hlt) => {
                exits.push("hlt".to_string());
                break;
            }
            Ok(other) => exits.push(format!("{other:?}")),
            Err(e) => {
                exits.push(format!("error {e}"));
                break;
            }
        }
    }
    exits
}

fn cap_mono_sane(events: &[kvmtrace_recorder::observe::Observed]) -> bool {
    events.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns)
}

/// mov ecx,0x10; mov ebx,100000; 1: rdmsr; dec ebx; jnz 1b; hlt
const LOOP: [u8; 19] = [
    0x66, 0xb9, 0x10, 0, 0, 0, //
    0x66, 0xbb, 0xa0, 0x86, 0x01, 0x00, //
    0x0f, 0x32, 0x66, 0x4b, 0x75, 0xfa, //
    0xf4,
];

/// Observe-mode cost on this host and overrun accounting with a tiny ring:
/// `cargo test -p kvmtrace-recorder --test observe_probe -- --ignored --nocapture`
#[test]
#[ignore = "a measurement for docs/host-notes.md, not a test"]
fn observe_overhead_and_overrun() {
    if !require_kvm("observe_overhead_and_overrun") {
        return;
    }
    let tid = current_tid().unwrap();
    let t = std::time::Instant::now();
    run_guest(&LOOP);
    let plain = t.elapsed();
    for (buffer_kb, live) in [(8192, false), (8192, true), (4, true)] {
        let mut cap = TracefsCapture::start(&CaptureConfig {
            tids: vec![tid],
            buffer_kb,
            read_while_running: live,
            ..Default::default()
        })
        .unwrap();
        cap.set_vcpu(tid, 0);
        let t = std::time::Instant::now();
        run_guest(&LOOP);
        let traced = t.elapsed();
        let (events, stats) = cap.stop();
        let msrs = events
            .iter()
            .filter(|o| matches!(o.event, Event::MsrRead { .. }))
            .count();
        let lost: u64 = events
            .iter()
            .filter_map(|o| match o.event {
                Event::Lost { count, .. } => Some(count),
                _ => None,
            })
            .sum();
        println!(
            "buffer {buffer_kb} KiB, live read {live}: untraced {plain:?}, traced {traced:?} (x{:.2}), {msrs} kvm_msr events + {lost} lost = {}; {stats:?}",
            traced.as_secs_f64() / plain.as_secs_f64(),
            msrs as u64 + lost
        );
    }
}
