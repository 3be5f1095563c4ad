//! An out-of-tree policy in Rust: what a crate outside this repository
//! writes to replay traces against a kernel patch the presets do not know.
//! It uses only the public API of `kvmtrace-replayer` (`external::PolicyHooks`,
//! `Policy::with_hooks`, `Replay`), the same mechanism policy scripts use.
//!
//! The patch here: MCi_STATUS writes of a non-zero value by the guest are
//! ignored (accepted, nothing stored) instead of faulting — and the policy
//! counts, per vCPU, how many it ignored (its own state), faulting from the
//! fourth on.
//!
//! `cargo run -p kvmtrace-replayer --example out_of_tree_policy -- [FILE.kvt...]`
//! (no file: a small built-in trace).

use kvmtrace_format::{DecidedBy, Event, MsrOutcome, Origin, Record, TraceHeader, TraceReader};
use kvmtrace_replayer::external::{
    Decision, HookError, HookSet, HookState, MsrQuery, PolicyHooks, Verdict,
};
use kvmtrace_replayer::{Policy, Replay, Rule};

/// Rules this policy cites: in reports like the built-in ones.
static IGNORED: Rule = Rule {
    name: "MCi_STATUS write ignored (out-of-tree example patch)",
    section: "replayer/examples/out_of_tree_policy.rs",
    release: "example proposal",
};
static TOO_MANY: Rule = Rule {
    name: "fourth ignored MCi_STATUS write faults (out-of-tree example patch)",
    section: "replayer/examples/out_of_tree_policy.rs",
    release: "example proposal",
};

struct IgnoreMciStatus;

impl PolicyHooks for IgnoreMciStatus {
    fn hooks(&self) -> HookSet {
        // Only guest WRMSR of MCi_STATUS: everything else never reaches us.
        HookSet {
            wrmsr: (0..32u32)
                .map(|bank| 0x401 + 4 * bank)
                .map(|i| i..=i)
                .collect(),
            ..HookSet::default()
        }
    }

    fn msr(
        &self,
        q: &MsrQuery<'_>,
        state: &mut HookState,
    ) -> Result<Verdict<MsrOutcome>, HookError> {
        let bank = (q.index - 0x400) / 4;
        let value = q.value.unwrap_or(0);
        // Out of range, zero writes, or a base that cannot know: the base.
        if bank as usize >= q.view.state.bank_num() || value == 0 || q.base.outcome.is_none() {
            return Ok(Verdict::Defer);
        }
        let n = state.get("ignored").unwrap_or(0);
        state.set("ignored", n + 1).map_err(|message| HookError {
            location: IGNORED.section.into(),
            hook: "wrmsr".into(),
            message,
        })?;
        if n >= 3 {
            return Ok(Verdict::decide(MsrOutcome::InjectGp, &TOO_MANY));
        }
        // Accepted, and the model keeps the bank's old value.
        Ok(Verdict::Decide(Decision {
            outcome: MsrOutcome::Ok,
            rule: &IGNORED,
            store: Some(q.view.msr(q.index).unwrap_or(0)),
        }))
    }
}

fn builtin() -> (TraceHeader, Vec<Record>) {
    let mut h = TraceHeader::default();
    h.host.kernel_release = "6.18.44".into();
    h.host.kvm_module = "kvm_intel".into();
    h.vm.vcpus = 1;
    h.vm.mcg_cap = Some(0x10a);
    // GenuineIntel: MCi_STATUS writes need CPUID (can_set_mci_status).
    h.vm.cpuid = vec![kvmtrace_format::CpuidEntry {
        function: 0,
        ebx: 0x756e_6547,
        edx: 0x4965_6e69,
        ecx: 0x6c65_746e,
        ..Default::default()
    }];
    let recs = (0..6u64)
        .map(|seq| Record {
            seq,
            vcpu: 0,
            time_ns: seq,
            event: Event::MsrWrite {
                index: 0x401,
                value: seq + 1,
                origin: Origin::Guest,
                outcome: MsrOutcome::InjectGp,
                decided_by: DecidedBy::Kernel,
                capture: None,
            },
        })
        .collect();
    (h, recs)
}

fn main() {
    let files: Vec<String> = std::env::args().skip(1).collect();
    let traces: Vec<(String, TraceHeader, Vec<Record>)> = if files.is_empty() {
        let (h, r) = builtin();
        vec![("built-in".into(), h, r)]
    } else {
        files
            .iter()
            .map(|f| {
                let mut r = TraceReader::open(f).expect("open trace");
                let h = r.header().clone();
                (f.clone(), h.clone(), r.read_all().expect("read trace"))
            })
            .collect()
    };
    for (name, h, recs) in traces {
        let base = Policy::resolve("host", &h).expect("host");
        let patched = base
            .clone()
            .with_hooks("host+ignore-mci-status", IgnoreMciStatus);
        let mut replay = Replay::new(&h, vec![base, patched]).with_trace_name(name);
        replay.feed(&recs);
        if let Some(e) = replay.hook_error() {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
        print!("{}", replay.finish().render(5));
    }
}
