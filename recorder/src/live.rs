//! Observe mode while the guest runs: each vCPU thread is named to the capture
//! as soon as it has started, and the recorder's main thread periodically
//! drains the tracefs capture and the vCPUs' held records into the incremental
//! merge (`merge::StreamMerge`), sending what it has placed to the writer. So a
//! long run keeps a bounded amount in memory, and nothing the ring buffer
//! delivered is lost (what it did not deliver is counted: `Lost { Tracefs }`).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use kvmtrace_format::{Event, LostSource, Record};
use kvmtrace_replayer::Engine;

use crate::merge::StreamMerge;
use crate::observe::{CaptureStats, TracefsCapture};
use crate::writer::{CHANNEL_BATCHES, HeldBatch, HoldLink, HoldMark, Shared, Writer};

/// How long a vCPU thread waits for the kernel's events of its runs so far
/// before the live engine decides a user-space exit anyway (counted in
/// `CaptureStats::late_catch_ups`).
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_millis(200);
const CATCH_UP_POLL: Duration = Duration::from_micros(500);

/// The capture and the merge, shared by the pump (main thread) and the vCPU
/// threads: whoever drains the capture folds what it drained into the live
/// engine at once, in trace order, and pushes it into the merge. Drained
/// events leave the capture, so each kernel event is folded exactly once.
/// Lock order: this, then the engine (never the other way round).
struct FeedInner {
    cap: TracefsCapture,
    merge: StreamMerge,
    /// Per vCPU: its Linux thread id, once named to the capture.
    named: Vec<Option<u32>>,
    /// The trace clock at the trace's start, once the capture's clock marker
    /// has been read back.
    base: Option<u64>,
    /// Per vCPU: `kvm_userspace_exit` lines still missing when its last
    /// catch-up gave up (e.g. swallowed by a ring-buffer overrun). Later
    /// catch-ups of that vCPU expect that many fewer, so one lost line does
    /// not cost every later exit a full `CATCH_UP_TIMEOUT`; back to 0 once
    /// the count is complete again.
    lag: Vec<u64>,
}

impl FeedInner {
    /// Whether every kernel event of `vcpu`'s first `runs` runs has been drained.
    fn caught_up(&mut self, vcpu: u32, tid: u32, runs: u64) -> bool {
        let seen = self.cap.runs_seen(tid);
        match self.lag.get_mut(vcpu as usize) {
            Some(lag) => enough(seen, runs, lag),
            None => seen >= runs,
        }
    }

    fn name(&mut self, vcpu: u32, tid: u32) {
        if let Some(slot) = self.named.get_mut(vcpu as usize)
            && slot.is_none()
            && tid != 0
        {
            self.cap.set_vcpu(tid, vcpu);
            *slot = Some(tid);
        }
    }

    /// Drain the capture into the engine and the merge (nothing before the
    /// trace-clock base is known: the records' times need it).
    fn drain(&mut self, start: Instant, engine: &Mutex<Engine>) {
        if self.base.is_none() {
            self.base = self.cap.mono_ns_at(start);
        }
        let Some(base) = self.base else { return };
        let observed = self.cap.drain();
        if observed.is_empty() {
            return;
        }
        let mut eng = engine.lock().unwrap_or_else(|p| p.into_inner());
        for o in observed {
            let run = o.run_index;
            let rec = o.into_record(0, base);
            eng.apply(&rec);
            self.merge.push_kernel_record(run, rec);
        }
    }
}

/// Whether `seen` `kvm_userspace_exit` lines cover `runs` returns, allowing
/// for `lag` lines known to be missing (reset once the count is complete).
fn enough(seen: u64, runs: u64, lag: &mut u64) -> bool {
    if seen >= runs {
        *lag = 0;
    }
    seen >= runs.saturating_sub(*lag)
}

/// Observe mode's kernel side, as the vCPU threads see it ([`ObservePump::feed`]).
pub struct KernelFeed {
    inner: Mutex<Option<FeedInner>>,
    /// The trace's start (the writer's clock origin).
    start: Instant,
    /// Catch-ups that gave up after `CATCH_UP_TIMEOUT`.
    late: AtomicU64,
}

impl KernelFeed {
    fn lock(&self) -> MutexGuard<'_, Option<FeedInner>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Before the live engine decides a user-space exit of vCPU `vcpu` (Linux
    /// thread `tid`) after its `runs`-th `KVM_RUN` return: fold into `engine`
    /// every kernel event of that vCPU's runs so far. The kernel wrote them to
    /// the ring buffer before `KVM_RUN` returned; they are all drained once
    /// the capture has seen this thread's `runs` `kvm_userspace_exit` lines.
    /// Waits at most `CATCH_UP_TIMEOUT`; returns false (and counts it) when it
    /// had to give up, e.g. after a ring-buffer overrun ate a
    /// `kvm_userspace_exit` line (later catch-ups of the vCPU then allow for
    /// the lines still missing, `FeedInner::lag`).
    pub fn catch_up(&self, vcpu: u32, tid: u32, runs: u64, engine: &Mutex<Engine>) -> bool {
        let deadline = Instant::now() + CATCH_UP_TIMEOUT;
        loop {
            {
                let mut g = self.lock();
                let Some(inner) = g.as_mut() else {
                    return true;
                };
                inner.name(vcpu, tid);
                if inner.caught_up(vcpu, tid, runs) {
                    return true;
                }
                inner.drain(self.start, engine);
                if inner.caught_up(vcpu, tid, runs) {
                    return true;
                }
                if inner.cap.read_error().is_some() || Instant::now() >= deadline {
                    let seen = inner.cap.runs_seen(tid);
                    if let Some(lag) = inner.lag.get_mut(vcpu as usize) {
                        *lag = runs.saturating_sub(seen);
                    }
                    self.late.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
            }
            std::thread::sleep(CATCH_UP_POLL);
        }
    }

    /// Catch-ups that gave up so far.
    pub fn late_catch_ups(&self) -> u64 {
        self.late.load(Ordering::Relaxed)
    }
}

/// The observe-mode side of one recording.
pub struct ObservePump {
    feed: Arc<KernelFeed>,
    rx: Receiver<HeldBatch>,
    tx: Option<Sender<HeldBatch>>,
    marks: Vec<Arc<HoldMark>>,
}

impl ObservePump {
    /// `setup` are the records held before the vCPU threads start (run index
    /// 0); `start` is the trace's start (`Shared::start`).
    pub fn new(
        cap: TracefsCapture,
        vcpus: u32,
        setup: Vec<(u64, Record)>,
        start: Instant,
    ) -> ObservePump {
        let (tx, rx) = crossbeam_channel::bounded(CHANNEL_BATCHES);
        let mut merge = StreamMerge::new(vcpus);
        for (run, rec) in setup {
            merge.push_held(run, rec);
        }
        ObservePump {
            feed: Arc::new(KernelFeed {
                inner: Mutex::new(Some(FeedInner {
                    cap,
                    merge,
                    named: vec![None; vcpus as usize],
                    base: None,
                    lag: vec![0; vcpus as usize],
                })),
                start,
                late: AtomicU64::new(0),
            }),
            rx,
            tx: Some(tx),
            marks: (0..vcpus).map(|_| Arc::new(HoldMark::new())).collect(),
        }
    }

    /// What the vCPU threads call before the live engine decides.
    pub fn feed(&self) -> Arc<KernelFeed> {
        self.feed.clone()
    }

    /// Where vCPU `vcpu`'s thread hands its held records.
    pub fn link(&self, vcpu: u32) -> Option<HoldLink> {
        Some(HoldLink {
            tx: self.tx.clone()?,
            mark: self.marks.get(vcpu as usize)?.clone(),
        })
    }

    fn name_threads(inner: &mut FeedInner, linux_tids: &[AtomicU32]) {
        for (v, t) in linux_tids.iter().enumerate() {
            inner.name(v as u32, t.load(Ordering::SeqCst));
        }
    }

    fn take_held(&self, merge: &mut StreamMerge) {
        while let Ok(batch) = self.rx.try_recv() {
            for (run, rec) in batch {
                merge.push_held(run, rec);
            }
        }
    }

    /// One round: name new vCPU threads, drain both sides (the kernel's events
    /// into the live engine too), tell the merge how far each vCPU has got,
    /// send what is placed to the writer.
    pub fn pump(
        &mut self,
        linux_tids: &[AtomicU32],
        shared: &Shared,
        writer: &Writer,
        engine: &Mutex<Engine>,
    ) {
        let ready = {
            let mut g = self.feed.lock();
            let Some(inner) = g.as_mut() else { return };
            Self::name_threads(inner, linux_tids);
            // Clock and marks before the drains: what they promise is then drained.
            let now = shared.elapsed_ns();
            let progress: Vec<(u64, u64)> = self
                .marks
                .iter()
                .map(|m| {
                    let runs = m.runs_below.load(Ordering::SeqCst);
                    let since = m.since_ns.load(Ordering::SeqCst);
                    (runs, if since == u64::MAX { now } else { since })
                })
                .collect();
            self.take_held(&mut inner.merge);
            let synced = inner.cap.synced_ns();
            inner.drain(self.feed.start, engine);
            inner.cap.sync();
            for (v, &(held_below, held_since)) in progress.iter().enumerate() {
                let tid = inner.named[v];
                let (kernel_below, kernel_since) = match (tid, inner.base, synced) {
                    (Some(tid), Some(base), Some(s)) => {
                        (inner.cap.runs_seen(tid), s.saturating_sub(base))
                    }
                    (Some(tid), _, _) => (inner.cap.runs_seen(tid), 0),
                    _ => (0, 0),
                };
                inner.merge.set_progress(
                    v as u32,
                    held_below,
                    kernel_below,
                    held_since.min(kernel_since),
                );
            }
            inner.merge.pop_ready()
        };
        // Outside the lock: a full writer must not hold up the vCPUs' catch-ups.
        if !ready.is_empty() {
            writer.send_records(ready);
        }
    }

    /// A failed read of `trace_pipe` so far.
    pub fn read_error(&self) -> Option<String> {
        self.feed.lock().as_ref()?.cap.read_error()
    }

    /// After every vCPU thread has ended: stop the capture, merge and send the
    /// rest, and a `Lost { Tracefs }` record last when the ring buffer lost
    /// anything. Returns the capture's counters (`read_error` included).
    pub fn finish(
        mut self,
        linux_tids: &[AtomicU32],
        shared: &Shared,
        writer: &Writer,
    ) -> CaptureStats {
        self.tx = None;
        let Some(mut inner) = self.feed.lock().take() else {
            return CaptureStats::default();
        };
        Self::name_threads(&mut inner, linux_tids);
        self.take_held(&mut inner.merge);
        let FeedInner {
            cap,
            mut merge,
            base,
            ..
        } = inner;
        let (mut observed, mut stats, late_base) = cap.stop_at(shared.start());
        stats.late_catch_ups = self.feed.late_catch_ups();
        let base = base.or(late_base).unwrap_or(0);
        let lost = match observed.last() {
            Some(o) if matches!(o.event, Event::Lost { .. }) && o.tid == 0 => observed.pop(),
            _ => None,
        };
        for o in observed {
            merge.push_kernel(o, base);
        }
        let mut seq = merge.next_seq();
        let mut rest = merge.finish();
        let last_ns = rest.last().map(|r| r.time_ns);
        seq += rest.len() as u64;
        if let Some(o) = lost {
            let count = match o.event {
                Event::Lost { count, .. } => count,
                _ => 0,
            };
            rest.push(Record {
                seq,
                vcpu: 0,
                time_ns: last_ns.unwrap_or_else(|| o.ts_ns.saturating_sub(base)),
                event: Event::Lost {
                    source: LostSource::Tracefs,
                    count,
                },
            });
        }
        writer.send_records(rest);
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::enough;

    #[test]
    fn a_catch_up_allows_only_for_lines_known_missing() {
        // (seen, runs, lag before) -> (caught up, lag after)
        let cases = [
            ((5, 5, 0), (true, 0)),
            ((4, 5, 0), (false, 0)),
            // One line lost earlier: one fewer expected from then on.
            ((4, 5, 1), (true, 1)),
            ((3, 5, 1), (false, 1)),
            // The count is complete again: no allowance any more.
            ((7, 7, 1), (true, 0)),
            ((0, 0, 0), (true, 0)),
        ];
        for ((seen, runs, lag0), (want, lag1)) in cases {
            let mut lag = lag0;
            assert_eq!(enough(seen, runs, &mut lag), want, "{seen} {runs} {lag0}");
            assert_eq!(lag, lag1, "{seen} {runs} {lag0}");
        }
    }
}
