//! Record a built-in scenario and print its events (a debugging aid).
//! `cargo run -p kvmtrace-recorder --example show SCENARIO [POLICY] [observe]`

use kvmtrace_format::Event;
use kvmtrace_recorder::{RecordConfig, record, sink::read_all};

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "mwait".into());
    let out = std::env::temp_dir().join(format!("show-{name}.kvt"));
    let mut cfg = RecordConfig::new(&out);
    cfg.scenario = Some(name);
    for a in args {
        if a == "observe" {
            cfg.mode = kvmtrace_format::CaptureMode::Observe;
        } else {
            cfg.policy = a;
        }
    }
    match record(&cfg) {
        Ok(s) => println!("{s:?}"),
        Err(e) => println!("error: {e}"),
    }
    let (h, recs) = read_all(&out).expect("read back");
    println!(
        "live policy {:?}, quirks off {:#x}",
        h.live_policy, h.vm.disabled_quirks
    );
    for r in recs {
        match r.event {
            Event::Cpuid { .. } => println!("{:>5} v{} Cpuid", r.seq, r.vcpu),
            Event::Reset { .. } | Event::Init { .. } => {
                println!("{:>5} v{} {:?}", r.seq, r.vcpu, r.event.kind())
            }
            e => println!("{:>5} v{} {e:?}", r.seq, r.vcpu),
        }
    }
}
