//! The fidelity corpus in CI (issue 12 item 5): recordings of real workloads —
//! QEMU with SeaBIOS, QEMU with our guest (wrap mode), our own VMM in observe
//! mode — checked with `kvmtrace fidelity --policy host` against thresholds.
//! The stored corpus (`tests/corpus/fidelity/`) is checked everywhere; the QEMU
//! test records the same workloads again here and checks them alike.

use std::path::{Path, PathBuf};

use kvmtrace_tests::{TempDir, kvmtrace, qemu_guest, record_observe, require_qemu, wrap_record};

/// `host` agreement on every recording and on the corpus (issue 12's target).
const MIN_AGREEMENT: f64 = 0.99;
/// Coverage of the corpus as a whole: issue 12's target, reported (each
/// recording below it is named in the output), not yet enforced.
const TARGET_COVERAGE: f64 = 0.8;
/// Coverage of the corpus as a whole, enforced: the target since the `host`
/// model decides QEMU's host-initiated KVM_SET_MSRS/KVM_GET_MSRS entries
/// (`replayer/src/model/host.rs`; 0.867 on the build machine).
const MIN_COVERAGE: f64 = TARGET_COVERAGE;
/// Coverage floor per recording: what the model reaches today (rounded down),
/// so a regression fails; the target is [`TARGET_COVERAGE`] everywhere.
const FLOORS: &[(&str, f64)] = &[
    // Wrap recordings with the ioctl tap: QEMU's ~1,100 host MSR accesses
    // (0.889 today). Left unmodelled: speculation MSRs, KERNEL_GS_BASE,
    // UCODE_REV/ARCH_CAPABILITIES writes, TSC reads (time), registers the
    // guest may change without an exit, read after it ran.
    // (0.982 with the speculation MSRs and UCODE_REV host writes modelled.)
    // Format 1.4 re-recording (every KVM_ENABLE_CAP, KVM_SET_VCPU_EVENTS
    // decided from them): 0.989 (its 5 KVM_SET_SREGS2 resets and 2 caps,
    // MANUAL_DIRTY_LOG_PROTECT2 and MAX_VCPU_ID, unmodelled).
    ("qemu-seabios.kvt", 0.9),
    // The same plus our guest's (0.992 today, 0.991 before format 1.4).
    ("qemu-guest.kvt", 0.9),
    // QEMU without -no-reboot, `-append init-bsp`: the BSP INITs itself in
    // x2APIC mode, firmware resets the machine, the second boot reads
    // 0xfee00900 (0.924 today: SeaBIOS's MTRR and PV reads after the reset).
    // 0.982 since MSR-held state survives the tapped system reset and INIT
    // keeps the MTRRs (kvm_vcpu_reset); 0.975 on the format 1.4 re-recording
    // (0.971 on the 1.3 one with the same model).
    ("qemu-init-bsp.kvt", 0.95),
    // kvm-unit-tests' `apic-split` QEMU options (`-cpu qemu64,+x2apic,+tsc-deadline
    // -machine kernel_irqchip=split`): LAPIC in the kernel, IOAPIC/PIC in QEMU
    // (0.996 today; its KVM_ENABLE_CAP(SPLIT_IRQCHIP) and KVM_SET_SREGS2 resets
    // unmodelled).
    ("qemu-apic-split.kvt", 0.98),
    ("observe-guest.kvt", 0.9),
    // The msr-loop part of the tour reads the TSC 100 times: a value no model
    // can know (the MSR-class table's "other": 0.184). 0.994 today (0.981
    // before the VMM's own INIT IPIs, irqchip none, stopped making the BSP's
    // APIC base and PV MSRs unknown).
    ("observe-tour.kvt", 0.95),
    // 1.0 today (MCG_CAP writes: no write case, r=2).
    ("observe-mce.kvt", 0.99),
    ("observe-x2apic-deflect.kvt", 0.9),
    // 0.893 today: the first EFER/FS/GS_BASE reads (learned) and a dozen
    // indices without a KVM handler this host #GPs (not ruled yet: pvm.c).
    ("observe-msr-sweep.kvt", 0.88),
    ("observe-feat-ctl.kvt", 1.0),
    ("observe-init-sipi.kvt", 1.0),
    // 0.972 today (MISC_FEATURES_ENABLES, SMI_COUNT, EFER ruled).
    ("observe-bit-probe.kvt", 0.95),
    // MSR families of a public MSR test suite, with its read/write/read/
    // restore register table (0.990 today); the rest is the first EFER and
    // FS/GS/KERNEL_GS_BASE reads (learned, docs/learned-not-modelled.md) and
    // EFER writes changing LME.
    ("observe-msr-suite.kvt", 0.96),
    ("observe-msr-suite-bare.kvt", 0.96),
    // x2APIC IPI/EOI loop, self-IPI, NMI, broadcast, timer, TSC deadline
    // (0.990 today, re-recorded with TMCCT read after the one-shot timer
    // expired and after the switch to periodic: TPR after MOV CR8, PPR, a
    // running timer's TMCCT and a pending deadline are learned).
    ("observe-apic-ipi.kvt", 0.97),
    // Self-INIT (exact) then INIT from the other vCPU, settled by the first
    // read only the INIT state explains (0.896 today; 0.771 before).
    ("observe-self-init.kvt", 0.88),
    ("observe-x2apic-regs.kvt", 0.9),
];

/// Per-class floors for the recordings made for those classes: (recording,
/// class, minimum coverage); agreement is held at [`MIN_AGREEMENT`] per class.
const CLASS_FLOORS: &[(&str, &str, f64)] = &[
    ("observe-msr-suite.kvt", "speculation", 1.0),
    ("observe-msr-suite.kvt", "pmu", 1.0),
    ("observe-msr-suite.kvt", "mtrr", 1.0),
    ("observe-msr-suite.kvt", "pv", 0.95),
    ("observe-msr-suite.kvt", "other", 0.85),
    ("observe-msr-suite-bare.kvt", "speculation", 1.0),
    ("observe-msr-suite-bare.kvt", "pmu", 1.0),
    ("observe-msr-suite-bare.kvt", "mtrr", 1.0),
    ("observe-msr-suite-bare.kvt", "pv", 0.95),
    ("observe-msr-suite-bare.kvt", "other", 0.85),
    ("observe-apic-ipi.kvt", "lapic", 0.95),
    ("observe-x2apic-regs.kvt", "lapic", 0.85),
];

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/fidelity")
}

/// `host`'s agreement and coverage over `traces` (one `fidelity` run).
fn host_scores(traces: &[PathBuf]) -> (f64, f64, serde_json::Value) {
    let mut args: Vec<String> = vec![
        "fidelity".into(),
        "--policy".into(),
        "host".into(),
        "--json".into(),
    ];
    args.extend(traces.iter().map(|p| p.display().to_string()));
    let r = kvmtrace(&args);
    assert_eq!(r.code, 0, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    let p = v["policies"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == "host"))
        .cloned()
        .expect("host scored");
    // No modelled outcome at all scores agreement 1 (nothing disagreed).
    let agreement = p["agreement"].as_f64().unwrap_or(1.0);
    let coverage = p["coverage"].as_f64().unwrap_or(0.0);
    (agreement, coverage, p)
}

/// Check each recording against its floor and the whole against the targets;
/// returns the report lines (printed by the caller).
fn check(traces: &[PathBuf]) -> Vec<String> {
    let mut report = Vec::new();
    let mut failures = Vec::new();
    let mut below_target = Vec::new();
    for t in traces {
        let name = t.file_name().unwrap().to_string_lossy().into_owned();
        let floor = FLOORS
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("{name}: no coverage floor in FLOORS"))
            .1;
        let (a, c, p) = host_scores(std::slice::from_ref(t));
        report.push(format!(
            "{name:28} agreement {a:.4} coverage {c:.3} (floor {floor}) outcomes {}",
            p["outcomes"]
        ));
        if a < MIN_AGREEMENT {
            failures.push(format!(
                "{name}: agreement {a} < {MIN_AGREEMENT}: {}",
                p["disagreements"]
            ));
        }
        if c + 1e-9 < floor {
            failures.push(format!("{name}: coverage {c:.3} < floor {floor}"));
        }
        if c < TARGET_COVERAGE {
            below_target.push(format!("{name} {c:.3}"));
        }
        for &(_, class, min) in CLASS_FLOORS.iter().filter(|(n, ..)| *n == name) {
            let k = &p["by_msr_class"][class];
            let (ka, kc) = (
                k["agreement"].as_f64().unwrap_or(1.0),
                k["coverage"].as_f64().unwrap_or(0.0),
            );
            report.push(format!(
                "  {class:12} agreement {ka:.4} coverage {kc:.3} (floor {min})"
            ));
            if ka < MIN_AGREEMENT || kc + 1e-9 < min {
                failures.push(format!(
                    "{name} {class}: agreement {ka}, coverage {kc:.3} < floor {min}"
                ));
            }
        }
    }
    let (a, c, p) = host_scores(traces);
    report.push(format!(
        "{:28} agreement {a:.4} coverage {c:.3} outcomes {}",
        "CORPUS", p["outcomes"]
    ));
    if a < MIN_AGREEMENT {
        failures.push(format!("corpus agreement {a} < {MIN_AGREEMENT}"));
    }
    if c < MIN_COVERAGE {
        failures.push(format!("corpus coverage {c:.3} < {MIN_COVERAGE}"));
    }
    report.push(format!(
        "below the {TARGET_COVERAGE} coverage target (corpus {c:.3}); per recording: {}",
        if below_target.is_empty() {
            "none".into()
        } else {
            below_target.join(", ")
        }
    ));
    assert!(
        failures.is_empty(),
        "{}\n{}",
        failures.join("\n"),
        report.join("\n")
    );
    report
}

#[test]
fn stored_fidelity_corpus_meets_its_thresholds() {
    let mut traces: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("tests/corpus/fidelity")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "kvt"))
        .collect();
    traces.sort();
    assert_eq!(
        traces.len(),
        FLOORS.len(),
        "every recording has a floor and every floor a recording"
    );
    for line in check(&traces) {
        println!("{line}");
    }
}

#[test]
fn live_fidelity_corpus_meets_the_same_thresholds() {
    let Some(qemu) = require_qemu("tests::live_fidelity_corpus_meets_the_same_thresholds") else {
        return;
    };
    let d = TempDir::new("fidelity-live");
    let guest = qemu_guest(&d);
    let base: Vec<String> = kvmtrace_tools::commands::guest::qemu_args(&guest);
    // QEMU alone: the guest's arguments without the debug-exit device and kernel.
    let cut = base.iter().position(|a| a == "-device").expect("-device");
    let mut bios = base[..cut].to_vec();
    bios.extend(["-boot".to_string(), "reboot-timeout=0".to_string()]);
    let mut traces = Vec::new();
    // The BSP-INIT run reboots once: no -no-reboot.
    let mut init_bsp: Vec<String> = base
        .iter()
        .filter(|a| *a != "-no-reboot")
        .cloned()
        .collect();
    init_bsp.extend(["-append".to_string(), "init-bsp".to_string()]);
    let mut apic_split = base.clone();
    apic_split.extend(
        [
            "-cpu",
            "qemu64,+x2apic,+tsc-deadline",
            "-machine",
            "kernel_irqchip=split",
        ]
        .map(String::from),
    );
    for (name, args) in [
        ("qemu-seabios.kvt", bios),
        ("qemu-guest.kvt", base),
        ("qemu-init-bsp.kvt", init_bsp),
        ("qemu-apic-split.kvt", apic_split),
    ] {
        let out = d.join(name);
        // Like the stored corpus, with the ioctl tap: QEMU's host
        // KVM_GET/SET_MSRS entries are scored too (`model::host`). (A flake
        // once blamed on another process's VM was the kernel's stale tgid
        // column for a reused pid splitting QEMU's own VM: fixed in f8ea63a,
        // docs/vmm-threads.md.)
        wrap_record(&qemu, &args, &out);
        traces.push(out);
    }
    let out = d.join("observe-guest.kvt");
    record_observe(["--payload", guest.to_str().unwrap()], &out);
    traces.push(out);
    for s in [
        "tour",
        "mce",
        "x2apic-deflect",
        "msr-sweep",
        "feat-ctl",
        "init-sipi",
        "bit-probe",
        "msr-suite",
        "msr-suite-bare",
        "apic-ipi",
        "self-init",
        "x2apic-regs",
    ] {
        let out = d.join(&format!("observe-{s}.kvt"));
        record_observe(["--scenario", s], &out);
        traces.push(out);
    }
    for line in check(&traces) {
        println!("{line}");
    }
}
