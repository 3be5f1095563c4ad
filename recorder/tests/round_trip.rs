//! A tiny long-mode guest doing RDMSR/WRMSR, recorded and read back.

mod common;

use common::*;
use kvmtrace_format::{DecidedBy, EndReason, Event, MsrExitReason, MsrOutcome, Origin};
use kvmtrace_recorder::{RecordConfig, layout::ports, record_spec};

#[test]
fn rdmsr_wrmsr_round_trip() {
    if !kvmtrace_recorder::kvm_check::require_kvm("rdmsr_wrmsr_round_trip") {
        return;
    }
    let mut a = asm();
    rdmsr_(&mut a, 0x10); // TSC
    wrmsr_(&mut a, 0x3a, 0); // IA32_FEAT_CTL: refused to the host too (HOST.md)
    report_r15(&mut a);
    rdmsr_(&mut a, 0x1b); // APIC base
    done(&mut a);
    let spec = spec("round-trip", assemble(a));
    let out = tmp("round_trip.kvt");
    let summary = record_spec(&RecordConfig::new(&out), &spec).unwrap();
    let (header, recs) = read_trace(&out);
    assert_eq!(summary.events as usize, recs.len());
    assert_eq!(header.vm.vcpus, 1);
    assert!(!header.host.kernel_release.is_empty());
    assert!(recs.windows(2).all(|w| w[0].seq < w[1].seq));
    let msrs: Vec<&Event> = recs
        .iter()
        .map(|r| &r.event)
        .filter(|e| matches!(e, Event::MsrRead { .. } | Event::MsrWrite { .. }))
        .collect();
    assert_eq!(msrs.len(), 3, "{msrs:?}");
    assert!(matches!(
        msrs[0],
        Event::MsrRead {
            index: 0x10,
            origin: Origin::Guest,
            outcome: MsrOutcome::Value(_),
            decided_by: DecidedBy::Vmm,
            capture: Some(MsrExitReason::Filter)
        }
    ));
    assert!(matches!(
        msrs[1],
        Event::MsrWrite {
            index: 0x3a,
            outcome: MsrOutcome::InjectGp,
            ..
        }
    ));
    assert!(matches!(
        msrs[2],
        Event::MsrRead { index: 0x1b, outcome: MsrOutcome::Value(v), .. } if *v & !0xfff == 0xfee0_0000
    ));
    // The #GP reached the guest's handler: R15 = 13 + 1 reported.
    assert!(recs.iter().any(|r| matches!(
        r.event,
        Event::Io {
            port: ports::REPORT,
            data: 14,
            ..
        }
    )));
    assert!(matches!(
        recs[0].event,
        Event::Reset {
            decided_by: DecidedBy::Kernel,
            ..
        }
    ));
    assert!(matches!(
        recs.last().unwrap().event,
        Event::End {
            reason: EndReason::Finished
        }
    ));
}
