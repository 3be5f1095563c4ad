//! Replay results: divergences that explain themselves, per-policy summaries
//! (DESIGN.md JSON contract) and the human rendering.

use std::fmt::Write as _;

use kvmtrace_format::{
    AfterShutdown, DecidedBy, Event, InitSource, MsrExitReason, MsrOutcome, MwaitOutcome, Origin,
    UserAnswer,
};
use serde::{Deserialize, Serialize};

use crate::names::msr_label;
use crate::rules::Rule;

/// The behaviour a divergence belongs to (issue 4's five seed behaviours).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Behaviour {
    Mwait,
    ResetInit,
    Shutdown,
    FeatCtl,
    X2apic,
    Mce,
    Other,
}

impl Behaviour {
    pub const ALL: [Behaviour; 7] = [
        Behaviour::Mwait,
        Behaviour::ResetInit,
        Behaviour::Shutdown,
        Behaviour::FeatCtl,
        Behaviour::X2apic,
        Behaviour::Mce,
        Behaviour::Other,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Behaviour::Mwait => "mwait",
            Behaviour::ResetInit => "reset_init",
            Behaviour::Shutdown => "shutdown",
            Behaviour::FeatCtl => "feat_ctl",
            Behaviour::X2apic => "x2apic",
            Behaviour::Mce => "mce",
            Behaviour::Other => "other",
        }
    }

    /// The behaviour an MSR belongs to.
    pub fn of_msr(index: u32) -> Behaviour {
        match index {
            0x1a0 => Behaviour::Mwait,
            0x3a => Behaviour::FeatCtl,
            0x1b | 0x800..=0x8ff => Behaviour::X2apic,
            0x179..=0x17b | 0x4d0 | 0x400..=0x47f | 0x280..=0x29f | 0xc001_0015 => Behaviour::Mce,
            _ => Behaviour::Other,
        }
    }

    pub fn of_event(e: &Event) -> Behaviour {
        match e {
            Event::MsrRead { index, .. } | Event::MsrWrite { index, .. } => {
                Behaviour::of_msr(*index)
            }
            Event::Monitor { .. } | Event::Mwait { .. } => Behaviour::Mwait,
            Event::Reset { .. } | Event::Init { .. } | Event::Sipi { .. } => Behaviour::ResetInit,
            Event::Shutdown { .. } => Behaviour::Shutdown,
            _ => Behaviour::Other,
        }
    }
}

/// An outcome as reports show it (JSON: `{"outcome": "value", "value": 5}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum OutcomeView {
    Value {
        value: u64,
    },
    Ok,
    InjectGp,
    /// `answer` is the VMM's (from the recording), `None` where unknown.
    UserExit {
        reason: MsrExitReason,
        answer: Option<UserAnswer>,
    },
    VmFailed {
        errno: i32,
    },
    Nop,
    InjectUd,
    NotIntercepted,
    /// What followed a shutdown.
    Then {
        then: AfterShutdown,
    },
    /// A RESET/INIT state, shown by the first field that differs.
    State {
        field: String,
        value: String,
    },
    /// A host access (`KVM_GET/SET_MSRS`) the kernel refused (the ioctl
    /// processed fewer entries): no guest sees a fault.
    Refused,
    /// A host write the kernel accepted.
    Accepted,
}

impl OutcomeView {
    pub fn msr(o: &MsrOutcome, answer_known: bool) -> OutcomeView {
        match *o {
            MsrOutcome::Value(value) => OutcomeView::Value { value },
            MsrOutcome::Ok => OutcomeView::Ok,
            MsrOutcome::InjectGp => OutcomeView::InjectGp,
            MsrOutcome::UserExit { reason, answer } => OutcomeView::UserExit {
                reason,
                answer: answer_known.then_some(answer),
            },
            MsrOutcome::VmFailed { errno } => OutcomeView::VmFailed { errno },
        }
    }

    /// An MSR outcome as seen by whoever made the access: a host access is
    /// `refused`/`accepted`, never a guest fault.
    pub fn msr_of(o: &MsrOutcome, answer_known: bool, origin: Origin) -> OutcomeView {
        match (origin, o) {
            (Origin::Host, MsrOutcome::InjectGp) => OutcomeView::Refused,
            (Origin::Host, MsrOutcome::Ok) => OutcomeView::Accepted,
            _ => OutcomeView::msr(o, answer_known),
        }
    }

    pub fn mwait(o: MwaitOutcome) -> OutcomeView {
        match o {
            MwaitOutcome::Nop => OutcomeView::Nop,
            MwaitOutcome::InjectUd => OutcomeView::InjectUd,
            MwaitOutcome::NotIntercepted => OutcomeView::NotIntercepted,
        }
    }
}

impl std::fmt::Display for OutcomeView {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            OutcomeView::Value { value } => write!(f, "value {value:#x}"),
            OutcomeView::Ok => f.write_str("ok"),
            OutcomeView::InjectGp => f.write_str("inject_gp"),
            OutcomeView::UserExit { reason, answer } => {
                let r = match reason {
                    MsrExitReason::Inval => "inval",
                    MsrExitReason::Unknown => "unknown",
                    MsrExitReason::Filter => "filter",
                };
                match answer {
                    Some(UserAnswer::Value(v)) => write!(f, "user_exit({r}) -> value {v:#x}"),
                    Some(UserAnswer::Ok) => write!(f, "user_exit({r}) -> ok"),
                    Some(UserAnswer::Gp) => write!(f, "user_exit({r}) -> #GP"),
                    None => write!(f, "user_exit({r})"),
                }
            }
            OutcomeView::VmFailed { errno } => write!(f, "vm_failed(errno {errno})"),
            OutcomeView::Nop => f.write_str("nop"),
            OutcomeView::InjectUd => f.write_str("inject_ud"),
            OutcomeView::NotIntercepted => f.write_str("not_intercepted"),
            OutcomeView::Then { then } => write!(f, "then {}", then_name(*then)),
            OutcomeView::State { field, value } => write!(f, "{field} = {value}"),
            OutcomeView::Refused => f.write_str("refused"),
            OutcomeView::Accepted => f.write_str("accepted"),
        }
    }
}

fn then_name(t: AfterShutdown) -> &'static str {
    match t {
        AfterShutdown::Reset => "reset",
        AfterShutdown::Init => "init",
        AfterShutdown::Stop => "stop",
        AfterShutdown::Resume => "resume (no change in the kernel)",
    }
}

/// One event, in words, with the MSR's name.
pub fn describe_event(e: &Event) -> String {
    let who = |o: &Origin, g: &'static str, h: &'static str| match o {
        Origin::Guest => g,
        Origin::Host => h,
    };
    match e {
        Event::MsrRead { index, origin, .. } => {
            format!(
                "{} {}",
                who(origin, "guest RDMSR", "host KVM_GET_MSRS"),
                msr_label(*index)
            )
        }
        Event::MsrWrite {
            index,
            value,
            origin,
            ..
        } => format!(
            "{} {} = {value:#x}",
            who(origin, "guest WRMSR", "host KVM_SET_MSRS"),
            msr_label(*index)
        ),
        Event::Monitor { rip, .. } => format!("MONITOR at rip {rip:#x}"),
        Event::Mwait { rip, .. } => format!("MWAIT at rip {rip:#x}"),
        Event::Shutdown { rip, .. } => format!("triple-fault shutdown at rip {rip:#x}"),
        Event::Reset { .. } => "RESET state (KVM_CREATE_VCPU)".to_string(),
        Event::Init { source, .. } => format!(
            "INIT ({})",
            match source {
                InitSource::Ipi { from } => format!("IPI from vCPU {from}"),
                InitSource::Shutdown => "after shutdown".into(),
                InitSource::Host => "by the VMM".into(),
                InitSource::Kernel => "in-kernel LAPIC".into(),
            }
        ),
        Event::Sipi { from, vector } if *from == kvmtrace_format::SIPI_FROM_UNKNOWN => {
            format!("SIPI vector {vector:#x}")
        }
        Event::Sipi { from, vector } => format!("SIPI vector {vector:#x} from vCPU {from}"),
        Event::Cpuid { entries } => format!("KVM_SET_CPUID2 ({} entries)", entries.len()),
        Event::QuirksDisabled { cap, mask } => format!(
            "KVM_ENABLE_CAP({cap}) disable quirks {}",
            crate::quirks::names_of(*mask)
        ),
        Event::MsrFilter { filter } => format!(
            "KVM_X86_SET_MSR_FILTER ({} ranges, default {})",
            filter.ranges.len(),
            if filter.default_deny { "deny" } else { "allow" }
        ),
        Event::UserSpaceMsr { mask } => format!("KVM_CAP_X86_USER_SPACE_MSR mask {mask:#x}"),
        Event::SetupMce { mcg_cap } => format!("KVM_X86_SETUP_MCE mcg_cap {mcg_cap:#x}"),
        Event::Io {
            port, write, data, ..
        } => {
            format!(
                "{} port {port:#x} data {data:#x}",
                if *write { "OUT" } else { "IN" }
            )
        }
        Event::Exception { vector, .. } => format!("exception {vector}"),
        Event::Halt => "HLT".into(),
        Event::RawExit { exit_reason, .. } => format!("raw exit {exit_reason}"),
        Event::Lost { count, .. } => format!("{count} events lost"),
        Event::End { reason } => format!("end: {}", reason.describe()),
        Event::Ipi { dst, vector, mode } => format!("IPI {mode:?} vector {vector} to {dst}"),
        Event::VmmState { set, result } => format!(
            "VMM {} {} ({})",
            set.ioctl(),
            set.describe(),
            kvmtrace_format::ioctl_result(*result)
        ),
        Event::CapEnabled {
            cap,
            args,
            vcpu_scope,
            result,
        } => format!(
            "VMM KVM_ENABLE_CAP {} ({})",
            kvmtrace_format::describe_cap_enable(*cap, args, *vcpu_scope),
            kvmtrace_format::ioctl_result(*result)
        ),
        Event::KernelReset { .. } => "RESET state (registers not seen)".to_string(),
        Event::KernelInit { from, .. } => match from {
            Some(f) => format!("INIT (in-kernel LAPIC, IPI from vCPU {f}; registers not seen)"),
            None => "INIT (in-kernel LAPIC; registers not seen)".to_string(),
        },
        Event::VcpuThread {
            pid,
            tid,
            comm,
            identity,
        } => format!("vCPU thread {comm:?} (pid {pid}, tid {tid}, identity {identity:?})"),
    }
}

/// A divergence: the recorded outcome and the policy's, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Divergence {
    pub seq: u64,
    pub vcpu: u32,
    pub time_ns: u64,
    /// The event in words, e.g. `guest WRMSR MC0_CTL (0x400) = 0x1`.
    pub event: String,
    pub recorded: OutcomeView,
    pub decided_by: Option<DecidedBy>,
    pub policy: OutcomeView,
    /// The rule that gave the policy's outcome.
    pub rule: RuleView,
    pub behaviour: Behaviour,
    /// `true`: caused by this event alone; `false`: a consequence of the
    /// divergence at `consequence_of`.
    pub direct: bool,
    pub consequence_of: Option<u64>,
    /// One sentence that explains the divergence.
    pub explanation: String,
    /// The events just before (seq and text), for the human report.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context: Vec<(u64, u32, String)>,
}

/// A [`Rule`] as stored in reports (owned, so reports can be read back).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleView {
    pub name: String,
    /// Section of docs/kvm-semantics.md.
    pub section: String,
    pub release: String,
    /// The upstream commit (hash, subject) and kernel function behind the
    /// rule, where a tabled change is (`Rule::citation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub citation: Option<String>,
}

impl From<Rule> for RuleView {
    fn from(r: Rule) -> Self {
        RuleView {
            name: r.name.into(),
            section: r.section.into(),
            release: r.release.into(),
            citation: r.citation(),
        }
    }
}

/// Divergences per behaviour (all keys present, fixed order).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByBehaviour {
    pub mwait: u64,
    pub reset_init: u64,
    pub shutdown: u64,
    pub feat_ctl: u64,
    pub x2apic: u64,
    pub mce: u64,
    pub other: u64,
}

impl ByBehaviour {
    pub fn add(&mut self, b: Behaviour) {
        *self.get_mut(b) += 1;
    }

    pub fn get_mut(&mut self, b: Behaviour) -> &mut u64 {
        match b {
            Behaviour::Mwait => &mut self.mwait,
            Behaviour::ResetInit => &mut self.reset_init,
            Behaviour::Shutdown => &mut self.shutdown,
            Behaviour::FeatCtl => &mut self.feat_ctl,
            Behaviour::X2apic => &mut self.x2apic,
            Behaviour::Mce => &mut self.mce,
            Behaviour::Other => &mut self.other,
        }
    }

    pub fn get(&self, b: Behaviour) -> u64 {
        let mut c = self.clone();
        *c.get_mut(b)
    }
}

/// Outcomes of one behaviour, by how they compare (`fidelity` scores
/// kernel-decided outcomes with these).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub agree: u64,
    /// Divergences caused by the event alone.
    pub direct: u64,
    /// Divergences that follow from an earlier one (state differs).
    pub consequent: u64,
    pub unmodeled: u64,
    /// After the policy ended the guest.
    pub unreachable: u64,
}

impl Tally {
    pub fn merge(&mut self, o: &Tally) {
        self.agree += o.agree;
        self.direct += o.direct;
        self.consequent += o.consequent;
        self.unmodeled += o.unmodeled;
        self.unreachable += o.unreachable;
    }
}

/// Where a policy's outcome ended the guest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ended {
    pub seq: u64,
    pub vcpu: u32,
    pub behaviour: Behaviour,
}

/// One policy's result (the DESIGN.md JSON keys; the rest is skipped in JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyReport {
    pub name: String,
    /// Divergences (direct + consequent); never events after the guest ended.
    pub divergences: u64,
    pub direct: u64,
    pub consequent: u64,
    /// Matching outcomes / modelled outcomes (0 when nothing was modelled);
    /// unreachable events are outside.
    pub agreement: f64,
    /// Modelled outcomes / reachable outcomes.
    pub coverage: f64,
    pub unmodeled: u64,
    /// Events with an outcome after this policy ended the guest (`ended`):
    /// unreachable under it, neither agreement nor divergence.
    #[serde(default)]
    pub unreachable: u64,
    /// Where this policy ended the guest, if it did.
    #[serde(default)]
    pub ended: Option<Ended>,
    pub first: Option<Divergence>,
    pub by_behaviour: ByBehaviour,
    /// Unreachable events, under the behaviour of the event that ended the guest.
    #[serde(default)]
    pub unreachable_by_behaviour: ByBehaviour,
    /// Divergences that match the report's selection (`--direct-only`,
    /// `--behaviour`, `--vcpu`); `kept` holds the first of them.
    #[serde(default)]
    pub selected: u64,
    /// Reachable events with an outcome.
    #[serde(skip)]
    pub outcomes: u64,
    #[serde(skip)]
    pub modelled: u64,
    /// The first selected divergences in full (at most the selection's `keep`).
    #[serde(skip)]
    pub kept: Vec<Divergence>,
    /// Kernel-decided outcomes per behaviour (`Behaviour::ALL` order), when
    /// the replay tallies them (`fidelity`).
    #[serde(skip)]
    pub kernel_decided: [Tally; 7],
    /// The unmodeled outcomes by kind, most frequent first (only when the
    /// selection asks: `--unmodeled`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unmodeled_kinds: Vec<UnmodeledKind>,
}

/// Unmodeled outcomes of one kind (`unmodeled_kind`): how many, the first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmodeledKind {
    pub what: String,
    pub count: u64,
    pub first_seq: u64,
}

/// What kind of outcome an event is, for the unmodeled listing: the access
/// and how the recording answered it, without values or addresses (an MSR
/// read that returned a value is one kind, whatever the value).
pub fn unmodeled_kind(e: &Event) -> String {
    let answered = |o: &MsrOutcome, origin: &Origin| match (origin, o) {
        (_, MsrOutcome::Value(_)) => "value",
        (Origin::Host, MsrOutcome::Ok) => "accepted",
        (Origin::Host, MsrOutcome::InjectGp) => "refused",
        (_, MsrOutcome::Ok) => "ok",
        (_, MsrOutcome::InjectGp) => "#GP",
        (_, MsrOutcome::UserExit { .. }) => "exit to user space",
        (_, MsrOutcome::VmFailed { .. }) => "KVM_RUN failed",
    };
    let by = |d: Option<DecidedBy>| match d {
        Some(DecidedBy::Vmm) => " (the VMM decided)",
        _ => "",
    };
    let access = match e {
        Event::MsrRead {
            index,
            origin,
            outcome,
            decided_by,
            ..
        } => Some((false, index, origin, outcome, decided_by)),
        Event::MsrWrite {
            index,
            origin,
            outcome,
            decided_by,
            ..
        } => Some((true, index, origin, outcome, decided_by)),
        _ => None,
    };
    if let Some((write, index, origin, outcome, d)) = access {
        let op = match (origin, write) {
            (Origin::Guest, false) => "guest RDMSR",
            (Origin::Guest, true) => "guest WRMSR",
            (Origin::Host, false) => "host KVM_GET_MSRS",
            (Origin::Host, true) => "host KVM_SET_MSRS",
        };
        return format!(
            "{op} {} -> {}{}",
            msr_label(*index),
            answered(outcome, origin),
            by(Some(*d))
        );
    }
    match e {
        Event::Monitor { .. } => format!("MONITOR{}", by(e.decided_by())),
        Event::Mwait { .. } => format!("MWAIT{}", by(e.decided_by())),
        Event::Shutdown { .. } => format!("triple-fault shutdown{}", by(e.decided_by())),
        Event::VmmState { set, result } => format!(
            "VMM {} -> {}",
            set.ioctl(),
            kvmtrace_format::ioctl_result(*result)
        ),
        Event::CapEnabled { cap, result, .. } => format!(
            "VMM KVM_ENABLE_CAP {} -> {}",
            kvmtrace_format::cap_name(*cap),
            kvmtrace_format::ioctl_result(*result)
        ),
        _ => {
            // The rest names no address or value worth hiding.
            let d = describe_event(e);
            d.split(':').next().unwrap_or(&d).to_string()
        }
    }
}

impl PolicyReport {
    pub fn empty(name: String) -> PolicyReport {
        PolicyReport {
            name,
            divergences: 0,
            direct: 0,
            consequent: 0,
            agreement: 0.0,
            coverage: 0.0,
            unmodeled: 0,
            unreachable: 0,
            ended: None,
            first: None,
            by_behaviour: ByBehaviour::default(),
            unreachable_by_behaviour: ByBehaviour::default(),
            selected: 0,
            outcomes: 0,
            modelled: 0,
            kept: Vec::new(),
            kernel_decided: [Tally::default(); 7],
            unmodeled_kinds: Vec::new(),
        }
    }

    /// The behaviour column: `mce 1 (+133 unreachable), mwait 2`.
    pub fn behaviour_summary(&self) -> String {
        let by: Vec<String> = Behaviour::ALL
            .iter()
            .filter(|b| {
                self.by_behaviour.get(**b) > 0 || self.unreachable_by_behaviour.get(**b) > 0
            })
            .map(|b| {
                let u = self.unreachable_by_behaviour.get(*b);
                if u > 0 {
                    format!(
                        "{} {} (+{u} unreachable)",
                        b.name(),
                        self.by_behaviour.get(*b)
                    )
                } else {
                    format!("{} {}", b.name(), self.by_behaviour.get(*b))
                }
            })
            .collect();
        if by.is_empty() {
            "-".to_string()
        } else {
            by.join(", ")
        }
    }
}

/// The result of one replay (DESIGN.md: `kvmtrace replay --json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplayReport {
    pub trace: String,
    pub events: u64,
    pub policies: Vec<PolicyReport>,
}

impl ReplayReport {
    /// Any divergence under any policy (exit code 1).
    pub fn diverged(&self) -> bool {
        self.policies.iter().any(|p| p.divergences > 0)
    }

    /// The human report: a compact table per policy, then the first divergences
    /// of each with their context and explanation.
    pub fn render(&self, max_divergences: usize) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "trace {}: {} events", self.trace, self.events);
        let _ = writeln!(
            o,
            "{:<24} {:>10} {:>8} {:>10} {:>11} {:>9} {:>8} {:>9}  by behaviour",
            "policy",
            "divergent",
            "direct",
            "consequent",
            "unreachable",
            "agreement",
            "coverage",
            "unmodeled"
        );
        for p in &self.policies {
            let _ = writeln!(
                o,
                "{:<24} {:>10} {:>8} {:>10} {:>11} {:>9} {:>7.2}% {:>9}  {}",
                p.name,
                p.divergences,
                p.direct,
                p.consequent,
                p.unreachable,
                // Nothing modelled: no agreement to speak of, not 0%.
                if p.modelled == 0 {
                    "—".to_string()
                } else {
                    format!("{:.2}%", p.agreement * 100.0)
                },
                p.coverage * 100.0,
                p.unmodeled,
                p.behaviour_summary()
            );
        }
        for p in &self.policies {
            if let Some(e) = &p.ended {
                let _ = writeln!(
                    o,
                    "{}: the guest ends at #{} (vcpu {}, {}); {} later events are unreachable under it",
                    p.name,
                    e.seq,
                    e.vcpu,
                    e.behaviour.name(),
                    p.unreachable
                );
            }
        }
        let mut left_out = false;
        for p in &self.policies {
            if p.kept.is_empty() {
                continue;
            }
            let shown = max_divergences.min(p.kept.len());
            let _ = writeln!(o, "\n{}: first divergences", p.name);
            for d in p.kept.iter().take(shown) {
                o.push_str(&render_divergence(d));
            }
            if p.selected as usize > shown {
                left_out = true;
                let _ = writeln!(
                    o,
                    "  ... {} more not shown ({} shown of {})",
                    p.selected as usize - shown,
                    shown,
                    p.selected
                );
            }
        }
        if left_out {
            let _ = writeln!(
                o,
                "\nto see them: --limit N (0: all), --json (every divergence), or narrow with --direct-only, --behaviour B, --vcpu N"
            );
        }
        o
    }
}

/// The unmodeled outcomes of a policy by kind (`--unmodeled`), at most
/// `max` kinds: what no rule of the policy decides, so a user sees where
/// coverage goes.
pub fn render_unmodeled(p: &PolicyReport, max: usize) -> String {
    let mut o = String::new();
    if p.unmodeled_kinds.is_empty() {
        return o;
    }
    let _ = writeln!(
        o,
        "\n{}: unmodeled outcomes by kind ({} outcomes, {} kinds; most frequent first)",
        p.name,
        p.unmodeled,
        p.unmodeled_kinds.len()
    );
    for k in p.unmodeled_kinds.iter().take(max) {
        let _ = writeln!(o, "  {:>8}  {}  (first #{})", k.count, k.what, k.first_seq);
    }
    if p.unmodeled_kinds.len() > max {
        let _ = writeln!(
            o,
            "  ... {} more kinds (--limit 0 lists all)",
            p.unmodeled_kinds.len() - max
        );
    }
    o
}

/// One divergence in a few lines: where, what, recorded vs policy, why.
pub fn render_divergence(d: &Divergence) -> String {
    let mut o = String::from("\n");
    for (seq, vcpu, text) in &d.context {
        let _ = writeln!(o, "      #{seq:<8} vcpu {vcpu}  {text}");
    }
    let _ = writeln!(
        o,
        "  ->  #{:<8} vcpu {}  {}  [{}{}]",
        d.seq,
        d.vcpu,
        d.event,
        d.behaviour.name(),
        match d.consequence_of {
            Some(s) if !d.direct => format!(", consequence of #{s}"),
            _ => ", direct".into(),
        }
    );
    let _ = writeln!(
        o,
        "        recorded: {}{}   policy: {}",
        d.recorded,
        match d.decided_by {
            Some(DecidedBy::Kernel) => " (kernel)",
            Some(DecidedBy::Vmm) => " (vmm)",
            None => "",
        },
        d.policy
    );
    let _ = writeln!(o, "        why: {}", d.explanation);
    o
}
