//! Any bytes given to the trace reader: open, iterate, read chunks in parallel,
//! verify, salvage to memory. Nothing may panic or allocate beyond the bounds,
//! and a salvage must always produce a trace that reads back cleanly.
//! `cargo +nightly fuzz run trace_reader`, or `fuzz/smoke.sh` on stable.
#![no_main]

use std::io::Cursor;

use kvmtrace_format::{TraceReader, salvage_to_writer, verify_reader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(mut r) = TraceReader::from_bytes(data) {
        let _ = r.summary();
        for i in 0..r.chunk_count().min(64) {
            let _ = r.chunk_info(i);
            let _ = r.read_chunk(i);
        }
        let n = r.records().take(1 << 16).filter(Result::is_ok).count();
        let _ = n;
        let _ = r.read_all_parallel(2);
    }
    let _ = verify_reader(Cursor::new(data), "fuzz.kvt");
    if let Ok((mut r, _damage)) = TraceReader::scan(Cursor::new(data), "fuzz.kvt") {
        let _ = r.read_all_parallel(1);
    }
    let mut out = Vec::new();
    if let Ok(rep) = salvage_to_writer(Cursor::new(data), "fuzz.kvt", &mut out) {
        // What a salvage writes is a sound trace holding what it says.
        let mut r = TraceReader::from_bytes(&out).expect("salvaged trace opens");
        let recs = r.read_all_parallel(1).expect("salvaged trace reads");
        assert_eq!(recs.len() as u64, rep.events_kept);
        let v = verify_reader(Cursor::new(&out[..]), "salvaged").expect("verifies");
        assert!(v.is_ok(), "{v:?}");
    }
});
