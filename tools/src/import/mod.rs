//! `kvmtrace import ftrace TEXT -o FILE`: kernel tracepoint text to a trace.
//!
//! The text is what users paste from tracefs `trace`, `trace_pipe` or
//! `trace-cmd report`; the line parser and converter are shared with observe
//! mode and wrap/attach recording (`kvmtrace_capture`). The header says `capture.mode = Import`:
//! an imported trace starts from unknown state (the replayer lets a first read
//! teach a value), and its host is `--kernel/--vendor` or, without them, this
//! machine (said on stderr).

pub mod ftrace;

use std::io::{Read, Write};
use std::path::PathBuf;

use kvmtrace_format::{CaptureInfo, CaptureMode, CpuVendor, HostInfo, TraceHeader};
use kvmtrace_recorder::observe::host;

pub use ftrace::{
    ImportError, ImportOptions, ImportSummary, import_ftrace, import_lines_per_s, import_to_vec,
    synthetic_text,
};

#[derive(Debug, Clone, clap::Args)]
pub struct ImportArgs {
    /// Input format: `ftrace` (tracefs `trace`/`trace_pipe`, `trace-cmd report`) or
    /// `perf` (a `perf.data` file or `perf script` text, from `perf record -e 'kvm:*'`
    /// with or without `-p`/`-a`, or `perf kvm stat record`).
    pub format: String,
    /// The input file; `-` reads standard input (text only: a perf.data file
    /// must be named, it is read with seeks).
    pub input: PathBuf,
    #[arg(short, long)]
    pub output: PathBuf,
    /// Kernel release that produced the text (e.g. 6.1.0); default: this machine's.
    #[arg(long)]
    pub kernel: Option<String>,
    /// KVM vendor module of the machine that produced the text: intel, amd or pvm;
    /// default: this machine's.
    #[arg(long)]
    pub vendor: Option<String>,
    /// Skip malformed lines (counted and recorded as `Lost { source: import }`)
    /// instead of failing on the first one.
    #[arg(long)]
    pub lenient: bool,
    /// Print the summary as one JSON document.
    #[arg(long)]
    pub json: bool,
    /// Keep only the VM of this process (the text's tgid column) or holding
    /// this thread id. Without it every VM of the text is imported, VM 0 into
    /// OUTPUT and VM k into OUTPUT-vmK (never merged).
    #[arg(long)]
    pub pid: Option<u32>,
}

fn valid_release(r: &str) -> bool {
    let mut parts = r.split(['.', '-', '+', '_']);
    let major = parts.next().unwrap_or("");
    let minor = parts.next().unwrap_or("");
    !major.is_empty()
        && major.bytes().all(|b| b.is_ascii_digit())
        && !minor.is_empty()
        && minor.bytes().all(|b| b.is_ascii_digit())
        && r.len() < 128
}

/// The header host of an import: what the flags say, this machine for the rest.
/// Returns the host and a note for stderr when this machine was assumed.
pub fn import_host(
    kernel: Option<&str>,
    vendor: Option<&str>,
) -> anyhow::Result<(HostInfo, Option<String>)> {
    if let Some(k) = kernel {
        if !valid_release(k) {
            anyhow::bail!("--kernel {k:?}: not a kernel release like 6.1.0 or 5.15.0-91-generic");
        }
    }
    let vendor_info = match vendor {
        None => None,
        Some("intel") => Some(("kvm_intel", Some(CpuVendor::Intel))),
        Some("amd") => Some(("kvm_amd", Some(CpuVendor::Amd))),
        Some("pvm") => Some(("kvm_pvm", None)),
        Some(other) => anyhow::bail!("--vendor {other:?}: expected intel, amd or pvm"),
    };
    if let (Some(k), Some((module, cpu))) = (kernel, vendor_info) {
        let info = HostInfo {
            kernel_release: k.to_string(),
            kvm_module: module.to_string(),
            cpu_vendor: cpu,
            ..Default::default()
        };
        return Ok((info, None));
    }
    let (mut info, queried) = host::this_host();
    let mut assumed = Vec::new();
    match kernel {
        Some(k) => info.kernel_release = k.to_string(),
        None => assumed.push(format!("kernel {}", info.kernel_release)),
    }
    match vendor_info {
        Some((module, cpu)) => {
            // Another vendor's module: this machine's KVM lists do not apply.
            if info.kvm_module != module {
                info = HostInfo {
                    kernel_release: info.kernel_release,
                    kvm_module: module.to_string(),
                    cpu_vendor: cpu,
                    ..Default::default()
                };
            }
        }
        None => assumed.push(format!(
            "vendor module {}",
            if info.kvm_module.is_empty() {
                "unknown"
            } else {
                &info.kvm_module
            }
        )),
    }
    let kvm = if queried && info.msr_index_list.is_empty() && info.supported_cpuid.is_empty() {
        ""
    } else if queried {
        ", MSR index list and supported CPUID queried from /dev/kvm"
    } else {
        ", /dev/kvm not available: no MSR index list or supported CPUID"
    };
    let note = format!(
        "import: assuming the text came from this machine ({}{kvm}); pass --kernel and --vendor if it did not",
        assumed.join(", ")
    );
    Ok((info, Some(note)))
}

/// The header of an imported trace.
pub fn import_header(host: HostInfo, source: &str) -> TraceHeader {
    TraceHeader {
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        host,
        capture: CaptureInfo {
            mode: CaptureMode::Import,
            detail: format!("ftrace text {source}"),
            ..Default::default()
        },
        config_source: kvmtrace_format::ConfigSource::legacy(CaptureMode::Import),
        ..Default::default()
    }
}

pub fn run(args: &ImportArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<i32> {
    if args.format != "ftrace" && args.format != "perf" {
        anyhow::bail!(
            "import format {:?}: expected `ftrace` (tracefs text) or `perf` (perf.data or `perf script` text)",
            args.format
        );
    }
    let (host_info, note) = import_host(args.kernel.as_deref(), args.vendor.as_deref())?;
    if let Some(note) = note {
        writeln!(err, "{note}")?;
    }
    let opts = ImportOptions {
        lenient: args.lenient,
    };
    // `-` is standard input; a FIFO or a pipe streams like a file (the
    // import reads front to back and never seeks).
    let (input, name, total): (Box<dyn std::io::Read>, String, u64) =
        if args.input.as_os_str() == "-" {
            (Box::new(std::io::stdin().lock()), "<stdin>".into(), 0)
        } else {
            let name = args.input.display().to_string();
            let file = std::fs::File::open(&args.input)
                .map_err(|e| anyhow::anyhow!("cannot read {name}: {e}"))?;
            let meta = file
                .metadata()
                .map_err(|e| anyhow::anyhow!("cannot read {name}: {e}"))?;
            if meta.is_dir() {
                anyhow::bail!("cannot read {name}: it is a directory");
            }
            let total = if meta.is_file() { meta.len() } else { 0 };
            (Box::new(file), name, total)
        };
    let pb = crate::progress::bytes(total, "importing");
    let mut header = import_header(host_info, &name);
    let sum = if args.format == "perf" {
        let mut input = input;
        let mut head = [0u8; 8];
        let mut n = 0;
        while n < head.len() {
            match input.read(&mut head[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => anyhow::bail!("cannot read {name}: {e}"),
            }
        }
        if kvmtrace_capture::perf::is_perf_data(&head[..n]) {
            if args.input.as_os_str() == "-" {
                anyhow::bail!(
                    "<stdin>: a perf.data file cannot be read from standard input; name the file"
                );
            }
            drop(input);
            let text = kvmtrace_capture::perf::PerfDataText::open(&args.input)?;
            header.capture.detail = format!(
                "perf.data {name} (formats from {})",
                text.stats.formats_from
            );
            // Progress counts text bytes, not file bytes: no total.
            pb.set_length(0);
            write_trace(text, &name, &args.output, header, &opts, args.pid, &pb)?
        } else {
            header.capture.detail = format!("perf script text {name}");
            let text = kvmtrace_capture::perf::PerfScriptText::new(
                std::io::Cursor::new(head[..n].to_vec()).chain(input),
            );
            write_trace(text, &name, &args.output, header, &opts, args.pid, &pb)?
        }
    } else {
        write_trace(input, &name, &args.output, header, &opts, args.pid, &pb)?
    };
    pb.finish_and_clear();
    let c = &sum.convert;
    if args.json {
        let doc = serde_json::json!({
            "input": name,
            "output": args.output.display().to_string(),
            "lines": sum.lines,
            "bytes": sum.bytes,
            "kvm_lines": sum.kvm_lines,
            "other_events": sum.other_events,
            "skipped": sum.skipped,
            "ring_lost": sum.ring_lost,
            "records": sum.records,
            "vcpus": sum.vcpus,
            "msr": c.msr,
            "exceptions": c.exceptions,
            "exceptions_explained": c.exceptions_explained,
            "userspace_exits": c.userspace_exits,
            "ipis": c.ipis,
            "cpuid": c.cpuid,
            "unterminated": sum.unterminated,
            "vms": sum.vms,
            "per_vm": sum.per_vm.iter().map(|v| serde_json::json!({
                "vm": v.vm,
                "pid": v.pid,
                "vcpus": v.vcpus,
                "guessed_vcpus": v.guessed,
                "records": v.records,
            })).collect::<Vec<_>>(),
        });
        serde_json::to_writer(&mut *out, &doc)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "imported {} lines ({} KVM, {} other events skipped{}) into {}: {} records, {} vCPUs, {} MSR accesses, {} exceptions ({} explained by MSR #GP), {} user-space exits, {} IPIs",
            sum.lines,
            sum.kvm_lines,
            sum.other_events,
            if sum.skipped > 0 {
                format!(", {} malformed lines skipped", sum.skipped)
            } else {
                String::new()
            },
            args.output.display(),
            sum.records,
            sum.vcpus,
            c.msr,
            c.exceptions,
            c.exceptions_explained,
            c.userspace_exits,
            c.ipis
        )?;
    }
    if sum.vms > 1 || args.pid.is_some() {
        for v in &sum.per_vm {
            let path = if args.pid.is_some() {
                args.output.clone()
            } else {
                kvmtrace_capture::split::vm_path(&args.output, v.vm)
            };
            writeln!(
                err,
                "VM {} (pid {}): {} vCPUs, {} records into {}",
                v.vm,
                v.pid.map_or("unknown".to_string(), |p| p.to_string()),
                v.vcpus.len(),
                v.records,
                path.display()
            )?;
        }
        if sum.vms > 1 && args.pid.is_none() {
            writeln!(
                err,
                "{name} holds {} VMs: one trace each (VM k in OUTPUT-vmK; --pid PID keeps one)",
                sum.vms
            )?;
        }
    }
    if sum.membership_guessed {
        writeln!(
            err,
            "warning: {name} has no process ids (tgid column): VMs were told apart by vCPU numbers that repeat, and which thread belongs to which VM is a guess; capture with options/record-tgid"
        )?;
    }
    if sum.per_vm.iter().any(|v| !v.guessed.is_empty()) {
        writeln!(
            err,
            "warning: the vCPU numbers of threads with no vCPU name are a guess (order of first event); `info` says so"
        )?;
    }
    if sum.unterminated {
        writeln!(
            err,
            "warning: {name} does not end in a newline: its cut last line was recorded as lost"
        )?;
    }
    if sum.ring_lost > 0 {
        writeln!(
            err,
            "warning: the text reports {} events lost by the kernel ring buffer",
            sum.ring_lost
        )?;
    }
    Ok(0)
}

/// Stream the import into `.kvt` files, one per VM (`NAME.incomplete` until
/// each is whole: a failed import leaves no file that looks good). With
/// `pid`, only that process's VM, into `output`.
fn write_trace(
    file: impl std::io::Read,
    name: &str,
    output: &std::path::Path,
    header: TraceHeader,
    opts: &ImportOptions,
    pid: Option<u32>,
    pb: &indicatif::ProgressBar,
) -> anyhow::Result<ImportSummary> {
    use kvmtrace_capture::split::vm_path;
    type W = kvmtrace_format::TraceWriter<std::io::BufWriter<std::fs::File>>;
    // (VM index in the text, its output path, its writer)
    let mut writers: Vec<(usize, std::path::PathBuf, W)> = Vec::new();
    let select = pid.map(kvmtrace_capture::ftrace::VmSelect::Pid);
    let sum = kvmtrace_capture::ftrace::import_ftrace_split(
        file,
        name,
        opts,
        select,
        &mut |vm, r| {
            let i = match writers.iter().position(|w| w.0 == vm) {
                Some(i) => i,
                None => {
                    let path = if pid.is_some() {
                        output.to_path_buf()
                    } else {
                        vm_path(output, vm)
                    };
                    let mut h = header.clone();
                    h.capture.detail = format!("{}; VM {vm}", h.capture.detail);
                    let w = kvmtrace_format::create(&path, &h)?;
                    writers.push((vm, path, w));
                    writers.len() - 1
                }
            };
            writers[i].2.push(&r)
        },
        &mut |b| pb.set_position(b),
    );
    match sum {
        Ok(sum) => {
            for (_, _, w) in writers {
                w.finish()?;
            }
            Ok(sum)
        }
        Err(e) => {
            for (_, path, w) in writers {
                drop(w);
                let _ = std::fs::remove_file(kvmtrace_format::incomplete_path(&path));
            }
            Err(e.into())
        }
    }
}

#[cfg(test)]
mod tests;
