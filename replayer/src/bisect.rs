//! `kvmtrace bisect`: for each behaviour whose divergences change across the
//! release range, the first release (and stable point release) where they
//! change, the tabled commit responsible, and whether the vendor or quirks
//! matter. One multi-policy pass: every policy the answer needs is a lane of
//! one [`crate::Replay`] ([`plan`]), then [`analyse`] reads the reports.

use kvmtrace_format::TraceHeader;
use serde::Serialize;

use crate::policy::{Policy, Vendor};
use crate::presets::{self, changes};
use crate::quirks;
use crate::report::{Behaviour, PolicyReport, ReplayReport};

/// What one lane of the plan stands for.
#[derive(Clone, Debug, PartialEq)]
pub struct Lane {
    pub release: (u32, u32),
    pub point: Option<u32>,
    pub vendor: Vendor,
    /// Quirks disabled on top of the trace's own.
    pub quirks: u64,
}

/// The policies of the pass, and what each stands for (same order).
pub struct Plan {
    pub vendor: Vendor,
    pub lanes: Vec<Lane>,
    pub policies: Vec<Policy>,
}

/// Every mainline release under each vendor; each milestone with each quirk
/// disabled (the trace's vendor); the stable point releases of the table and
/// the point before each.
pub fn plan(header: &TraceHeader) -> Plan {
    let vendor = Vendor::of_header(header);
    let mut lanes = Vec::new();
    for v in [vendor, Vendor::Intel, Vendor::Amd, Vendor::Pvm] {
        if lanes.iter().any(|l: &Lane| l.vendor == v) {
            continue;
        }
        for &r in &presets::RELEASES {
            lanes.push(Lane {
                release: r,
                point: None,
                vendor: v,
                quirks: 0,
            });
        }
    }
    for r in presets::milestones() {
        for &(_, q) in &quirks::ALL {
            lanes.push(Lane {
                release: r,
                point: None,
                vendor,
                quirks: q,
            });
        }
    }
    for c in changes::CHANGES {
        for &(line, p) in c.stable {
            for point in [p.saturating_sub(1).max(1), p] {
                let l = Lane {
                    release: line,
                    point: Some(point),
                    vendor,
                    quirks: 0,
                };
                if !lanes.contains(&l) {
                    lanes.push(l);
                }
            }
        }
    }
    let policies = lanes
        .iter()
        .map(|l| {
            let mut p = presets::policy(l.release, l.point, l.vendor);
            if l.quirks != 0 {
                p = p.with_disabled_quirks(l.quirks);
            }
            p.name = lane_name(l);
            p
        })
        .collect();
    Plan {
        vendor,
        lanes,
        policies,
    }
}

fn lane_name(l: &Lane) -> String {
    let mut s = match l.point {
        Some(p) => format!("kvm-{}.{}.{p}", l.release.0, l.release.1),
        None => presets::name_of(l.release),
    };
    s.push('/');
    s.push_str(l.vendor.name());
    if l.quirks != 0 {
        s.push_str("-no-");
        s.push_str(&quirks::names_of(l.quirks).to_ascii_lowercase());
    }
    s
}

/// How a behaviour fares under one policy: divergences (direct, all) and
/// events left unreachable because the guest ended there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Signature {
    pub divergences: u64,
    pub unreachable: u64,
}

fn signature(p: &PolicyReport, b: Behaviour) -> Signature {
    Signature {
        divergences: p.by_behaviour.get(b),
        unreachable: p.unreachable_by_behaviour.get(b),
    }
}

/// A change between consecutive releases: (from, to, before, after).
type Step = ((u32, u32), (u32, u32), Signature, Signature);

/// One tabled change a transition is attributed to.
#[derive(Clone, Debug, Serialize)]
pub struct Cause {
    pub release: String,
    pub switch: &'static str,
    pub value: &'static str,
    pub commit: &'static str,
    pub subject: &'static str,
    pub function: &'static str,
    /// "vmx", "svm", "common", "model".
    pub code: changes::Code,
    /// Stable point releases that got it, as tabled ("5.15.61").
    pub stable: Vec<String>,
    pub note: &'static str,
}

/// A release where a behaviour's outcome changes.
#[derive(Clone, Debug, Serialize)]
pub struct Transition {
    /// The last release before the change, and the first with it.
    pub from: String,
    pub to: String,
    pub before: Signature,
    pub after: Signature,
    /// The tabled changes between the two releases (those whose switch decided
    /// a divergence of the behaviour first).
    pub causes: Vec<Cause>,
    /// The vendors under which the same release changes the behaviour.
    pub vendors: Vec<Vendor>,
    /// Quirks whose disabling changes the behaviour at either release.
    pub quirks: Vec<&'static str>,
    /// A stable point release confirmed on this trace (its signature equals
    /// the release after, the point before equals the release before).
    pub stable_confirmed: Vec<String>,
    /// Vendor-table facts (measured at one release) that apply at `to` but
    /// not at `from`: the change comes from the vendor table, not a commit.
    pub vendor_facts: Vec<String>,
    /// When no tabled change's switch decided a divergence of the behaviour,
    /// every change of the interval is listed and this says so.
    pub attribution: &'static str,
}

/// The changes of one behaviour.
#[derive(Clone, Debug, Serialize)]
pub struct BehaviourBisect {
    pub behaviour: Behaviour,
    /// The vendor the transitions below were found under (the trace's when
    /// they occur there, else the first vendor that shows them).
    pub vendor: Vendor,
    /// Whether the trace's own vendor shows them.
    pub under_trace_vendor: bool,
    pub transitions: Vec<Transition>,
}

#[derive(Clone, Debug, Serialize)]
pub struct BisectReport {
    pub trace: String,
    pub events: u64,
    pub vendor: Vendor,
    /// Policies replayed in the one pass.
    pub lanes: usize,
    pub behaviours: Vec<BehaviourBisect>,
}

/// Read the per-lane reports of a pass over [`plan`]'s policies.
pub fn analyse(plan: &Plan, report: &ReplayReport) -> BisectReport {
    let find = |l: &Lane| -> Option<&PolicyReport> {
        let i = plan.lanes.iter().position(|x| x == l)?;
        report.policies.get(i)
    };
    let lane = |r: (u32, u32), v: Vendor, q: u64, point: Option<u32>| Lane {
        release: r,
        point,
        vendor: v,
        quirks: q,
    };
    let mut vendors = vec![plan.vendor];
    for v in [Vendor::Intel, Vendor::Amd, Vendor::Pvm] {
        if !vendors.contains(&v) {
            vendors.push(v);
        }
    }
    let mut out = Vec::new();
    for b in Behaviour::ALL {
        // Transitions per vendor.
        let per_vendor: Vec<(Vendor, Vec<Step>)> = vendors
            .iter()
            .map(|&v| {
                let sigs: Vec<((u32, u32), Signature)> = presets::RELEASES
                    .iter()
                    .filter_map(|&r| find(&lane(r, v, 0, None)).map(|p| (r, signature(p, b))))
                    .collect();
                let t = sigs
                    .windows(2)
                    .filter(|w| w[0].1 != w[1].1)
                    .map(|w| (w[0].0, w[1].0, w[0].1, w[1].1))
                    .collect();
                (v, t)
            })
            .collect();
        let Some((vendor, ts)) = per_vendor
            .iter()
            .find(|(_, t)| !t.is_empty())
            .map(|(v, t)| (*v, t.clone()))
        else {
            continue;
        };
        let transitions = ts
            .iter()
            .map(|&(from, to, before, after)| {
                let p_from = find(&lane(from, vendor, 0, None));
                let p_to = find(&lane(to, vendor, 0, None));
                let rules: Vec<String> = [p_from, p_to]
                    .into_iter()
                    .flatten()
                    .flat_map(|p| p.kept.iter().filter(|d| d.behaviour == b))
                    .map(|d| d.rule.name.clone())
                    .collect();
                let between: Vec<&changes::Change> = changes::CHANGES
                    .iter()
                    .filter(|c| c.release > from && c.release <= to)
                    .collect();
                let decided: Vec<&&changes::Change> = between
                    .iter()
                    .filter(|c| {
                        rules
                            .iter()
                            .any(|r| r.starts_with(&format!("{}=", c.switch)))
                    })
                    .collect();
                let facts_of = |r| {
                    plan.lanes
                        .iter()
                        .position(|x| *x == lane(r, vendor, 0, None))
                        .map_or(0, |i| plan.policies[i].facts)
                };
                let new_facts = facts_of(to) & !facts_of(from);
                let vendor_facts: Vec<String> = crate::vendor::rows_of(new_facts)
                    .iter()
                    .map(|f| format!("{:?}: {} ({})", f.fact, f.what, f.evidence))
                    .collect();
                let (chosen, attribution): (Vec<&changes::Change>, &'static str) =
                    if !decided.is_empty() {
                        (
                            decided.into_iter().copied().collect(),
                            "the change's switch decided the divergences",
                        )
                    } else if !vendor_facts.is_empty() {
                        (
                            Vec::new(),
                            "vendor-table facts measured at this release only",
                        )
                    } else {
                        (
                            between.clone(),
                            "no tabled change's switch decided a divergence: every change of the interval",
                        )
                    };
                let causes = chosen
                    .iter()
                    .map(|c| Cause {
                        release: c.release_name(),
                        switch: c.switch,
                        value: c.value,
                        commit: c.commit,
                        subject: c.subject,
                        function: c.function,
                        code: c.code,
                        stable: c
                            .stable
                            .iter()
                            .map(|&((a, b2), p)| format!("{a}.{b2}.{p}"))
                            .collect(),
                        note: c.note,
                    })
                    .collect();
                let vendors_with = per_vendor
                    .iter()
                    .filter(|(_, t)| t.iter().any(|x| x.1 == to))
                    .map(|(v, _)| *v)
                    .collect();
                let mut quirk_list = Vec::new();
                if vendor == plan.vendor {
                    for &(name, q) in &quirks::ALL {
                        let (Some(a), Some(z)) = (
                            find(&lane(from, vendor, q, None)),
                            find(&lane(to, vendor, q, None)),
                        ) else {
                            continue;
                        };
                        if signature(a, b) != before || signature(z, b) != after {
                            quirk_list.push(name);
                        }
                    }
                }
                let mut stable_confirmed = Vec::new();
                for c in &chosen {
                    for &(line, p) in c.stable {
                        let prev = find(&lane(line, vendor, 0, Some(p.saturating_sub(1).max(1))));
                        let at = find(&lane(line, vendor, 0, Some(p)));
                        if let (Some(prev), Some(at)) = (prev, at)
                            && signature(prev, b) == before
                            && signature(at, b) == after
                        {
                            stable_confirmed.push(format!("{}.{}.{p}", line.0, line.1));
                        }
                    }
                }
                Transition {
                    from: format!("{}.{}", from.0, from.1),
                    to: format!("{}.{}", to.0, to.1),
                    before,
                    after,
                    causes,
                    vendors: vendors_with,
                    quirks: quirk_list,
                    stable_confirmed,
                    vendor_facts,
                    attribution,
                }
            })
            .collect();
        out.push(BehaviourBisect {
            behaviour: b,
            vendor,
            under_trace_vendor: vendor == plan.vendor,
            transitions,
        });
    }
    BisectReport {
        trace: report.trace.clone(),
        events: report.events,
        vendor: plan.vendor,
        lanes: plan.policies.len(),
        behaviours: out,
    }
}

impl BisectReport {
    /// The human report.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "trace {}: {} events, vendor {}; {} policies (every release 5.10-6.18 x vendor, quirks at each change, stable points) in one pass",
            self.trace,
            self.events,
            self.vendor.name(),
            self.lanes
        );
        if self.behaviours.is_empty() {
            let _ = writeln!(
                o,
                "no behaviour changes across kvm-5.10 ... kvm-6.18 under any vendor: every release gives this trace the same outcomes (nothing to bisect)"
            );
            return o;
        }
        for bb in &self.behaviours {
            let _ = writeln!(o, "\n{}:", bb.behaviour.name());
            if !bb.under_trace_vendor {
                let _ = writeln!(
                    o,
                    "  (no change under the trace's vendor {}; found under vendor {}: vendor module behaviour)",
                    self.vendor.name(),
                    bb.vendor.name()
                );
            }
            for t in &bb.transitions {
                let _ = writeln!(
                    o,
                    "  first changes in {} (after {}): {} divergences (+{} unreachable) -> {} (+{})",
                    t.to,
                    t.from,
                    t.before.divergences,
                    t.before.unreachable,
                    t.after.divergences,
                    t.after.unreachable
                );
                for f in &t.vendor_facts {
                    let _ = writeln!(o, "    vendor table (measured only at {}): {f}", t.to);
                }
                if t.causes.len() > 1 || t.causes.is_empty() {
                    let _ = writeln!(o, "    ({})", t.attribution);
                }
                for c in &t.causes {
                    let commit = if c.commit.is_empty() {
                        format!("{} (commit not established)", c.function)
                    } else {
                        format!("{} \"{}\" — {}", c.commit, c.subject, c.function)
                    };
                    let _ = writeln!(
                        o,
                        "    {} = {}: {commit} [{:?} code]",
                        c.switch, c.value, c.code
                    );
                    if !c.stable.is_empty() {
                        let _ = writeln!(o, "      stable: {}", c.stable.join(", "));
                    }
                }
                if !t.stable_confirmed.is_empty() {
                    let _ = writeln!(
                        o,
                        "    confirmed on this trace at stable {}",
                        t.stable_confirmed.join(", ")
                    );
                }
                let names: Vec<&str> = t.vendors.iter().map(|v| v.name()).collect();
                let _ = writeln!(
                    o,
                    "    vendor: {}",
                    if t.vendors.len() >= 3 {
                        "does not matter (same change under intel, amd, pvm)".to_string()
                    } else {
                        format!("matters: only under {}", names.join(", "))
                    }
                );
                let _ = writeln!(
                    o,
                    "    quirks: {}",
                    if t.quirks.is_empty() {
                        "none matters".to_string()
                    } else {
                        format!("disabling {} changes it", t.quirks.join(", "))
                    }
                );
            }
        }
        o
    }
}
