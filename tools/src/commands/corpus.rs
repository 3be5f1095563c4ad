//! `kvmtrace corpus bless DIR [--policy P]` and `kvmtrace corpus check DIR
//! [--policy P] [--junit FILE] [--partition hash:I/N]`, on
//! `kvmtrace_replayer::corpus`: each `X.kvt` has its blessed result next to it;
//! blessed (expected) divergences are kept apart from regressions; an empty
//! corpus, an empty partition or a trace without a blessed result fails.
//! Exit 0 all pass, 1 a regression or an unchecked trace, 2 bad input.

use std::io::Write;

use anyhow::Context;
use kvmtrace_replayer::corpus;

use crate::cli::{CorpusBlessArgs, CorpusCheckArgs};

pub fn bless(
    args: &CorpusBlessArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<i32> {
    let specs = if args.policies.is_empty() {
        corpus::default_policies()
    } else {
        args.policies.clone()
    };
    let pb = crate::progress::spinner("blessing corpus traces");
    let r = corpus::bless(&args.dir, &specs);
    pb.finish_and_clear();
    let r = r?;
    if args.json {
        super::write_json(out, &serde_json::to_value(&r)?)?;
    } else {
        for t in &r.traces {
            writeln!(out, "blessed {t}")?;
        }
    }
    writeln!(
        err,
        "blessed {} traces in {} against {} ({} with expected divergences)",
        r.traces.len(),
        r.dir,
        specs.join(", "),
        r.with_expected_divergences
    )?;
    Ok(0)
}

pub fn check(
    args: &CorpusCheckArgs,
    out: &mut dyn Write,
    _err: &mut dyn Write,
) -> anyhow::Result<i32> {
    let partition = args
        .partition
        .as_deref()
        .map(corpus::parse_partition)
        .transpose()?;
    let specs = (!args.policies.is_empty()).then_some(args.policies.as_slice());
    let pb = crate::progress::spinner("checking corpus traces");
    let r = corpus::check(&args.dir, specs, partition);
    pb.finish_and_clear();
    let r = r?;
    if let Some(j) = &args.junit {
        std::fs::write(j, r.to_junit())
            .with_context(|| format!("cannot write the JUnit report {}", j.display()))?;
    }
    if args.json {
        let mut v = serde_json::to_value(&r)?;
        v["passed"] = serde_json::json!(r.passed());
        v["failures"] = serde_json::json!(r.failures());
        super::write_json(out, &v)?;
    } else {
        out.write_all(r.render().as_bytes())?;
    }
    Ok(if r.passed() { 0 } else { 1 })
}
