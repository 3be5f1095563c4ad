//! Policy scripts (`*.rhai`, docs/policy-scripts.md): a `//!` header in TOML
//! names the base policy and what the script hooks; Rhai functions named
//! after the hooks decide. A script is one [`PolicyHooks`] implementation
//! (`crate::external`), the same mechanism out-of-tree Rust policies use.
//!
//! Sandbox (Rhai 1.x, `Engine::new_raw` plus pure packages): no I/O (no
//! `print`/`debug`/`eval`, no modules), no clock (`no_time`), no randomness;
//! an operation limit per hook call, bounded call depth, expression depth,
//! strings, arrays and maps; the script file itself is bounded. Every error
//! names `file:line:column`.

mod api;
mod header;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use kvmtrace_format::{AfterShutdown, ArchState, MsrOutcome, MwaitOutcome, TraceHeader};
use rhai::{AST, CallFnOptions, Dynamic, Engine as Rhai, Position, Scope};

use crate::engine::{Prediction, StatePrediction};
use crate::external::{
    Decision, EventQuery, HookError, HookSet, HookState, MsrQuery, PolicyHooks, Verdict,
};
use crate::policy::{Policy, PolicyError, Vendor};
use crate::rules::Rule;

pub use header::Header;

use api::{Ctx, CtxData, Outcome, OutcomeKind};

/// Largest script read (an example is a few kB).
pub const MAX_SCRIPT: u64 = 256 * 1024;
/// Rhai operations per hook call: far above any sensible hook, far below a
/// noticeable stall (a few ms).
pub const MAX_OPERATIONS: u64 = 100_000;
/// Script function call depth (recursion).
pub const MAX_CALL_LEVELS: usize = 16;
/// Distinct rules (hook, line, note) a script may create; later ones share
/// one rule (reports stay bounded).
const MAX_RULES: usize = 1024;
/// Distinct script rules per process (a fuzzer loads many scripts).
const MAX_RULES_TOTAL: usize = 1 << 16;

/// Every script rule made so far, by what it says: rules are `&'static`, so
/// they are made once and stay reachable from here.
static RULES: Mutex<Option<HashMap<RuleKey, &'static Rule>>> = Mutex::new(None);

/// The hooks, by the function name a script defines for each.
pub const HOOKS: [&str; 8] = [
    "rdmsr",
    "wrmsr",
    "host_rdmsr",
    "host_wrmsr",
    "mwait",
    "shutdown",
    "reset",
    "init",
];

/// A loaded script: its header, compiled functions and sandboxed engine.
pub struct Script {
    path: String,
    header: Header,
    engine: Rhai,
    ast: AST,
    /// Where each hook function is defined (line, column).
    fn_pos: HashMap<String, (usize, usize)>,
    rules: Mutex<HashMap<RuleKey, &'static Rule>>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct RuleKey {
    path: String,
    hook: &'static str,
    line: usize,
    because: Option<String>,
    note: Option<String>,
}

static TOO_MANY_RULES: Rule = Rule {
    name: "policy script rule (more than 1024 distinct rules: not told apart)",
    section: "script",
    release: "policy script",
};

/// The sandboxed engine every script runs in.
pub fn sandbox() -> Rhai {
    use rhai::packages::{
        ArithmeticPackage, BasicArrayPackage, BasicIteratorPackage, BasicMapPackage,
        BasicStringPackage, BitFieldPackage, LanguageCorePackage, LogicPackage, Package,
    };
    let mut e = Rhai::new_raw();
    e.register_global_module(LanguageCorePackage::new().as_shared_module());
    e.register_global_module(ArithmeticPackage::new().as_shared_module());
    e.register_global_module(LogicPackage::new().as_shared_module());
    e.register_global_module(BasicStringPackage::new().as_shared_module());
    e.register_global_module(BasicArrayPackage::new().as_shared_module());
    e.register_global_module(BasicMapPackage::new().as_shared_module());
    e.register_global_module(BasicIteratorPackage::new().as_shared_module());
    e.register_global_module(BitFieldPackage::new().as_shared_module());
    // I/O and dynamic code: none.
    for s in ["print", "debug", "eval"] {
        e.disable_symbol(s);
    }
    e.on_print(|_| {});
    e.on_debug(|_, _, _| {});
    e.set_max_operations(MAX_OPERATIONS);
    e.set_max_call_levels(MAX_CALL_LEVELS);
    e.set_max_expr_depths(64, 32);
    e.set_max_string_size(4096);
    e.set_max_array_size(1024);
    e.set_max_map_size(256);
    e.set_max_variables(256);
    e.set_max_functions(256);
    e.set_strict_variables(true);
    api::register(&mut e);
    e
}

fn pos(p: Position) -> (usize, usize) {
    (p.line().unwrap_or(1), p.position().unwrap_or(1))
}

fn perr(path: &str, (line, column): (usize, usize), message: impl Into<String>) -> PolicyError {
    PolicyError::Parse {
        path: path.to_string(),
        line,
        column,
        message: message.into(),
    }
}

/// Read a script, bounded.
pub(crate) fn read(path: &Path) -> Result<String, PolicyError> {
    let shown = path.display().to_string();
    let read_err = |source| PolicyError::ReadFile {
        path: shown.clone(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if !meta.is_file() {
        return Err(read_err(std::io::Error::other("not a regular file")));
    }
    if meta.len() > MAX_SCRIPT {
        return Err(perr(
            &shown,
            (1, 1),
            format!(
                "script is {} bytes; policy scripts are limited to {MAX_SCRIPT} bytes",
                meta.len()
            ),
        ));
    }
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(read_err)?
        .take(MAX_SCRIPT + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    if text.len() as u64 > MAX_SCRIPT {
        return Err(perr(
            &shown,
            (1, 1),
            format!("script exceeds {MAX_SCRIPT} bytes"),
        ));
    }
    Ok(text)
}

/// Load `path` as the policy its header describes, against `header`'s host.
pub fn load(path: &Path, header: &TraceHeader) -> Result<Policy, PolicyError> {
    let text = read(path)?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "script".into());
    parse(&text, &path.display().to_string(), &stem, header)
}

/// Parse and compile script `text` (shown as `path`; `stem` the default name).
pub fn parse(
    text: &str,
    path: &str,
    stem: &str,
    header: &TraceHeader,
) -> Result<Policy, PolicyError> {
    let script = Script::compile(text, path)?;
    let base = match script.header.base.as_str() {
        "host" => crate::presets::host::from_header(header),
        b => Policy::preset(b, Vendor::of_header(header)).ok_or_else(|| {
            perr(
                path,
                script.header.base_pos,
                format!(
                    "unknown base {b:?}; known: {}",
                    Policy::preset_names().join(", ")
                ),
            )
        })?,
    };
    let name = script.header.name.clone().unwrap_or_else(|| stem.into());
    Ok(base.with_hooks(name, script))
}

impl Script {
    /// Header, compilation and the hook functions' presence and arity.
    pub fn compile(text: &str, path: &str) -> Result<Script, PolicyError> {
        if text.len() as u64 > MAX_SCRIPT {
            return Err(perr(
                path,
                (1, 1),
                format!("script exceeds {MAX_SCRIPT} bytes"),
            ));
        }
        let header = header::parse(text, path)?;
        let engine = sandbox();
        let ast = engine.compile(text).map_err(|e| {
            let mut msg = e.0.to_string();
            for s in ["print", "debug", "eval"] {
                if msg.contains(&format!("'{s}'")) {
                    msg = format!("`{s}` is not available in policy scripts (no I/O, no eval)");
                }
            }
            perr(path, pos(e.1), msg)
        })?;
        let fn_pos = fn_positions(text);
        let mut defined: HashMap<&str, usize> = HashMap::new();
        for f in ast.iter_functions() {
            defined.insert(f.name, f.params.len());
        }
        for hook in HOOKS {
            let declared = header.declares(hook);
            let at = fn_pos.get(hook).copied().unwrap_or((1, 1));
            match (declared, defined.get(hook)) {
                (Some(_), Some(1)) | (None, None) => {}
                (Some(_), Some(n)) => {
                    return Err(perr(
                        path,
                        at,
                        format!("hook fn {hook} takes {n} parameters; hooks take one (ctx)"),
                    ));
                }
                (Some(decl), None) => {
                    return Err(perr(
                        path,
                        decl,
                        format!("the header hooks {hook} but the script defines no fn {hook}(ctx)"),
                    ));
                }
                (None, Some(_)) => {
                    return Err(perr(
                        path,
                        at,
                        format!(
                            "fn {hook} is a hook the header does not declare: it would never run \
                             (add it to [hooks])"
                        ),
                    ));
                }
            }
        }
        Ok(Script {
            path: path.to_string(),
            header,
            engine,
            ast,
            fn_pos,
            rules: Mutex::new(HashMap::new()),
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    fn error(&self, hook: &str, at: (usize, usize), message: String) -> HookError {
        HookError {
            location: format!("{}:{}:{}", self.path, at.0, at.1),
            hook: hook.to_string(),
            message,
        }
    }

    /// Call hook `hook` with `ctx`: `None` (defer) or its outcome.
    fn call(&self, hook: &'static str, ctx: Ctx) -> Result<Option<Outcome>, HookError> {
        let mut scope = Scope::new();
        let opts = CallFnOptions::new().eval_ast(false).rewind_scope(true);
        let fn_at = self.fn_pos.get(hook).copied().unwrap_or((1, 1));
        let r: Dynamic = self
            .engine
            .call_fn_with_options(opts, &mut scope, &self.ast, hook, (ctx,))
            .map_err(|e| {
                let inner = e.unwrap_inner();
                let at = if inner.position().is_none() {
                    fn_at
                } else {
                    pos(inner.position())
                };
                if let rhai::EvalAltResult::ErrorTooManyOperations(_) = inner {
                    return self.error(
                        hook,
                        at,
                        format!(
                            "more than {MAX_OPERATIONS} operations in one call (an endless \
                             loop?); stopped in fn {hook} or a function it called"
                        ),
                    );
                }
                if let rhai::EvalAltResult::ErrorStackOverflow(_) = inner {
                    return self.error(
                        hook,
                        at,
                        format!("recursion deeper than {MAX_CALL_LEVELS} calls"),
                    );
                }
                let text = inner.to_string();
                let suffix = format!(" ({})", inner.position());
                let bare = text.strip_suffix(&suffix).unwrap_or(&text).to_string();
                self.error(hook, at, bare)
            })?;
        if r.is_unit() {
            return Ok(None);
        }
        let type_name = r.type_name();
        match r.try_cast::<Outcome>() {
            Some(o) if o.kind == OutcomeKind::Defer => Ok(None),
            Some(o) => Ok(Some(o)),
            None => Err(self.error(
                hook,
                fn_at,
                format!(
                    "returned {type_name}, not an outcome (value, ok, gp, deflect, vm_failed, \
                     nop, ud, then, state, defer or nothing)"
                ),
            )),
        }
    }

    /// The rule an outcome of `hook` cites: interned process-wide (rules are
    /// `&'static`; the table keeps them reachable), at most [`MAX_RULES`]
    /// per script and [`MAX_RULES_TOTAL`] per process.
    fn rule(&self, hook: &'static str, o: &Outcome, what: &str) -> &'static Rule {
        let key = RuleKey {
            path: self.path.clone(),
            hook,
            line: o.line,
            because: o.because.clone(),
            note: o.note.clone().or_else(|| self.header.note.clone()),
        };
        let mut local = match self.rules.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(r) = local.get(&key) {
            return r;
        }
        if local.len() >= MAX_RULES {
            return &TOO_MANY_RULES;
        }
        let mut global = match RULES.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let table = global.get_or_insert_with(HashMap::new);
        let r: &'static Rule = match table.get(&key) {
            Some(r) => r,
            None if table.len() >= MAX_RULES_TOTAL => return &TOO_MANY_RULES,
            None => {
                let name = match &key.because {
                    Some(b) => format!("{hook} hook: {b}"),
                    None => format!("{hook} hook: {what}"),
                };
                let section = format!("{}:{}", self.path, o.line);
                let release = key
                    .note
                    .clone()
                    .unwrap_or_else(|| "policy script".to_string());
                let r: &'static Rule = Box::leak(Box::new(Rule {
                    name: Box::leak(name.into_boxed_str()),
                    section: Box::leak(section.into_boxed_str()),
                    release: Box::leak(release.into_boxed_str()),
                }));
                table.insert(key.clone(), r);
                r
            }
        };
        local.insert(key, r);
        r
    }

    fn mismatch(&self, hook: &'static str, o: &Outcome, want: &str) -> HookError {
        self.error(
            hook,
            (o.line, o.column),
            format!(
                "{} is not an outcome of hook {hook} (expected {want})",
                o.kind.name()
            ),
        )
    }
}

/// `fn NAME(` at the start of a line (after spaces): where each function is
/// defined, for errors Rhai gives no position for.
fn fn_positions(text: &str) -> HashMap<String, (usize, usize)> {
    let mut m = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        let t = t.strip_prefix("private ").unwrap_or(t);
        if let Some(rest) = t.strip_prefix("fn ") {
            let name: String = rest
                .trim_start()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let col = line.len() - line.trim_start().len() + 1;
            m.entry(name).or_insert((i + 1, col));
        }
    }
    m
}

impl PolicyHooks for Script {
    fn hooks(&self) -> HookSet {
        self.header.hook_set()
    }

    fn msr(
        &self,
        q: &MsrQuery<'_>,
        state: &mut HookState,
    ) -> Result<Verdict<MsrOutcome>, HookError> {
        let hook: &'static str = match (q.value.is_some(), q.origin) {
            (false, kvmtrace_format::Origin::Guest) => "rdmsr",
            (true, kvmtrace_format::Origin::Guest) => "wrmsr",
            (false, kvmtrace_format::Origin::Host) => "host_rdmsr",
            (true, kvmtrace_format::Origin::Host) => "host_wrmsr",
        };
        let data = CtxData::msr(hook, q);
        let (ctx, shared) = Ctx::new(data, state.clone());
        let r = self.call(hook, ctx);
        *state = shared.take();
        let Some(o) = r? else {
            return Ok(Verdict::Defer);
        };
        if o.kind == OutcomeKind::Unmodeled {
            return Ok(Verdict::Unmodeled);
        }
        let write = q.value.is_some();
        let (outcome, store) = match (&o.kind, write) {
            (OutcomeKind::Value(x), false) => (MsrOutcome::Value(*x), None),
            (OutcomeKind::Ok(s), true) => (MsrOutcome::Ok, *s),
            (OutcomeKind::Gp, _) => (MsrOutcome::InjectGp, None),
            (OutcomeKind::Deflect(reason), _) => (
                MsrOutcome::UserExit {
                    reason: *reason,
                    answer: kvmtrace_format::UserAnswer::Gp,
                },
                None,
            ),
            (OutcomeKind::VmFailed(errno), _) => (MsrOutcome::VmFailed { errno: *errno }, None),
            _ => {
                let want = if write {
                    "ok, gp, deflect or vm_failed"
                } else {
                    "value, gp, deflect or vm_failed"
                };
                return Err(self.mismatch(hook, &o, want));
            }
        };
        let what = o.kind.name();
        Ok(Verdict::Decide(Decision {
            outcome,
            rule: self.rule(hook, &o, &what),
            store,
        }))
    }

    fn mwait(
        &self,
        q: &EventQuery<'_>,
        monitor: bool,
        base: &Prediction<MwaitOutcome>,
        state: &mut HookState,
    ) -> Result<Verdict<MwaitOutcome>, HookError> {
        let data = CtxData::mwait(q, monitor, base);
        let (ctx, shared) = Ctx::new(data, state.clone());
        let r = self.call("mwait", ctx);
        *state = shared.take();
        let Some(o) = r? else {
            return Ok(Verdict::Defer);
        };
        if o.kind == OutcomeKind::Unmodeled {
            return Ok(Verdict::Unmodeled);
        }
        let outcome = match o.kind {
            OutcomeKind::Nop => MwaitOutcome::Nop,
            OutcomeKind::Ud => MwaitOutcome::InjectUd,
            _ => return Err(self.mismatch("mwait", &o, "nop or ud")),
        };
        let what = o.kind.name();
        Ok(Verdict::decide(outcome, self.rule("mwait", &o, &what)))
    }

    fn shutdown(
        &self,
        q: &EventQuery<'_>,
        base: &Prediction<AfterShutdown>,
        state: &mut HookState,
    ) -> Result<Verdict<AfterShutdown>, HookError> {
        let data = CtxData::shutdown(q, base);
        let (ctx, shared) = Ctx::new(data, state.clone());
        let r = self.call("shutdown", ctx);
        *state = shared.take();
        let Some(o) = r? else {
            return Ok(Verdict::Defer);
        };
        if o.kind == OutcomeKind::Unmodeled {
            return Ok(Verdict::Unmodeled);
        }
        let OutcomeKind::Then(t) = o.kind else {
            return Err(self.mismatch(
                "shutdown",
                &o,
                "then(\"init\"|\"reset\"|\"resume\"|\"stop\")",
            ));
        };
        let what = o.kind.name();
        Ok(Verdict::decide(t, self.rule("shutdown", &o, &what)))
    }

    fn reset(
        &self,
        q: &EventQuery<'_>,
        base: &StatePrediction,
        state: &mut HookState,
    ) -> Result<Verdict<ArchState>, HookError> {
        self.state_hook("reset", q, None, base, state)
    }

    fn init(
        &self,
        q: &EventQuery<'_>,
        before: &ArchState,
        base: &StatePrediction,
        state: &mut HookState,
    ) -> Result<Verdict<ArchState>, HookError> {
        self.state_hook("init", q, Some(before), base, state)
    }
}

impl Script {
    fn state_hook(
        &self,
        hook: &'static str,
        q: &EventQuery<'_>,
        before: Option<&ArchState>,
        base: &StatePrediction,
        state: &mut HookState,
    ) -> Result<Verdict<ArchState>, HookError> {
        let data = CtxData::state(hook, q, before, base);
        let (ctx, shared) = Ctx::new(data, state.clone());
        let r = self.call(hook, ctx);
        *state = shared.take();
        let Some(o) = r? else {
            return Ok(Verdict::Defer);
        };
        if o.kind == OutcomeKind::Unmodeled {
            return Ok(Verdict::Unmodeled);
        }
        let OutcomeKind::State(changes) = &o.kind else {
            return Err(self.mismatch(hook, &o, "state(#{field: value, ...})"));
        };
        let mut s = base.state.clone();
        for (field, value) in changes {
            if !api::set_state_field(&mut s, field, *value) {
                return Err(self.error(
                    hook,
                    (o.line, o.column),
                    format!(
                        "unknown state field {field:?}; known: {}",
                        api::STATE_FIELDS.join(", ")
                    ),
                ));
            }
        }
        let what = o.kind.name();
        Ok(Verdict::decide(s, self.rule(hook, &o, &what)))
    }
}

/// What `kvmtrace policies --check` found in a valid file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckSummary {
    pub name: String,
    pub base: String,
    /// e.g. "wrmsr 0x400-0x47f" or "init".
    pub hooks: Vec<String>,
    /// A script's header `note` and `provenance`.
    pub note: Option<String>,
    pub provenance: Option<String>,
}

/// Validate a policy file (script or TOML) without a trace: parse, compile
/// and, for scripts, call every hook once on a fresh vCPU of the base policy
/// (Intel, no CPUID) so that type errors and non-outcomes show up now.
pub fn check(path: &Path) -> Result<CheckSummary, PolicyError> {
    let mut header = TraceHeader::default();
    header.host.kvm_module = "kvm_intel".into();
    header.vm.vcpus = 1;
    let shown = path.display().to_string();
    if path.extension().is_some_and(|e| e == "rhai") {
        let text = read(path)?;
        let head = header::parse(&text, &shown)?;
        let p = load(path, &header)?;
        let set = p.hooks.set().cloned().unwrap_or_default();
        dry_run(&p, &set, &shown)?;
        let mut hooks = Vec::new();
        for (name, list) in [
            ("rdmsr", &set.rdmsr),
            ("wrmsr", &set.wrmsr),
            ("host_rdmsr", &set.host_rdmsr),
            ("host_wrmsr", &set.host_wrmsr),
        ] {
            for r in list {
                hooks.push(if r.start() == r.end() {
                    format!("{name} {:#x}", r.start())
                } else {
                    format!("{name} {:#x}-{:#x}", r.start(), r.end())
                });
            }
        }
        for (name, on) in [
            ("mwait", set.mwait),
            ("shutdown", set.shutdown),
            ("reset", set.reset),
            ("init", set.init),
        ] {
            if on {
                hooks.push(name.to_string());
            }
        }
        Ok(CheckSummary {
            name: p.name,
            base: p.base,
            hooks,
            note: head.note,
            provenance: head.provenance,
        })
    } else {
        let p = crate::policy_file::load(path, &header)?;
        Ok(CheckSummary {
            name: p.name,
            base: p.base,
            hooks: Vec::new(),
            note: None,
            provenance: None,
        })
    }
}

fn dry_run(p: &Policy, set: &HookSet, path: &str) -> Result<(), PolicyError> {
    use kvmtrace_format::Origin;
    let header = {
        let mut h = TraceHeader::default();
        h.host.kvm_module = "kvm_intel".into();
        h.vm.vcpus = 1;
        h
    };
    let engine = crate::Engine::new(p.clone(), &header);
    let probes = |l: &[std::ops::RangeInclusive<u32>]| -> Vec<u32> {
        l.iter().flat_map(|r| [*r.start(), *r.end()]).collect()
    };
    for i in probes(&set.rdmsr) {
        engine.msr_read(0, i, Origin::Guest);
    }
    for i in probes(&set.wrmsr) {
        engine.msr_write(0, i, 0, Origin::Guest);
    }
    for i in probes(&set.host_rdmsr) {
        engine.msr_read(0, i, Origin::Host);
    }
    for i in probes(&set.host_wrmsr) {
        engine.msr_write(0, i, 0, Origin::Host);
    }
    if set.mwait {
        engine.mwait(0);
    }
    if set.shutdown {
        engine.shutdown(0);
    }
    if set.reset {
        engine.reset_state(0);
    }
    if set.init {
        engine.init_state(0, &ArchState::default());
    }
    match engine.hook_error() {
        None => Ok(()),
        Some(e) => {
            // "file:line:column" back into its parts.
            let mut it = e.location.rsplitn(3, ':');
            let column = it.next().and_then(|c| c.parse().ok()).unwrap_or(1);
            let line = it.next().and_then(|l| l.parse().ok()).unwrap_or(1);
            Err(perr(
                path,
                (line, column),
                format!(
                    "in hook {} (dry run on a fresh vCPU): {}",
                    e.hook, e.message
                ),
            ))
        }
    }
}

/// Keep the shared state type visible to `api`.
pub(crate) type Shared = Arc<Mutex<HookState>>;

#[cfg(test)]
mod tests;
