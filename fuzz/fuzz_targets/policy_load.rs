//! Any text given as a policy script or a TOML policy file: load it (header,
//! compilation, hook checks) and, for a script that loads, call every hook it
//! declares once on a fresh vCPU (the `policies --check` dry run) and replay
//! a few events through it. Nothing may panic; every error names a position;
//! the Rhai sandbox bounds time and memory.
#![no_main]

use kvmtrace_format::{Origin, TraceHeader};
use kvmtrace_replayer::{Engine, PolicyError, policy_file, script};
use libfuzzer_sys::fuzz_target;

fn positioned(e: &PolicyError) {
    if let PolicyError::Parse { line, column, .. } = e {
        assert!(*line >= 1 && *column >= 1, "{e}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut h = TraceHeader::default();
    h.host.kvm_module = "kvm_intel".into();
    h.vm.vcpus = 1;
    if let Err(e) = policy_file::parse(text, "fuzz.toml", "fuzz", &h) {
        positioned(&e);
    }
    match script::parse(text, "fuzz.rhai", "fuzz", &h) {
        Err(e) => positioned(&e),
        Ok(p) => {
            let set = p.hooks.set().cloned().unwrap_or_default();
            let e = Engine::new(p, &h);
            for r in set.rdmsr.iter().take(4) {
                e.msr_read(0, *r.start(), Origin::Guest);
            }
            for r in set.wrmsr.iter().take(4) {
                e.msr_write(0, *r.end(), u64::MAX, Origin::Guest);
            }
            for r in set.host_rdmsr.iter().take(4) {
                e.msr_read(0, *r.start(), Origin::Host);
            }
            for r in set.host_wrmsr.iter().take(4) {
                e.msr_write(0, *r.start(), 0, Origin::Host);
            }
            e.mwait(0);
            e.monitor(0);
            e.shutdown(0);
            e.reset_state(0);
            e.init_state(0, &Default::default());
            if let Some(err) = e.hook_error() {
                assert!(err.location.starts_with("fuzz.rhai:"), "{err}");
            }
        }
    }
});
