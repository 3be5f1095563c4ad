//! The record encoding inside a chunk (FORMAT.md, "Records"), and chunk frames.
//!
//! Each chunk is decodable on its own: the delta state (previous sequence number,
//! time, vCPU, and the per-(vCPU, MSR) value predictor) starts fresh in every
//! chunk, so chunks decode in parallel and a salvage keeps any complete chunk.
//!
//! MSR accesses, the bulk of every trace, are encoded by hand: sequence numbers
//! are implicit (+1), times are deltas, and MSR values are residuals against a
//! prediction from the last value and last delta of the same (vCPU, index),
//! scaled by elapsed time (the TSC advances with time, so a TSC read costs only
//! its jitter). Every other event is a bincode body.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::event::{
    DecidedBy, Event, EventKind, MsrExitReason, MsrOutcome, Origin, Record, UserAnswer,
};
use crate::wire::{
    self, CHUNK_FRAME_LEN, CHUNK_TARGET_BYTES, ChunkFrame, Cursor, MAX_CHUNK_BYTES,
    MAX_CHUNK_RECORDS, MAX_EVENT_BYTES, PayloadError, put_varint, unzigzag, zigzag,
};

/// Number of event kinds with a code.
pub const KIND_COUNT: usize = KINDS.len();

/// The kind of each record-tag code, in code order (FORMAT.md, "Kind codes"):
/// the inverse of [`kind_code`], built from it so the codes are written once.
/// Codes are part of the format: new kinds are only ever appended.
pub const KINDS: [EventKind; EventKind::ALL.len()] = {
    let mut out = [EventKind::End; EventKind::ALL.len()];
    let mut seen = [false; EventKind::ALL.len()];
    let mut i = 0;
    while i < EventKind::ALL.len() {
        let k = EventKind::ALL[i];
        let code = kind_code(k) as usize;
        assert!(!seen[code], "two kinds share a record-tag code");
        seen[code] = true;
        out[code] = k;
        i += 1;
    }
    out
};

/// The stable code of a kind in the record tag.
#[inline]
pub const fn kind_code(k: EventKind) -> u8 {
    match k {
        EventKind::MsrRead => 0,
        EventKind::MsrWrite => 1,
        EventKind::Monitor => 2,
        EventKind::Mwait => 3,
        EventKind::Shutdown => 4,
        EventKind::Reset => 5,
        EventKind::Init => 6,
        EventKind::Sipi => 7,
        EventKind::Ipi => 8,
        EventKind::Cpuid => 9,
        EventKind::QuirksDisabled => 10,
        EventKind::MsrFilter => 11,
        EventKind::UserSpaceMsr => 12,
        EventKind::SetupMce => 13,
        EventKind::Io => 14,
        EventKind::Exception => 15,
        EventKind::Halt => 16,
        EventKind::RawExit => 17,
        EventKind::Lost => 18,
        EventKind::End => 19,
        EventKind::KernelReset => 20,
        EventKind::KernelInit => 21,
        EventKind::VcpuThread => 22,
        EventKind::VmmState => 23,
        EventKind::CapEnabled => 24,
    }
}

// Record tag bits.
const TAG_KIND: u8 = 0x1f;
const TAG_SEQ: u8 = 0x20;
const TAG_VCPU: u8 = 0x40;
const TAG_RESERVED: u8 = 0x80;

// MSR attribute byte.
const ATTR_HOST: u8 = 0x01;
const ATTR_VMM: u8 = 0x02;
const ATTR_CAPTURE_SHIFT: u8 = 2;
const ATTR_OUTCOME_SHIFT: u8 = 4;
const ATTR_RESERVED: u8 = 0x80;

const OUT_VALUE: u8 = 0;
const OUT_OK: u8 = 1;
const OUT_GP: u8 = 2;
const OUT_USER: u8 = 3;
const OUT_VMFAILED: u8 = 4;

/// Statistics of a run of records: what the footer summarises.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChunkStats {
    pub events: u64,
    pub by_kind: [u64; KIND_COUNT],
    /// Distinct vCPUs, sorted.
    pub vcpus: Vec<u32>,
    pub last_seq: u64,
    pub last_time_ns: u64,
}

impl ChunkStats {
    pub fn add(&mut self, r: &Record) {
        self.events += 1;
        self.by_kind[kind_code(r.event.kind()) as usize] += 1;
        self.add_vcpu(r.vcpu);
        self.last_seq = r.seq;
        self.last_time_ns = r.time_ns;
    }

    fn add_vcpu(&mut self, v: u32) {
        if let Err(i) = self.vcpus.binary_search(&v) {
            self.vcpus.insert(i, v);
        }
    }

    pub fn merge(&mut self, o: &ChunkStats) {
        if o.events == 0 {
            return;
        }
        self.events += o.events;
        for (a, b) in self.by_kind.iter_mut().zip(o.by_kind.iter()) {
            *a += b;
        }
        for &v in &o.vcpus {
            self.add_vcpu(v);
        }
        self.last_seq = o.last_seq;
        self.last_time_ns = o.last_time_ns;
    }
}

/// A finished chunk: the frame bytes ready to append to a trace, and what the
/// footer needs to know about it.
#[derive(Clone, Debug)]
pub struct EncodedChunk {
    /// The whole frame: frame header then compressed payload.
    pub bytes: Vec<u8>,
    pub uncompressed_len: u32,
    pub count: u32,
    pub first_seq: u64,
    pub first_time_ns: u64,
    pub stats: ChunkStats,
}

// ---- the MSR value predictor ----

#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

#[derive(Clone, Copy)]
struct MsrState {
    last: u64,
    time: u64,
    /// Where the current linear run started: the rate is
    /// (last - anchor_value) / (time - anchor_time).
    anchor_value: u64,
    anchor_time: u64,
}

/// Predicts an MSR's next value as its last value plus the rate it has advanced
/// at since the value last went down, times the time elapsed; keyed by
/// (vCPU, index). With two samples this is "the last delta, scaled by time";
/// a TSC read then costs only its jitter. FORMAT.md, "MSR value prediction".
#[derive(Default)]
struct Predictor {
    keys: HashMap<u64, usize, BuildHasherDefault<KeyHasher>>,
    states: Vec<MsrState>,
    last_key: u64,
    last_slot: usize,
}

/// `span_v * dt / span_t`, saturating, and `0` without a usable rate.
#[inline(always)]
fn extrapolate(span_v: i64, span_t: i64, dt: i64) -> i64 {
    if span_v == 0 || span_t <= 0 || dt <= 0 {
        return 0;
    }
    match span_v.checked_mul(dt) {
        Some(p) => p / span_t,
        None => {
            let q = i128::from(span_v) * i128::from(dt) / i128::from(span_t);
            q.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
        }
    }
}

impl Predictor {
    #[inline(always)]
    fn slot(&mut self, key: u64) -> Option<usize> {
        if !self.states.is_empty() && self.last_key == key {
            return Some(self.last_slot);
        }
        let s = *self.keys.get(&key)?;
        self.last_key = key;
        self.last_slot = s;
        Some(s)
    }

    /// The predicted value and the slot to update.
    #[inline(always)]
    fn predict(&mut self, key: u64, time: u64) -> (u64, Option<usize>) {
        match self.slot(key) {
            None => (0, None),
            Some(s) => {
                let st = &self.states[s];
                let span_v = st.last.wrapping_sub(st.anchor_value) as i64;
                let span_t = st.time.wrapping_sub(st.anchor_time) as i64;
                let dt = time.wrapping_sub(st.time) as i64;
                (
                    st.last.wrapping_add(extrapolate(span_v, span_t, dt) as u64),
                    Some(s),
                )
            }
        }
    }

    #[inline(always)]
    fn update(&mut self, key: u64, slot: Option<usize>, time: u64, value: u64) {
        match slot {
            Some(s) => {
                let st = &mut self.states[s];
                // A value that went down, or time that went back, starts a new run.
                if (value.wrapping_sub(st.last) as i64) < 0
                    || (time.wrapping_sub(st.time) as i64) < 0
                {
                    st.anchor_value = value;
                    st.anchor_time = time;
                }
                st.last = value;
                st.time = time;
            }
            None => {
                let s = self.states.len();
                self.states.push(MsrState {
                    last: value,
                    time,
                    anchor_value: value,
                    anchor_time: time,
                });
                self.keys.insert(key, s);
                self.last_key = key;
                self.last_slot = s;
            }
        }
    }
}

#[inline(always)]
fn msr_key(vcpu: u32, index: u32) -> u64 {
    (u64::from(vcpu) << 32) | u64::from(index)
}

// ---- streams ----

/// The records of a chunk are split into byte streams, one per field family,
/// each compressed on its own, so that each gets its own entropy coding: the
/// constant tag and MSR bytes of a loop vanish, and the random low bytes of
/// time and value deltas do not spoil the coding of their nearly constant high
/// parts (FORMAT.md, "Chunk payload").
const S_TAG: usize = 0;
const S_SEQ: usize = 1;
const S_VCPU: usize = 2;
/// Low bytes of time deltas; their high parts follow in `S_TIME + 1`.
const S_TIME: usize = 3;
const S_MSR: usize = 5;
/// Low bytes of value residuals; their high parts follow in `S_VALUE + 1`.
const S_VALUE: usize = 6;
const S_BODY: usize = 8;
/// Number of streams.
pub const STREAMS: usize = 9;
/// Streams shorter than this are stored, not compressed.
const MIN_COMPRESS: usize = 64;
const MODE_STORED: u8 = 0;
const MODE_ZSTD: u8 = 1;

/// Puts `v` as its low byte in stream `lo` and the rest as a varint in `lo + 1`.
#[inline(always)]
fn put_split(s: &mut [Vec<u8>; STREAMS], lo: usize, v: u64) {
    s[lo].push(v as u8);
    put_varint(&mut s[lo + 1], v >> 8);
}

/// Reads a value written by [`put_split`].
#[inline(always)]
fn get_split(s: &mut [Cursor<'_>; STREAMS], lo: usize) -> Result<u64, (usize, PayloadError)> {
    let low = s[lo].u8().map_err(|e| (lo, e))?;
    let high = s[lo + 1].varint().map_err(|e| (lo + 1, e))?;
    if high >> 56 != 0 {
        return Err((lo + 1, s[lo + 1].err("split value overflows 64 bits")));
    }
    Ok((high << 8) | u64::from(low))
}

// ---- encoding ----

/// Encodes records into chunk frames. The recorder's writer thread owns one (so
/// nothing of this runs on vCPU threads); [`crate::TraceWriter`] uses one too.
pub struct ChunkEncoder {
    s: [Vec<u8>; STREAMS],
    len: usize,
    count: u32,
    first_seq: u64,
    first_time: u64,
    prev_seq: u64,
    prev_time: u64,
    prev_vcpu: u32,
    pred: Predictor,
    stats: ChunkStats,
    compressor: Option<zstd::bulk::Compressor<'static>>,
    payload: Vec<u8>,
    scratch: Vec<u8>,
}

impl Default for ChunkEncoder {
    fn default() -> Self {
        Self::new()
    }
}

/// The zstd level of chunk payloads.
pub const ZSTD_LEVEL: i32 = 3;

impl ChunkEncoder {
    pub fn new() -> Self {
        ChunkEncoder {
            s: Default::default(),
            len: 0,
            count: 0,
            first_seq: 0,
            first_time: 0,
            prev_seq: 0,
            prev_time: 0,
            prev_vcpu: 0,
            pred: Predictor::default(),
            stats: ChunkStats::default(),
            compressor: None,
            payload: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Records in the open chunk.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Encoded (uncompressed) bytes in the open chunk.
    pub fn encoded_len(&self) -> usize {
        self.len
    }

    /// True once the open chunk holds about 64 KiB: time to [`Self::finish_chunk`].
    pub fn is_full(&self) -> bool {
        self.len >= CHUNK_TARGET_BYTES
    }

    /// Appends a record to the open chunk. Fails (leaving the chunk as it was)
    /// only if the record's body exceeds the 1 MiB event limit.
    pub fn push(&mut self, r: &Record) -> Result<(), String> {
        if self.count == 0 {
            self.first_seq = r.seq;
            self.first_time = r.time_ns;
            self.prev_seq = r.seq.wrapping_sub(1);
            self.prev_time = r.time_ns;
            self.prev_vcpu = 0;
        }
        let marks: [usize; STREAMS] = std::array::from_fn(|i| self.s[i].len());
        let undo = |s: &mut [Vec<u8>; STREAMS]| {
            for (v, m) in s.iter_mut().zip(marks) {
                v.truncate(m);
            }
        };
        // A body is encoded before any predictor update, so undo is complete.
        if let Err(e) = self.encode(r) {
            undo(&mut self.s);
            return Err(e);
        }
        let added: usize = self.s.iter().zip(marks).map(|(v, m)| v.len() - m).sum();
        if added > MAX_EVENT_BYTES {
            undo(&mut self.s);
            return Err(format!(
                "a {} record encodes to {added} bytes, over the {MAX_EVENT_BYTES}-byte limit",
                r.event.kind().name(),
            ));
        }
        self.len += added;
        self.count += 1;
        self.prev_seq = r.seq;
        self.prev_time = r.time_ns;
        self.prev_vcpu = r.vcpu;
        self.stats.add(r);
        Ok(())
    }

    fn encode(&mut self, r: &Record) -> Result<(), String> {
        // Bodies first: the only fallible part, before any state changes.
        if !matches!(r.event, Event::MsrRead { .. } | Event::MsrWrite { .. }) {
            bincode::serde::encode_into_std_write(
                &r.event,
                &mut self.s[S_BODY],
                wire::bincode_config::<MAX_EVENT_BYTES>(),
            )
            .map_err(|e| e.to_string())?;
        }
        let mut tag = kind_code(r.event.kind());
        let seq_implicit = r.seq == self.prev_seq.wrapping_add(1);
        if !seq_implicit {
            tag |= TAG_SEQ;
            let d = r.seq.wrapping_sub(self.prev_seq.wrapping_add(1)) as i64;
            put_varint(&mut self.s[S_SEQ], zigzag(d));
        }
        if r.vcpu != self.prev_vcpu {
            tag |= TAG_VCPU;
            put_varint(&mut self.s[S_VCPU], u64::from(r.vcpu));
        }
        self.s[S_TAG].push(tag);
        put_split(
            &mut self.s,
            S_TIME,
            zigzag(r.time_ns.wrapping_sub(self.prev_time) as i64),
        );
        match &r.event {
            Event::MsrRead {
                index,
                origin,
                outcome,
                decided_by,
                capture,
            } => {
                self.msr_common(*index, *origin, *outcome, *decided_by, *capture);
                self.outcome(r.vcpu, *index, r.time_ns, outcome);
            }
            Event::MsrWrite {
                index,
                value,
                origin,
                outcome,
                decided_by,
                capture,
            } => {
                self.msr_common(*index, *origin, *outcome, *decided_by, *capture);
                self.value(r.vcpu, *index, r.time_ns, *value);
                self.outcome(r.vcpu, *index, r.time_ns, outcome);
            }
            _ => {}
        }
        Ok(())
    }

    fn msr_common(
        &mut self,
        index: u32,
        origin: Origin,
        outcome: MsrOutcome,
        decided_by: DecidedBy,
        capture: Option<MsrExitReason>,
    ) {
        let mut attr = 0u8;
        if origin == Origin::Host {
            attr |= ATTR_HOST;
        }
        if decided_by == DecidedBy::Vmm {
            attr |= ATTR_VMM;
        }
        let cap = match capture {
            None => 0,
            Some(MsrExitReason::Inval) => 1,
            Some(MsrExitReason::Unknown) => 2,
            Some(MsrExitReason::Filter) => 3,
        };
        attr |= cap << ATTR_CAPTURE_SHIFT;
        let out = match outcome {
            MsrOutcome::Value(_) => OUT_VALUE,
            MsrOutcome::Ok => OUT_OK,
            MsrOutcome::InjectGp => OUT_GP,
            MsrOutcome::UserExit { .. } => OUT_USER,
            MsrOutcome::VmFailed { .. } => OUT_VMFAILED,
        };
        attr |= out << ATTR_OUTCOME_SHIFT;
        self.s[S_MSR].push(attr);
        put_varint(&mut self.s[S_MSR], u64::from(index));
    }

    #[inline]
    fn value(&mut self, vcpu: u32, index: u32, time: u64, v: u64) {
        let key = msr_key(vcpu, index);
        let (p, slot) = self.pred.predict(key, time);
        put_split(&mut self.s, S_VALUE, zigzag(v.wrapping_sub(p) as i64));
        self.pred.update(key, slot, time, v);
    }

    fn outcome(&mut self, vcpu: u32, index: u32, time: u64, o: &MsrOutcome) {
        match *o {
            MsrOutcome::Value(v) => self.value(vcpu, index, time, v),
            MsrOutcome::Ok | MsrOutcome::InjectGp => {}
            MsrOutcome::UserExit { reason, answer } => {
                let r = match reason {
                    MsrExitReason::Inval => 0u8,
                    MsrExitReason::Unknown => 1,
                    MsrExitReason::Filter => 2,
                };
                let a = match answer {
                    UserAnswer::Value(_) => 0u8,
                    UserAnswer::Ok => 1,
                    UserAnswer::Gp => 2,
                };
                self.s[S_MSR].push(r | (a << 2));
                if let UserAnswer::Value(v) = answer {
                    self.value(vcpu, index, time, v);
                }
            }
            MsrOutcome::VmFailed { errno } => {
                put_varint(&mut self.s[S_MSR], zigzag(i64::from(errno)));
            }
        }
    }

    /// Compresses and frames the open chunk, and starts a new one. `None` if the
    /// chunk is empty (empty chunks are never written).
    pub fn finish_chunk(&mut self) -> Result<Option<EncodedChunk>, String> {
        if self.count == 0 {
            return Ok(None);
        }
        let comp = match &mut self.compressor {
            Some(c) => c,
            None => self
                .compressor
                .insert(zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(|e| e.to_string())?),
        };
        // The stream table, then the streams, stored or compressed.
        self.payload.clear();
        self.scratch.clear();
        for v in &self.s {
            let z = if v.len() >= MIN_COMPRESS {
                Some(comp.compress(v).map_err(|e| e.to_string())?)
            } else {
                None
            };
            match z {
                Some(z) if z.len() < v.len() => {
                    self.payload.push(MODE_ZSTD);
                    put_varint(&mut self.payload, v.len() as u64);
                    put_varint(&mut self.payload, z.len() as u64);
                    self.scratch.extend_from_slice(&z);
                }
                _ => {
                    self.payload.push(MODE_STORED);
                    put_varint(&mut self.payload, v.len() as u64);
                    self.scratch.extend_from_slice(v);
                }
            }
        }
        self.payload.extend_from_slice(&self.scratch);
        let ulen = self.len as u32;
        let frame = frame_chunk(
            &self.payload,
            ulen,
            self.count,
            self.first_seq,
            self.first_time,
        );
        let stats = std::mem::take(&mut self.stats);
        let out = EncodedChunk {
            bytes: frame,
            uncompressed_len: ulen,
            count: self.count,
            first_seq: self.first_seq,
            first_time_ns: self.first_time,
            stats,
        };
        for v in &mut self.s {
            v.clear();
        }
        self.len = 0;
        self.count = 0;
        self.pred = Predictor::default();
        Ok(Some(out))
    }
}

fn frame_chunk(
    compressed: &[u8],
    uncompressed_len: u32,
    count: u32,
    first_seq: u64,
    first_time_ns: u64,
) -> Vec<u8> {
    let mut f = ChunkFrame {
        compressed_len: compressed.len() as u32,
        uncompressed_len,
        count,
        first_seq,
        first_time_ns,
        crc: 0,
    };
    let hdr = f.to_bytes();
    f.crc = ChunkFrame::compute_crc(&hdr, compressed);
    let mut out = Vec::with_capacity(CHUNK_FRAME_LEN + compressed.len());
    out.extend_from_slice(&f.to_bytes());
    out.extend_from_slice(compressed);
    out
}

/// Encodes a batch of records into one finished chunk frame (for a writer
/// thread that batches itself). Batches of more than ~64 KiB of encoded events
/// are allowed up to the chunk limits (2 MiB, 65,536 records) that every
/// reader enforces.
pub fn encode_chunk(records: &[Record]) -> Result<Option<EncodedChunk>, String> {
    if records.len() > MAX_CHUNK_RECORDS as usize {
        return Err(format!(
            "a batch of {} records exceeds the {MAX_CHUNK_RECORDS}-record chunk limit",
            records.len()
        ));
    }
    let mut e = ChunkEncoder::new();
    for r in records {
        e.push(r)?;
        // The stream table takes at most 9 x 21 bytes beside the streams.
        if e.encoded_len() as u64 > MAX_CHUNK_BYTES - 256 {
            return Err(format!(
                "batch exceeds the {} chunk limit",
                crate::error::human_bytes(MAX_CHUNK_BYTES)
            ));
        }
    }
    e.finish_chunk()
}

// ---- decoding ----

/// Reads the stream table of a stored chunk payload and decompresses each zstd
/// stream i into `bufs[i]` (allocating only what it really decompresses to, at
/// most its table length); returns each stream's (in `bufs`?, start, len).
fn unpack_streams(
    stored: &[u8],
    uncompressed_len: usize,
    bufs: &mut [Vec<u8>; STREAMS],
) -> Result<[(bool, usize, usize); STREAMS], PayloadError> {
    let mut c = Cursor::new(stored);
    let table_err = |c: &Cursor<'_>, what: String| PayloadError {
        stream: None,
        pos: c.pos,
        what,
        decompress: false,
    };
    let mut table = [(MODE_STORED, 0usize, 0usize); STREAMS];
    let mut total = 0usize;
    for t in &mut table {
        let mode = c.u8()?;
        let raw = c.varint()?;
        let raw = usize::try_from(raw)
            .ok()
            .filter(|&r| r <= uncompressed_len - total)
            .ok_or_else(|| table_err(&c, format!("stream length {raw} exceeds the chunk's uncompressed length {uncompressed_len}")))?;
        total += raw;
        let stored_len = match mode {
            MODE_STORED => raw,
            MODE_ZSTD => {
                let z = c.varint()?;
                usize::try_from(z)
                    .ok()
                    .filter(|&z| z <= stored.len())
                    .ok_or_else(|| {
                        table_err(
                            &c,
                            format!("compressed stream length {z} exceeds the chunk"),
                        )
                    })?
            }
            m => return Err(table_err(&c, format!("unknown stream mode {m}"))),
        };
        *t = (mode, raw, stored_len);
    }
    if total != uncompressed_len {
        return Err(table_err(
            &c,
            format!("streams add up to {total} bytes, not the {uncompressed_len} the frame says"),
        ));
    }
    let mut pos = c.pos;
    let mut dec: Option<zstd::bulk::Decompressor<'static>> = None;
    let mut out = [(false, 0usize, 0usize); STREAMS];
    for (i, &(mode, raw, stored_len)) in table.iter().enumerate() {
        if stored.len() - pos < stored_len {
            return Err(table_err(
                &c,
                format!("stream {i} of {stored_len} bytes runs past the chunk"),
            ));
        }
        let src = &stored[pos..pos + stored_len];
        pos += stored_len;
        if mode == MODE_STORED {
            out[i] = (false, pos - stored_len, raw);
            continue;
        }
        let derr = |what: String| PayloadError {
            stream: Some(i),
            pos: 0,
            what,
            decompress: true,
        };
        let d = match &mut dec {
            Some(d) => d,
            None => dec.insert(zstd::bulk::Decompressor::new().map_err(|e| derr(e.to_string()))?),
        };
        let dst = &mut bufs[i];
        dst.clear();
        dst.reserve_exact(raw);
        let n = d
            .decompress_to_buffer(src, dst)
            .map_err(|e| derr(format!("stream {i} does not decompress: {e}")))?;
        if n != raw {
            return Err(derr(format!(
                "stream {i} decompresses to {n} bytes, not {raw}"
            )));
        }
        out[i] = (true, 0, raw);
    }
    if pos != stored.len() {
        return Err(table_err(
            &c,
            format!("{} bytes after the last stream", stored.len() - pos),
        ));
    }
    Ok(out)
}

/// Decodes a stored chunk payload (stream table and streams) of `count`
/// records, appending them to `out` (left as it was on error).
pub(crate) fn decode_chunk_into(
    stored: &[u8],
    uncompressed_len: u32,
    count: u32,
    first_seq: u64,
    first_time: u64,
    out: &mut Vec<Record>,
) -> Result<(), PayloadError> {
    let mut bufs: [Vec<u8>; STREAMS] = Default::default();
    let layout = unpack_streams(stored, uncompressed_len as usize, &mut bufs)?;
    let parts: [&[u8]; STREAMS] = std::array::from_fn(|i| {
        let (z, start, len) = layout[i];
        if z {
            &bufs[i][..len]
        } else {
            &stored[start..start + len]
        }
    });
    let start = out.len();
    let r = decode_records(parts, count, first_seq, first_time, out);
    if r.is_err() {
        out.truncate(start);
    }
    r
}

/// Encodes records into one chunk and decodes it back (tests).
#[cfg(test)]
pub(crate) fn decode_payload(
    stored: &[u8],
    uncompressed_len: u32,
    count: u32,
    first_seq: u64,
    first_time: u64,
) -> Result<Vec<Record>, PayloadError> {
    let mut out = Vec::new();
    decode_chunk_into(
        stored,
        uncompressed_len,
        count,
        first_seq,
        first_time,
        &mut out,
    )?;
    Ok(out)
}

fn decode_records(
    parts: [&[u8]; STREAMS],
    count: u32,
    first_seq: u64,
    first_time: u64,
    out: &mut Vec<Record>,
) -> Result<(), PayloadError> {
    let mut s = parts.map(Cursor::new);
    let rebase = |i: usize, mut e: PayloadError| {
        e.stream = Some(i);
        e
    };
    out.reserve((count as usize).min(1 << 16));
    let mut pred = Predictor::default();
    let mut prev_seq = first_seq.wrapping_sub(1);
    let mut prev_time = first_time;
    let mut prev_vcpu = 0u32;
    for _ in 0..count {
        let tag = s[S_TAG].u8().map_err(|e| rebase(S_TAG, e))?;
        if tag & TAG_RESERVED != 0 {
            return Err(rebase(
                S_TAG,
                s[S_TAG].err(format!("record tag {tag:#04x} has the reserved bit set")),
            ));
        }
        let code = tag & TAG_KIND;
        let Some(&kind) = KINDS.get(code as usize) else {
            return Err(rebase(
                S_TAG,
                s[S_TAG].err(format!("unknown event kind code {code}")),
            ));
        };
        let seq = if tag & TAG_SEQ != 0 {
            let d = s[S_SEQ].zigzag().map_err(|e| rebase(S_SEQ, e))?;
            prev_seq.wrapping_add(1).wrapping_add(d as u64)
        } else {
            prev_seq.wrapping_add(1)
        };
        let vcpu = if tag & TAG_VCPU != 0 {
            s[S_VCPU].varint_u32().map_err(|e| rebase(S_VCPU, e))?
        } else {
            prev_vcpu
        };
        let dt = unzigzag(get_split(&mut s, S_TIME).map_err(|(i, e)| rebase(i, e))?);
        let time_ns = prev_time.wrapping_add(dt as u64);
        let event = match kind {
            EventKind::MsrRead | EventKind::MsrWrite => {
                decode_msr(&mut s, &mut pred, kind, vcpu, time_ns).map_err(|(i, e)| rebase(i, e))?
            }
            _ => {
                let b = &mut s[S_BODY];
                let rest = &b.buf[b.pos..];
                let (ev, used): (Event, usize) = bincode::serde::decode_from_slice(
                    rest,
                    wire::bincode_config::<MAX_EVENT_BYTES>(),
                )
                .map_err(|e| {
                    rebase(
                        S_BODY,
                        b.err(format!(
                            "{} body does not decode: {}",
                            kind.name(),
                            wire::bincode_why(&e)
                        )),
                    )
                })?;
                if ev.kind() != kind {
                    return Err(rebase(
                        S_BODY,
                        b.err(format!(
                            "tag says {} but the body is {}",
                            kind.name(),
                            ev.kind().name()
                        )),
                    ));
                }
                b.pos += used;
                ev
            }
        };
        out.push(Record {
            seq,
            vcpu,
            time_ns,
            event,
        });
        prev_seq = seq;
        prev_time = time_ns;
        prev_vcpu = vcpu;
    }
    for (i, c) in s.iter().enumerate() {
        if !c.is_empty() {
            return Err(rebase(
                i,
                c.err(format!(
                    "{} bytes left in stream {i} after the last of {count} records",
                    c.buf.len() - c.pos
                )),
            ));
        }
    }
    Ok(())
}

#[inline(always)]
fn decode_value(
    s: &mut [Cursor<'_>; STREAMS],
    pred: &mut Predictor,
    key: u64,
    time: u64,
) -> Result<u64, (usize, PayloadError)> {
    let r = unzigzag(get_split(s, S_VALUE)?);
    let (p, slot) = pred.predict(key, time);
    let v = p.wrapping_add(r as u64);
    pred.update(key, slot, time, v);
    Ok(v)
}

#[inline(always)]
fn decode_msr(
    s: &mut [Cursor<'_>; STREAMS],
    pred: &mut Predictor,
    kind: EventKind,
    vcpu: u32,
    time: u64,
) -> Result<Event, (usize, PayloadError)> {
    let m = |e| (S_MSR, e);
    let attr = s[S_MSR].u8().map_err(m)?;
    if attr & ATTR_RESERVED != 0 {
        return Err(m(s[S_MSR].err(format!(
            "MSR attribute byte {attr:#04x} has the reserved bit set"
        ))));
    }
    let origin = if attr & ATTR_HOST != 0 {
        Origin::Host
    } else {
        Origin::Guest
    };
    let decided_by = if attr & ATTR_VMM != 0 {
        DecidedBy::Vmm
    } else {
        DecidedBy::Kernel
    };
    let capture = match (attr >> ATTR_CAPTURE_SHIFT) & 3 {
        0 => None,
        1 => Some(MsrExitReason::Inval),
        2 => Some(MsrExitReason::Unknown),
        _ => Some(MsrExitReason::Filter),
    };
    let out_code = (attr >> ATTR_OUTCOME_SHIFT) & 7;
    let index = s[S_MSR].varint_u32().map_err(m)?;
    let key = msr_key(vcpu, index);
    let value = if kind == EventKind::MsrWrite {
        Some(decode_value(s, pred, key, time)?)
    } else {
        None
    };
    let outcome = match out_code {
        OUT_VALUE => MsrOutcome::Value(decode_value(s, pred, key, time)?),
        OUT_OK => MsrOutcome::Ok,
        OUT_GP => MsrOutcome::InjectGp,
        OUT_USER => {
            let b = s[S_MSR].u8().map_err(m)?;
            let reason = match b & 3 {
                0 => MsrExitReason::Inval,
                1 => MsrExitReason::Unknown,
                2 => MsrExitReason::Filter,
                _ => {
                    return Err(m(
                        s[S_MSR].err(format!("bad user-exit reason in byte {b:#04x}"))
                    ));
                }
            };
            let answer = match b >> 2 {
                0 => UserAnswer::Value(decode_value(s, pred, key, time)?),
                1 => UserAnswer::Ok,
                2 => UserAnswer::Gp,
                _ => {
                    return Err(m(
                        s[S_MSR].err(format!("bad user-exit answer in byte {b:#04x}"))
                    ));
                }
            };
            MsrOutcome::UserExit { reason, answer }
        }
        OUT_VMFAILED => {
            let e = s[S_MSR].zigzag().map_err(m)?;
            let errno =
                i32::try_from(e).map_err(|_| m(s[S_MSR].err(format!("errno {e} out of range"))))?;
            MsrOutcome::VmFailed { errno }
        }
        other => return Err(m(s[S_MSR].err(format!("unknown MSR outcome code {other}")))),
    };
    Ok(Event::msr_access(
        index, value, origin, outcome, decided_by, capture,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rd(seq: u64, vcpu: u32, t: u64, index: u32, v: u64) -> Record {
        Record {
            seq,
            vcpu,
            time_ns: t,
            event: Event::MsrRead {
                index,
                origin: Origin::Guest,
                outcome: MsrOutcome::Value(v),
                decided_by: DecidedBy::Vmm,
                capture: Some(MsrExitReason::Filter),
            },
        }
    }

    fn round_trip(recs: &[Record]) -> usize {
        let mut e = ChunkEncoder::new();
        for r in recs {
            e.push(r).unwrap();
        }
        let c = e.finish_chunk().unwrap().unwrap();
        let n = c.bytes.len();
        let back = decode_payload(
            &c.bytes[CHUNK_FRAME_LEN..],
            c.uncompressed_len,
            recs.len() as u32,
            recs[0].seq,
            recs[0].time_ns,
        )
        .unwrap();
        assert_eq!(back, recs);
        n
    }

    #[test]
    fn tsc_reads_cost_little() {
        let mut recs = Vec::new();
        let (mut t, mut tsc) = (1000u64, 5_000_000u64);
        for i in 0..1000u64 {
            let dt = 3000 + (i * 7919) % 4000;
            t += dt;
            tsc += dt * 5 / 2 + (i % 3);
            recs.push(rd(i, 0, t, 0x10, tsc));
        }
        let n = round_trip(&recs);
        // Compressed: about the entropy of the time deltas (12 bits) and of
        // the TSC residuals (2 bits), and little else.
        assert!(n < 1000 * 3, "{n}");
    }

    #[test]
    fn out_of_order_seq_and_vcpus() {
        let recs = vec![
            rd(5, 1, 100, 0x10, 7),
            rd(3, 0, 90, 0x10, u64::MAX),
            rd(4, 2, 50, 0x3a, 0),
            rd(u64::MAX, 1, u64::MAX, 0x10, 1),
            rd(0, 1, 0, 0x10, 2),
        ];
        round_trip(&recs);
    }

    #[test]
    fn kind_codes_are_the_table() {
        for (i, k) in KINDS.iter().enumerate() {
            assert_eq!(kind_code(*k) as usize, i);
        }
        assert_eq!(KINDS.len(), EventKind::ALL.len());
    }

    #[test]
    fn extrapolate_table() {
        for (span_v, span_t, dt, want) in [
            (0i64, 10i64, 5i64, 0i64),
            (100, 10, 10, 100),
            (100, 10, 20, 200),
            (100, 0, 5, 0),
            (100, 10, -5, 0),
            (i64::MAX, 2, 4, i64::MAX),
            (i64::MIN, 2, 4, i64::MIN),
        ] {
            assert_eq!(
                extrapolate(span_v, span_t, dt),
                want,
                "{span_v} {span_t} {dt}"
            );
        }
    }

    #[test]
    fn garbage_payload_is_an_error() {
        // Stream tables: (mode, raw len) x 9, stored streams after.
        let table = |lens: [u8; STREAMS]| {
            lens.iter()
                .flat_map(|&l| [MODE_STORED, l])
                .collect::<Vec<u8>>()
        };
        let one = |tag: u8| {
            let mut p = table([1, 0, 0, 1, 1, 0, 0, 0, 0]);
            p.extend([tag, 0, 0]);
            p
        };
        for (p, ulen) in [
            (vec![0xffu8], 3),
            (vec![0x00], 3),
            (one(0x80), 3),                          // reserved tag bit
            (one(0x1f), 3),                          // unknown kind
            (one(0x10), 3),                          // halt without a body
            (one(0x10), 4),                          // lengths disagree with the frame
            (table([1, 0, 0, 1, 1, 0, 0, 0, 0]), 3), // streams run past the end
            (
                [table([1, 0, 0, 1, 1, 0, 0, 0, 0]), vec![0x10, 0, 0, 0]].concat(),
                3,
            ), // extra byte
            ([vec![MODE_ZSTD, 3, 3], vec![0; 16]].concat(), 3), // bad zstd
            ([vec![7, 3], vec![0; 16]].concat(), 3), // unknown mode
        ] {
            assert!(decode_payload(&p, ulen, 1, 0, 0).is_err(), "{p:?}");
        }
        // A valid one for contrast: one halt record (bincode body: variant 16).
        let mut p = table([1, 0, 0, 1, 1, 0, 0, 0, 1]);
        p.extend([0x10, 0, 0, 16]);
        assert_eq!(
            decode_payload(&p, 4, 1, 7, 9).unwrap()[0].event,
            Event::Halt
        );
    }
}
