//! The golden trace of every released format version. The newest
//! (`tests/golden/v1.4.kvt`) is written by this test with `KVMTRACE_BLESS=1` and
//! otherwise compared byte for byte: its bytes change only with a format version
//! bump (then add the next file and keep reading the older ones, `v1.kvt` = 1.0
//! included: readers read every older version).

mod format_common;

use std::path::PathBuf;

use format_common::*;
use kvmtrace_format::*;

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("golden")
        .join(name)
}

fn bless() -> bool {
    std::env::var_os("KVMTRACE_BLESS").is_some_and(|v| v == "1")
}

/// Format 1.0's golden file still reads as it did (this writer now writes 1.4).
#[test]
fn golden_v1() {
    let (recs, breaks) = golden_records_v1_0();
    let h = full_header();
    let dump = render_legacy(&h, &recs);
    let (kvt_path, dump_path) = (golden("v1.kvt"), golden("v1.dump"));
    let mut r = TraceReader::open(&kvt_path).unwrap();
    assert_eq!((r.version().major, r.version().minor), (1, 0));
    let back = r.read_all().unwrap();
    assert_eq!(r.header().config_source, ConfigSource::Recorder);
    let got = render_legacy(r.header(), &back);
    let want = std::fs::read_to_string(&dump_path).unwrap();
    assert_eq!(got, want, "{} renders differently", kvt_path.display());
    assert_eq!(got, dump, "v1.kvt no longer holds the 1.0 golden records");
    assert_eq!(r.chunk_count(), breaks.len() + 1);
    assert!(verify(&kvt_path).unwrap().is_ok());
}

/// Format 1.1's golden file still reads as it did.
#[test]
fn golden_v1_1() {
    let (recs, breaks) = golden_records_v1_2();
    let dump = render_legacy(&full_header(), &recs);
    let (kvt_path, dump_path) = (golden("v1.1.kvt"), golden("v1.1.dump"));
    let mut r = TraceReader::open(&kvt_path).unwrap();
    assert_eq!((r.version().major, r.version().minor), (1, 1));
    let back = r.read_all().unwrap();
    assert_eq!(r.header().config_source, ConfigSource::Recorder);
    let got = render_legacy(r.header(), &back);
    let want = std::fs::read_to_string(&dump_path).unwrap();
    assert_eq!(got, want, "{} renders differently", kvt_path.display());
    assert_eq!(got, dump, "v1.1.kvt no longer holds the 1.1 golden records");
    assert_eq!(r.chunk_count(), breaks.len() + 1);
    assert!(verify(&kvt_path).unwrap().is_ok());
}

/// Format 1.2's golden file still reads as it did.
#[test]
fn golden_v1_2() {
    let (recs, breaks) = golden_records_v1_2();
    let dump = render(&full_header(), &recs);
    let (kvt_path, dump_path) = (golden("v1.2.kvt"), golden("v1.2.dump"));
    let mut r = TraceReader::open(&kvt_path).unwrap();
    assert_eq!((r.version().major, r.version().minor), (1, 2));
    let back = r.read_all().unwrap();
    let got = render(r.header(), &back);
    let want = std::fs::read_to_string(&dump_path).unwrap();
    assert_eq!(got, want, "{} renders differently", kvt_path.display());
    assert_eq!(got, dump, "v1.2.kvt no longer holds the 1.2 golden records");
    assert_eq!(r.chunk_count(), breaks.len() + 1);
    assert!(verify(&kvt_path).unwrap().is_ok());
}

/// Format 1.3's golden file still reads as it did.
#[test]
fn golden_v1_3() {
    let (recs, breaks) = golden_records_v1_3();
    let dump = render(&full_header(), &recs);
    let (kvt_path, dump_path) = (golden("v1.3.kvt"), golden("v1.3.dump"));
    let mut r = TraceReader::open(&kvt_path).unwrap();
    assert_eq!((r.version().major, r.version().minor), (1, 3));
    let back = r.read_all().unwrap();
    let got = render(r.header(), &back);
    let want = std::fs::read_to_string(&dump_path).unwrap();
    assert_eq!(got, want, "{} renders differently", kvt_path.display());
    assert_eq!(got, dump, "v1.3.kvt no longer holds the 1.3 golden records");
    assert_eq!(r.chunk_count(), breaks.len() + 1);
    assert!(verify(&kvt_path).unwrap().is_ok());
}

/// The current version's golden file: written with `KVMTRACE_BLESS=1`,
/// otherwise compared byte for byte.
#[test]
fn golden_v1_4() {
    let (recs, breaks) = golden_records();
    let h = full_header();
    let bytes = write_with_breaks(&h, &recs, &breaks);
    let dump = render(&h, &recs);
    let (kvt_path, dump_path) = (golden("v1.4.kvt"), golden("v1.4.dump"));
    if bless() {
        std::fs::create_dir_all(kvt_path.parent().unwrap()).unwrap();
        std::fs::write(&kvt_path, &bytes).unwrap();
        std::fs::write(&dump_path, &dump).unwrap();
        eprintln!("blessed {} and {}", kvt_path.display(), dump_path.display());
    }
    // The checked-in file reads back as the expected rendering...
    let mut r = TraceReader::open(&kvt_path).unwrap();
    assert_eq!((r.version().major, r.version().minor), (1, 4));
    let back = r.read_all().unwrap();
    let got = render(r.header(), &back);
    let want = std::fs::read_to_string(&dump_path).unwrap();
    assert_eq!(got, want, "{} renders differently", kvt_path.display());
    assert_eq!(r.chunk_count(), breaks.len() + 1);
    assert!(verify(&kvt_path).unwrap().is_ok());
    // ...and this writer still produces exactly its bytes.
    let on_disk = std::fs::read(&kvt_path).unwrap();
    assert!(
        on_disk == bytes,
        "the writer's bytes differ from {}: a format change needs a version bump \
         (FORMAT.md); rerun with KVMTRACE_BLESS=1 only together with one",
        kvt_path.display()
    );
}

/// Every golden file of every version reads and verifies.
#[test]
fn every_golden_version_reads() {
    let dir = golden("");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "kvt") {
            let mut r = TraceReader::open(&p).unwrap();
            let recs = r.read_all().unwrap();
            assert_eq!(recs.len() as u64, r.summary().events);
            let dump = p.with_extension("dump");
            let v = r.version();
            let got = if (v.major, v.minor) < (1, 2) {
                render_legacy(r.header(), &recs)
            } else {
                render(r.header(), &recs)
            };
            assert_eq!(got, std::fs::read_to_string(&dump).unwrap());
            n += 1;
        }
    }
    assert!(n >= 1, "no golden traces in {}", dir.display());
}
