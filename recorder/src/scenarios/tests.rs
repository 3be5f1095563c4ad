//! Every scenario builds, fits the layout, and its code holds what it claims.

use iced_x86::{Decoder, DecoderOptions, Mnemonic};

use super::*;

fn mnemonics(bitness: u32, bytes: &[u8], ip: u64) -> Vec<Mnemonic> {
    let mut d = Decoder::with_ip(bitness, bytes, ip, DecoderOptions::NONE);
    let mut out = Vec::new();
    while d.can_decode() {
        let i = d.decode();
        assert!(!i.is_invalid(), "invalid instruction at {:#x}", i.ip());
        out.push(i.mnemonic());
    }
    out
}

fn code(spec: &ScenarioSpec) -> &[u8] {
    &spec
        .regions
        .iter()
        .find(|r| r.addr == layout::CODE_ADDR)
        .expect("code region")
        .bytes
}

fn count(spec: &ScenarioSpec, m: Mnemonic) -> usize {
    mnemonics(64, code(spec), layout::CODE_ADDR)
        .into_iter()
        .filter(|&x| x == m)
        .count()
}

#[test]
fn every_scenario_builds_and_fits() {
    let names: Vec<_> = list().iter().map(|s| s.name).collect();
    assert!(names.len() >= 10, "{names:?}");
    for name in names {
        let spec =
            try_build(name, &ScenarioParams::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(spec.name, name);
        assert_eq!(spec.starts.len(), spec.vcpus as usize, "{name}");
        assert!(!code(&spec).is_empty(), "{name}");
        spec.validate().unwrap();
        // Each code image decodes cleanly and ends every path with DONE.
        assert!(count(&spec, Mnemonic::Out) >= 1, "{name}");
        assert!(count(&spec, Mnemonic::Hlt) >= 1, "{name}");
        // Every HOSTCALL index has a step: steps are appended as `out` is emitted.
        assert!(
            spec.host_steps.len() <= count(&spec, Mnemonic::Out),
            "{name}"
        );
    }
}

#[test]
fn names_are_unique_and_about_is_one_line() {
    let all = list();
    for (i, s) in all.iter().enumerate() {
        assert!(!s.about.contains('\n') && s.about.len() < 110, "{}", s.name);
        assert!(all[i + 1..].iter().all(|t| t.name != s.name), "{}", s.name);
    }
}

/// `{ scenario, mnemonic, at least }`.
const EXPECT: &[(&str, Mnemonic, usize)] = &[
    ("mwait", Mnemonic::Monitor, 1),
    ("mwait", Mnemonic::Mwait, 1),
    ("misc-enable-mwait", Mnemonic::Monitor, 2),
    ("misc-enable-mwait", Mnemonic::Mwait, 2),
    ("misc-enable-mwait", Mnemonic::Wrmsr, 2),
    ("mwait-ud", Mnemonic::Mwait, 2),
    ("mwait-strict", Mnemonic::Mwait, 2),
    ("misc-enable-no-mwait", Mnemonic::Mwait, 2),
    ("feat-ctl", Mnemonic::Rdmsr, 8),
    ("feat-ctl", Mnemonic::Wrmsr, 5),
    ("mce", Mnemonic::Wrmsr, 20),
    ("mce", Mnemonic::Rdmsr, 10),
    ("x2apic-deflect", Mnemonic::Rdmsr, 14),
    ("x2apic-deflect", Mnemonic::Wrmsr, 6),
    ("msr-sweep", Mnemonic::Rdmsr, 100),
    ("triple-fault", Mnemonic::Ud2, 1),
    ("triple-fault", Mnemonic::Lidt, 2),
    ("triple-fault", Mnemonic::Sidt, 1),
    ("init-sipi", Mnemonic::Mov, 4),
    ("msr-loop", Mnemonic::Rdmsr, 1),
    ("bit-probe", Mnemonic::Wrmsr, 100),
    ("msr-suite", Mnemonic::Wrmsr, 200),
    ("msr-suite-bare", Mnemonic::Rdmsr, 50),
    ("tour", Mnemonic::Monitor, 3),
    ("tour", Mnemonic::Ud2, 1),
    ("tour", Mnemonic::Rdmsr, 20),
    ("tour", Mnemonic::Lidt, 2),
];

#[test]
fn code_holds_the_expected_instructions() {
    for &(name, m, min) in EXPECT {
        let spec = build(name, &ScenarioParams::default()).unwrap();
        let n = count(&spec, m);
        assert!(n >= min, "{name}: {n} x {m:?}, expected at least {min}");
    }
}

#[test]
fn quirks_cpuid_and_config_per_scenario() {
    let b = |n| build(n, &ScenarioParams::default()).unwrap();
    assert!(b("mwait").cpuid.contains(&mwait::CPUID_MWAIT));
    assert_eq!(b("misc-enable-mwait").disabled_quirks, 0);
    assert_eq!(b("misc-enable-no-mwait").disabled_quirks, 1 << 4);
    assert_eq!(b("mwait-ud").disabled_quirks, 1 << 6);
    assert_eq!(b("mwait-strict").disabled_quirks, (1 << 4) | (1 << 6));
    assert_eq!(b("mce").mcg_cap, Some(0x10a));
    assert_eq!(b("bit-probe").mcg_cap, Some(0x10a));
    assert_eq!(b("x2apic-deflect").irqchip, Irqchip::Kernel);
    assert_eq!(b("triple-fault").on_shutdown, OnShutdown::ResumePastFault);
    let init = b("init-sipi");
    assert_eq!(init.irqchip, Irqchip::None);
    assert_eq!(init.vcpus, 2);
    assert!(init.regions.iter().any(|r| r.addr == init_sipi::TRAMPOLINE));
    let cold = b("init-sipi-cold");
    assert_eq!(cold.starts[1], VcpuStart::WaitForSipi);
    let tour = b("tour");
    assert_eq!(tour.vcpus, 2);
    assert_eq!(tour.irqchip, Irqchip::None);
    // feat-ctl: a write and a read per step, 7 bits x (set, clear) + final clear.
    assert_eq!(b("feat-ctl").host_steps.len(), 15);
}

#[test]
fn trampoline_is_real_mode_code_that_reports_and_finishes() {
    let t = init_sipi::trampoline().unwrap();
    assert_eq!(t.addr, 0x8000);
    let end = t.bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    let ms = mnemonics(16, &t.bytes[..end], 0);
    assert_eq!(ms.iter().filter(|&&m| m == Mnemonic::Out).count(), 4);
    assert!(ms.contains(&Mnemonic::Hlt));
    // The done flag lies in the trampoline page, past the code.
    assert!(end < (init_sipi::AP_DONE_FLAG - init_sipi::TRAMPOLINE) as usize);
}

#[test]
fn msr_sweep_reads_enough_distinct_msrs() {
    let idx: Vec<u32> = msr_sweep::indices(msr_sweep::SWEEP).collect();
    let mut sorted = idx.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), idx.len(), "duplicates in the sweep");
    assert!(idx.len() >= 100);
    let spec = build("msr-sweep", &ScenarioParams::default()).unwrap();
    assert_eq!(count(&spec, Mnemonic::Rdmsr), idx.len());
}

#[test]
fn parameters_are_checked() {
    let with = |vcpus, iterations| ScenarioParams { vcpus, iterations };
    assert!(matches!(
        try_build("nope", &with(None, None)),
        Err(ScenarioError::Unknown { .. })
    ));
    assert!(matches!(
        try_build("init-sipi", &with(Some(1), None)),
        Err(ScenarioError::Vcpus { .. })
    ));
    assert!(matches!(
        try_build("msr-loop", &with(Some(0), None)),
        Err(ScenarioError::Vcpus { .. })
    ));
    assert!(matches!(
        try_build("msr-loop", &with(None, Some(0))),
        Err(ScenarioError::Iterations { .. })
    ));
    let four = try_build("msr-sweep", &with(Some(4), None)).unwrap();
    assert_eq!(four.starts.len(), 4);
    let big = try_build("msr-loop", &with(None, Some(1 << 40))).unwrap();
    assert_eq!(count(&big, Mnemonic::Rdmsr), 1);
    let e = try_build("nope", &with(None, None))
        .unwrap_err()
        .to_string();
    assert!(e.contains("msr-loop") && e.contains("tour"), "{e}");
}

#[test]
fn validate_rejects_bad_layouts() {
    let mut s = build("mwait", &ScenarioParams::default()).unwrap();
    s.regions.push(Region {
        addr: layout::DATA_ADDR + layout::DATA_SIZE - 1,
        bytes: vec![0; 2],
    });
    assert!(matches!(s.validate(), Err(ScenarioError::Region { .. })));
    let mut s = build("mwait", &ScenarioParams::default()).unwrap();
    s.starts.push(VcpuStart::WaitForSipi);
    assert!(s.validate().is_err());
    let mut s = build("mwait", &ScenarioParams::default()).unwrap();
    s.host_steps
        .push(HostStep::Seq(vec![HostStep::ReadMsr { vcpu: 3, index: 0 }]));
    assert!(s.validate().is_err());
}

#[test]
#[ignore = "prints a listing: KVMTRACE_SCENARIO=name cargo test -- --ignored --nocapture listing"]
fn listing() {
    use iced_x86::{Formatter, IntelFormatter};
    let name = std::env::var("KVMTRACE_SCENARIO").unwrap_or_else(|_| "tour".into());
    let spec = build(&name, &ScenarioParams::default()).unwrap();
    let mut f = IntelFormatter::new();
    for r in &spec.regions {
        let end = r.bytes.iter().rposition(|&b| b != 0).map_or(0, |e| e + 1);
        let (bits, ip) = if r.addr == layout::CODE_ADDR {
            (64, r.addr)
        } else {
            (16, 0)
        };
        let mut d = Decoder::with_ip(bits, &r.bytes[..end], ip, DecoderOptions::NONE);
        println!("region {:#x} ({} bytes)", r.addr, end);
        for i in &mut d {
            let mut s = String::new();
            f.format(&i, &mut s);
            println!("  {:08x} {s}", i.ip());
        }
    }
}
