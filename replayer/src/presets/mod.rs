//! Presets: one file per real kernel (SEMANTICS.md §8), each with provenance.
//! `host` is resolved from a trace header (`host.rs`).

use crate::policy::{Policy, Switches, Vendor};

pub mod host;
pub mod kvm_5_10;
pub mod kvm_5_15;
pub mod kvm_5_19;
pub mod kvm_6_0;
pub mod kvm_6_18;
pub mod kvm_6_2;

/// A preset: its name, mainline release, provenance text and constructor.
pub struct PresetDef {
    pub name: &'static str,
    pub release: &'static str,
    /// (major, minor) for "nearest preset ≤ release".
    pub version: (u32, u32),
    pub provenance: &'static str,
    pub build: fn(Vendor) -> Policy,
}

/// Every preset, oldest first.
pub const ALL: [PresetDef; 6] = [
    PresetDef {
        name: "kvm-5.10",
        release: "5.10",
        version: (5, 10),
        provenance: kvm_5_10::PROVENANCE,
        build: kvm_5_10::policy,
    },
    PresetDef {
        name: "kvm-5.15",
        release: "5.15",
        version: (5, 15),
        provenance: kvm_5_15::PROVENANCE,
        build: kvm_5_15::policy,
    },
    PresetDef {
        name: "kvm-5.19",
        release: "5.19",
        version: (5, 19),
        provenance: kvm_5_19::PROVENANCE,
        build: kvm_5_19::policy,
    },
    PresetDef {
        name: "kvm-6.0",
        release: "6.0",
        version: (6, 0),
        provenance: kvm_6_0::PROVENANCE,
        build: kvm_6_0::policy,
    },
    PresetDef {
        name: "kvm-6.2",
        release: "6.2",
        version: (6, 2),
        provenance: kvm_6_2::PROVENANCE,
        build: kvm_6_2::policy,
    },
    PresetDef {
        name: "kvm-6.18",
        release: "6.18",
        version: (6, 18),
        provenance: kvm_6_18::PROVENANCE,
        build: kvm_6_18::policy,
    },
];

pub(crate) fn make(name: &str, release: &str, vendor: Vendor, switches: Switches) -> Policy {
    Policy {
        name: name.to_string(),
        base: name.to_string(),
        release: release.to_string(),
        vendor,
        switches,
        disabled_quirks: 0,
        msr: Vec::new(),
        advertised_msrs: None,
        hooks: Default::default(),
    }
}

/// `(major, minor)` of a `uname -r` string ("6.18.44-pvm" → (6, 18)).
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// The nearest preset at or below `release`; the oldest for older kernels, the
/// newest when the release cannot be parsed.
pub fn nearest(release: &str) -> &'static PresetDef {
    match parse_release(release) {
        Some(v) => ALL.iter().rev().find(|p| p.version <= v).unwrap_or(&ALL[0]),
        None => &ALL[ALL.len() - 1],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_preset() {
        for (rel, want) in [
            ("6.18.44", "kvm-6.18"),
            ("6.17.1", "kvm-6.2"),
            ("5.15.61", "kvm-5.15"),
            ("6.1.0-rc7", "kvm-6.0"),
            ("4.19", "kvm-5.10"),
            ("", "kvm-6.18"),
        ] {
            assert_eq!(nearest(rel).name, want, "{rel}");
        }
    }

    #[test]
    fn quirk_matrix_names_each_combination() {
        let p = Policy::preset("kvm-6.18", Vendor::Intel).unwrap();
        let m = p.quirk_matrix(0x50);
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].name, "kvm-6.18");
        assert_eq!(
            m[3].name,
            "kvm-6.18-no-misc-enable-no-mwait-no-mwait-never-ud-faults"
        );
        assert_eq!(m[3].disabled_quirks, 0x50);
        assert_eq!(p.quirk_matrix(0x1f).len(), 32);
    }

    #[test]
    fn presets_differ_pairwise() {
        let all = Policy::presets();
        for w in all.windows(2) {
            assert!(w[0].first_difference(&w[1]).is_some(), "{}", w[1].name);
        }
    }
}

#[cfg(test)]
mod describe_tests {
    use crate::policy::{Switches, describe_presets};

    #[test]
    fn every_preset_lists_every_switch() {
        let d = describe_presets(None);
        assert_eq!(d.len(), 6);
        let j = serde_json::to_value(&d).unwrap();
        for p in j.as_array().unwrap() {
            let sw = p["switches"].as_object().unwrap();
            for n in Switches::names() {
                assert!(sw.contains_key(n), "{} lacks {n}", p["name"]);
            }
            assert!(p["provenance"].as_str().unwrap().contains("SEMANTICS.md"));
        }
        assert_eq!(j[0]["switches"]["mce_bad_write"], "eperm");
        assert_eq!(j[5]["switches"]["quirk_api"], "v2-sticky");
    }
}
