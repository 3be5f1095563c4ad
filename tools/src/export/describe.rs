//! How an event is shown in a timeline: a short name, a category, whether it is
//! a marker (INIT/SIPI/SHUTDOWN/RESET), and its fields as flat arguments.

use kvmtrace_format::{
    DecidedBy, Event, IpiMode, MsrExitReason, MsrOutcome, Origin, Record, UserAnswer,
};

use super::Divergence;

/// One argument value.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    /// A string from a small set (index, origin, outcome kind): interned in
    /// Perfetto.
    Str(String),
    /// A 64-bit value shown in hex: `"0x..."` in JSON, a varint in Perfetto.
    Hex(u64),
    U64(u64),
    I64(i64),
    Bool(bool),
    /// An array (GPRs, CPUID entries, MSR lists), typed element by element.
    List(Vec<Arg>),
}

/// Keys whose numbers are counts or small identifiers, shown in decimal;
/// every other number in an event (registers, MSR values, addresses, masks)
/// is shown in hex.
const DECIMAL_KEYS: &[&str] = &[
    "seq", "vcpu", "from", "dst", "count", "size", "errno", "vector", "cap", "function", "index",
    "vcpus",
];

fn is_decimal(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key);
    DECIMAL_KEYS.contains(&last)
}

fn typed(key: &str, v: &serde_json::Value) -> Arg {
    match v {
        serde_json::Value::Number(n) => match n.as_u64() {
            Some(u) if is_decimal(key) => Arg::U64(u),
            Some(u) => Arg::Hex(u),
            None => n
                .as_i64()
                .map(Arg::I64)
                .unwrap_or_else(|| Arg::Str(n.to_string())),
        },
        serde_json::Value::Bool(b) => Arg::Bool(*b),
        serde_json::Value::String(s) => Arg::Str(s.clone()),
        serde_json::Value::Null => Arg::Str("none".into()),
        serde_json::Value::Array(a) => Arg::List(a.iter().map(|x| typed(key, x)).collect()),
        serde_json::Value::Object(_) => Arg::Str(v.to_string()),
    }
}

pub fn outcome_str(o: &MsrOutcome) -> String {
    match o {
        MsrOutcome::Value(v) => format!("value {v:#x}"),
        MsrOutcome::Ok => "ok".into(),
        MsrOutcome::InjectGp => "inject_gp".into(),
        MsrOutcome::UserExit { reason, answer } => {
            let answer = match answer {
                UserAnswer::Value(v) => format!("value {v:#x}"),
                UserAnswer::Ok => "ok".into(),
                UserAnswer::Gp => "gp".into(),
            };
            let reason = match reason {
                MsrExitReason::Inval => "inval",
                MsrExitReason::Unknown => "unknown",
                MsrExitReason::Filter => "filter",
            };
            format!("user_exit {reason} {answer}")
        }
        MsrOutcome::VmFailed { errno } => format!("vm_failed errno {errno}"),
    }
}

/// Names of exception vectors as KVM prints them.
fn vector_name(v: u8) -> String {
    const NAMES: [&str; 32] = [
        "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "9", "#TS", "#NP", "#SS",
        "#GP", "#PF", "15", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "22", "23", "24", "25", "26",
        "27", "#HV", "#VC", "#SX", "31",
    ];
    NAMES
        .get(usize::from(v))
        .map(|s| s.to_string())
        .unwrap_or_else(|| v.to_string())
}

/// The event's timeline name ("rdmsr 0x10", "exception #GP", "INIT").
pub fn name(e: &Event) -> String {
    match e {
        Event::MsrRead { index, .. } => format!("rdmsr {index:#x}"),
        Event::MsrWrite { index, .. } => format!("wrmsr {index:#x}"),
        Event::Exception { vector, .. } => format!("exception {}", vector_name(*vector)),
        Event::Ipi { mode, .. } => match mode {
            IpiMode::Other(n) => format!("ipi mode {n}"),
            m => format!("ipi {}", format!("{m:?}").to_lowercase()),
        },
        Event::Init { .. } => "INIT".into(),
        Event::Sipi { .. } => "SIPI".into(),
        Event::Shutdown { .. } => "SHUTDOWN".into(),
        Event::Reset { .. } => "RESET".into(),
        Event::RawExit { exit_reason, .. } => match exit_reason {
            8 => "SHUTDOWN exit".into(),
            29 => "exit X86_RDMSR (deflected)".into(),
            30 => "exit X86_WRMSR (deflected)".into(),
            r => match kvmtrace_format::kvm_exit_name(*r) {
                Some(n) => format!("exit {}", n.trim_start_matches("KVM_EXIT_")),
                None => format!("exit {r}"),
            },
        },
        Event::Io { port, write, .. } => format!("{} {port:#x}", if *write { "out" } else { "in" }),
        other => other.kind().name().to_string(),
    }
}

/// INIT, SIPI, SHUTDOWN and RESET are drawn as markers, also as the kernel
/// traced them (`kvm_apic_ipi` INIT/SIPI, `KVM_EXIT_SHUTDOWN`).
pub fn is_marker(e: &Event) -> bool {
    matches!(
        e,
        Event::Init { .. }
            | Event::Sipi { .. }
            | Event::Shutdown { .. }
            | Event::Reset { .. }
            | Event::Ipi {
                mode: IpiMode::Init | IpiMode::Sipi,
                ..
            }
            | Event::RawExit { exit_reason: 8, .. }
    )
}

fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, Arg)>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        // Arrays of objects (CPUID entries, MSR filter ranges): one list of
        // their flattened fields per element would lose the pairing, so
        // each element is a list of its field values in field order.
        serde_json::Value::Array(a) if a.iter().any(|x| x.is_object()) => {
            let items = a
                .iter()
                .map(|x| match x {
                    serde_json::Value::Object(m) => {
                        Arg::List(m.iter().map(|(k, v)| typed(k, v)).collect())
                    }
                    other => typed(prefix, other),
                })
                .collect();
            out.push((prefix.to_string(), Arg::List(items)));
        }
        other => out.push((prefix.to_string(), typed(prefix, other))),
    }
}

/// A divergence's arguments, the same in every export format.
pub fn divergence_args(rec: &Record, d: &Divergence) -> Vec<(String, Arg)> {
    vec![
        ("policy".to_string(), Arg::Str(d.policy.clone())),
        ("rule".to_string(), Arg::Str(d.rule.to_string())),
        ("behaviour".to_string(), Arg::Str(d.behaviour.to_string())),
        ("direct".to_string(), Arg::Bool(d.direct)),
        ("explanation".to_string(), Arg::Str(d.explanation.clone())),
        ("predicted".to_string(), Arg::Str(d.predicted.to_string())),
        ("recorded".to_string(), Arg::Str(d.recorded.to_string())),
        ("seq".to_string(), Arg::U64(rec.seq)),
    ]
}

/// The event's fields as flat (name, value) arguments; MSR indices, values and
/// outcomes in hex.
pub fn args(e: &Event) -> Vec<(String, Arg)> {
    let s = |k: &str, v: String| (k.to_string(), Arg::Str(v));
    let lower = |d: &dyn std::fmt::Debug| format!("{d:?}").to_lowercase();
    // The outcome's kind is from a small set; a read value goes apart (hex).
    let outcome = |o: &MsrOutcome, out: &mut Vec<(String, Arg)>| match o {
        MsrOutcome::Value(v) => {
            out.push(s("outcome", "value".into()));
            out.push(("read_value".into(), Arg::Hex(*v)));
        }
        other => out.push(s("outcome", outcome_str(other))),
    };
    // An MSR access, read (no value) or write.
    let msr = |index: u32,
               value: Option<u64>,
               origin: &Origin,
               o: &MsrOutcome,
               decided_by: &DecidedBy,
               capture: &Option<MsrExitReason>| {
        let mut out = vec![s("index", format!("{index:#x}"))];
        if let Some(v) = value {
            out.push(("value".into(), Arg::Hex(v)));
        }
        out.push(s("origin", lower(origin)));
        outcome(o, &mut out);
        out.push(s("decided_by", lower(decided_by)));
        out.push(s(
            "capture",
            capture.map(|c| lower(&c)).unwrap_or("none".into()),
        ));
        out
    };
    match e {
        Event::MsrRead {
            index,
            origin,
            outcome: o,
            decided_by,
            capture,
        } => msr(*index, None, origin, o, decided_by, capture),
        Event::MsrWrite {
            index,
            value,
            origin,
            outcome: o,
            decided_by,
            capture,
        } => msr(*index, Some(*value), origin, o, decided_by, capture),
        other => {
            let mut out = Vec::new();
            if let Ok(serde_json::Value::Object(m)) = serde_json::to_value(other) {
                // Externally tagged: {"kind": {fields}}.
                for (_, inner) in m {
                    flatten("", &inner, &mut out);
                }
            }
            out
        }
    }
}
