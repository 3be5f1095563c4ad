//! Presets: one per mainline release from 5.10 to 6.18, generated from the
//! table of rule changes (`changes.rs`) on the 5.10 base (`kvm_5_10.rs`); a
//! stable point release (`kvm-5.15.61`) adds the rows backported to its line.
//! `host` is resolved from a trace header (`host.rs`).

use crate::policy::{Policy, PolicyError, Switches, Vendor};

pub mod changes;
pub mod host;
pub mod kvm_5_10;

/// Every mainline release with a preset, oldest first.
pub const RELEASES: [(u32, u32); 29] = [
    (5, 10),
    (5, 11),
    (5, 12),
    (5, 13),
    (5, 14),
    (5, 15),
    (5, 16),
    (5, 17),
    (5, 18),
    (5, 19),
    (6, 0),
    (6, 1),
    (6, 2),
    (6, 3),
    (6, 4),
    (6, 5),
    (6, 6),
    (6, 7),
    (6, 8),
    (6, 9),
    (6, 10),
    (6, 11),
    (6, 12),
    (6, 13),
    (6, 14),
    (6, 15),
    (6, 16),
    (6, 17),
    (6, 18),
];

/// The names `Policy::resolve` accepts besides files and `kvm-X.Y.Z`.
pub const NAMES: [&str; 30] = [
    "kvm-5.10", "kvm-5.11", "kvm-5.12", "kvm-5.13", "kvm-5.14", "kvm-5.15", "kvm-5.16", "kvm-5.17",
    "kvm-5.18", "kvm-5.19", "kvm-6.0", "kvm-6.1", "kvm-6.2", "kvm-6.3", "kvm-6.4", "kvm-6.5",
    "kvm-6.6", "kvm-6.7", "kvm-6.8", "kvm-6.9", "kvm-6.10", "kvm-6.11", "kvm-6.12", "kvm-6.13",
    "kvm-6.14", "kvm-6.15", "kvm-6.16", "kvm-6.17", "kvm-6.18", "host",
];

/// The releases where some rule changes (the first of each distinct preset),
/// and the newest release (which may equal the milestone before it): what
/// `demo`, `fidelity` and `corpus` replay by default.
pub fn milestones() -> Vec<(u32, u32)> {
    let mut v: Vec<(u32, u32)> = vec![RELEASES[0], RELEASES[RELEASES.len() - 1]];
    for c in changes::CHANGES {
        if !v.contains(&c.release) {
            v.push(c.release);
        }
    }
    v.sort_unstable();
    v
}

pub fn name_of(release: (u32, u32)) -> String {
    format!("kvm-{}.{}", release.0, release.1)
}

/// `(major, minor, patch)` of `X.Y[.Z]` at the start of a string, and the rest.
/// `(major, minor, patch)`.
type Version = (u32, u32, Option<u32>);
/// A mainline line and an optional stable point release.
pub type LinePoint = ((u32, u32), Option<u32>);

fn split_version(s: &str) -> Option<(Version, &str)> {
    let mut nums = Vec::new();
    let mut rest = s;
    while nums.len() < 3 {
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if end == 0 || end > 6 {
            break;
        }
        nums.push(rest[..end].parse::<u32>().ok()?);
        rest = &rest[end..];
        match rest.strip_prefix('.') {
            Some(r) if nums.len() < 3 && r.starts_with(|c: char| c.is_ascii_digit()) => rest = r,
            _ => break,
        }
    }
    match nums[..] {
        [a, b] => Some(((a, b, None), rest)),
        [a, b, c] => Some(((a, b, Some(c)), rest)),
        _ => None,
    }
}

/// `(major, minor)` of a `uname -r` string ("6.18.44-pvm" → (6, 18)).
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    split_version(release).map(|((a, b, _), _)| (a, b))
}

/// A kernel release as the presets model it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelRelease {
    pub line: (u32, u32),
    /// The stable point release, when the string names one exactly.
    pub point: Option<u32>,
    /// Why the string was mapped the way it was (distribution kernel, range).
    pub notes: Vec<String>,
}

/// How `host` reads a recorded `uname -r`: a stable point release exactly
/// (`5.15.61`, `6.18.44-local`), a distribution kernel (`6.8.0-45-generic`,
/// `5.15.0-1050-azure`) as its mainline release with a note, a release outside
/// the modelled range as the nearest end with a note.
pub fn kernel_release(uname: &str) -> KernelRelease {
    let first = RELEASES[0];
    let last = RELEASES[RELEASES.len() - 1];
    let Some(((a, b, patch), rest)) = split_version(uname) else {
        return KernelRelease {
            line: last,
            point: None,
            notes: vec![format!(
                "kernel release {uname:?} is not X.Y[.Z]: modelled as mainline {}.{}, the newest preset",
                last.0, last.1
            )],
        };
    };
    let mut notes = Vec::new();
    let mut line = (a, b);
    let mut point = patch.filter(|&p| p > 0);
    // Ubuntu-style `X.Y.0-ABI-flavour` (and `X.Y.0-ABI.N...`): the patch level
    // is not a stable point release, and the distribution's own backports are
    // not known.
    let distro = patch == Some(0)
        && rest
            .strip_prefix('-')
            .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()));
    if distro {
        point = None;
        notes.push(format!(
            "{uname} is a distribution kernel (X.Y.0 with ABI suffix {rest:?}): mapped to mainline {a}.{b}; the distribution's own backports are not modelled"
        ));
    } else if rest.starts_with("-rc") {
        notes.push(format!(
            "{uname} is a release candidate: modelled as mainline {a}.{b}"
        ));
    }
    if line < first {
        notes.push(format!(
            "kernel {uname} is older than the oldest preset: modelled as mainline {}.{} (older behaviour may differ)",
            first.0, first.1
        ));
        line = first;
        point = None;
    } else if line > last {
        notes.push(format!(
            "kernel {uname} is newer than the newest preset: modelled as mainline {}.{} (newer changes are not modelled)",
            last.0, last.1
        ));
        line = last;
        point = None;
    }
    KernelRelease { line, point, notes }
}

/// The release a `kvm-X.Y[.Z]` name asks for; an error for a name of that
/// shape outside the modelled range; `None` for other names.
pub fn parse_name(name: &str) -> Option<Result<LinePoint, PolicyError>> {
    let v = name.strip_prefix("kvm-")?;
    let ((a, b, patch), rest) = split_version(v)?;
    if !rest.is_empty() {
        return None;
    }
    let first = RELEASES[0];
    let last = RELEASES[RELEASES.len() - 1];
    if !RELEASES.contains(&(a, b)) {
        return Some(Err(PolicyError::UnknownRelease {
            name: name.to_string(),
            why: if (a, b) < first {
                format!(
                    "older than the oldest modelled release {}.{}",
                    first.0, first.1
                )
            } else if (a, b) > last {
                format!(
                    "newer than the newest modelled release {}.{}",
                    last.0, last.1
                )
            } else {
                "not a mainline release".to_string()
            },
        }));
    }
    Some(Ok(((a, b), patch.filter(|&p| p > 0))))
}

/// The preset of `line` (and stable `point`), with `vendor`.
pub fn policy(line: (u32, u32), point: Option<u32>, vendor: Vendor) -> Policy {
    let (switches, backported, release) = match point {
        None => (
            changes::switches_at(line),
            Vec::new(),
            format!("{}.{}", line.0, line.1),
        ),
        Some(p) => {
            let (s, b) = changes::switches_at_stable(line, p);
            (s, b, format!("{}.{}.{p}", line.0, line.1))
        }
    };
    let name = format!("kvm-{release}");
    let mut pol = make(&name, &release, vendor, switches);
    pol.provenance = provenance(line, point, &backported);
    pol
}

fn provenance(line: (u32, u32), point: Option<u32>, backported: &[&changes::Change]) -> String {
    let n = changes::CHANGES
        .iter()
        .filter(|c| c.release <= line && c.release > RELEASES[0])
        .count();
    let mut s = format!(
        "mainline {}.{}: kvm-5.10 (read) plus {n} rule changes up to {}.{} (docs/kvm-semantics.md, table of changes)",
        line.0, line.1, line.0, line.1
    );
    if let Some(p) = point {
        if backported.is_empty() {
            s.push_str(&format!(
                "; stable {}.{}.{p}: no backport of a tabled change is established for it",
                line.0, line.1
            ));
        } else {
            let list: Vec<&str> = backported.iter().map(|c| c.commit).collect();
            s.push_str(&format!(
                "; stable {}.{}.{p} adds backports of {}",
                line.0,
                line.1,
                list.join(", ")
            ));
        }
    }
    s
}

pub(crate) fn make(name: &str, release: &str, vendor: Vendor, switches: Switches) -> Policy {
    let mut p = Policy {
        name: name.to_string(),
        base: name.to_string(),
        release: release.to_string(),
        vendor,
        switches,
        disabled_quirks: 0,
        msr: Vec::new(),
        advertised_msrs: None,
        facts: 0,
        provenance: String::new(),
        notes: Vec::new(),
        hooks: Default::default(),
    };
    p.set_vendor(vendor);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_release_strings() {
        for (rel, line, point, noted) in [
            ("6.18.44", (6, 18), Some(44), false),
            ("6.18.44-fc-v782", (6, 18), Some(44), false),
            ("6.17.1", (6, 17), Some(1), false),
            ("5.15.61", (5, 15), Some(61), false),
            ("6.1.0-rc7", (6, 1), None, true),
            ("6.8.0-45-generic", (6, 8), None, true),
            ("5.15.0-1050-azure", (5, 15), None, true),
            ("4.19", (5, 10), None, true),
            ("7.0.1", (6, 18), None, true),
            ("", (6, 18), None, true),
        ] {
            let k = kernel_release(rel);
            assert_eq!((k.line, k.point), (line, point), "{rel}");
            assert_eq!(!k.notes.is_empty(), noted, "{rel}: {:?}", k.notes);
        }
        let k = kernel_release("6.8.0-45-generic");
        assert!(k.notes[0].contains("mainline 6.8"), "{:?}", k.notes);
    }

    #[test]
    fn names_outside_the_range_are_errors() {
        for n in ["kvm-4.19", "kvm-7.0", "kvm-5.9"] {
            assert!(matches!(parse_name(n), Some(Err(_))), "{n}");
        }
        assert!(matches!(parse_name("kvm-6.8"), Some(Ok(((6, 8), None)))));
        assert!(matches!(
            parse_name("kvm-5.15.61"),
            Some(Ok(((5, 15), Some(61))))
        ));
        assert!(parse_name("kvm-6.8x").is_none());
    }

    #[test]
    fn stable_5_15_61_has_the_mce_fixes() {
        let p = policy((5, 15), Some(61), Vendor::Intel);
        assert_eq!(p.switches.mce_bad_write, crate::policy::MceBadWrite::Gp);
        assert!(p.switches.mce_ctl_bit0_ok);
        assert!(!p.switches.mce_ctl2);
        let p = policy((5, 15), Some(60), Vendor::Intel);
        assert_eq!(p.switches.mce_bad_write, crate::policy::MceBadWrite::Eperm);
        assert!(p.provenance.contains("no backport"), "{}", p.provenance);
        let p = policy((5, 10), Some(137), Vendor::Intel);
        assert!(p.provenance.contains("2368048bf5c2"), "{}", p.provenance);
    }

    /// Each established stable backport (docs/kvm-semantics.md, table of
    /// changes): the point before it has the old rule, the point itself the
    /// new one.
    #[test]
    fn stable_points_get_exactly_their_backports() {
        use crate::policy::{MceBadWrite, QuirkApi, ValidQuirks};
        let at = |line, point| policy(line, Some(point), Vendor::Intel).switches;
        for (line, point) in [((5, 10), 137), ((5, 15), 61), ((5, 18), 18)] {
            let (old, new) = (at(line, point - 1), at(line, point));
            assert_eq!(old.mce_bad_write, MceBadWrite::Eperm, "{line:?}.{point}");
            assert_eq!(new.mce_bad_write, MceBadWrite::Gp, "{line:?}.{point}");
            assert!(
                !old.mce_ctl_bit0_ok && new.mce_ctl_bit0_ok,
                "{line:?}.{point}"
            );
            assert!(!new.mce_ctl2, "MCi_CTL2 was not backported");
        }
        // 5.19.2 got only the bit-0 change (no 5.19.y patch of 2368048bf5c2 found).
        let s = at((5, 19), 2);
        assert!(s.mce_ctl_bit0_ok && !at((5, 19), 1).mce_ctl_bit0_ok);
        assert_eq!(s.mce_bad_write, MceBadWrite::Eperm);
        for (line, point) in [((5, 10), 154), ((5, 15), 78)] {
            assert!(!at(line, point - 1).msr_flags_validated, "{line:?}.{point}");
            assert!(at(line, point).msr_flags_validated, "{line:?}.{point}");
        }
        for (line, point) in [((6, 1), 113), ((6, 6), 54), ((6, 10), 13)] {
            assert!(
                !at(line, point - 1).x2apic_icr_reserved_gp,
                "{line:?}.{point}"
            );
            assert!(at(line, point).x2apic_icr_reserved_gp, "{line:?}.{point}");
        }
        assert_eq!(at((6, 12), 77).quirk_api, QuirkApi::V2Assign);
        assert_eq!(at((6, 12), 78).quirk_api, QuirkApi::V2Sticky);
        assert_eq!(at((6, 12), 77).valid_quirks, ValidQuirks::Mask(0xff));
        assert_eq!(at((6, 12), 78).valid_quirks, ValidQuirks::Mask(0x3ff));
        // Mainline: 6.12 has the ICR check, 6.11 not; QUIRKS2 from 5.18.
        assert!(changes::switches_at((6, 12)).x2apic_icr_reserved_gp);
        assert!(!changes::switches_at((6, 11)).x2apic_icr_reserved_gp);
        assert_eq!(changes::switches_at((5, 17)).quirk_api, QuirkApi::V1Assign);
        assert_eq!(changes::switches_at((5, 18)).quirk_api, QuirkApi::V2Assign);
        assert!(!changes::switches_at((5, 18)).msr_flags_validated);
        assert!(changes::switches_at((5, 19)).msr_flags_validated);
        // A late 5.15.y as read (docs/kvm-semantics.md, "Source check"):
        // both MCE fixes and the flag checks, nothing else of 6.0+.
        let s = at((5, 15), 202);
        assert_eq!(s.mce_bad_write, MceBadWrite::Gp);
        assert!(s.mce_ctl_bit0_ok && s.msr_flags_validated);
        assert!(!s.mce_ctl2 && !s.misc_enable_guest_ro);
        assert_eq!(s.quirk_api, QuirkApi::V1Assign);
        assert_eq!(s.hwcr_write, changes::switches_at((5, 15)).hwcr_write);
        // Lines without a backport of a row stay at their mainline value.
        assert_eq!(
            at((6, 1), 150).feat_ctl_host_bits,
            at((6, 1), 1).feat_ctl_host_bits
        );
        assert_eq!(
            at((6, 6), 100).hwcr_write,
            changes::switches_at((6, 6)).hwcr_write
        );
    }

    /// `host` reads a recorded `5.10.150`-style release exactly.
    #[test]
    fn host_resolves_a_stable_point_exactly() {
        use crate::policy::MceBadWrite;
        for (rel, want) in [
            ("5.10.136", MceBadWrite::Eperm),
            ("5.10.137", MceBadWrite::Gp),
            ("5.10.150", MceBadWrite::Gp),
            ("5.15.60", MceBadWrite::Eperm),
            ("5.15.61", MceBadWrite::Gp),
            ("5.19.17", MceBadWrite::Eperm),
        ] {
            let mut h = kvmtrace_format::TraceHeader::default();
            h.host.kernel_release = rel.into();
            h.host.kvm_module = "kvm_intel".into();
            let p = host::from_header(&h);
            assert_eq!(p.switches.mce_bad_write, want, "{rel}");
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
    fn milestones_differ_pairwise() {
        let all: Vec<Policy> = milestones()
            .into_iter()
            .map(|r| policy(r, None, Vendor::Intel))
            .collect();
        // Each release where a rule changes differs from the one before it;
        // the newest release is listed even when nothing changed in it.
        let n = all.len();
        for (i, w) in all.windows(2).enumerate() {
            if i + 2 == n && !changes::CHANGES.iter().any(|c| c.release == RELEASES[28]) {
                continue;
            }
            assert!(w[0].first_difference(&w[1]).is_some(), "{}", w[1].name);
        }
        assert_eq!(all[n - 1].name, "kvm-6.18");
    }

    #[test]
    fn every_change_is_in_the_docs() {
        let doc = include_str!("../../../docs/kvm-semantics.md");
        for c in changes::CHANGES {
            if !c.commit.is_empty() {
                assert!(doc.contains(c.commit), "{} not in docs", c.commit);
            }
            assert!(doc.contains(c.switch), "{} not in docs", c.switch);
        }
    }
}

#[cfg(test)]
mod describe_tests {
    use crate::policy::{Switches, describe_presets};

    #[test]
    fn every_preset_lists_every_switch() {
        let d = describe_presets(None);
        assert_eq!(d.len(), 29);
        let j = serde_json::to_value(&d).unwrap();
        for p in j.as_array().unwrap() {
            let sw = p["switches"].as_object().unwrap();
            for n in Switches::names() {
                assert!(sw.contains_key(n), "{} lacks {n}", p["name"]);
            }
            assert!(
                p["provenance"]
                    .as_str()
                    .unwrap()
                    .contains("docs/kvm-semantics.md")
            );
        }
        assert_eq!(j[0]["switches"]["mce_bad_write"], "eperm");
        assert_eq!(j[28]["switches"]["quirk_api"], "v2-sticky");
    }
}
