//! `kvmtrace info FILE [--json]`: the header (host, kernel, caps, VM config,
//! capture mode, live policy, payload) and taints such as lost events.

use std::collections::BTreeMap;
use std::io::Write;

use kvmtrace_format::{Event, VcpuIdentity};

use crate::cli::FileJsonArgs;
use crate::trace_io::TraceFile;

pub fn run(args: &FileJsonArgs, out: &mut dyn Write, _err: &mut dyn Write) -> anyhow::Result<i32> {
    let mut t = TraceFile::open(&args.file)?;
    // Taints live in the event stream (Lost events) and in how vCPUs ended.
    let mut lost: BTreeMap<String, u64> = BTreeMap::new();
    // Sources with a loss the kernel did not count (`CPU:N [LOST EVENTS]`).
    let mut uncounted: BTreeMap<String, u64> = BTreeMap::new();
    let mut ends = Vec::new();
    // vCPUs whose identity is a guess (`VcpuThread { identity: first_seen }`).
    let mut guessed = Vec::new();
    let mut events = 0u64;
    // The VMM's vCPU state ioctls (format 1.3): count by ioctl, and refused.
    let mut vmm_state: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut vmm_refused = 0u64;
    // The VMM's KVM_ENABLE_CAPs (format 1.4): by cap name, and refused.
    let mut vmm_caps: BTreeMap<String, u64> = BTreeMap::new();
    let mut caps_refused = 0u64;
    for rec in t.records() {
        let rec = rec?;
        events += 1;
        match &rec.event {
            Event::Lost { source, count } => {
                let src = name(source);
                *lost.entry(src.clone()).or_default() += count;
                if *count == 0 {
                    *uncounted.entry(src).or_default() += 1;
                }
            }
            Event::End { reason } => ends.push((rec.vcpu, reason.clone())),
            Event::VmmState { set, result } => {
                *vmm_state.entry(set.ioctl()).or_default() += 1;
                vmm_refused += u64::from(*result != 0);
            }
            Event::CapEnabled { cap, result, .. } => {
                if vmm_caps.len() < 256 || vmm_caps.contains_key(&kvmtrace_format::cap_name(*cap)) {
                    *vmm_caps.entry(kvmtrace_format::cap_name(*cap)).or_default() += 1;
                }
                caps_refused += u64::from(*result != 0);
            }
            Event::VcpuThread {
                identity: VcpuIdentity::FirstSeen,
                ..
            } => guessed.push(rec.vcpu),
            _ => {}
        }
    }
    let h = t.header();
    let mut taints = Vec::new();
    for (src, n) in &lost {
        taints.push(match uncounted.get(src) {
            None => format!("lost {n} events ({src})"),
            Some(k) if *n == 0 => format!("lost events {k} times, uncounted ({src})"),
            Some(k) => format!("lost at least {n} events, {k} times uncounted ({src})"),
        });
    }
    if !guessed.is_empty() {
        guessed.sort_unstable();
        guessed.dedup();
        let list: Vec<String> = guessed.iter().map(|v| v.to_string()).collect();
        taints.push(format!(
            "vCPU identity guessed (numbered in order of appearance) for vCPU {}",
            list.join(", ")
        ));
    }
    if !h.config_source.is_exact() {
        taints.push("VM configuration unknown: replay assumes it".to_string());
    }
    if args.json {
        let mut v = serde_json::to_value(h)?;
        v["file"] = serde_json::json!(args.file.display().to_string());
        v["events"] = serde_json::json!(events);
        v["taints"] = serde_json::json!(taints);
        v["lost"] = serde_json::json!(lost);
        v["ends"] = serde_json::to_value(&ends)?;
        v["vmm_state"] = serde_json::json!({ "by_ioctl": vmm_state, "refused": vmm_refused });
        v["vmm_caps"] = serde_json::json!({ "by_cap": vmm_caps, "refused": caps_refused });
        super::write_json(out, &v)?;
        return Ok(0);
    }
    let cap = &h.capture;
    writeln!(out, "file          {}", args.file.display())?;
    writeln!(out, "tool          kvmtrace {}", h.tool_version)?;
    writeln!(
        out,
        "host          kernel {} module {} vendor {} ({})",
        h.host.kernel_release,
        h.host.kvm_module,
        name(&h.host.cpu_vendor),
        h.host.cpu_model
    )?;
    let caps: Vec<String> = h
        .host
        .caps
        .iter()
        .map(|(c, v)| match kvmtrace_format::kvm_cap_name(*c) {
            Some(n) => format!("{n}={v:#x}"),
            None => format!("{c}={v:#x}"),
        })
        .collect();
    writeln!(out, "kvm caps      {}", caps.join(" "))?;
    writeln!(out, "valid quirks  {:#x}", h.host.valid_quirks)?;
    writeln!(
        out,
        "msr lists     {} indices, {} feature MSRs, {} supported CPUID leaves",
        h.host.msr_index_list.len(),
        h.host.msr_feature_list.len(),
        h.host.supported_cpuid.len()
    )?;
    writeln!(
        out,
        "vm            {} vCPUs, {} MiB, {} CPUID leaves, disabled quirks {:#x}, irqchip {}",
        h.vm.vcpus,
        h.vm.memory_bytes >> 20,
        h.vm.cpuid.len(),
        h.vm.disabled_quirks,
        name(&h.vm.irqchip)
    )?;
    writeln!(out, "vm config     {}", h.config_source.describe())?;
    writeln!(
        out,
        "vm msr        user-space exits {:#x}, filter {}, mcg_cap {}",
        h.vm.user_space_msr,
        h.vm.msr_filter
            .as_ref()
            .map_or("none".to_string(), |f| format!(
                "{} ranges, default {}",
                f.ranges.len(),
                if f.default_deny { "deny" } else { "allow" }
            )),
        h.vm.mcg_cap.map_or("-".into(), |c| format!("{c:#x}"))
    )?;
    writeln!(
        out,
        "capture       {} (user-space exits {:#x}{}) {}",
        name(&cap.mode),
        cap.user_space_msr,
        if cap.filter.is_some() {
            ", capture filter"
        } else {
            ""
        },
        cap.detail
    )?;
    writeln!(
        out,
        "live policy   {}",
        if h.live_policy.is_empty() {
            "-"
        } else {
            &h.live_policy
        }
    )?;
    writeln!(out, "payload       {} {}", h.payload.name, h.payload.sha256)?;
    writeln!(
        out,
        "started       {}",
        super::text::wall_time(h.started_unix_ns)
    )?;
    writeln!(out, "events        {events}")?;
    if !vmm_state.is_empty() {
        let total: u64 = vmm_state.values().sum();
        let by: Vec<String> = vmm_state.iter().map(|(k, n)| format!("{k} {n}")).collect();
        writeln!(
            out,
            "vmm state     {total} vCPU state ioctls of the VMM ({}), {vmm_refused} refused",
            by.join(", ")
        )?;
    }
    if !vmm_caps.is_empty() {
        let total: u64 = vmm_caps.values().sum();
        let by: Vec<String> = vmm_caps.iter().map(|(k, n)| format!("{k} {n}")).collect();
        writeln!(
            out,
            "vmm caps      {total} KVM_ENABLE_CAP of the VMM ({}), {caps_refused} refused",
            by.join(", ")
        )?;
    }
    writeln!(
        out,
        "taints        {}",
        if taints.is_empty() {
            "none".to_string()
        } else {
            taints.join("; ")
        }
    )?;
    Ok(0)
}

/// The name an enum has in JSON (`amd`, `none`, `intercept`), or `unknown`.
fn name<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "unknown".into(),
    }
}
