use kvmtrace_format::{
    ArchState, DecidedBy, Event, InitSource, MsrOutcome, Origin, Record, TraceHeader,
};
use std::collections::HashMap;

use perfetto_protos::debug_annotation::DebugAnnotation;
use perfetto_protos::trace::Trace;
use perfetto_protos::track_event::track_event::Type;
use protobuf::Message;

use super::*;

fn records() -> Vec<Record> {
    let ev = |seq, vcpu, event| Record {
        seq,
        vcpu,
        time_ns: seq * 1500,
        event,
    };
    vec![
        ev(
            0,
            0,
            Event::MsrRead {
                index: 0x10,
                origin: Origin::Guest,
                outcome: MsrOutcome::Value(0x1227),
                decided_by: DecidedBy::Kernel,
                capture: None,
            },
        ),
        ev(
            1,
            1,
            Event::MsrWrite {
                index: 0x401,
                value: 1,
                origin: Origin::Guest,
                outcome: MsrOutcome::InjectGp,
                decided_by: DecidedBy::Kernel,
                capture: None,
            },
        ),
        ev(
            2,
            1,
            Event::Init {
                source: InitSource::Kernel,
                before: Box::default(),
                after: Box::new(ArchState {
                    rip: 0xfff0,
                    ..Default::default()
                }),
                decided_by: DecidedBy::Kernel,
            },
        ),
        ev(
            3,
            0,
            Event::Exception {
                vector: 6,
                error_code: None,
                reinjected: false,
            },
        ),
    ]
}

fn ok(r: &Record) -> Result<Record, String> {
    Ok(r.clone())
}

#[test]
fn chrome_json_is_valid_and_complete() {
    let recs = records();
    let mut buf = Vec::new();
    let mut w = chrome::ChromeWriter::new(&mut buf, "test \"trace\"").unwrap();
    let sum = export_records(&TraceHeader::default(), recs.iter().map(ok), None, &mut w).unwrap();
    assert_eq!(sum.records, 4);
    let doc: serde_json::Value = serde_json::from_slice(&buf).expect("valid JSON");
    let events = doc["traceEvents"].as_array().unwrap();
    let instants: Vec<_> = events.iter().filter(|e| e["ph"] == "i").collect();
    assert_eq!(instants.len(), 4);
    assert_eq!(instants[0]["name"], "rdmsr 0x10");
    assert_eq!(instants[0]["args"]["outcome"], "value");
    assert_eq!(instants[0]["args"]["read_value"], "0x1227");
    assert_eq!(instants[0]["tid"], 1);
    assert_eq!(instants[1]["args"]["outcome"], "inject_gp");
    assert_eq!(instants[1]["ts"], 1.5);
    assert_eq!(instants[2]["name"], "INIT");
    assert_eq!(instants[2]["s"], "g");
    assert_eq!(instants[3]["name"], "exception #UD");
    let threads = events.iter().filter(|e| e["name"] == "thread_name").count();
    assert_eq!(threads, 2, "one track per vCPU");
}

#[test]
fn unknown_policy_is_an_error() {
    let recs = records();
    let mut buf = Vec::new();
    let mut w = chrome::ChromeWriter::new(&mut buf, "t").unwrap();
    let e = export_records(
        &TraceHeader::default(),
        recs.iter().map(ok),
        Some("no-such-policy"),
        &mut w,
    )
    .unwrap_err();
    assert!(e.to_string().contains("no-such-policy"), "{e}");
}

/// Every field anywhere in `m` that Perfetto's definitions do not know.
fn unknown_fields(m: &dyn protobuf::MessageDyn, path: &str, out: &mut Vec<String>) {
    use protobuf::reflect::{ReflectFieldRef, ReflectValueRef};
    if m.special_fields_dyn()
        .unknown_fields()
        .iter()
        .next()
        .is_some()
    {
        out.push(format!("{path} ({})", m.descriptor_dyn().full_name()));
    }
    for f in m.descriptor_dyn().fields() {
        let here = format!("{path}.{}", f.name());
        match f.get_reflect(m) {
            ReflectFieldRef::Optional(v) => {
                if let Some(ReflectValueRef::Message(sub)) = v.value() {
                    unknown_fields(&*sub, &here, out);
                }
            }
            ReflectFieldRef::Repeated(r) => {
                for v in r.into_iter() {
                    if let ReflectValueRef::Message(sub) = v {
                        unknown_fields(&*sub, &here, out);
                    }
                }
            }
            ReflectFieldRef::Map(_) => {}
        }
    }
}

fn perfetto_bytes(recs: &[Record], policy: Option<&str>) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = perfetto::PerfettoWriter::new(&mut buf, "t").unwrap();
    export_records(&TraceHeader::default(), recs.iter().map(ok), policy, &mut w).unwrap();
    buf
}

/// One decoded track event, its interned names resolved.
#[derive(Debug)]
struct Seen {
    time: u64,
    track: u64,
    kind: Type,
    name: Option<String>,
    counter: Option<i64>,
    args: Vec<(String, String)>,
}

/// The output read back with Perfetto's own message definitions (generated
/// from its .proto files by perfetto_protos): interned names resolved, every
/// argument value rendered as `type:value`.
fn decode(buf: &[u8]) -> (Trace, Vec<Seen>) {
    let trace = Trace::parse_from_bytes(buf).expect("decodes as perfetto.protos.Trace");
    let mut names = HashMap::new();
    let mut arg_names = HashMap::new();
    let mut strings = HashMap::new();
    let mut seen = Vec::new();
    for p in &trace.packet {
        if let Some(d) = p.interned_data.as_ref() {
            names.extend(
                d.event_names
                    .iter()
                    .map(|n| (n.iid(), n.name().to_string())),
            );
            arg_names.extend(
                d.debug_annotation_names
                    .iter()
                    .map(|n| (n.iid(), n.name().to_string())),
            );
            strings.extend(
                d.debug_annotation_string_values
                    .iter()
                    .map(|s| (s.iid(), String::from_utf8(s.str().to_vec()).unwrap())),
            );
        }
        if !p.has_track_event() {
            continue;
        }
        let e = p.track_event();
        fn value(a: &DebugAnnotation, strings: &HashMap<u64, String>) -> String {
            if a.has_string_value_iid() {
                format!("str:{}", strings[&a.string_value_iid()])
            } else if a.has_string_value() {
                format!("str:{}", a.string_value())
            } else if a.has_uint_value() {
                format!("uint:{}", a.uint_value())
            } else if a.has_int_value() {
                format!("int:{}", a.int_value())
            } else if a.has_bool_value() {
                format!("bool:{}", a.bool_value())
            } else {
                let items: Vec<String> = a.array_values.iter().map(|x| value(x, strings)).collect();
                format!("[{}]", items.join(","))
            }
        }
        seen.push(Seen {
            time: p.timestamp(),
            track: e.track_uuid(),
            kind: e.type_(),
            name: if e.has_name_iid() {
                Some(names[&e.name_iid()].clone())
            } else if e.has_name() {
                Some(e.name().to_string())
            } else {
                None
            },
            counter: e.has_counter_value().then(|| e.counter_value()),
            args: e
                .debug_annotations
                .iter()
                .map(|a| {
                    let k = if a.has_name_iid() {
                        arg_names[&a.name_iid()].clone()
                    } else {
                        a.name().to_string()
                    };
                    (k, value(a, &strings))
                })
                .collect(),
        });
    }
    (trace, seen)
}

/// The Perfetto output under Perfetto's own message definitions: nothing in
/// it is a field they do not define, and per vCPU it holds a thread track with
/// the events as instants inside guest slices, an exit-rate counter track,
/// and typed arguments (hex strings for MSR values and registers, integers for
/// counts, arrays for register files).
#[test]
fn perfetto_output_reads_back_under_the_official_protos() {
    let recs = records();
    let buf = perfetto_bytes(&recs, None);
    let (trace, seen) = decode(&buf);
    let mut bad = Vec::new();
    unknown_fields(&trace, "Trace", &mut bad);
    assert!(bad.is_empty(), "unknown fields at {bad:?}");
    // The check sees one: a packet with field 106 (reserved in TracePacket).
    let mut altered = buf.clone();
    altered.extend([0x0a, 0x03, 0xd0, 0x06, 0x01]);
    let mut found = Vec::new();
    unknown_fields(&decode(&altered).0, "Trace", &mut found);
    assert_eq!(found.len(), 1, "{found:?}");

    // Tracks: the process, then per vCPU a thread track and a counter.
    let tracks: Vec<_> = trace
        .packet
        .iter()
        .filter(|p| p.has_track_descriptor())
        .map(|p| p.track_descriptor())
        .collect();
    assert_eq!(tracks.len(), 5, "{tracks:?}");
    assert!(tracks[0].process.is_some());
    let thread_tracks: Vec<_> = tracks.iter().filter(|t| t.thread.is_some()).collect();
    let counter_tracks: Vec<_> = tracks.iter().filter(|t| t.counter.is_some()).collect();
    assert_eq!(
        thread_tracks.iter().map(|t| t.name()).collect::<Vec<_>>(),
        ["vCPU 0", "vCPU 1"]
    );
    assert_eq!(counter_tracks.len(), 2);
    assert!(
        counter_tracks
            .iter()
            .all(|t| t.counter.unit_name() == "exits/s")
    );
    assert!(
        trace
            .packet
            .iter()
            .all(|p| p.has_trusted_packet_sequence_id()),
        "one packet sequence"
    );
    assert!(
        trace
            .packet
            .iter()
            .filter(|p| p.has_track_descriptor())
            .all(|p| !p.has_timestamp()),
        "track descriptors carry no time"
    );

    for (vcpu, expect) in [
        (0usize, ["rdmsr 0x10", "exception #UD"]),
        (1, ["wrmsr 0x401", "INIT"]),
    ] {
        let track = thread_tracks[vcpu].uuid();
        let on: Vec<_> = seen.iter().filter(|s| s.track == track).collect();
        let instants: Vec<_> = on
            .iter()
            .filter(|s| s.kind == Type::TYPE_INSTANT)
            .map(|s| s.name.as_deref().unwrap())
            .collect();
        assert_eq!(instants, expect, "vCPU {vcpu}");
        // A guest slice after each exit, closed by the next exit or the end.
        let slices: Vec<_> = on
            .iter()
            .filter(|s| matches!(s.kind, Type::TYPE_SLICE_BEGIN | Type::TYPE_SLICE_END))
            .map(|s| (s.kind, s.name.as_deref(), s.time))
            .collect();
        let (t0, t1) = (on[0].time, on.last().unwrap().time);
        let t_mid = seen
            .iter()
            .filter(|s| s.track == track && s.kind == Type::TYPE_INSTANT)
            .nth(1)
            .unwrap()
            .time;
        assert_eq!(
            slices,
            [
                (Type::TYPE_SLICE_BEGIN, Some("guest"), t0),
                (Type::TYPE_SLICE_END, None, t_mid),
                (Type::TYPE_SLICE_BEGIN, Some("guest"), t_mid),
                (Type::TYPE_SLICE_END, None, t1),
            ],
            "vCPU {vcpu}"
        );
        // Exit rate: both exits in one 10 ms window (200/s), then 0.
        let counter = counter_tracks[vcpu].uuid();
        let rates: Vec<_> = seen
            .iter()
            .filter(|s| s.track == counter)
            .map(|s| (s.kind, s.time, s.counter))
            .collect();
        assert_eq!(
            rates,
            [
                (Type::TYPE_COUNTER, 0, Some(200)),
                (Type::TYPE_COUNTER, 10_000_000, Some(0))
            ],
            "vCPU {vcpu}"
        );
    }
    // The INIT marker is repeated on the process track.
    let marker: Vec<_> = seen
        .iter()
        .filter(|s| s.track == tracks[0].uuid())
        .collect();
    assert_eq!(marker.len(), 1);
    assert_eq!(marker[0].name.as_deref(), Some("INIT"));
    assert_eq!(marker[0].args, [("vcpu".to_string(), "uint:1".to_string())]);

    // Typed arguments.
    let args = |name: &str| {
        let s = seen
            .iter()
            .find(|s| s.kind == Type::TYPE_INSTANT && s.name.as_deref() == Some(name))
            .unwrap();
        s.args.clone()
    };
    let arg = |name: &str, key: &str| -> String {
        args(name)
            .into_iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("{name}: no {key} in {:?}", args(name)))
            .1
    };
    assert_eq!(arg("rdmsr 0x10", "index"), "str:0x10");
    assert_eq!(arg("rdmsr 0x10", "outcome"), "str:value");
    assert_eq!(arg("rdmsr 0x10", "read_value"), "str:0x1227");
    assert_eq!(arg("rdmsr 0x10", "seq"), "uint:0");
    assert_eq!(arg("wrmsr 0x401", "value"), "str:0x1");
    assert_eq!(arg("wrmsr 0x401", "outcome"), "str:inject_gp");
    assert_eq!(arg("wrmsr 0x401", "seq"), "uint:1");
    assert_eq!(arg("exception #UD", "vector"), "uint:6");
    assert_eq!(arg("exception #UD", "reinjected"), "bool:false");
    let init = args("INIT");
    assert!(
        init.iter()
            .any(|(k, v)| k.ends_with("rip") && v == "str:0xfff0"),
        "{init:?}"
    );
    assert!(
        init.iter().any(|(_, v)| v.starts_with("[str:0x")),
        "a register file as an array of hex values: {init:?}"
    );
    // Names and argument names are interned: every instant and slice begin
    // names itself by iid.
    assert!(
        trace
            .packet
            .iter()
            .filter(|p| p.has_track_event())
            .map(|p| p.track_event())
            .filter(|e| matches!(e.type_(), Type::TYPE_INSTANT | Type::TYPE_SLICE_BEGIN))
            .all(|e| e.has_name_iid() && e.debug_annotations.iter().all(|a| a.has_name_iid()))
    );
}

/// The same records give the same bytes, with and without a policy's
/// divergences.
#[test]
fn perfetto_output_is_deterministic() {
    let recs = records();
    for policy in [None, Some("kvm-5.10"), Some("kvm-6.18")] {
        let first = perfetto_bytes(&recs, policy);
        assert!(first.len() > 100, "{policy:?}");
        assert_eq!(first, perfetto_bytes(&recs, policy), "{policy:?}");
    }
}
