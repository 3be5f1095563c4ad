//! Decompression bombs (issue 14, item 1): chunks with valid CRCs whose zstd
//! streams expand to millions of tiny `halt` records. Every reader refuses a
//! chunk beyond the record and size limits before decompressing it, and a
//! trace of many chunks within the limits is read one chunk at a time: a
//! counting allocator measures the peak of live heap bytes. One test in this
//! file, so nothing else allocates meanwhile.

mod format_common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Cursor;
use std::sync::atomic::{AtomicUsize, Ordering};

use format_common::*;
use kvmtrace_format::*;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: forwards to the system allocator unchanged; only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        grew(l.size());
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: p was allocated by System with layout l.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if n > l.size() {
            grew(n - l.size());
        } else {
            LIVE.fetch_sub(l.size() - n, Ordering::Relaxed);
        }
        // SAFETY: p was allocated by System with layout l.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A chunk frame of `n` halt records at seq `first`, time 0, its nine streams
/// zstd-compressed: tags 0x10, time deltas 0, bincode bodies 16 (`Halt`).
fn halt_bomb(n: usize, first: u64) -> (Vec<u8>, u32) {
    let tags = vec![0x10u8; n];
    let zeros = vec![0u8; n];
    let bodies = vec![16u8; n];
    let streams: [&[u8]; 9] = [&tags, &[], &[], &zeros, &zeros, &[], &[], &[], &bodies];
    let mut table = Vec::new();
    let mut data = Vec::new();
    for s in streams {
        if s.is_empty() {
            table.extend([0u8, 0]);
            continue;
        }
        let z = zstd::bulk::compress(s, 19).unwrap();
        table.push(1);
        varint(&mut table, s.len() as u64);
        varint(&mut table, z.len() as u64);
        data.extend_from_slice(&z);
    }
    let payload = [table, data].concat();
    let ulen = (4 * n) as u32;
    let mut frame = vec![0u8; 36];
    frame[0..4].copy_from_slice(b"KVTC");
    put32(&mut frame, 4, payload.len() as u32);
    put32(&mut frame, 8, ulen);
    put32(&mut frame, 12, n as u32);
    frame[16..24].copy_from_slice(&first.to_le_bytes());
    let crc = crc32(&[&frame[4..32], &payload[..]].concat());
    put32(&mut frame, 32, crc);
    frame.extend_from_slice(&payload);
    (frame, ulen)
}

/// A finished trace (footer and all) of `chunks` bomb chunks of `n` records.
fn bomb_trace(n: usize, chunks: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = TraceWriter::new(&mut buf, &full_header()).unwrap();
    for c in 0..chunks {
        let first = (c * n) as u64;
        let (bytes, ulen) = halt_bomb(n, first);
        let mut stats = ChunkStats::default();
        let mut by_kind = [0u64; codec::KIND_COUNT];
        by_kind[kind_code(EventKind::Halt) as usize] = n as u64;
        stats.events = n as u64;
        stats.by_kind = by_kind;
        stats.vcpus = vec![0];
        stats.last_seq = first + n as u64 - 1;
        w.append_chunk(&EncodedChunk {
            bytes,
            uncompressed_len: ulen,
            count: n as u32,
            first_seq: first,
            first_time_ns: 0,
            stats,
        })
        .unwrap();
    }
    w.finish().unwrap();
    buf
}

/// Peak live heap bytes (above what was live before) while `f` runs.
fn peak_of(f: impl FnOnce()) -> usize {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    f();
    PEAK.load(Ordering::Relaxed) - base
}

/// Every way in: open + records, read_chunk, read_all, verify, scan, salvage.
fn read_every_way(b: &[u8]) -> usize {
    peak_of(|| {
        if let Ok(mut r) = TraceReader::from_bytes(b) {
            let _ = r.records().filter(Result::is_ok).count();
            let _ = r.read_chunk(0);
        }
        let _ = verify_reader(Cursor::new(b), "bomb.kvt");
        let mut out = Vec::new();
        let _ = salvage_to_writer(Cursor::new(b), "bomb.kvt", &mut out);
    })
}

/// 16 MiB of live heap: about 50 chunks' worth of records at most.
const CAP: usize = 16 << 20;

#[test]
fn decompression_bombs_stay_bounded() {
    // The bomb: one chunk of 16,777,216 halts (64 MiB decoded, a few
    // KiB on disk). Before the limits it decoded to ~1 GiB.
    let big = bomb_trace(1 << 24, 1);
    assert!(big.len() < 64 << 10, "{}", big.len());
    // A smaller one that an unbounded reader decodes (64 MiB of records).
    let mid = bomb_trace(1 << 20, 1);
    for (b, what) in [(&big, "16 M halts"), (&mid, "1 M halts")] {
        let e = TraceReader::from_bytes(b)
            .and_then(|mut r| r.read_chunk(0))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("records, over the limit") || e.contains("exceeds the 2 MiB limit"),
            "{what}: {e}"
        );
        let rep = verify_reader(Cursor::new(&b[..]), "bomb.kvt").unwrap();
        assert!(rep.damage.is_some(), "{what}");
        let peak = read_every_way(b);
        assert!(peak < CAP, "{what}: peak {peak} bytes of live heap");
    }
    // Within the limits: 64 chunks of 65,536 halts (4 M records, 256 KiB each
    // decoded). Streaming readers hold one chunk at a time.
    let many = bomb_trace(1 << 16, 64);
    let mut r = TraceReader::from_bytes(&many).unwrap();
    assert_eq!(r.summary().events, 64 << 16);
    let peak = peak_of(|| {
        let n = r.records().filter(Result::is_ok).count();
        assert_eq!(n, 64 << 16);
        let rep = verify_reader(Cursor::new(&many[..]), "bomb.kvt").unwrap();
        assert!(rep.damage.is_none(), "{:?}", rep.damage);
        assert_eq!(rep.events_ok, 64 << 16);
    });
    assert!(peak < CAP, "streaming: peak {peak} bytes of live heap");
}
