//! Policies outside the preset switches: a [`PolicyHooks`] implementation
//! hooks some decisions of a base policy (guest and host MSR accesses,
//! MONITOR/MWAIT, SHUTDOWN, RESET, INIT) and answers them itself or defers to
//! the base model. Policy scripts (`crate::script`, `*.rhai`) are one
//! implementation; a crate outside this repository can write another in Rust
//! and attach it with [`Policy::with_hooks`](crate::Policy::with_hooks):
//!
//! ```
//! use kvmtrace_format::{MsrOutcome, TraceHeader};
//! use kvmtrace_replayer::external::{
//!     Decision, HookError, HookSet, HookState, MsrQuery, PolicyHooks, Verdict,
//! };
//! use kvmtrace_replayer::{Policy, Rule, Vendor};
//!
//! /// A proposal: guest reads of MSR 0x10 return 0 (never merged anywhere).
//! struct ZeroTsc;
//! static ZERO_TSC: Rule = Rule { name: "TSC reads 0", section: "-", release: "proposal" };
//!
//! impl PolicyHooks for ZeroTsc {
//!     fn hooks(&self) -> HookSet {
//!         HookSet { rdmsr: vec![0x10..=0x10], ..HookSet::default() }
//!     }
//!     fn msr(&self, q: &MsrQuery<'_>, _: &mut HookState) -> Result<Verdict<MsrOutcome>, HookError> {
//!         Ok(Verdict::decide(MsrOutcome::Value(0), &ZERO_TSC))
//!     }
//! }
//!
//! let base = Policy::preset("kvm-6.18", Vendor::Intel).unwrap();
//! let policy = base.with_hooks("zero-tsc", ZeroTsc);
//! let engine = kvmtrace_replayer::Engine::new(policy, &TraceHeader::default());
//! let p = engine.msr_read(0, 0x10, kvmtrace_format::Origin::Guest);
//! assert_eq!(p.outcome, Some(MsrOutcome::Value(0)));
//! assert_eq!(p.rule.name, "TSC reads 0");
//! ```
//!
//! The contract: hooks are deterministic functions of their query and the
//! per-vCPU [`HookState`] (no clock, randomness or I/O); an access or event
//! outside [`PolicyHooks::hooks`] never calls them (the replay fast path).
//! A hook's error stops that policy's hooks: the engine keeps the first error
//! ([`Engine::hook_error`]) and the CLI exits 2 with it.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};

use kvmtrace_format::{AfterShutdown, ArchState, MsrOutcome, MwaitOutcome, Origin};

use crate::engine::{Engine, Prediction, StatePrediction};
use crate::policy::Policy;
use crate::rules::Rule;
use crate::state::{VcpuState, VmState};

/// What a [`PolicyHooks`] implementation hooks. MSR lists are inclusive
/// ranges; anything not listed goes to the base model without a call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HookSet {
    /// Guest RDMSR.
    pub rdmsr: Vec<RangeInclusive<u32>>,
    /// Guest WRMSR.
    pub wrmsr: Vec<RangeInclusive<u32>>,
    /// Host `KVM_GET_MSRS`.
    pub host_rdmsr: Vec<RangeInclusive<u32>>,
    /// Host `KVM_SET_MSRS`.
    pub host_wrmsr: Vec<RangeInclusive<u32>>,
    /// MONITOR and MWAIT (one KVM handler, `kvm_emulate_monitor_mwait`).
    pub mwait: bool,
    /// What follows a triple-fault shutdown.
    pub shutdown: bool,
    /// The RESET state at vCPU creation.
    pub reset: bool,
    /// The state after INIT.
    pub init: bool,
}

impl HookSet {
    fn list(&self, write: bool, origin: Origin) -> &[RangeInclusive<u32>] {
        match (write, origin) {
            (false, Origin::Guest) => &self.rdmsr,
            (true, Origin::Guest) => &self.wrmsr,
            (false, Origin::Host) => &self.host_rdmsr,
            (true, Origin::Host) => &self.host_wrmsr,
        }
    }

    /// Whether an access is hooked.
    #[inline]
    pub fn msr(&self, index: u32, write: bool, origin: Origin) -> bool {
        self.list(write, origin).iter().any(|r| r.contains(&index))
    }

    /// Whether some hooked MSR is one the model has no handler for (the
    /// replay must then look at every access, not skip them as unmodeled).
    fn hooks_unhandled(&self) -> bool {
        [
            (&self.rdmsr, false),
            (&self.wrmsr, true),
            (&self.host_rdmsr, false),
            (&self.host_wrmsr, true),
        ]
        .iter()
        .flat_map(|(l, write)| l.iter().map(move |r| (r, *write)))
        .any(|(r, write)| {
            // Ranges are bounded by the header (`script`) or the
            // implementation; a huge range is a yes without a walk.
            r.end().saturating_sub(*r.start()) > 0x4000
                || r.clone()
                    .any(|i| !crate::model::model_handles_access(i, write))
        })
    }
}

/// Per-vCPU state a policy keeps across events (e.g. "the guest wrote X
/// before"): integer values by name, at most [`HookState::MAX_KEYS`] keys of
/// at most [`HookState::MAX_KEY_LEN`] bytes. Folded like the model's own
/// state: a replay lane's copy follows that policy's outcomes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HookState {
    values: BTreeMap<String, i64>,
}

impl HookState {
    pub const MAX_KEYS: usize = 64;
    pub const MAX_KEY_LEN: usize = 64;

    pub fn get(&self, key: &str) -> Option<i64> {
        self.values.get(key).copied()
    }

    /// Set `key`; an error when the state would exceed its bounds.
    pub fn set(&mut self, key: &str, value: i64) -> Result<(), String> {
        if key.len() > Self::MAX_KEY_LEN {
            return Err(format!(
                "state key of {} bytes exceeds {} bytes",
                key.len(),
                Self::MAX_KEY_LEN
            ));
        }
        if let Some(v) = self.values.get_mut(key) {
            *v = value;
            return Ok(());
        }
        if self.values.len() >= Self::MAX_KEYS {
            return Err(format!("more than {} state keys per vCPU", Self::MAX_KEYS));
        }
        self.values.insert(key.to_string(), value);
        Ok(())
    }

    pub fn remove(&mut self, key: &str) {
        self.values.remove(key);
    }
}

/// The vCPU and VM a hook decides for, as the base model holds them.
#[derive(Clone, Copy)]
pub struct VcpuView<'a> {
    pub vcpu: u32,
    /// Guest CPUID bits and entries, MSR values the model holds.
    pub state: &'a VcpuState,
    /// Disabled quirks, user-space MSR mask, MSR filter, irqchip.
    pub vm: &'a VmState,
    /// The base policy (release, vendor, switches).
    pub policy: &'a Policy,
}

impl VcpuView<'_> {
    /// The value the model holds for MSR `index` on this vCPU, if it holds one.
    pub fn msr(&self, index: u32) -> Option<u64> {
        model_msr_value(self.state, index)
    }
}

/// A hooked MSR access.
pub struct MsrQuery<'a> {
    pub view: VcpuView<'a>,
    pub index: u32,
    /// `Some` for a write.
    pub value: Option<u64>,
    pub origin: Origin,
    /// What the base policy decides (`outcome: None`: unmodeled).
    pub base: Prediction<MsrOutcome>,
}

/// A hooked event (MONITOR/MWAIT, SHUTDOWN, RESET, INIT).
pub struct EventQuery<'a> {
    pub view: VcpuView<'a>,
}

/// A hook's answer: defer to the base policy, or decide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict<T> {
    Defer,
    Decide(Decision<T>),
    /// The policy cannot know (e.g. state it needs is unknown): neither
    /// agreement nor divergence.
    Unmodeled,
}

impl<T> Verdict<T> {
    pub fn decide(outcome: T, rule: &'static Rule) -> Verdict<T> {
        Verdict::Decide(Decision {
            outcome,
            rule,
            store: None,
        })
    }
}

/// An outcome with the rule reports cite for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision<T> {
    pub outcome: T,
    pub rule: &'static Rule,
    /// For an MSR write decided `Ok`: the value the model stores for that
    /// MSR (`None`: what the base would store if it accepted the write too,
    /// else the value written). Ignored for other outcomes.
    pub store: Option<u64>,
}

/// A hook failed: where (`file:line:column` for scripts), in which hook, why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{location}: in hook {hook}: {message}")]
pub struct HookError {
    pub location: String,
    pub hook: String,
    pub message: String,
}

/// A policy's own decisions on top of a base model (see the module docs).
///
/// Every method has a default that defers; implement the ones
/// [`PolicyHooks::hooks`] declares.
pub trait PolicyHooks: Send + Sync + 'static {
    /// What this policy hooks (read once, when attached).
    fn hooks(&self) -> HookSet;

    /// A hooked guest RDMSR/WRMSR or host `KVM_GET/SET_MSRS`.
    fn msr(
        &self,
        _q: &MsrQuery<'_>,
        _state: &mut HookState,
    ) -> Result<Verdict<MsrOutcome>, HookError> {
        Ok(Verdict::Defer)
    }

    /// MONITOR (`monitor` true) or MWAIT.
    fn mwait(
        &self,
        _q: &EventQuery<'_>,
        _monitor: bool,
        _base: &Prediction<MwaitOutcome>,
        _state: &mut HookState,
    ) -> Result<Verdict<MwaitOutcome>, HookError> {
        Ok(Verdict::Defer)
    }

    /// What follows a triple-fault shutdown.
    fn shutdown(
        &self,
        _q: &EventQuery<'_>,
        _base: &Prediction<AfterShutdown>,
        _state: &mut HookState,
    ) -> Result<Verdict<AfterShutdown>, HookError> {
        Ok(Verdict::Defer)
    }

    /// The RESET state (a decision's outcome is the whole state).
    fn reset(
        &self,
        _q: &EventQuery<'_>,
        _base: &StatePrediction,
        _state: &mut HookState,
    ) -> Result<Verdict<ArchState>, HookError> {
        Ok(Verdict::Defer)
    }

    /// The state after INIT from `before`.
    fn init(
        &self,
        _q: &EventQuery<'_>,
        _before: &ArchState,
        _base: &StatePrediction,
        _state: &mut HookState,
    ) -> Result<Verdict<ArchState>, HookError> {
        Ok(Verdict::Defer)
    }
}

struct Attached {
    imp: Box<dyn PolicyHooks>,
    set: HookSet,
    unhandled: bool,
}

/// The hooks a [`Policy`] carries (none for presets and TOML files).
/// Two policies' hooks are equal when they are the same attachment.
#[derive(Clone, Default)]
pub struct Hooks(Option<Arc<Attached>>);

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match &self.0 {
            None => f.write_str("Hooks(none)"),
            Some(a) => write!(f, "Hooks({:?})", a.set),
        }
    }
}

impl PartialEq for Hooks {
    fn eq(&self, other: &Hooks) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Hooks {
    pub fn new(imp: impl PolicyHooks) -> Hooks {
        let set = imp.hooks();
        let unhandled = set.hooks_unhandled();
        Hooks(Some(Arc::new(Attached {
            imp: Box::new(imp),
            set,
            unhandled,
        })))
    }

    pub fn is_none(&self) -> bool {
        self.0.is_none()
    }

    /// What is hooked (`None` without hooks).
    pub fn set(&self) -> Option<&HookSet> {
        self.0.as_ref().map(|a| &a.set)
    }

    #[inline]
    fn msr(&self, index: u32, write: bool, origin: Origin) -> Option<&Attached> {
        match &self.0 {
            None => None,
            Some(a) if a.set.msr(index, write, origin) => Some(a),
            Some(_) => None,
        }
    }

    fn event(&self, pick: fn(&HookSet) -> bool) -> Option<&Attached> {
        self.0.as_deref().filter(|a| pick(&a.set))
    }
}

impl Policy {
    /// This policy as the base of `hooks`, named `name`.
    pub fn with_hooks(mut self, name: impl Into<String>, hooks: impl PolicyHooks) -> Policy {
        self.name = name.into();
        self.hooks = Hooks::new(hooks);
        self
    }
}

/// The engine's side: per-vCPU [`HookState`] and the first hook error.
#[derive(Default)]
pub(crate) struct EngineHooks {
    inner: Mutex<HooksInner>,
    /// Set while `apply` re-decides an access to fold it: hooks run without
    /// committing their state (the decision already committed it).
    pub(crate) peek: bool,
}

#[derive(Clone, Default)]
struct HooksInner {
    states: Vec<HookState>,
    error: Option<HookError>,
}

impl Clone for EngineHooks {
    fn clone(&self) -> EngineHooks {
        let inner = match self.inner.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        EngineHooks {
            inner: Mutex::new(inner),
            peek: self.peek,
        }
    }
}

impl std::fmt::Debug for EngineHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("EngineHooks")
    }
}

impl EngineHooks {
    fn lock(&self) -> std::sync::MutexGuard<'_, HooksInner> {
        match self.inner.lock() {
            Ok(g) => g,
            // A hook never panics while holding it (no user code runs under
            // the lock); recover anyway.
            Err(p) => p.into_inner(),
        }
    }

    /// Run `f` with vCPU `vcpu`'s state; commit it unless peeking. `None`
    /// once a hook failed (that policy's hooks are off).
    fn run<T>(
        &self,
        vcpu: u32,
        f: impl FnOnce(&mut HookState) -> Result<Verdict<T>, HookError>,
    ) -> Option<Verdict<T>> {
        let mut st = {
            let g = self.lock();
            if g.error.is_some() {
                return None;
            }
            g.states.get(vcpu as usize).cloned().unwrap_or_default()
        };
        let r = f(&mut st);
        let mut g = self.lock();
        match r {
            Ok(v) => {
                if !self.peek {
                    let i = vcpu as usize;
                    if i < crate::state::MAX_VCPUS {
                        if g.states.len() <= i {
                            g.states.resize(i + 1, HookState::default());
                        }
                        g.states[i] = st;
                    }
                }
                Some(v)
            }
            Err(e) => {
                g.error.get_or_insert(e);
                None
            }
        }
    }

    fn error(&self) -> Option<HookError> {
        self.lock().error.clone()
    }
}

/// Where a hook failed, its prediction: unmodeled.
static HOOK_FAILED: Rule = Rule {
    name: "policy hook failed (see the error)",
    section: "-",
    release: "-",
};

impl Engine {
    /// The first error a hook of this engine's policy returned.
    pub fn hook_error(&self) -> Option<HookError> {
        self.hooks.error()
    }

    /// The per-vCPU state the hooks of this engine's policy hold for `vcpu`.
    pub fn hook_state(&self, vcpu: u32) -> HookState {
        self.hooks
            .lock()
            .states
            .get(vcpu as usize)
            .cloned()
            .unwrap_or_default()
    }

    fn view(&self, vcpu: u32) -> VcpuView<'_> {
        VcpuView {
            vcpu,
            state: self.vcpu_state(vcpu),
            vm: &self.vm,
            policy: &self.policy,
        }
    }

    /// Whether the policy's hooks make accesses to MSRs no handler models
    /// worth looking at (replay fast path).
    pub(crate) fn hooks_unhandled_msrs(&self) -> bool {
        self.policy.hooks.0.as_ref().is_some_and(|a| a.unhandled)
    }

    /// The MSR decision with hooks: `None` when the access is not hooked (the
    /// caller decides with the base model). The test for "no hooks at all"
    /// is inline (every replay step asks); the hooked path is not.
    #[inline(always)]
    pub(crate) fn hooked_msr(
        &self,
        vcpu: u32,
        index: u32,
        value: Option<u64>,
        origin: Origin,
    ) -> Option<(&'static Rule, Option<MsrOutcome>, crate::model::Store)> {
        self.policy.hooks.0.as_ref()?;
        self.hooked_msr_run(vcpu, index, value, origin)
    }

    #[inline(never)]
    fn hooked_msr_run(
        &self,
        vcpu: u32,
        index: u32,
        value: Option<u64>,
        origin: Origin,
    ) -> Option<(&'static Rule, Option<MsrOutcome>, crate::model::Store)> {
        let a = self.policy.hooks.msr(index, value.is_some(), origin)?;
        let (base, base_store) = self.decide_msr_base(vcpu, index, value, origin);
        let q = MsrQuery {
            view: self.view(vcpu),
            index,
            value,
            origin,
            base: base.owned(),
        };
        let verdict = self.hooks.run(vcpu, |st| a.imp.msr(&q, st));
        Some(match verdict {
            None => (&HOOK_FAILED, None, crate::model::Store::None),
            Some(Verdict::Defer) => (base.rule, base.outcome, base_store),
            Some(Verdict::Unmodeled) => (&crate::rules::UNMODELED, None, crate::model::Store::None),
            Some(Verdict::Decide(d)) => {
                let store = match (value, &d.outcome) {
                    (Some(v), MsrOutcome::Ok) => match d.store {
                        Some(x) => store_value(index, x),
                        None if base.outcome == Some(MsrOutcome::Ok) => base_store,
                        None => store_value(index, v),
                    },
                    _ => crate::model::Store::None,
                };
                (d.rule, Some(d.outcome), store)
            }
        })
    }

    pub(crate) fn hooked_mwait(
        &self,
        vcpu: u32,
        monitor: bool,
        base: Prediction<MwaitOutcome>,
    ) -> Prediction<MwaitOutcome> {
        let Some(a) = self.policy.hooks.event(|s| s.mwait) else {
            return base;
        };
        let q = EventQuery {
            view: self.view(vcpu),
        };
        match self
            .hooks
            .run(vcpu, |st| a.imp.mwait(&q, monitor, &base, st))
        {
            None => failed(),
            Some(Verdict::Unmodeled) => Prediction::unmodeled(),
            Some(Verdict::Defer) => base,
            Some(Verdict::Decide(d)) => Prediction::new(d.outcome, *d.rule),
        }
    }

    pub(crate) fn hooked_shutdown(
        &self,
        vcpu: u32,
        base: Prediction<AfterShutdown>,
    ) -> Prediction<AfterShutdown> {
        let Some(a) = self.policy.hooks.event(|s| s.shutdown) else {
            return base;
        };
        let q = EventQuery {
            view: self.view(vcpu),
        };
        match self.hooks.run(vcpu, |st| a.imp.shutdown(&q, &base, st)) {
            None => failed(),
            Some(Verdict::Unmodeled) => Prediction::unmodeled(),
            Some(Verdict::Defer) => base,
            Some(Verdict::Decide(d)) => Prediction::new(d.outcome, *d.rule),
        }
    }

    pub(crate) fn hooked_reset(&self, vcpu: u32, base: StatePrediction) -> StatePrediction {
        let Some(a) = self.policy.hooks.event(|s| s.reset) else {
            return base;
        };
        let q = EventQuery {
            view: self.view(vcpu),
        };
        match self.hooks.run(vcpu, |st| a.imp.reset(&q, &base, st)) {
            // The recording's state stands (nothing known).
            None => StatePrediction {
                rule: HOOK_FAILED,
                ..base
            },
            Some(Verdict::Defer) | Some(Verdict::Unmodeled) => base,
            Some(Verdict::Decide(d)) => StatePrediction {
                state: d.outcome,
                attrs_known: base.attrs_known,
                rule: *d.rule,
            },
        }
    }

    pub(crate) fn hooked_init(
        &self,
        vcpu: u32,
        before: &ArchState,
        base: StatePrediction,
    ) -> StatePrediction {
        let Some(a) = self.policy.hooks.event(|s| s.init) else {
            return base;
        };
        let q = EventQuery {
            view: self.view(vcpu),
        };
        match self.hooks.run(vcpu, |st| a.imp.init(&q, before, &base, st)) {
            None => StatePrediction {
                rule: HOOK_FAILED,
                ..base
            },
            Some(Verdict::Defer) | Some(Verdict::Unmodeled) => base,
            Some(Verdict::Decide(d)) => StatePrediction {
                state: d.outcome,
                attrs_known: base.attrs_known,
                rule: *d.rule,
            },
        }
    }
}

fn failed<T>() -> Prediction<T> {
    Prediction {
        outcome: None,
        rule: HOOK_FAILED,
    }
}

/// The value the model holds for `index` (`None`: not held, or not known).
pub fn model_msr_value(v: &VcpuState, index: u32) -> Option<u64> {
    use crate::state::*;
    let known = |bit: u32, x: u64| (v.unknown & bit == 0).then_some(x);
    match index {
        0x1a0 => known(U_MISC_ENABLE, v.misc_enable),
        0x3a => known(U_FEAT_CTL, v.feat_ctl),
        0xc001_0015 => known(U_HWCR, v.hwcr),
        0x277 => known(U_PAT, v.pat),
        0x1b => known(U_APIC_BASE, v.apic_base),
        0x179 => known(U_MCG_CAP, v.mcg_cap),
        0x17a => known(U_MCG_STATUS, v.mcg_status),
        0x17b => known(U_MCG_CTL, v.mcg_ctl),
        0x4d0 => known(U_MCG_EXT_CTL, v.mcg_ext_ctl),
        0x400..=0x47f => v
            .mce_banks
            .get((index - 0x400) as usize)
            .and_then(|&x| known(U_BANKS, x)),
        0x280..=0x29f => v
            .mci_ctl2
            .get((index - 0x280) as usize)
            .and_then(|&x| known(U_CTL2, x)),
        _ => {
            let s = crate::model::reg_slot(index)?;
            (s < crate::model::NREGS && v.regs_known & (1 << s) != 0).then(|| v.regs[s])
        }
    }
}

/// What a hook's accepted write stores: the model's slot for `index` (if any)
/// now holds `x`.
fn store_value(index: u32, x: u64) -> crate::model::Store {
    match crate::model::Store::raw(index, x) {
        crate::model::Store::Forget(s) => crate::model::Store::Reg(s, x),
        s => s,
    }
}
