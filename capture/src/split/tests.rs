use kvmtrace_format::{Event, IpiMode, KnownState, VcpuIdentity};

use super::*;
use crate::fields::parse_event;
use crate::line::{LineKind, parse_line};

/// Runs text lines through the splitter: (vm, vcpu, event) in order.
fn split(text: &str, from_creation: bool) -> (VmSplitter, Vec<(usize, u32, Event)>) {
    let mut s = VmSplitter::new(from_creation);
    let mut out = Vec::new();
    for l in text.lines() {
        let Ok(LineKind::Event(e)) = parse_line(l.as_bytes()) else {
            panic!("{l}")
        };
        let ev = parse_event(e.event, e.fields).unwrap().unwrap();
        let desc = ThreadDesc {
            tgid: e.tgid,
            comm: String::from_utf8_lossy(e.task).into_owned(),
            vcpu: None,
        };
        s.feed(e.ts_ns, e.pid, ev, &mut |_| desc.clone(), &mut |vm, o| {
            out.push((vm, o.vcpu, o.event))
        })
        .unwrap();
    }
    (s, out)
}

fn kinds(out: &[(usize, u32, Event)]) -> Vec<(usize, u32, &'static str)> {
    out.iter()
        .map(|(vm, v, e)| (*vm, *v, e.kind().name()))
        .collect()
}

#[test]
fn two_qemu_processes_are_two_vms() {
    let text = "\
       CPU 0/KVM-101   (  100) [000] ..... 1.000001: kvm_msr: msr_read 10 = 0x5
       CPU 0/KVM-201   (  200) [001] ..... 1.000002: kvm_msr: msr_read 10 = 0x6
       CPU 1/KVM-102   (  100) [000] ..... 1.000003: kvm_msr: msr_read 1b = 0xfee00800
";
    let (s, out) = split(text, false);
    assert_eq!(s.vms.len(), 2);
    assert_eq!(
        kinds(&out),
        [
            (0, 0, "vcpu_thread"),
            (0, 0, "msr_read"),
            (1, 0, "vcpu_thread"),
            (1, 0, "msr_read"),
            (0, 1, "vcpu_thread"),
            (0, 1, "msr_read"),
        ]
    );
    assert!(!s.membership_guessed);
    match &out[0].2 {
        Event::VcpuThread {
            pid,
            tid,
            comm,
            identity,
        } => {
            assert_eq!((*pid, *tid, comm.as_str()), (100, 101, "CPU 0/KVM"));
            assert_eq!(*identity, VcpuIdentity::ThreadName);
        }
        e => panic!("{e:?}"),
    }
}

/// Three recordings of our own VMM in one capture without the tgid column:
/// three VMs (the second `vcpu0` cannot be the first one's VM), flagged as
/// told apart without process ids.
#[test]
fn sequential_recordings_without_tgid_never_merge() {
    let text = "\
           vcpu0-500     [000] ..... 1.000001: kvm_msr: msr_read 10 = 0x5
           vcpu1-501     [001] ..... 1.000002: kvm_msr: msr_read 10 = 0x5
           vcpu0-600     [000] ..... 2.000001: kvm_msr: msr_read 10 = 0x6
           vcpu0-700     [000] ..... 3.000001: kvm_msr: msr_read 10 = 0x7
";
    let (s, out) = split(text, false);
    assert_eq!(s.vms.len(), 3);
    assert!(s.membership_guessed);
    let vms: Vec<usize> = out.iter().map(|o| o.0).collect();
    assert_eq!(vms, [0, 0, 0, 0, 1, 1, 2, 2]);
}

#[test]
fn unnamed_threads_are_guessed_in_order() {
    let text = "\
 qemu-system-x86-301   (  300) [000] ..... 1.000001: kvm_msr: msr_read 10 = 0x5
 qemu-system-x86-302   (  300) [001] ..... 1.000002: kvm_msr: msr_read 10 = 0x6
";
    let (s, out) = split(text, false);
    assert_eq!(s.vms.len(), 1);
    assert_eq!(s.vms[0].guessed, [0, 1]);
    assert!(matches!(
        out[2].2,
        Event::VcpuThread {
            identity: VcpuIdentity::FirstSeen,
            ..
        }
    ));
}

#[test]
fn kvm_entry_names_the_vcpu() {
    let text = "\
 qemu-system-x86-302   (  300) [001] ..... 1.000001: kvm_entry: vcpu 3, rip 0xfff0
 qemu-system-x86-302   (  300) [001] ..... 1.000002: kvm_msr: msr_read 10 = 0x6
";
    let (_, out) = split(text, false);
    assert_eq!(out[0].1, 3);
    assert!(matches!(
        out[0].2,
        Event::VcpuThread {
            identity: VcpuIdentity::KvmEntry,
            ..
        }
    ));
    assert_eq!(kinds(&out)[1], (0, 3, "msr_read"));
}

/// Linux's AP start: INIT assert, INIT de-assert (ignored by the LAPIC),
/// SIPI twice; the target vCPU gets KernelReset (wrap mode), KernelInit and
/// the SIPIs, from the sender.
#[test]
fn init_and_sipi_reach_the_target() {
    let text = "\
       CPU 0/KVM-101   (  100) [000] ..... 1.000001: kvm_apic_ipi: dst 1 vec 0 (INIT|physical|assert|level|dst)
       CPU 0/KVM-101   (  100) [000] ..... 1.000002: kvm_apic_accept_irq: apicid 1 vec 0 (INIT|level)
       CPU 0/KVM-101   (  100) [000] ..... 1.000003: kvm_apic_ipi: dst 1 vec 0 (INIT|physical|de-assert|level|dst)
       CPU 0/KVM-101   (  100) [000] ..... 1.000004: kvm_apic_accept_irq: apicid 1 vec 0 (INIT|level)
       CPU 0/KVM-101   (  100) [000] ..... 1.000005: kvm_apic_ipi: dst 1 vec 159 (SIPI|physical|assert|edge|dst)
       CPU 0/KVM-101   (  100) [000] ..... 1.000006: kvm_apic_accept_irq: apicid 1 vec 159 (SIPI|edge)
       CPU 1/KVM-102   (  100) [001] ..... 1.000007: kvm_msr: msr_read 1b = 0xfee00800
";
    let (s, out) = split(text, true);
    assert_eq!(
        kinds(&out),
        [
            (0, 0, "vcpu_thread"),
            (0, 0, "kernel_reset"),
            (0, 0, "ipi"),
            (0, 1, "kernel_reset"),
            (0, 1, "kernel_init"),
            (0, 0, "ipi"),
            (0, 0, "ipi"),
            (0, 1, "sipi"),
            (0, 1, "vcpu_thread"),
            (0, 1, "msr_read"),
        ]
    );
    assert_eq!(
        out[4].2,
        Event::KernelInit {
            from: Some(0),
            known: Box::new(KnownState::UNKNOWN)
        }
    );
    assert_eq!(
        out[7].2,
        Event::Sipi {
            from: 0,
            vector: 159
        }
    );
    assert_eq!(s.vms[0].stats().inits, 1);
    assert_eq!(s.vms[0].stats().accepted_skipped, 1);
    let _ = IpiMode::Init;
}

/// An interrupt the VMM's I/O thread injected does not make it a vCPU.
#[test]
fn io_threads_are_not_vcpus() {
    let text = "\
 qemu-system-x86-300   (  300) [000] ..... 1.000001: kvm_apic_accept_irq: apicid 0 vec 236 (Fixed|edge)
       CPU 0/KVM-301   (  300) [001] ..... 1.000002: kvm_msr: msr_read 10 = 0x6
 qemu-system-x86-300   (  300) [000] ..... 1.000003: kvm_apic_accept_irq: apicid 0 vec 236 (Fixed|edge)
";
    let (s, out) = split(text, false);
    assert_eq!(s.vms.len(), 1);
    assert_eq!(s.foreign_lines, 2);
    assert_eq!(kinds(&out), [(0, 0, "vcpu_thread"), (0, 0, "msr_read")]);
}
