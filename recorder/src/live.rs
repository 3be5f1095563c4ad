//! Observe mode while the guest runs: each vCPU thread is named to the capture
//! as soon as it has started, and the recorder's main thread periodically
//! drains the tracefs capture and the vCPUs' held records into the incremental
//! merge (`merge::StreamMerge`), sending what it has placed to the writer. So a
//! long run keeps a bounded amount in memory, and nothing the ring buffer
//! delivered is lost (what it did not deliver is counted: `Lost { Tracefs }`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crossbeam_channel::{Receiver, Sender};
use kvmtrace_format::{Event, LostSource, Record};

use crate::merge::StreamMerge;
use crate::observe::{CaptureStats, TracefsCapture};
use crate::writer::{CHANNEL_BATCHES, HeldBatch, HoldLink, HoldMark, Shared, Writer};

/// The observe-mode side of one recording.
pub struct ObservePump {
    cap: TracefsCapture,
    merge: StreamMerge,
    rx: Receiver<HeldBatch>,
    tx: Option<Sender<HeldBatch>>,
    marks: Vec<Arc<HoldMark>>,
    /// Per vCPU: its Linux thread id, once named to the capture.
    named: Vec<Option<u32>>,
    /// The trace clock at the trace's start, once the capture's clock marker
    /// has been read back.
    base: Option<u64>,
}

impl ObservePump {
    /// `setup` are the records held before the vCPU threads start (run index 0).
    pub fn new(cap: TracefsCapture, vcpus: u32, setup: Vec<(u64, Record)>) -> ObservePump {
        let (tx, rx) = crossbeam_channel::bounded(CHANNEL_BATCHES);
        let mut merge = StreamMerge::new(vcpus);
        for (run, rec) in setup {
            merge.push_held(run, rec);
        }
        ObservePump {
            cap,
            merge,
            rx,
            tx: Some(tx),
            marks: (0..vcpus).map(|_| Arc::new(HoldMark::new())).collect(),
            named: vec![None; vcpus as usize],
            base: None,
        }
    }

    /// Where vCPU `vcpu`'s thread hands its held records.
    pub fn link(&self, vcpu: u32) -> Option<HoldLink> {
        Some(HoldLink {
            tx: self.tx.clone()?,
            mark: self.marks.get(vcpu as usize)?.clone(),
        })
    }

    fn name_threads(&mut self, linux_tids: &[AtomicU32]) {
        for (v, t) in linux_tids.iter().enumerate() {
            if let Some(slot) = self.named.get_mut(v)
                && slot.is_none()
            {
                let tid = t.load(Ordering::SeqCst);
                if tid != 0 {
                    self.cap.set_vcpu(tid, v as u32);
                    *slot = Some(tid);
                }
            }
        }
    }

    fn take_held(&mut self) {
        while let Ok(batch) = self.rx.try_recv() {
            for (run, rec) in batch {
                self.merge.push_held(run, rec);
            }
        }
    }

    /// One round: name new vCPU threads, drain both sides, tell the merge how
    /// far each vCPU has got, send what is placed to the writer.
    pub fn pump(&mut self, linux_tids: &[AtomicU32], shared: &Shared, writer: &Writer) {
        self.name_threads(linux_tids);
        if self.base.is_none() {
            self.base = self.cap.mono_ns_at(shared.start());
        }
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
        self.take_held();
        let synced = self.cap.synced_ns();
        if let Some(base) = self.base {
            for o in self.cap.drain() {
                self.merge.push_kernel(o, base);
            }
        }
        self.cap.sync();
        for (v, &(held_below, held_since)) in progress.iter().enumerate() {
            let tid = self.named[v];
            let (kernel_below, kernel_since) = match (tid, self.base, synced) {
                (Some(tid), Some(base), Some(s)) => {
                    (self.cap.runs_seen(tid), s.saturating_sub(base))
                }
                (Some(tid), _, _) => (self.cap.runs_seen(tid), 0),
                _ => (0, 0),
            };
            self.merge.set_progress(
                v as u32,
                held_below,
                kernel_below,
                held_since.min(kernel_since),
            );
        }
        let ready = self.merge.pop_ready();
        if !ready.is_empty() {
            writer.send_records(ready);
        }
    }

    /// A failed read of `trace_pipe` so far.
    pub fn read_error(&self) -> Option<String> {
        self.cap.read_error()
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
        self.name_threads(linux_tids);
        self.tx = None;
        self.take_held();
        let ObservePump {
            cap,
            mut merge,
            base,
            ..
        } = self;
        let (mut observed, stats, late_base) = cap.stop_at(shared.start());
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
