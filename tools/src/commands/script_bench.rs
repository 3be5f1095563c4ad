//! `kvmtrace bench` figures of policy scripts (docs/policy-scripts.md):
//! replay time of a script hooking one MSR against its base policy on the
//! fully modelled bench trace (target <= 1.2), and replay speed of a script
//! hooking every MSR access (each access enters the interpreter).

use std::path::Path;
use std::time::Instant;

use serde_json::{Value, json};

use super::replay::replay_file;

/// One MSR the modelled trace never touches (MC0_CTL): the cost of the hook
/// check on every other access.
const ONE_MSR: &str = "//! base = \"host\"\n//! [hooks]\n//! wrmsr = [0x400]\n\
fn wrmsr(ctx) {\n  if ctx.value == 1 { return gp(); }\n}\n";

/// MC0_STATUS, written by every other event of the trace: the interpreter on
/// half the events.
const HOOKED_MSR: &str = "//! base = \"host\"\n//! [hooks]\n//! wrmsr = [0x401]\n\
fn wrmsr(ctx) {\n  if ctx.value == 1 { return gp(); }\n}\n";

/// Every guest and host MSR access.
const EVERY_MSR: &str = "//! base = \"host\"\n//! [hooks]\n\
//! rdmsr = [[0, 0xffffffff]]\n//! wrmsr = [[0, 0xffffffff]]\n\
//! host_rdmsr = [[0, 0xffffffff]]\n//! host_wrmsr = [[0, 0xffffffff]]\n\
fn rdmsr(ctx) { check(ctx) }\nfn wrmsr(ctx) { check(ctx) }\n\
fn host_rdmsr(ctx) { check(ctx) }\nfn host_wrmsr(ctx) { check(ctx) }\n\
fn check(ctx) {\n  if ctx.index == 0x12345 { return gp(); }\n}\n";

pub fn bench(dir: &Path, events: u64) -> anyhow::Result<Value> {
    let trace = dir.join("script-modelled.kvt");
    super::replay::write_modelled(&trace, events)?;
    let write = |name: &str, text: &str| -> anyhow::Result<String> {
        let p = dir.join(name);
        std::fs::write(&p, text)?;
        Ok(p.display().to_string())
    };
    let one = write("one-msr.rhai", ONE_MSR)?;
    let hooked = write("hooked-msr.rhai", HOOKED_MSR)?;
    let every = write("every-msr.rhai", EVERY_MSR)?;
    let base = "host".to_string();
    let time = |policy: &str| -> anyhow::Result<f64> {
        let t = Instant::now();
        let r = replay_file(&trace, &[policy.to_string()], false, Some(1))?;
        anyhow::ensure!(r.events() == events, "replayed {} of {events}", r.events());
        Ok(t.elapsed().as_secs_f64().max(1e-9))
    };
    // Warm-up, then the best of three of each, alternating (one core).
    time(&base)?;
    let (mut tb, mut t1, mut th) = (f64::MAX, f64::MAX, f64::MAX);
    for _ in 0..3 {
        tb = tb.min(time(&base)?);
        t1 = t1.min(time(&one)?);
        th = th.min(time(&hooked)?);
    }
    // Every access enters the interpreter: a smaller trace is enough.
    let every_events = events.min(200_000);
    let etrace = dir.join("script-every.kvt");
    super::replay::write_modelled(&etrace, every_events)?;
    let t = Instant::now();
    let r = replay_file(&etrace, &[every], false, Some(1))?;
    let te = t.elapsed().as_secs_f64().max(1e-9);
    anyhow::ensure!(
        r.report.policies[0].divergences == 0,
        "every-MSR script diverged"
    );
    Ok(json!({
        "script_one_msr_ratio": t1 / tb,
        "script_hooked_half_ratio": th / tb,
        "script_every_msr_events_per_s": every_events as f64 / te,
        "script_base_events_per_s": events as f64 / tb,
    }))
}
