//! `msr-loop`: a guest reading MSR 0x10 (IA32_TSC) in a loop, as
//! recorded in intercept mode on this project's host (HOST.md: ~3.5 µs per
//! deflected RDMSR on kvm_pvm, TSC at about 2.5 GHz).

use kvmtrace_format::{
    DecidedBy, EndReason, Event, HostInfo, MsrExitReason, MsrOutcome, Origin, Record, TraceHeader,
    VmConfig,
};

use super::prng::SplitMix64;
use super::{Sink, SynthError};
use crate::cli::Pattern;

pub const IA32_TSC: u32 = 0x10;

pub fn header(events: u64, seed: u64) -> TraceHeader {
    let mut h = super::synth_header_base(Pattern::MsrLoop, events, seed);
    h.host = HostInfo {
        kernel_release: "6.18.44".into(),
        kvm_module: "kvm_pvm".into(),
        cpu_vendor: Some(kvmtrace_format::CpuVendor::Amd),
        cpu_model: "AMD EPYC (synthetic)".into(),
        valid_quirks: 0x5ff,
        ..HostInfo::default()
    };
    h.vm = VmConfig {
        vcpus: 1,
        memory_bytes: 2 << 20,
        ..VmConfig::default()
    };
    h.live_policy = "host".into();
    h
}

/// `events - 1` TSC reads then an `End`.
pub fn generate(events: u64, seed: u64, sink: &mut Sink<'_>) -> Result<(), SynthError> {
    let mut rng = SplitMix64::new(seed);
    let mut time_ns: u64 = rng.range(20_000, 40_000);
    // A TSC value like the host's after some uptime (HOST.md sample line).
    let mut tsc: u64 = 0x1227_083a_f590 + rng.range(0, 1 << 32);
    for seq in 0..events {
        let event = if seq + 1 == events {
            Event::End {
                reason: EndReason::Finished,
            }
        } else {
            Event::MsrRead {
                index: IA32_TSC,
                origin: Origin::Guest,
                outcome: MsrOutcome::Value(tsc),
                decided_by: DecidedBy::Vmm,
                capture: Some(MsrExitReason::Filter),
            }
        };
        sink(Record {
            seq,
            vcpu: 0,
            time_ns,
            event,
        })?;
        // 3-7 µs a loop iteration, now and then a longer stall (host preemption).
        let mut dt = rng.range(3_000, 7_000);
        if rng.chance(1, 1000) {
            dt += rng.range(20_000, 200_000);
        }
        time_ns += dt;
        // 2.5 cycles per ns, plus a little jitter from where the read lands.
        tsc = tsc.wrapping_add(dt * 5 / 2 + rng.range(0, 64));
    }
    Ok(())
}
