use kvmtrace_format::{Event, EventKind, LostSource};

use super::ftrace::*;

/// A tracefs `trace` text (nop tracer); also the fixture of `kvmtrace import`'s tests.
const TRACE: &str = include_str!("../testdata/ftrace_nop.txt");

const TRACE_CMD: &str = "\
cpus=2
CPU 0 is empty
        kvmprobe-2990  [001]  8161.637639: kvm_msr:              msr_read 10 = 0x1227083af590
        kvmprobe-2990  [001]  8161.637664: kvm_msr:              msr_write 401 = 0x1 (#GP)
        kvmprobe-2990  [001]  8161.637666: kvm_inj_exception:    #GP (0x0)
CPU:1 [LOST 7 EVENTS]
        kvmprobe-2991  [000]  8161.637701: kvm_inj_exception:    #UD
";

/// `import_to_vec` without the `VcpuThread` records (tested on their own).
fn imp(
    text: &[u8],
    opts: &ImportOptions,
) -> Result<(Vec<kvmtrace_format::Record>, ImportSummary), ImportError> {
    import_to_vec(text, opts).map(|(r, s)| {
        let r = r
            .into_iter()
            .filter(|r| r.event.kind() != EventKind::VcpuThread)
            .collect();
        (r, s)
    })
}

fn kinds(recs: &[kvmtrace_format::Record]) -> Vec<EventKind> {
    recs.iter().map(|r| r.event.kind()).collect()
}

#[test]
fn trace_file_with_header() {
    let (recs, sum) = imp(TRACE.as_bytes(), &ImportOptions::default()).unwrap();
    assert_eq!(
        kinds(&recs),
        [
            EventKind::MsrRead,
            EventKind::MsrWrite,
            EventKind::Exception,
            EventKind::RawExit
        ]
    );
    assert_eq!(recs[0].time_ns, 0);
    assert_eq!(recs[1].time_ns, 25_000);
    assert_eq!(recs[2].vcpu, 1);
    // seq 0 and 3 are the two threads' VcpuThread records.
    assert_eq!(recs.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 4, 5]);
    assert_eq!((sum.vcpus, sum.other_events, sum.kvm_lines), (2, 1, 5));
}

#[test]
fn trace_cmd_report() {
    let (recs, sum) = imp(TRACE_CMD.as_bytes(), &ImportOptions::default()).unwrap();
    assert_eq!(
        kinds(&recs),
        [
            EventKind::MsrRead,
            EventKind::MsrWrite,
            EventKind::Lost,
            EventKind::Exception
        ]
    );
    assert_eq!(
        recs[2].event,
        Event::Lost {
            source: LostSource::Tracefs,
            count: 7
        }
    );
    assert_eq!(sum.ring_lost, 7);
}

#[test]
fn exact_msr_count() {
    let mut text = String::new();
    for i in 0..100_000u64 {
        text.push_str(&format!(
            "        kvmprobe-2990    [001] ..... {}.{:06}: kvm_msr: msr_read 10 = 0x{:x}\n",
            100 + i / 1_000_000,
            i % 1_000_000,
            i
        ));
    }
    let (recs, sum) = imp(text.as_bytes(), &ImportOptions::default()).unwrap();
    assert_eq!(recs.len(), 100_000);
    assert_eq!(sum.convert.msr, 100_000);
}

#[test]
fn synthetic_text_imports() {
    let text = synthetic_text(800);
    let (recs, sum) = imp(&text, &ImportOptions::default()).unwrap();
    assert_eq!(sum.lines, 800);
    assert_eq!(sum.convert.msr, 600);
    assert_eq!(sum.convert.exceptions_explained, 100);
    assert_eq!(recs.len(), 600);
}

#[test]
fn bad_inputs_are_clear_errors() {
    let strict = ImportOptions::default();
    let cases: &[(&[u8], &str)] = &[
        (b"", "no KVM events"),
        (b"# tracer: nop\n#\n", "no KVM events"),
        (b"  bash-1 [000] ..... 1.0: sched_switch: prev_comm=bash\n", "no KVM events"),
        (b"\x7fELF\x02\x01\x01\x00\x00\x00\n", "binary data"),
        (&[b'x'; 10_000], "longer than"),
        (b"hello\nworld\nthis is a poem\n", "not ftrace output"),
        (
            b"  p-1 [000] ..... 1.0: kvm_msr: msr_read 10 = 0x1\n  p-1 [000] ..... 1.00\n",
            "<memory>:2: not an ftrace event line",
        ),
        (
            b"  p-1 [000] ..... 1.0: kvm_msr: msr_read 10 = 0x1\n  p-1 [000] ..... 1.1: kvm_msr: msr_read 10 =\n",
            "<memory>:2: malformed kvm_msr fields",
        ),
        (
            b"  p-1 [000] ..... 1.0: kvm_msr: msr_read 10 = 0x1\n  p-1 [000] ..... 1.1: kvm_msr: msr_read 10 = 0x1edffe",
            "<memory>:2: the last line does not end in a newline",
        ),
        (
            b"  p-1 [000] ..... 1.0: kvm_msr: msr_read 123456789 = 0x1\n",
            "<memory>:1: malformed kvm_msr",
        ),
    ];
    for (text, want) in cases {
        match imp(text, &strict) {
            Ok((r, _)) => panic!("{want}: imported {} records", r.len()),
            Err(e) => assert!(e.to_string().contains(want), "want {want:?}, got {e}"),
        }
    }
    let mut junk = b"a\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk\nl\nm\nn\no\np\nq\nr\n".to_vec();
    junk.extend_from_slice(b"  p-1 [000] ..... 1.0: kvm_msr: msr_read 10 = 0x1\n");
    let e = imp(&junk, &strict).unwrap_err().to_string();
    assert!(e.contains("<memory>:1: not ftrace output"), "{e}");
}

#[test]
fn lenient_counts_and_records_lost_lines() {
    let text = b"  p-1 [000] ..... 1.0: kvm_msr: msr_read 10 = 0x1\n  p-1 [000] ..... 1.1: kvm_msr: msr_read 10 =\n  p-1 [000] .....\n  p-1 [000] ..... 1.2: kvm_msr: msr_read 10 = 0x2\n";
    let (recs, sum) = imp(text, &ImportOptions { lenient: true }).unwrap();
    assert_eq!(sum.skipped, 2);
    assert_eq!(
        kinds(&recs),
        [EventKind::MsrRead, EventKind::Lost, EventKind::MsrRead]
    );
    assert_eq!(
        recs[1].event,
        Event::Lost {
            source: LostSource::Import,
            count: 2
        }
    );
}

#[test]
fn no_trailing_newline_and_crlf() {
    let text = b"  p-1 [000] ..... 1.0: kvm_msr: msr_read 10 = 0x1\r\n  p-1 [000] ..... 1.2: kvm_msr: msr_read 10 = 0x2";
    // A last line without its newline may be cut: an error, or a lost line.
    let e = imp(text, &ImportOptions::default()).unwrap_err();
    assert!(
        e.to_string()
            .contains("<memory>:2: the last line does not end"),
        "{e}"
    );
    let (recs, sum) = imp(text, &ImportOptions { lenient: true }).unwrap();
    assert!(sum.unterminated);
    assert_eq!(kinds(&recs), [EventKind::MsrRead, EventKind::Lost]);
    // CRLF line ends are fine.
    let (recs, _) = imp(&[&text[..], b"\n"].concat(), &ImportOptions::default()).unwrap();
    assert_eq!(recs.len(), 2);
}

#[test]
fn long_input_crosses_buffer_boundaries() {
    // Lines straddling the 256 KiB read buffer must come out whole.
    let text = synthetic_text(20_000);
    let (_, sum) = imp(&text, &ImportOptions::default()).unwrap();
    assert_eq!(sum.lines, 20_000);
    struct Slow<'a>(&'a [u8]);
    impl std::io::Read for Slow<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(7).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let mut n = 0;
    let sum = import_ftrace::<_, std::convert::Infallible>(
        Slow(&text[..50_000]),
        "slow",
        &ImportOptions { lenient: false },
        &mut |_| {
            n += 1;
            Ok(())
        },
        &mut |_| {},
    );
    // 50,000 bytes may cut the last line mid-way: an error naming it, or whole lines.
    match sum {
        Ok(s) => assert!(s.lines > 400),
        Err(e) => assert!(e.to_string().starts_with("slow:"), "{e}"),
    }
}

/// `cargo test --release -p kvmtrace-capture --lib import_speed -- --ignored --nocapture`
#[test]
#[ignore = "a measurement, not a test"]
fn import_speed() {
    let lps = import_lines_per_s(2_000_000);
    println!("import_lines_per_s = {lps:.0}");
}

/// Mutated real-format texts never panic: every outcome is records or an error.
#[test]
fn mutations_never_panic() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let base: Vec<u8> = [TRACE.as_bytes(), TRACE_CMD.as_bytes()].concat();
    let alphabet = b" -[]().:#x0123456789abcdefN\n\r\0\xff";
    for _ in 0..3000 {
        let mut t = base.clone();
        for _ in 0..(next() % 8 + 1) {
            let pos = (next() as usize) % t.len().max(1);
            if t.is_empty() {
                t.push(b'x');
            }
            match next() % 4 {
                0 => t[pos] = alphabet[(next() as usize) % alphabet.len()],
                1 => {
                    t.remove(pos);
                }
                2 => t.insert(pos, alphabet[(next() as usize) % alphabet.len()]),
                _ => t.truncate(pos.max(1)),
            }
        }
        for lenient in [false, true] {
            let _ = imp(&t, &ImportOptions { lenient });
        }
    }
}

/// Captured on the build machine (kernel 6.18.44, kvm_pvm) from a private
/// instance while `kvmtrace record --scenario msr-loop --mode observe` ran:
/// the `trace` file layout, header included (two spaces before the timestamp).
const REAL_THIS_HOST: &str = "\
# tracer: nop
#
# entries-in-buffer/entries-written: 100001/100001   #P:2
#
#                                _-----=> irqs-off/BH-disabled
#                               / _----=> need-resched
#                              | / _---=> hardirq/softirq
#                              || / _--=> preempt-depth
#                              ||| / _-=> migrate-disable
#                              |||| /     delay
#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION
#              | |         |   |||||     |         |
           vcpu0-30899   [000] .....  3460.998549: kvm_msr: msr_read 10 = 0x7b29dd60ed3
           vcpu0-30899   [000] .....  3460.998555: kvm_msr: msr_read 10 = 0x7b29dd65b32
           vcpu0-30899   [000] .....  3462.590513: kvm_msr: msr_read 10 = 0x7b385e07675
           vcpu0-30899   [000] .....  3462.590522: kvm_userspace_exit: reason KVM_EXIT_IO (2)
";

#[test]
fn real_capture_from_this_host() {
    let (recs, sum) = imp(REAL_THIS_HOST.as_bytes(), &ImportOptions::default()).unwrap();
    assert_eq!(sum.convert.msr, 3);
    assert_eq!(sum.convert.userspace_exits, 1);
    assert_eq!(kinds(&recs), [EventKind::MsrRead; 3]);
    assert_eq!(recs[2].time_ns, 1_591_964_000);
}

/// Each thread's first record names it; unnamed threads are a guess that
/// `info` reports.
#[test]
fn vcpu_threads_and_guessed_identity() {
    let (recs, sum) = import_to_vec(TRACE.as_bytes(), &ImportOptions::default()).unwrap();
    let threads: Vec<_> = recs
        .iter()
        .filter_map(|r| match &r.event {
            Event::VcpuThread { tid, identity, .. } => Some((r.vcpu, *tid, *identity)),
            _ => None,
        })
        .collect();
    use kvmtrace_format::VcpuIdentity::FirstSeen;
    assert_eq!(threads, [(0, 2990, FirstSeen), (1, 2991, FirstSeen)]);
    assert_eq!(sum.per_vm[0].guessed, [0, 1]);
}

/// Two QEMU processes in one capture (tgid column): two VMs, never merged;
/// `--pid` keeps one.
#[test]
fn several_vms_are_split() {
    let text = "\
       CPU 0/KVM-101   (  100) [000] ..... 1.000001: kvm_msr: msr_read 10 = 0x5
       CPU 0/KVM-201   (  200) [001] ..... 1.000002: kvm_msr: msr_read 10 = 0x6
       CPU 1/KVM-102   (  100) [000] ..... 1.000003: kvm_msr: msr_read 1b = 0xfee00800
CPU:1 [LOST 3 EVENTS]
       CPU 1/KVM-202   (  200) [001] ..... 1.000004: kvm_msr: msr_read 1b = 0xfee00800
";
    let mut out: Vec<(usize, kvmtrace_format::Record)> = Vec::new();
    let sum = import_ftrace_split::<_, std::convert::Infallible>(
        text.as_bytes(),
        "t",
        &ImportOptions::default(),
        None,
        &mut |vm, r| {
            out.push((vm, r));
            Ok(())
        },
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(sum.vms, 2);
    assert_eq!(sum.per_vm.len(), 2);
    assert_eq!(sum.per_vm[1].pid, Some(200));
    assert_eq!(sum.per_vm[1].vcpus, [0, 1]);
    for vm in 0..2 {
        let recs: Vec<_> = out.iter().filter(|o| o.0 == vm).map(|o| &o.1).collect();
        // Own sequence numbers, the loss in both.
        for (i, r) in recs.iter().enumerate() {
            assert_eq!(r.seq, i as u64);
        }
        assert!(
            recs.iter()
                .any(|r| matches!(r.event, Event::Lost { count: 3, .. }))
        );
    }
    let mut n = 0;
    let sum = import_ftrace_split::<_, std::convert::Infallible>(
        text.as_bytes(),
        "t",
        &ImportOptions::default(),
        Some(VmSelect::Pid(200)),
        &mut |vm, _| {
            assert_eq!(vm, 1);
            n += 1;
            Ok(())
        },
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(sum.per_vm.len(), 1);
    assert!(n > 0 && sum.other_vm_records > 0);
    let e = import_ftrace_split::<_, std::convert::Infallible>(
        text.as_bytes(),
        "t",
        &ImportOptions::default(),
        Some(VmSelect::Pid(300)),
        &mut |_, _| Ok(()),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(e.to_string().contains("no VM"), "{e}");
}
