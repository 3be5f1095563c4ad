//! Size and speed of the format on a realistic msr-loop (1M events). Ignored by
//! default (figures, not assertions on time); run in release:
//! `cargo test --release -p kvmtrace-format --test measure -- --ignored --nocapture`

mod common;

use std::time::Instant;

use kvmtrace_format::perf;

#[test]
#[ignore]
fn msr_loop_1m() {
    let n = 1_000_000;
    let recs = common::msr_loop(n, 1);
    let h = common::header();
    let t0 = Instant::now();
    let kvt = perf::encode_to_vec(&h, &recs).unwrap();
    let enc = t0.elapsed().as_secs_f64();
    let json = common::json_lines(&recs);
    let jz = zstd::encode_all(&json[..], 3).unwrap();
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t0 = Instant::now();
        let back = perf::decode_slice(&kvt).unwrap();
        best = best.min(t0.elapsed().as_secs_f64());
        assert_eq!(back.len(), recs.len());
    }
    let back = perf::decode_slice(&kvt).unwrap();
    assert_eq!(back, recs);
    let mut reuse = Vec::new();
    let mut best_reuse = f64::MAX;
    for _ in 0..15 {
        let t0 = Instant::now();
        perf::decode_slice_into(&kvt, &mut reuse).unwrap();
        best_reuse = best_reuse.min(t0.elapsed().as_secs_f64());
    }
    assert_eq!(reuse.len(), recs.len());
    let mut best_stream = f64::MAX;
    for _ in 0..15 {
        let t0 = Instant::now();
        let mut sum = 0u64;
        let n = perf::decode_slice_streaming(&kvt, |r| sum = sum.wrapping_add(r.time_ns)).unwrap();
        std::hint::black_box(sum);
        best_stream = best_stream.min(t0.elapsed().as_secs_f64());
        assert_eq!(n, recs.len() as u64);
    }
    let mut best_iter = f64::MAX;
    for _ in 0..5 {
        let t0 = Instant::now();
        let mut r = kvmtrace_format::TraceReader::from_bytes(&kvt).unwrap();
        let mut sum = 0u64;
        for rec in r.records() {
            sum = sum.wrapping_add(rec.unwrap().time_ns);
        }
        std::hint::black_box(sum);
        best_iter = best_iter.min(t0.elapsed().as_secs_f64());
    }
    let t0 = Instant::now();
    let par = perf::decode_slice_parallel(&kvt, 2).unwrap();
    let pt = t0.elapsed().as_secs_f64();
    assert_eq!(par.len(), recs.len());
    println!(
        "events {n}\nkvt bytes {} ({:.3} bytes/event)\njson+zstd-3 bytes {} ({:.2} bytes/event)\nkvt/json+zstd {:.3}\nencode {:.1} M events/s\ndecode (1 thread) {:.1} M events/s\ndecode (1 thread, reused buffer) {:.1} M events/s\ndecode (1 thread, streaming by chunk) {:.1} M events/s\ndecode (records() iterator) {:.1} M events/s\ndecode (2 threads) {:.1} M events/s",
        kvt.len(),
        kvt.len() as f64 / n as f64,
        jz.len(),
        jz.len() as f64 / n as f64,
        kvt.len() as f64 / jz.len() as f64,
        n as f64 / enc / 1e6,
        n as f64 / best / 1e6,
        n as f64 / best_reuse / 1e6,
        n as f64 / best_stream / 1e6,
        n as f64 / best_iter / 1e6,
        n as f64 / pt / 1e6,
    );
}

#[test]
#[ignore]
fn sizes() {
    println!(
        "Record {} bytes, Event {} bytes",
        std::mem::size_of::<kvmtrace_format::Record>(),
        std::mem::size_of::<kvmtrace_format::Event>()
    );
}

/// Decode only, `KVT_DECODE_LOOPS` times (default 0): for `perf stat`, whose
/// cycle counts stay meaningful on a loaded machine.
#[test]
#[ignore]
fn decode_loops() {
    let loops: usize = std::env::var("KVT_DECODE_LOOPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let recs = common::msr_loop(1_000_000, 1);
    let kvt = perf::encode_to_vec(&common::header(), &recs).unwrap();
    let recs2 = recs;
    let mut out = Vec::new();
    let encodes: usize = std::env::var("KVT_ENCODE_LOOPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    for _ in 0..encodes {
        std::hint::black_box(perf::encode_to_vec(&common::header(), &recs2).unwrap());
    }
    let streaming = std::env::var_os("KVT_STREAMING").is_some();
    for _ in 0..loops {
        if streaming {
            let mut sum = 0u64;
            perf::decode_slice_streaming(&kvt, |r| sum = sum.wrapping_add(r.time_ns)).unwrap();
            std::hint::black_box(sum);
        } else {
            perf::decode_slice_into(&kvt, &mut out).unwrap();
        }
    }
}
