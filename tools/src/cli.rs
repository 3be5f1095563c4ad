//! The command line (DESIGN.md, "Command-line contract"): one clap derive tree.
//! Parsing only; every command's work is in `commands/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::export::ExportArgs;
use crate::fidelity::FidelityArgs;
use crate::import::ImportArgs;

/// Record KVM guests at the policy boundary (MSR accesses, MONITOR/MWAIT,
/// INIT/RESET/SHUTDOWN) and replay recordings against other KVM policies.
///
/// Exit codes: 0 ok, 1 divergence found or check failed, 2 bad input or usage.
#[derive(Debug, Parser)]
#[command(name = "kvmtrace", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a built-in scenario or a payload on /dev/kvm and record it.
    Record(RecordArgs),
    /// List the built-in guest scenarios.
    Scenarios(JsonArgs),
    /// Replay a trace against one or more policies and report divergences.
    Replay(ReplayArgs),
    /// List the policy presets and their switches.
    Policies(PoliciesArgs),
    /// Print a trace's events (JSON lines with --json).
    Dump(DumpArgs),
    /// Event, chunk and size statistics of a trace.
    Stats(FileJsonArgs),
    /// Check a trace's integrity; optionally salvage the readable prefix.
    Verify(VerifyArgs),
    /// Print a trace's header: host, kernel, caps, VM config, capture mode.
    Info(FileJsonArgs),
    /// Compare two traces event by event, aligned by guest action.
    Diff(DiffArgs),
    /// Write a deterministic synthetic trace.
    Synth(SynthArgs),
    /// Replay a directory of traces against blessed results (CI).
    #[command(subcommand)]
    Corpus(CorpusCommand),
    /// Convert kernel tracepoint text into a trace.
    Import(ImportArgs),
    /// Export a trace for Perfetto / chrome://tracing.
    Export(ExportArgs),
    /// Agreement of `host` and every preset with kernel-decided outcomes.
    Fidelity(FidelityArgs),
    /// Per diverging behaviour, the first release whose outcome changes, the
    /// commit, and whether vendor or quirks matter (one multi-policy pass).
    Bisect(BisectArgs),
    /// Measure the performance figures (ratios from one run).
    Bench(BenchArgs),
    /// Record `tour` and replay it against every preset: the divergence matrix.
    Demo(DemoArgs),
    /// Write a guest image: `guest qemu -o guest.elf` (QEMU `-kernel`, or `record --payload`).
    Guest(GuestArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GuestKind {
    /// Multiboot image for `qemu-system-x86_64 -kernel` that is also a 64-bit payload.
    Qemu,
}

#[derive(Debug, Clone, Args)]
pub struct GuestArgs {
    #[arg(value_enum)]
    pub kind: GuestKind,
    /// Where to write the image.
    #[arg(short, long)]
    pub output: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    Intercept,
    Observe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnFullArg {
    Wait,
    Drop,
}

#[derive(Debug, Clone, Args)]
#[command(group = clap::ArgGroup::new("guest").required(true).args(["scenario", "payload", "pid", "command"]))]
pub struct RecordArgs {
    /// A built-in scenario (see `kvmtrace scenarios`).
    #[arg(long)]
    pub scenario: Option<String>,
    /// A flat binary or 64-bit ELF to run as the guest.
    #[arg(long)]
    pub payload: Option<PathBuf>,
    /// Output trace (.kvt).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Live policy: a preset, `host`, or a policy file.
    #[arg(long, default_value = "host")]
    pub policy: String,
    /// How MSR accesses are captured: `intercept` (MSR filter and user-space
    /// exits: the recorder answers as the live policy) or `observe` (the kernel
    /// answers; its tracepoints are read from tracefs, needs root).
    #[arg(long, value_enum, default_value = "intercept")]
    pub mode: ModeArg,
    /// Number of vCPUs (default: the scenario's own; a payload gets 1).
    #[arg(long)]
    pub vcpus: Option<u32>,
    /// Loop count for looping scenarios (msr-loop).
    #[arg(long)]
    pub iterations: Option<u64>,
    /// What to do when the writer falls behind: wait (lossless) or drop (counted).
    #[arg(long, value_enum, default_value = "wait")]
    pub on_full: OnFullArg,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Attach to this running VMM and record it (until it exits, --duration,
    /// Ctrl-C or SIGTERM; Ctrl-C detaches and leaves it running).
    #[arg(long)]
    pub pid: Option<u32>,
    /// With --pid: stop recording after this many seconds.
    #[arg(long, requires = "pid")]
    pub duration: Option<f64>,
    /// Wrap mode: do not tap the VMM's KVM configuration ioctls.
    #[arg(long)]
    pub no_ioctl_tap: bool,
    /// Ring buffer per CPU for wrap/attach recording, KiB.
    #[arg(long, default_value_t = 8192)]
    pub buffer_kb: u32,
    /// Wrap mode: the VMM to start and record, after `--`
    /// (`kvmtrace record -o q.kvt -- qemu-system-x86_64 ...`). Every VM it
    /// creates is recorded, VM 0 into OUTPUT, VM k into OUTPUT-vmK; its exit
    /// status is kvmtrace's.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<std::ffi::OsString>,
}

#[derive(Debug, Clone, Args)]
pub struct JsonArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct PoliciesArgs {
    #[arg(long)]
    pub json: bool,
    /// Also resolve `host` against this trace's header.
    #[arg(long)]
    pub trace: Option<std::path::PathBuf>,
    /// Validate a policy script (`*.rhai`) or TOML policy file without a
    /// trace: exit 0 if valid, 2 with `file:line:column: what` if not.
    #[arg(long, value_name = "FILE")]
    pub check: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct FileJsonArgs {
    pub file: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    pub file: PathBuf,
    /// A preset, `host`, or a policy file; repeat for several in one pass.
    #[arg(long = "policy", required = true)]
    pub policies: Vec<String>,
    #[arg(long)]
    pub json: bool,
    /// Replay the readable prefix of a damaged trace instead of failing.
    #[arg(long)]
    pub salvage_ok: bool,
    /// Worker threads, at least 1 (output is identical whatever the count).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub threads: Option<u64>,
    /// Divergences shown per policy (human report: default 5; --json: default
    /// all); 0 shows all.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Only direct divergences (not consequences of an earlier one).
    #[arg(long)]
    pub direct_only: bool,
    /// Only divergences of this behaviour (mwait, reset_init, shutdown,
    /// feat_ctl, x2apic, mce, other).
    #[arg(long)]
    pub behaviour: Option<String>,
    /// Only divergences on this vCPU.
    #[arg(long)]
    pub vcpu: Option<u32>,
    /// Also list the outcomes each policy does not model, by kind (MSR and
    /// how the recording answered, MONITOR, …), most frequent first; --limit
    /// bounds the kinds shown (JSON: every kind).
    #[arg(long)]
    pub unmodeled: bool,
}

#[derive(Debug, Clone, Args)]
pub struct DumpArgs {
    pub file: PathBuf,
    #[arg(long)]
    pub json: bool,
    /// Sequence range like rr: `1000-5000`, `1000-end`, `1000` (one event),
    /// `-5000` (up to 5000), `end` (the last event).
    #[arg(allow_negative_numbers = true)]
    pub range: Option<String>,
    /// Only this vCPU's events.
    #[arg(long)]
    pub vcpu: Option<u32>,
}

#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    pub file: PathBuf,
    /// Write every complete, valid chunk before the damage to OUT as a valid trace.
    #[arg(long, value_name = "OUT")]
    pub salvage: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct DiffArgs {
    pub a: PathBuf,
    pub b: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Pattern {
    /// A guest reading MSR 0x10 (TSC) in a loop.
    MsrLoop,
    /// Every event kind and every seed behaviour on several vCPUs, as kvm-6.18/intel.
    Mixed,
}

#[derive(Debug, Clone, Args)]
pub struct SynthArgs {
    #[arg(long, value_enum)]
    pub pattern: Pattern,
    #[arg(long)]
    pub events: u64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(short, long)]
    pub output: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum CorpusCommand {
    /// Replay every trace in DIR and compare with its blessed result.
    Check(CorpusCheckArgs),
    /// Store the current replay result of every trace in DIR as expected.
    Bless(CorpusBlessArgs),
}

#[derive(Debug, Clone, Args)]
pub struct CorpusCheckArgs {
    pub dir: PathBuf,
    #[arg(long = "policy")]
    pub policies: Vec<String>,
    /// Write a JUnit XML report here.
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// Check only a share of the corpus: `hash:I/N` (1-based I).
    #[arg(long)]
    pub partition: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct CorpusBlessArgs {
    pub dir: PathBuf,
    #[arg(long = "policy")]
    pub policies: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    #[arg(long)]
    pub json: bool,
    /// Small sizes (CI smoke run); the figures are then indicative only.
    #[arg(long)]
    pub quick: bool,
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    #[arg(long)]
    pub json: bool,
    /// Replay this recording instead of recording `tour` now.
    #[arg(long)]
    pub trace: Option<PathBuf>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct BisectArgs {
    pub file: PathBuf,
    #[arg(long)]
    pub json: bool,
    /// Worker threads (output is identical whatever the count).
    #[arg(long)]
    pub threads: Option<usize>,
}
