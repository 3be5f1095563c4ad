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
    assert_eq!(tracks, 3, "process track + 2 vCPU tracks");
    let events: Vec<_> = trace
        .packet
        .iter()
        .filter_map(|p| p.track_event.as_ref())
        .collect();
    // 4 records + the INIT marker repeated on the process track.
    assert_eq!(events.len(), 5);
    assert!(
        events
            .iter()
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
        ["rdmsr 0x10", "wrmsr 0x401", "INIT", "exception #UD"]
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
