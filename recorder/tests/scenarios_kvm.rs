//! Every built-in scenario recorded on `/dev/kvm` (intercept mode, live policy
//! `host`), with what the guest must have done checked in the trace. Skips,
//! loudly, where `/dev/kvm` is missing (`require_kvm`).
//!
//! The checks are about the guest (its accesses happened, in order, on the right
//! vCPU, and the guest got to the end), plus the outcomes that HOST.md measured on
//! this machine; they do not re-test the policy models.

use std::path::PathBuf;

use kvmtrace_format::{
    CaptureMode, EndReason, Event, MsrOutcome, MwaitOutcome, Origin, Record, TraceReader,
};
use kvmtrace_recorder::kvm_check::require_kvm;
use kvmtrace_recorder::layout::ports;
use kvmtrace_recorder::{OnFull, RecordConfig, RecordError, record};

fn out_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "kvmtrace-scenario-{}-{name}.kvt",
        std::process::id()
    ))
}

/// The records of one recording.
struct Trace {
    name: String,
    records: Vec<Record>,
}

impl Trace {
    fn events(&self, vcpu: u32) -> impl Iterator<Item = &Event> {
        self.records
            .iter()
            .filter(move |r| r.vcpu == vcpu)
            .map(|r| &r.event)
    }

    /// Values the guest reported on `ports::REPORT`, in order.
    fn reports(&self, vcpu: u32) -> Vec<u32> {
        self.events(vcpu)
            .filter_map(|e| match e {
                Event::Io {
                    port,
                    write: true,
                    data,
                    ..
                } if *port == ports::REPORT => Some(*data),
                _ => None,
            })
            .collect()
    }

    /// Outcomes of guest accesses to `index` (reads and writes, in order).
    fn guest_msr(&self, index: u32) -> Vec<(bool, MsrOutcome)> {
        self.records
            .iter()
            .filter_map(|r| match &r.event {
                Event::MsrRead {
                    index: i,
                    origin: Origin::Guest,
                    outcome,
                    ..
                } if *i == index => Some((false, *outcome)),
                Event::MsrWrite {
                    index: i,
                    origin: Origin::Guest,
                    outcome,
                    ..
                } if *i == index => Some((true, *outcome)),
                _ => None,
            })
            .collect()
    }

    /// The guest's CPUID vendor is AuthenticAMD or HygonGenuine.
    fn guest_is_amd(&self) -> bool {
        self.records.iter().any(|r| match &r.event {
            Event::Cpuid { entries } => entries.iter().any(|e| {
                e.function == 0
                    && matches!(
                        (e.ebx, e.edx, e.ecx),
                        (0x6874_7541, 0x6974_6e65, 0x444d_4163)
                            | (0x6f67_7948, 0x6e65_476e, 0x656e_6975)
                    )
            }),
            _ => false,
        })
    }

    fn guest_write(&self, index: u32, value: u64) -> Vec<MsrOutcome> {
        self.records
            .iter()
            .filter_map(|r| match &r.event {
                Event::MsrWrite {
                    index: i,
                    value: v,
                    origin: Origin::Guest,
                    outcome,
                    ..
                } if *i == index && *v == value => Some(*outcome),
                _ => None,
            })
            .collect()
    }

    /// Values the guest wrote to `index`, in order.
    fn guest_write_values(&self, index: u32) -> Vec<u64> {
        self.records
            .iter()
            .filter_map(|r| match &r.event {
                Event::MsrWrite {
                    index: i,
                    value,
                    origin: Origin::Guest,
                    ..
                } if *i == index => Some(*value),
                _ => None,
            })
            .collect()
    }

    fn count(&self, f: impl Fn(&Event) -> bool) -> usize {
        self.records.iter().filter(|r| f(&r.event)).count()
    }

    fn mwaits(&self) -> Vec<MwaitOutcome> {
        self.records
            .iter()
            .filter_map(|r| match &r.event {
                Event::Mwait { outcome, .. } => Some(*outcome),
                _ => None,
            })
            .collect()
    }

    /// Every vCPU ended, and ended finished.
    fn all_finished(&self, vcpus: u32) {
        for v in 0..vcpus {
            let end = self.events(v).find_map(|e| match e {
                Event::End { reason } => Some(reason.clone()),
                _ => None,
            });
            assert_eq!(
                end,
                Some(EndReason::Finished),
                "{}: vCPU {v} did not finish",
                self.name
            );
        }
    }
}

fn record_scenario(name: &str, iterations: Option<u64>) -> Option<Trace> {
    let output = out_path(name);
    let cfg = RecordConfig {
        scenario: Some(name.to_string()),
        payload: None,
        output: output.clone(),
        policy: "host".to_string(),
        // KVMTRACE_SCENARIO_MODE=observe: record what the kernel decided instead
        // (the checks assume intercept mode; use it with KVMTRACE_DUMP to compare).
        mode: match std::env::var("KVMTRACE_SCENARIO_MODE").as_deref() {
            Ok("observe") => CaptureMode::Observe,
            _ => CaptureMode::Intercept,
        },
        vcpus: None,
        iterations,
        on_full: OnFull::Wait,
        discard_events: false,
    };
    match record(&cfg) {
        Ok(summary) => {
            let records = TraceReader::open(&output)
                .and_then(|mut r| r.read_all())
                .unwrap_or_else(|e| panic!("reading the {name} recording: {e}"));
            let _ = std::fs::remove_file(&output);
            assert_eq!(summary.events, records.len() as u64, "{name}");
            Some(Trace {
                name: name.to_string(),
                records,
            })
        }
        // Until the vCPU loop lands: say so, never pass silently.
        Err(RecordError::NotImplemented) => {
            println!("KVM-TEST-SKIPPED scenario_{name}: recording is not implemented yet");
            None
        }
        Err(e) => panic!("recording {name}: {e}"),
    }
}

/// Records `name` and runs `expect` on the trace.
fn check(name: &str, iterations: Option<u64>, expect: impl FnOnce(&Trace)) {
    if !require_kvm(&format!("scenario_{name}")) {
        return;
    }
    if let Some(t) = record_scenario(name, iterations) {
        // KVMTRACE_DUMP=1: print the events (reset states elided) to debug a check.
        if std::env::var_os("KVMTRACE_DUMP").is_some() {
            for r in &t.records {
                match &r.event {
                    Event::Reset { .. } => {}
                    Event::Cpuid { entries } => {
                        let l1 = entries.iter().find(|e| e.function == 1);
                        println!("{} vcpu{} Cpuid (leaf 1: {l1:x?})", r.seq, r.vcpu);
                    }
                    e => println!("{} vcpu{} {e:?}", r.seq, r.vcpu),
                }
            }
        }
        expect(&t);
    }
}

#[test]
fn every_listed_scenario_has_a_test_here() {
    let here = include_str!("scenarios_kvm.rs");
    for s in kvmtrace_recorder::scenarios() {
        assert!(
            here.contains(&format!("check(\"{}\"", s.name)),
            "no KVM test for scenario {}",
            s.name
        );
    }
}

fn is_monitor(e: &Event) -> bool {
    matches!(e, Event::Monitor { .. })
}

#[test]
fn mwait() {
    check("mwait", None, |t| {
        t.all_finished(1);
        assert_eq!(t.count(is_monitor), 1);
        // Quirks at their defaults: both are NOPs, the guest saw no fault.
        assert_eq!(t.mwaits(), [MwaitOutcome::Nop]);
        assert_eq!(t.reports(0), [0]);
    });
}

/// MISC_ENABLE first read, then (write, pair) x2, then last read.
fn misc_enable(t: &Trace, expect: [MwaitOutcome; 2]) {
    t.all_finished(1);
    assert_eq!(t.count(is_monitor), 2, "{}", t.name);
    assert_eq!(t.mwaits(), expect, "{}", t.name);
    assert_eq!(t.guest_msr(0x1a0).len(), 6, "{}", t.name);
    assert_eq!(t.reports(0).len(), 6, "{}", t.name);
}

#[test]
fn misc_enable_mwait() {
    check("misc-enable-mwait", None, |t| {
        misc_enable(t, [MwaitOutcome::Nop; 2])
    });
}

#[test]
fn misc_enable_no_mwait() {
    check("misc-enable-no-mwait", None, |t| {
        misc_enable(t, [MwaitOutcome::Nop; 2])
    });
}

#[test]
fn mwait_ud() {
    // SEMANTICS.md §1 (6.15+): MWAIT quirk off, MISC_ENABLE_NO_MWAIT on: CPUID
    // decides, and MWAIT is cleared from it.
    check("mwait-ud", None, |t| {
        misc_enable(t, [MwaitOutcome::InjectUd; 2])
    });
}

#[test]
fn mwait_strict() {
    // Both quirks off: MISC_ENABLE[18] decides, on then off. Setting bit 18
    // needs SSE3 in the guest CPUID (SEMANTICS.md §1), which this host's supported
    // CPUID lacks, so whether the first pair is a NOP follows that write.
    check("mwait-strict", None, |t| {
        let set = t.guest_write(0x1a0, t.guest_write_values(0x1a0)[0]);
        let first = if set == [MsrOutcome::Ok] {
            MwaitOutcome::Nop
        } else {
            MwaitOutcome::InjectUd
        };
        misc_enable(t, [first, MwaitOutcome::InjectUd])
    });
}

#[test]
fn feat_ctl() {
    check("feat-ctl", None, |t| {
        t.all_finished(1);
        let host_writes = t.count(|e| {
            matches!(
                e,
                Event::MsrWrite {
                    index: 0x3a,
                    origin: Origin::Host,
                    ..
                }
            )
        });
        assert_eq!(host_writes, 15);
        assert_eq!(t.guest_msr(0x3a).len(), 7 + 9);
    });
}

#[test]
fn mce() {
    check("mce", None, |t| {
        t.all_finished(1);
        // HOST.md: MCG_CAP reads 0x10a after SETUP_MCE.
        assert_eq!(t.reports(0).first(), Some(&0x10a));
        // MC0_CTL = 1 is bad everywhere since 6.0: #GP.
        assert_eq!(t.guest_write(0x400, 1), [MsrOutcome::InjectGp]);
        // MC0_STATUS = 1: refused, then accepted once HWCR[18] is set, but only
        // for a guest whose CPUID vendor is AMD or Hygon (x86.c
        // can_set_mci_status); our guests get the host's vendor, and the build
        // machines come as AMD and as Intel.
        let after_hwcr = if t.guest_is_amd() {
            MsrOutcome::Ok
        } else {
            MsrOutcome::InjectGp
        };
        assert_eq!(t.guest_write(0x401, 1), [MsrOutcome::InjectGp, after_hwcr]);
        assert_eq!(t.guest_write(0x400, 0), [MsrOutcome::Ok]);
        assert!(matches!(
            t.guest_msr(0x428).first(),
            Some((false, MsrOutcome::InjectGp))
        ));
    });
}

#[test]
fn x2apic_deflect() {
    check("x2apic-deflect", None, |t| {
        t.all_finished(1);
        // Four reads of 0x802; the one made with x2APIC on is answered by the
        // in-kernel LAPIC without an exit (x2APIC MSRs cannot be filtered,
        // SEMANTICS.md §4), so intercept mode sees the other three. Observe
        // mode sees all four through `kvm_msr`.
        assert_eq!(t.guest_msr(0x802).len(), 3);
        // With x2APIC off, reading the ID faults.
        assert!(!matches!(t.guest_msr(0x802)[0].1, MsrOutcome::Value(_)));
        let bases = t.reports(0);
        assert_eq!(bases.len(), 6, "{bases:x?}");
        assert_eq!(bases[0] & 0xc00, 0x800, "xAPIC at start: {bases:x?}");
        assert_eq!(bases[4] & 0xc00, 0x800, "xAPIC at the end: {bases:x?}");
    });
}

#[test]
fn x2apic_regs() {
    check("x2apic-regs", None, |t| {
        t.all_finished(1);
        // x2APIC accesses are answered by the in-kernel LAPIC without an exit
        // in intercept mode; the filterable MSRs after them are seen: PRED_CMD
        // is write-only (read faults), FLUSH_CMD = L1D_FLUSH is accepted.
        assert!(
            t.guest_msr(0x49)
                .iter()
                .any(|(_, o)| *o == MsrOutcome::InjectGp)
        );
        assert_eq!(t.guest_write(0x10b, 1), [MsrOutcome::Ok]);
    });
}

#[test]
fn apic_ipi() {
    check("apic-ipi", Some(20), |t| {
        t.all_finished(2);
        // The APIC base matrix faulted (#GP marker 14), the TPR read back
        // through CR8 is 0, and no wait timed out (R14 = 0): every IPI, NMI,
        // broadcast and timer interrupt reached its handler.
        assert_eq!(t.reports(0), [14, 0, 0]);
        // Illegal transitions and reserved bits fault; the legal ones do not.
        let gp = |v: u64| t.guest_write(0x1b, v).contains(&MsrOutcome::InjectGp);
        assert!(gp(0xfee0_0500), "EXTD without ENABLE");
        assert!(
            gp(0xfee0_0900) || gp(0xfee0_0d00),
            "x2APIC->xAPIC, disabled->x2APIC"
        );
        assert!(gp(0xfee0_0d01) && gp(0xfee0_0b00), "reserved bits 0 and 9");
        assert!(!gp(0xfed4_0900), "relocation");
    });
}

#[test]
fn self_init() {
    check("self-init", None, |t| {
        t.all_finished(2);
        // vCPU 1: no fault while programming its LAPIC, then the APIC base
        // read in real mode after each INIT: x2APIC kept, BSP bit clear
        // (kvm_lapic_reset(init_event = true) keeps the base).
        assert_eq!(t.reports(1), [0, 0xfee0_0c00, 0xfee0_0c00]);
        // vCPU 0: both SIPIs started vCPU 1.
        assert_eq!(t.reports(0), [0]);
    });
}

#[test]
fn msr_suite() {
    // The suites run to their end on both CPUID variants (their outcomes are
    // checked against the model by the fidelity corpus, which holds both).
    let ran = |t: &Trace| {
        t.all_finished(1);
        assert!(t.count(|e| matches!(e, Event::MsrWrite { .. })) > 0);
    };
    check("msr-suite", None, ran);
    check("msr-suite-bare", None, ran);
}

#[test]
fn msr_sweep() {
    check("msr-sweep", None, |t| {
        t.all_finished(1);
        let reads = t.count(|e| {
            matches!(
                e,
                Event::MsrRead {
                    origin: Origin::Guest,
                    ..
                }
            )
        });
        assert!(reads >= 100, "{reads} reads");
    });
}

#[test]
fn triple_fault() {
    check("triple-fault", None, |t| {
        t.all_finished(1);
        assert_eq!(t.count(|e| matches!(e, Event::Shutdown { .. })), 1);
        // Before, after, and no exception stub ran.
        assert_eq!(t.reports(0), [0x7f_0001, 0x7f_0002, 0]);
    });
}

const CR0_CD: u32 = 1 << 30;
const CR0_NW: u32 = 1 << 29;

/// vCPU 1 reports from real mode: CR0, RDX at INIT, the marker.
fn check_init_sipi(t: &Trace, cr0_at_init: u32) {
    t.all_finished(2);
    let inits: Vec<_> = t
        .events(1)
        .filter_map(|e| match e {
            Event::Init { before, after, .. } => Some((before.cr0, after.cr0)),
            _ => None,
        })
        .collect();
    assert_eq!(inits.len(), 1, "{}: {inits:x?}", t.name);
    assert_eq!(
        t.count(|e| matches!(e, Event::Sipi { vector: 8, .. })),
        1,
        "{}",
        t.name
    );
    let ap = t.reports(1);
    let ap = &ap[ap.len() - 3..];
    assert_eq!(
        ap[0] & (CR0_CD | CR0_NW),
        cr0_at_init,
        "{}: {ap:x?}",
        t.name
    );
    assert_eq!(ap[2], 0x51b1, "{}: {ap:x?}", t.name);
    // vCPU 0: the done flag, then status 0 (no timeout).
    assert_eq!(t.reports(0), [0x5151, 0], "{}", t.name);
}

#[test]
fn init_sipi() {
    // 5.15+: CD kept, NW kept clear.
    check("init-sipi", None, |t| check_init_sipi(t, CR0_CD));
}

#[test]
fn init_sipi_cold() {
    // INIT from RESET: CD and NW both set before and after.
    check("init-sipi-cold", None, |t| {
        check_init_sipi(t, CR0_CD | CR0_NW)
    });
}

#[test]
fn msr_loop() {
    check("msr-loop", Some(2_000), |t| {
        t.all_finished(1);
        assert_eq!(t.guest_msr(0x10).len(), 2_000);
    });
}

#[test]
fn bit_probe() {
    check("bit-probe", None, |t| {
        t.all_finished(1);
        assert!(t.records.len() >= 150, "{} events", t.records.len());
        assert!(
            t.count(|e| matches!(
                e,
                Event::MsrWrite {
                    origin: Origin::Host,
                    ..
                }
            )) >= 10
        );
    });
}

#[test]
fn tour() {
    check("tour", None, |t| {
        t.all_finished(2);
        for (what, n) in [
            ("monitor", t.count(is_monitor)),
            ("shutdown", t.count(|e| matches!(e, Event::Shutdown { .. }))),
            ("init", t.count(|e| matches!(e, Event::Init { .. }))),
            ("sipi", t.count(|e| matches!(e, Event::Sipi { .. }))),
            (
                "host write",
                t.count(|e| {
                    matches!(
                        e,
                        Event::MsrWrite {
                            origin: Origin::Host,
                            ..
                        }
                    )
                }),
            ),
        ] {
            assert!(n >= 1, "tour: no {what}");
        }
        assert_eq!(t.guest_write(0x400, 1), [MsrOutcome::InjectGp]);
        assert_eq!(
            *t.reports(0).last().unwrap(),
            0,
            "tour: INIT/SIPI timed out"
        );
    });
}

/// One thing the guest saw: a value it reported (its scenarios report fault
/// markers and values read), with the MSR access or MONITOR/MWAIT just before
/// it, if the trace has one (intercept mode), to name where two views part.
/// Exceptions are left out: the scenarios' code is straight-line apart from the
/// INIT/SIPI waits, so the reports of two runs align one to one.
#[derive(Debug)]
struct Seen {
    data: u32,
    /// Exceptions the guest's IDT stubs reported since the previous report.
    faults: u32,
    after: Option<String>,
}

/// What the guest saw, per vCPU, in order.
fn guest_view(t: &Trace, vcpus: u32) -> Vec<Vec<Seen>> {
    (0..vcpus)
        .map(|v| {
            let mut last = None;
            let mut faults = 0;
            let mut seen = Vec::new();
            for e in t.events(v) {
                match e {
                    Event::Io {
                        port,
                        write: true,
                        data,
                        ..
                    } if *port == ports::REPORT => {
                        seen.push(Seen {
                            data: *data,
                            faults,
                            after: last.clone(),
                        });
                        faults = 0;
                    }
                    Event::Io {
                        port, write: true, ..
                    } if *port == ports::EXCEPTION => faults += 1,
                    Event::MsrRead { index, origin, .. } => {
                        last = Some(format!("{origin:?} RDMSR {index:#x}"));
                    }
                    Event::MsrWrite {
                        index,
                        value,
                        origin,
                        ..
                    } => last = Some(format!("{origin:?} WRMSR {index:#x} = {value:#x}")),
                    Event::Monitor { .. } => last = Some("MONITOR".into()),
                    Event::Mwait { .. } => last = Some("MWAIT".into()),
                    _ => {}
                }
            }
            seen
        })
        .collect()
}

/// The live `host` policy against the kernel, seen from the guest: each scenario
/// recorded in intercept mode and in observe mode (the kernel decides MSRs) must
/// show the guest the same reports and the same exceptions. A difference is a
/// place where the `host` model disagrees with this machine's kernel. Prints
/// every scenario's first difference; fails if any (DESIGN.md: the same guest
/// recorded in intercept and observe mode gives the same guest-visible outcomes
/// under `host`).
/// `cargo test -p kvmtrace-recorder --test scenarios_kvm guest_view -- --nocapture`
#[test]
fn guest_view_intercept_vs_observe() {
    if !require_kvm("guest_view_intercept_vs_observe") {
        return;
    }
    let mut differ = Vec::new();
    for s in kvmtrace_recorder::scenarios() {
        // The MSR suites read EFER in long mode, which the host model leaves
        // learned (LMA follows CR0.PG, unseen; docs/learned-not-modelled.md):
        // under intercept our VMM answers those reads itself, so the guest's
        // view can differ from the kernel's there. Said, not hidden.
        if s.name.starts_with("msr-suite") {
            eprintln!(
                "guest_view_intercept_vs_observe: {} not compared (EFER reads with LME set are learned, not modelled)",
                s.name
            );
            continue;
        }
        let mut views = Vec::new();
        for mode in [CaptureMode::Intercept, CaptureMode::Observe] {
            let output = out_path(&format!("{}-{mode:?}", s.name));
            let cfg = RecordConfig {
                scenario: Some(s.name.to_string()),
                payload: None,
                output: output.clone(),
                policy: "host".to_string(),
                mode,
                vcpus: None,
                iterations: Some(100),
                on_full: OnFull::Wait,
                discard_events: false,
            };
            record(&cfg).unwrap_or_else(|e| panic!("recording {} ({mode:?}): {e}", s.name));
            let records = TraceReader::open(&output)
                .and_then(|mut r| r.read_all())
                .unwrap_or_else(|e| panic!("reading {}: {e}", output.display()));
            let _ = std::fs::remove_file(&output);
            let vcpus = records.iter().map(|r| r.vcpu + 1).max().unwrap_or(0);
            views.push(guest_view(
                &Trace {
                    name: s.name.to_string(),
                    records,
                },
                vcpus,
            ));
        }
        let (intercept, observe) = (&views[0], &views[1]);
        let mut diffs = Vec::new();
        for (v, (a, b)) in intercept.iter().zip(observe).enumerate() {
            if a.len() != b.len() {
                diffs.push(format!("vCPU {v}: {} reports / {}", a.len(), b.len()));
            }
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                if (x.data, x.faults) != (y.data, y.faults) {
                    diffs.push(format!(
                        "vCPU {v} report {i} (after {}): intercept {:#x} ({} faults before) / observe {:#x} ({} faults before)",
                        x.after.as_deref().unwrap_or("-"),
                        x.data,
                        x.faults,
                        y.data,
                        y.faults
                    ));
                }
            }
        }
        if diffs.is_empty() {
            println!("{:<22} same", s.name);
        } else {
            println!("{:<22} DIFFERS in {} reports:", s.name, diffs.len());
            for d in diffs.iter().take(40) {
                println!("    {d}");
            }
            differ.push(s.name);
        }
    }
    assert!(differ.is_empty(), "host policy != kernel in {differ:?}");
}
