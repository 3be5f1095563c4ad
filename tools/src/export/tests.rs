use kvmtrace_format::{
    ArchState, DecidedBy, Event, InitSource, MsrOutcome, Origin, Record, TraceHeader,
};
use prost::Message;

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
fn perfetto_protobuf_decodes_with_interned_names() {
    let recs = records();
    let mut buf = Vec::new();
    let mut w = perfetto::PerfettoWriter::new(&mut buf, "t").unwrap();
    export_records(&TraceHeader::default(), recs.iter().map(ok), None, &mut w).unwrap();
    let trace = perfetto::Trace::decode(&buf[..]).expect("decodes as perfetto.protos.Trace");
    let tracks = trace
        .packet
        .iter()
        .filter(|p| p.track_descriptor.is_some())
        .count();
    assert_eq!(
        tracks, 5,
        "process track, 2 vCPU tracks, 2 exit-rate counters"
    );
    let events: Vec<_> = trace
        .packet
        .iter()
        .filter_map(|p| p.track_event.as_ref())
        .collect();
    let of = |t: i32| events.iter().filter(|e| e.r#type == Some(t)).count();
    // 4 records + the INIT marker repeated on the process track.
    assert_eq!(of(perfetto::TYPE_INSTANT), 5);
    // A guest slice after each exit, closed by the next one or at the end.
    assert_eq!(of(perfetto::TYPE_SLICE_BEGIN), 4);
    assert_eq!(of(perfetto::TYPE_SLICE_END), 4);
    // Exit rates: every record in one 10 ms window per vCPU, then 0.
    let counters: Vec<i64> = events
        .iter()
        .filter(|e| e.r#type == Some(perfetto::TYPE_COUNTER))
        .filter_map(|e| e.counter_value)
        .collect();
    assert_eq!(counters, [200, 0, 200, 0], "{counters:?}");
    assert!(
        events
            .iter()
            .filter(|e| e.r#type != Some(perfetto::TYPE_COUNTER)
                && e.r#type != Some(perfetto::TYPE_SLICE_END))
            .all(|e| e.name_iid.is_some() && e.name.is_none())
    );
    let names: Vec<String> = trace
        .packet
        .iter()
        .filter_map(|p| p.interned_data.as_ref())
        .flat_map(|d| d.event_names.iter().filter_map(|n| n.name.clone()))
        .collect();
    assert_eq!(
        names,
        [
            "rdmsr 0x10",
            "guest",
            "wrmsr 0x401",
            "INIT",
            "exception #UD"
        ]
    );
    // Typed arguments: the written MSR value in hex, the INIT's registers
    // as hex strings, the GPR array as array values.
    let wr = events
        .iter()
        .find(|e| e.r#type == Some(perfetto::TYPE_INSTANT) && e.name_iid == Some(3))
        .unwrap();
    assert!(
        wr.debug_annotations
            .iter()
            .any(|a| a.string_value.as_deref() == Some("0x1")),
        "{wr:?}"
    );
    let init = events
        .iter()
        .find(|e| e.r#type == Some(perfetto::TYPE_INSTANT) && e.name_iid == Some(4))
        .unwrap();
    assert!(
        init.debug_annotations
            .iter()
            .any(|a| a.string_value.as_deref() == Some("0xfff0")),
        "{init:?}"
    );
    assert!(
        init.debug_annotations
            .iter()
            .any(|a| !a.array_values.is_empty()),
        "{init:?}"
    );
    assert_eq!(
        trace.packet[1].timestamp, None,
        "track descriptors carry no time"
    );
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

/// The output decoded with Perfetto's own message definitions (generated from
/// its .proto files by the perfetto_protos crate): every field is one they
/// define (no unknown fields anywhere), and the slices, counters and typed
/// arguments read back as written.
#[cfg(feature = "perfetto-oracle")]
#[test]
fn perfetto_output_has_no_unknown_fields_under_the_official_protos() {
    use protobuf::MessageDyn;
    use protobuf::reflect::{ReflectFieldRef, ReflectValueRef};

    fn unknown(m: &dyn MessageDyn, path: &str, out: &mut Vec<String>) {
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
                        unknown(&*sub, &here, out);
                    }
                }
                ReflectFieldRef::Repeated(r) => {
                    for v in r.into_iter() {
                        if let ReflectValueRef::Message(sub) = v {
                            unknown(&*sub, &here, out);
                        }
                    }
                }
                ReflectFieldRef::Map(_) => {}
            }
        }
    }

    let recs = records();
    let mut buf = Vec::new();
    let mut w = perfetto::PerfettoWriter::new(&mut buf, "t").unwrap();
    export_records(&TraceHeader::default(), recs.iter().map(ok), None, &mut w).unwrap();
    let trace = <perfetto_protos::trace::Trace as protobuf::Message>::parse_from_bytes(&buf)
        .expect("decodes as perfetto.protos.Trace");
    let mut bad = Vec::new();
    unknown(&trace, "Trace", &mut bad);
    assert!(bad.is_empty(), "unknown fields at {bad:?}");
    // What the official definitions see: 5 tracks, slices, counters.
    let tracks = trace
        .packet
        .iter()
        .filter(|p| p.has_track_descriptor())
        .count();
    assert_eq!(tracks, 5);
    let counters = trace
        .packet
        .iter()
        .filter(|p| p.has_track_event())
        .filter(|p| p.track_event().has_counter_value())
        .count();
    assert_eq!(counters, 4);
}
