//! Native Perfetto protobuf: a `Trace` is a stream of `TracePacket`s (field 1),
//! so packets are written one by one as records stream by. Event names,
//! categories and argument names are interned (`InternedData`) on one packet
//! sequence. Per vCPU: a thread track with one instant per event inside
//! "guest" slices (from one exit to the next: a trace stamps each exit once,
//! so the VMM's handling time is inside the slice, not apart), and a counter
//! track of its exit rate (exits/s over 10 ms windows). Arguments are typed:
//! counts as integers, registers, MSR values and addresses as `0x...`
//! strings, arrays as `array_values`. The messages are hand-written prost structs carrying only the
//! fields used; field numbers are those of Perfetto's protos
//! (`protos/perfetto/trace/trace_packet.proto`, `track_event/track_event.proto`,
//! `track_event/track_descriptor.proto`, `track_event/debug_annotation.proto`,
//! `interned_data/interned_data.proto`).

use std::collections::HashMap;
use std::io::Write;

use kvmtrace_format::Record;
use prost::Message;

use super::describe::{self, Arg};
use super::{Divergence, Sink};

#[derive(Clone, PartialEq, Message)]
pub struct Trace {
    #[prost(message, repeated, tag = "1")]
    pub packet: Vec<TracePacket>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TracePacket {
    #[prost(uint64, optional, tag = "8")]
    pub timestamp: Option<u64>,
    #[prost(uint32, optional, tag = "10")]
    pub trusted_packet_sequence_id: Option<u32>,
    #[prost(message, optional, tag = "11")]
    pub track_event: Option<TrackEvent>,
    #[prost(message, optional, tag = "12")]
    pub interned_data: Option<InternedData>,
    /// SEQ_INCREMENTAL_STATE_CLEARED 1, SEQ_NEEDS_INCREMENTAL_STATE 2.
    #[prost(uint32, optional, tag = "13")]
    pub sequence_flags: Option<u32>,
    #[prost(message, optional, tag = "60")]
    pub track_descriptor: Option<TrackDescriptor>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TrackDescriptor {
    #[prost(uint64, optional, tag = "1")]
    pub uuid: Option<u64>,
    #[prost(string, optional, tag = "2")]
    pub name: Option<String>,
    #[prost(message, optional, tag = "3")]
    pub process: Option<ProcessDescriptor>,
    #[prost(message, optional, tag = "4")]
    pub thread: Option<ThreadDescriptor>,
    #[prost(uint64, optional, tag = "5")]
    pub parent_uuid: Option<u64>,
    #[prost(message, optional, tag = "8")]
    pub counter: Option<CounterDescriptor>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CounterDescriptor {
    #[prost(string, optional, tag = "6")]
    pub unit_name: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ProcessDescriptor {
    #[prost(int32, optional, tag = "1")]
    pub pid: Option<i32>,
    #[prost(string, optional, tag = "6")]
    pub process_name: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ThreadDescriptor {
    #[prost(int32, optional, tag = "1")]
    pub pid: Option<i32>,
    #[prost(int32, optional, tag = "2")]
    pub tid: Option<i32>,
    #[prost(string, optional, tag = "5")]
    pub thread_name: Option<String>,
}

/// `TrackEvent.Type`.
pub const TYPE_SLICE_BEGIN: i32 = 1;
pub const TYPE_SLICE_END: i32 = 2;
pub const TYPE_INSTANT: i32 = 3;
pub const TYPE_COUNTER: i32 = 4;

#[derive(Clone, PartialEq, Message)]
pub struct TrackEvent {
    #[prost(uint64, repeated, packed = "false", tag = "3")]
    pub category_iids: Vec<u64>,
    #[prost(message, repeated, tag = "4")]
    pub debug_annotations: Vec<DebugAnnotation>,
    #[prost(int32, optional, tag = "9")]
    pub r#type: Option<i32>,
    #[prost(uint64, optional, tag = "10")]
    pub name_iid: Option<u64>,
    #[prost(uint64, optional, tag = "11")]
    pub track_uuid: Option<u64>,
    #[prost(string, optional, tag = "23")]
    pub name: Option<String>,
    #[prost(int64, optional, tag = "30")]
    pub counter_value: Option<i64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct DebugAnnotation {
    #[prost(uint64, optional, tag = "1")]
    pub name_iid: Option<u64>,
    #[prost(bool, optional, tag = "2")]
    pub bool_value: Option<bool>,
    #[prost(uint64, optional, tag = "3")]
    pub uint_value: Option<u64>,
    #[prost(int64, optional, tag = "4")]
    pub int_value: Option<i64>,
    #[prost(string, optional, tag = "6")]
    pub string_value: Option<String>,
    #[prost(string, optional, tag = "10")]
    pub name: Option<String>,
    #[prost(message, repeated, tag = "12")]
    pub array_values: Vec<DebugAnnotation>,
    #[prost(uint64, optional, tag = "17")]
    pub string_value_iid: Option<u64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct InternedString {
    #[prost(uint64, optional, tag = "1")]
    pub iid: Option<u64>,
    #[prost(string, optional, tag = "2")]
    pub name: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct InternedData {
    /// `EventCategory { iid = 1; name = 2 }`.
    #[prost(message, repeated, tag = "1")]
    pub event_categories: Vec<InternedString>,
    /// `EventName { iid = 1; name = 2 }`.
    #[prost(message, repeated, tag = "2")]
    pub event_names: Vec<InternedString>,
    /// `DebugAnnotationName { iid = 1; name = 2 }`.
    #[prost(message, repeated, tag = "3")]
    pub debug_annotation_names: Vec<InternedString>,
    /// `InternedString { iid = 1; bytes str = 2 }` (same wire form).
    #[prost(message, repeated, tag = "29")]
    pub debug_annotation_string_values: Vec<InternedString>,
}

const SEQ_ID: u32 = 1;
const PROCESS_UUID: u64 = 1;
const PID: i32 = 1;
/// Interning tables stop growing here (bounded memory); later names go inline.
const MAX_INTERNED: usize = 1 << 16;

fn track_uuid(vcpu: u32) -> u64 {
    0x100 + u64::from(vcpu)
}

fn counter_uuid(vcpu: u32) -> u64 {
    0x1_0000_0000 + u64::from(vcpu)
}

/// Exit-rate window.
const WINDOW_NS: u64 = 10_000_000;

/// Per vCPU: the open guest slice and the exit-rate window being counted.
#[derive(Clone, Copy, Default)]
struct VcpuState {
    slice_open: bool,
    ended: bool,
    window: u64,
    count: u64,
}

#[derive(Default)]
struct Table {
    ids: HashMap<String, u64>,
}

impl Table {
    /// The iid of `s`, adding it to `new` if it is new; `None` when full.
    fn intern(&mut self, s: &str, new: &mut Vec<InternedString>) -> Option<u64> {
        if let Some(&id) = self.ids.get(s) {
            return Some(id);
        }
        if self.ids.len() >= MAX_INTERNED {
            return None;
        }
        let id = self.ids.len() as u64 + 1;
        self.ids.insert(s.to_string(), id);
        new.push(InternedString {
            iid: Some(id),
            name: Some(s.to_string()),
        });
        Some(id)
    }
}

pub struct PerfettoWriter<W: Write> {
    out: W,
    names: Table,
    cats: Table,
    arg_names: Table,
    arg_values: Table,
    seen: Vec<u32>,
    vcpus: Vec<(u32, VcpuState)>,
    last_time: u64,
    buf: Vec<u8>,
}

impl<W: Write> PerfettoWriter<W> {
    pub fn new(out: W, title: &str) -> std::io::Result<Self> {
        let mut w = PerfettoWriter {
            out,
            names: Table::default(),
            cats: Table::default(),
            arg_names: Table::default(),
            arg_values: Table::default(),
            seen: Vec::new(),
            vcpus: Vec::new(),
            last_time: 0,
            buf: Vec::with_capacity(512),
        };
        w.packet(&TracePacket {
            trusted_packet_sequence_id: Some(SEQ_ID),
            sequence_flags: Some(1),
            track_descriptor: Some(TrackDescriptor {
                uuid: Some(PROCESS_UUID),
                name: Some(title.to_string()),
                process: Some(ProcessDescriptor {
                    pid: Some(PID),
                    process_name: Some(title.to_string()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        })?;
        Ok(w)
    }

    /// Write one packet as `Trace.packet` (field 1, length-delimited).
    fn packet(&mut self, p: &TracePacket) -> std::io::Result<()> {
        self.buf.clear();
        self.buf.push(0x0a);
        p.encode_length_delimited(&mut self.buf)
            .map_err(std::io::Error::other)?;
        self.out.write_all(&self.buf)
    }

    fn track(&mut self, vcpu: u32) -> std::io::Result<()> {
        if self.seen.contains(&vcpu) {
            return Ok(());
        }
        self.seen.push(vcpu);
        let name = format!("vCPU {vcpu}");
        self.packet(&TracePacket {
            trusted_packet_sequence_id: Some(SEQ_ID),
            track_descriptor: Some(TrackDescriptor {
                uuid: Some(track_uuid(vcpu)),
                name: Some(name.clone()),
                parent_uuid: Some(PROCESS_UUID),
                thread: Some(ThreadDescriptor {
                    pid: Some(PID),
                    tid: Some(
                        i32::try_from(vcpu)
                            .unwrap_or(i32::MAX - 2)
                            .saturating_add(2),
                    ),
                    thread_name: Some(name),
                }),
                ..Default::default()
            }),
            ..Default::default()
        })?;
        self.packet(&TracePacket {
            trusted_packet_sequence_id: Some(SEQ_ID),
            track_descriptor: Some(TrackDescriptor {
                uuid: Some(counter_uuid(vcpu)),
                name: Some(format!("vCPU {vcpu} exits/s")),
                parent_uuid: Some(PROCESS_UUID),
                counter: Some(CounterDescriptor {
                    unit_name: Some("exits/s".into()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn state(&mut self, vcpu: u32) -> VcpuState {
        match self.vcpus.iter().find(|(v, _)| *v == vcpu) {
            Some((_, s)) => *s,
            None => {
                self.vcpus.push((vcpu, VcpuState::default()));
                VcpuState::default()
            }
        }
    }

    fn set_state(&mut self, vcpu: u32, st: VcpuState) {
        if let Some((_, s)) = self.vcpus.iter_mut().find(|(v, _)| *v == vcpu) {
            *s = st;
        }
    }

    /// A slice begin or end, or a counter value, on `track`.
    fn mark(
        &mut self,
        time_ns: u64,
        track: u64,
        kind: i32,
        name: Option<&str>,
        counter: Option<i64>,
    ) -> std::io::Result<()> {
        let mut interned = InternedData::default();
        let name_iid = name.and_then(|n| self.names.intern(n, &mut interned.event_names));
        let empty = interned.event_names.is_empty();
        self.packet(&TracePacket {
            timestamp: Some(time_ns),
            trusted_packet_sequence_id: Some(SEQ_ID),
            track_event: Some(TrackEvent {
                r#type: Some(kind),
                track_uuid: Some(track),
                name_iid,
                name: name.filter(|_| name_iid.is_none()).map(str::to_string),
                counter_value: counter,
                ..Default::default()
            }),
            interned_data: (!empty).then_some(interned),
            sequence_flags: Some(2),
            ..Default::default()
        })
    }

    /// The exit-rate counter of `vcpu` for the window `st` counted, then 0
    /// if the next event comes after an idle window.
    fn flush_window(
        &mut self,
        vcpu: u32,
        st: &VcpuState,
        next: Option<u64>,
    ) -> std::io::Result<()> {
        if st.count == 0 {
            return Ok(());
        }
        let rate = (st.count * (1_000_000_000 / WINDOW_NS)) as i64;
        self.mark(
            st.window * WINDOW_NS,
            counter_uuid(vcpu),
            TYPE_COUNTER,
            None,
            Some(rate),
        )?;
        if next.is_none_or(|w| w > st.window + 1) {
            self.mark(
                (st.window + 1) * WINDOW_NS,
                counter_uuid(vcpu),
                TYPE_COUNTER,
                None,
                Some(0),
            )?;
        }
        Ok(())
    }

    fn event(
        &mut self,
        time_ns: u64,
        track: u64,
        name: &str,
        cat: &str,
        args: &[(String, Arg)],
    ) -> std::io::Result<()> {
        let mut interned = InternedData::default();
        let name_iid = self.names.intern(name, &mut interned.event_names);
        let cat_iid = self.cats.intern(cat, &mut interned.event_categories);
        let mut annotations = Vec::with_capacity(args.len());
        for (k, v) in args {
            let mut a = DebugAnnotation::default();
            match self
                .arg_names
                .intern(k, &mut interned.debug_annotation_names)
            {
                Some(id) => a.name_iid = Some(id),
                None => a.name = Some(k.clone()),
            }
            match v {
                Arg::Str(s) => {
                    match self
                        .arg_values
                        .intern(s, &mut interned.debug_annotation_string_values)
                    {
                        Some(id) => a.string_value_iid = Some(id),
                        None => a.string_value = Some(s.clone()),
                    }
                }
                other => set_value(&mut a, other),
            }
            annotations.push(a);
        }
        let empty = interned.event_names.is_empty()
            && interned.event_categories.is_empty()
            && interned.debug_annotation_names.is_empty()
            && interned.debug_annotation_string_values.is_empty();
        let ev = TrackEvent {
            category_iids: cat_iid.into_iter().collect(),
            debug_annotations: annotations,
            r#type: Some(TYPE_INSTANT),
            name_iid,
            track_uuid: Some(track),
            name: name_iid.is_none().then(|| name.to_string()),
            counter_value: None,
        };
        self.packet(&TracePacket {
            timestamp: Some(time_ns),
            trusted_packet_sequence_id: Some(SEQ_ID),
            track_event: Some(ev),
            interned_data: (!empty).then_some(interned),
            sequence_flags: Some(2),
            ..Default::default()
        })
    }
}

/// A value without interning: hex as a `0x...` string (the UI shows integers
/// in decimal), lists as `array_values`.
fn set_value(a: &mut DebugAnnotation, v: &Arg) {
    match v {
        Arg::Str(s) => a.string_value = Some(s.clone()),
        Arg::Hex(n) => a.string_value = Some(format!("{n:#x}")),
        Arg::U64(n) => a.uint_value = Some(*n),
        Arg::I64(n) => a.int_value = Some(*n),
        Arg::Bool(b) => a.bool_value = Some(*b),
        Arg::List(items) => {
            a.array_values = items
                .iter()
                .map(|x| {
                    let mut e = DebugAnnotation::default();
                    set_value(&mut e, x);
                    e
                })
                .collect();
        }
    }
}

impl<W: Write> Sink for PerfettoWriter<W> {
    fn record(&mut self, rec: &Record) -> std::io::Result<()> {
        self.track(rec.vcpu)?;
        let e = &rec.event;
        // Exit rate: one more exit in this vCPU's window.
        let mut st = self.state(rec.vcpu);
        let w = rec.time_ns / WINDOW_NS;
        if st.count > 0 && w != st.window {
            let old = st;
            self.flush_window(rec.vcpu, &old, Some(w))?;
            st.count = 0;
        }
        if st.count == 0 {
            st.window = w;
        }
        st.count += 1;
        // Guest slices: each exit ends the guest run that led to it.
        if st.slice_open {
            self.mark(
                rec.time_ns,
                track_uuid(rec.vcpu),
                TYPE_SLICE_END,
                None,
                None,
            )?;
            st.slice_open = false;
        }
        let ends = matches!(e, kvmtrace_format::Event::End { .. });
        if ends {
            st.ended = true;
        }
        self.set_state(rec.vcpu, st);
        let name = describe::name(e);
        let mut args = describe::args(e);
        args.push(("seq".into(), Arg::U64(rec.seq)));
        self.event(
            rec.time_ns,
            track_uuid(rec.vcpu),
            &name,
            e.kind().name(),
            &args,
        )?;
        if describe::is_marker(e) {
            // Also on the process track, so markers line up across vCPUs.
            let args = vec![("vcpu".to_string(), Arg::U64(u64::from(rec.vcpu)))];
            self.event(rec.time_ns, PROCESS_UUID, &name, "marker", &args)?;
        }
        if !ends {
            self.mark(
                rec.time_ns,
                track_uuid(rec.vcpu),
                TYPE_SLICE_BEGIN,
                Some("guest"),
                None,
            )?;
            let mut st = self.state(rec.vcpu);
            st.slice_open = true;
            self.set_state(rec.vcpu, st);
        }
        self.last_time = self.last_time.max(rec.time_ns);
        Ok(())
    }

    fn divergence(&mut self, rec: &Record, d: &Divergence) -> std::io::Result<()> {
        let name = format!("DIVERGENCE {}", describe::name(&rec.event));
        let args = describe::divergence_args(rec, d);
        self.event(
            rec.time_ns,
            track_uuid(rec.vcpu),
            &name,
            "divergence",
            &args,
        )
    }

    fn finish(&mut self) -> std::io::Result<()> {
        let end = self.last_time;
        for (vcpu, st) in std::mem::take(&mut self.vcpus) {
            if st.slice_open {
                self.mark(end, track_uuid(vcpu), TYPE_SLICE_END, None, None)?;
            }
            self.flush_window(vcpu, &st, None)?;
        }
        self.out.flush()
    }
}
