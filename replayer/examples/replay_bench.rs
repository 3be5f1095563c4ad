//! The replay figures of `kvmtrace bench` in isolation (a profiling aid): the
//! fully modelled trace (guest MISC_ENABLE reads and MC0_STATUS writes of 0,
//! kvm_pvm 6.18) written to a file, then replayed from the file on one thread
//! (decode included) against `host` and against the bench's 8 distinct
//! policies.
//!
//! `cargo run --release -p kvmtrace-replayer --example replay_bench [-- N [one|eight|both] [reps]]`
//!
//! `one` / `eight` run only that side (for `perf record` or callgrind);
//! `both` (the default) prints the best-of-`reps` times and the ratio.

use std::time::Instant;

/// Wall time, or with `CPU=1` this thread's CPU time from
/// `/proc/thread-self/schedstat` (ns; a busy machine's waits for a core
/// left out).
enum Clock {
    Wall(Instant),
    Cpu(u64),
}

fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl Clock {
    fn start() -> Clock {
        match std::env::var_os("CPU").and(thread_cpu_ns()) {
            Some(ns) => Clock::Cpu(ns),
            None => Clock::Wall(Instant::now()),
        }
    }

    fn elapsed(&self) -> f64 {
        match self {
            Clock::Wall(t) => t.elapsed().as_secs_f64(),
            Clock::Cpu(ns) => (thread_cpu_ns().unwrap_or(*ns) - ns) as f64 / 1e9,
        }
    }
}

use kvmtrace_format::*;
use kvmtrace_replayer::{Policy, replay_reader};

/// `n` presets that differ pairwise for `header`, as `kvmtrace bench` picks
/// them (`tools/src/commands/replay.rs` `distinct_policies`): the releases
/// where rules change, newest first, `host` first.
fn distinct(header: &TraceHeader, n: usize) -> Vec<String> {
    let mut names = Policy::milestone_names();
    names.reverse();
    let mut chosen: Vec<(String, Policy)> = Vec::new();
    for name in names {
        let p = Policy::resolve(&name, header).expect("preset");
        if chosen.iter().all(|(_, q)| q.first_difference(&p).is_some()) {
            chosen.push((name, p));
        }
        if chosen.len() == n {
            break;
        }
    }
    chosen.into_iter().map(|(n, _)| n).collect()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: u64 = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(5_000_000);
    let mode = args.get(1).map(String::as_str).unwrap_or("both");
    let reps: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    let path = std::env::temp_dir().join(format!("replay-bench-{}-{n}.kvt", std::process::id()));
    let mut h = TraceHeader::default();
    h.host.kernel_release = "6.18.44".into();
    h.host.kvm_module = "kvm_pvm".into();
    h.vm.vcpus = 1;
    {
        let out = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
        let mut w = TraceWriter::new(out, &h).expect("writer");
        for seq in 0..n {
            let event = if seq % 2 == 0 {
                Event::MsrRead {
                    index: 0x1a0,
                    origin: Origin::Guest,
                    outcome: MsrOutcome::Value(0x1),
                    decided_by: DecidedBy::Vmm,
                    capture: Some(MsrExitReason::Filter),
                }
            } else {
                Event::MsrWrite {
                    index: 0x401,
                    value: 0,
                    origin: Origin::Guest,
                    outcome: MsrOutcome::Ok,
                    decided_by: DecidedBy::Vmm,
                    capture: Some(MsrExitReason::Filter),
                }
            };
            w.push(&Record {
                seq,
                vcpu: 0,
                time_ns: seq * 3500,
                event,
            })
            .expect("push");
        }
        w.finish().expect("finish");
    }
    let eight = distinct(&h, 8);
    let eight: Vec<&str> = eight.iter().map(String::as_str).collect();
    println!("policies: {}", eight.join(" "));
    let run = |names: &[&str]| {
        let t = Clock::start();
        let mut r = TraceReader::open(&path).expect("open");
        let header = r.header().clone();
        let policies: Vec<Policy> = names
            .iter()
            .map(|p| Policy::resolve(p, &header).expect("policy"))
            .collect();
        let rep = replay_reader(&mut r, policies, Some(1), false).expect("replay");
        (t.elapsed(), rep)
    };
    let (mut t1, mut t8) = (f64::MAX, f64::MAX);
    for _ in 0..reps {
        if mode != "eight" {
            let (t, rep) = run(&eight[..1]);
            t1 = t1.min(t);
            if std::env::var_os("SHOW").is_some() {
                println!("{}", rep.render(3));
            }
        }
        if mode != "one" {
            let (t, rep) = run(&eight);
            t8 = t8.min(t);
            if std::env::var_os("SHOW").is_some() {
                println!("{}", rep.render(3));
            }
        }
    }
    let _ = std::fs::remove_file(&path);
    let nf = n as f64;
    if mode != "eight" {
        println!("1 policy: {t1:.3} s, {:.1} M events/s", nf / t1 / 1e6);
    }
    if mode != "one" {
        println!("8 policies: {t8:.3} s, {:.1} M events/s", nf / t8 / 1e6);
    }
    if mode == "both" {
        println!("ratio {:.2}", t8 / t1);
    }
}
