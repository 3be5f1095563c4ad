//! Observe mode: the recorder's own events (I/O, MONITOR/MWAIT emulation
//! failures, RESET state, End...) merged with the kernel's events read from its
//! tracepoints, into one numbered log.
//!
//! Within a vCPU the key is exact: a kernel event with `run_index` r happened
//! during that vCPU's (r+1)-th `KVM_RUN`, i.e. after the recorder's events held
//! with run index r and before those held with r+1 (`Observed::run_index`).
//! Across vCPUs, records are interleaved by time.

use kvmtrace_format::Record;

use crate::observe::Observed;

/// Merge held records `(vcpu's KVM_RUN return count, record)` with observed
/// kernel events; `base_mono_ns` is the trace clock at the trace's start.
/// Sequence numbers are assigned here, from 0.
pub fn merge(held: Vec<(u64, Record)>, observed: Vec<Observed>, base_mono_ns: u64) -> Vec<Record> {
    // (vcpu, key, kernel-after-user within a run index, arrival order)
    let mut all: Vec<(u32, u64, u8, usize, Record)> =
        Vec::with_capacity(held.len() + observed.len());
    for (i, (run, rec)) in held.into_iter().enumerate() {
        all.push((rec.vcpu, run, 0, i, rec));
    }
    let base = all.len();
    for (i, o) in observed.into_iter().enumerate() {
        let rec = Record {
            seq: 0,
            vcpu: o.vcpu,
            time_ns: o.ts_ns.saturating_sub(base_mono_ns),
            event: o.event,
        };
        all.push((o.vcpu, o.run_index, 1, base + i, rec));
    }
    all.sort_by_key(|&(v, k, kernel, i, _)| (v, k, kernel, i));
    // Split per vCPU (already in per-vCPU order), then interleave by time.
    let mut lanes: Vec<std::collections::VecDeque<Record>> = Vec::new();
    let mut last: Option<u32> = None;
    for (v, _, _, _, rec) in all {
        if last != Some(v) {
            lanes.push(Default::default());
            last = Some(v);
        }
        if let Some(l) = lanes.last_mut() {
            l.push_back(rec);
        }
    }
    let total: usize = lanes.iter().map(|l| l.len()).sum();
    let mut out = Vec::with_capacity(total);
    while out.len() < total {
        let pick = lanes
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.front().map(|r| (r.time_ns, r.vcpu, i)))
            .min()
            .map(|(_, _, i)| i);
        let Some(i) = pick else { break };
        if let Some(mut rec) = lanes[i].pop_front() {
            rec.seq = out.len() as u64;
            out.push(rec);
        }
    }
    out
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
}
