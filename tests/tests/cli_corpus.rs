//! corpus bless/check round trip; an empty corpus fails; an unblessed trace errors.

use kvmtrace_tests::{TempDir, kvmtrace, synth};

#[test]
fn bless_then_check_passes_and_writes_junit() {
    let d = TempDir::new("corpus");
    let dir = d.join("corpus");
    std::fs::create_dir(&dir).unwrap();
    let c = TempDir::new("corpus-src");
    for (i, p) in ["mixed", "msr-loop"].iter().enumerate() {
        let f = synth(&c, &format!("{p}.kvt"), p, 1000, i as u64);
        std::fs::copy(&f, dir.join(format!("{p}.kvt"))).unwrap();
    }
    let ds = dir.to_str().unwrap();
    let r = kvmtrace(["corpus", "bless", ds, "--policy", "kvm-5.10"]);
    assert_eq!(r.code, 0, "{r:?}");
    let junit = d.join("junit.xml");
    let r = kvmtrace([
        "corpus",
        "check",
        ds,
        "--policy",
        "kvm-5.10",
        "--junit",
        junit.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("testcase"), "{xml}");
    // Partitions cover the corpus between them.
    let r1 = kvmtrace([
        "corpus",
        "check",
        ds,
        "--policy",
        "kvm-5.10",
        "--partition",
        "hash:1/2",
        "--json",
    ]);
    let r2 = kvmtrace([
        "corpus",
        "check",
        ds,
        "--policy",
        "kvm-5.10",
        "--partition",
        "hash:2/2",
        "--json",
    ]);
    assert!(r1.code == 0 || r2.code == 0, "{r1:?} {r2:?}");
}

#[test]
fn empty_corpus_fails() {
    let d = TempDir::new("empty-corpus");
    let r = kvmtrace(["corpus", "check", d.path().to_str().unwrap()]);
    assert_ne!(r.code, 0, "an empty corpus must not pass: {r:?}");
}

#[test]
fn trace_without_blessed_result_errors() {
    let d = TempDir::new("unblessed");
    let dir = d.join("c");
    std::fs::create_dir(&dir).unwrap();
    let f = synth(&d, "t.kvt", "mixed", 500, 1);
    std::fs::copy(&f, dir.join("t.kvt")).unwrap();
    let r = kvmtrace(["corpus", "check", dir.to_str().unwrap()]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("t.kvt") || r.stdout.contains("t.kvt"),
        "{r:?}"
    );
}
