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

/// `record --payload`: a flat binary and the same code as a 64-bit ELF.
#[test]
fn flat_and_elf_payloads() {
    if !kvmtrace_recorder::kvm_check::require_kvm("flat_and_elf_payloads") {
        return;
    }
    let mut a = asm();
    rdmsr_(&mut a, 0x10);
    report_r15(&mut a);
    done(&mut a);
    let code = assemble(a);
    let flat = tmp("payload.bin");
    std::fs::write(&flat, &code).unwrap();
    // A minimal ELF: one PT_LOAD at CODE_ADDR.
    let mut elf = vec![0u8; 120];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2;
    elf[5] = 1;
    elf[6] = 1; // EI_VERSION: EV_CURRENT (the `object` crate checks it)
    elf[18..20].copy_from_slice(&62u16.to_le_bytes());
    elf[20..24].copy_from_slice(&1u32.to_le_bytes()); // e_version
    elf[24..32].copy_from_slice(&kvmtrace_recorder::layout::CODE_ADDR.to_le_bytes());
    elf[32..40].copy_from_slice(&64u64.to_le_bytes());
    elf[54..56].copy_from_slice(&56u16.to_le_bytes());
    elf[56..58].copy_from_slice(&1u16.to_le_bytes());
    elf[64..68].copy_from_slice(&1u32.to_le_bytes());
    elf[72..80].copy_from_slice(&120u64.to_le_bytes());
    elf[80..88].copy_from_slice(&kvmtrace_recorder::layout::CODE_ADDR.to_le_bytes());
    elf[96..104].copy_from_slice(&(code.len() as u64).to_le_bytes());
    elf[104..112].copy_from_slice(&(code.len() as u64).to_le_bytes());
    elf.extend_from_slice(&code);
    let elf_path = tmp("payload.elf");
    std::fs::write(&elf_path, &elf).unwrap();
    for (payload, vcpus) in [(flat, 1), (elf_path, 2)] {
        let out = tmp("payload.kvt");
        let mut cfg = RecordConfig::new(&out);
        cfg.payload = Some(payload.clone());
        cfg.vcpus = Some(vcpus);
        kvmtrace_recorder::record(&cfg).unwrap();
        let (header, recs) = read_trace(&out);
        assert_eq!(header.vm.vcpus, vcpus);
        assert_eq!(header.payload.sha256.len(), 64);
        let ends = recs
            .iter()
            .filter(|r| {
                matches!(
                    r.event,
                    Event::End {
                        reason: EndReason::Finished
                    }
                )
            })
            .count();
        assert_eq!(ends, vcpus as usize, "{payload:?}");
    }
}
