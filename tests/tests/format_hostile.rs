//! Hostile length fields never make the reader allocate beyond the format's
//! bounds. A counting allocator records the largest single allocation; this
//! file holds one test so nothing else allocates meanwhile.

mod format_common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Cursor;
use std::sync::atomic::{AtomicUsize, Ordering};

use format_common::*;
use kvmtrace_format::*;

struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only records sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LARGEST.fetch_max(l.size(), Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: p was allocated by System with layout l.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        LARGEST.fetch_max(n, Ordering::Relaxed);
        // SAFETY: p was allocated by System with layout l.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

const BOUND: usize = 64 << 20;

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn all_readers_fail(b: &[u8], what: &str) {
    LARGEST.store(0, Ordering::Relaxed);
    assert!(
        TraceReader::from_bytes(b)
            .and_then(|mut r| r.read_all())
            .is_err(),
        "{what}"
    );
    let rep = verify_reader(Cursor::new(b), "h");
    assert!(rep.map(|r| r.damage.is_some()).unwrap_or(true), "{what}");
    let mut out = Vec::new();
    let _ = salvage_to_writer(Cursor::new(b), "h", &mut out);
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(largest <= BOUND + 4096, "{what}: allocated {largest} bytes");
}

#[test]
fn hostile_lengths_stay_within_bounds() {
    let (recs, breaks) = golden_records();
    let full = write_with_breaks(&full_header(), &recs, &breaks);
    let r = TraceReader::from_bytes(&full).unwrap();
    let c0 = r.chunk_info(0).unwrap().offset as usize;
    let foot =
        u64::from_le_bytes(full[full.len() - 16..full.len() - 8].try_into().unwrap()) as usize;
    for v in [u32::MAX, (64 << 20) + 1, 64 << 20, 1 << 30] {
        // Header length (CRC not fixed: the length check comes first).
        let mut b = full.clone();
        put32(&mut b, 16, v);
        all_readers_fail(&b, &format!("header length {v:#x}"));
        // Chunk compressed length, uncompressed length, count.
        for field in [4, 8, 12] {
            let mut b = full.clone();
            put32(&mut b, c0 + field, v);
            all_readers_fail(&b, &format!("chunk field {field} = {v:#x}"));
        }
        // Footer length.
        let mut b = full.clone();
        put32(&mut b, foot + 4, v);
        all_readers_fail(&b, &format!("footer length {v:#x}"));
    }
    // A forged chunk whose frame is self-consistent (CRC right) but claims a
    // 2 MiB payload from a few bytes of zstd: refused without a larger buffer.
    let mut b = full[..c0].to_vec();
    let real = encode_chunk(&recs[..3]).unwrap().unwrap();
    let payload = real.bytes[36..].to_vec();
    let mut frame = vec![0u8; 36];
    frame[0..4].copy_from_slice(b"KVTC");
    put32(&mut frame, 4, payload.len() as u32);
    put32(&mut frame, 8, 2 << 20);
    put32(&mut frame, 12, 1000);
    let crc = crc32(&[&frame[4..32], &payload[..]].concat());
    put32(&mut frame, 32, crc);
    b.extend_from_slice(&frame);
    b.extend_from_slice(&payload);
    all_readers_fail(&b, "forged 2 MiB chunk");
    // Bincode lengths inside a header: a string claiming 1 GiB.
    let mut b = full[..16].to_vec();
    let body = [0xfcu8, 0, 0, 0, 0x40]; // varint u32 = 1 GiB string length
    b.extend_from_slice(&(body.len() as u32).to_le_bytes());
    b.extend_from_slice(&crc32(&[&full[..16], &body[..]].concat()).to_le_bytes());
    b.extend_from_slice(&body);
    all_readers_fail(&b, "1 GiB header string");
}
