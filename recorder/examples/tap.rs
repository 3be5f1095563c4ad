//! Run a VMM under the ioctl tap and print what it saw, one event a line:
//! `cargo run --example tap -- qemu-system-x86_64 -machine accel=kvm …`.
//! (Wrap mode, `kvmtrace record -o OUT -- CMD …`, merges the same events with
//! the kernel's tracepoints; this shows the tap alone.)

use std::ffi::OsString;

use kvmtrace_recorder::vmm_tap;

fn main() {
    let argv: Vec<OsString> = std::env::args_os().skip(1).collect();
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut t = match vmm_tap::spawn(&argv, tx) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tap: {e}");
            std::process::exit(2);
        }
    };
    eprintln!("tap: pid {} {:?}", t.pid(), t.tap_status());
    for e in rx.iter() {
        println!(
            "{} pid {} tid {} vm {} vcpu {:?} {:?}",
            e.time_ns, e.pid, e.tid, e.vm, e.vcpu, e.event
        );
    }
    let status = t.wait().map(|s| s.to_string()).unwrap_or_default();
    for n in t.notes() {
        eprintln!("tap note: {n}");
    }
    eprintln!("tap: {status}; configs {:?}", t.vm_configs().len());
}
