//! The clock of record stamps, read once per event on the vCPU thread.
//!
//! `Instant::now()` (CLOCK_MONOTONIC through the vDSO) costs about 35 ns on
//! this host, over half of issue 5's 60 ns per-event budget; the TSC costs
//! about 12 ns. Where the kernel itself keeps CLOCK_MONOTONIC with the TSC
//! (clocksource `tsc`, so the two advance together), a stamp is the TSC scaled
//! from an anchor: a (TSC, `Instant`) pair taken at the start of each batch and
//! whenever the last anchor is older than `MAX_SPAN_NS`. The scale is
//! calibrated once per process against `Instant`; its error (a few ppm) times
//! the span since the anchor (a batch: usually a few ms) is nanoseconds. Times
//! never go backwards within one clock. Elsewhere every stamp reads `Instant`.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use vmm_sys_util::rand::timestamp_cycles;

/// Re-anchor when the last anchor is older than this.
const MAX_SPAN_NS: u64 = 50_000_000;
/// How long the calibration measures.
const CALIBRATION: Duration = Duration::from_millis(10);

/// One (TSC, ns since `start`) pair, read as close together as this thread
/// manages (the tightest of a few tries, so a preemption between the two
/// reads does not skew it).
fn pair(start: Instant) -> (u64, u64) {
    let mut best = (u64::MAX, 0, 0);
    for _ in 0..4 {
        let a = timestamp_cycles();
        let ns = start.elapsed().as_nanos() as u64;
        let b = timestamp_cycles();
        let width = b.wrapping_sub(a);
        if width < best.0 {
            best = (width, a + width / 2, ns);
        }
    }
    (best.1, best.2)
}

/// Nanoseconds per TSC cycle, when the kernel keeps time with the TSC.
fn ns_per_cycle() -> Option<f64> {
    static SCALE: OnceLock<Option<f64>> = OnceLock::new();
    *SCALE.get_or_init(|| {
        let source = std::fs::read_to_string(
            "/sys/devices/system/clocksource/clocksource0/current_clocksource",
        )
        .ok()?;
        if source.trim() != "tsc" {
            return None;
        }
        let start = Instant::now();
        let (c0, n0) = pair(start);
        std::thread::sleep(CALIBRATION);
        let (c1, n1) = pair(start);
        let scale = n1.checked_sub(n0)? as f64 / c1.checked_sub(c0)? as f64;
        // 0.1 to 20 GHz: anything else is not a TSC to trust.
        (0.05..10.0).contains(&scale).then_some(scale)
    })
}

/// A per-thread stamp clock: nanoseconds since `start`.
#[derive(Clone, Debug)]
pub struct StampClock {
    start: Instant,
    scale: Option<f64>,
    anchor_cycles: u64,
    anchor_ns: u64,
    last_ns: u64,
}

impl StampClock {
    /// Calibrates on the first call in the process (about 10 ms).
    pub fn new(start: Instant) -> StampClock {
        StampClock {
            start,
            scale: ns_per_cycle(),
            anchor_cycles: 0,
            anchor_ns: 0,
            last_ns: 0,
        }
    }

    /// Whether stamps come from the TSC (false: every stamp reads `Instant`).
    pub fn uses_tsc(&self) -> bool {
        self.scale.is_some()
    }

    fn reanchor(&mut self) -> u64 {
        match self.scale {
            Some(_) => {
                let (c, ns) = pair(self.start);
                self.anchor_cycles = c;
                self.anchor_ns = ns;
                ns
            }
            None => self.start.elapsed().as_nanos() as u64,
        }
    }

    /// Now; `anchor` takes a fresh (TSC, `Instant`) pair first.
    #[inline]
    pub fn now_ns(&mut self, anchor: bool) -> u64 {
        let ns = match self.scale {
            Some(scale) if !anchor => {
                let d = timestamp_cycles().wrapping_sub(self.anchor_cycles);
                let dn = (d as f64 * scale) as u64;
                // A TSC behind the anchor (another CPU's) or an old anchor.
                if d > u64::MAX / 2 || dn > MAX_SPAN_NS {
                    self.reanchor()
                } else {
                    self.anchor_ns + dn
                }
            }
            _ => self.reanchor(),
        };
        let ns = ns.max(self.last_ns);
        self.last_ns = ns;
        ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scaled TSC stays within the `Instant` readings taken around it
    /// (give or take the calibration's error) and never goes back. The window
    /// check, not a distance to one reading, keeps a preemption between the
    /// reads (a loaded CI machine) from failing it: preemption only widens
    /// the window.
    #[test]
    fn tsc_stamps_follow_the_monotonic_clock() {
        let start = Instant::now();
        let mut c = StampClock::new(start);
        let mut last = 0;
        // Scale error over a MAX_SPAN_NS span: a few ppm expected; 5 ms would
        // be a 10 % scale or a wrong anchor.
        const TOLERANCE: u64 = 5_000_000;
        for i in 0..20_000u32 {
            let before = start.elapsed().as_nanos() as u64;
            let ns = c.now_ns(i % 256 == 0);
            let after = start.elapsed().as_nanos() as u64;
            assert!(ns >= last);
            last = ns;
            assert!(
                ns + TOLERANCE >= before && ns <= after + TOLERANCE,
                "stamp {ns} outside [{before}, {after}] +- {TOLERANCE} (tsc: {})",
                c.uses_tsc()
            );
        }
    }
}
