//! Round trips of arbitrary records through the writer and the reader, by every
//! way in: sequential, by chunk, parallel, scan, and pre-encoded chunks.

mod format_common;

use format_common::*;
use kvmtrace_format::*;
use proptest::prelude::*;

fn read_every_way(buf: &[u8], recs: &[Record]) {
    let mut r = TraceReader::from_bytes(buf).unwrap();
    assert_eq!(r.summary().events, recs.len() as u64);
    let seq: Vec<Record> = r.records().collect::<Result<_, _>>().unwrap();
    assert_eq!(seq, recs);
    assert_eq!(r.read_all_parallel(3).unwrap(), recs);
    let mut by_chunk = Vec::new();
    for i in 0..r.chunk_count() {
        by_chunk.extend(r.read_chunk(i).unwrap());
    }
    assert_eq!(by_chunk, recs);
    let (mut s, damage) = TraceReader::scan(std::io::Cursor::new(buf), "mem").unwrap();
    assert!(damage.is_none(), "{damage:?}");
    assert_eq!(s.read_all().unwrap(), recs);
    let rep = verify_reader(std::io::Cursor::new(buf), "mem").unwrap();
    assert!(rep.is_ok(), "{rep:?}");
    assert_eq!(rep.events_ok, recs.len() as u64);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn writer_reader_round_trip(recs in records(120), every in 0usize..40) {
        let breaks: Vec<usize> = if every == 0 { vec![] } else { (0..recs.len()).filter(|i| i % every == every - 1).collect() };
        let buf = write_with_breaks(&full_header(), &recs, &breaks);
        let r = TraceReader::from_bytes(&buf).unwrap();
        prop_assert_eq!(r.header(), &full_header());
        let by_kind: u64 = r.summary().by_kind.values().sum();
        prop_assert_eq!(by_kind, recs.len() as u64);
        read_every_way(&buf, &recs);
    }

    #[test]
    fn encoded_chunks_append(recs in records(60), split in 0usize..60) {
        let split = split.min(recs.len());
        let mut buf = Vec::new();
        let mut w = TraceWriter::new(&mut buf, &TraceHeader::default()).unwrap();
        for part in [&recs[..split], &recs[split..]] {
            if let Some(c) = encode_chunk(part).unwrap() {
                w.append_chunk(&c).unwrap();
            }
        }
        w.finish().unwrap();
        read_every_way(&buf, &recs);
    }
}

#[test]
fn writer_and_encoder_mix_in_order() {
    let (recs, _) = golden_records();
    let mut buf = Vec::new();
    let mut w = TraceWriter::new(&mut buf, &full_header()).unwrap();
    for r in &recs[..10] {
        w.push(r).unwrap();
    }
    // A pre-encoded chunk closes the writer's open chunk first.
    w.append_chunk(&encode_chunk(&recs[10..20]).unwrap().unwrap())
        .unwrap();
    for r in &recs[20..] {
        w.push(r).unwrap();
    }
    let s = w.finish().unwrap();
    assert_eq!(s.events, recs.len() as u64);
    assert_eq!(s.chunks, 3);
    assert_eq!(s.vcpus, 3); // 1.1 golden records reach vCPU 2
    read_every_way(&buf, &recs);
}

#[test]
fn large_trace_splits_into_64k_chunks() {
    let recs: Vec<Record> = (0..200_000u64)
        .map(|i| Record {
            seq: i,
            vcpu: (i % 2) as u32,
            time_ns: i * 5000,
            event: Event::MsrWrite {
                index: 0x6e0,
                value: i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                origin: Origin::Guest,
                outcome: MsrOutcome::Ok,
                decided_by: DecidedBy::Vmm,
                capture: None,
            },
        })
        .collect();
    let buf = write_with_breaks(&TraceHeader::default(), &recs, &[]);
    let r = TraceReader::from_bytes(&buf).unwrap();
    assert!(r.chunk_count() > 10, "{}", r.chunk_count());
    for i in 0..r.chunk_count() {
        let c = r.chunk_info(i).unwrap();
        assert!(c.uncompressed_len < 70 << 10, "{c:?}");
    }
    read_every_way(&buf, &recs);
}

#[test]
fn oversized_event_is_refused_and_writer_continues() {
    let mut buf = Vec::new();
    let mut w = TraceWriter::new(&mut buf, &TraceHeader::default()).unwrap();
    let big = Record {
        seq: 0,
        vcpu: 0,
        time_ns: 0,
        event: Event::RawExit {
            exit_reason: 1,
            data: vec![0; 2 << 20],
        },
    };
    let e = w.push(&big).unwrap_err();
    assert!(matches!(e, FormatError::Encode { .. }), "{e}");
    let ok = Record {
        event: Event::Halt,
        ..big.clone()
    };
    w.push(&ok).unwrap();
    w.finish().unwrap();
    read_every_way(&buf, &[ok]);
}
