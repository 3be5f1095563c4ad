//! Policies as data: a base model, switches, quirks and per-MSR rules.
//! (Skeleton: the replayer issue fills this in; keep the public signatures.)

use kvmtrace_format::TraceHeader;

/// The KVM vendor module a policy models.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Vendor {
    Intel,
    Amd,
    Pvm,
}

/// A complete policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub name: String,
    pub vendor: Vendor,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("unknown policy {name:?}; known: {known}")]
    Unknown { name: String, known: String },
}

impl Policy {
    /// The names `resolve` accepts besides file paths.
    pub fn preset_names() -> &'static [&'static str] {
        &[
            "kvm-5.10", "kvm-5.15", "kvm-5.19", "kvm-6.0", "kvm-6.2", "kvm-6.18", "host",
        ]
    }

    /// A preset by name, `host` resolved against `header`, or a TOML policy file.
    pub fn resolve(spec: &str, header: &TraceHeader) -> Result<Policy, PolicyError> {
        let _ = header;
        if Self::preset_names().contains(&spec) {
            Ok(Policy {
                name: spec.to_string(),
                vendor: Vendor::Pvm,
            })
        } else {
            Err(PolicyError::Unknown {
                name: spec.to_string(),
                known: Self::preset_names().join(", "),
            })
        }
    }
}
