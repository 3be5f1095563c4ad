//! Which MSR accesses `host` leaves unmodeled in a trace (closed loop, as
//! `kvmtrace fidelity` folds): a worklist for raising coverage.
//! `cargo run -p kvmtrace-replayer --example unmodeled -- FILE.kvt...`

use std::collections::BTreeMap;

use kvmtrace_format::*;
use kvmtrace_replayer::{Engine, Policy};

fn main() {
    let mut counts: BTreeMap<(u32, &str, &str), u64> = BTreeMap::new();
    for path in std::env::args().skip(1) {
        let mut r = TraceReader::open(&path).expect("open trace");
        let h = r.header().clone();
        let records = r.read_all().expect("read trace");
        let mut e = Engine::new(Policy::resolve("host", &h).expect("host"), &h);
        for rec in &records {
            let (index, p, dir, origin) = match &rec.event {
                Event::MsrRead { index, origin, .. } => (
                    *index,
                    e.msr_read(rec.vcpu, *index, *origin),
                    "read",
                    *origin,
                ),
                Event::MsrWrite {
                    index,
                    value,
                    origin,
                    ..
                } => (
                    *index,
                    e.msr_write(rec.vcpu, *index, *value, *origin),
                    "write",
                    *origin,
                ),
                _ => {
                    e.apply(rec);
                    continue;
                }
            };
            if p.outcome.is_none() {
                let o = if origin == Origin::Host {
                    "host"
                } else {
                    "guest"
                };
                *counts.entry((index, dir, o)).or_default() += 1;
            }
            e.apply(rec);
        }
    }
    for ((i, d, o), n) in counts {
        println!("{i:#010x} {d:5} {o:5} {n}");
    }
}
