//! TOML policy files (DESIGN.md schema): a preset (or `host`) plus overrides.
//! Every error names the file, line and column (toml 1.x errors carry byte
//! spans; this module turns them into line:column).
//!
//! ```toml
//! name = "host-without-mwait-quirk"   # optional, default: the file stem
//! base = "host"                       # a preset name or "host" (default)
//! vendor = "intel"                    # optional
//! disabled_quirks = ["MWAIT_NEVER_UD_FAULTS"]
//! [switches]
//! mce_bad_write = "gp"
//! [[msr]]
//! index = 0x3a                        # or range = [0x400, 0x47f]
//! read = { value = 0x5 }              # or "gp", "passthrough"
//! write = "gp"                        # or "ok", "passthrough"
//! ```

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use kvmtrace_format::TraceHeader;
use serde::Deserialize;
use toml::Spanned;

use crate::policy::{MsrRule, Policy, PolicyError, ReadRule, Switches, Vendor, WriteRule};
use crate::{presets, quirks};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: Option<String>,
    base: Option<Spanned<String>>,
    vendor: Option<Vendor>,
    disabled_quirks: Option<Vec<Spanned<String>>>,
    switches: Option<BTreeMap<Spanned<String>, Spanned<toml::Value>>>,
    msr: Option<Vec<Spanned<MsrEntry>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MsrEntry {
    index: Option<u32>,
    range: Option<Spanned<Vec<u32>>>,
    read: Option<ReadRule>,
    write: Option<WriteRule>,
}

/// Switches that existed but never changed a replayed outcome, with why.
const REMOVED: [(&str, &str); 2] = [
    (
        "msr_filter_scope",
        "switch \"msr_filter_scope\" was removed: the filter's scope (all guest accesses vs RDMSR/WRMSR only) differs only for KVM-internal accesses, which no trace records, so it never changed an outcome",
    ),
    (
        "inj_exception_fmt",
        "switch \"inj_exception_fmt\" was removed: it is the text format of the kvm_inj_exception tracepoint, which `import` reads in either form; it never changed an outcome",
    ),
];

/// Largest policy file read (a policy is a few hundred bytes).
const MAX_FILE: u64 = 1 << 20;

pub(crate) fn load(path: &Path, header: &TraceHeader) -> Result<Policy, PolicyError> {
    let shown = path.display().to_string();
    let read_err = |source| PolicyError::ReadFile {
        path: shown.clone(),
        source,
    };
    // Bound the read itself: the size the filesystem reports is 0 for
    // `/dev/zero`, pipes and procfs files.
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| {
            use std::io::Read;
            f.take(MAX_FILE + 1).read_to_end(&mut bytes)
        })
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(read_err(std::io::Error::other(format!(
            "it is larger than the {MAX_FILE}-byte limit for policy files"
        ))));
    }
    let text = text_of(&bytes, &shown)?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "policy".into());
    parse(&text, &shown, &stem, header)
}

/// The bytes as UTF-8, or an error naming the line and column of the first
/// invalid byte.
fn text_of(bytes: &[u8], path: &str) -> Result<String, PolicyError> {
    match std::str::from_utf8(bytes) {
        Ok(t) => Ok(t.to_string()),
        Err(e) => {
            let good = e.valid_up_to();
            // The prefix is valid UTF-8 by definition.
            let before = std::str::from_utf8(&bytes[..good]).unwrap_or("");
            let (line, column) = line_col(before, good);
            Err(PolicyError::Parse {
                path: path.to_string(),
                line,
                column,
                message: format!(
                    "invalid UTF-8 (byte {:#04x} at offset {good}); a policy file is UTF-8 text",
                    bytes[good]
                ),
            })
        }
    }
}

/// Parse policy file `text` (shown as `path` in errors; `stem` is the default
/// name).
pub fn parse(
    text: &str,
    path: &str,
    stem: &str,
    header: &TraceHeader,
) -> Result<Policy, PolicyError> {
    let err = |span: Option<Range<usize>>, message: String| {
        let (line, column) = line_col(text, span.map_or(0, |s| s.start));
        PolicyError::Parse {
            path: path.to_string(),
            line,
            column,
            message,
        }
    };
    let f: File =
        toml::from_str(text).map_err(|e| err(e.span(), e.message().trim().to_string()))?;

    let mut p = match &f.base {
        None => presets::host::from_header(header),
        Some(b) if b.get_ref() == "host" => presets::host::from_header(header),
        Some(b) => match crate::presets::parse_name(b.get_ref()) {
            Some(Ok(_)) => Policy::resolve(b.get_ref(), header)
                .map_err(|e| err(Some(b.span()), e.to_string()))?,
            Some(Err(e)) => return Err(err(Some(b.span()), e.to_string())),
            None => {
                return Err(err(
                    Some(b.span()),
                    format!(
                        "unknown base {:?}; known: kvm-5.10 ... kvm-6.18, kvm-X.Y.Z (stable point release), host",
                        b.get_ref()
                    ),
                ));
            }
        },
    };
    p.name = f.name.unwrap_or_else(|| stem.to_string());
    if let Some(v) = f.vendor {
        p.set_vendor(v);
    }
    for q in f.disabled_quirks.iter().flatten() {
        let bit = quirks::by_name(q.get_ref()).ok_or_else(|| {
            err(
                Some(q.span()),
                format!(
                    "unknown quirk {:?}; known: {}",
                    q.get_ref(),
                    quirks::ALL.map(|(n, _)| n).join(", ")
                ),
            )
        })?;
        p.disabled_quirks |= bit;
    }
    for (k, v) in f.switches.iter().flatten() {
        let names = Switches::names();
        if let Some(why) = REMOVED.iter().find(|(n, _)| n == k.get_ref()) {
            return Err(err(Some(k.span()), why.1.to_string()));
        }
        if !names.contains(&k.get_ref().as_str()) {
            return Err(err(
                Some(k.span()),
                format!(
                    "unknown switch {:?}; known: {}",
                    k.get_ref(),
                    names.join(", ")
                ),
            ));
        }
        // Override one key of the base switches and read them back: serde gives
        // the value's own error ("unknown variant ...") at the value's span.
        let mut t =
            toml::Table::try_from(&p.switches).map_err(|e| err(Some(v.span()), e.to_string()))?;
        t.insert(k.get_ref().clone(), v.get_ref().clone());
        p.switches = t.try_into().map_err(|e: toml::de::Error| {
            err(
                Some(v.span()),
                format!(
                    "bad value for switch {}: {}",
                    k.get_ref(),
                    e.message().trim()
                ),
            )
        })?;
    }
    for m in f.msr.iter().flatten() {
        let e = m.get_ref();
        let range = match &e.range {
            Some(r) => match r.get_ref()[..] {
                [a, b] => Some((a, b)),
                _ => {
                    return Err(err(
                        Some(r.span()),
                        format!(
                            "msr range has {} elements; it is [first, last]",
                            r.get_ref().len()
                        ),
                    ));
                }
            },
            None => None,
        };
        let (first, last) = match (e.index, range) {
            (Some(i), None) => (i, i),
            (None, Some((a, b))) if a <= b => (a, b),
            (None, Some((a, b))) => {
                return Err(err(
                    Some(m.span()),
                    format!("msr range [{a:#x}, {b:#x}] is empty"),
                ));
            }
            _ => {
                return Err(err(
                    Some(m.span()),
                    "an [[msr]] rule needs exactly one of `index` or `range`".into(),
                ));
            }
        };
        p.msr.push(MsrRule {
            first,
            last,
            read: e.read,
            write: e.write,
        });
    }
    Ok(p)
}

/// 1-based line and column (in characters) of byte `offset`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{MceBadWrite, Vendor};

    fn hdr() -> TraceHeader {
        let mut h = TraceHeader::default();
        h.host.kernel_release = "6.18.44".into();
        h.host.kvm_module = "kvm_pvm".into();
        h.host.valid_quirks = 0x5ff;
        h
    }

    #[test]
    fn full_file() {
        let text = r#"
base = "kvm-5.19"
vendor = "intel"
disabled_quirks = ["MWAIT_NEVER_UD_FAULTS", "KVM_X86_QUIRK_MISC_ENABLE_NO_MWAIT"]
[switches]
mce_bad_write = "gp"
deflect_unfilterable = false
valid_quirks = "any"
[[msr]]
index = 0x3a
read = { value = 0x5 }
write = "gp"
[[msr]]
range = [0x400, 0x47f]
read = "passthrough"
"#;
        let p = parse(text, "x.toml", "x", &hdr()).unwrap();
        assert_eq!(p.name, "x");
        assert_eq!(p.base, "kvm-5.19");
        assert_eq!(p.vendor, Vendor::Intel);
        assert_eq!(p.disabled_quirks, 0x50);
        assert_eq!(p.switches.mce_bad_write, MceBadWrite::Gp);
        assert!(!p.switches.deflect_unfilterable);
        assert_eq!(p.msr.len(), 2);
        assert_eq!(p.msr[0].read, Some(ReadRule::Value(5)));
        assert_eq!(p.msr[1].first, 0x400);
        let diff = Policy::preset("kvm-5.19", Vendor::Intel)
            .unwrap()
            .first_difference(&p)
            .unwrap();
        assert_eq!(diff.field, "switches.valid_quirks");
    }

    #[test]
    fn host_base_is_pvm() {
        let p = parse("", "h.toml", "h", &hdr()).unwrap();
        assert_eq!(p.vendor, Vendor::Pvm);
        assert_eq!(p.base, "kvm-6.18.44");
        assert_eq!(p.name, "h");
    }

    #[test]
    fn errors_name_line_and_column() {
        let cases = [
            ("colour = 1\n", 1, 1, "unknown field"),
            ("base = \"kvm-4.4\"\n", 1, 8, "unknown release"),
            (
                "[switches]\nmce_bad_wrte = \"gp\"\n",
                2,
                1,
                "unknown switch \"mce_bad_wrte\"",
            ),
            (
                "[switches]\nmce_bad_write = \"sometimes\"\n",
                2,
                17,
                "bad value for switch mce_bad_write",
            ),
            ("[switches]\nmwait_quirk_exists = 3\n", 2, 22, "bad value"),
            (
                "disabled_quirks = [\"LINT0_REENABLED\", \"NOPE\"]\n",
                1,
                39,
                "unknown quirk \"NOPE\"",
            ),
            ("[[msr]]\nread = \"gp\"\n", 1, 1, "exactly one of"),
            (
                "[[msr]]\nindex = 1\nread = \"maybe\"\n",
                3,
                8,
                "unknown variant",
            ),
            ("base = \n", 1, 8, ""),
            (
                "[[msr]]\nrange = [1, 2, 3]\nread = \"gp\"\n",
                2,
                9,
                "msr range has 3 elements",
            ),
            ("[[msr]]\nrange = [7]\n", 2, 9, "msr range has 1 elements"),
        ];
        for (text, line, col, want) in cases {
            match parse(text, "p.toml", "p", &hdr()) {
                Err(PolicyError::Parse {
                    path,
                    line: l,
                    column: c,
                    message,
                }) => {
                    assert_eq!(path, "p.toml");
                    assert!(message.contains(want), "{text:?}: {message}");
                    assert_eq!((l, c), (line, col), "{text:?}: {message}");
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn invalid_utf8_names_its_position() {
        match text_of(b"base = \"host\"\nname = \"caf\xe9\"\n", "p.toml") {
            Err(PolicyError::Parse {
                line,
                column,
                message,
                ..
            }) => {
                assert_eq!((line, column), (2, 12), "{message}");
                assert!(
                    message.contains("invalid UTF-8 (byte 0xe9 at offset 25)"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reads_are_bounded() {
        // The filesystem says 0 bytes; the read stops after the limit.
        let e = load(Path::new("/dev/zero"), &hdr())
            .unwrap_err()
            .to_string();
        assert!(e.contains("larger than the 1048576-byte limit"), "{e}");
    }

    #[test]
    fn quirk_names_ignore_case() {
        let p = parse(
            "disabled_quirks = [\"mwait_never_ud_faults\", \"kvm_x86_quirk_lint0_reenabled\"]",
            "q.toml",
            "q",
            &hdr(),
        )
        .unwrap();
        assert_eq!(
            p.disabled_quirks,
            quirks::by_name("MWAIT_NEVER_UD_FAULTS").unwrap()
                | quirks::by_name("LINT0_REENABLED").unwrap()
        );
    }
}
