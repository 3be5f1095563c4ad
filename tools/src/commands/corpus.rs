//! `kvmtrace corpus bless DIR [--policy P]` stores, next to each `NAME.kvt`, its
//! expected replay result (`NAME.kvt.expected.json`); `corpus check DIR
//! [--policy P] [--junit FILE] [--partition hash:I/N]` replays every trace and
//! compares. Blessed *expected differences* (a trace known to diverge under an
//! old preset) are reported apart from regressions. An empty corpus, a
//! partition where nothing ran, or a trace without a blessed result fail: a
//! green run always checked something.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use kvmtrace_replayer::report::Behaviour;
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cli::{CorpusBlessArgs, CorpusCheckArgs};

/// What is blessed per policy: enough to tell a regression from an expected
/// difference, not so much that a cosmetic change of the report fails CI.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Expected {
    pub name: String,
    pub divergences: u64,
    pub by_behaviour: BTreeMap<String, u64>,
    /// The first divergence: sequence number and rule.
    pub first_seq: Option<u64>,
    pub first_rule: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Blessed {
    pub trace: String,
    pub events: u64,
    pub policies: Vec<Expected>,
}

pub fn expected_path(trace: &Path) -> PathBuf {
    let mut s = trace.as_os_str().to_owned();
    s.push(".expected.json");
    PathBuf::from(s)
}

/// The traces of a corpus, sorted by name.
fn traces(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let rd =
        std::fs::read_dir(dir).with_context(|| format!("cannot read corpus {}", dir.display()))?;
    let mut v = Vec::new();
    for e in rd {
        let p = e
            .with_context(|| format!("cannot read corpus {}", dir.display()))?
            .path();
        if p.extension().is_some_and(|x| x == "kvt") && p.is_file() {
            v.push(p);
        }
    }
    v.sort();
    if v.is_empty() {
        bail!(
            "corpus {} holds no .kvt traces: nothing to check",
            dir.display()
        );
    }
    Ok(v)
}

/// FNV-1a of the file name: stable across runs, machines and versions.
fn name_hash(p: &Path) -> u64 {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `hash:I/N` (1-based I).
pub fn parse_partition(s: &str) -> anyhow::Result<(u64, u64)> {
    let bad = || anyhow::anyhow!("bad --partition {s:?}: expected hash:I/N with 1 <= I <= N");
    let rest = s.strip_prefix("hash:").ok_or_else(bad)?;
    let (i, n) = rest.split_once('/').ok_or_else(bad)?;
    let (i, n): (u64, u64) = (i.parse().map_err(|_| bad())?, n.parse().map_err(|_| bad())?);
    if n == 0 || i == 0 || i > n {
        return Err(bad());
    }
    Ok((i, n))
}

fn result_of(trace: &Path, policies: &[String]) -> anyhow::Result<Blessed> {
    let r = super::replay::replay_file(trace, policies, false, Some(1))?;
    Ok(Blessed {
        trace: trace
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        events: r.events(),
        policies: r
            .report
            .policies
            .iter()
            .map(|p| Expected {
                name: p.name.clone(),
                divergences: p.divergences,
                by_behaviour: Behaviour::ALL
                    .iter()
                    .filter(|b| p.by_behaviour.get(**b) > 0)
                    .map(|b| (b.name().to_string(), p.by_behaviour.get(*b)))
                    .collect(),
                first_seq: p.first.as_ref().map(|d| d.seq),
                first_rule: p.first.as_ref().map(|d| d.rule.name.clone()),
            })
            .collect(),
    })
}

fn policies_or_host(p: &[String]) -> Vec<String> {
    if p.is_empty() {
        vec!["host".to_string()]
    } else {
        p.to_vec()
    }
}

pub fn bless(
    args: &CorpusBlessArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<i32> {
    let policies = policies_or_host(&args.policies);
    let list = traces(&args.dir)?;
    let pb = crate::progress::bar(list.len() as u64, "traces");
    let mut blessed = Vec::new();
    for t in &list {
        let b = result_of(t, &policies)?;
        let path = expected_path(t);
        let text = serde_json::to_string_pretty(&b)? + "\n";
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        blessed.push(b);
        pb.inc(1);
    }
    pb.finish_and_clear();
    if args.json {
        super::write_json(
            out,
            &json!({ "dir": args.dir.display().to_string(), "blessed": blessed }),
        )?;
    } else {
        for b in &blessed {
            let d: Vec<String> = b
                .policies
                .iter()
                .map(|p| format!("{}: {} divergences", p.name, p.divergences))
                .collect();
            writeln!(
                out,
                "blessed {} ({} events; {})",
                b.trace,
                b.events,
                d.join(", ")
            )?;
        }
    }
    writeln!(
        err,
        "blessed {} traces in {}",
        blessed.len(),
        args.dir.display()
    )?;
    Ok(0)
}

#[derive(Serialize)]
struct CaseResult {
    trace: String,
    /// `pass`, `expected_difference`, `regression`, `error`.
    status: &'static str,
    message: String,
}

pub fn check(
    args: &CorpusCheckArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<i32> {
    let partition = args.partition.as_deref().map(parse_partition).transpose()?;
    let all = traces(&args.dir)?;
    let list: Vec<PathBuf> = all
        .iter()
        .filter(|p| partition.is_none_or(|(i, n)| name_hash(p) % n == i - 1))
        .cloned()
        .collect();
    if list.is_empty() {
        bail!(
            "partition {} of corpus {} selects none of its {} traces: nothing was checked",
            args.partition.as_deref().unwrap_or(""),
            args.dir.display(),
            all.len()
        );
    }
    let pb = crate::progress::bar(list.len() as u64, "traces");
    let mut results = Vec::new();
    for t in &list {
        results.push(check_one(t, &args.policies));
        pb.inc(1);
    }
    pb.finish_and_clear();

    let count = |s: &str| results.iter().filter(|r| r.status == s).count();
    let (pass, expected, regress, errors) = (
        count("pass"),
        count("expected_difference"),
        count("regression"),
        count("error"),
    );
    if let Some(j) = &args.junit {
        let mut suite = TestSuite::new(format!("kvmtrace corpus {}", args.dir.display()));
        for r in &results {
            let status = match r.status {
                "pass" | "expected_difference" => TestCaseStatus::success(),
                s => {
                    let mut st = TestCaseStatus::non_success(if s == "error" {
                        NonSuccessKind::Error
                    } else {
                        NonSuccessKind::Failure
                    });
                    st.set_message(r.message.clone());
                    st.set_type(s);
                    st
                }
            };
            let mut tc = TestCase::new(r.trace.clone(), status);
            tc.set_classname(if r.status == "expected_difference" {
                "kvmtrace.corpus.expected_difference"
            } else {
                "kvmtrace.corpus"
            });
            if r.status == "expected_difference" {
                tc.set_system_out(r.message.clone());
            }
            suite.add_test_case(tc);
        }
        let mut report = Report::new("kvmtrace-corpus");
        report.add_test_suite(suite);
        let xml = report.to_string()?;
        std::fs::write(j, xml)
            .with_context(|| format!("cannot write JUnit report {}", j.display()))?;
    }
    if args.json {
        super::write_json(
            out,
            &json!({
                "dir": args.dir.display().to_string(),
                "checked": results.len(),
                "pass": pass,
                "expected_differences": expected,
                "regressions": regress,
                "errors": errors,
                "results": results,
            }),
        )?;
    } else {
        for r in &results {
            writeln!(
                out,
                "{:<20} {}{}",
                r.status,
                r.trace,
                if r.message.is_empty() {
                    String::new()
                } else {
                    format!(": {}", r.message)
                }
            )?;
        }
        writeln!(
            out,
            "{} traces: {pass} pass, {expected} expected differences, {regress} regressions, {errors} errors",
            results.len()
        )?;
    }
    if errors > 0 {
        let first = results
            .iter()
            .find(|r| r.status == "error")
            .map(|r| r.message.clone())
            .unwrap_or_default();
        writeln!(err, "corpus check: {errors} traces could not be checked")?;
        bail!("{first}");
    }
    Ok(if regress > 0 { 1 } else { 0 })
}

fn check_one(trace: &Path, policies: &[String]) -> CaseResult {
    let name = trace.display().to_string();
    let error = |message: String| CaseResult {
        trace: name.clone(),
        status: "error",
        message,
    };
    let exp_path = expected_path(trace);
    let text = match std::fs::read_to_string(&exp_path) {
        Ok(t) => t,
        Err(e) => {
            return error(format!(
                "{name} has no blessed result ({}: {e}); run `kvmtrace corpus bless` first",
                exp_path.display()
            ));
        }
    };
    let blessed: Blessed = match serde_json::from_str(&text) {
        Ok(b) => b,
        Err(e) => {
            return error(format!(
                "{}:{}:{}: bad blessed result: {e}",
                exp_path.display(),
                e.line(),
                e.column()
            ));
        }
    };
    let policies: Vec<String> = if policies.is_empty() {
        blessed.policies.iter().map(|p| p.name.clone()).collect()
    } else {
        policies.to_vec()
    };
    let now = match result_of(trace, &policies) {
        Ok(n) => n,
        Err(e) => return error(format!("{e:#}")),
    };
    let mut problems = Vec::new();
    let mut expected_diffs = Vec::new();
    for p in &now.policies {
        match blessed.policies.iter().find(|b| b.name == p.name) {
            None => problems.push(format!("no blessed result for policy {}", p.name)),
            Some(b) if b != p => problems.push(format!(
                "{}: {} divergences (first at #{}, rule {}), blessed {} (first at #{})",
                p.name,
                p.divergences,
                p.first_seq.map_or("-".into(), |s| s.to_string()),
                p.first_rule.as_deref().unwrap_or("-"),
                b.divergences,
                b.first_seq.map_or("-".into(), |s| s.to_string()),
            )),
            Some(b) if b.divergences > 0 => {
                expected_diffs.push(format!("{}: {} blessed divergences", p.name, b.divergences))
            }
            Some(_) => {}
        }
    }
    if now.events != blessed.events {
        problems.push(format!("{} events, blessed {}", now.events, blessed.events));
    }
    if !problems.is_empty() {
        CaseResult {
            trace: name,
            status: "regression",
            message: problems.join("; "),
        }
    } else if !expected_diffs.is_empty() {
        CaseResult {
            trace: name,
            status: "expected_difference",
            message: expected_diffs.join("; "),
        }
    } else {
        CaseResult {
            trace: name,
            status: "pass",
            message: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions() {
        assert_eq!(parse_partition("hash:1/3").unwrap(), (1, 3));
        for bad in ["hash:0/3", "hash:4/3", "1/3", "hash:1/0", "hash:a/b"] {
            assert!(parse_partition(bad).is_err(), "{bad}");
        }
    }
}
