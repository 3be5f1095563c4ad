//! What a script sees (`ctx`) and returns (outcomes); docs/policy-scripts.md
//! lists every name registered here.

use std::sync::{Arc, Mutex};

use kvmtrace_format::{AfterShutdown, ArchState, MsrExitReason, MsrOutcome, MwaitOutcome};
use rhai::{Dynamic, EvalAltResult, Map, NativeCallContext, Position};

use crate::engine::{Prediction, StatePrediction};
use crate::external::{EventQuery, HookState, MsrQuery, VcpuView, model_msr_value};
use crate::policy::Switches;
use crate::state::VcpuState;

use super::Shared;

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

/// The base policy's decision, as a hook sees it.
#[derive(Clone, Debug, Default)]
pub struct BaseView {
    /// "value", "ok", "gp", "deflect", "vm_failed", "nop", "ud", "init",
    /// "reset", "resume", "stop", "state" or "unmodeled".
    pub outcome: &'static str,
    pub value: Option<u64>,
    pub reason: Option<&'static str>,
    pub errno: Option<i32>,
    pub rule: &'static str,
}

/// Everything a hook may read, copied from the engine for one call.
pub struct CtxData {
    hook: &'static str,
    vcpu: u32,
    index: Option<u32>,
    value: Option<u64>,
    host: bool,
    monitor: Option<bool>,
    base: BaseView,
    base_state: Option<ArchState>,
    before: Option<ArchState>,
    release: String,
    vendor: &'static str,
    base_policy: String,
    switches: Switches,
    disabled_quirks: u64,
    user_space_msr: u32,
    /// The MSR filter denies this access.
    filtered: bool,
    has_filter: bool,
    irqchip: &'static str,
    state: VcpuState,
}

fn reason_name(r: MsrExitReason) -> &'static str {
    match r {
        MsrExitReason::Inval => "inval",
        MsrExitReason::Unknown => "unknown",
        MsrExitReason::Filter => "filter",
    }
}

impl CtxData {
    fn common(hook: &'static str, v: &VcpuView<'_>) -> CtxData {
        CtxData {
            hook,
            vcpu: v.vcpu,
            index: None,
            value: None,
            host: false,
            monitor: None,
            base: BaseView::default(),
            base_state: None,
            before: None,
            release: v.policy.release.clone(),
            vendor: v.policy.vendor.name(),
            base_policy: v.policy.base.clone(),
            switches: v.policy.switches.clone(),
            disabled_quirks: v.vm.disabled_quirks,
            user_space_msr: v.vm.user_space_msr,
            filtered: false,
            has_filter: false,
            irqchip: match v.vm.irqchip {
                _ if !v.vm.irqchip_known => "unknown",
                kvmtrace_format::Irqchip::None => "none",
                kvmtrace_format::Irqchip::Kernel => "kernel",
                kvmtrace_format::Irqchip::Split => "split",
            },
            state: v.state.clone(),
        }
    }

    pub fn msr(hook: &'static str, q: &MsrQuery<'_>) -> CtxData {
        let mut d = CtxData::common(hook, &q.view);
        d.index = Some(q.index);
        d.value = q.value;
        d.host = q.origin == kvmtrace_format::Origin::Host;
        d.has_filter = q.view.vm.filter.is_some();
        // The filter sees guest accesses to filterable MSRs only (§0, §4).
        d.filtered = match &q.view.vm.filter {
            Some(f) if !d.host && !(0x800..=0x8ff).contains(&q.index) => {
                !f.allows(q.index, q.value.is_some())
            }
            _ => false,
        };
        d.base = match q.base.outcome {
            None => BaseView {
                outcome: "unmodeled",
                ..BaseView::default()
            },
            Some(MsrOutcome::Value(x)) => BaseView {
                outcome: "value",
                value: Some(x),
                ..BaseView::default()
            },
            Some(MsrOutcome::Ok) => BaseView {
                outcome: "ok",
                ..BaseView::default()
            },
            Some(MsrOutcome::InjectGp) => BaseView {
                outcome: "gp",
                ..BaseView::default()
            },
            Some(MsrOutcome::UserExit { reason, .. }) => BaseView {
                outcome: "deflect",
                reason: Some(reason_name(reason)),
                ..BaseView::default()
            },
            Some(MsrOutcome::VmFailed { errno }) => BaseView {
                outcome: "vm_failed",
                errno: Some(errno),
                ..BaseView::default()
            },
        };
        d.base.rule = q.base.rule.name;
        d
    }

    pub fn mwait(q: &EventQuery<'_>, monitor: bool, base: &Prediction<MwaitOutcome>) -> CtxData {
        let mut d = CtxData::common("mwait", &q.view);
        d.monitor = Some(monitor);
        d.base = BaseView {
            outcome: match base.outcome {
                None => "unmodeled",
                Some(MwaitOutcome::Nop) => "nop",
                Some(MwaitOutcome::InjectUd) => "ud",
                Some(MwaitOutcome::NotIntercepted) => "not_intercepted",
            },
            rule: base.rule.name,
            ..BaseView::default()
        };
        d
    }

    pub fn shutdown(q: &EventQuery<'_>, base: &Prediction<AfterShutdown>) -> CtxData {
        let mut d = CtxData::common("shutdown", &q.view);
        d.base = BaseView {
            outcome: match base.outcome {
                None => "unmodeled",
                Some(AfterShutdown::Init) => "init",
                Some(AfterShutdown::Reset) => "reset",
                Some(AfterShutdown::Resume) => "resume",
                Some(AfterShutdown::Stop) => "stop",
            },
            rule: base.rule.name,
            ..BaseView::default()
        };
        d
    }

    pub fn state(
        hook: &'static str,
        q: &EventQuery<'_>,
        before: Option<&ArchState>,
        base: &StatePrediction,
    ) -> CtxData {
        let mut d = CtxData::common(hook, &q.view);
        d.base = BaseView {
            outcome: "state",
            rule: base.rule.name,
            ..BaseView::default()
        };
        d.base_state = Some(base.state.clone());
        d.before = before.cloned();
        d
    }
}

/// The `ctx` argument of every hook.
#[derive(Clone)]
pub struct Ctx {
    d: Arc<CtxData>,
    state: Shared,
}

/// The hook's per-vCPU state after the call.
pub struct StateHandle(Shared);

impl StateHandle {
    pub fn take(self) -> HookState {
        match self.0.lock() {
            Ok(mut g) => std::mem::take(&mut *g),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        }
    }
}

impl Ctx {
    pub fn new(d: CtxData, state: HookState) -> (Ctx, StateHandle) {
        let shared = Arc::new(Mutex::new(state));
        (
            Ctx {
                d: Arc::new(d),
                state: shared.clone(),
            },
            StateHandle(shared),
        )
    }
}

/// What a hook returns.
#[derive(Clone, Debug, PartialEq)]
pub enum OutcomeKind {
    Value(u64),
    /// A write accepted; `Some(x)`: the model stores x.
    Ok(Option<u64>),
    Gp,
    Deflect(MsrExitReason),
    VmFailed(i32),
    Nop,
    Ud,
    Then(AfterShutdown),
    State(Vec<(String, u64)>),
    Defer,
    Unmodeled,
}

impl OutcomeKind {
    pub fn name(&self) -> String {
        match self {
            OutcomeKind::Value(x) => format!("value({x:#x})"),
            OutcomeKind::Ok(None) => "ok()".into(),
            OutcomeKind::Ok(Some(x)) => format!("ok_store({x:#x})"),
            OutcomeKind::Gp => "gp()".into(),
            OutcomeKind::Deflect(r) => format!("deflect(\"{}\")", reason_name(*r)),
            OutcomeKind::VmFailed(e) => format!("vm_failed({e})"),
            OutcomeKind::Nop => "nop()".into(),
            OutcomeKind::Ud => "ud()".into(),
            OutcomeKind::Then(t) => format!(
                "then(\"{}\")",
                match t {
                    AfterShutdown::Init => "init",
                    AfterShutdown::Reset => "reset",
                    AfterShutdown::Resume => "resume",
                    AfterShutdown::Stop => "stop",
                }
            ),
            OutcomeKind::State(_) => "state(...)".into(),
            OutcomeKind::Defer => "defer()".into(),
            OutcomeKind::Unmodeled => "unmodeled()".into(),
        }
    }
}

/// An outcome with where the script made it and what it says about it.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub kind: OutcomeKind,
    pub line: usize,
    pub column: usize,
    pub because: Option<String>,
    pub note: Option<String>,
}

fn outcome(ctx: &NativeCallContext, kind: OutcomeKind) -> Outcome {
    let p = ctx.call_position();
    Outcome {
        kind,
        line: p.line().unwrap_or(1),
        column: p.position().unwrap_or(1),
        because: None,
        note: None,
    }
}

fn runtime(msg: String, p: Position) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(msg.into(), p).into()
}

fn opt(x: Option<u64>) -> Dynamic {
    x.map_or(Dynamic::UNIT, |v| Dynamic::from_int(v as i64))
}

/// The fields `state(#{...})`, `ctx.base_state(...)` and `ctx.before(...)`
/// know, besides `msr_<hex index>`.
pub const STATE_FIELDS: [&str; 33] = [
    "rax",
    "rcx",
    "rdx",
    "rbx",
    "rsp",
    "rbp",
    "rsi",
    "rdi",
    "r8",
    "r9",
    "r10",
    "r11",
    "r12",
    "r13",
    "r14",
    "r15",
    "rip",
    "rflags",
    "cr0",
    "cr2",
    "cr3",
    "cr4",
    "efer",
    "dr6",
    "dr7",
    "apic_base",
    "mp_state",
    "cs_selector",
    "cs_base",
    "gdtr_base",
    "gdtr_limit",
    "idtr_base",
    "idtr_limit",
];

fn msr_field(field: &str) -> Option<u32> {
    let hex = field.strip_prefix("msr_")?;
    u32::from_str_radix(hex.trim_start_matches("0x"), 16).ok()
}

pub fn get_state_field(s: &ArchState, field: &str) -> Option<u64> {
    if let Some(i) = STATE_FIELDS[..16].iter().position(|f| *f == field) {
        return Some(s.gprs[i]);
    }
    Some(match field {
        "rip" => s.rip,
        "rflags" => s.rflags,
        "cr0" => s.cr0,
        "cr2" => s.cr2,
        "cr3" => s.cr3,
        "cr4" => s.cr4,
        "efer" => s.efer,
        "dr6" => s.dr6,
        "dr7" => s.dr7,
        "apic_base" => s.apic_base,
        "mp_state" => s.mp_state as u64,
        "cs_selector" => s.cs.selector as u64,
        "cs_base" => s.cs.base,
        "gdtr_base" => s.gdtr.base,
        "gdtr_limit" => s.gdtr.limit as u64,
        "idtr_base" => s.idtr.base,
        "idtr_limit" => s.idtr.limit as u64,
        f => return s.msr(msr_field(f)?),
    })
}

/// Set `field` of `s`; false for an unknown field.
pub fn set_state_field(s: &mut ArchState, field: &str, x: u64) -> bool {
    if let Some(i) = STATE_FIELDS[..16].iter().position(|f| *f == field) {
        s.gprs[i] = x;
        return true;
    }
    match field {
        "rip" => s.rip = x,
        "rflags" => s.rflags = x,
        "cr0" => s.cr0 = x,
        "cr2" => s.cr2 = x,
        "cr3" => s.cr3 = x,
        "cr4" => s.cr4 = x,
        "efer" => s.efer = x,
        "dr6" => s.dr6 = x,
        "dr7" => s.dr7 = x,
        "apic_base" => s.apic_base = x,
        "mp_state" => s.mp_state = x as u32,
        "cs_selector" => s.cs.selector = x as u16,
        "cs_base" => s.cs.base = x,
        "gdtr_base" => s.gdtr.base = x,
        "gdtr_limit" => s.gdtr.limit = x as u16,
        "idtr_base" => s.idtr.base = x,
        "idtr_limit" => s.idtr.limit = x as u16,
        f => {
            let Some(i) = msr_field(f) else {
                return false;
            };
            match s.msrs.binary_search_by_key(&i, |&(k, _)| k) {
                Ok(j) => s.msrs[j].1 = x,
                Err(j) => s.msrs.insert(j, (i, x)),
            }
        }
    }
    true
}

fn cpuid_bit(c: &crate::state::CpuidBits, name: &str) -> Option<Dynamic> {
    Some(match name {
        "mwait" => c.mwait.into(),
        "sse3" => c.sse3.into(),
        "vmx" => c.vmx.into(),
        "x2apic" => c.x2apic.into(),
        "sgx" => c.sgx.into(),
        "sgx_lc" => c.sgx_lc.into(),
        "amd_or_hygon" => c.amd_or_hygon.into(),
        "intel_compatible" => c.intel_compatible.into(),
        "arch_capabilities" => c.arch_capabilities.into(),
        "pdcm" => c.pdcm.into(),
        "xsaves" => c.xsaves.into(),
        "rdtscp" => c.rdtscp.into(),
        "osvw" => c.osvw.into(),
        "rdpid" => c.rdpid.into(),
        "hyperv" => c.hyperv.into(),
        "known" => c.known.into(),
        "maxphyaddr" => Dynamic::from_int(c.maxphyaddr as i64),
        "kvm_pv_features" => Dynamic::from_int(c.kvm_pv_features as i64),
        "leaf1_eax" => c
            .leaf1_eax
            .map_or(Dynamic::UNIT, |x| Dynamic::from_int(x as i64)),
        _ => return None,
    })
}

const CPUID_NAMES: &str = "mwait, sse3, vmx, x2apic, sgx, sgx_lc, amd_or_hygon, \
    intel_compatible, arch_capabilities, pdcm, xsaves, rdtscp, osvw, rdpid, hyperv, known, \
    maxphyaddr, kvm_pv_features, leaf1_eax";

pub fn register(e: &mut rhai::Engine) {
    e.register_type_with_name::<Ctx>("Ctx");
    e.register_type_with_name::<Outcome>("Outcome");

    // ---- ctx: the access ----
    e.register_get("hook", |c: &mut Ctx| c.d.hook.to_string());
    e.register_get("vcpu", |c: &mut Ctx| c.d.vcpu as i64);
    e.register_get("index", |c: &mut Ctx| {
        c.d.index
            .map_or(Dynamic::UNIT, |i| Dynamic::from_int(i as i64))
    });
    e.register_get("value", |c: &mut Ctx| opt(c.d.value));
    e.register_get("write", |c: &mut Ctx| c.d.value.is_some());
    e.register_get("host", |c: &mut Ctx| c.d.host);
    e.register_get("monitor", |c: &mut Ctx| {
        c.d.monitor.map_or(Dynamic::UNIT, Dynamic::from_bool)
    });
    // ---- ctx: the base policy's decision ----
    e.register_get("base_outcome", |c: &mut Ctx| c.d.base.outcome.to_string());
    e.register_get("base_value", |c: &mut Ctx| opt(c.d.base.value));
    e.register_get("base_reason", |c: &mut Ctx| {
        c.d.base
            .reason
            .map_or(Dynamic::UNIT, |r| Dynamic::from(r.to_string()))
    });
    e.register_get("base_errno", |c: &mut Ctx| {
        c.d.base
            .errno
            .map_or(Dynamic::UNIT, |x| Dynamic::from_int(x as i64))
    });
    e.register_get("base_rule", |c: &mut Ctx| c.d.base.rule.to_string());
    e.register_fn("base_state", |c: &mut Ctx, field: &str| {
        opt(c
            .d
            .base_state
            .as_ref()
            .and_then(|s| get_state_field(s, field)))
    });
    e.register_fn("before", |c: &mut Ctx, field: &str| {
        opt(c.d.before.as_ref().and_then(|s| get_state_field(s, field)))
    });
    // ---- ctx: the modelled vCPU and VM ----
    e.register_get("release", |c: &mut Ctx| c.d.release.clone());
    e.register_get("vendor", |c: &mut Ctx| c.d.vendor.to_string());
    e.register_get("base_policy", |c: &mut Ctx| c.d.base_policy.clone());
    e.register_get("user_space_msr", |c: &mut Ctx| c.d.user_space_msr as i64);
    e.register_get("disabled_quirks", |c: &mut Ctx| c.d.disabled_quirks as i64);
    e.register_get("irqchip", |c: &mut Ctx| c.d.irqchip.to_string());
    e.register_get("filtered", |c: &mut Ctx| c.d.filtered);
    e.register_get("has_filter", |c: &mut Ctx| c.d.has_filter);
    e.register_get("x2apic_mode", |c: &mut Ctx| c.d.state.x2apic_mode());
    e.register_get("bank_num", |c: &mut Ctx| c.d.state.bank_num() as i64);
    e.register_fn("msr", |c: &mut Ctx, index: i64| {
        u32::try_from(index)
            .ok()
            .and_then(|i| model_msr_value(&c.d.state, i))
            .map_or(Dynamic::UNIT, |v| Dynamic::from_int(v as i64))
    });
    e.register_fn(
        "cpuid",
        |ctx: NativeCallContext, c: &mut Ctx, name: &str| -> RhaiResult<Dynamic> {
            cpuid_bit(&c.d.state.cpuid, name).ok_or_else(|| {
                runtime(
                    format!("unknown CPUID bit {name:?}; known: {CPUID_NAMES}"),
                    ctx.call_position(),
                )
            })
        },
    );
    e.register_fn("cpuid_leaf", |c: &mut Ctx, function: i64, index: i64| {
        let hit = c.d.state.cpuid_entries.iter().find(|e| {
            e.function as i64 == function && (e.index as i64 == index || e.flags & 1 == 0)
        });
        match hit {
            None => Dynamic::UNIT,
            Some(e) => {
                let mut m = Map::new();
                m.insert("eax".into(), Dynamic::from_int(e.eax as i64));
                m.insert("ebx".into(), Dynamic::from_int(e.ebx as i64));
                m.insert("ecx".into(), Dynamic::from_int(e.ecx as i64));
                m.insert("edx".into(), Dynamic::from_int(e.edx as i64));
                m.into()
            }
        }
    });
    e.register_fn(
        "quirk_disabled",
        |ctx: NativeCallContext, c: &mut Ctx, name: &str| -> RhaiResult<bool> {
            let bit = crate::quirks::by_name(name).ok_or_else(|| {
                runtime(
                    format!(
                        "unknown quirk {name:?}; known: {}",
                        crate::quirks::ALL.map(|(n, _)| n).join(", ")
                    ),
                    ctx.call_position(),
                )
            })?;
            Ok(c.d.disabled_quirks & bit != 0)
        },
    );
    e.register_fn(
        "switch",
        |ctx: NativeCallContext, c: &mut Ctx, name: &str| -> RhaiResult<String> {
            c.d.switches
                .entries()
                .into_iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v)
                .ok_or_else(|| {
                    runtime(
                        format!(
                            "unknown switch {name:?}; known: {}",
                            Switches::names().join(", ")
                        ),
                        ctx.call_position(),
                    )
                })
        },
    );
    // ---- ctx: per-vCPU script state ----
    e.register_fn("get", |c: &mut Ctx, key: &str| {
        let st = match c.state.lock() {
            Ok(g) => g.get(key),
            Err(p) => p.into_inner().get(key),
        };
        st.map_or(Dynamic::UNIT, Dynamic::from_int)
    });
    e.register_fn(
        "set",
        |ctx: NativeCallContext, c: &mut Ctx, key: &str, value: i64| -> RhaiResult<()> {
            let r = match c.state.lock() {
                Ok(mut g) => g.set(key, value),
                Err(p) => p.into_inner().set(key, value),
            };
            r.map_err(|m| runtime(m, ctx.call_position()))
        },
    );
    e.register_fn(
        "set",
        |ctx: NativeCallContext, c: &mut Ctx, key: &str, value: bool| -> RhaiResult<()> {
            let r = match c.state.lock() {
                Ok(mut g) => g.set(key, value as i64),
                Err(p) => p.into_inner().set(key, value as i64),
            };
            r.map_err(|m| runtime(m, ctx.call_position()))
        },
    );

    // ---- outcomes ----
    e.register_fn("value", |ctx: NativeCallContext, x: i64| {
        outcome(&ctx, OutcomeKind::Value(x as u64))
    });
    e.register_fn("ok", |ctx: NativeCallContext| {
        outcome(&ctx, OutcomeKind::Ok(None))
    });
    e.register_fn("ok_store", |ctx: NativeCallContext, x: i64| {
        outcome(&ctx, OutcomeKind::Ok(Some(x as u64)))
    });
    e.register_fn("gp", |ctx: NativeCallContext| {
        outcome(&ctx, OutcomeKind::Gp)
    });
    e.register_fn(
        "deflect",
        |ctx: NativeCallContext, reason: &str| -> RhaiResult<Outcome> {
            let r = match reason {
                "inval" => MsrExitReason::Inval,
                "unknown" => MsrExitReason::Unknown,
                "filter" => MsrExitReason::Filter,
                other => {
                    return Err(runtime(
                        format!(
                            "unknown deflection reason {other:?}; known: inval, unknown, filter"
                        ),
                        ctx.call_position(),
                    ));
                }
            };
            Ok(outcome(&ctx, OutcomeKind::Deflect(r)))
        },
    );
    e.register_fn(
        "vm_failed",
        |ctx: NativeCallContext, errno: i64| -> RhaiResult<Outcome> {
            let e = i32::try_from(errno)
                .map_err(|_| runtime(format!("errno {errno} out of range"), ctx.call_position()))?;
            Ok(outcome(&ctx, OutcomeKind::VmFailed(e)))
        },
    );
    e.register_fn("nop", |ctx: NativeCallContext| {
        outcome(&ctx, OutcomeKind::Nop)
    });
    e.register_fn("ud", |ctx: NativeCallContext| {
        outcome(&ctx, OutcomeKind::Ud)
    });
    e.register_fn(
        "then",
        |ctx: NativeCallContext, what: &str| -> RhaiResult<Outcome> {
            let t = match what {
                "init" => AfterShutdown::Init,
                "reset" => AfterShutdown::Reset,
                "resume" => AfterShutdown::Resume,
                "stop" => AfterShutdown::Stop,
                other => {
                    return Err(runtime(
                        format!(
                            "unknown shutdown outcome {other:?}; known: init, reset, resume, stop"
                        ),
                        ctx.call_position(),
                    ));
                }
            };
            Ok(outcome(&ctx, OutcomeKind::Then(t)))
        },
    );
    e.register_fn(
        "state",
        |ctx: NativeCallContext, changes: Map| -> RhaiResult<Outcome> {
            let mut v = Vec::with_capacity(changes.len());
            for (k, x) in changes {
                let Some(x) = x.as_int().ok() else {
                    return Err(runtime(
                        format!(
                            "state field {k}: expected an integer, got {}",
                            x.type_name()
                        ),
                        ctx.call_position(),
                    ));
                };
                v.push((k.to_string(), x as u64));
            }
            Ok(outcome(&ctx, OutcomeKind::State(v)))
        },
    );
    e.register_fn("unmodeled", |ctx: NativeCallContext| {
        outcome(&ctx, OutcomeKind::Unmodeled)
    });
    e.register_fn("defer", |ctx: NativeCallContext| {
        outcome(&ctx, OutcomeKind::Defer)
    });
    e.register_fn("note", |o: &mut Outcome, note: &str| {
        let mut o = o.clone();
        o.note = Some(note.chars().take(256).collect());
        o
    });
    e.register_fn("because", |o: &mut Outcome, why: &str| {
        let mut o = o.clone();
        o.because = Some(why.chars().take(256).collect());
        o
    });
    // Unsigned helpers (Rhai integers are i64; MSR values are u64 bit patterns).
    e.register_fn("ult", |a: i64, b: i64| (a as u64) < (b as u64));
    e.register_fn("not", |a: i64| !a);
    e.register_fn("hex", |a: i64| format!("{:#x}", a as u64));
}
