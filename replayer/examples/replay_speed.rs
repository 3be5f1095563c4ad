//! Replay speed on an in-memory msr-loop trace (TSC reads, as `kvmtrace synth
//! --pattern msr-loop` makes) or on a `.kvt` file:
//! `cargo run --release -p kvmtrace-replayer --example replay_speed [-- FILE.kvt] [N]`

use std::time::Instant;

use kvmtrace_format::*;
use kvmtrace_replayer::{Policy, Replay};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (header, records) = match args.first().filter(|a| a.ends_with(".kvt")) {
        Some(path) => {
            let mut r = TraceReader::open(path).expect("open trace");
            let h = r.header().clone();
            (h, r.read_all().expect("read trace"))
        }
        None => {
            let n: u64 = args
                .first()
                .and_then(|a| a.parse().ok())
                .unwrap_or(5_000_000);
            let mut h = TraceHeader::default();
            h.host.kernel_release = "6.18.44".into();
            h.host.kvm_module = "kvm_pvm".into();
            h.vm.vcpus = 1;
            // MODELLED=1: reads of MISC_ENABLE and MC0_STATUS writes of 0,
            // which every policy decides (the slow path of every lane).
            let modelled = std::env::var_os("MODELLED").is_some();
            let recs = (0..n)
                .map(|seq| Record {
                    seq,
                    vcpu: 0,
                    time_ns: seq * 3500,
                    event: match (modelled, seq % 2) {
                        (false, _) => Event::MsrRead {
                            index: 0x10,
                            origin: Origin::Guest,
                            outcome: MsrOutcome::Value(0x1227_083a_f590 + seq * 8750),
                            decided_by: DecidedBy::Vmm,
                            capture: Some(MsrExitReason::Filter),
                        },
                        (true, 0) => Event::MsrRead {
                            index: 0x1a0,
                            origin: Origin::Guest,
                            outcome: MsrOutcome::Value(0x1), // kvm_pvm RESET value
                            decided_by: DecidedBy::Vmm,
                            capture: Some(MsrExitReason::Filter),
                        },
                        (true, _) => Event::MsrWrite {
                            index: 0x401,
                            value: 0,
                            origin: Origin::Guest,
                            outcome: MsrOutcome::Ok,
                            decided_by: DecidedBy::Vmm,
                            capture: Some(MsrExitReason::Filter),
                        },
                    },
                })
                .collect();
            (h, recs)
        }
    };
    let n = records.len() as f64;
    let chunk = 4096;
    // SEQ=1: lanes on this thread only (the one-core ratio `kvmtrace bench`
    // reports; the default runs lanes on rayon's global pool).
    let seq = std::env::var_os("SEQ").is_some();
    let time = |policies: Vec<Policy>| {
        let t = Instant::now();
        let mut r = Replay::new(&header, policies);
        if seq {
            r = r.sequential();
        }
        for c in records.chunks(chunk) {
            r.feed(c);
        }
        let rep = r.finish();
        (t.elapsed().as_secs_f64(), rep)
    };
    let host = || Policy::resolve("host", &header).unwrap();
    let (t1, rep) = time(vec![host()]);
    println!(
        "1 policy: {:.3} s, {:.1} M events/s (divergences {})",
        t1,
        n / t1 / 1e6,
        rep.policies[0].divergences
    );
    let eight: Vec<Policy> = [
        "kvm-5.10", "kvm-5.15", "kvm-5.19", "kvm-6.0", "kvm-6.2", "kvm-6.18", "host", "kvm-6.18",
    ]
    .iter()
    .map(|p| Policy::resolve(p, &header).unwrap())
    .collect();
    let (t8, rep8) = time(eight);
    if std::env::var_os("SHOW").is_some() {
        println!("{}", rep8.render(3));
    }
    println!(
        "8 policies: {:.3} s, ratio {:.2} (bar <= 0.6 x 8 = 4.8)",
        t8,
        t8 / t1
    );
}
