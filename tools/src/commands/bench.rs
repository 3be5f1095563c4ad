//! `kvmtrace bench [--json] [--quick]`: the performance figures, each measured
//! against its baseline in the same run (DESIGN.md). Figures that cannot be
//! measured here (no /dev/kvm, a part not built yet) are listed under `skipped`
//! with the reason, never silently left out.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use kvmtrace_format::Record;
use serde_json::{Map, Value, json};

use crate::cli::{BenchArgs, Pattern, SynthArgs};
use crate::synth;
use crate::trace_io::{TraceFile, TraceWriter};

struct Sizes {
    size_events: u64,
    replay_events: u64,
    record_iterations: u64,
    import_lines: usize,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                size_events: 100_000,
                replay_events: 200_000,
                record_iterations: 2_000,
                import_lines: 100_000,
            }
        } else {
            Sizes {
                size_events: 1_000_000,
                replay_events: 5_000_000,
                record_iterations: 20_000,
                import_lines: 1_000_000,
            }
        }
    }
}

/// A scratch directory for the bench's files, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> anyhow::Result<Scratch> {
        let p = std::env::temp_dir().join(format!("kvmtrace-bench-{}", std::process::id()));
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(Scratch(p))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Record one measurement's figures, or why it was skipped.
fn note(
    err: &mut dyn Write,
    name: &str,
    r: anyhow::Result<Value>,
    figures: &mut Map<String, Value>,
    skipped: &mut Map<String, Value>,
) {
    match r {
        Ok(Value::Object(m)) => {
            for (k, v) in m {
                let _ = writeln!(err, "  {k} = {v}");
                figures.insert(k, v);
            }
        }
        Ok(v) => {
            let _ = writeln!(err, "  {name} = {v}");
            figures.insert(name.to_string(), v);
        }
        Err(e) => {
            let why = format!("{e:#}");
            let _ = writeln!(err, "  {name}: skipped: {why}");
            skipped.insert(name.to_string(), Value::String(why));
        }
    }
}

fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64().max(1e-9)
}

pub fn run(args: &BenchArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<i32> {
    let sizes = Sizes::new(args.quick);
    let scratch = Scratch::new()?;
    let mut figures = Map::new();
    let mut skipped = Map::new();
    writeln!(
        err,
        "bench: msr-loop {} events: size, encode, decode",
        sizes.size_events
    )?;
    let r = size_and_codec(&scratch.0, sizes.size_events);
    note(err, "format", r, &mut figures, &mut skipped);

    writeln!(
        err,
        "bench: replay msr-loop {} events and a fully modelled trace, 1 and 8 policies",
        sizes.replay_events
    )?;
    let r = super::replay::bench(&scratch.0, sizes.replay_events);
    note(err, "replay", r, &mut figures, &mut skipped);

    let script_events = sizes.replay_events.min(2_000_000);
    writeln!(
        err,
        "bench: policy scripts on a fully modelled trace of {script_events} events: one hooked MSR vs the base, every MSR hooked"
    )?;
    let r = super::script_bench::bench(&scratch.0, script_events);
    note(err, "script", r, &mut figures, &mut skipped);

    writeln!(
        err,
        "bench: record msr-loop {} iterations, recorded vs discarded",
        sizes.record_iterations
    )?;
    let r = record_overhead(&scratch.0, sizes.record_iterations);
    note(err, "record", r, &mut figures, &mut skipped);

    writeln!(
        err,
        "bench: observe-mode msr-loop {} iterations, traced vs untraced",
        sizes.record_iterations
    )?;
    let r = observe_overhead(&scratch.0, sizes.record_iterations);
    note(err, "observe", r, &mut figures, &mut skipped);

    writeln!(err, "bench: import {} ftrace lines", sizes.import_lines)?;
    let r = import_speed(sizes.import_lines);
    note(err, "import_lines_per_s", r, &mut figures, &mut skipped);

    writeln!(
        err,
        "bench: offline replay of tour x16 quirk sets vs 16 live re-runs"
    )?;
    let r = super::demo::offline_vs_live(&scratch.0, args.quick);
    note(err, "offline_vs_live_ratio", r, &mut figures, &mut skipped);

    writeln!(
        err,
        "bench: a VMM under wrap mode's ioctl tap vs the same VMM untapped (QEMU + our guest if installed)"
    )?;
    let r = tap_overhead(&scratch.0, args.quick);
    note(err, "tap_overhead_ratio", r, &mut figures, &mut skipped);

    writeln!(
        err,
        "bench: wrap mode on QEMU + our guest vs untraced; its .kvt vs perf record of the same events (zstd -3)"
    )?;
    let r = super::wrap_bench::bench(&scratch.0, args.quick);
    note(err, "wrap_overhead_ratio", r, &mut figures, &mut skipped);

    let doc = json!({
        "quick": args.quick,
        "figures": figures,
        "skipped": skipped,
    });
    // Figures at the top level too, as DESIGN.md names the keys.
    let mut flat = figures.clone();
    flat.insert("quick".into(), json!(args.quick));
    flat.insert("skipped".into(), doc["skipped"].clone());
    if args.json {
        super::write_json(out, &Value::Object(flat))?;
    } else {
        for (k, v) in &figures {
            writeln!(out, "{k:<28} {v}")?;
        }
        for (k, v) in &skipped {
            writeln!(out, "{k:<28} skipped: {}", v.as_str().unwrap_or(""))?;
        }
    }
    Ok(0)
}

/// bytes/event, .kvt vs `dump --json | zstd -3`, encode and decode speed.
fn size_and_codec(dir: &Path, events: u64) -> anyhow::Result<Value> {
    let (header, records) = synth::generate_vec(Pattern::MsrLoop, events, 1)?;
    let path = dir.join("msr-loop.kvt");

    let t = Instant::now();
    let mut w = TraceWriter::create(&path, &header)?;
    for r in &records {
        w.push(r)?;
    }
    let summary = w.finish()?;
    let encode_s = secs(t);
    let kvt_bytes = std::fs::metadata(&path)?.len();

    let json_zstd = json_lines_zstd_size(&records)?;

    // Best of three (the first pass also pays for the page cache).
    let mut decode_s = f64::MAX;
    let mut n = 0u64;
    for _ in 0..3 {
        let t = Instant::now();
        let mut f = TraceFile::open(&path)?;
        n = 0;
        for r in f.records() {
            let r = r?;
            n += 1;
            std::hint::black_box(&r);
        }
        decode_s = decode_s.min(secs(t));
    }
    anyhow::ensure!(n == events, "decoded {n} events of {events}");
    let _ = summary;

    Ok(json!({
        "bytes_per_event": kvt_bytes as f64 / events as f64,
        "kvt_vs_json_zstd": kvt_bytes as f64 / json_zstd as f64,
        "kvt_bytes": kvt_bytes,
        "json_zstd_bytes": json_zstd,
        "encode_events_per_s": events as f64 / encode_s,
        "decode_events_per_s": events as f64 / decode_s,
    }))
}

/// The size of the events as `dump --json` lines through zstd level 3.
fn json_lines_zstd_size(records: &[Record]) -> anyhow::Result<u64> {
    struct Count(u64);
    impl Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len() as u64;
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut enc = zstd::stream::Encoder::new(Count(0), 3)?;
    let mut line = Vec::with_capacity(256);
    for r in records {
        line.clear();
        serde_json::to_writer(&mut line, r)?;
        line.push(b'\n');
        enc.write_all(&line)?;
    }
    Ok(enc.finish()?.0)
}

/// msr-loop recorded vs the same loop with events discarded before the channel.
/// Five recordings of msr-loop in `mode`, each next to the same run with
/// `discard_events` (alternated to spread the noise of a shared machine):
/// (median recorded run time / median baseline run time, the recorded runs).
fn record_vs_baseline(
    dir: &Path,
    mode: kvmtrace_format::CaptureMode,
    iterations: u64,
) -> anyhow::Result<(f64, Vec<kvmtrace_recorder::RecordSummary>)> {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        anyhow::bail!("cannot open /dev/kvm: {e}");
    }
    let cfg = |discard: bool, name: &str| kvmtrace_recorder::RecordConfig {
        scenario: Some("msr-loop".into()),
        payload: None,
        output: dir.join(name),
        policy: "host".into(),
        mode,
        vcpus: Some(1),
        iterations: Some(iterations),
        on_full: kvmtrace_recorder::OnFull::Wait,
        discard_events: discard,
    };
    let _ = kvmtrace_recorder::record(&cfg(true, "warm.kvt"))?;
    let mut on = Vec::new();
    let mut off = Vec::new();
    let mut runs = Vec::new();
    for i in 0..5 {
        let s = kvmtrace_recorder::record(&cfg(false, &format!("rec{i}.kvt")))?;
        on.push(s.run_ns as f64);
        runs.push(s);
        let s = kvmtrace_recorder::record(&cfg(true, &format!("off{i}.kvt")))?;
        off.push(s.run_ns as f64);
    }
    Ok((median(&mut on) / median(&mut off).max(1.0), runs))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn record_overhead(dir: &Path, iterations: u64) -> anyhow::Result<Value> {
    let (ratio, runs) =
        record_vs_baseline(dir, kvmtrace_format::CaptureMode::Intercept, iterations)?;
    let mut vcpu_ns: Vec<f64> = runs.iter().map(|s| s.vcpu_ns_per_event).collect();
    let s = runs.last().expect("five runs");
    // No recording at all: the same guest with its MSRs handled in the kernel
    // (no MSR filter, no exit to user space, nothing recorded): what a guest
    // pays for being recorded in intercept mode, against not being recorded.
    let kernel = |name: &str| kvmtrace_recorder::RecordConfig {
        scenario: Some("msr-loop".into()),
        payload: None,
        output: dir.join(name),
        policy: "host".into(),
        mode: kvmtrace_format::CaptureMode::Observe,
        vcpus: Some(1),
        iterations: Some(iterations),
        on_full: kvmtrace_recorder::OnFull::Wait,
        discard_events: true,
    };
    let mut rec: Vec<f64> = runs.iter().map(|s| s.run_ns as f64).collect();
    let mut none = Vec::new();
    let _ = kvmtrace_recorder::record(&kernel("kwarm.kvt"))?;
    for i in 0..5 {
        none.push(kvmtrace_recorder::record(&kernel(&format!("k{i}.kvt")))?.run_ns as f64);
    }
    let vs_none = median(&mut rec) / median(&mut none).max(1.0);
    Ok(json!({
        "record_overhead_ratio": ratio,
        "record_overhead_baseline": "msr-loop recorded (intercept) vs the same run with events discarded before the channel (both exit to user space per MSR)",
        "record_vs_unrecorded_ratio": vs_none,
        "record_vs_unrecorded_baseline": "msr-loop recorded (intercept) vs the same guest not recorded at all: no MSR filter, MSRs handled in the kernel",
        "vcpu_ns_per_event": median(&mut vcpu_ns),
        "recorded_bytes_per_event": s.bytes as f64 / s.events.max(1) as f64,
        "record_events": s.events,
    }))
}

/// Issue 6: observe mode (kernel tracepoints on, trace_pipe read live) against
/// the same run untraced. The ratio includes what the kernel's tracepoints
/// cost; `observe_lost` says whether the reader kept up.
fn observe_overhead(dir: &Path, iterations: u64) -> anyhow::Result<Value> {
    let (ratio, runs) = record_vs_baseline(dir, kvmtrace_format::CaptureMode::Observe, iterations)?;
    let lost: u64 = runs
        .iter()
        .filter_map(|s| s.capture.as_ref())
        .map(|c| c.overrun + c.overflow + c.lost_lines)
        .sum();
    Ok(json!({
        "observe_overhead_ratio": ratio,
        "observe_events": runs.last().map_or(0, |s| s.events),
        "observe_lost": lost,
    }))
}

fn import_speed(lines: usize) -> anyhow::Result<Value> {
    let v = crate::import::ftrace::import_lines_per_s(lines);
    anyhow::ensure!(v > 0.0, "the importer refused its own synthetic text");
    Ok(json!(v))
}

/// Generate a synthetic trace file (bench and demo).
pub fn synth_file(path: &Path, pattern: Pattern, events: u64, seed: u64) -> anyhow::Result<()> {
    super::synth::write(&SynthArgs {
        pattern,
        events,
        seed,
        output: path.to_path_buf(),
        json: false,
    })?;
    Ok(())
}

/// Issue 10: wall time of a VMM run started by `vmm_tap::spawn` with the
/// ioctl tap (seccomp filter + ptrace tracer) against the same start with the
/// tap off, runs alternated, median of each (5 pairs, 1 with `--quick`). The
/// VMM is QEMU booting our guest (`kvmtrace guest qemu`) where
/// `qemu-system-x86_64` is installed, else our own VMM
/// (`kvmtrace record --scenario msr-loop`). Target <= 1.02.
pub fn tap_overhead(dir: &Path, quick: bool) -> anyhow::Result<Value> {
    use kvmtrace_recorder::vmm_tap::{self, SpawnOptions, TapStatus};
    use std::ffi::OsString;
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        anyhow::bail!("cannot open /dev/kvm: {e}");
    }
    let qemu = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("qemu-system-x86_64"))
            .find(|p| p.is_file())
    });
    let (vmm, argv): (&str, Vec<OsString>) = match qemu {
        Some(q) => {
            let guest = dir.join("tap-guest.elf");
            std::fs::write(&guest, kvmtrace_recorder::qemu_guest::build()?)?;
            let mut a = vec![q.into_os_string()];
            a.extend(
                super::guest::qemu_args(&guest)
                    .into_iter()
                    .map(OsString::from),
            );
            ("qemu", a)
        }
        None => (
            "kvmtrace-record",
            vec![
                std::env::current_exe()?.into_os_string(),
                "record".into(),
                "--scenario".into(),
                "msr-loop".into(),
                "--iterations".into(),
                "20000".into(),
                "-o".into(),
                dir.join("tap-vmm.kvt").into_os_string(),
            ],
        ),
    };
    let mut cpu_ns = 0u64;
    let mut run = |tap: bool| -> anyhow::Result<(f64, f64, u64)> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let c0 = vmm_tap::children_cpu_ns();
        let t0 = Instant::now();
        let mut t = vmm_tap::spawn_with(&argv, tx, SpawnOptions { tap })?;
        if tap && t.tap_status() != TapStatus::Active {
            anyhow::bail!("the ioctl tap is off: {:?}", t.tap_status());
        }
        let status = t.wait()?;
        let wall = secs(t0);
        let events = rx.iter().count() as u64;
        cpu_ns += t.tap_cpu_ns().unwrap_or(0);
        // After the channel closed the tap is reaped too: VMM + tap.
        let cpu = vmm_tap::children_cpu_ns().saturating_sub(c0) as f64 / 1e9;
        if !status.success() && vmm == "kvmtrace-record" {
            anyhow::bail!("{vmm} failed: {status}");
        }
        Ok((wall, cpu, events))
    };
    let pairs = if quick { 1 } else { 5 };
    let (mut on, mut off, mut events) = (Vec::new(), Vec::new(), 0);
    let (mut cpu_on, mut cpu_off) = (Vec::new(), Vec::new());
    for _ in 0..pairs {
        let (w, c, n) = run(true)?;
        on.push(w);
        cpu_on.push(c);
        events = n;
        let (w, c, _) = run(false)?;
        off.push(w);
        cpu_off.push(c);
    }
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let min_ratio = min(&on) / min(&off).max(1e-9);
    let (on_s, off_s) = (median(&mut on), median(&mut off));
    Ok(json!({
        "tap_overhead_ratio": on_s / off_s.max(1e-9),
        // Fastest against fastest: the least disturbed by a busy machine.
        "tap_overhead_ratio_min": min_ratio,
        // CPU time of VMM + tap against the VMM alone (medians): steadier
        // than wall time where other jobs share the cores.
        "tap_cpu_ratio": median(&mut cpu_on) / median(&mut cpu_off).max(1e-9),
        // The tap process's own CPU time per run (what it costs directly).
        "tap_cpu_ms_per_run": cpu_ns as f64 / 1e6 / pairs as f64,
        "tap_on_s": on_s,
        "tap_off_s": off_s,
        "tap_vmm": vmm,
        "tap_events": events,
        "tap_runs": pairs,
    }))
}
