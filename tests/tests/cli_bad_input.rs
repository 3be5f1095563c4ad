//! Every command given bad input exits 2 with one line naming the file and what
//! was wrong; usage errors exit 2 (issue 3, "Bad input").

use kvmtrace_tests::{TempDir, kvmtrace, synth};

/// Commands that read one trace, as argument lists with `{}` for the file.
const READERS: &[&[&str]] = &[
    &["dump", "{}"],
    &["dump", "{}", "--json"],
    &["stats", "{}"],
    &["stats", "{}", "--json"],
    &["info", "{}"],
    &["verify", "{}"],
    &["replay", "{}", "--policy", "host"],
    &["replay", "{}", "--policy", "host", "--salvage-ok"],
    &["diff", "{}", "{}"],
    &["policies", "--trace", "{}"],
    &["export", "{}", "-o", "/dev/null"],
    &["fidelity", "{}"],
];

fn with_file(args: &[&str], file: &str) -> Vec<String> {
    args.iter()
        .map(|a| {
            if *a == "{}" {
                file.to_string()
            } else {
                a.to_string()
            }
        })
        .collect()
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

fn assert_bad(args: &[String], file_hint: &str) {
    let r = kvmtrace(args);
    if args[0] == "verify" && r.code == 1 {
        // verify reports a damaged (cut) file as a finding, exit 1, naming it.
        assert!(first_line(&r.stdout).contains(file_hint), "{args:?}: {r:?}");
        assert!(first_line(&r.stdout).contains("DAMAGED"), "{args:?}: {r:?}");
        return;
    }
    assert_eq!(r.code, 2, "{args:?} should exit 2: {r:?}");
    assert!(
        r.stdout.is_empty() || !r.stdout.contains("panicked"),
        "{args:?}: {r:?}"
    );
    assert!(
        !r.stderr.contains("panicked"),
        "{args:?} panicked: {}",
        r.stderr
    );
    assert!(
        first_line(&r.stderr).contains(file_hint),
        "{args:?}: first stderr line should name {file_hint}: {}",
        r.stderr
    );
}

#[test]
fn missing_file() {
    let d = TempDir::new("missing");
    let f = d.join("nope.kvt");
    for args in READERS {
        assert_bad(&with_file(args, f.to_str().unwrap()), "nope.kvt");
    }
}

#[test]
fn directory_instead_of_file() {
    let d = TempDir::new("dir");
    let f = d.join("adir.kvt");
    std::fs::create_dir(&f).unwrap();
    for args in READERS {
        assert_bad(&with_file(args, f.to_str().unwrap()), "adir.kvt");
    }
}

#[test]
fn garbage_file() {
    let d = TempDir::new("garbage");
    let f = d.join("garbage.kvt");
    let bytes: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&f, bytes).unwrap();
    for args in READERS {
        assert_bad(&with_file(args, f.to_str().unwrap()), "garbage.kvt");
    }
}

#[test]
fn empty_file() {
    let d = TempDir::new("empty");
    let f = d.join("empty.kvt");
    std::fs::write(&f, b"").unwrap();
    for args in READERS {
        assert_bad(&with_file(args, f.to_str().unwrap()), "empty.kvt");
    }
}

#[test]
fn truncated_file_cut_in_the_header() {
    let d = TempDir::new("trunc");
    let good = synth(&d, "good.kvt", "msr-loop", 2000, 1);
    let bytes = std::fs::read(&good).unwrap();
    let f = d.join("cut.kvt");
    std::fs::write(&f, &bytes[..bytes.len().min(12)]).unwrap();
    for args in READERS {
        assert_bad(&with_file(args, f.to_str().unwrap()), "cut.kvt");
    }
}

#[test]
fn truncated_file_cut_mid_chunk_reading_commands_fail_verify_says_damaged() {
    let d = TempDir::new("trunc2");
    let good = synth(&d, "good.kvt", "msr-loop", 200_000, 1);
    let bytes = std::fs::read(&good).unwrap();
    let f = d.join("cut.kvt");
    std::fs::write(&f, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let fs = f.to_str().unwrap();
    for args in [
        &["dump", "{}"][..],
        &["stats", "{}"],
        &["replay", "{}", "--policy", "host"],
    ] {
        assert_bad(&with_file(args, fs), "cut.kvt");
    }
    let r = kvmtrace(["verify", fs]);
    assert_eq!(r.code, 1, "verify of a damaged trace exits 1: {r:?}");
    assert!(r.stdout.contains("cut.kvt"), "{r:?}");
}

#[test]
fn corpus_of_a_missing_directory() {
    let d = TempDir::new("nocorpus");
    let p = d.join("no-such-corpus");
    for cmd in ["check", "bless"] {
        let r = kvmtrace(["corpus", cmd, p.to_str().unwrap()]);
        assert_eq!(r.code, 2, "{cmd}: {r:?}");
        assert!(
            first_line(&r.stderr).contains("no-such-corpus"),
            "{cmd}: {r:?}"
        );
    }
}

#[test]
fn bad_policy_file_names_file_line_and_column() {
    let d = TempDir::new("policyfile");
    let f = synth(&d, "t.kvt", "msr-loop", 100, 1);
    let p = d.join("bad.toml");
    std::fs::write(
        &p,
        "base = \"kvm-6.18\"\n[switches]\nno_such_switch = true\n",
    )
    .unwrap();
    let r = kvmtrace([
        "replay",
        f.to_str().unwrap(),
        "--policy",
        p.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("bad.toml:3"), "file:line expected: {r:?}");
}

#[test]
fn bad_flags_are_usage_errors() {
    for args in [
        &["dump"][..],
        &["stats", "--frobnicate", "x.kvt"],
        &[
            "synth",
            "--pattern",
            "nope",
            "--events",
            "10",
            "-o",
            "x.kvt",
        ],
        &[
            "synth",
            "--pattern",
            "msr-loop",
            "--events",
            "ten",
            "-o",
            "x.kvt",
        ],
        &["replay", "x.kvt"],
        &["record", "-o", "x.kvt"],
        &["no-such-command"],
    ] {
        let r = kvmtrace(args);
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
    }
}

#[test]
fn bad_dump_range() {
    let d = TempDir::new("range");
    let f = synth(&d, "t.kvt", "msr-loop", 100, 1);
    let r = kvmtrace(["dump", f.to_str().unwrap(), "50-10"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(first_line(&r.stderr).contains("50-10"), "{r:?}");
}

#[test]
fn unknown_policy_lists_the_known_ones() {
    let d = TempDir::new("policy");
    let f = synth(&d, "t.kvt", "msr-loop", 100, 1);
    let r = kvmtrace(["replay", f.to_str().unwrap(), "--policy", "kvm-9.99"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("kvm-9.99"), "{r:?}");
    for known in ["kvm-5.10", "kvm-6.18", "host"] {
        assert!(r.stderr.contains(known), "should list {known}: {r:?}");
    }
}

#[test]
fn unknown_scenario_lists_the_known_ones() {
    let d = TempDir::new("scenario");
    let out = d.join("x.kvt");
    let r = kvmtrace([
        "record",
        "--scenario",
        "no-such-scenario",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("no-such-scenario"), "{r:?}");
    assert!(
        r.stderr.contains("tour"),
        "should list the known scenarios: {r:?}"
    );
    assert!(!out.exists(), "no output file for a failed record");
}

#[test]
fn synth_to_unwritable_path_fails_cleanly() {
    let r = kvmtrace([
        "synth",
        "--pattern",
        "msr-loop",
        "--events",
        "10",
        "-o",
        "/nonexistent-dir/x.kvt",
    ]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        first_line(&r.stderr).contains("/nonexistent-dir/x.kvt"),
        "{r:?}"
    );
}

#[test]
fn releases_outside_the_range_are_clear_errors() {
    let d = TempDir::new("release");
    let f = synth(&d, "t.kvt", "msr-loop", 100, 1);
    for (name, why) in [("kvm-4.19", "older"), ("kvm-7.0", "newer")] {
        let r = kvmtrace(["replay", f.to_str().unwrap(), "--policy", name]);
        assert_eq!(r.code, 2, "{r:?}");
        let line = first_line(&r.stderr);
        assert!(line.contains(name) && line.contains(why), "{r:?}");
    }
    // Every mainline release and a stable point release resolve.
    for name in ["kvm-6.8", "kvm-6.11", "kvm-5.15.61"] {
        let r = kvmtrace(["replay", f.to_str().unwrap(), "--policy", name]);
        assert!(r.code == 0 || r.code == 1, "{name}: {r:?}");
    }
}

/// Every error is one line: no `  1: cause` chain repeating the message.
fn assert_one_line(r: &kvmtrace_tests::Run, what: &str) {
    assert_eq!(r.stderr.lines().count(), 1, "{what}: {}", r.stderr);
}

#[test]
fn errors_are_one_line_without_a_repeated_cause() {
    let d = TempDir::new("oneline");
    let f = d.join("nope.kvt");
    for args in READERS {
        let args = with_file(args, f.to_str().unwrap());
        let r = kvmtrace(&args);
        assert_one_line(&r, &format!("{args:?}"));
        assert_eq!(
            r.stderr.matches("No such file or directory").count(),
            1,
            "{args:?}: {}",
            r.stderr
        );
    }
    let r = kvmtrace(["replay", "x.kvt", "--policy", "/nonexistent/p.toml"]);
    assert_one_line(&r, "missing policy");
}

/// A FIFO without a writer, `/dev/zero` and `/dev/kvm` as a trace: refused at
/// once with what they are, never a hang or "the file is empty".
#[test]
fn fifos_and_devices_are_refused() {
    let d = TempDir::new("fifo");
    let fifo = d.join("pipe.kvt");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success());
    let mut cases = vec![("/dev/zero".to_string(), "character device")];
    if std::path::Path::new("/dev/kvm").exists() {
        cases.push(("/dev/kvm".to_string(), "character device"));
    }
    if ok {
        cases.push((fifo.display().to_string(), "FIFO"));
    } else {
        eprintln!("fifos_and_devices_are_refused: mkfifo unavailable, FIFO case not run");
    }
    for (file, kind) in &cases {
        for args in READERS {
            let args = with_file(args, file);
            let r = kvmtrace(&args);
            assert_eq!(r.code, 2, "{args:?}: {r:?}");
            assert!(
                r.stderr.contains(kind) && r.stderr.contains("not a regular file"),
                "{args:?}: {}",
                r.stderr
            );
            assert_one_line(&r, &format!("{args:?}"));
        }
    }
}

const ONE_READ: &str =
    "        kvmprobe-2990  [001]  8161.637639: kvm_msr:              msr_read 10 = 0x1edffed788\n";

/// A text whose last line has no newline was cut: an error naming the line,
/// or with --lenient a lost-event taint that `info` shows.
#[test]
fn cut_last_line_is_an_error_or_a_taint() {
    let d = TempDir::new("cutline");
    let txt = d.join("cut.txt");
    let text = format!("{ONE_READ}{}", &ONE_READ[..ONE_READ.len() - 5]);
    std::fs::write(&txt, &text).unwrap();
    let out = d.join("cut.kvt");
    let base = [
        "import",
        "ftrace",
        txt.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--kernel",
        "6.1.0",
        "--vendor",
        "intel",
    ];
    let r = kvmtrace(base);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .contains("cut.txt:2: the last line does not end in a newline"),
        "{}",
        r.stderr
    );
    assert!(!out.exists());
    let r = kvmtrace(base.iter().chain(&["--lenient"]));
    assert_eq!(r.code, 0, "{r:?}");
    let info = kvmtrace(["info", out.to_str().unwrap()]);
    assert!(
        info.stdout.contains("lost 1 events (import)"),
        "{}",
        info.stdout
    );
    let dump = kvmtrace(["dump", out.to_str().unwrap()]);
    assert!(!dump.stdout.contains("0x1edffe "), "{}", dump.stdout);
    assert!(dump.stdout.contains("0x1edffed788"), "{}", dump.stdout);
}

/// The kernel's `CPU:N [LOST EVENTS]` (count unknown) before the first event
/// is a taint, not a skipped line.
#[test]
fn lost_events_before_the_first_event_taint_the_trace() {
    let d = TempDir::new("lostfirst");
    let txt = d.join("lost.txt");
    std::fs::write(&txt, format!("CPU:1 [LOST EVENTS]\n{ONE_READ}")).unwrap();
    let out = d.join("lost.kvt");
    let r = kvmtrace([
        "import",
        "ftrace",
        txt.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--kernel",
        "6.1.0",
        "--vendor",
        "intel",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let info = kvmtrace(["info", out.to_str().unwrap()]);
    assert!(
        info.stdout.contains("taints") && info.stdout.contains("lost"),
        "{}",
        info.stdout
    );
    assert!(info.stdout.contains("tracefs"), "{}", info.stdout);
}

/// A file cut inside its header (a recorder killed early) cannot be
/// salvaged: verify says so instead of recommending a salvage that fails.
#[test]
fn header_cut_says_nothing_can_be_salvaged() {
    let d = TempDir::new("hdrcut");
    let full = synth(&d, "full.kvt", "msr-loop", 1000, 0);
    let bytes = std::fs::read(&full).unwrap();
    let cut = d.join("cut.kvt");
    std::fs::write(&cut, &bytes[..30]).unwrap();
    let r = kvmtrace(["verify", cut.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("nothing can be salvaged"), "{}", r.stdout);
    assert!(!r.stdout.contains("--salvage"), "{}", r.stdout);
    assert!(!r.stdout.contains("Truncated"), "{}", r.stdout);
    let out = d.join("out.kvt");
    let r = kvmtrace([
        "verify",
        cut.to_str().unwrap(),
        "--salvage",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("nothing can be salvaged"), "{}", r.stderr);
    assert!(!r.stderr.contains("--salvage OUT"), "{}", r.stderr);
    // An empty file (a recorder killed before its header).
    let empty = d.join("empty.kvt");
    std::fs::write(&empty, b"").unwrap();
    let r = kvmtrace(["verify", empty.to_str().unwrap()]);
    assert!(r.stderr.contains("nothing can be salvaged"), "{}", r.stderr);
    // Cut inside the first chunk: a salvage keeps the header only, and says so.
    let cut = d.join("cut2.kvt");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let r = kvmtrace([
        "verify",
        cut.to_str().unwrap(),
        "--salvage",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("salvaged no events"), "{}", r.stderr);
}

/// `verify k.kvt` when only `k.kvt.incomplete` exists names the latter.
#[test]
fn missing_trace_with_an_incomplete_file_says_so() {
    let d = TempDir::new("incomplete");
    let full = synth(&d, "k.kvt", "msr-loop", 100, 0);
    let inc = d.join("k.kvt.incomplete");
    std::fs::rename(&full, &inc).unwrap();
    for cmd in [
        &["verify"][..],
        &["dump"],
        &["info"],
        &["replay", "--policy", "host"],
    ] {
        let mut args: Vec<String> = vec![cmd[0].into(), full.display().to_string()];
        args.extend(cmd[1..].iter().map(|s| s.to_string()));
        let r = kvmtrace(&args);
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(
            r.stderr.contains("k.kvt.incomplete does"),
            "{args:?}: {}",
            r.stderr
        );
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    }
}

/// A second writer to a path whose `.incomplete` exists exits 2 naming the
/// conflict and leaves the other's file alone.
#[test]
fn second_writer_to_one_path_exits_2_naming_the_conflict() {
    let d = TempDir::new("busy");
    let out = d.join("t.kvt");
    let inc = d.join("t.kvt.incomplete");
    std::fs::write(&inc, b"in progress").unwrap();
    let r = kvmtrace([
        "synth",
        "--pattern",
        "msr-loop",
        "--events",
        "100",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("t.kvt.incomplete already exists"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert_eq!(std::fs::read(&inc).unwrap(), b"in progress");
    assert!(!out.exists());
}

/// `dump FILE -3` as `--help` shows; ranges and vCPUs the trace cannot hold
/// exit 2 saying so; `--threads 0` and `--iterations` without a loop are
/// refused.
#[test]
fn dump_ranges_and_flags_say_what_is_wrong() {
    let d = TempDir::new("ranges");
    let f = synth(&d, "s.kvt", "msr-loop", 100, 0);
    let f = f.to_str().unwrap();
    let r = kvmtrace(["dump", f, "-3"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout.lines().count(), 4, "{}", r.stdout);
    let r = kvmtrace(["dump", f, "5000-6000"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("outside") && r.stderr.contains("seq 0-99"),
        "{}",
        r.stderr
    );
    let r = kvmtrace(["dump", f, "--vcpu", "7"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("vCPU 7 is not in"), "{}", r.stderr);
    let r = kvmtrace(["replay", f, "--policy", "host", "--threads", "0"]);
    assert_eq!(r.code, 2, "{r:?}");
    let r = kvmtrace([
        "record",
        "--scenario",
        "tour",
        "--iterations",
        "5",
        "-o",
        "/tmp/x.kvt",
    ]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .contains("--iterations 5: scenario tour has no loop"),
        "{}",
        r.stderr
    );
}
