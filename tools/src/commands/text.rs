//! Human-readable renderings shared by dump, replay and diff.

use kvmtrace_format::{Event, MsrOutcome, MwaitOutcome, Origin};

/// Architectural or KVM name of an MSR, for reports (never only a number).
pub fn msr_name(index: u32) -> Option<&'static str> {
    Some(match index {
        0x10 => "IA32_TIME_STAMP_COUNTER",
        0x1b => "IA32_APIC_BASE",
        0x3a => "IA32_FEAT_CTL",
        0x48 => "IA32_SPEC_CTRL",
        0x8b => "IA32_UCODE_REV",
        0xce => "MSR_PLATFORM_INFO",
        0x10a => "IA32_ARCH_CAPABILITIES",
        0x174 => "IA32_SYSENTER_CS",
        0x179 => "IA32_MCG_CAP",
        0x17a => "IA32_MCG_STATUS",
        0x17b => "IA32_MCG_CTL",
        0x1a0 => "IA32_MISC_ENABLE",
        0x1d9 => "IA32_DEBUGCTL",
        0x277 => "IA32_PAT",
        0x4d0 => "IA32_MCG_EXT_CTL",
        0x802 => "X2APIC_APICID",
        0x803 => "X2APIC_VERSION",
        0x808 => "X2APIC_TPR",
        0x80b => "X2APIC_EOI",
        0x830 => "X2APIC_ICR",
        0xc000_0080 => "IA32_EFER",
        0xc001_0015 => "MSR_K7_HWCR",
        0x4b56_4d00..=0x4b56_4d07 => "MSR_KVM_PV",
        _ => return None,
    })
}

/// `0x401 (MC0_STATUS)` style label.
pub fn msr_label(index: u32) -> String {
    if let Some(n) = msr_name(index) {
        return format!("{index:#x} ({n})");
    }
    match index {
        0x400..=0x47f => {
            let bank = (index - 0x400) / 4;
            let reg = ["CTL", "STATUS", "ADDR", "MISC"][((index - 0x400) % 4) as usize];
            format!("{index:#x} (MC{bank}_{reg})")
        }
        0x280..=0x29f => format!("{index:#x} (MC{}_CTL2)", index - 0x280),
        0x800..=0x8ff => format!("{index:#x} (x2APIC)"),
        _ => format!("{index:#x}"),
    }
}

pub fn msr_outcome(o: &MsrOutcome) -> String {
    match o {
        MsrOutcome::Value(v) => format!("value {v:#x}"),
        MsrOutcome::Ok => "ok".into(),
        MsrOutcome::InjectGp => "inject_gp".into(),
        MsrOutcome::UserExit { reason, answer } => {
            format!("user_exit({reason:?}->{answer:?})").to_lowercase()
        }
        MsrOutcome::VmFailed { errno } => format!("vm_failed(errno {errno})"),
    }
}

pub fn mwait_outcome(o: &MwaitOutcome) -> &'static str {
    match o {
        MwaitOutcome::Nop => "nop",
        MwaitOutcome::InjectUd => "inject_ud",
        MwaitOutcome::NotIntercepted => "not_intercepted",
    }
}

fn origin(o: &Origin) -> &'static str {
    match o {
        Origin::Guest => "guest",
        Origin::Host => "host",
    }
}

/// One line describing an event.
pub fn describe(e: &Event) -> String {
    match e {
        Event::MsrRead {
            index,
            origin: o,
            outcome,
            ..
        } => format!(
            "rdmsr {} {} -> {}",
            msr_label(*index),
            origin(o),
            msr_outcome(outcome)
        ),
        Event::MsrWrite {
            index,
            value,
            origin: o,
            outcome,
            ..
        } => format!(
            "wrmsr {} = {value:#x} {} -> {}",
            msr_label(*index),
            origin(o),
            msr_outcome(outcome)
        ),
        Event::Monitor { rip, outcome, .. } => {
            format!("monitor rip={rip:#x} -> {}", mwait_outcome(outcome))
        }
        Event::Mwait { rip, outcome, .. } => {
            format!("mwait rip={rip:#x} -> {}", mwait_outcome(outcome))
        }
        Event::Shutdown {
            rip, cause, then, ..
        } => format!("shutdown rip={rip:#x} {cause:?} then {then:?}").to_lowercase(),
        Event::Reset { state, .. } => format!(
            "reset rip={:#x} cr0={:#x} rdx={:#x} apic_base={:#x}",
            state.rip,
            state.cr0,
            state.rdx(),
            state.apic_base
        ),
        Event::Init {
            source,
            before,
            after,
            ..
        } => format!(
            "init from {source:?}: cr0 {:#x} -> {:#x}, rdx -> {:#x}, rip -> {:#x}",
            before.cr0,
            after.cr0,
            after.rdx(),
            after.rip
        ),
        Event::Sipi { from, vector } => format!("sipi from vcpu {from} vector {vector:#x}"),
        Event::Ipi { dst, vector, mode } => format!("ipi to {dst} vector {vector:#x} {mode:?}"),
        Event::Cpuid { entries } => format!("cpuid ({} entries)", entries.len()),
        Event::QuirksDisabled { cap, mask } => {
            format!("quirks disabled (cap {cap}) mask {mask:#x}")
        }
        Event::MsrFilter { filter } => format!(
            "msr filter default_{} with {} ranges",
            if filter.default_deny { "deny" } else { "allow" },
            filter.ranges.len()
        ),
        Event::UserSpaceMsr { mask } => format!("user-space msr exits mask {mask:#x}"),
        Event::SetupMce { mcg_cap } => format!("setup mce mcg_cap={mcg_cap:#x}"),
        Event::Io {
            port,
            size,
            write,
            data,
        } => format!(
            "io {} port {port:#x} size {size} data {data:#x}",
            if *write { "out" } else { "in" }
        ),
        Event::Exception {
            vector,
            error_code,
            reinjected,
        } => format!(
            "exception vector {vector}{}{}",
            error_code.map(|c| format!(" ({c:#x})")).unwrap_or_default(),
            if *reinjected { " [reinjected]" } else { "" }
        ),
        Event::Halt => "hlt".into(),
        Event::RawExit { exit_reason, data } => {
            format!("raw exit {exit_reason} ({} bytes)", data.len())
        }
        Event::Lost { source, count } => format!("LOST {count} events ({source:?})"),
        Event::End { reason } => format!("end {reason:?}"),
    }
}
