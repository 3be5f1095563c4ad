//! Native Perfetto protobuf: a `Trace` is a stream of `TracePacket`s (field 1),
//! so packets are written one by one as records stream by. Event names,
//! categories and argument names are interned (`InternedData`) on one packet
//! sequence. Per vCPU: a thread track with one instant per event inside
//! "guest" slices (from one exit to the next: a trace stamps each exit once,
//! so the VMM's handling time is inside the slice, not apart; see
//! docs/perfetto.md), and a counter track of its exit rate (exits/s over
//! 10 ms windows). Arguments are typed: counts as integers, registers, MSR
//! values and addresses as `0x...` strings, arrays as `array_values`.
//!
//! The messages are Perfetto's own, generated from its .proto files by the
//! `perfetto_protos` crate (rust-protobuf); nothing here restates a field
//! number.

use std::collections::HashMap;
use std::io::Write;

use kvmtrace_format::Record;
use perfetto_protos::counter_descriptor::CounterDescriptor;
use perfetto_protos::debug_annotation::{DebugAnnotation, DebugAnnotationName};
use perfetto_protos::interned_data::InternedData;
use perfetto_protos::process_descriptor::ProcessDescriptor;
use perfetto_protos::profile_common::InternedString;
use perfetto_protos::thread_descriptor::ThreadDescriptor;
use perfetto_protos::trace::Trace;
use perfetto_protos::trace_packet::TracePacket;
use perfetto_protos::trace_packet::trace_packet::SequenceFlags;
use perfetto_protos::track_descriptor::TrackDescriptor;
use perfetto_protos::track_event::track_event::Type;
use perfetto_protos::track_event::{EventCategory, EventName, TrackEvent};
use protobuf::{Message, MessageField};

use super::describe::{self, Arg};
use super::{Divergence, Sink};

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
    /// The iid of `s`, adding `entry(iid, s)` to `new` if it is new; `None`
    /// when full.
    fn intern<T>(
        &mut self,
        s: &str,
        new: &mut Vec<T>,
        entry: impl FnOnce(u64, &str) -> T,
    ) -> Option<u64> {
        if let Some(&id) = self.ids.get(s) {
            return Some(id);
        }
        if self.ids.len() >= MAX_INTERNED {
            return None;
        }
        let id = self.ids.len() as u64 + 1;
        self.ids.insert(s.to_string(), id);
        new.push(entry(id, s));
        Some(id)
    }
}

fn event_name(iid: u64, name: &str) -> EventName {
    EventName {
        iid: Some(iid),
        name: Some(name.to_string()),
        ..Default::default()
    }
}

fn event_category(iid: u64, name: &str) -> EventCategory {
    EventCategory {
        iid: Some(iid),
        name: Some(name.to_string()),
        ..Default::default()
    }
}

fn annotation_name(iid: u64, name: &str) -> DebugAnnotationName {
    DebugAnnotationName {
        iid: Some(iid),
        name: Some(name.to_string()),
        ..Default::default()
    }
}

fn interned_string(iid: u64, s: &str) -> InternedString {
    InternedString {
        iid: Some(iid),
        str: Some(s.as_bytes().to_vec()),
        ..Default::default()
    }
}

fn is_empty(d: &InternedData) -> bool {
    d.event_names.is_empty()
        && d.event_categories.is_empty()
        && d.debug_annotation_names.is_empty()
        && d.debug_annotation_string_values.is_empty()
}

/// A packet on our sequence (not yet timed, no incremental state).
fn on_sequence() -> TracePacket {
    let mut p = TracePacket::new();
    p.set_trusted_packet_sequence_id(SEQ_ID);
    p
}

/// The interning tables, borrowed beside the event being filled in.
struct Tables<'a> {
    names: &'a mut Table,
    cats: &'a mut Table,
    arg_names: &'a mut Table,
    arg_values: &'a mut Table,
    /// What the event adds (written with it).
    new: &'a mut InternedData,
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
    /// One packet at a time, encoded as a whole `Trace` holding it: the
    /// encodings of one-packet `Trace`s concatenate to the `Trace` of all.
    /// Its packet is reused for every track event (filled in place: no
    /// packet-sized moves per event).
    trace: Trace,
    /// Names the current event interns first.
    interned: InternedData,
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
            trace: Trace::new(),
            interned: InternedData::new(),
            buf: Vec::with_capacity(512),
        };
        let mut event = on_sequence();
        event.set_sequence_flags(SequenceFlags::SEQ_NEEDS_INCREMENTAL_STATE as u32);
        event.set_track_event(TrackEvent::new());
        w.trace.packet.push(event);
        let mut process = TrackDescriptor::new();
        process.set_uuid(PROCESS_UUID);
        process.set_name(title.to_string());
        process.process = MessageField::some(ProcessDescriptor {
            pid: Some(PID),
            process_name: Some(title.to_string()),
            ..Default::default()
        });
        let mut p = on_sequence();
        p.set_sequence_flags(SequenceFlags::SEQ_INCREMENTAL_STATE_CLEARED as u32);
        p.set_track_descriptor(process);
        w.packet(p)?;
        Ok(w)
    }

    /// Write `self.trace` (one packet).
    fn write(&mut self) -> std::io::Result<()> {
        self.buf.clear();
        self.trace
            .write_to_vec(&mut self.buf)
            .map_err(std::io::Error::other)?;
        self.out.write_all(&self.buf)
    }

    /// Write a packet that is not a track event (the track descriptors).
    fn packet(&mut self, p: TracePacket) -> std::io::Result<()> {
        let event = std::mem::replace(&mut self.trace.packet[0], p);
        let written = self.write();
        self.trace.packet[0] = event;
        written
    }

    /// The reused track-event packet's event, cleared, and the interning
    /// tables with the list of names this event adds.
    fn begin(&mut self) -> (&mut TrackEvent, Tables<'_>) {
        let ev = self.trace.packet[0].mut_track_event();
        ev.clear();
        (
            ev,
            Tables {
                names: &mut self.names,
                cats: &mut self.cats,
                arg_names: &mut self.arg_names,
                arg_values: &mut self.arg_values,
                new: &mut self.interned,
            },
        )
    }

    /// Write the event `begin` gave, at `time_ns`, with the names it interned.
    fn finish_event(&mut self, time_ns: u64) -> std::io::Result<()> {
        let p = &mut self.trace.packet[0];
        p.set_timestamp(time_ns);
        if !is_empty(&self.interned) {
            p.interned_data = MessageField::some(std::mem::take(&mut self.interned));
        }
        let written = self.write();
        self.trace.packet[0].interned_data.clear();
        written
    }

    fn track(&mut self, vcpu: u32) -> std::io::Result<()> {
        if self.seen.contains(&vcpu) {
            return Ok(());
        }
        self.seen.push(vcpu);
        let name = format!("vCPU {vcpu}");
        let mut thread = TrackDescriptor::new();
        thread.set_uuid(track_uuid(vcpu));
        thread.set_name(name.clone());
        thread.set_parent_uuid(PROCESS_UUID);
        thread.thread = MessageField::some(ThreadDescriptor {
            pid: Some(PID),
            tid: Some(
                i32::try_from(vcpu)
                    .unwrap_or(i32::MAX - 2)
                    .saturating_add(2),
            ),
            thread_name: Some(name),
            ..Default::default()
        });
        let mut p = on_sequence();
        p.set_track_descriptor(thread);
        self.packet(p)?;
        let mut counter = TrackDescriptor::new();
        counter.set_uuid(counter_uuid(vcpu));
        counter.set_name(format!("vCPU {vcpu} exits/s"));
        counter.set_parent_uuid(PROCESS_UUID);
        counter.counter = MessageField::some(CounterDescriptor {
            unit_name: Some("exits/s".into()),
            ..Default::default()
        });
        let mut p = on_sequence();
        p.set_track_descriptor(counter);
        self.packet(p)
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
        kind: Type,
        name: Option<&str>,
        counter: Option<i64>,
    ) -> std::io::Result<()> {
        let (ev, t) = self.begin();
        ev.set_type(kind);
        ev.set_track_uuid(track);
        if let Some(n) = name {
            match t.names.intern(n, &mut t.new.event_names, event_name) {
                Some(id) => ev.set_name_iid(id),
                None => ev.set_name(n.to_string()),
            }
        }
        if let Some(v) = counter {
            ev.set_counter_value(v);
        }
        self.finish_event(time_ns)
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
            Type::TYPE_COUNTER,
            None,
            Some(rate),
        )?;
        if next.is_none_or(|w| w > st.window + 1) {
            self.mark(
                (st.window + 1) * WINDOW_NS,
                counter_uuid(vcpu),
                Type::TYPE_COUNTER,
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
        let (ev, t) = self.begin();
        ev.set_type(Type::TYPE_INSTANT);
        ev.set_track_uuid(track);
        match t.names.intern(name, &mut t.new.event_names, event_name) {
            Some(id) => ev.set_name_iid(id),
            None => ev.set_name(name.to_string()),
        }
        ev.category_iids.extend(
            t.cats
                .intern(cat, &mut t.new.event_categories, event_category),
        );
        ev.debug_annotations.reserve(args.len());
        for (k, v) in args {
            let mut a = DebugAnnotation::new();
            match t
                .arg_names
                .intern(k, &mut t.new.debug_annotation_names, annotation_name)
            {
                Some(id) => a.set_name_iid(id),
                None => a.set_name(k.clone()),
            }
            match v {
                Arg::Str(s) => match t.arg_values.intern(
                    s,
                    &mut t.new.debug_annotation_string_values,
                    interned_string,
                ) {
                    Some(id) => a.set_string_value_iid(id),
                    None => a.set_string_value(s.clone()),
                },
                other => set_value(&mut a, other),
            }
            ev.debug_annotations.push(a);
        }
        self.finish_event(time_ns)
    }
}

/// A value without interning: hex as a `0x...` string (the UI shows integers
/// in decimal), lists as `array_values`.
fn set_value(a: &mut DebugAnnotation, v: &Arg) {
    match v {
        Arg::Str(s) => a.set_string_value(s.clone()),
        Arg::Hex(n) => a.set_string_value(format!("{n:#x}")),
        Arg::U64(n) => a.set_uint_value(*n),
        Arg::I64(n) => a.set_int_value(*n),
        Arg::Bool(b) => a.set_bool_value(*b),
        Arg::List(items) => {
            a.array_values = items
                .iter()
                .map(|x| {
                    let mut e = DebugAnnotation::new();
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
                Type::TYPE_SLICE_END,
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
                Type::TYPE_SLICE_BEGIN,
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
                self.mark(end, track_uuid(vcpu), Type::TYPE_SLICE_END, None, None)?;
            }
            self.flush_window(vcpu, &st, None)?;
        }
        self.out.flush()
    }
}
