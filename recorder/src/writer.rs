//! From vCPU threads to the trace file: each vCPU thread stamps records (one
//! global `AtomicU64` sequence, monotonic time since the trace start), batches
//! them and sends full batches through a bounded crossbeam channel to one writer
//! thread, which orders them by sequence number and owns the trace writer (the
//! only place that touches disk or zstd).
//!
//! Ordering across vCPUs: each vCPU publishes in `pending_min` a lower bound of
//! the sequence numbers it holds unsent (set before it allocates the first one of
//! a batch, cleared after the batch is sent). After draining the channel the
//! writer may emit every record below the minimum of those bounds: anything
//! smaller is either in hand or was sent before the bound was cleared, so the
//! drain saw it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};
use kvmtrace_format::{Event, LostSource, Record, TraceHeader};

use crate::OnFull;
use crate::clock::StampClock;
use crate::sink::{self, Sink, SinkError};

/// Records per batch.
pub const BATCH: usize = 256;
/// Batches the channel holds before a vCPU waits (or drops).
pub const CHANNEL_BATCHES: usize = 64;
/// A vCPU sends a partial batch whose first record is older than this.
const BATCH_AGE_NS: u64 = 250_000_000;
/// The writer flushes a chunk at least this often (issue 5: SIGKILL loses at
/// most the last chunk).
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// One in `SAMPLE` pushes is timed for `vcpu_ns_per_event` (each timing reads
/// the clock three times, ~100 ns: one in 64 keeps that under 2 ns per event).
const SAMPLE: u64 = 64;
/// A timed sample longer than this was preempted (2 cores shared by many
/// processes): it measures the scheduler, not the recorder, and is left out
/// of `vcpu_ns_per_event` (counted in `OutStats::preempted`).
const PREEMPTED_NS: u64 = 20_000;

/// What one `Instant::now()` costs here (the least of a few back-to-back
/// pairs): each sampled event's two timed windows each hold about one clock
/// read that is measurement, not recording, and is subtracted.
fn clock_read_ns() -> u64 {
    static NS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *NS.get_or_init(|| {
        (0..256)
            .map(|_| {
                let a = Instant::now();
                let b = Instant::now();
                b.duration_since(a).as_nanos() as u64
            })
            .min()
            .unwrap_or(0)
    })
}

/// State shared by the vCPU threads and the writer.
#[derive(Debug)]
pub struct Shared {
    seq: AtomicU64,
    start: Instant,
    pending_min: Vec<AtomicU64>,
    /// Set by the writer when the output failed: vCPUs stop the guest.
    failed: AtomicBool,
}

impl Shared {
    pub fn new(vcpus: usize) -> Arc<Shared> {
        Arc::new(Shared {
            seq: AtomicU64::new(0),
            start: Instant::now(),
            pending_min: (0..vcpus).map(|_| AtomicU64::new(u64::MAX)).collect(),
            failed: AtomicBool::new(false),
        })
    }

    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// The instant the trace's times count from.
    pub fn start(&self) -> Instant {
        self.start
    }

    pub fn elapsed_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

/// Width of one bucket of the sampled-cost histogram, and the bucket count.
const HIST_NS: u64 = 4;
const HIST_BUCKETS: usize = 1024;

/// Per-vCPU counters, summed into `RecordSummary`.
#[derive(Clone, Debug, Default)]
pub struct OutStats {
    pub events: u64,
    pub dropped: u64,
    pub channel_wait_ns: u64,
    pub sampled: u64,
    pub sampled_ns: u64,
    pub send_ns: u64,
    pub preempted: u64,
    /// Sampled stamp+push costs in `HIST_NS` buckets (the last one holds
    /// everything longer), for a median that a noisy machine does not skew.
    pub hist: Vec<u32>,
}

impl OutStats {
    fn sample(&mut self, ns: u64) {
        if self.hist.is_empty() {
            self.hist = vec![0; HIST_BUCKETS];
        }
        let b = ((ns / HIST_NS) as usize).min(HIST_BUCKETS - 1);
        self.hist[b] += 1;
    }

    /// The median sampled stamp+push cost (bucket midpoint), 0 without samples.
    pub fn median_ns(&self) -> f64 {
        let total: u64 = self.hist.iter().map(|&c| u64::from(c)).sum();
        let mut seen = 0u64;
        for (i, &c) in self.hist.iter().enumerate() {
            seen += u64::from(c);
            if total > 0 && seen * 2 >= total {
                return (i as u64 * HIST_NS) as f64 + HIST_NS as f64 / 2.0;
            }
        }
        0.0
    }

    pub fn add(&mut self, o: &OutStats) {
        if self.hist.is_empty() {
            self.hist = vec![0; HIST_BUCKETS];
        }
        for (a, b) in self.hist.iter_mut().zip(o.hist.iter()) {
            *a += b;
        }
        self.events += o.events;
        self.dropped += o.dropped;
        self.channel_wait_ns += o.channel_wait_ns;
        self.sampled += o.sampled;
        self.sampled_ns += o.sampled_ns;
        self.send_ns += o.send_ns;
        self.preempted += o.preempted;
    }

    /// Time on the vCPU thread per event: the sampled stamp+push cost plus the
    /// batch sends (excluding waits on a full channel, counted apart).
    pub fn ns_per_event(&self) -> f64 {
        if self.events == 0 || self.sampled == 0 {
            return 0.0;
        }
        self.sampled_ns as f64 / self.sampled as f64 + self.send_ns as f64 / self.events as f64
    }
}

/// A vCPU thread's end of the pipeline.
pub struct EventOut {
    vcpu: u32,
    shared: Arc<Shared>,
    tx: Option<Sender<Vec<Record>>>,
    free: Receiver<Vec<Record>>,
    batch: Vec<Record>,
    batch_first_ns: u64,
    on_full: OnFull,
    discard: bool,
    lost_pending: u64,
    /// A sampled event's `stamp` time; its `push` time is added in `push`
    /// (the engine's work between the two is not the recorder's cost).
    sample_stamp_ns: Option<u64>,
    clock_ns: u64,
    /// The stamps' clock (the TSC between per-batch anchors, see `clock`).
    clock: StampClock,
    /// Observe mode: records are held with the vCPU's `KVM_RUN` return count,
    /// to be merged with the kernel's events (`merge::StreamMerge`).
    hold: Option<Hold>,
    run_index: u64,
    pub stats: OutStats,
}

/// A batch of held records `(run index, record)` from one vCPU thread.
pub type HeldBatch = Vec<(u64, Record)>;

/// Observe mode: how far one vCPU thread's held records have been handed over,
/// read by the merging thread. Load these *before* draining the held channel:
/// every batch sent before a store is then in the channel.
#[derive(Debug)]
pub struct HoldMark {
    /// Every held record with a run index below this has been sent
    /// (`u64::MAX`: the thread is done).
    pub runs_below: AtomicU64,
    /// A lower bound of the times (ns since the trace start) of the records the
    /// thread has not sent yet; `u64::MAX` while it is inside `KVM_RUN` (or
    /// waiting) with nothing unsent: then its next record is stamped later than
    /// any clock read made before loading this.
    pub since_ns: AtomicU64,
}

impl HoldMark {
    pub fn new() -> HoldMark {
        HoldMark {
            runs_below: AtomicU64::new(0),
            since_ns: AtomicU64::new(0),
        }
    }
}

impl Default for HoldMark {
    fn default() -> Self {
        HoldMark::new()
    }
}

/// Where a vCPU thread's held records go (observe mode).
#[derive(Clone, Debug)]
pub struct HoldLink {
    pub tx: Sender<HeldBatch>,
    pub mark: Arc<HoldMark>,
}

struct Hold {
    buf: HeldBatch,
    /// `None`: kept until `take_held` (the setup thread).
    link: Option<HoldLink>,
}

impl EventOut {
    /// Hold records instead of sending them (observe mode), until `take_held`.
    pub fn hold(&mut self) {
        self.hold = Some(Hold {
            buf: Vec::new(),
            link: None,
        });
    }

    /// Hold records and hand them over through `link` in batches: when the
    /// buffer is full, before each `KVM_RUN` or wait (`before_blocking`), and
    /// at `close` (observe mode's vCPU threads).
    pub fn hold_into(&mut self, link: HoldLink) {
        self.hold = Some(Hold {
            buf: Vec::with_capacity(BATCH),
            link: Some(link),
        });
    }

    pub fn holding(&self) -> bool {
        self.hold.is_some()
    }

    /// The held records, each with its run index.
    pub fn take_held(&mut self) -> Vec<(u64, Record)> {
        self.hold.take().map(|h| h.buf).unwrap_or_default()
    }

    /// Observe mode: about to enter `KVM_RUN`: hand the held records over and
    /// say that nothing is unsent; every record of this run index is out (the
    /// next ones come after the `KVM_RUN` return, with a later run index).
    #[inline]
    pub fn before_blocking(&mut self) {
        self.hand_over(true);
    }

    /// Observe mode: about to wait for an IPI in user space. Nothing is unsent,
    /// but the records after the wake-up (INIT, SIPI) keep this run index: the
    /// run-index promise waits for the next `KVM_RUN`.
    pub fn before_wait(&mut self) {
        self.hand_over(false);
    }

    #[inline]
    fn hand_over(&mut self, run_done: bool) {
        let run_index = self.run_index;
        if let Some(Hold {
            buf,
            link: Some(link),
        }) = &mut self.hold
        {
            if !buf.is_empty() {
                let _ = link
                    .tx
                    .send(std::mem::replace(buf, Vec::with_capacity(BATCH)));
            }
            if run_done {
                link.mark
                    .runs_below
                    .store(run_index.saturating_add(1), Ordering::SeqCst);
            }
            link.mark.since_ns.store(u64::MAX, Ordering::SeqCst);
        }
    }

    /// Observe mode: back from `KVM_RUN` (or a wait).
    #[inline]
    pub fn after_blocking(&mut self) {
        if let Some(Hold {
            link: Some(link), ..
        }) = &self.hold
        {
            // 0 first: a reader that still saw MAX read its clock before this.
            link.mark.since_ns.store(0, Ordering::SeqCst);
            link.mark
                .since_ns
                .store(self.shared.elapsed_ns(), Ordering::SeqCst);
        }
    }

    /// How many times this vCPU's `KVM_RUN` has returned (observe mode's merge key).
    pub fn set_run_index(&mut self, n: u64) {
        self.run_index = n;
    }

    pub fn vcpu(&self) -> u32 {
        self.vcpu
    }

    pub fn failed(&self) -> bool {
        self.shared.failed()
    }

    /// Give `event` its sequence number and time. Call with the engine locked so
    /// sequence order is the order the engine folded events in.
    pub fn stamp(&mut self, event: Event) -> Record {
        self.stamp_for(self.vcpu, event)
    }

    /// `stamp` for an event that belongs to `vcpu` (the VMM's setup thread).
    pub fn stamp_for(&mut self, vcpu: u32, event: Event) -> Record {
        if self.discard {
            return Record {
                seq: 0,
                vcpu,
                time_ns: 0,
                event,
            };
        }
        // Not the first push: it pays for cold caches once.
        let sampled = self.stats.events % SAMPLE == SAMPLE - 1;
        let t_in = sampled.then(Instant::now);
        // A new batch (or held buffer) re-anchors the stamp clock.
        let fresh = self.batch.is_empty() && self.hold.as_ref().is_none_or(|h| h.buf.is_empty());
        // Held records are numbered by the merge, not here.
        if self.batch.is_empty() && self.hold.is_none() {
            let lower = self.shared.seq.load(Ordering::SeqCst);
            self.shared.pending_min[self.vcpu as usize].store(lower, Ordering::SeqCst);
        }
        let time_ns = self.clock.now_ns(fresh);
        let seq = self.shared.seq.fetch_add(1, Ordering::SeqCst);
        let rec = Record {
            seq,
            vcpu,
            time_ns,
            event,
        };
        if let Some(t) = t_in {
            self.sample_stamp_ns = Some(t.elapsed().as_nanos() as u64);
        }
        rec
    }

    /// Queue a stamped record.
    pub fn push(&mut self, rec: Record) {
        if self.discard {
            return;
        }
        let t_in = self.sample_stamp_ns.is_some().then(Instant::now);
        self.stats.events += 1;
        if let Some(h) = &mut self.hold {
            h.buf.push((self.run_index, rec));
            if h.buf.len() >= BATCH
                && let Some(link) = &h.link
            {
                let _ = link
                    .tx
                    .send(std::mem::replace(&mut h.buf, Vec::with_capacity(BATCH)));
            }
            return;
        }
        if self.batch.is_empty() {
            self.batch_first_ns = rec.time_ns;
            if self.lost_pending > 0 {
                let count = std::mem::take(&mut self.lost_pending);
                let seq = self.shared.seq.fetch_add(1, Ordering::SeqCst);
                self.batch.push(Record {
                    seq,
                    vcpu: self.vcpu,
                    time_ns: rec.time_ns,
                    event: Event::Lost {
                        source: LostSource::Channel,
                        count,
                    },
                });
            }
        }
        let time_ns = rec.time_ns;
        self.batch.push(rec);
        if let (Some(stamp_ns), Some(t)) = (self.sample_stamp_ns.take(), t_in) {
            let ns = (stamp_ns + t.elapsed().as_nanos() as u64).saturating_sub(2 * self.clock_ns);
            if ns > PREEMPTED_NS {
                self.stats.preempted += 1;
            } else {
                self.stats.sampled += 1;
                self.stats.sampled_ns += ns;
                self.stats.sample(ns);
            }
        }
        if self.batch.len() >= BATCH || time_ns.saturating_sub(self.batch_first_ns) > BATCH_AGE_NS {
            self.send();
        }
    }

    /// Stamp and queue in one step (for events the engine does not fold).
    pub fn emit(&mut self, event: Event) {
        let rec = self.stamp(event);
        self.push(rec);
    }

    /// Send the current batch (if any) to the writer.
    pub fn send(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let Some(tx) = &self.tx else { return };
        let t0 = Instant::now();
        let fresh = self
            .free
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BATCH));
        let batch = std::mem::replace(&mut self.batch, fresh);
        match tx.try_send(batch) {
            Ok(()) => {}
            Err(TrySendError::Full(batch)) => match self.on_full {
                OnFull::Wait => {
                    let w0 = Instant::now();
                    let _ = tx.send(batch);
                    self.stats.channel_wait_ns += w0.elapsed().as_nanos() as u64;
                }
                OnFull::Drop => {
                    let n = batch
                        .iter()
                        .filter(|r| !matches!(r.event, Event::Lost { .. }));
                    let n = n.count() as u64;
                    let lost: u64 = batch
                        .iter()
                        .map(|r| match r.event {
                            Event::Lost { count, .. } => count,
                            _ => 0,
                        })
                        .sum();
                    self.stats.dropped += n;
                    self.lost_pending += n + lost;
                }
            },
            Err(TrySendError::Disconnected(_)) => {}
        }
        self.shared.pending_min[self.vcpu as usize].store(u64::MAX, Ordering::SeqCst);
        self.stats.send_ns += t0.elapsed().as_nanos() as u64;
    }

    /// Send what is left (waiting for room even in drop mode: nothing more
    /// will come to carry a `Lost` count); the thread is done with events.
    pub fn close(&mut self) {
        if let Some(h) = &mut self.hold
            && let Some(link) = h.link.take()
        {
            if !h.buf.is_empty() {
                let _ = link.tx.send(std::mem::take(&mut h.buf));
            }
            link.mark.runs_below.store(u64::MAX, Ordering::SeqCst);
            link.mark.since_ns.store(u64::MAX, Ordering::SeqCst);
        }
        if self.tx.is_none() {
            return;
        }
        if self.lost_pending > 0 {
            let count = std::mem::take(&mut self.lost_pending);
            let rec = self.stamp(Event::Lost {
                source: LostSource::Channel,
                count,
            });
            self.batch.push(rec);
        }
        if let Some(tx) = self.tx.take()
            && !self.batch.is_empty()
        {
            let t0 = Instant::now();
            let _ = tx.send(std::mem::take(&mut self.batch));
            self.stats.send_ns += t0.elapsed().as_nanos() as u64;
        }
        self.shared.pending_min[self.vcpu as usize].store(u64::MAX, Ordering::SeqCst);
    }
}

impl Drop for EventOut {
    fn drop(&mut self) {
        self.close();
    }
}

/// The writer's result.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriterStats {
    pub records: u64,
    pub bytes: u64,
    pub chunks: u64,
}

/// The writer thread and the ends the vCPUs use.
pub struct Writer {
    handle: Option<JoinHandle<Result<WriterStats, SinkError>>>,
    tx: Sender<Vec<Record>>,
    free: Receiver<Vec<Record>>,
    shared: Arc<Shared>,
}

impl Writer {
    /// Create the output file (`PATH.incomplete` until `finish`) and start the
    /// writer thread.
    pub fn start(
        path: &Path,
        header: &TraceHeader,
        shared: Arc<Shared>,
    ) -> Result<Writer, SinkError> {
        let sink = sink::create(path, header)?;
        Self::start_with(sink, shared)
    }

    pub fn start_with(sink: Box<dyn Sink>, shared: Arc<Shared>) -> Result<Writer, SinkError> {
        let (tx, rx) = crossbeam_channel::bounded(CHANNEL_BATCHES);
        let (free_tx, free) = crossbeam_channel::bounded(CHANNEL_BATCHES);
        let sh = shared.clone();
        let handle = std::thread::Builder::new()
            .name("kvmtrace-writer".into())
            .spawn(move || writer_loop(sink, rx, free_tx, sh))
            .map_err(SinkError::SpawnWriter)?;
        Ok(Writer {
            handle: Some(handle),
            tx,
            free,
            shared,
        })
    }

    /// An end for vCPU `vcpu`.
    pub fn out(&self, vcpu: u32, on_full: OnFull, discard: bool) -> EventOut {
        EventOut {
            vcpu,
            shared: self.shared.clone(),
            tx: Some(self.tx.clone()),
            free: self.free.clone(),
            batch: Vec::with_capacity(BATCH),
            batch_first_ns: 0,
            on_full,
            discard,
            lost_pending: 0,
            sample_stamp_ns: None,
            clock_ns: clock_read_ns(),
            clock: StampClock::new(self.shared.start),
            hold: None,
            run_index: 0,
            stats: OutStats::default(),
        }
    }

    /// Send finished records (already numbered) straight to the writer.
    pub fn send_records(&self, records: Vec<Record>) {
        let mut it = records.into_iter();
        loop {
            let batch: Vec<Record> = it.by_ref().take(BATCH).collect();
            if batch.is_empty() {
                break;
            }
            let _ = self.tx.send(batch);
        }
    }

    /// Wait for every `EventOut` to be dropped, then finish the file.
    pub fn finish(self) -> Result<WriterStats, SinkError> {
        let Writer { handle, tx, .. } = self;
        drop(tx);
        match handle {
            Some(h) => h.join().unwrap_or(Err(SinkError::WriterPanicked)),
            None => Err(SinkError::WriterPanicked),
        }
    }
}

fn writer_loop(
    mut sink: Box<dyn Sink>,
    rx: Receiver<Vec<Record>>,
    free: Sender<Vec<Record>>,
    shared: Arc<Shared>,
) -> Result<WriterStats, SinkError> {
    let mut pending: Vec<Record> = Vec::new();
    let mut last_flush = Instant::now();
    let mut unflushed = false;
    let mut records = 0u64;
    let mut error: Option<SinkError> = None;
    let mut disconnected = false;
    while !disconnected {
        let wait = FLUSH_EVERY.saturating_sub(last_flush.elapsed());
        match rx.recv_timeout(wait.max(Duration::from_millis(1))) {
            Ok(batch) => take(&mut pending, batch, &free),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => disconnected = true,
        }
        // The bound first, then drain: see the module comment.
        let bound = if disconnected {
            u64::MAX
        } else {
            shared
                .pending_min
                .iter()
                .map(|p| p.load(Ordering::SeqCst))
                .min()
                .unwrap_or(u64::MAX)
        };
        loop {
            match rx.try_recv() {
                Ok(batch) => take(&mut pending, batch, &free),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    disconnected = true;
                    break;
                }
            }
        }
        if error.is_some() {
            pending.clear();
            continue;
        }
        pending.sort_unstable_by_key(|r| r.seq);
        let n = pending.partition_point(|r| r.seq < bound);
        let n = if disconnected { pending.len() } else { n };
        for rec in pending.drain(..n) {
            if let Err(e) = sink.push(&rec) {
                shared.failed.store(true, Ordering::SeqCst);
                error = Some(e);
                break;
            }
            records += 1;
            unflushed = true;
        }
        if error.is_none() && unflushed && last_flush.elapsed() >= FLUSH_EVERY {
            if let Err(e) = sink.flush_chunk() {
                shared.failed.store(true, Ordering::SeqCst);
                error = Some(e);
            }
            unflushed = false;
        }
        if last_flush.elapsed() >= FLUSH_EVERY {
            last_flush = Instant::now();
        }
    }
    if let Some(e) = error {
        sink.abandon();
        return Err(e);
    }
    let (bytes, chunks) = sink.finish()?;
    Ok(WriterStats {
        records,
        bytes,
        chunks,
    })
}

fn take(pending: &mut Vec<Record>, mut batch: Vec<Record>, free: &Sender<Vec<Record>>) {
    pending.append(&mut batch);
    let _ = free.try_send(batch);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::MemorySink;
    use kvmtrace_format::{DecidedBy, MsrOutcome, Origin};

    fn read_event(i: u32) -> Event {
        Event::MsrRead {
            index: i,
            origin: Origin::Guest,
            outcome: MsrOutcome::Value(1),
            decided_by: DecidedBy::Vmm,
            capture: None,
        }
    }

    #[test]
    fn two_vcpus_interleaved_come_out_in_seq_order() {
        let shared = Shared::new(2);
        let (sink, records) = MemorySink::new();
        let w = Writer::start_with(Box::new(sink), shared).unwrap();
        let mut a = w.out(0, OnFull::Wait, false);
        let mut b = w.out(1, OnFull::Wait, false);
        for i in 0..1000 {
            let r = a.stamp(read_event(i));
            a.push(r);
            let r = b.stamp(read_event(i));
            b.push(r);
        }
        drop(a);
        drop(b);
        let st = w.finish().unwrap();
        assert_eq!(st.records, 2000);
        let recs = records.lock().unwrap();
        assert!(recs.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
    }

    /// A sink that blocks until released, so the channel fills up.
    struct Gate {
        open: Arc<AtomicBool>,
        hit: Arc<AtomicBool>,
        records: Arc<std::sync::Mutex<Vec<Record>>>,
    }

    impl Sink for Gate {
        fn push(&mut self, rec: &Record) -> Result<(), SinkError> {
            self.hit.store(true, Ordering::SeqCst);
            while !self.open.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            self.records.lock().unwrap().push(rec.clone());
            Ok(())
        }
        fn flush_chunk(&mut self) -> Result<(), SinkError> {
            Ok(())
        }
        fn finish(self: Box<Self>) -> Result<(u64, u64), SinkError> {
            Ok((0, 0))
        }
    }

    #[test]
    fn drop_mode_counts_every_dropped_event_in_lost_records() {
        let open = Arc::new(AtomicBool::new(false));
        let hit = Arc::new(AtomicBool::new(false));
        let records = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Gate {
            open: open.clone(),
            hit: hit.clone(),
            records: records.clone(),
        };
        let w = Writer::start_with(Box::new(sink), Shared::new(1)).unwrap();
        let mut a = w.out(0, OnFull::Drop, false);
        // One event through, so the writer blocks in the sink; then fill up.
        a.emit(read_event(0));
        a.send();
        while !hit.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let n = (CHANNEL_BATCHES as u32 + 20) * BATCH as u32;
        for i in 1..n {
            a.emit(read_event(i));
        }
        open.store(true, Ordering::SeqCst);
        a.close();
        let dropped = a.stats.dropped;
        drop(a);
        w.finish().unwrap();
        assert!(dropped > 0, "the channel never filled");
        let recs = records.lock().unwrap();
        let lost: u64 = recs
            .iter()
            .map(|r| match r.event {
                Event::Lost {
                    source: LostSource::Channel,
                    count,
                } => count,
                _ => 0,
            })
            .sum();
        assert_eq!(lost, dropped);
        let kept = recs
            .iter()
            .filter(|r| !matches!(r.event, Event::Lost { .. }))
            .count() as u64;
        assert_eq!(kept + dropped, u64::from(n));
        assert!(recs.windows(2).all(|w| w[0].seq < w[1].seq));
    }

    #[test]
    fn median_of_sampled_costs_ignores_spikes() {
        let mut st = OutStats::default();
        for ns in [40, 41, 42, 43, 44, 90_000 / 16, 10_000] {
            st.sample(ns);
        }
        assert_eq!(st.median_ns(), 42.0);
        let mut sum = OutStats::default();
        sum.add(&st);
        sum.add(&OutStats::default());
        assert_eq!(sum.median_ns(), 42.0);
        assert_eq!(OutStats::default().median_ns(), 0.0);
    }

    #[test]
    fn discard_sends_nothing() {
        let shared = Shared::new(1);
        let (sink, records) = MemorySink::new();
        let w = Writer::start_with(Box::new(sink), shared).unwrap();
        let mut a = w.out(0, OnFull::Wait, true);
        for i in 0..10 {
            a.emit(read_event(i));
        }
        drop(a);
        w.finish().unwrap();
        assert!(records.lock().unwrap().is_empty());
    }
}
