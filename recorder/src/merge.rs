//! Observe mode: the recorder's own events (I/O, MONITOR/MWAIT emulation
//! failures, RESET state, End...) merged with the kernel's events read from its
//! tracepoints, into one numbered log.
//!
//! Within a vCPU the key is exact: a kernel event with `run_index` r happened
//! during that vCPU's (r+1)-th `KVM_RUN`, i.e. after the recorder's events held
//! with run index r and before those held with r+1 (`Observed::run_index`).
//! Across vCPUs, records are interleaved by time.

use std::collections::VecDeque;

use kvmtrace_format::Record;

use crate::observe::Observed;

/// Records the merge buffers before it gives up exact ordering to keep memory
/// bounded (only when one side stops making progress, e.g. after a ring-buffer
/// overrun swallowed the `kvm_userspace_exit` lines the run index counts).
pub const MAX_BUFFERED: usize = 1 << 18;

/// Merge held records `(vcpu's KVM_RUN return count, record)` with observed
/// kernel events; `base_mono_ns` is the trace clock at the trace's start.
/// Sequence numbers are assigned here, from 0.
pub fn merge(held: Vec<(u64, Record)>, observed: Vec<Observed>, base_mono_ns: u64) -> Vec<Record> {
    let mut m = StreamMerge::new(0);
    for (run, rec) in held {
        m.push_held(run, rec);
    }
    for o in observed {
        m.push_kernel(o, base_mono_ns);
    }
    m.finish()
}

/// One vCPU's queues and what is known about what is still to come.
#[derive(Debug, Default)]
struct Lane {
    held: VecDeque<(u64, Record)>,
    kernel: VecDeque<(u64, Record)>,
    /// In this vCPU's exact order, waiting for the other vCPUs (time order).
    ready: VecDeque<Record>,
    /// Every held record with a run index below this has been pushed.
    held_below: u64,
    /// Every kernel event with a run index below this has been pushed.
    kernel_below: u64,
    /// Records not pushed yet are no earlier than this (ns since the trace start).
    bound_ns: u64,
}

impl Lane {
    /// Move what this vCPU's order allows into `ready`.
    fn order(&mut self, force: bool) -> usize {
        let mut moved = 0;
        loop {
            let h = self.held.front().map(|(r, _)| *r);
            let k = self.kernel.front().map(|(r, _)| *r);
            let kernel_first = match (h, k) {
                (Some(h), Some(k)) => k < h,
                // A held record of run h needs every kernel event of runs < h.
                (Some(h), None) if force || self.kernel_below >= h => false,
                // A kernel event of run k needs every held record of runs <= k.
                (None, Some(k)) if force || k < self.held_below => true,
                _ => break,
            };
            let rec = if kernel_first {
                self.kernel.pop_front().map(|(_, r)| r)
            } else {
                self.held.pop_front().map(|(_, r)| r)
            };
            if let Some(rec) = rec {
                self.ready.push_back(rec);
                moved += 1;
            }
        }
        moved
    }

    /// A lower bound of the time of this lane's next record, when `ready` is empty.
    fn lower_ns(&self) -> u64 {
        let h = self.held.front().map_or(u64::MAX, |(_, r)| r.time_ns);
        let k = self.kernel.front().map_or(u64::MAX, |(_, r)| r.time_ns);
        self.bound_ns.min(h).min(k)
    }
}

/// The same merge, incremental (observe mode's long runs): records come in as
/// they are read, each vCPU reports its progress (`set_progress`), and
/// `pop_ready` returns, numbered, every record whose place is known, so memory
/// stays bounded by what is in flight. Fed everything and `finish`ed, it gives
/// exactly what [`merge`] gives.
#[derive(Debug, Default)]
pub struct StreamMerge {
    lanes: Vec<Lane>,
    next_seq: u64,
    buffered: usize,
}

impl StreamMerge {
    /// Lanes for `vcpus` vCPUs (more are added as records name them).
    pub fn new(vcpus: u32) -> StreamMerge {
        let mut m = StreamMerge::default();
        if vcpus > 0 {
            m.lane(vcpus - 1);
        }
        m
    }

    fn lane(&mut self, vcpu: u32) -> &mut Lane {
        let i = vcpu as usize;
        while self.lanes.len() <= i {
            self.lanes.push(Lane::default());
        }
        &mut self.lanes[i]
    }

    /// A record of the recorder's own, with its vCPU's `KVM_RUN` return count.
    pub fn push_held(&mut self, run: u64, rec: Record) {
        self.buffered += 1;
        self.lane(rec.vcpu).held.push_back((run, rec));
    }

    /// A kernel event; `base_mono_ns` is the trace clock at the trace's start.
    pub fn push_kernel(&mut self, o: Observed, base_mono_ns: u64) {
        let run = o.run_index;
        self.push_kernel_record(run, o.into_record(0, base_mono_ns));
    }

    /// A kernel event already converted (`Observed::into_record`), with its
    /// `run_index`.
    pub fn push_kernel_record(&mut self, run: u64, rec: Record) {
        self.buffered += 1;
        self.lane(rec.vcpu).kernel.push_back((run, rec));
    }

    /// What is known of vCPU `vcpu`: every held record with a run index below
    /// `held_below` and every kernel event with one below `kernel_below` has
    /// been pushed, and records still to come are no earlier than `bound_ns`.
    pub fn set_progress(&mut self, vcpu: u32, held_below: u64, kernel_below: u64, bound_ns: u64) {
        let l = self.lane(vcpu);
        l.held_below = held_below;
        l.kernel_below = kernel_below;
        l.bound_ns = bound_ns;
    }

    /// Records pushed and not yet returned.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// The sequence number the next returned record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Every record whose place is now known, numbered. Past `MAX_BUFFERED`
    /// records, the oldest are returned even where a vCPU's progress does not
    /// prove their place (down to half the bound).
    pub fn pop_ready(&mut self) -> Vec<Record> {
        let force = self.buffered > MAX_BUFFERED;
        let mut out = Vec::new();
        for l in &mut self.lanes {
            l.order(false);
        }
        self.emit(&mut out, false);
        if force {
            while self.buffered > MAX_BUFFERED / 2 {
                let moved: usize = self.lanes.iter_mut().map(|l| l.order(true)).sum();
                let before = out.len();
                self.emit(&mut out, true);
                if moved == 0 && out.len() == before {
                    break;
                }
            }
        }
        out
    }

    /// Everything left: nothing more will come.
    pub fn finish(mut self) -> Vec<Record> {
        for l in &mut self.lanes {
            l.held_below = u64::MAX;
            l.kernel_below = u64::MAX;
            l.bound_ns = u64::MAX;
        }
        self.pop_ready()
    }

    /// Interleave the lanes' ready records by time: the earliest head goes out
    /// once no lane with nothing ready could still produce an earlier record.
    fn emit(&mut self, out: &mut Vec<Record>, force: bool) {
        loop {
            let best = self
                .lanes
                .iter()
                .enumerate()
                .filter_map(|(i, l)| l.ready.front().map(|r| (r.time_ns, i)))
                .min();
            let Some((t, i)) = best else { break };
            let blocked = !force
                && self
                    .lanes
                    .iter()
                    .enumerate()
                    .any(|(j, l)| j != i && l.ready.is_empty() && (l.lower_ns(), j) < (t, i));
            if blocked {
                break;
            }
            if let Some(mut rec) = self.lanes[i].ready.pop_front() {
                rec.seq = self.next_seq;
                self.next_seq += 1;
                self.buffered -= 1;
                out.push(rec);
            }
            if force && self.buffered <= MAX_BUFFERED / 2 {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvmtrace_format::{DecidedBy, EndReason, Event, MsrOutcome, Origin};

    fn rec(vcpu: u32, time_ns: u64, event: Event) -> Record {
        Record {
            seq: 99,
            vcpu,
            time_ns,
            event,
        }
    }

    fn msr(index: u32) -> Event {
        Event::MsrRead {
            index,
            origin: Origin::Guest,
            outcome: MsrOutcome::Value(0),
            decided_by: DecidedBy::Kernel,
            capture: None,
        }
    }

    #[test]
    fn kernel_events_go_between_the_user_exits_around_them() {
        let io = |d| Event::Io {
            port: 0x502,
            size: 4,
            write: true,
            data: d,
        };
        let held = vec![
            (0, rec(0, 0, Event::Halt)), // before the first KVM_RUN
            (1, rec(0, 50, io(1))),      // after the 1st return
            (
                2,
                rec(
                    0,
                    90,
                    Event::End {
                        reason: EndReason::Finished,
                    },
                ),
            ),
        ];
        let obs = |ts: u64, run_index: u64, index: u32| Observed {
            ts_ns: 1000 + ts,
            tid: 7,
            vcpu: 0,
            run_index,
            event: msr(index),
        };
        // Timestamps deliberately disagree (coarser clock): the run index rules.
        let observed = vec![obs(60, 0, 0x10), obs(40, 1, 0x1b)];
        let out = merge(held, observed, 1000);
        let kinds: Vec<String> = out
            .iter()
            .map(|r| format!("{:?}", r.event.kind()))
            .collect();
        assert_eq!(kinds, ["Halt", "MsrRead", "Io", "MsrRead", "End"]);
        assert!(out.iter().enumerate().all(|(i, r)| r.seq == i as u64));
        assert!(matches!(out[1].event, Event::MsrRead { index: 0x10, .. }));
    }
    /// Fed in pieces with progress reports, the stream gives what the batch
    /// merge gives, and holds back what a vCPU's progress does not place yet.
    #[test]
    fn the_stream_merge_matches_the_batch_merge() {
        let io = |d| Event::Io {
            port: 0x502,
            size: 4,
            write: true,
            data: d,
        };
        let obs = |vcpu: u32, ts: u64, run_index: u64, index: u32| Observed {
            ts_ns: 1000 + ts,
            tid: 7 + vcpu,
            vcpu,
            run_index,
            event: msr(index),
        };
        let held = vec![
            (0, rec(0, 0, io(0))),
            (0, rec(1, 1, io(10))),
            (1, rec(0, 50, io(1))),
            (1, rec(1, 60, io(11))),
            (2, rec(0, 90, io(2))),
        ];
        let observed = vec![
            obs(0, 10, 0, 1),
            obs(1, 20, 0, 2),
            obs(0, 70, 1, 3),
            obs(1, 80, 1, 4),
        ];
        let batch = merge(held.clone(), observed.clone(), 1000);

        let mut m = StreamMerge::new(2);
        // Round 1: vCPU 0's first run is done, vCPU 1 has not started.
        m.push_held(held[0].0, held[0].1.clone());
        m.push_held(held[1].0, held[1].1.clone());
        m.push_kernel(observed[0].clone(), 1000);
        m.set_progress(0, 1, 0, 15);
        m.set_progress(1, 1, 0, 1);
        let mut got = m.pop_ready();
        // vCPU 1 could still produce something at t=1: t=10 waits.
        assert_eq!(got.len(), 2);
        // Round 2: both have returned once; the kernel side has seen it.
        m.push_held(held[2].0, held[2].1.clone());
        m.push_kernel(observed[1].clone(), 1000);
        m.push_held(held[3].0, held[3].1.clone());
        m.set_progress(0, 2, 1, 65);
        m.set_progress(1, 2, 1, 65);
        got.extend(m.pop_ready());
        // Kernel events of run 1 not read yet: held records of run 2 wait.
        m.push_held(held[4].0, held[4].1.clone());
        m.set_progress(0, u64::MAX, 1, 95);
        got.extend(m.pop_ready());
        assert!(got.iter().all(|r| r.time_ns < 70), "{got:?}");
        m.push_kernel(observed[2].clone(), 1000);
        m.push_kernel(observed[3].clone(), 1000);
        got.extend(m.finish());
        assert_eq!(got, batch);
    }
    /// A vCPU that reports no progress cannot make the merge hold everything:
    /// past `MAX_BUFFERED` the oldest records go out anyway, in order.
    #[test]
    fn memory_stays_bounded_when_progress_stalls() {
        let mut m = StreamMerge::new(1);
        let n = MAX_BUFFERED as u64 + 10;
        for t in 0..n {
            m.push_held(1, rec(0, t, msr(0)));
        }
        // Kernel side never caught up (kernel_below 0 < run 1): nothing is proven.
        m.set_progress(0, 2, 0, 0);
        let out = m.pop_ready();
        assert!(m.buffered() <= MAX_BUFFERED / 2, "{}", m.buffered());
        assert_eq!(out.len() as u64 + m.buffered() as u64, n);
        assert!(
            out.iter()
                .enumerate()
                .all(|(i, r)| r.seq == i as u64 && r.time_ns == i as u64)
        );
        assert_eq!(m.finish().len() as u64 + out.len() as u64, n);
    }
}
