//! Recording overhead on `msr-loop`: the same run with events recorded and with
//! events discarded before the channel (`RecordConfig::discard_events`).
//! `cargo run --release -p kvmtrace-recorder --example overhead [ITERATIONS] [ROUNDS] [VCPUS]`

use kvmtrace_recorder::{RecordConfig, record};

fn main() {
    let mut args = std::env::args().skip(1);
    let iterations: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let rounds: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let vcpus: Option<u32> = args.next().and_then(|a| a.parse().ok());
    let dir = std::env::temp_dir();
    let run = |discard: bool| {
        let mut cfg = RecordConfig::new(dir.join(format!("overhead-{discard}.kvt")));
        cfg.scenario = Some("msr-loop".into());
        cfg.iterations = Some(iterations);
        cfg.discard_events = discard;
        cfg.vcpus = vcpus;
        record(&cfg).expect("record")
    };
    println!(
        "pipeline only (no KVM): {:.1} ns/event on the producing thread",
        pipeline_only(2_000_000)
    );
    let _ = run(true);
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let s = run(false);
        println!(
            "recorded: {} events, {:.1} ms, vcpu {:.1} ns/event (median {:.0}), {:.2} B/event, wait {} ns",
            s.events,
            s.run_ns as f64 / 1e6,
            s.vcpu_ns_per_event,
            s.vcpu_ns_per_event_median,
            s.bytes as f64 / s.events.max(1) as f64,
            s.channel_wait_ns
        );
        on.push(s.run_ns);
        let d = run(true);
        println!("discarded: {:.1} ms", d.run_ns as f64 / 1e6);
        off.push(d.run_ns);
    }
    on.sort();
    off.sort();
    println!(
        "record_overhead_ratio (medians) = {:.4}",
        on[on.len() / 2] as f64 / off[off.len() / 2] as f64
    );
}

/// The vCPU side of the pipeline alone (no KVM): stamp + push of `n` events
/// into a writer whose sink discards them.
fn pipeline_only(n: u64) -> f64 {
    use kvmtrace_format::{DecidedBy, Event, MsrOutcome, Origin, Record};
    use kvmtrace_recorder::sink::{Sink, SinkError};
    use kvmtrace_recorder::writer::{Shared, Writer};
    struct Null;
    impl Sink for Null {
        fn push(&mut self, _: &Record) -> Result<(), SinkError> {
            Ok(())
        }
        fn flush_chunk(&mut self) -> Result<(), SinkError> {
            Ok(())
        }
        fn finish(self: Box<Self>) -> Result<(u64, u64), SinkError> {
            Ok((0, 0))
        }
    }
    let shared = Shared::new(1);
    let w = Writer::start_with(Box::new(Null), shared).expect("writer");
    let mut out = w.out(0, kvmtrace_recorder::OnFull::Wait, false);
    let t0 = std::time::Instant::now();
    for i in 0..n {
        let rec = out.stamp(Event::MsrRead {
            index: 0x10,
            origin: Origin::Guest,
            outcome: MsrOutcome::Value(i),
            decided_by: DecidedBy::Vmm,
            capture: None,
        });
        out.push(rec);
    }
    out.close();
    let ns = t0.elapsed().as_nanos() as f64 / n as f64;
    drop(out);
    let _ = w.finish();
    ns
}
