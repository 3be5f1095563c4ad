//! The kernel's printk text of the KVM tracepoints kvmtrace decodes, printed
//! from their raw fields (`TP_printk` of arch/x86/kvm/trace.h, v6.18): the
//! inverse of [`crate::fields`], so raw records and tracefs text go through one
//! decoder.

use std::io::Write;

/// `kvm_trace_sym_exc`.
fn exception_name(v: u64) -> Option<&'static str> {
    Some(match v {
        0 => "#DE",
        1 => "#DB",
        2 => "#NMI",
        3 => "#BP",
        4 => "#OF",
        5 => "#BR",
        6 => "#UD",
        7 => "#NM",
        8 => "#DF",
        10 => "#TS",
        11 => "#NP",
        12 => "#SS",
        13 => "#GP",
        14 => "#PF",
        16 => "#MF",
        17 => "#AC",
        18 => "#MC",
        19 => "#XM",
        20 => "#VE",
        21 => "#CP",
        28 => "#HV",
        29 => "#VC",
        30 => "#SX",
        _ => return None,
    })
}

/// `kvm_trace_exit_reason` (include/trace/events/kvm.h).
fn exit_reason_name(v: u64) -> Option<&'static str> {
    const NAMES: [&str; 40] = [
        "UNKNOWN",
        "EXCEPTION",
        "IO",
        "HYPERCALL",
        "DEBUG",
        "HLT",
        "MMIO",
        "IRQ_WINDOW_OPEN",
        "SHUTDOWN",
        "FAIL_ENTRY",
        "INTR",
        "SET_TPR",
        "TPR_ACCESS",
        "S390_SIEIC",
        "S390_RESET",
        "DCR",
        "NMI",
        "INTERNAL_ERROR",
        "OSI",
        "PAPR_HCALL",
        "S390_UCONTROL",
        "WATCHDOG",
        "S390_TSCH",
        "EPR",
        "SYSTEM_EVENT",
        "S390_STSI",
        "IOAPIC_EOI",
        "HYPERV",
        "ARM_NISV",
        "X86_RDMSR",
        "X86_WRMSR",
        "DIRTY_RING_FULL",
        "AP_RESET_HOLD",
        "X86_BUS_LOCK",
        "XEN",
        "RISCV_SBI",
        "RISCV_CSR",
        "NOTIFY",
        "LOONGARCH_IOCSR",
        "MEMORY_FAULT",
    ];
    usize::try_from(v).ok().and_then(|i| NAMES.get(i).copied())
}

/// `kvm_deliver_mode`.
const DELIVER_MODE: [&str; 8] = [
    "Fixed", "LowPrio", "SMI", "Res3", "NMI", "INIT", "SIPI", "ExtINT",
];

/// VMX exit reasons 36/39 and SVM exit codes 0x8b/0x8a: the MWAIT/MONITOR
/// intercepts [`crate::fields`] decodes from `kvm_exit`.
fn exit_name(isa: u64, reason: u64) -> Option<&'static str> {
    match (isa, reason) {
        (1, 36) => Some("MWAIT_INSTRUCTION"),
        (1, 39) => Some("MONITOR_INSTRUCTION"),
        (2, 0x8b) => Some("mwait"),
        (2, 0x8a) => Some("monitor"),
        _ => None,
    }
}

/// The events this module prints (those [`crate::fields`] decodes); any
/// other event name gets no text.
pub const PRINTED: [&str; 8] = crate::fields::KNOWN_EVENTS;

/// Print `event`'s text into `out` from its fields (`field(name)`: the value,
/// zero- or sign-extended as the format says). `None` for an event this module
/// does not print or a field it needs that the record lacks (`out` is then
/// left as it was).
pub fn print(event: &str, field: &dyn Fn(&str) -> Option<u64>, out: &mut Vec<u8>) -> Option<()> {
    let start = out.len();
    let r = print_inner(event, field, out);
    if r.is_none() {
        out.truncate(start);
    }
    r
}

fn print_inner(event: &str, f: &dyn Fn(&str) -> Option<u64>, out: &mut Vec<u8>) -> Option<()> {
    match event {
        "kvm_msr" => {
            let write = f("write")? != 0;
            let ecx = f("ecx")? as u32;
            let data = f("data")?;
            let gp = f("exception")? != 0;
            write!(
                out,
                "msr_{} {ecx:x} = 0x{data:x}{}",
                if write { "write" } else { "read" },
                if gp { " (#GP)" } else { "" }
            )
            .ok()
        }
        "kvm_inj_exception" => {
            let v = f("exception")? & 0xff;
            match exception_name(v) {
                Some(n) => out.extend_from_slice(n.as_bytes()),
                None => write!(out, "0x{v:x}").ok()?,
            }
            if f("has_error")? & 0xff != 0 {
                write!(out, " (0x{:x})", f("error_code")? as u32).ok()?;
            }
            if f("reinjected").unwrap_or(0) & 0xff != 0 {
                out.extend_from_slice(b" [reinjected]");
            }
            Some(())
        }
        "kvm_userspace_exit" => {
            let reason = f("reason")? as u32;
            let errno = f("errno")? as i32;
            if errno < 0 {
                let name = if errno == -4 { "restart" } else { "error" };
                write!(out, "reason {name} ({})", errno.unsigned_abs()).ok()
            } else {
                match exit_reason_name(u64::from(reason)) {
                    Some(n) => write!(out, "reason KVM_EXIT_{n} ({reason})").ok(),
                    None => write!(out, "reason 0x{reason:x} ({reason})").ok(),
                }
            }
        }
        "kvm_apic_ipi" => {
            let icr = f("icr_low")? as u32;
            let dst = f("dest_id")? as u32;
            write!(
                out,
                "dst {dst:x} vec {} ({}|{}|{}|{}|{})",
                icr & 0xff,
                DELIVER_MODE[(icr >> 8 & 7) as usize],
                if icr & 1 << 11 != 0 {
                    "logical"
                } else {
                    "physical"
                },
                if icr & 1 << 14 != 0 {
                    "assert"
                } else {
                    "de-assert"
                },
                if icr & 1 << 15 != 0 { "level" } else { "edge" },
                ["dst", "self", "all", "others"][(icr >> 18 & 3) as usize],
            )
            .ok()
        }
        "kvm_apic_accept_irq" => {
            let apicid = f("apicid")? as u32;
            let dm = f("dm")?;
            let tm = f("tm")?;
            let vec = f("vec")? & 0xff;
            write!(
                out,
                "apicid {apicid:x} vec {vec} ({}|{})",
                DELIVER_MODE[(dm >> 8 & 7) as usize],
                if tm != 0 { "level" } else { "edge" }
            )
            .ok()
        }
        "kvm_cpuid" => {
            let function = f("function")? as u32;
            let index = f("index")? as u32;
            let (a, b, c, d) = (f("rax")?, f("rbx")?, f("rcx")?, f("rdx")?);
            let found = f("found")? & 0xff != 0;
            let max_basic = f("used_max_basic").unwrap_or(0) & 0xff != 0;
            write!(
                out,
                "func {function:x} idx {index:x} rax {a:x} rbx {b:x} rcx {c:x} rdx {d:x}, cpuid entry {}{}",
                if found { "found" } else { "not found" },
                if max_basic { ", used max basic" } else { "" }
            )
            .ok()
        }
        "kvm_exit" => {
            let reason = f("exit_reason")?;
            let rip = f("guest_rip")?;
            let isa = f("isa").unwrap_or(0);
            match exit_name(isa, reason & 0xffff) {
                Some(n) => write!(out, "reason {n} rip 0x{rip:x}").ok(),
                None => write!(out, "reason 0x{reason:x} rip 0x{rip:x}").ok(),
            }
        }
        "kvm_entry" => {
            let id = f("vcpu_id")? as u32;
            let rip = f("rip").unwrap_or(0);
            write!(out, "vcpu {id}, rip 0x{rip:x}").ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::{KvmEvent, parse_event};

    fn text(event: &str, kv: &[(&str, u64)]) -> String {
        let mut out = Vec::new();
        print(
            event,
            &|n| kv.iter().find(|(k, _)| *k == n).map(|(_, v)| *v),
            &mut out,
        )
        .expect("printed");
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn prints_what_the_text_decoder_reads() {
        let t = text(
            "kvm_msr",
            &[("write", 1), ("ecx", 0x401), ("data", 1), ("exception", 1)],
        );
        assert_eq!(t, "msr_write 401 = 0x1 (#GP)");
        assert_eq!(
            parse_event(b"kvm_msr", t.as_bytes()),
            Some(Ok(KvmEvent::Msr {
                write: true,
                index: 0x401,
                data: 1,
                gp: true
            }))
        );
        let t = text(
            "kvm_inj_exception",
            &[
                ("exception", 13),
                ("has_error", 1),
                ("error_code", 0),
                ("reinjected", 0),
            ],
        );
        assert_eq!(t, "#GP (0x0)");
        assert!(matches!(
            parse_event(b"kvm_inj_exception", t.as_bytes()),
            Some(Ok(KvmEvent::InjException { vector: 13, .. }))
        ));
        let t = text("kvm_userspace_exit", &[("reason", 2), ("errno", 0)]);
        assert_eq!(t, "reason KVM_EXIT_IO (2)");
        let t = text(
            "kvm_userspace_exit",
            &[("reason", 0), ("errno", (-11i64) as u64)],
        );
        assert_eq!(t, "reason error (11)");
        assert!(
            parse_event(b"kvm_userspace_exit", t.as_bytes())
                .unwrap()
                .is_ok()
        );
        let t = text("kvm_apic_ipi", &[("icr_low", 0x4500), ("dest_id", 1)]);
        assert_eq!(t, "dst 1 vec 0 (INIT|physical|assert|edge|dst)");
        assert!(parse_event(b"kvm_apic_ipi", t.as_bytes()).unwrap().is_ok());
        let t = text(
            "kvm_apic_accept_irq",
            &[("apicid", 1), ("dm", 0x600), ("tm", 0), ("vec", 8)],
        );
        assert_eq!(t, "apicid 1 vec 8 (SIPI|edge)");
        let t = text(
            "kvm_cpuid",
            &[
                ("function", 1),
                ("index", 0),
                ("rax", 0x60fb1),
                ("rbx", 0),
                ("rcx", 0),
                ("rdx", 0),
                ("found", 1),
            ],
        );
        assert!(
            parse_event(b"kvm_cpuid", t.as_bytes()).unwrap().is_ok(),
            "{t}"
        );
        let t = text(
            "kvm_exit",
            &[("exit_reason", 36), ("guest_rip", 0x1000), ("isa", 1)],
        );
        assert_eq!(
            parse_event(b"kvm_exit", t.as_bytes()),
            Some(Ok(KvmEvent::MwaitExit {
                monitor: false,
                rip: 0x1000
            }))
        );
    }

    #[test]
    fn missing_fields_print_nothing() {
        let mut out = b"keep".to_vec();
        assert!(print("kvm_msr", &|_| None, &mut out).is_none());
        assert!(print("kvm_pio", &|_| Some(0), &mut out).is_none());
        assert_eq!(out, b"keep");
    }
}
