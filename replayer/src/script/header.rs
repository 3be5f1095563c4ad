//! The `//!` header of a policy script: TOML, one line per `//!` comment at
//! the top of the file.
//!
//! ```text
//! //! name = "no-deflect-unfilterable"        # optional, default: file stem
//! //! base = "kvm-6.18"                       # a preset or "host"
//! //! note = "https://lore.kernel.org/..."    # optional, cited by every rule
//! //! provenance = "..."                      # optional, free text
//! //! [hooks]
//! //! rdmsr = [[0x800, 0x8ff]]                # indices or [first, last]
//! //! wrmsr = [0x400, [0x404, 0x47f]]
//! //! host_rdmsr = []
//! //! host_wrmsr = []
//! //! events = ["mwait", "shutdown", "reset", "init"]
//! ```

use std::ops::RangeInclusive;

use serde::Deserialize;
use toml::Spanned;

use crate::external::HookSet;
use crate::policy::PolicyError;

/// Ranges per hook list.
const MAX_RANGES: usize = 64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: Option<String>,
    base: Option<Spanned<String>>,
    note: Option<String>,
    provenance: Option<String>,
    hooks: Option<Spanned<Hooks>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Hooks {
    rdmsr: Option<Spanned<Vec<Spanned<Entry>>>>,
    wrmsr: Option<Spanned<Vec<Spanned<Entry>>>>,
    host_rdmsr: Option<Spanned<Vec<Spanned<Entry>>>>,
    host_wrmsr: Option<Spanned<Vec<Spanned<Entry>>>>,
    events: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Entry {
    One(u32),
    Range([u32; 2]),
}

/// One hook the header declares: its name, MSR ranges (none for events)
/// and where it is declared (line, column).
pub type HookDecl = (&'static str, Vec<RangeInclusive<u32>>, (usize, usize));

/// A parsed header, positions in the script's own coordinates.
#[derive(Clone, Debug, Default)]
pub struct Header {
    pub name: Option<String>,
    pub base: String,
    pub base_pos: (usize, usize),
    pub note: Option<String>,
    pub provenance: Option<String>,
    /// (hook, ranges, where declared); events have no ranges.
    pub hooks: Vec<HookDecl>,
}

impl Header {
    /// Where `hook` is declared, if it is.
    pub fn declares(&self, hook: &str) -> Option<(usize, usize)> {
        self.hooks.iter().find(|h| h.0 == hook).map(|h| h.2)
    }

    pub fn hook_set(&self) -> HookSet {
        let mut s = HookSet::default();
        for (h, ranges, _) in &self.hooks {
            match *h {
                "rdmsr" => s.rdmsr = ranges.clone(),
                "wrmsr" => s.wrmsr = ranges.clone(),
                "host_rdmsr" => s.host_rdmsr = ranges.clone(),
                "host_wrmsr" => s.host_wrmsr = ranges.clone(),
                "mwait" => s.mwait = true,
                "shutdown" => s.shutdown = true,
                "reset" => s.reset = true,
                "init" => s.init = true,
                _ => {}
            }
        }
        s
    }
}

/// Parse the header of script `text` (`path` for errors).
pub fn parse(text: &str, path: &str) -> Result<Header, PolicyError> {
    // The header lines and where each starts in the file (line, column of
    // the first header character).
    let mut toml_text = String::new();
    let mut origin: Vec<(usize, usize, usize)> = Vec::new(); // (toml offset, line, col)
    let mut started = false;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("//!") {
            started = true;
            let indent = line.len() - t.len();
            let (rest, skip) = match rest.strip_prefix(' ') {
                Some(r) => (r, 4),
                None => (rest, 3),
            };
            origin.push((toml_text.len(), i + 1, indent + skip + 1));
            toml_text.push_str(rest);
            toml_text.push('\n');
        } else if started || !(t.is_empty() || t.starts_with("//")) {
            break;
        }
    }
    let at = |offset: usize| -> (usize, usize) {
        let k = origin.partition_point(|o| o.0 <= offset).saturating_sub(1);
        match origin.get(k) {
            Some(&(start, line, col)) => {
                let within = toml_text.get(start..offset).unwrap_or("");
                (line, col + within.chars().count())
            }
            None => (1, 1),
        }
    };
    let err = |offset: usize, message: String| {
        let (line, column) = at(offset);
        PolicyError::Parse {
            path: path.to_string(),
            line,
            column,
            message,
        }
    };
    if origin.is_empty() {
        return Err(PolicyError::Parse {
            path: path.to_string(),
            line: 1,
            column: 1,
            message: "a policy script starts with a `//!` header naming its base, e.g. \
                      `//! base = \"kvm-6.18\"` (docs/policy-scripts.md)"
                .into(),
        });
    }
    let f: File = toml::from_str(&toml_text).map_err(|e| {
        err(
            e.span().map_or(0, |s| s.start),
            format!("header: {}", e.message().trim()),
        )
    })?;
    let Some(base) = f.base else {
        return Err(err(
            0,
            "header: missing `base` (a preset name or \"host\")".into(),
        ));
    };
    let mut h = Header {
        name: f.name,
        base: base.get_ref().clone(),
        base_pos: at(base.span().start),
        note: f.note,
        provenance: f.provenance,
        hooks: Vec::new(),
    };
    let Some(hooks) = f.hooks else {
        return Err(err(
            0,
            "header: no [hooks]: a script hooks at least one MSR list or event".into(),
        ));
    };
    let hooks_pos = hooks.span().start;
    let hooks = hooks.into_inner();
    for (name, list) in [
        ("rdmsr", hooks.rdmsr),
        ("wrmsr", hooks.wrmsr),
        ("host_rdmsr", hooks.host_rdmsr),
        ("host_wrmsr", hooks.host_wrmsr),
    ] {
        let Some(list) = list else { continue };
        let decl = list.span().start;
        if list.get_ref().len() > MAX_RANGES {
            return Err(err(
                decl,
                format!("header: more than {MAX_RANGES} entries in hooks.{name}"),
            ));
        }
        let mut ranges = Vec::new();
        for e in list.get_ref() {
            ranges.push(match e.get_ref() {
                Entry::One(i) => *i..=*i,
                Entry::Range([a, b]) if a <= b => *a..=*b,
                Entry::Range([a, b]) => {
                    return Err(err(
                        e.span().start,
                        format!("header: range [{a:#x}, {b:#x}] is empty"),
                    ));
                }
            });
        }
        if !ranges.is_empty() {
            h.hooks.push((name, ranges, at(decl)));
        }
    }
    for ev in hooks.events.iter().flatten() {
        let name = match ev.get_ref().as_str() {
            "mwait" => "mwait",
            "shutdown" => "shutdown",
            "reset" => "reset",
            "init" => "init",
            other => {
                return Err(err(
                    ev.span().start,
                    format!("header: unknown event {other:?}; known: mwait, shutdown, reset, init"),
                ));
            }
        };
        if h.declares(name).is_none() {
            h.hooks.push((name, Vec::new(), at(ev.span().start)));
        }
    }
    if h.hooks.is_empty() {
        return Err(err(
            hooks_pos,
            "header: [hooks] declares nothing: a script hooks at least one MSR list or event"
                .into(),
        ));
    }
    Ok(h)
}
