//! Damaged traces: cut at every byte, a flipped byte anywhere, garbage, newer
//! versions. Nothing panics; `verify` finds the damage; `salvage` keeps exactly
//! the complete chunks before it; the reader tells the kinds of damage apart.

mod format_common;

use std::io::Cursor;

use format_common::*;
use kvmtrace_format::*;

fn golden_bytes() -> (Vec<u8>, Vec<Record>) {
    let (recs, breaks) = golden_records();
    (write_with_breaks(&full_header(), &recs, &breaks), recs)
}

fn footer_offset(b: &[u8]) -> usize {
    u64::from_le_bytes(b[b.len() - 16..b.len() - 8].try_into().unwrap()) as usize
}

/// Records kept by a salvage of `bytes`, if the header survived.
fn salvage_mem(bytes: &[u8]) -> Result<(SalvageReport, Vec<Record>), FormatError> {
    let mut out = Vec::new();
    let rep = salvage_to_writer(Cursor::new(bytes), "cut.kvt", &mut out)?;
    let mut r = TraceReader::from_bytes(&out).expect("a salvaged trace is valid");
    assert!(
        verify_reader(Cursor::new(&out[..]), "salvaged")
            .unwrap()
            .is_ok()
    );
    Ok((rep, r.read_all().unwrap()))
}

#[test]
fn cut_at_every_byte_keeps_every_complete_chunk() {
    let (full, recs) = golden_bytes();
    let r = TraceReader::from_bytes(&full).unwrap();
    let chunks = r.chunks().to_vec();
    let header_end = r.header_end() as usize;
    let foot = footer_offset(&full);
    for cut in 0..full.len() {
        let b = &full[..cut];
        // The strict reader refuses it, telling truncation from foreign files.
        match TraceReader::from_bytes(b) {
            Ok(_) => panic!("cut at {cut} opened"),
            Err(FormatError::Truncated { .. }) => {}
            Err(FormatError::NotATrace { .. }) if cut == 0 => {}
            Err(e) => panic!("cut at {cut}: {e}"),
        }
        let rep = verify_reader(Cursor::new(b), "cut.kvt");
        match rep {
            Ok(rep) => {
                let d = rep.damage.expect("damage found");
                assert_eq!(d.kind, DamageKind::Truncated, "cut at {cut}: {d:?}");
                // A cut inside the header cannot be salvaged, and says so.
                if cut < header_end {
                    assert!(
                        d.message.contains("nothing can be salvaged"),
                        "cut at {cut}: {}",
                        d.message
                    );
                } else {
                    assert!(d.message.contains("--salvage"), "{}", d.message);
                }
            }
            Err(e) => assert!(cut == 0, "cut at {cut}: {e}"),
        }
        // Salvage keeps exactly the chunks that end before the cut.
        let complete: Vec<&ChunkInfo> = chunks
            .iter()
            .filter(|c| c.offset as usize + c.frame_len() as usize <= cut)
            .collect();
        match salvage_mem(b) {
            Ok((rep, kept)) => {
                assert!(cut >= header_end, "salvaged a cut header at {cut}");
                assert_eq!(rep.chunks_kept as usize, complete.len(), "cut at {cut}");
                let n: usize = complete.iter().map(|c| c.count as usize).sum();
                assert_eq!(kept, recs[..n], "cut at {cut}");
                assert_eq!(rep.events_kept as usize, n);
                assert_eq!(rep.last_seq, kept.last().map(|r| r.seq));
                let lost = if cut >= foot {
                    cut - foot
                } else {
                    cut - complete
                        .last()
                        .map_or(header_end, |c| (c.offset + c.frame_len()) as usize)
                };
                assert_eq!(rep.bytes_lost as usize, lost, "cut at {cut}");
            }
            Err(e) => assert!(cut < header_end, "cut at {cut}: {e}"),
        }
    }
}

#[test]
fn a_flipped_byte_anywhere_is_found() {
    let (full, recs) = golden_bytes();
    let r = TraceReader::from_bytes(&full).unwrap();
    let chunks = r.chunks().to_vec();
    let header_end = r.header_end() as usize;
    for i in 0..full.len() {
        for mask in [0x01u8, 0x80] {
            let mut b = full.clone();
            b[i] ^= mask;
            let rep = verify_reader(Cursor::new(&b[..]), "flip.kvt");
            match &rep {
                Ok(rep) => assert!(rep.damage.is_some(), "flip {mask:#x} at {i:#x} not found"),
                Err(FormatError::NotATrace { .. }) => assert!(i < 8),
                Err(FormatError::TooNew { .. }) => assert!((12..14).contains(&i)),
                Err(e) => panic!("flip at {i:#x}: {e}"),
            }
            // The strict reader either refuses or, reading chunk by chunk, errs
            // on the damaged chunk; it never returns wrong records silently.
            if let Ok(mut r) = TraceReader::from_bytes(&b) {
                assert!(r.read_all().is_err(), "flip at {i:#x} read back fine");
            }
            if i >= header_end {
                let (rep, kept) = salvage_mem(&b).unwrap();
                let bad = chunks.iter().position(|c| {
                    (c.offset as usize..(c.offset + c.frame_len()) as usize).contains(&i)
                });
                let want = bad.unwrap_or(chunks.len());
                assert_eq!(rep.chunks_kept as usize, want, "flip at {i:#x}");
                let n: usize = chunks[..want].iter().map(|c| c.count as usize).sum();
                assert_eq!(kept, recs[..n]);
            }
        }
    }
}

#[test]
fn damage_names_chunk_offset_and_cause() {
    let (full, _) = golden_bytes();
    let r = TraceReader::from_bytes(&full).unwrap();
    let c2 = r.chunk_info(2).unwrap();
    // A flipped payload byte of chunk 2: CRC.
    let mut b = full.clone();
    b[c2.offset as usize + 40] ^= 0x55;
    let d = verify_reader(Cursor::new(&b[..]), "t.kvt")
        .unwrap()
        .damage
        .unwrap();
    assert_eq!(
        (d.kind, d.chunk, d.offset),
        (DamageKind::Crc, Some(2), c2.offset)
    );
    assert!(
        d.message.contains("CRC32") && d.message.contains("t.kvt") && d.message.contains("chunk 2"),
        "{}",
        d.message
    );
    // A hostile length in chunk 2: the limit, said like `object` says it.
    let mut b = full.clone();
    b[c2.offset as usize + 4..c2.offset as usize + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    let d = verify_reader(Cursor::new(&b[..]), "trace.kvt")
        .unwrap()
        .damage
        .unwrap();
    assert_eq!(d.kind, DamageKind::Length);
    assert_eq!(
        d.message,
        format!(
            "invalid chunk length at offset {:#x} in trace.kvt (chunk 2): 4095 MiB exceeds the 2 MiB limit",
            c2.offset
        )
    );
    // The footer: a flipped byte in its body.
    let mut b = full.clone();
    let foot = footer_offset(&b);
    b[foot + 14] ^= 1;
    let rep = verify_reader(Cursor::new(&b[..]), "t.kvt").unwrap();
    assert_eq!(rep.damage.unwrap().kind, DamageKind::Footer);
    assert_eq!(rep.chunks_ok, r.chunk_count() as u64);
    // A missing footer: truncated, with the salvage hint.
    let e = TraceReader::from_bytes(&full[..foot]).err().unwrap();
    assert!(matches!(e, FormatError::Truncated { .. }));
    assert!(
        e.to_string()
            .contains("kvmtrace verify <memory> --salvage OUT"),
        "{e}"
    );
}

#[test]
fn newer_versions() {
    let (full, recs) = golden_bytes();
    // Needs a newer reader: refused, naming the file and both versions.
    let mut b = full.clone();
    b[8..10].copy_from_slice(&3u16.to_le_bytes());
    b[10..12].copy_from_slice(&0u16.to_le_bytes());
    b[12..14].copy_from_slice(&2u16.to_le_bytes());
    let e = TraceReader::from_bytes(&b).err().unwrap();
    assert!(
        matches!(
            e,
            FormatError::TooNew {
                needs: 2,
                reader: 1,
                ..
            }
        ),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("<memory>") && msg.contains("3.0") && msg.contains("version 1"),
        "{msg}"
    );
    assert!(matches!(
        verify_reader(Cursor::new(&b[..]), "x").err().unwrap(),
        FormatError::TooNew { .. }
    ));
    // A newer version that older readers may read: read (forward compatible),
    // with unknown extension bytes after the header skipped.
    let mut b = full.clone();
    b[8..10].copy_from_slice(&2u16.to_le_bytes());
    b[10..12].copy_from_slice(&7u16.to_le_bytes());
    let hlen = u32::from_le_bytes(b[16..20].try_into().unwrap()) as usize;
    let body_end = 24 + hlen;
    let ext = [0xeeu8; 5];
    b.splice(body_end..body_end, ext);
    b[16..20].copy_from_slice(&((hlen + ext.len()) as u32).to_le_bytes());
    // Fix up what the insertion moved: chunk offsets in the footer would be
    // wrong, so rebuild the footer through a salvage of the chunks...
    let covered: Vec<u8> = [&b[..16], &b[24..body_end + ext.len()]].concat();
    b[20..24].copy_from_slice(&crc32(&covered).to_le_bytes());
    let (mut r, damage) = TraceReader::scan(Cursor::new(&b[..]), "v2.kvt").unwrap();
    assert_eq!(r.version().to_string(), "2.7");
    assert_eq!(r.header(), &full_header());
    assert_eq!(r.read_all().unwrap(), recs);
    // ...the old footer's offsets no longer match: that much is damage.
    let d = damage.expect("footer damage");
    assert!(d.to_string().contains("footer"), "{d}");
}

#[test]
fn garbage_is_not_a_trace() {
    let mut rng = Rng(7);
    for len in [0usize, 1, 7, 8, 15, 16, 17, 100, 4096] {
        let b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        assert!(matches!(
            TraceReader::from_bytes(&b).err().unwrap(),
            FormatError::NotATrace { .. }
        ));
        assert!(verify_reader(Cursor::new(&b[..]), "g").is_err());
    }
    // Garbage after a valid preamble and header.
    let (full, _) = golden_bytes();
    let he = TraceReader::from_bytes(&full).unwrap().header_end() as usize;
    for seed in 0..200u64 {
        let mut rng = Rng(seed);
        let mut b = full[..he].to_vec();
        let n = rng.range(0, 300) as usize;
        b.extend((0..n).map(|_| rng.next() as u8));
        // Sometimes start with a plausible chunk magic.
        if n >= 4 && seed % 2 == 0 {
            b[he..he + 4].copy_from_slice(b"KVTC");
        }
        assert!(TraceReader::from_bytes(&b).is_err());
        let rep = verify_reader(Cursor::new(&b[..]), "g").unwrap();
        assert!(rep.damage.is_some());
        let (rep, kept) = salvage_mem(&b).unwrap();
        assert_eq!((rep.chunks_kept, kept.len()), (0, 0));
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}
