//! Realistic synthetic records for the format's tests and measurements. Kept in
//! tests, not in the library API (`kvmtrace synth` is the user-facing one).
#![allow(dead_code)]

use kvmtrace_format::*;

/// splitmix64: small, deterministic, good enough for jitter.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }

    /// Roughly normal around 0 with the given spread (sum of four uniforms).
    pub fn jitter(&mut self, spread: i64) -> i64 {
        let s: i64 = (0..4)
            .map(|_| (self.next() % (2 * spread as u64 + 1)) as i64 - spread)
            .sum();
        s / 2
    }
}

/// A guest reading MSR 0x10 (TSC) in a loop: 3-7 us per iteration with jitter
/// and rare long preemptions; the TSC runs at `tsc_khz` with a sub-microsecond
/// read skew against the recorder's clock.
pub fn msr_loop(n: u64, seed: u64) -> Vec<Record> {
    let mut rng = Rng(seed);
    let tsc_khz = 2_000_000 + rng.range(0, 1_000_000); // 2-3 GHz
    let tsc0 = rng.range(1 << 30, 1 << 40);
    let mut t = 1_000_000u64;
    let mut out = Vec::with_capacity(n as usize);
    for seq in 0..n {
        let step = if rng.range(0, 1000) == 0 {
            rng.range(20_000, 200_000) // preempted
        } else {
            (5_000 + rng.jitter(1_000)) as u64
        };
        t += step;
        let skew = rng.jitter(100);
        let tsc = tsc0 + ((t as i64 + skew) as u64) * tsc_khz / 1_000_000;
        out.push(Record {
            seq,
            vcpu: 0,
            time_ns: t,
            event: Event::MsrRead {
                index: 0x10,
                origin: Origin::Guest,
                outcome: MsrOutcome::Value(tsc),
                decided_by: DecidedBy::Vmm,
                capture: Some(MsrExitReason::Filter),
            },
        });
    }
    out
}

/// A header like a synth trace's.
pub fn header() -> TraceHeader {
    TraceHeader {
        tool_version: "0.1.0".into(),
        capture: CaptureInfo {
            mode: CaptureMode::Synth,
            detail: "msr-loop".into(),
            ..Default::default()
        },
        vm: VmConfig {
            vcpus: 1,
            memory_bytes: 2 << 20,
            ..Default::default()
        },
        payload: Payload {
            name: "msr-loop".into(),
            sha256: String::new(),
        },
        ..Default::default()
    }
}

/// The same records as `dump --json` would print them: one JSON object a line.
pub fn json_lines(recs: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in recs {
        serde_json::to_writer(&mut out, r).unwrap();
        out.push(b'\n');
    }
    out
}
