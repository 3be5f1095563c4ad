//! The measurement behind the capture's choice of text `trace_pipe` over the
//! binary per-CPU `trace_pipe_raw` (issue 9 item 2; docs/host-notes.md). Not
//! a test: run it by hand, as root, with /dev/kvm:
//!
//! `cargo test --release -p kvmtrace --test capture_text_vs_raw -- --ignored --nocapture`
//!
//! Twice the same guest (our VMM, `msr-loop` in observe mode, N `RDMSR`s the
//! kernel decides) fills a private instance's buffer (large enough to hold
//! the run: nothing is read while it runs); then the buffer is drained once as
//! text (`trace_pipe`, parsed and decoded by `kvmtrace_capture`'s one decoder)
//! and once as binary (`per_cpu/cpuN/trace_pipe_raw`, ring-buffer pages walked
//! and `kvm_msr` decoded at the offsets of `events/kvm/kvm_msr/format`).
//! Reported: events per second of the reading thread's CPU time
//! (`/proc/thread-self/stat`, user + system: the kernel's text formatting is
//! system time) for each, and their ratio.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use kvmtrace_capture::{KvmEvent, LineKind, parse_event, parse_line};

const BIN: &str = env!("CARGO_BIN_EXE_kvmtrace");
const ITER: &str = "1000000";
/// `O_NONBLOCK` on Linux x86-64.
const O_NONBLOCK: i32 = 0o4000;

fn write(p: &Path, v: &str) {
    let mut f = OpenOptions::new().write(true).open(p).unwrap();
    f.write_all(v.as_bytes()).unwrap();
}

/// This thread's CPU time (user + system) in clock ticks.
fn cpu_ticks() -> u64 {
    let s = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are 12 and 13 after `state`.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn tid() -> u32 {
    kvmtrace_capture::current_tid().unwrap()
}

/// A fresh instance with `kvm_msr` on, following this thread's children;
/// runs the guest, returns the instance directory.
fn fill(name: &str) -> PathBuf {
    let root = PathBuf::from("/sys/kernel/tracing");
    if !root.join("instances").is_dir() {
        let _ = Command::new("mount")
            .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
            .status();
    }
    let dir = root.join("instances").join(name);
    let _ = std::fs::remove_dir(&dir);
    std::fs::create_dir(&dir).unwrap();
    write(&dir.join("tracing_on"), "0");
    write(&dir.join("trace_clock"), "mono");
    write(&dir.join("buffer_size_kb"), "65536");
    write(&dir.join("set_event_pid"), &tid().to_string());
    write(&dir.join("options/event-fork"), "1");
    write(&dir.join("events/kvm/kvm_msr/enable"), "1");
    write(&dir.join("tracing_on"), "1");
    let st = Command::new(BIN)
        .args([
            "record",
            "--scenario",
            "msr-loop",
            "--mode",
            "observe",
            "--iterations",
            ITER,
            "-o",
        ])
        .arg(std::env::temp_dir().join(format!("{name}.kvt")))
        .output()
        .unwrap();
    assert!(st.status.success(), "{st:?}");
    write(&dir.join("tracing_on"), "0");
    dir
}

fn drop_instance(dir: &Path) {
    let _ = std::fs::remove_dir(dir);
}

/// Reads `trace_pipe` to its end, decoding every line; (kvm_msr events, ticks).
fn read_text(dir: &Path) -> (u64, u64) {
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(O_NONBLOCK)
        .open(dir.join("trace_pipe"))
        .unwrap();
    let t0 = cpu_ticks();
    let mut buf = vec![0u8; 1 << 16];
    let mut line = Vec::with_capacity(512);
    let mut n = 0u64;
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => {
                for &b in &buf[..k] {
                    if b == b'\n' {
                        if let Ok(LineKind::Event(e)) = parse_line(&line)
                            && let Some(Ok(KvmEvent::Msr { .. })) = parse_event(e.event, e.fields)
                        {
                            n += 1;
                        }
                        line.clear();
                    } else {
                        line.push(b);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    (n, cpu_ticks() - t0)
}

/// `field:TYPE NAME; offset:O; size:S;` of a format file: (name, offset, size).
fn fields(format: &str) -> Vec<(String, usize, usize)> {
    format
        .lines()
        .filter_map(|l| {
            let l = l.trim().strip_prefix("field:")?;
            let mut parts = l.split(';');
            let decl = parts.next()?.trim();
            let name = decl.rsplit(' ').next()?.to_string();
            let off = parts.next()?.trim().strip_prefix("offset:")?.parse().ok()?;
            let size = parts.next()?.trim().strip_prefix("size:")?.parse().ok()?;
            Some((name, off, size))
        })
        .collect()
}

fn le(b: &[u8]) -> u64 {
    let mut v = 0u64;
    for (i, x) in b.iter().enumerate().take(8) {
        v |= u64::from(*x) << (8 * i);
    }
    v
}

/// Reads every CPU's `trace_pipe_raw` to its end, walking ring-buffer pages
/// and decoding `kvm_msr` at the format file's offsets; (events, ticks).
fn read_raw(dir: &Path) -> (u64, u64) {
    let fmt = std::fs::read_to_string(dir.join("events/kvm/kvm_msr/format")).unwrap();
    let id: u64 = fmt
        .lines()
        .find_map(|l| l.strip_prefix("ID: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let f = fields(&fmt);
    let get = |n: &str| f.iter().find(|x| x.0 == n).map(|x| (x.1, x.2)).unwrap();
    let (ecx, data, exc) = (get("ecx"), get("data"), get("exception"));
    let page = 4096usize;
    let t0 = cpu_ticks();
    let mut n = 0u64;
    let mut sink = 0u64;
    let cpus = std::fs::read_dir(dir.join("per_cpu")).unwrap();
    for c in cpus.flatten() {
        let mut file = OpenOptions::new()
            .read(true)
            .custom_flags(O_NONBLOCK)
            .open(c.path().join("trace_pipe_raw"))
            .unwrap();
        let mut buf = vec![0u8; page];
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(k) if k < 16 => break,
                Ok(_) => {
                    // Page header: timestamp u64, commit (bytes of data) u64.
                    let commit = (le(&buf[8..16]) & 0xf_ffff) as usize;
                    let data_end = (16 + commit).min(page);
                    let mut p = 16;
                    while p + 4 <= data_end {
                        let hdr = le(&buf[p..p + 4]) as u32;
                        let type_len = hdr & 0x1f;
                        let (body, len) = match type_len {
                            0 => {
                                let l = le(&buf[p + 4..p + 8]) as usize;
                                (p + 8, l.saturating_sub(4))
                            }
                            1..=28 => (p + 4, type_len as usize * 4),
                            29 => {
                                let l = le(&buf[p + 4..p + 8]) as usize;
                                (p + 8, l.saturating_sub(4))
                            }
                            _ => (p + 8, 0), // time extend / absolute stamp
                        };
                        if type_len <= 28 && body + len <= data_end && len >= 2 {
                            let ev = &buf[body..body + len];
                            if le(&ev[..2]) == id && ev.len() >= exc.0 + exc.1 {
                                n += 1;
                                sink ^= le(&ev[ecx.0..ecx.0 + ecx.1])
                                    ^ le(&ev[data.0..data.0 + data.1])
                                    ^ le(&ev[exc.0..exc.0 + exc.1]);
                            }
                        }
                        p = if type_len >= 30 { p + 8 } else { body + len };
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
    }
    std::hint::black_box(sink);
    (n, cpu_ticks() - t0)
}

#[test]
#[ignore = "a measurement, not a test: run by hand as root with /dev/kvm"]
fn text_vs_raw() {
    let hz = 100.0; // USER_HZ
    let d = fill("kvmtrace-measure-text");
    let (nt, tt) = read_text(&d);
    drop_instance(&d);
    let d = fill("kvmtrace-measure-raw");
    let (nr, tr) = read_raw(&d);
    drop_instance(&d);
    let per_s = |n: u64, t: u64| n as f64 / (t.max(1) as f64 / hz);
    println!(
        "text trace_pipe: {nt} kvm_msr events in {:.2} s CPU = {:.0} events/s",
        tt as f64 / hz,
        per_s(nt, tt)
    );
    println!(
        "raw trace_pipe_raw: {nr} kvm_msr events in {:.2} s CPU = {:.0} events/s",
        tr as f64 / hz,
        per_s(nr, tr)
    );
    println!(
        "raw/text events-per-CPU-second ratio = {:.1}",
        per_s(nr, tr) / per_s(nt, tt)
    );
}
