//! Policies as data (Xen `cpu-policy` style): a base model with a vendor, one
//! switch per behaviour that changed in KVM history (SEMANTICS.md §8), the quirks
//! a VMM disabled (real `KVM_X86_QUIRK_*` bits, §6) and per-MSR rules.
//!
//! Nothing here decides an outcome: `crate::model` reads these fields.

use std::path::Path;

use kvmtrace_format::{CpuVendor, TraceHeader};
use serde::{Deserialize, Serialize};

use crate::presets;
use crate::quirks;

/// The KVM vendor module a policy models.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Vendor {
    /// `kvm_intel` (VMX).
    Intel,
    /// `kvm_amd` (SVM).
    Amd,
    /// `kvm_pvm`: common x86 code of the real kernel, its own vendor part, guest
    /// code run by KVM's instruction emulator (HOST.md, `docs/host-notes.md`).
    Pvm,
}

impl Vendor {
    pub const fn name(self) -> &'static str {
        match self {
            Vendor::Intel => "intel",
            Vendor::Amd => "amd",
            Vendor::Pvm => "pvm",
        }
    }

    /// [`Vendor::of_header`], with a note when the trace names neither a KVM
    /// module nor a CPU vendor (Intel is then a guess).
    pub fn of_header_explained(header: &TraceHeader) -> (Vendor, Option<String>) {
        let v = Vendor::of_header(header);
        let known = matches!(
            header.host.kvm_module.as_str(),
            "kvm_intel" | "kvm_amd" | "kvm_pvm"
        ) || header.host.cpu_vendor.is_some();
        (
            v,
            (!known).then(|| {
                format!(
                    "the trace records no KVM module ({:?}) and no CPU vendor: replaying with vendor intel (set `vendor` in a policy file to choose)",
                    header.host.kvm_module
                )
            }),
        )
    }

    /// The vendor a trace was recorded with: the KVM module first, the CPU vendor
    /// as a fallback, Intel when nothing is known.
    pub fn of_header(header: &TraceHeader) -> Vendor {
        match header.host.kvm_module.as_str() {
            "kvm_intel" => Vendor::Intel,
            "kvm_amd" => Vendor::Amd,
            "kvm_pvm" => Vendor::Pvm,
            _ => match header.host.cpu_vendor {
                Some(CpuVendor::Amd) | Some(CpuVendor::Hygon) => Vendor::Amd,
                _ => Vendor::Intel,
            },
        }
    }
}

/// `quirk_api` (SEMANTICS.md §6): how `KVM_CAP_DISABLE_QUIRKS{,2}` change the set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum QuirkApi {
    /// ≤5.17: only `KVM_CAP_DISABLE_QUIRKS`, `disabled = args[0]`, any bits.
    #[serde(rename = "v1-assign")]
    V1Assign,
    /// 5.18–6.15 (6d8491910fcd): `KVM_CAP_DISABLE_QUIRKS2` validates against
    /// the valid mask, then overwrites.
    #[serde(rename = "v2-assign")]
    V2Assign,
    /// 6.16+ and 6.12.78+ (9966b7822b3f): `disabled |= args & supported` (no
    /// re-enabling).
    #[serde(rename = "v2-sticky")]
    V2Sticky,
}

/// `valid_quirks`: `any` (no `KVM_CAP_DISABLE_QUIRKS2`) or the mask it reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValidQuirks {
    Any,
    Mask(u64),
}

impl ValidQuirks {
    pub fn allows(self, mask: u64) -> bool {
        match self {
            ValidQuirks::Any => true,
            ValidQuirks::Mask(m) => mask & !m == 0,
        }
    }
}

impl Serialize for ValidQuirks {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ValidQuirks::Any => s.serialize_str("any"),
            ValidQuirks::Mask(m) => s.serialize_u64(*m),
        }
    }
}

impl<'de> Deserialize<'de> for ValidQuirks {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ValidQuirks;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"any\" or a quirk mask")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ValidQuirks, E> {
                if v == "any" {
                    Ok(ValidQuirks::Any)
                } else {
                    Err(E::custom(format!(
                        "invalid value {v:?}, expected \"any\" or a quirk mask"
                    )))
                }
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ValidQuirks, E> {
                Ok(ValidQuirks::Mask(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ValidQuirks, E> {
                u64::try_from(v)
                    .map(ValidQuirks::Mask)
                    .map_err(|_| E::custom("a quirk mask cannot be negative"))
            }
        }
        d.deserialize_any(V)
    }
}

macro_rules! switch_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name { $($(#[$vm])* #[serde(rename = $s)] $v),+ }
        impl $name {
            pub const fn name(self) -> &'static str {
                match self { $($name::$v => $s),+ }
            }
        }
    };
}

switch_enum!(
    /// `init_model` (SEMANTICS.md §2): pre-5.15 vendor reset code or the 5.15
    /// consolidated `kvm_vcpu_reset`.
    InitModel { Legacy = "legacy", Consolidated = "consolidated" }
);
switch_enum!(
    /// `svm_shutdown` (SEMANTICS.md §2): what SVM does on a triple fault.
    SvmShutdown {
        /// ≤5.14: `clear_page(vmcb); init_vmcb()`.
        ReinitVmcb = "reinit_vmcb",
        /// ≥5.15 (265e43530cb2): `kvm_vcpu_reset(vcpu, INIT)`.
        Init = "init",
    }
);
switch_enum!(
    /// `feat_ctl_host_bits` (SEMANTICS.md §3): which bits a host write of
    /// IA32_FEAT_CTL may set.
    FeatCtlHostBits {
        /// ≤6.1: the guest-CPUID-derived valid bits.
        GuestCpuid = "guest_cpuid",
        /// ≥6.2 (d2a00af2061d): all of `KVM_SUPPORTED_FEATURE_CONTROL`.
        Supported = "supported",
    }
);
switch_enum!(
    /// `mce_bad_write` (SEMANTICS.md §5): a refused MCi_CTL/STATUS write.
    MceBadWrite {
        /// ≤5.19: r = -1, `KVM_RUN` fails with EPERM.
        Eperm = "eperm",
        /// ≥6.0 (2368048bf5c2): r = 1, `#GP`.
        Gp = "gp",
    }
);
switch_enum!(
    /// `hwcr_write` (x86.c `kvm_set_msr_common`, MSR_K7_HWCR; SEMANTICS.md §5
    /// "HWCR writes"): which HWCR values a write may store.
    HwcrWrite {
        /// ≤6.6: 0 or exactly bit 18 (bits 3, 6, 8 ignored); writing 0 keeps the
        /// old value (McStatusWrEn cannot be cleared once set).
        SetOnly = "set_only",
        /// ≥6.7 (598a790fc20f, 8b0e00fba934): any of bits 18 and 24, stored.
        Bits18_24 = "bits_18_24",
    }
);

/// One switch per behaviour that changed in KVM history (SEMANTICS.md §8, same
/// names), plus the few this crate found while checking source (documented
/// per field).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Switches {
    pub quirk_api: QuirkApi,
    pub valid_quirks: ValidQuirks,
    /// `KVM_X86_QUIRK_MWAIT_NEVER_UD_FAULTS` exists (6.0+); before, MONITOR/MWAIT
    /// are always NOPs (§1).
    pub mwait_quirk_exists: bool,
    /// MISC_ENABLE at RESET (§1): 0 (≤5.19) or 0x1800 (6.0+).
    pub misc_enable_reset: u64,
    /// Guest writes may not toggle MISC_ENABLE bits 11/12 (#GP); bit 7 ignored (§1).
    pub misc_enable_guest_ro: bool,
    pub init_model: InitModel,
    /// INIT keeps the guest's CR0.CD/NW (§2, 4c72ab5aa6e0).
    pub init_preserves_cd_nw: bool,
    /// SVM INIT zeroes GDTR/IDTR bases (§2).
    pub svm_init_zero_dtr_base: bool,
    pub svm_shutdown: SvmShutdown,
    pub feat_ctl_host_bits: FeatCtlHostBits,
    /// 6.12+: host read / host write of 0 of an advertised MSR KVM does not
    /// handle succeeds (§0, §3).
    pub host_zero_write_advertised: bool,
    /// 5.19+: unknown bits of the user-space MSR mask and filter flags → EINVAL (§4).
    pub msr_flags_validated: bool,
    /// Deflect faulting unfilterable (x2APIC) MSRs to user space (§4): true in
    /// every real kernel; false models the unmerged 2022 v1 patch.
    pub deflect_unfilterable: bool,
    pub mce_bad_write: MceBadWrite,
    /// MCi_CTL tolerates bit 0 as well as bit 10 (§5, 6.0).
    pub mce_ctl_bit0_ok: bool,
    /// MCi_CTL2 (0x280+i) emulated (§5, 6.0).
    pub mce_ctl2: bool,
    /// Not in §8: SGX/SGX_LC bits count in FEAT_CTL valid_bits (SGX
    /// virtualisation, not in 5.10; §3).
    #[serde(default = "yes")]
    pub feat_ctl_sgx: bool,
    /// Not in §8: HWCR write rule (see [`HwcrWrite`]).
    #[serde(default = "hwcr_default")]
    pub hwcr_write: HwcrWrite,
    /// Not in §8: the `kvm.ignore_msrs` module parameter (default off, §0).
    #[serde(default)]
    pub ignore_msrs: bool,
    /// Not in §8: with MISC_ENABLE_NO_MWAIT disabled, the MWAIT #UD check reads
    /// MISC_ENABLE[18] itself rather than guest CPUID (6.15+, a487f6797c88, §1).
    #[serde(default)]
    pub mwait_reads_misc_enable: bool,
    /// Not in §8: the MSR tables of `model::common` (unknown indices r=2,
    /// CPUID-gated faults, MTRRs, SYSENTER/SYSCALL registers), read in 6.18
    /// and assumed for 6.0+; off for older presets (not read there).
    #[serde(default)]
    pub msr_tables: bool,
    /// Not in §8 (issue 12): the in-kernel LAPIC registers behind the x2APIC
    /// MSRs and INIT delivered through the ICR (`model::lapic`, lapic.c
    /// `kvm_x2apic_msr_read/write`, `kvm_lapic_reg_write`, `kvm_lapic_reset`),
    /// read in 6.18 and assumed for 6.0+ like `msr_tables`.
    #[serde(default)]
    pub lapic_regs: bool,
    /// Not in §8 (issue 12): an x2APIC ICR write with reserved bits
    /// (`X2APIC_ICR_RESERVED_BITS`: 31:20, 17:16, 13) fails (`kvm_x2apic_icr_write`,
    /// read in 6.18). Off for older presets: such writes are unmodeled there
    /// (the release that added the check was not read).
    #[serde(default)]
    pub x2apic_icr_reserved_gp: bool,
    /// Not in §8 (issue 12): PRED_CMD and FLUSH_CMD guest writes are handled
    /// in x86.c `kvm_set_msr_common` (CPUID checks, reserved bits) — 6.4+
    /// ("Move MSR_IA32_PRED_CMD WRMSR emulation to common code", FLUSH_L1D
    /// virtualisation); earlier presets leave them to the vendor code (not read).
    #[serde(default)]
    pub cmd_msrs_common: bool,
    /// Not in §8 (issue 10): `KVM_SET_VCPU_EVENTS` knows
    /// `KVM_VCPUEVENT_VALID_TRIPLE_FAULT` (0x20; 6.0, ed2351174e38); before,
    /// the flag is outside the valid-flags mask and the ioctl fails (-EINVAL).
    #[serde(default)]
    pub vcpu_events_triple_fault: bool,
}

fn yes() -> bool {
    true
}
fn hwcr_default() -> HwcrWrite {
    HwcrWrite::Bits18_24
}

impl Switches {
    /// Every switch as (name, value as text), in §8 order.
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        let b = |v: bool| v.to_string();
        vec![
            ("quirk_api", self.quirk_api_name().to_string()),
            (
                "valid_quirks",
                match self.valid_quirks {
                    ValidQuirks::Any => "any".to_string(),
                    ValidQuirks::Mask(m) => format!("{m:#x}"),
                },
            ),
            ("mwait_quirk_exists", b(self.mwait_quirk_exists)),
            (
                "misc_enable_reset",
                format!("{:#x}", self.misc_enable_reset),
            ),
            ("misc_enable_guest_ro", b(self.misc_enable_guest_ro)),
            ("init_model", self.init_model.name().to_string()),
            ("init_preserves_cd_nw", b(self.init_preserves_cd_nw)),
            ("svm_init_zero_dtr_base", b(self.svm_init_zero_dtr_base)),
            ("svm_shutdown", self.svm_shutdown.name().to_string()),
            (
                "feat_ctl_host_bits",
                self.feat_ctl_host_bits.name().to_string(),
            ),
            (
                "host_zero_write_advertised",
                b(self.host_zero_write_advertised),
            ),
            ("msr_flags_validated", b(self.msr_flags_validated)),
            ("deflect_unfilterable", b(self.deflect_unfilterable)),
            ("mce_bad_write", self.mce_bad_write.name().to_string()),
            ("mce_ctl_bit0_ok", b(self.mce_ctl_bit0_ok)),
            ("mce_ctl2", b(self.mce_ctl2)),
            ("feat_ctl_sgx", b(self.feat_ctl_sgx)),
            ("hwcr_write", self.hwcr_write.name().to_string()),
            ("ignore_msrs", b(self.ignore_msrs)),
            ("mwait_reads_misc_enable", b(self.mwait_reads_misc_enable)),
            ("msr_tables", b(self.msr_tables)),
            ("lapic_regs", b(self.lapic_regs)),
            ("x2apic_icr_reserved_gp", b(self.x2apic_icr_reserved_gp)),
            ("cmd_msrs_common", b(self.cmd_msrs_common)),
            ("vcpu_events_triple_fault", b(self.vcpu_events_triple_fault)),
        ]
    }

    fn quirk_api_name(&self) -> &'static str {
        match self.quirk_api {
            QuirkApi::V1Assign => "v1-assign",
            QuirkApi::V2Assign => "v2-assign",
            QuirkApi::V2Sticky => "v2-sticky",
        }
    }

    /// The switch names, for error messages.
    pub fn names() -> Vec<&'static str> {
        presets::kvm_5_10::switches()
            .entries()
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    }
}

/// What a per-MSR rule answers a read with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadRule {
    /// `{ value = N }`: the read succeeds with N.
    Value(u64),
    /// `"gp"`: the handler faults (r = 1; §0 decides #GP or INVAL deflection).
    Gp,
    /// `"passthrough"`: whatever was recorded (counted as unmodeled).
    Passthrough,
}

/// What a per-MSR rule does with a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteRule {
    Gp,
    Ok,
    Passthrough,
}

/// A per-MSR rule (DESIGN.md schema): `index` or `range` (inclusive), and what
/// reads and writes do. It replaces KVM's handler; the filter (§0, §4) still
/// comes first. The first rule that matches wins.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MsrRule {
    pub first: u32,
    pub last: u32,
    pub read: Option<ReadRule>,
    pub write: Option<WriteRule>,
}

impl MsrRule {
    pub fn matches(&self, index: u32) -> bool {
        self.first <= index && index <= self.last
    }
}

/// A complete policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub name: String,
    /// The preset this policy starts from (`kvm-6.18`, ...).
    pub base: String,
    /// The mainline release the switches model, e.g. "6.18".
    pub release: String,
    pub vendor: Vendor,
    pub switches: Switches,
    /// Quirks this policy disables on top of what the trace's VMM disabled
    /// (`KVM_X86_QUIRK_*` bits, §6).
    pub disabled_quirks: u64,
    /// Per-MSR rules, first match wins.
    pub msr: Vec<MsrRule>,
    /// MSRs the kernel advertises (`KVM_GET_MSR_INDEX_LIST`), when known from the
    /// recording host (`host`); `None` uses the vendor's list (§0, §3).
    pub advertised_msrs: Option<Vec<u32>>,
    /// The vendor-table facts that apply (`crate::vendor`, bits of `Fact`):
    /// from the vendor and the release, set by `set_vendor`.
    #[serde(default)]
    pub facts: u32,
    /// Where the switches come from (preset provenance).
    #[serde(default)]
    pub provenance: String,
    /// How the policy was resolved, for the user (distribution kernel mapped to
    /// mainline, vendor guessed, ...).
    #[serde(default)]
    pub notes: Vec<String>,
    /// Decisions this policy makes itself (policy scripts, out-of-tree
    /// policies: `crate::external`); none for presets and TOML files.
    #[serde(skip)]
    pub hooks: crate::external::Hooks,
}

/// The first place two policies differ.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PolicyDifference {
    pub field: String,
    pub a: String,
    pub b: String,
}

impl std::fmt::Display for PolicyDifference {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}: {} vs {}", self.field, self.a, self.b)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("unknown policy {name:?}; known: {known} (or a path to a .toml policy file)")]
    Unknown { name: String, known: String },
    #[error(
        "unknown release {name:?}: {why}; known: kvm-5.10 ... kvm-6.18 (every mainline release), kvm-X.Y.Z (a stable point release, e.g. kvm-5.15.61), host, or a .toml policy file"
    )]
    UnknownRelease { name: String, why: String },
    #[error("cannot read policy file {path}: {source}")]
    ReadFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
}

impl Policy {
    /// The names `resolve` accepts besides file paths and `kvm-X.Y.Z`.
    pub fn preset_names() -> &'static [&'static str] {
        &presets::NAMES
    }

    /// The presets where some rule changes (and `host`): the default set of
    /// `demo`, `fidelity` and `corpus` (every release is one `--policy` away).
    pub fn milestone_names() -> Vec<String> {
        let mut v: Vec<String> = presets::milestones()
            .into_iter()
            .map(presets::name_of)
            .collect();
        v.push("host".into());
        v
    }

    /// Every mainline preset (not `host`), with vendor Intel.
    pub fn presets() -> Vec<Policy> {
        presets::RELEASES
            .iter()
            .map(|&r| presets::policy(r, None, Vendor::Intel))
            .collect()
    }

    /// A preset by name (`kvm-6.8`, `kvm-5.15.61`) with `vendor`, or `None`
    /// (also for a release outside the range: `resolve` says why); `host` needs
    /// a header.
    pub fn preset(name: &str, vendor: Vendor) -> Option<Policy> {
        match presets::parse_name(name)? {
            Ok((line, point)) => Some(presets::policy(line, point, vendor)),
            Err(_) => None,
        }
    }

    /// Recompute the vendor facts after setting the vendor.
    pub fn set_vendor(&mut self, vendor: Vendor) {
        self.vendor = vendor;
        self.facts = crate::vendor::facts_for(vendor, presets::parse_release(&self.release));
    }

    /// Whether a vendor-table fact applies.
    #[inline]
    pub fn has(&self, f: crate::vendor::Fact) -> bool {
        self.facts & (1 << f as u32) != 0
    }

    /// A preset by name, `host` resolved against `header`, or a TOML policy file.
    /// Presets take their vendor from the trace (`Vendor::of_header`); the
    /// vendor table's measured facts apply only at the release they were
    /// measured on (`crate::vendor`).
    pub fn resolve(spec: &str, header: &TraceHeader) -> Result<Policy, PolicyError> {
        if spec == "host" {
            return Ok(presets::host::from_header(header));
        }
        if let Some(r) = presets::parse_name(spec) {
            let (line, point) = r?;
            let (vendor, why) = Vendor::of_header_explained(header);
            let mut p = presets::policy(line, point, vendor);
            p.notes.extend(why);
            return Ok(p);
        }
        if spec.ends_with(".rhai") {
            return crate::script::load(Path::new(spec), header);
        }
        let looks_like_path = spec.ends_with(".toml") || spec.contains('/');
        if looks_like_path || Path::new(spec).is_file() {
            return crate::policy_file::load(Path::new(spec), header);
        }
        Err(PolicyError::Unknown {
            name: spec.to_string(),
            known: "kvm-5.10 ... kvm-6.18 (every mainline release), kvm-X.Y.Z (stable point release), host".to_string(),
        })
    }

    /// This policy with `mask` (`KVM_X86_QUIRK_*` bits) disabled as well, named
    /// `NAME-no-QUIRK-...` (the offline quirk matrix: one policy per combination).
    pub fn with_disabled_quirks(&self, mask: u64) -> Policy {
        let mut p = self.clone();
        p.disabled_quirks |= mask;
        if mask != 0 {
            let names: Vec<String> = quirks::list_of(mask)
                .iter()
                .map(|n| n.to_ascii_lowercase().replace('_', "-"))
                .collect();
            p.name = format!("{}-no-{}", self.name, names.join("-no-"));
        }
        p
    }

    /// Every combination of the quirks in `mask` disabled on top of `self`
    /// (2^k policies for k bits, k ≤ 8), the empty combination first.
    pub fn quirk_matrix(&self, mask: u64) -> Vec<Policy> {
        let bits: Vec<u64> = (0..64)
            .map(|i| 1u64 << i)
            .filter(|b| mask & b != 0)
            .take(8)
            .collect();
        (0..1u64 << bits.len())
            .map(|combo| {
                let m = bits
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| combo & (1 << i) != 0)
                    .fold(0, |acc, (_, b)| acc | b);
                self.with_disabled_quirks(m)
            })
            .collect()
    }

    /// Whether quirk `bit` is disabled by this policy itself.
    pub fn disables(&self, bit: u64) -> bool {
        self.disabled_quirks & bit != 0
    }

    /// The first difference between two policies (name excluded), in the order
    /// vendor, switches (§8 order), disabled quirks, MSR rules; `None` if equal.
    pub fn first_difference(&self, other: &Policy) -> Option<PolicyDifference> {
        let d = |field: &str, a: String, b: String| {
            (a != b).then(|| PolicyDifference {
                field: field.to_string(),
                a,
                b,
            })
        };
        if let Some(x) = d(
            "vendor",
            self.vendor.name().into(),
            other.vendor.name().into(),
        ) {
            return Some(x);
        }
        for ((n, a), (_, b)) in self
            .switches
            .entries()
            .into_iter()
            .zip(other.switches.entries())
        {
            if let Some(x) = d(&format!("switches.{n}"), a, b) {
                return Some(x);
            }
        }
        if let Some(x) = d(
            "disabled_quirks",
            quirks::names_of(self.disabled_quirks),
            quirks::names_of(other.disabled_quirks),
        ) {
            return Some(x);
        }
        let n = self.msr.len().max(other.msr.len());
        for i in 0..n {
            let show = |r: Option<&MsrRule>| match r {
                Some(r) => format!("{r:?}"),
                None => "none".into(),
            };
            if let Some(x) = d(
                &format!("msr[{i}]"),
                show(self.msr.get(i)),
                show(other.msr.get(i)),
            ) {
                return Some(x);
            }
        }
        if let Some(x) = d(
            "advertised_msrs",
            format!("{:?}", self.advertised_msrs),
            format!("{:?}", other.advertised_msrs),
        ) {
            return Some(x);
        }
        // Hooks (scripts, out-of-tree policies) are equal only when shared.
        let hooks = |p: &Policy| match p.hooks.set() {
            None => "none".to_string(),
            Some(_) => format!("hooks of {}", p.name),
        };
        (self.hooks != other.hooks).then(|| PolicyDifference {
            field: "hooks".into(),
            a: hooks(self),
            b: hooks(other),
        })
    }

    /// A serializable description (for `kvmtrace policies --json`).
    pub fn describe(&self) -> PolicyDescription {
        PolicyDescription {
            name: self.name.clone(),
            base: self.base.clone(),
            release: self.release.clone(),
            vendor: self.vendor,
            provenance: self.provenance.clone(),
            vendor_facts: crate::vendor::rows_of(self.facts)
                .into_iter()
                .map(|f| format!("{:?}: {} ({})", f.fact, f.what, f.evidence))
                .collect(),
            notes: self.notes.clone(),
            switches: self
                .switches
                .entries()
                .into_iter()
                .map(|(n, v)| (n.to_string(), v))
                .collect(),
            disabled_quirks: quirks::list_of(self.disabled_quirks),
            msr_rules: self.msr.len(),
        }
    }
}

/// What `kvmtrace policies --json` prints for one policy.
#[derive(Clone, Debug, Serialize)]
pub struct PolicyDescription {
    pub name: String,
    pub base: String,
    pub release: String,
    pub vendor: Vendor,
    pub provenance: String,
    /// The vendor-table facts replay applies (crate::vendor), with evidence.
    pub vendor_facts: Vec<String>,
    pub notes: Vec<String>,
    /// Every switch with its value, in §8 order (a JSON object).
    #[serde(serialize_with = "ser_pairs")]
    pub switches: Vec<(String, String)>,
    pub disabled_quirks: Vec<&'static str>,
    pub msr_rules: usize,
}

/// Descriptions of every preset and, with a trace header, of `host`: with a
/// header, every preset with the vendor replay will use for that trace;
/// without, vendor intel.
pub fn describe_presets(header: Option<&TraceHeader>) -> Vec<PolicyDescription> {
    let vendor = header.map_or(Vendor::Intel, Vendor::of_header);
    let mut v: Vec<_> = presets::RELEASES
        .iter()
        .map(|&r| presets::policy(r, None, vendor).describe())
        .collect();
    if let Some(h) = header {
        v.push(presets::host::from_header(h).describe());
    }
    v
}

fn ser_pairs<S: serde::Serializer>(v: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(v.len()))?;
    for (k, x) in v {
        m.serialize_entry(k, x)?;
    }
    m.end()
}
