//! The printk text of each KVM tracepoint kvmtrace understands, parsed exactly
//! (SEMANTICS.md §6: formats per release).

use kvmtrace_format::IpiMode;

use crate::line::{parse_dec, parse_hex};

/// What a user-space exit line says `KVM_RUN` returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunReturn {
    /// `reason KVM_EXIT_<NAME> (N)`: an exit to user space with `exit_reason` N.
    Exit(u32),
    /// `reason restart (4)`: -EINTR.
    Restart,
    /// `reason error (E)`: `KVM_RUN` failed with errno E (1 EPERM, 11 EAGAIN, ...).
    Error(i32),
}

/// A KVM tracepoint line, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvmEvent {
    /// `kvm_msr`: `msr_read 10 = 0x5`, `msr_write 401 = 0x1 (#GP)`.
    Msr {
        write: bool,
        index: u32,
        data: u64,
        gp: bool,
    },
    /// `kvm_inj_exception`: `#GP (0x0)`, `#UD`, `#UD [reinjected]`, ≤5.19 `#UD (0x0)`.
    InjException {
        vector: u8,
        error_code: Option<u32>,
        reinjected: bool,
    },
    /// `kvm_userspace_exit`.
    UserspaceExit(RunReturn),
    /// `kvm_apic_ipi`: `dst 1 vec 0 (INIT|physical|assert|edge|dst)`.
    /// `deassert`: a level-triggered de-assert (`de-assert|level`), which the
    /// local APIC ignores for INIT (`__apic_accept_irq`).
    ApicIpi {
        dst: u32,
        vector: u8,
        mode: IpiMode,
        deassert: bool,
    },
    /// `kvm_apic_accept_irq`: `apicid 1 vec 0 (INIT|level)`: the in-kernel
    /// local APIC of vCPU `apicid` (the target's `vcpu_id`) accepted an
    /// interrupt, traced on the sender's thread (lapic.c `__apic_accept_irq`).
    ApicAcceptIrq {
        apicid: u32,
        vector: u8,
        mode: IpiMode,
        level: bool,
    },
    /// `kvm_cpuid`: the guest executed CPUID and got this.
    Cpuid {
        function: u32,
        index: u32,
        eax: u32,
        ebx: u32,
        ecx: u32,
        edx: u32,
    },
    /// `kvm_exit` for a MONITOR or MWAIT intercept (VMX `MONITOR_INSTRUCTION` /
    /// `MWAIT_INSTRUCTION`, SVM `monitor` / `mwait`), with the guest RIP: on
    /// VMX/SVM hosts the kernel decides these (SEMANTICS.md §1).
    MwaitExit { monitor: bool, rip: u64 },
    /// Any other `kvm_exit`, or `kvm_entry`: nothing recorded, but the
    /// `vcpu N` these lines carry (kernels since 5.x) names the thread's vCPU.
    ExitOrEntry { vcpu_id: Option<u32> },
}

/// The event names kvmtrace decodes; every other event is counted and skipped.
pub const KNOWN_EVENTS: [&str; 8] = [
    "kvm_msr",
    "kvm_inj_exception",
    "kvm_userspace_exit",
    "kvm_apic_ipi",
    "kvm_apic_accept_irq",
    "kvm_cpuid",
    "kvm_exit",
    "kvm_entry",
];

/// A line of a known event whose text does not have the event's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed {event} fields: {what}")]
pub struct FieldError {
    pub event: &'static str,
    pub what: &'static str,
}

/// Does the exception with this vector push an error code (SDM vol. 3 6.15)?
pub const fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// `kvm_trace_sym_exc` (arch/x86/kvm/trace.h): the names the tracepoint prints.
fn exception_vector(name: &[u8]) -> Option<u8> {
    Some(match name {
        b"#DE" => 0,
        b"#DB" => 1,
        b"#NMI" => 2,
        b"#BP" => 3,
        b"#OF" => 4,
        b"#BR" => 5,
        b"#UD" => 6,
        b"#NM" => 7,
        b"#DF" => 8,
        b"#TS" => 10,
        b"#NP" => 11,
        b"#SS" => 12,
        b"#GP" => 13,
        b"#PF" => 14,
        b"#MF" => 16,
        b"#AC" => 17,
        b"#MC" => 18,
        b"#XM" => 19,
        b"#VE" => 20,
        b"#CP" => 21,
        b"#HV" => 28,
        b"#VC" => 29,
        b"#SX" => 30,
        // `__print_symbolic` prints unnamed values in hex.
        other => {
            return parse_hex(other)
                .and_then(|v| u8::try_from(v).ok())
                .filter(|v| *v < 32);
        }
    })
}

fn ipi_mode(name: &[u8]) -> Option<IpiMode> {
    // `kvm_deliver_mode` (arch/x86/kvm/trace.h).
    Some(match name {
        b"Fixed" => IpiMode::Fixed,
        b"LowPrio" => IpiMode::LowestPriority,
        b"SMI" => IpiMode::Smi,
        b"NMI" => IpiMode::Nmi,
        b"INIT" => IpiMode::Init,
        b"SIPI" => IpiMode::Sipi,
        b"Res3" => IpiMode::Other(3),
        b"ExtINT" => IpiMode::Other(7),
        _ => return None,
    })
}

/// Splits on single spaces, skipping runs.
fn words(s: &[u8]) -> impl Iterator<Item = &[u8]> {
    s.split(|&b| b == b' ').filter(|w| !w.is_empty())
}

fn msr(f: &[u8]) -> Result<KvmEvent, FieldError> {
    let bad = |what| FieldError {
        event: "kvm_msr",
        what,
    };
    let mut w = words(f);
    let write = match w.next() {
        Some(b"msr_read") => false,
        Some(b"msr_write") => true,
        _ => return Err(bad("expected msr_read or msr_write")),
    };
    let index = w
        .next()
        .and_then(|s| (!s.starts_with(b"0x")).then(|| parse_hex(s)).flatten())
        .and_then(|v| u32::try_from(v).ok())
        .ok_or(bad("the MSR index is not a 32-bit hex number"))?;
    if w.next() != Some(b"=") {
        return Err(bad("expected `=` after the index"));
    }
    let data = w
        .next()
        .filter(|s| s.starts_with(b"0x"))
        .and_then(parse_hex)
        .ok_or(bad("the value is not 0x and at most 16 hex digits"))?;
    let gp = match w.next() {
        None => false,
        Some(b"(#GP)") => true,
        Some(_) => return Err(bad("unexpected text after the value (only `(#GP)`)")),
    };
    if w.next().is_some() {
        return Err(bad("unexpected text after `(#GP)`"));
    }
    Ok(KvmEvent::Msr {
        write,
        index,
        data,
        gp,
    })
}

fn inj_exception(f: &[u8]) -> Result<KvmEvent, FieldError> {
    let bad = |what| FieldError {
        event: "kvm_inj_exception",
        what,
    };
    let mut w = words(f);
    let vector = w
        .next()
        .and_then(exception_vector)
        .ok_or(bad("unknown exception name"))?;
    let mut error_code = None;
    let mut reinjected = false;
    for word in w {
        if let Some(code) = word.strip_prefix(b"(").and_then(|s| s.strip_suffix(b")")) {
            if error_code.is_some() || reinjected {
                return Err(bad("error code in the wrong place"));
            }
            let code = code
                .starts_with(b"0x")
                .then(|| parse_hex(code))
                .flatten()
                .and_then(|v| u32::try_from(v).ok())
                .ok_or(bad("the error code is not a 32-bit hex number"))?;
            error_code = Some(code);
        } else if word == b"[reinjected]" && !reinjected {
            reinjected = true;
        } else {
            return Err(bad("unexpected text after the exception name"));
        }
    }
    // ≤5.19 printed `(0x0)` even for exceptions without an error code.
    if !has_error_code(vector) && error_code == Some(0) {
        error_code = None;
    }
    Ok(KvmEvent::InjException {
        vector,
        error_code,
        reinjected,
    })
}

fn userspace_exit(f: &[u8]) -> Result<KvmEvent, FieldError> {
    let bad = |what| FieldError {
        event: "kvm_userspace_exit",
        what,
    };
    let mut w = words(f);
    if w.next() != Some(b"reason") {
        return Err(bad("expected `reason`"));
    }
    let name = w.next().ok_or(bad("no exit name"))?;
    let num = w
        .next()
        .and_then(|s| s.strip_prefix(b"("))
        .and_then(|s| s.strip_suffix(b")"))
        .and_then(|s| parse_dec(s, 10))
        .and_then(|v| u32::try_from(v).ok())
        .ok_or(bad("expected `(NUMBER)` after the exit name"))?;
    if w.next().is_some() {
        return Err(bad("unexpected text after `(NUMBER)`"));
    }
    let ret = match name {
        b"restart" => RunReturn::Restart,
        b"error" => RunReturn::Error(
            i32::try_from(num)
                .ok()
                .filter(|e| *e < 4096)
                .ok_or(bad("errno out of range"))?,
        ),
        n if n.starts_with(b"KVM_EXIT_") || n.starts_with(b"0x") => RunReturn::Exit(num),
        _ => return Err(bad("exit name is not KVM_EXIT_*, restart or error")),
    };
    Ok(KvmEvent::UserspaceExit(ret))
}

/// The APIC id field that opens `kvm_apic_ipi` (`dst`) and
/// `kvm_apic_accept_irq` (`apicid`).
#[derive(Clone, Copy)]
enum ApicIdField {
    Dst,
    ApicId,
}

/// `KEY %x vec %u (FLAGS)`, the common start of `kvm_apic_ipi` and
/// `kvm_apic_accept_irq`: the id, the vector and the text between the
/// parentheses.
fn id_vec_flags<'a>(
    w: &mut impl Iterator<Item = &'a [u8]>,
    field: ApicIdField,
    bad: impl Fn(&'static str) -> FieldError,
) -> Result<(u32, u8, &'a [u8]), FieldError> {
    let (key, expected, not_hex, flags_form) = match field {
        ApicIdField::Dst => (
            &b"dst"[..],
            "expected `dst`",
            "dst is not a 32-bit hex number",
            "expected `(MODE|...)`",
        ),
        ApicIdField::ApicId => (
            &b"apicid"[..],
            "expected `apicid`",
            "apicid is not a 32-bit hex number",
            "expected `(MODE|edge)` or `(MODE|level)`",
        ),
    };
    if w.next() != Some(key) {
        return Err(bad(expected));
    }
    let id = w
        .next()
        .and_then(parse_hex)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or(bad(not_hex))?;
    if w.next() != Some(b"vec") {
        return Err(bad("expected `vec`"));
    }
    let vector = w
        .next()
        .and_then(|s| parse_dec(s, 3))
        .and_then(|v| u8::try_from(v).ok())
        .ok_or(bad("vec is not a number below 256"))?;
    let flags = w
        .next()
        .and_then(|s| s.strip_prefix(b"("))
        .and_then(|s| s.strip_suffix(b")"))
        .ok_or(bad(flags_form))?;
    Ok((id, vector, flags))
}

fn apic_ipi(f: &[u8]) -> Result<KvmEvent, FieldError> {
    let bad = |what| FieldError {
        event: "kvm_apic_ipi",
        what,
    };
    let mut w = words(f);
    let (dst, vector, flags) = id_vec_flags(&mut w, ApicIdField::Dst, bad)?;
    if w.next().is_some() {
        return Err(bad("unexpected text after the flags"));
    }
    let mut parts = flags.split(|&b| b == b'|');
    let mode = parts
        .next()
        .and_then(ipi_mode)
        .ok_or(bad("unknown delivery mode"))?;
    let (mut deasserted, mut level) = (false, false);
    for p in parts {
        match p {
            b"de-assert" => deasserted = true,
            b"level" => level = true,
            _ => {}
        }
    }
    Ok(KvmEvent::ApicIpi {
        dst,
        vector,
        mode,
        deassert: deasserted && level,
    })
}

/// `kvm_apic_accept_irq`: `apicid %x vec %u (%s|%s)` (trace.h since 2.6.3x;
/// before 3.x a ` (coalesced)` suffix could follow).
fn apic_accept_irq(f: &[u8]) -> Result<KvmEvent, FieldError> {
    let bad = |what| FieldError {
        event: "kvm_apic_accept_irq",
        what,
    };
    let mut w = words(f);
    let (apicid, vector, flags) = id_vec_flags(&mut w, ApicIdField::ApicId, bad)?;
    match w.next() {
        None | Some(b"(coalesced)") => {}
        Some(_) => return Err(bad("unexpected text after the flags")),
    }
    if w.next().is_some() {
        return Err(bad("unexpected text after the flags"));
    }
    let (mode, trig) = match flags.iter().position(|&b| b == b'|') {
        Some(i) => (&flags[..i], &flags[i + 1..]),
        None => return Err(bad("expected `(MODE|edge)` or `(MODE|level)`")),
    };
    let mode = ipi_mode(mode).ok_or(bad("unknown delivery mode"))?;
    let level = match trig {
        b"level" => true,
        b"edge" => false,
        _ => return Err(bad("trigger is not edge or level")),
    };
    Ok(KvmEvent::ApicAcceptIrq {
        apicid,
        vector,
        mode,
        level,
    })
}

/// `vcpu N` at the start of `kvm_entry` (`vcpu %u`, later `vcpu %u, rip ...`)
/// and `kvm_exit` (since 5.x) fields.
fn leading_vcpu(f: &[u8]) -> Option<u32> {
    let mut w = words(f);
    if w.next() != Some(b"vcpu") {
        return None;
    }
    let n = w.next()?;
    let n = n.strip_suffix(b",").unwrap_or(n);
    parse_dec(n, 10).and_then(|v| u32::try_from(v).ok())
}

fn cpuid(f: &[u8]) -> Result<KvmEvent, FieldError> {
    let bad = |what| FieldError {
        event: "kvm_cpuid",
        what,
    };
    // `func %x idx %x rax %lx rbx %lx rcx %lx rdx %lx, cpuid entry ...`
    // (`idx` since 4.x; older kernels omit it).
    let regs = f.split(|&b| b == b',').next().unwrap_or(b"");
    let mut vals: [Option<u32>; 6] = [None; 6];
    let mut w = words(regs);
    while let Some(key) = w.next() {
        let slot = match key {
            b"func" => 0,
            b"idx" => 1,
            b"rax" => 2,
            b"rbx" => 3,
            b"rcx" => 4,
            b"rdx" => 5,
            _ => return Err(bad("unknown key")),
        };
        // The registers are printed as unsigned long; CPUID results are 32-bit.
        let v = w
            .next()
            .and_then(parse_hex)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or(bad("value is not a 32-bit hex number"))?;
        vals[slot] = Some(v);
    }
    let get = |i: usize| vals[i].ok_or(bad("missing func/rax/rbx/rcx/rdx"));
    Ok(KvmEvent::Cpuid {
        function: get(0)?,
        index: vals[1].unwrap_or(0),
        eax: get(2)?,
        ebx: get(3)?,
        ecx: get(4)?,
        edx: get(5)?,
    })
}

/// `kvm_exit`: `[vcpu N ]reason NAME[ (failed)] rip 0xRIP info1 ...`
/// (SEMANTICS.md §6; `vcpu` since 5.12ish, `requests` in 6.18).
fn kvm_exit(f: &[u8]) -> Result<KvmEvent, FieldError> {
    let bad = |what| FieldError {
        event: "kvm_exit",
        what,
    };
    let mut w = words(f);
    let mut reason = None;
    let mut rip = None;
    while let Some(word) = w.next() {
        match word {
            b"reason" if reason.is_none() => reason = Some(w.next().ok_or(bad("no exit reason"))?),
            b"rip" if rip.is_none() => {
                rip = Some(
                    w.next()
                        .filter(|s| s.starts_with(b"0x"))
                        .and_then(parse_hex)
                        .ok_or(bad("rip is not 0x and at most 16 hex digits"))?,
                )
            }
            _ => {}
        }
    }
    let reason = reason.ok_or(bad("no `reason`"))?;
    let rip = rip.ok_or(bad("no `rip`"))?;
    Ok(match reason {
        b"MONITOR_INSTRUCTION" | b"monitor" => KvmEvent::MwaitExit { monitor: true, rip },
        b"MWAIT_INSTRUCTION" | b"mwait" => KvmEvent::MwaitExit {
            monitor: false,
            rip,
        },
        _ => KvmEvent::ExitOrEntry {
            vcpu_id: leading_vcpu(f),
        },
    })
}

/// Decode the fields of a known KVM event; `None` for other events.
pub fn parse_event(event: &[u8], fields: &[u8]) -> Option<Result<KvmEvent, FieldError>> {
    Some(match event {
        b"kvm_msr" => msr(fields),
        b"kvm_inj_exception" => inj_exception(fields),
        b"kvm_userspace_exit" => userspace_exit(fields),
        b"kvm_apic_ipi" => apic_ipi(fields),
        b"kvm_cpuid" => cpuid(fields),
        b"kvm_exit" => kvm_exit(fields),
        b"kvm_apic_accept_irq" => apic_accept_irq(fields),
        b"kvm_entry" => Ok(KvmEvent::ExitOrEntry {
            vcpu_id: leading_vcpu(fields),
        }),
        _ => return None,
    })
}
