//! A corpus for CI: a directory of `.kvt` traces, each with its blessed replay
//! result `X.expect.json` next to `X.kvt`. `bless` stores the current results
//! (known divergences included, so expected differences stay apart from
//! regressions); `check` replays every trace (or a hash partition of them, like
//! `cargo nextest --partition hash:I/N`) and compares. An empty corpus, an empty
//! partition, or a trace without a blessed result is a failure, never green.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use kvmtrace_format::TraceReader;
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
use serde::{Deserialize, Serialize};

use crate::policy::{Policy, PolicyError};
use crate::replay::replay_reader;
use crate::report::{Behaviour, ByBehaviour, PolicyReport, ReplayReport, render_divergence};

/// Bounds on untrusted corpus directories and expect files.
const MAX_DEPTH: usize = 16;
const MAX_TRACES: usize = 100_000;
const MAX_EXPECT_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    #[error("cannot read corpus directory {dir}: {source}")]
    ReadDir {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("corpus {dir} is empty: no .kvt traces found (an empty corpus never passes)")]
    Empty { dir: String },
    #[error("corpus {dir} has more than {MAX_TRACES} traces")]
    TooMany { dir: String },
    #[error("bad partition {spec:?}: expected hash:I/N with 1 <= I <= N")]
    Partition { spec: String },
    #[error("{trace}: {source}")]
    Policy {
        trace: String,
        #[source]
        source: PolicyError,
    },
    #[error("cannot bless {trace}: {message}")]
    BlessTrace { trace: String, message: String },
    /// A trace (or one of its policies) has no usable blessed result: the
    /// corpus is not set up, which is an error (exit 2), not a regression.
    #[error("{trace}: {message}")]
    NotBlessed { trace: String, message: String },
    #[error("cannot write {path}: {source}")]
    WriteExpect {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The policies a corpus is blessed against by default: the preset of every
/// release where a rule changes, and `host`.
pub fn default_policies() -> Vec<String> {
    Policy::milestone_names()
}

/// `hash:I/N` → (I, N).
pub fn parse_partition(spec: &str) -> Result<(u64, u64), CorpusError> {
    let bad = || CorpusError::Partition {
        spec: spec.to_string(),
    };
    let (i, n) = spec
        .strip_prefix("hash:")
        .and_then(|r| r.split_once('/'))
        .ok_or_else(bad)?;
    let (i, n): (u64, u64) = (i.parse().map_err(|_| bad())?, n.parse().map_err(|_| bad())?);
    if i == 0 || n == 0 || i > n {
        return Err(bad());
    }
    Ok((i, n))
}

/// FNV-1a 64 of the trace's path relative to the corpus (deterministic on
/// every machine).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Whether trace `rel` belongs to partition `(i, n)`.
pub fn in_partition(rel: &str, (i, n): (u64, u64)) -> bool {
    fnv1a(rel) % n == i - 1
}

/// The `.kvt` files under `dir` (recursive, sorted, symlinks not followed), as
/// (relative path with `/`, full path).
pub fn list_traces(dir: &Path) -> Result<Vec<(String, PathBuf)>, CorpusError> {
    fn walk(
        root: &Path,
        d: &Path,
        depth: usize,
        out: &mut Vec<(String, PathBuf)>,
    ) -> Result<(), CorpusError> {
        let err = |source| CorpusError::ReadDir {
            dir: d.display().to_string(),
            source,
        };
        let mut entries: Vec<_> = std::fs::read_dir(d)
            .map_err(err)?
            .collect::<Result<_, _>>()
            .map_err(err)?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let ft = e.file_type().map_err(err)?;
            if ft.is_dir() && depth < MAX_DEPTH {
                walk(root, &p, depth + 1, out)?;
            } else if ft.is_file() && p.extension().is_some_and(|x| x == "kvt") {
                if out.len() >= MAX_TRACES {
                    return Err(CorpusError::TooMany {
                        dir: root.display().to_string(),
                    });
                }
                let rel = p
                    .strip_prefix(root)
                    .unwrap_or(&p)
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                out.push((rel, p));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, 0, &mut out)?;
    Ok(out)
}

/// Where the blessed result of `trace` lives: `X.kvt` → `X.expect.json`.
pub fn expect_path(trace: &Path) -> PathBuf {
    trace.with_extension("expect.json")
}

/// How a policy is identified in blessings: a preset or `host` by its name, a
/// policy file by the SHA-256 of its content, so `../pol/p.toml` from one
/// directory and `pol/p.toml` from another are the same policy (and an edited
/// file is another). A file that cannot be read keeps its path as given.
pub fn policy_key(spec: &str) -> String {
    if Policy::preset_names().contains(&spec) {
        return spec.to_string();
    }
    use sha2::Digest;
    use std::io::Read;
    let mut bytes = Vec::new();
    match std::fs::File::open(spec).and_then(|f| f.take(1 << 20).read_to_end(&mut bytes)) {
        Ok(_) => {
            let d = sha2::Sha256::digest(&bytes);
            let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
            format!("sha256:{hex}")
        }
        Err(_) => format!("path:{spec}"),
    }
}

/// One blessed divergence (enough to tell the same divergence again).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectedDivergence {
    pub seq: u64,
    pub vcpu: u32,
    pub behaviour: Behaviour,
    pub rule: String,
    pub direct: bool,
}

/// The blessed result of one policy on one trace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExpectedPolicy {
    /// As given to bless (preset, `host` or a policy file path).
    pub spec: String,
    /// [`policy_key`] of `spec` at bless time (older blessings: empty, matched
    /// by `spec`).
    #[serde(default)]
    pub key: String,
    pub name: String,
    pub divergences: u64,
    pub direct: u64,
    pub consequent: u64,
    pub unmodeled: u64,
    /// Events after the policy ended the guest (older blessings: 0).
    #[serde(default)]
    pub unreachable: u64,
    pub by_behaviour: ByBehaviour,
    /// The first divergences (at most `Replay::KEEP`).
    pub kept: Vec<ExpectedDivergence>,
}

impl ExpectedPolicy {
    /// Whether this blessing is for the policy with key `key` (given as `spec`).
    fn is_for(&self, key: &str, spec: &str) -> bool {
        if self.key.is_empty() {
            self.spec == spec
        } else {
            self.key == key
        }
    }

    fn of(spec: &str, p: &PolicyReport) -> ExpectedPolicy {
        ExpectedPolicy {
            spec: spec.to_string(),
            key: policy_key(spec),
            name: p.name.clone(),
            divergences: p.divergences,
            direct: p.direct,
            consequent: p.consequent,
            unmodeled: p.unmodeled,
            unreachable: p.unreachable,
            by_behaviour: p.by_behaviour.clone(),
            kept: p
                .kept
                .iter()
                .map(|d| ExpectedDivergence {
                    seq: d.seq,
                    vcpu: d.vcpu,
                    behaviour: d.behaviour,
                    rule: d.rule.name.clone(),
                    direct: d.direct,
                })
                .collect(),
        }
    }
}

/// `X.expect.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Expectation {
    pub trace: String,
    pub events: u64,
    pub policies: Vec<ExpectedPolicy>,
}

fn replay_trace(path: &Path, rel: &str, specs: &[String]) -> Result<ReplayReport, String> {
    let mut reader = TraceReader::open(path).map_err(|e| e.to_string())?;
    let header = reader.header().clone();
    let policies = specs
        .iter()
        .map(|s| Policy::resolve(s, &header).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut rep = replay_reader(&mut reader, policies, None, false).map_err(|e| e.to_string())?;
    rep.trace = rel.to_string();
    Ok(rep)
}

/// What `bless` wrote.
#[derive(Clone, Debug, Serialize)]
pub struct BlessReport {
    pub dir: String,
    pub traces: Vec<String>,
    /// Traces blessed with at least one expected divergence.
    pub with_expected_divergences: usize,
}

/// Store the current replay result of every trace under `dir` against `specs`.
pub fn bless(dir: &Path, specs: &[String]) -> Result<BlessReport, CorpusError> {
    let traces = list_traces(dir)?;
    if traces.is_empty() {
        return Err(CorpusError::Empty {
            dir: dir.display().to_string(),
        });
    }
    let mut out = BlessReport {
        dir: dir.display().to_string(),
        traces: Vec::new(),
        with_expected_divergences: 0,
    };
    for (rel, path) in traces {
        let rep = replay_trace(&path, &rel, specs).map_err(|message| CorpusError::BlessTrace {
            trace: rel.clone(),
            message,
        })?;
        let ep = expect_path(&path);
        // Blessings of other policies stay: re-blessing one keeps the rest.
        let mut policies: Vec<ExpectedPolicy> = match read_expect(&ep) {
            Ok(old) if old.trace == rel && old.events == rep.events => old.policies,
            _ => Vec::new(),
        };
        for (s, p) in specs.iter().zip(&rep.policies) {
            let now = ExpectedPolicy::of(s, p);
            match policies.iter_mut().find(|o| o.is_for(&now.key, s)) {
                Some(o) => *o = now,
                None => policies.push(now),
            }
        }
        let e = Expectation {
            trace: rel.clone(),
            events: rep.events,
            policies,
        };
        if e.policies.iter().any(|p| p.divergences > 0) {
            out.with_expected_divergences += 1;
        }
        let json = serde_json::to_string_pretty(&e).unwrap_or_default() + "\n";
        std::fs::write(&ep, json).map_err(|source| CorpusError::WriteExpect {
            path: ep.display().to_string(),
            source,
        })?;
        out.traces.push(rel);
    }
    Ok(out)
}

/// The verdict on one trace.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Verdict {
    /// Same result as blessed, no divergence.
    Pass,
    /// Same result as blessed, including blessed (expected) divergences.
    ExpectedDivergences { note: String },
    /// Differs from the blessed result, or cannot be checked.
    Fail { message: String },
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CaseResult {
    pub trace: String,
    #[serde(flatten)]
    pub verdict: Verdict,
    pub seconds: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckReport {
    pub dir: String,
    pub partition: Option<(u64, u64)>,
    pub total_traces: usize,
    pub cases: Vec<CaseResult>,
}

impl CheckReport {
    /// Green only if something ran and nothing failed.
    pub fn passed(&self) -> bool {
        !self.cases.is_empty()
            && self
                .cases
                .iter()
                .all(|c| !matches!(c.verdict, Verdict::Fail { .. }))
    }

    pub fn failures(&self) -> usize {
        self.cases
            .iter()
            .filter(|c| matches!(c.verdict, Verdict::Fail { .. }))
            .count()
    }

    pub fn render(&self) -> String {
        let mut o = String::new();
        for c in &self.cases {
            match &c.verdict {
                Verdict::Pass => {
                    let _ = writeln!(o, "PASS     {}", c.trace);
                }
                Verdict::ExpectedDivergences { note } => {
                    let _ = writeln!(o, "EXPECTED {}  ({note})", c.trace);
                }
                Verdict::Fail { message } => {
                    let _ = writeln!(o, "FAIL     {}\n{}", c.trace, indent(message));
                }
            }
        }
        let expected = self
            .cases
            .iter()
            .filter(|c| matches!(c.verdict, Verdict::ExpectedDivergences { .. }))
            .count();
        let _ = writeln!(
            o,
            "corpus {}{}: {} of {} traces checked, {} failed, {} with expected divergences{}",
            self.dir,
            self.partition
                .map(|(i, n)| format!(" (partition hash:{i}/{n})"))
                .unwrap_or_default(),
            self.cases.len(),
            self.total_traces,
            self.failures(),
            expected,
            if self.cases.is_empty() {
                " — nothing ran: FAIL"
            } else {
                ""
            }
        );
        o
    }

    /// JUnit XML: one testcase per trace; expected divergences pass with a note
    /// in system-out; nothing ran is one failing testcase.
    pub fn to_junit(&self) -> String {
        let mut report = Report::new("kvmtrace-corpus");
        let mut suite = TestSuite::new(format!("corpus {}", self.dir));
        if self.cases.is_empty() {
            let mut st = TestCaseStatus::non_success(NonSuccessKind::Failure);
            st.set_message("nothing ran: the corpus (or this partition) has no traces");
            suite.add_test_case(TestCase::new("corpus", st));
        }
        for c in &self.cases {
            let mut tc = match &c.verdict {
                Verdict::Pass => TestCase::new(c.trace.clone(), TestCaseStatus::success()),
                Verdict::ExpectedDivergences { note } => {
                    let mut tc = TestCase::new(c.trace.clone(), TestCaseStatus::success());
                    tc.set_system_out(format!("expected divergences (blessed): {note}"));
                    tc
                }
                Verdict::Fail { message } => {
                    let mut st = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    st.set_message(message.lines().next().unwrap_or("failed").to_string());
                    st.set_description(message.clone());
                    TestCase::new(c.trace.clone(), st)
                }
            };
            tc.set_classname("kvmtrace.corpus");
            tc.set_time(std::time::Duration::from_secs_f64(c.seconds.max(0.0)));
            suite.add_test_case(tc);
        }
        report.add_test_suite(suite);
        report.to_string().unwrap_or_default()
    }
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}

fn read_expect(path: &Path) -> Result<Expectation, String> {
    let shown = path.display();
    let len = std::fs::metadata(path)
        .map_err(|e| format!("no blessed result {shown} ({e}): run `kvmtrace corpus bless` first"))?
        .len();
    if len > MAX_EXPECT_BYTES {
        return Err(format!(
            "{shown}: {len} bytes exceeds the {MAX_EXPECT_BYTES}-byte limit"
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    serde_json::from_str(&text).map_err(|e| {
        format!(
            "{shown}:{}:{}: not a blessed result: {e}",
            e.line(),
            e.column()
        )
    })
}

/// The blessed results of one trace for `specs` (default: every blessed
/// policy), as (spec to replay, blessing); a missing or unreadable blessing
/// is an error naming the trace and the policy.
fn blessings(
    rel: &str,
    path: &Path,
    specs: Option<&[String]>,
) -> Result<Vec<(String, ExpectedPolicy)>, CorpusError> {
    let not_blessed = |message: String| CorpusError::NotBlessed {
        trace: rel.to_string(),
        message,
    };
    let expect = read_expect(&expect_path(path)).map_err(not_blessed)?;
    let Some(specs) = specs else {
        return Ok(expect
            .policies
            .into_iter()
            .map(|p| (p.spec.clone(), p))
            .collect());
    };
    let mut out = Vec::new();
    for s in specs {
        let key = policy_key(s);
        match expect.policies.iter().find(|p| p.is_for(&key, s)) {
            Some(p) => out.push((s.clone(), p.clone())),
            None => {
                let what = if key.starts_with("sha256:") {
                    format!("policy file {s} (by its content)")
                } else {
                    format!("policy {s}")
                };
                return Err(not_blessed(format!(
                    "no blessed result for {what}; blessed: {}; run `kvmtrace corpus bless DIR --policy {s}` (other blessings are kept)",
                    expect
                        .policies
                        .iter()
                        .map(|p| p.spec.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
    }
    Ok(out)
}

/// Compare one trace's replay with its blessed results.
fn verdict(rel: &str, path: &Path, wanted: &[(String, ExpectedPolicy)]) -> Verdict {
    let specs: Vec<String> = wanted.iter().map(|(s, _)| s.clone()).collect();
    let blessed: Vec<&ExpectedPolicy> = wanted.iter().map(|(_, p)| p).collect();
    let rep = match replay_trace(path, rel, &specs) {
        Ok(r) => r,
        Err(message) => return Verdict::Fail { message },
    };
    let mut fails = String::new();
    let mut notes = Vec::new();
    for ((s, want), got) in specs.iter().zip(blessed).zip(&rep.policies) {
        let mut now = ExpectedPolicy::of(s, got);
        // The same policy given by another path, or an old blessing's spec.
        now.spec.clone_from(&want.spec);
        now.key.clone_from(&want.key);
        if now == *want {
            if got.divergences > 0 {
                notes.push(format!("{}: {} divergences", got.name, got.divergences));
            }
            continue;
        }
        let _ = writeln!(
            fails,
            "{}: {} divergences ({} direct), blessed {} ({} direct){}",
            got.name,
            got.divergences,
            got.direct,
            want.divergences,
            want.direct,
            if got.divergences < want.divergences {
                " — fewer than blessed: re-bless if the change is intended"
            } else {
                ""
            }
        );
        // The first divergence not in the blessed list explains the regression.
        let new = got.kept.iter().find(|d| {
            !want
                .kept
                .iter()
                .any(|w| w.seq == d.seq && w.rule == d.rule.name && w.direct == d.direct)
        });
        match new.or(got.first.as_ref()) {
            Some(d) => fails.push_str(&render_divergence(d)),
            None => {
                let _ = writeln!(fails, "  (blessed divergences no longer occur)");
            }
        }
    }
    if fails.is_empty() {
        if notes.is_empty() {
            Verdict::Pass
        } else {
            Verdict::ExpectedDivergences {
                note: notes.join(", "),
            }
        }
    } else {
        Verdict::Fail { message: fails }
    }
}

/// Replay every trace under `dir` (or partition `(i, n)` of them) against
/// `specs` (default: the policies each trace was blessed with) and compare with
/// the blessed results.
pub fn check(
    dir: &Path,
    specs: Option<&[String]>,
    partition: Option<(u64, u64)>,
) -> Result<CheckReport, CorpusError> {
    check_with_progress(dir, specs, partition, &mut |_, _, _| {})
}

/// [`check`], calling `progress(done, selected, trace)` after each trace.
pub fn check_with_progress(
    dir: &Path,
    specs: Option<&[String]>,
    partition: Option<(u64, u64)>,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<CheckReport, CorpusError> {
    let traces = list_traces(dir)?;
    if traces.is_empty() {
        return Err(CorpusError::Empty {
            dir: dir.display().to_string(),
        });
    }
    let total = traces.len();
    let selected: Vec<_> = traces
        .into_iter()
        .filter(|(rel, _)| partition.is_none_or(|p| in_partition(rel, p)))
        .collect();
    let n = selected.len();
    // Every blessing is looked up before anything runs: a trace or policy
    // without one is an error, not a failing test case.
    let mut wanted = Vec::with_capacity(n);
    for (rel, path) in &selected {
        wanted.push(blessings(rel, path, specs)?);
    }
    let mut cases = Vec::new();
    for ((rel, path), wanted) in selected.into_iter().zip(wanted) {
        let t = std::time::Instant::now();
        let verdict = verdict(&rel, &path, &wanted);
        progress(cases.len() + 1, n, &rel);
        cases.push(CaseResult {
            trace: rel,
            verdict,
            seconds: t.elapsed().as_secs_f64(),
        });
    }
    Ok(CheckReport {
        dir: dir.display().to_string(),
        partition,
        total_traces: total,
        cases,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_cover_each_trace_once() {
        assert_eq!(parse_partition("hash:2/3").unwrap(), (2, 3));
        for bad in ["hash:0/3", "hash:4/3", "count:1/2", "hash:1", "hash:a/b"] {
            assert!(parse_partition(bad).is_err(), "{bad}");
        }
        for name in ["a.kvt", "dir/b.kvt", "c.kvt", "tour.kvt"] {
            let n = (1..=4).filter(|&i| in_partition(name, (i, 4))).count();
            assert_eq!(n, 1, "{name}");
        }
        // Stable across runs and machines.
        assert_eq!(fnv1a("tour.kvt") % 4, fnv1a("tour.kvt") % 4);
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
    }
}
