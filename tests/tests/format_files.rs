//! Trace files: crash safety of `create` (rr's `NAME.incomplete` + rename),
//! write errors naming the file, `open`/`verify`/`salvage` on paths.

mod format_common;

use std::path::PathBuf;

use format_common::*;
use kvmtrace_format::*;

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kvmtrace-format-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn create_renames_only_on_finish() {
    let d = tmpdir("create");
    let path = d.join("t.kvt");
    let (recs, _) = golden_records();
    let mut w = create(&path, &full_header()).unwrap();
    for r in &recs {
        w.push(r).unwrap();
    }
    w.flush_chunk().unwrap();
    assert!(!path.exists());
    assert!(incomplete_path(&path).exists());
    let s = w.finish().unwrap();
    assert_eq!(s.path.as_deref(), Some(path.as_path()));
    assert!(path.exists() && !incomplete_path(&path).exists());
    assert_eq!(s.bytes, std::fs::metadata(&path).unwrap().len());
    let mut r = TraceReader::open(&path).unwrap();
    assert_eq!(r.read_all().unwrap(), recs);
    assert!(verify(&path).unwrap().is_ok());

    // Dropped without finish: only NAME.incomplete, and it salvages.
    let path2 = d.join("crashed.kvt");
    let mut w = create(&path2, &full_header()).unwrap();
    for r in &recs[..20] {
        w.push(r).unwrap();
    }
    w.flush_chunk().unwrap();
    for r in &recs[20..] {
        w.push(r).unwrap();
    }
    drop(w);
    assert!(!path2.exists());
    let inc = incomplete_path(&path2);
    let e = TraceReader::open(&inc).err().unwrap();
    assert!(matches!(e, FormatError::Truncated { .. }), "{e}");
    let rep = verify(&inc).unwrap();
    assert_eq!(rep.damage.as_ref().unwrap().kind, DamageKind::Truncated);
    assert_eq!(rep.events_ok, 20);
    let out = d.join("salvaged.kvt");
    let s = salvage(&inc, &out).unwrap();
    assert_eq!(
        (s.chunks_kept, s.events_kept, s.last_seq),
        (1, 20, Some(19))
    );
    assert_eq!(s.path.as_deref(), Some(out.as_path()));
    let mut r = TraceReader::open(&out).unwrap();
    assert_eq!(r.read_all().unwrap(), recs[..20]);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn write_errors_name_the_file() {
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        eprintln!("skipping: no /dev/full");
        return;
    };
    let (recs, _) = golden_records();
    let mut w = match TraceWriter::with_name(full, &full_header(), "/dev/full") {
        // The header alone may already fail (unbuffered File).
        Err(e) => {
            assert!(e.to_string().contains("/dev/full"), "{e}");
            return;
        }
        Ok(w) => w,
    };
    let mut err = None;
    for r in &recs {
        if let Err(e) = w.push(r) {
            err = Some(e);
            break;
        }
    }
    let e = err.unwrap_or_else(|| w.finish().unwrap_err());
    let msg = e.to_string();
    assert!(
        msg.contains("/dev/full") && msg.contains("cannot write"),
        "{msg}"
    );
}

#[test]
fn create_in_a_missing_directory_fails_cleanly() {
    let e = create("/nonexistent-kvmtrace-dir/t.kvt", &full_header())
        .err()
        .unwrap();
    assert!(
        e.to_string()
            .contains("/nonexistent-kvmtrace-dir/t.kvt.incomplete"),
        "{e}"
    );
}

#[test]
fn opening_non_traces() {
    let d = tmpdir("open");
    let e = TraceReader::open(d.join("missing.kvt")).err().unwrap();
    assert!(
        matches!(e, FormatError::Read { .. }) && e.to_string().contains("missing.kvt"),
        "{e}"
    );
    let e = TraceReader::open(&d).err().unwrap();
    assert!(e.to_string().contains("directory"), "{e}");
    assert!(verify(&d).is_err());
    let txt = d.join("notes.txt");
    std::fs::write(&txt, "hello world, not a trace\n").unwrap();
    let e = TraceReader::open(&txt).err().unwrap();
    assert!(matches!(e, FormatError::NotATrace { .. }), "{e}");
    assert!(e.to_string().contains("notes.txt"), "{e}");
    // A salvage of a non-trace writes nothing under the output name.
    let out = d.join("out.kvt");
    assert!(salvage(&txt, &out).is_err());
    assert!(!out.exists());
    std::fs::remove_dir_all(&d).unwrap();
}

/// Two writers to one path (issue 14, item 4): the second cannot create the
/// shared `.incomplete` (it names the conflict), the first finishes whole,
/// and a writer never renames a `.incomplete` another process replaced.
#[test]
fn two_writers_to_one_path_never_share_a_file() {
    let d = tmpdir("two-writers");
    let path = d.join("t.kvt");
    let (recs, _) = golden_records();
    let mut first = create(&path, &full_header()).unwrap();
    for r in &recs[..10] {
        first.push(r).unwrap();
    }
    first.flush_chunk().unwrap();
    let e = create(&path, &full_header())
        .err()
        .expect("second writer refused");
    let msg = e.to_string();
    assert!(matches!(e, FormatError::Busy { .. }), "{msg}");
    assert!(msg.contains("t.kvt.incomplete already exists"), "{msg}");
    for r in &recs[10..] {
        first.push(r).unwrap();
    }
    let s = first.finish().unwrap();
    assert_eq!(s.events, recs.len() as u64);
    let mut r = TraceReader::open(&path).unwrap();
    assert_eq!(r.read_all().unwrap(), recs);
    // The name is free again.
    create(&path, &full_header()).unwrap().finish().unwrap();

    // A `.incomplete` removed and recreated by someone else is not renamed.
    let mut w = create(&path, &full_header()).unwrap();
    w.push(&recs[0]).unwrap();
    let inc = incomplete_path(&path);
    std::fs::remove_file(&inc).unwrap();
    std::fs::write(&inc, b"another recorder's bytes").unwrap();
    let e = w.finish().unwrap_err().to_string();
    assert!(e.contains("no longer the file this recording wrote"), "{e}");
    assert_eq!(std::fs::read(&inc).unwrap(), b"another recorder's bytes");
}
