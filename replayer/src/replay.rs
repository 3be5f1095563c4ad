//! Open-loop replay (DESIGN.md): every recorded outcome is predicted by each
//! policy and compared; then the *policy's* outcome is folded into that policy's
//! state, so a write accepted by B but refused when recorded changes B's later
//! reads. Many policies in one pass, one lane per policy, lanes in parallel
//! (rayon); each lane is sequential, so the output does not depend on threads.

use kvmtrace_format::{
    AfterShutdown, ArchState, DecidedBy, Event, MsrOutcome, Origin, Record, TraceHeader,
};
use rayon::prelude::*;

use crate::engine::{Engine, StatePrediction};
use crate::model::{Store, compare_state, model_handles_access};
use crate::policy::Policy;
use crate::report::{
    Behaviour, Divergence, Ended, OutcomeView, PolicyReport, ReplayReport, Tally, describe_event,
};
use crate::rules::Rule;

/// How many records before a divergence are kept as its context.
const CONTEXT: usize = 3;

/// One pass over a trace against many policies.
pub struct Replay {
    trace: String,
    events: u64,
    lanes: Vec<Lane>,
    /// Per policy, in the order given: its lane and its name's slot in that
    /// lane's report list (0: the lane's own policy, k: its k-th alias).
    order: Vec<(usize, usize)>,
    /// The last records of the previous chunk (context across chunk borders).
    tail: Vec<Record>,
    parallel: bool,
    pool: Option<rayon::ThreadPool>,
    interesting: Vec<usize>,
    handles: HandlesCache,
}

/// [`model_handles_access`] per MSR index and direction, remembered:
/// the index tests walk long range lists, and a trace touches few indices.
/// Direct-mapped by a hash of the index; the full index is kept, so a slot
/// answers only for its own index (a pure function cached, never a guess).
struct HandlesCache {
    keys: [u32; HandlesCache::SLOTS],
    /// 0: empty; else `FILLED` | `READ` (reads handled) | `WRITE` (writes).
    bits: [u8; HandlesCache::SLOTS],
}

impl HandlesCache {
    const SLOTS: usize = 256;
    const FILLED: u8 = 1;
    const READ: u8 = 2;
    const WRITE: u8 = 4;

    fn new() -> HandlesCache {
        HandlesCache {
            keys: [0; HandlesCache::SLOTS],
            bits: [0; HandlesCache::SLOTS],
        }
    }

    /// Whether the model handles an access to `index` (a write if `write`).
    #[inline]
    fn handles(&mut self, index: u32, write: bool) -> bool {
        // Fibonacci hashing: the top 8 bits of the product.
        let slot = (index.wrapping_mul(0x9e37_79b9) >> 24) as usize;
        let mut b = self.bits[slot];
        if b == 0 || self.keys[slot] != index {
            b = HandlesCache::FILLED;
            if model_handles_access(index, false) {
                b |= HandlesCache::READ;
            }
            if model_handles_access(index, true) {
                b |= HandlesCache::WRITE;
            }
            self.keys[slot] = index;
            self.bits[slot] = b;
        }
        b & if write {
            HandlesCache::WRITE
        } else {
            HandlesCache::READ
        } != 0
    }
}

/// Which divergences a report keeps in full (counts are always exact):
/// `--limit N`, `--direct-only`, `--behaviour B`, `--vcpu N`; and whether every
/// selected divergence is also handed out batch by batch
/// ([`Replay::take_stream`]: `--json` streaming, `export --policy`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// Divergences kept in full per policy (the first that match).
    pub keep: usize,
    pub direct_only: bool,
    pub behaviour: Option<Behaviour>,
    pub vcpu: Option<u32>,
    /// Hand every selected divergence out through `take_stream` (not kept).
    pub stream: bool,
    /// List the unmodeled outcomes by kind (`PolicyReport::unmodeled_kinds`).
    pub unmodeled_kinds: bool,
}

impl Default for Selection {
    fn default() -> Self {
        Selection {
            keep: Replay::KEEP,
            direct_only: false,
            behaviour: None,
            vcpu: None,
            stream: false,
            unmodeled_kinds: false,
        }
    }
}

impl Selection {
    /// Whether a divergence of `behaviour` on `vcpu` can match (before it is built).
    fn may_match(&self, behaviour: Behaviour, vcpu: u32, direct: bool) -> bool {
        (!self.direct_only || direct)
            && self.behaviour.is_none_or(|b| b == behaviour)
            && self.vcpu.is_none_or(|v| v == vcpu)
    }
}

/// One streamed divergence: the policy (index in the order given), the record's
/// position in the batch just fed, and the divergence.
#[derive(Clone, Debug)]
pub struct Streamed {
    pub policy: usize,
    pub position: usize,
    pub divergence: Divergence,
}

impl Replay {
    /// Divergences kept in full per policy (counts are always exact).
    pub const KEEP: usize = 100;

    pub fn new(header: &TraceHeader, policies: Vec<Policy>) -> Replay {
        let mut lanes: Vec<Lane> = Vec::new();
        let mut order = Vec::with_capacity(policies.len());
        for p in policies {
            // A policy equal to an earlier one but for its name decides every
            // event the same way: one lane replays it for both names.
            match lanes
                .iter()
                .position(|l| same_but_name(l.engine.policy(), &p))
            {
                Some(i) => {
                    lanes[i].aliases.push(Alias {
                        name: p.name,
                        kept: Vec::new(),
                        stream: Vec::new(),
                    });
                    order.push((i, lanes[i].aliases.len()));
                }
                None => {
                    order.push((lanes.len(), 0));
                    lanes.push(Lane::new(Engine::new(p, header), Selection::default()));
                }
            }
        }
        Replay {
            trace: header.payload.name.clone(),
            events: 0,
            lanes,
            order,
            tail: Vec::new(),
            parallel: true,
            pool: None,
            interesting: Vec::new(),
            handles: HandlesCache::new(),
        }
    }

    /// The name the report gives the trace (default: the payload name).
    pub fn with_trace_name(mut self, name: impl Into<String>) -> Replay {
        self.trace = name.into();
        self
    }

    /// Which divergences to keep in full or stream (counts stay exact).
    pub fn with_selection(mut self, sel: Selection) -> Replay {
        for l in &mut self.lanes {
            l.unmodeled_kinds = sel.unmodeled_kinds.then(UnmodeledKinds::default);
            l.sel = sel.clone();
        }
        self
    }

    /// Also tally kernel-decided outcomes per behaviour (`fidelity`).
    pub fn with_kernel_tally(mut self) -> Replay {
        for l in &mut self.lanes {
            l.kernel_tally = true;
        }
        self
    }

    /// The divergences selected while feeding the last batch, in trace order
    /// (then in the order the policies were given); only with
    /// `Selection::stream`.
    pub fn take_stream(&mut self) -> Vec<Streamed> {
        let mut out = Vec::new();
        for (pi, &(l, k)) in self.order.iter().enumerate() {
            let lane = &mut self.lanes[l];
            let items: Vec<(usize, Divergence)> = if k == 0 {
                lane.stream.clone()
            } else {
                lane.stream_alias(k - 1)
            };
            out.extend(items.into_iter().map(|(position, divergence)| Streamed {
                policy: pi,
                position,
                divergence,
            }));
        }
        for l in &mut self.lanes {
            l.stream.clear();
            for a in &mut l.aliases {
                a.stream.clear();
            }
        }
        out.sort_by_key(|s| (s.position, s.policy));
        out
    }

    /// Run lanes on the calling thread only (the output is identical).
    pub fn sequential(mut self) -> Replay {
        self.parallel = false;
        self
    }

    /// Run lanes on a pool of `threads` threads (the output is identical).
    pub fn with_threads(mut self, threads: usize) -> Result<Replay, ReplayError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| ReplayError::ThreadPool {
                threads,
                message: e.to_string(),
            })?;
        self.pool = Some(pool);
        Ok(self)
    }

    /// Feed the next records (in trace order), chunk by chunk.
    pub fn feed(&mut self, records: &[Record]) {
        self.events += records.len() as u64;
        // Decided once for all lanes: the records a lane must look at. The
        // others are accesses to MSRs no handler models, which every lane
        // without a filter, [[msr]] rules or a dead vCPU counts as unmodeled.
        self.interesting.clear();
        for (i, r) in records.iter().enumerate() {
            let skippable = match &r.event {
                Event::MsrRead { index, outcome, .. } => {
                    !self.handles.handles(*index, false)
                        && !matches!(outcome, MsrOutcome::VmFailed { .. })
                        && crate::model::clock_read_rule(*index).is_none()
                }
                Event::MsrWrite { index, outcome, .. } => {
                    !self.handles.handles(*index, true)
                        && !matches!(outcome, MsrOutcome::VmFailed { .. })
                }
                _ => false,
            };
            if !skippable {
                self.interesting.push(i);
            }
        }
        let interesting = &self.interesting;
        let tail = &self.tail;
        if self.parallel && self.lanes.len() > 1 {
            let lanes = &mut self.lanes;
            let mut go = move || {
                lanes
                    .par_iter_mut()
                    .for_each(|l| l.feed(records, interesting, tail))
            };
            match &self.pool {
                Some(p) => p.install(go),
                None => go(),
            }
        } else if let [l] = &mut self.lanes[..] {
            l.feed(records, interesting, tail);
        } else {
            // One thread: record by record through every lane (each lane
            // still sees its records in trace order, so every answer is the
            // same as lane by lane): a record is read from memory once, not
            // once per lane.
            let lanes = &mut self.lanes;
            let mut next = 0;
            for &pos in interesting.iter().chain(std::iter::once(&records.len())) {
                for l in lanes.iter_mut() {
                    l.gap(records, next, pos, tail);
                }
                if pos < records.len() {
                    for l in lanes.iter_mut() {
                        l.step_at(records, pos, tail);
                    }
                }
                next = pos + 1;
            }
        }
        let keep_from = records.len().saturating_sub(CONTEXT);
        if records.len() >= CONTEXT {
            self.tail.clear();
        } else {
            let excess = (self.tail.len() + records.len()).saturating_sub(CONTEXT);
            self.tail.drain(..excess.min(self.tail.len()));
        }
        self.tail.extend_from_slice(&records[keep_from..]);
    }

    /// The first error a policy hook returned (policies in the order given):
    /// that policy's predictions since are unmodeled, so its report is not
    /// to be trusted (the CLI exits 2).
    pub fn hook_error(&self) -> Option<crate::external::HookError> {
        self.order
            .iter()
            .find_map(|&(l, _)| self.lanes[l].engine.hook_error())
    }

    pub fn finish(self) -> ReplayReport {
        ReplayReport {
            trace: self.trace,
            events: self.events,
            policies: {
                let mut per_lane: Vec<Vec<Option<PolicyReport>>> = self
                    .lanes
                    .into_iter()
                    .map(|l| l.finish().into_iter().map(Some).collect())
                    .collect();
                self.order
                    .iter()
                    .filter_map(|&(l, k)| per_lane[l][k].take())
                    .collect()
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A chunk could not be read or decoded (the same message as `verify`).
    #[error("reading {trace}: {source}")]
    ReadChunk {
        trace: String,
        #[source]
        source: kvmtrace_format::FormatError,
    },
    #[error("cannot build a thread pool of {threads} threads: {message}")]
    ThreadPool { threads: usize, message: String },
    /// A policy hook (script) failed: that policy's report would be wrong.
    #[error("{0}")]
    Hook(#[from] crate::external::HookError),
}

/// Replay a `.kvt` trace chunk by chunk (decoded once, all policies in one
/// pass). `threads`: the rayon pool size (default: rayon's global pool);
/// `salvage_ok`: stop at the first damaged chunk and report the readable
/// prefix instead of failing.
pub fn replay_reader<R: std::io::Read + std::io::Seek>(
    reader: &mut kvmtrace_format::TraceReader<R>,
    policies: Vec<Policy>,
    threads: Option<usize>,
    salvage_ok: bool,
) -> Result<ReplayReport, ReplayError> {
    replay_reader_with_progress(reader, policies, threads, salvage_ok, &mut |_, _| {})
}

/// [`replay_reader`], calling `progress(chunks_done, chunks_total)` after each
/// chunk (for a progress bar in the CLI).
pub fn replay_reader_with_progress<R: std::io::Read + std::io::Seek>(
    reader: &mut kvmtrace_format::TraceReader<R>,
    policies: Vec<Policy>,
    threads: Option<usize>,
    salvage_ok: bool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ReplayReport, ReplayError> {
    let header = reader.header().clone();
    let mut r = Replay::new(&header, policies).with_trace_name(reader.name().to_string());
    match threads {
        Some(1) => r = r.sequential(),
        Some(n) => r = r.with_threads(n)?,
        None => {}
    }
    for i in 0..reader.chunk_count() {
        match reader.read_chunk(i) {
            Ok(recs) => {
                r.feed(&recs);
                if let Some(e) = r.hook_error() {
                    return Err(e.into());
                }
                progress(i + 1, reader.chunk_count());
            }
            Err(_) if salvage_ok => break,
            Err(source) => {
                return Err(ReplayError::ReadChunk {
                    trace: reader.name().to_string(),
                    source,
                });
            }
        }
    }
    Ok(r.finish())
}

/// Replay a whole record slice against `policies`.
pub fn replay(header: &TraceHeader, records: &[Record], policies: Vec<Policy>) -> ReplayReport {
    let mut r = Replay::new(header, policies);
    r.feed(records);
    r.finish()
}

/// Per-vCPU: MSR indices whose state under this policy differs from the
/// recording, with the seq of the divergence that made them differ.
#[derive(Default, Clone)]
struct Taint {
    keys: Vec<(u32, u64)>,
}

impl Taint {
    fn get(&self, key: u32) -> Option<u64> {
        self.keys.iter().find(|(k, _)| *k == key).map(|&(_, s)| s)
    }
    fn set(&mut self, key: u32, seq: u64) {
        if self.get(key).is_none() {
            self.keys.push((key, seq));
        }
    }
    fn clear(&mut self, key: u32) {
        if !self.keys.is_empty() {
            self.keys.retain(|(k, _)| *k != key);
        }
    }
}

/// Whether `a` and `b` differ at most in their names.
fn same_but_name(a: &Policy, b: &Policy) -> bool {
    a.base == b.base
        && a.release == b.release
        && a.vendor == b.vendor
        && a.switches == b.switches
        && a.disabled_quirks == b.disabled_quirks
        && a.msr == b.msr
        && a.advertised_msrs == b.advertised_msrs
        && a.hooks == b.hooks
}

struct Lane {
    engine: Engine,
    /// Other names of this lane's policy, each with the explanations of the
    /// kept and streamed divergences under that name (the only text that names it).
    aliases: Vec<Alias>,
    /// Where this policy's outcome ended the guest (`vm_failed`, a shutdown the
    /// VMM would not resume): the seq and the behaviour of that event. Every
    /// later event of the VM is unreachable under this policy.
    ended: Option<(u64, Behaviour)>,
    taint: Vec<Taint>,
    /// The VMM's `KVM_ENABLE_CAP`s the recording's kernel accepted and this
    /// policy refuses: (cap, seq of that divergence). A later ioctl that needs
    /// the cap diverges as its consequence (`model::host`).
    caps_refused: Vec<(u32, u64)>,
    report: PolicyReport,
    matching: u64,
    sel: Selection,
    /// Selected divergences of the current batch (`Selection::stream`).
    stream: Vec<(usize, Divergence)>,
    /// Tally kernel-decided outcomes per behaviour (`fidelity`).
    kernel_tally: bool,
    /// Unmodeled outcomes by kind: (count, first seq), when the selection
    /// asks (`Selection::unmodeled_kinds`).
    unmodeled_kinds: Option<UnmodeledKinds>,
}

/// Unmodeled outcomes by kind, bounded: kinds past the bound are counted
/// together (an adversarial trace can name 2^32 MSRs).
#[derive(Default)]
struct UnmodeledKinds {
    kinds: std::collections::HashMap<String, (u64, u64)>,
    overflow: (u64, u64),
}

impl UnmodeledKinds {
    const MAX_KINDS: usize = 4096;

    fn note(&mut self, rec: &Record) {
        let what = crate::report::unmodeled_kind(&rec.event);
        let at_bound = self.kinds.len() >= Self::MAX_KINDS;
        match self.kinds.get_mut(&what) {
            Some(k) => k.0 += 1,
            None if at_bound => {
                if self.overflow.0 == 0 {
                    self.overflow.1 = rec.seq;
                }
                self.overflow.0 += 1;
            }
            None => {
                self.kinds.insert(what, (1, rec.seq));
            }
        }
    }

    /// Most frequent first; equal counts by first occurrence (deterministic).
    fn into_list(self) -> Vec<crate::report::UnmodeledKind> {
        let mut v: Vec<crate::report::UnmodeledKind> = self
            .kinds
            .into_iter()
            .map(|(what, (count, first_seq))| crate::report::UnmodeledKind {
                what,
                count,
                first_seq,
            })
            .collect();
        if self.overflow.0 > 0 {
            v.push(crate::report::UnmodeledKind {
                what: format!("(other kinds, past {} listed)", Self::MAX_KINDS),
                count: self.overflow.0,
                first_seq: self.overflow.1,
            });
        }
        v.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then(a.first_seq.cmp(&b.first_seq))
                .then(a.what.cmp(&b.what))
        });
        v
    }
}

struct Alias {
    name: String,
    kept: Vec<String>,
    stream: Vec<String>,
}

/// How one record compares under a policy.
enum Verdict {
    /// No outcome of its own (configuration, control).
    NoOutcome,
    Agree,
    Unmodeled,
    Diverge(Pending),
}

/// The MSRs whose state an access to `index` depends on (for `consequent`).
fn deps(index: u32) -> [u32; 2] {
    match index {
        // MCi_STATUS: can_set_mci_status reads HWCR (§5).
        0x400..=0x47f if (index - 0x400) % 4 == 1 => [index, 0xc001_0015],
        // MCG_EXT_CTL needs FEAT_CTL.LMCE (§5).
        0x4d0 => [index, 0x3a],
        // x2APIC MSRs depend on the APIC mode (§4).
        0x800..=0x8ff => [index, 0x1b],
        _ => [index, index],
    }
}

/// Whether a predicted MSR outcome agrees with the recorded one: a deflection
/// agrees on its reason (the answer is the VMM's). `fidelity` scores with the
/// same rule.
pub fn msr_agrees(pred: &MsrOutcome, rec: &MsrOutcome) -> bool {
    match (pred, rec) {
        (MsrOutcome::UserExit { reason: a, .. }, MsrOutcome::UserExit { reason: b, .. }) => a == b,
        _ => pred == rec,
    }
}

impl Lane {
    fn new(engine: Engine, sel: Selection) -> Lane {
        let name = engine.policy().name.clone();
        Lane {
            engine,
            aliases: Vec::new(),
            ended: None,
            taint: Vec::new(),
            caps_refused: Vec::new(),
            report: PolicyReport::empty(name),
            matching: 0,
            sel,
            stream: Vec::new(),
            kernel_tally: false,
            unmodeled_kinds: None,
        }
    }

    /// The streamed divergences of the batch under alias `a`'s name.
    fn stream_alias(&self, a: usize) -> Vec<(usize, Divergence)> {
        let Some(alias) = self.aliases.get(a) else {
            return Vec::new();
        };
        self.stream
            .iter()
            .zip(&alias.stream)
            .map(|((pos, d), e)| {
                let mut d = d.clone();
                d.explanation = e.clone();
                (*pos, d)
            })
            .collect()
    }

    fn taint(&mut self, vcpu: u32) -> Option<&mut Taint> {
        let i = vcpu as usize;
        if i >= crate::state::MAX_VCPUS {
            return None;
        }
        if self.taint.len() <= i {
            self.taint.resize(i + 1, Taint::default());
        }
        Some(&mut self.taint[i])
    }

    #[inline]
    fn tainted(&self, vcpu: u32, keys: &[u32]) -> Option<u64> {
        let t = self.taint.get(vcpu as usize)?;
        if t.keys.is_empty() {
            return None;
        }
        keys.iter().filter_map(|k| t.get(*k)).min()
    }

    /// The earlier divergence an outcome under `rule` is a consequence of:
    /// the first that tainted one of `keys`, where the rule reads state.
    /// The taint lookup (usually empty) runs first; the rule test only
    /// where it found one (both are pure, the order changes no answer).
    #[inline]
    fn consequence(&self, vcpu: u32, keys: &[u32], rule: &Rule) -> Option<u64> {
        self.tainted(vcpu, keys).filter(|_| rule.reads_state())
    }

    fn feed(&mut self, records: &[Record], interesting: &[usize], tail: &[Record]) {
        let mut next = 0;
        for &pos in interesting.iter().chain(std::iter::once(&records.len())) {
            self.gap(records, next, pos, tail);
            if pos < records.len() {
                self.step_at(records, pos, tail);
            }
            next = pos + 1;
        }
    }

    /// The records `from..to`, none of which a lane without a filter,
    /// `[[msr]]` rules, hooks on unhandled MSRs or a dead vCPU models:
    /// counted unmodeled at once, else stepped one by one.
    #[inline]
    fn gap(&mut self, records: &[Record], from: usize, to: usize, tail: &[Record]) {
        let gap = to.saturating_sub(from) as u64;
        if gap == 0 {
            return;
        }
        if self.ended.is_none() && self.engine.unknown_msrs_unmodeled() {
            self.report.outcomes += gap;
            self.report.unmodeled += gap;
            if let Some(k) = &mut self.unmodeled_kinds {
                for r in &records[from..to] {
                    k.note(r);
                }
            }
            if self.kernel_tally {
                for r in &records[from..to] {
                    if r.event.decided_by() == Some(DecidedBy::Kernel) {
                        self.report.kernel_decided[Behaviour::of_event(&r.event) as usize]
                            .unmodeled += 1;
                    }
                }
            }
        } else {
            for i in from..to {
                self.step_at(records, i, tail);
            }
        }
    }

    fn tally(&mut self, rec: &Record, f: impl FnOnce(&mut Tally)) {
        if self.kernel_tally && rec.event.decided_by() == Some(DecidedBy::Kernel) {
            f(&mut self.report.kernel_decided[Behaviour::of_event(&rec.event) as usize]);
        }
    }

    fn step_at(&mut self, records: &[Record], i: usize, tail: &[Record]) {
        let rec = &records[i];
        if let Some((_, killer)) = self.ended {
            // The guest ended under this policy: nothing after it happens.
            if rec.event.decided_by().is_some() {
                self.report.unreachable += 1;
                self.report.unreachable_by_behaviour.add(killer);
                self.tally(rec, |t| t.unreachable += 1);
            }
            return;
        }
        match self.step(rec) {
            Verdict::NoOutcome => {}
            Verdict::Agree => {
                self.report.outcomes += 1;
                self.report.modelled += 1;
                self.matching += 1;
                self.tally(rec, |t| t.agree += 1);
            }
            Verdict::Unmodeled => {
                self.report.outcomes += 1;
                self.report.unmodeled += 1;
                if let Some(k) = &mut self.unmodeled_kinds {
                    k.note(rec);
                }
                self.tally(rec, |t| t.unmodeled += 1);
            }
            Verdict::Diverge(d) => {
                self.report.outcomes += 1;
                self.report.modelled += 1;
                let direct = d.consequence_of.is_none();
                self.tally(rec, |t| {
                    if direct {
                        t.direct += 1
                    } else {
                        t.consequent += 1
                    }
                });
                let ends = d.ends_guest;
                self.diverge(d, records, i, tail);
                if ends {
                    self.end(rec);
                }
            }
        }
        if self.ended.is_none() && self.engine.dead_since(rec.vcpu) == Some(rec.seq) {
            self.end(rec);
        }
    }

    fn end(&mut self, rec: &Record) {
        let b = Behaviour::of_event(&rec.event);
        self.ended = Some((rec.seq, b));
        self.report.ended = Some(Ended {
            seq: rec.seq,
            vcpu: rec.vcpu,
            behaviour: b,
        });
    }

    /// Predict, compare and fold one record.
    fn step(&mut self, rec: &Record) -> Verdict {
        let vcpu = rec.vcpu;
        match &rec.event {
            Event::MsrRead {
                index,
                origin,
                outcome,
                ..
            } => {
                let (p, _) = self.engine.decide_msr_ref(vcpu, *index, None, *origin);
                if p.outcome.is_none()
                    && *p.rule == crate::rules::UNMODELED
                    && let Some(rule) = crate::model::clock_read_rule(*index)
                {
                    // The read succeeds; its number is the clock's.
                    return match outcome {
                        MsrOutcome::Value(_) => Verdict::Agree,
                        _ => Verdict::Diverge(Pending {
                            views: Views::Msr {
                                recorded: *outcome,
                                policy: MsrOutcome::Value(0),
                                origin: *origin,
                            },
                            rule: *rule,
                            consequence_of: None,
                            ends_guest: false,
                        }),
                    };
                }
                let Some(po) = p.outcome else {
                    match outcome {
                        MsrOutcome::VmFailed { .. } => self.engine.kill(vcpu, rec.seq),
                        MsrOutcome::Value(x) => self.engine.teach_read(vcpu, *index, *x),
                        _ => {}
                    }
                    return Verdict::Unmodeled;
                };
                if msr_agrees(&po, outcome) {
                    return Verdict::Agree;
                }
                if let MsrOutcome::VmFailed { .. } = po {
                    self.engine.kill(vcpu, rec.seq);
                }
                Verdict::Diverge(Pending {
                    views: Views::Msr {
                        recorded: *outcome,
                        policy: po,
                        origin: *origin,
                    },
                    rule: *p.rule,
                    consequence_of: self.consequence(vcpu, &deps(*index), p.rule),
                    ends_guest: false,
                })
            }
            Event::MsrWrite {
                index,
                value,
                origin,
                outcome,
                ..
            } => {
                let (p, store) = self
                    .engine
                    .decide_msr_ref(vcpu, *index, Some(*value), *origin);
                let Some(po) = p.outcome else {
                    // Unmodeled: fold what was recorded.
                    self.engine.apply(rec);
                    return Verdict::Unmodeled;
                };
                let agrees = msr_agrees(&po, outcome);
                let cause = if agrees {
                    None
                } else {
                    self.consequence(vcpu, &deps(*index), p.rule)
                };
                // The policy's state differs from the recording's when exactly
                // one side stored the write.
                let stored_p = matches!(po, MsrOutcome::Ok);
                let stored_r = matches!(outcome, MsrOutcome::Ok);
                let store_changes_state = store != Store::None;
                if let Some(t) = self.taint(vcpu) {
                    if stored_p != stored_r && (store_changes_state || stored_r) {
                        t.set(*index, cause.unwrap_or(rec.seq));
                    } else if stored_p && stored_r && !matches!(*index, 0x1a0 | 0xc001_0015) {
                        t.clear(*index);
                    }
                }
                self.engine.apply_msr_write(rec.seq, vcpu, &po, store);
                if agrees {
                    return Verdict::Agree;
                }
                Verdict::Diverge(Pending {
                    views: Views::Msr {
                        recorded: *outcome,
                        policy: po,
                        origin: *origin,
                    },
                    rule: *p.rule,
                    consequence_of: cause,
                    ends_guest: false,
                })
            }
            _ => self.step_other(rec),
        }
    }

    /// [`Lane::step`] for every record but MSR accesses, out of line: the
    /// MSR path (nearly every record) keeps a small frame.
    #[inline(never)]
    fn step_other(&mut self, rec: &Record) -> Verdict {
        let vcpu = rec.vcpu;
        match &rec.event {
            Event::Monitor { outcome, .. } | Event::Mwait { outcome, .. } => {
                let p = if matches!(rec.event, Event::Monitor { .. }) {
                    self.engine.monitor(vcpu)
                } else {
                    self.engine.mwait(vcpu)
                };
                let Some(po) = p.outcome else {
                    return Verdict::Unmodeled;
                };
                if po == *outcome {
                    return Verdict::Agree;
                }
                Verdict::Diverge(Pending {
                    views: Views::Built {
                        recorded: OutcomeView::mwait(*outcome),
                        policy: OutcomeView::mwait(po),
                    },
                    rule: p.rule,
                    consequence_of: self.consequence(vcpu, &[0x1a0], &p.rule),
                    ends_guest: false,
                })
            }
            Event::Shutdown { then, .. } => {
                let p = self.engine.shutdown(vcpu);
                let Some(po) = p.outcome else {
                    self.engine.apply(rec);
                    return Verdict::Unmodeled;
                };
                // "No change in the kernel" agrees with the VMM stopping too.
                let agrees =
                    po == *then || (po == AfterShutdown::Resume && *then == AfterShutdown::Stop);
                self.engine
                    .apply_shutdown(vcpu, if agrees { *then } else { po });
                if agrees {
                    return Verdict::Agree;
                }
                // The kernel INIT/RESET the vCPU when recorded; under this
                // policy the VMM gets KVM_EXIT_SHUTDOWN instead, which the
                // recorded VMM never answered: the guest ends here.
                let ends_guest = matches!(po, AfterShutdown::Stop | AfterShutdown::Resume)
                    && matches!(then, AfterShutdown::Init | AfterShutdown::Reset);
                Verdict::Diverge(Pending {
                    views: Views::Built {
                        recorded: OutcomeView::Then { then: *then },
                        policy: OutcomeView::Then { then: po },
                    },
                    rule: p.rule,
                    consequence_of: None,
                    ends_guest,
                })
            }
            Event::Reset { state, .. } => {
                let p = self.engine.reset_prediction(vcpu);
                let d = self.state_step(rec, &p, state, false);
                let merged = merge_state(&p, state);
                self.engine.apply_reset(vcpu, &merged);
                d
            }
            Event::Init {
                source,
                before,
                after,
                ..
            } => {
                let p = self
                    .engine
                    .init_prediction_seen(vcpu, *source, before, after);
                let d = self.state_step(rec, &p, after, true);
                let merged = merge_state(&p, after);
                self.engine.apply_init(vcpu, &merged);
                d
            }
            Event::VmmState { set, result } => {
                // The VMM's state ioctl: its result under this policy
                // (`model::host`), folded as this policy's kernel would.
                let (po, rule) = self.engine.vmm_state_result(vcpu, set);
                let Some(po) = po else {
                    self.engine.apply_config(rec);
                    return Verdict::Unmodeled;
                };
                self.engine.apply_vmm_state(vcpu, set, po);
                if (po == 0) == (*result == 0) && (po == 0 || po == *result) {
                    return Verdict::Agree;
                }
                let field = format!("{} result", set.ioctl());
                let view = |r: i32| OutcomeView::State {
                    field: field.clone(),
                    value: kvmtrace_format::ioctl_result(r),
                };
                // A flag whose capability this policy refused to enable: the
                // VMM would not have set it (QEMU sets TRIPLE_FAULT/PAYLOAD
                // only after their KVM_ENABLE_CAP succeeded).
                let consequence_of = match &**set {
                    kvmtrace_format::VmmSet::VcpuEvents(e) => {
                        let needs = [
                            (0x20, kvmtrace_format::KVM_CAP_X86_TRIPLE_FAULT_EVENT),
                            (0x10, kvmtrace_format::KVM_CAP_EXCEPTION_PAYLOAD),
                        ];
                        needs
                            .iter()
                            .filter(|(flag, _)| e.flags & flag != 0)
                            .filter_map(|(_, cap)| self.caps_refused.iter().find(|(c, _)| c == cap))
                            .map(|&(_, seq)| seq)
                            .min()
                    }
                    _ => None,
                };
                Verdict::Diverge(Pending {
                    views: Views::Built {
                        recorded: view(*result),
                        policy: view(po),
                    },
                    rule: *rule,
                    consequence_of,
                    ends_guest: false,
                })
            }
            Event::CapEnabled {
                cap,
                args,
                vcpu_scope,
                result,
            } => {
                // The VMM's KVM_ENABLE_CAP: its result under this policy
                // (`model::host`), folded as this policy's kernel answered.
                let (po, rule) = self.engine.cap_enable_result(*cap, args, *vcpu_scope);
                let Some(po) = po else {
                    self.engine.apply_config(rec);
                    return Verdict::Unmodeled;
                };
                self.engine.apply_cap_enabled(*cap, args, *vcpu_scope, po);
                if (po == 0) == (*result == 0) && (po == 0 || po == *result) {
                    return Verdict::Agree;
                }
                if po != 0 && *result == 0 && !self.caps_refused.iter().any(|(c, _)| c == cap) {
                    self.caps_refused.push((*cap, rec.seq));
                }
                let field = format!("KVM_ENABLE_CAP({}) result", kvmtrace_format::cap_name(*cap));
                let view = |r: i32| OutcomeView::State {
                    field: field.clone(),
                    value: kvmtrace_format::ioctl_result(r),
                };
                Verdict::Diverge(Pending {
                    views: Views::Built {
                        recorded: view(*result),
                        policy: view(po),
                    },
                    rule: *rule,
                    consequence_of: None,
                    ends_guest: false,
                })
            }
            _ => {
                self.engine.apply_config(rec);
                Verdict::NoOutcome
            }
        }
    }

    fn state_step(
        &mut self,
        r: &Record,
        p: &StatePrediction,
        rec: &ArchState,
        init: bool,
    ) -> Verdict {
        match compare_state(p, rec) {
            None => Verdict::Agree,
            Some((field, pv, rv)) => {
                // State this policy now holds differently: MSRs and APIC base.
                let mut keys: Vec<u32> = p
                    .state
                    .msrs
                    .iter()
                    .filter(|&&(i, v)| rec.msr(i).is_some_and(|x| x != v))
                    .map(|&(i, _)| i)
                    .collect();
                if p.state.apic_base != rec.apic_base {
                    keys.push(0x1b);
                }
                if let Some(t) = self.taint(r.vcpu) {
                    for k in keys {
                        t.set(k, r.seq);
                    }
                }
                let rule = self.engine.state_rule(&field, init, p.rule);
                Verdict::Diverge(Pending {
                    views: Views::Built {
                        recorded: OutcomeView::State {
                            field: field.clone(),
                            value: rv,
                        },
                        policy: OutcomeView::State { field, value: pv },
                    },
                    rule,
                    consequence_of: None,
                    ends_guest: false,
                })
            }
        }
    }

    /// Count a divergence; build it (context, explanation) only where the
    /// selection keeps or streams it. The counting stays inline and the
    /// divergence is not moved on the hot path (most are only counted).
    #[inline]
    fn diverge(&mut self, d: Pending, records: &[Record], i: usize, tail: &[Record]) {
        let rec = &records[i];
        let r = &mut self.report;
        r.divergences += 1;
        let behaviour = Behaviour::of_event(&rec.event);
        r.by_behaviour.add(behaviour);
        let direct = d.consequence_of.is_none();
        if direct {
            r.direct += 1;
        } else {
            r.consequent += 1;
        }
        if !self.sel.may_match(behaviour, rec.vcpu, direct) {
            return;
        }
        r.selected += 1;
        let keep = r.kept.len() < self.sel.keep;
        if !keep && !self.sel.stream {
            return;
        }
        self.build_divergence(d, records, i, tail, behaviour, direct, keep);
    }

    #[cold]
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn build_divergence(
        &mut self,
        d: Pending,
        records: &[Record],
        i: usize,
        tail: &[Record],
        behaviour: Behaviour,
        direct: bool,
        keep: bool,
    ) {
        let rec = &records[i];
        let r = &mut self.report;
        let mut context = Vec::new();
        let start = i.saturating_sub(CONTEXT);
        let from_tail = CONTEXT - (i - start);
        for c in tail[tail.len().saturating_sub(from_tail)..]
            .iter()
            .chain(&records[start..i])
        {
            context.push((c.seq, c.vcpu, describe_event(&c.event)));
        }
        let d = d.shown();
        let explanation = explain(&r.name, &d, rec);
        let alias_expl: Vec<String> = self
            .aliases
            .iter()
            .map(|a| explain(&a.name, &d, rec))
            .collect();
        let div = Divergence {
            seq: rec.seq,
            vcpu: rec.vcpu,
            time_ns: rec.time_ns,
            event: describe_event(&rec.event),
            recorded: d.recorded,
            decided_by: rec.event.decided_by(),
            policy: d.policy,
            rule: d.rule.into(),
            behaviour,
            direct,
            consequence_of: d.consequence_of,
            explanation,
            context,
        };
        if r.first.is_none() {
            r.first = Some(div.clone());
        }
        if self.sel.stream {
            for (a, e) in self.aliases.iter_mut().zip(&alias_expl) {
                a.stream.push(e.clone());
            }
            if keep {
                r.kept.push(div.clone());
            }
            self.stream.push((i, div));
        } else {
            r.kept.push(div);
        }
        if keep {
            for (a, e) in self.aliases.iter_mut().zip(alias_expl) {
                a.kept.push(e);
            }
        }
    }

    /// The report of this lane's policy, then one per alias.
    fn finish(mut self) -> Vec<PolicyReport> {
        if let Some(k) = self.unmodeled_kinds.take() {
            self.report.unmodeled_kinds = k.into_list();
        }
        let r = &mut self.report;
        r.agreement = if r.modelled == 0 {
            0.0
        } else {
            self.matching as f64 / r.modelled as f64
        };
        r.coverage = if r.outcomes == 0 {
            0.0
        } else {
            r.modelled as f64 / r.outcomes as f64
        };
        let mut out = Vec::with_capacity(1 + self.aliases.len());
        for a in std::mem::take(&mut self.aliases) {
            let mut r = self.report.clone();
            r.name = a.name;
            for (d, e) in r.kept.iter_mut().zip(a.kept) {
                d.explanation = e;
            }
            if let Some(f) = &mut r.first {
                f.explanation = r
                    .kept
                    .first()
                    .map(|k| k.explanation.clone())
                    .unwrap_or_default();
            }
            out.push(r);
        }
        out.insert(0, self.report);
        out
    }
}

struct Pending {
    views: Views,
    rule: Rule,
    consequence_of: Option<u64>,
    /// This outcome ends the guest under the policy.
    ends_guest: bool,
}

/// The two outcomes of a divergence: an MSR divergence keeps the outcomes
/// and builds their report views only where a report shows it (most are
/// only counted).
enum Views {
    Msr {
        recorded: MsrOutcome,
        policy: MsrOutcome,
        origin: Origin,
    },
    Built {
        recorded: OutcomeView,
        policy: OutcomeView,
    },
}

/// A divergence a report shows: its outcomes as the report gives them.
struct Shown {
    recorded: OutcomeView,
    policy: OutcomeView,
    rule: Rule,
    consequence_of: Option<u64>,
}

impl Pending {
    fn shown(self) -> Shown {
        let (recorded, policy) = match self.views {
            Views::Msr {
                recorded,
                policy,
                origin,
            } => (
                OutcomeView::msr_of(&recorded, true, origin),
                OutcomeView::msr_of(&policy, false, origin),
            ),
            Views::Built { recorded, policy } => (recorded, policy),
        };
        Shown {
            recorded,
            policy,
            rule: self.rule,
            consequence_of: self.consequence_of,
        }
    }
}

/// The policy's state where it knows it, the recording's elsewhere.
fn merge_state(p: &StatePrediction, rec: &ArchState) -> ArchState {
    let mut s = p.state.clone();
    if !p.attrs_known {
        for (d, r) in [
            (&mut s.cs, &rec.cs),
            (&mut s.ds, &rec.ds),
            (&mut s.es, &rec.es),
            (&mut s.fs, &rec.fs),
            (&mut s.gs, &rec.gs),
            (&mut s.ss, &rec.ss),
            (&mut s.ldtr, &rec.ldtr),
            (&mut s.tr, &rec.tr),
        ] {
            d.attr = r.attr;
        }
    }
    let mut msrs = rec.msrs.clone();
    for &(i, v) in &p.state.msrs {
        match msrs.binary_search_by_key(&i, |&(k, _)| k) {
            Ok(j) => msrs[j].1 = v,
            Err(j) => msrs.insert(j, (i, v)),
        }
    }
    s.msrs = msrs;
    s
}

/// One sentence: what the policy does, what was recorded, which rule decided.
fn explain(policy: &str, d: &Shown, rec: &Record) -> String {
    let who = match rec.event.decided_by() {
        Some(kvmtrace_format::DecidedBy::Kernel) => "the kernel decided",
        Some(kvmtrace_format::DecidedBy::Vmm) => "the recording's live policy decided",
        None => "recorded",
    };
    let cause = match d.consequence_of {
        Some(s) => format!(
            "; a consequence of the divergence at #{s}, after which {policy}'s state differs from the recording's"
        ),
        None => String::new(),
    };
    let origin = match &rec.event {
        Event::MsrRead {
            origin: Origin::Host,
            ..
        }
        | Event::MsrWrite {
            origin: Origin::Host,
            ..
        } => " (host access: never filtered nor deflected)",
        _ => "",
    };
    // An exit to user space on one side only: the VMM sees the access under
    // one policy and not under the other, whatever the guest then sees.
    let vmm_visible = match (&d.recorded, &d.policy) {
        (OutcomeView::UserExit { .. }, OutcomeView::UserExit { .. }) => "",
        (OutcomeView::UserExit { .. }, _) => {
            " (VMM-visible: the access reached the VMM when recorded; under this policy it never leaves the kernel)"
        }
        (_, OutcomeView::UserExit { .. }) => {
            " (VMM-visible: under this policy the access exits to the VMM; when recorded it never did)"
        }
        _ => "",
    };
    format!(
        "{policy} gives {} where {who} {}: {}{origin}{vmm_visible}{cause}",
        d.policy, d.recorded, d.rule
    )
}
