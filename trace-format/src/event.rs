//! Trace events: what a guest did at the hypervisor boundary, and what came of it.
//!
//! A trace is an append-only log of [`Record`]s. Guest-visible state at any point is
//! the fold of the records before it (see the replayer). Every outcome says who
//! decided it ([`DecidedBy`]): the kernel (observe mode, import, state read back
//! from KVM) or the VMM (intercept mode: the live policy answered the exit).
//!
//! Names follow KVM: `MsrRead`/`MsrWrite` are RDMSR/WRMSR (or `KVM_GET/SET_MSRS`
//! with [`Origin::Host`]), outcomes use the words of SEMANTICS.md §0.

use serde::{Deserialize, Serialize};

/// One entry of the log: a global sequence number, the vCPU it happened on, the
/// monotonic time since the trace began, and the event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    pub vcpu: u32,
    /// Nanoseconds since the trace began (CLOCK_MONOTONIC based).
    pub time_ns: u64,
    pub event: Event,
}

/// Who performed an MSR access: the guest (RDMSR/WRMSR) or the VMM through
/// `KVM_GET_MSRS`/`KVM_SET_MSRS` (`host_initiated` in the kernel).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Guest,
    Host,
}

/// Who decided an outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecidedBy {
    /// The kernel decided on its own (observe mode, ftrace import, state read back).
    Kernel,
    /// The VMM answered an exit with what its live policy decided (intercept mode).
    Vmm,
}

/// Why KVM deflected an MSR access to user space (`run->msr.reason`,
/// `KVM_MSR_EXIT_REASON_*`, SEMANTICS.md §4 and §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MsrExitReason {
    /// `KVM_MSR_EXIT_REASON_INVAL` (1 << 0): the handler faulted (r = 1 or r < 0).
    Inval,
    /// `KVM_MSR_EXIT_REASON_UNKNOWN` (1 << 1): the MSR is unknown to KVM (r = 2).
    Unknown,
    /// `KVM_MSR_EXIT_REASON_FILTER` (1 << 2): refused by the MSR filter (r = 3).
    Filter,
}

impl MsrExitReason {
    /// The uapi bit of this reason.
    pub const fn bit(self) -> u32 {
        match self {
            MsrExitReason::Inval => 1 << 0,
            MsrExitReason::Unknown => 1 << 1,
            MsrExitReason::Filter => 1 << 2,
        }
    }

    /// The reason for a single uapi bit, if it is one.
    pub const fn from_bit(bit: u32) -> Option<Self> {
        match bit {
            1 => Some(MsrExitReason::Inval),
            2 => Some(MsrExitReason::Unknown),
            4 => Some(MsrExitReason::Filter),
            _ => None,
        }
    }
}

/// What user space answered a deflected MSR access with (`run->msr.data/error`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserAnswer {
    /// error = 0 on a read: EDX:EAX = value.
    Value(u64),
    /// error = 0 on a write.
    Ok,
    /// error != 0: KVM injects `#GP(0)`.
    Gp,
}

/// The outcome of an MSR access (SEMANTICS.md §0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MsrOutcome {
    /// Read succeeded with this value.
    Value(u64),
    /// Write succeeded.
    Ok,
    /// The access faulted: `#GP(0)` injected (guest) or the `KVM_SET/GET_MSRS`
    /// entry refused (host).
    InjectGp,
    /// Deflected to user space (`KVM_EXIT_X86_RDMSR/WRMSR`) for `reason`, then
    /// answered with `answer`.
    UserExit {
        reason: MsrExitReason,
        answer: UserAnswer,
    },
    /// `KVM_RUN` failed with this errno (e.g. 1 = EPERM for a bad MCi_CTL write
    /// before 6.0): the guest is dead.
    VmFailed { errno: i32 },
}

/// The outcome of a MONITOR or MWAIT (SEMANTICS.md §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MwaitOutcome {
    /// Skipped: RIP advanced past the instruction.
    Nop,
    /// `#UD` injected.
    InjectUd,
    /// Not intercepted (`KVM_X86_DISABLE_EXITS_MWAIT`): hardware executed it.
    NotIntercepted,
}

/// What caused a `KVM_EXIT_SHUTDOWN`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShutdownCause {
    TripleFault,
    Other,
}

/// What followed a shutdown (SEMANTICS.md §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterShutdown {
    /// The vCPU was put into its RESET state.
    Reset,
    /// The vCPU was INITed (SVM since 5.15 does this in the kernel).
    Init,
    /// The VM was stopped.
    Stop,
    /// Nothing changed in the kernel (VMX, `kvm_pvm`): the VMM resumed the vCPU
    /// with its registers as they were at the fault, possibly past the fault.
    Resume,
}

/// Where an INIT came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitSource {
    /// An INIT IPI sent by vCPU `from` through a user-space local APIC.
    Ipi { from: u32 },
    /// INIT as the response to a triple-fault shutdown.
    Shutdown,
    /// The VMM INITed the vCPU on its own.
    Host,
    /// The in-kernel LAPIC performed the INIT (seen as state after `KVM_RUN`
    /// returned EAGAIN).
    Kernel,
}

/// What ended a trace (or a vCPU's part of it).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The guest reported it was done.
    Finished,
    /// The guest is dead (`KVM_RUN` failed, e.g. EPERM).
    VmFailed { errno: i32 },
    /// Stopped after a shutdown.
    Shutdown,
    /// The recorder stopped the guest (time or event limit, signal, write error).
    Stopped { why: String },
    /// An exit the recorder cannot continue from (e.g. emulation failure of an
    /// instruction other than MONITOR/MWAIT).
    Error { message: String },
}

impl EndReason {
    /// Why a vCPU's run ended, in words (dump, replay context lines, info).
    pub fn describe(&self) -> String {
        match self {
            EndReason::Finished => "finished".into(),
            EndReason::VmFailed { errno } => format!(
                "the VM failed (KVM_RUN: {})",
                std::io::Error::from_raw_os_error(*errno)
            ),
            EndReason::Shutdown => "stopped after a shutdown".into(),
            EndReason::Stopped { why } => format!("stopped: {why}"),
            EndReason::Error { message } => format!("error: {message}"),
        }
    }
}

/// Which part of the capture lost events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LostSource {
    /// `--on-full drop`: the vCPU-to-writer channel was full.
    Channel,
    /// The kernel's trace ring buffer overran (observe mode).
    Tracefs,
    /// Lines of an imported text that were malformed and skipped (`--lenient`).
    Import,
}

/// IPI delivery mode, as `kvm_apic_ipi` prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IpiMode {
    Fixed,
    LowestPriority,
    Smi,
    Nmi,
    Init,
    Sipi,
    Other(u8),
}

/// A segment register as `struct kvm_segment` holds it. `attr` packs the
/// attribute bits in the VMX access-rights layout: type 3:0, S 4, DPL 6:5,
/// P 7, AVL 12, L 13, D/B 14, G 15, unusable 16.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Segment {
    pub selector: u16,
    pub base: u64,
    pub limit: u32,
    pub attr: u32,
}

/// GDTR or IDTR.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DescTable {
    pub base: u64,
    pub limit: u16,
}

/// The architectural state that RESET and INIT define (SEMANTICS.md §2), as read
/// with `KVM_GET_REGS`/`SREGS`/`DEBUGREGS`/`MSRS`/`MP_STATE`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ArchState {
    /// RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8..R15 (encoding order).
    pub gprs: [u64; 16],
    pub rip: u64,
    pub rflags: u64,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    pub cs: Segment,
    pub ds: Segment,
    pub es: Segment,
    pub fs: Segment,
    pub gs: Segment,
    pub ss: Segment,
    pub ldtr: Segment,
    pub tr: Segment,
    pub gdtr: DescTable,
    pub idtr: DescTable,
    /// DR0..DR3.
    pub dr: [u64; 4],
    pub dr6: u64,
    pub dr7: u64,
    pub apic_base: u64,
    /// `KVM_MP_STATE_*`: RUNNABLE 0, UNINITIALIZED 1, INIT_RECEIVED 2, HALTED 3,
    /// SIPI_RECEIVED 4.
    pub mp_state: u32,
    /// MSRs read back with the state (index, value), sorted by index.
    pub msrs: Vec<(u32, u64)>,
}

impl ArchState {
    pub const RAX: usize = 0;
    pub const RCX: usize = 1;
    pub const RDX: usize = 2;

    pub fn rdx(&self) -> u64 {
        self.gprs[Self::RDX]
    }

    /// The value of an MSR read back with this state, if it was.
    pub fn msr(&self, index: u32) -> Option<u64> {
        self.msrs
            .binary_search_by_key(&index, |&(i, _)| i)
            .ok()
            .map(|i| self.msrs[i].1)
    }
}

/// One `kvm_cpuid_entry2`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CpuidEntry {
    pub function: u32,
    pub index: u32,
    /// `KVM_CPUID_FLAG_*` (bit 0: significant index).
    pub flags: u32,
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// One range of a `KVM_X86_SET_MSR_FILTER` filter (SEMANTICS.md §4).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MsrFilterRange {
    /// `KVM_MSR_FILTER_READ` 1 | `KVM_MSR_FILTER_WRITE` 2.
    pub flags: u32,
    pub base: u32,
    pub nmsrs: u32,
    /// One bit per MSR, 1 = allow; at most 0x600 bytes.
    pub bitmap: Vec<u8>,
}

/// A whole MSR filter as the VMM set it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MsrFilter {
    /// `KVM_MSR_FILTER_DEFAULT_DENY`.
    pub default_deny: bool,
    pub ranges: Vec<MsrFilterRange>,
}

/// Everything that can happen at the boundary. RESET/INIT states (and the
/// registers a kernel capture saw) are boxed: they are rare, and the common
/// MSR events should stay small (every record is moved through the decoder's
/// batch and the replay lanes; the size check below keeps it so).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    // ---- MSR accesses (SEMANTICS.md §0, §3, §4, §5) ----
    /// RDMSR by the guest, or `KVM_GET_MSRS` by the VMM.
    MsrRead {
        index: u32,
        origin: Origin,
        outcome: MsrOutcome,
        decided_by: DecidedBy,
        /// How the recorder saw the access when its capture machinery (deny-all
        /// filter, user-space MSR exits) routed it: the exit reason KVM gave.
        /// `None` when the kernel handled it (observe mode) or for host accesses.
        capture: Option<MsrExitReason>,
    },
    /// WRMSR by the guest, or `KVM_SET_MSRS` by the VMM.
    MsrWrite {
        index: u32,
        value: u64,
        origin: Origin,
        outcome: MsrOutcome,
        decided_by: DecidedBy,
        capture: Option<MsrExitReason>,
    },

    // ---- MONITOR / MWAIT (SEMANTICS.md §1) ----
    Monitor {
        rip: u64,
        rax: u64,
        ecx: u32,
        edx: u32,
        outcome: MwaitOutcome,
        decided_by: DecidedBy,
    },
    Mwait {
        rip: u64,
        eax: u32,
        ecx: u32,
        outcome: MwaitOutcome,
        decided_by: DecidedBy,
    },

    // ---- RESET / INIT / SIPI / SHUTDOWN (SEMANTICS.md §2) ----
    /// A triple fault (`KVM_EXIT_SHUTDOWN`) and what followed it.
    Shutdown {
        rip: u64,
        cause: ShutdownCause,
        then: AfterShutdown,
        decided_by: DecidedBy,
    },
    /// The vCPU's RESET state (right after `KVM_CREATE_VCPU`, or a later reset).
    Reset {
        state: Box<ArchState>,
        decided_by: DecidedBy,
    },
    /// An INIT: the state before and after.
    Init {
        source: InitSource,
        before: Box<ArchState>,
        after: Box<ArchState>,
        decided_by: DecidedBy,
    },
    /// A startup IPI received by this vCPU (in captures of another VMM: one
    /// the in-kernel LAPIC accepted, `kvm_apic_accept_irq` with delivery mode
    /// SIPI; it takes effect only if the vCPU waits for a SIPI). `from` is
    /// the sending vCPU, [`SIPI_FROM_UNKNOWN`] when the sender was not a vCPU
    /// of this VM the capture knows.
    Sipi { from: u32, vector: u8 },
    /// An IPI as the kernel traced it (`kvm_apic_ipi`), sent by this vCPU.
    Ipi { dst: u32, vector: u8, mode: IpiMode },

    // ---- Configuration: what the VMM set up (folded into state) ----
    /// `KVM_SET_CPUID2` on this vCPU.
    Cpuid { entries: Vec<CpuidEntry> },
    /// `KVM_CAP_DISABLE_QUIRKS` (cap 116) or `KVM_CAP_DISABLE_QUIRKS2` (213):
    /// the argument as passed.
    QuirksDisabled { cap: u32, mask: u64 },
    /// The scenario's own `KVM_X86_SET_MSR_FILTER` (never the capture filter,
    /// which the header records).
    MsrFilter { filter: MsrFilter },
    /// The scenario's own `KVM_CAP_X86_USER_SPACE_MSR` mask (INVAL 1, UNKNOWN 2,
    /// FILTER 4).
    UserSpaceMsr { mask: u32 },
    /// `KVM_X86_SETUP_MCE` with this MCG_CAP.
    SetupMce { mcg_cap: u64 },

    // ---- Guest I/O and control flow ----
    /// A port I/O exit (console, report port).
    Io {
        port: u16,
        size: u8,
        write: bool,
        data: u32,
    },
    /// An exception the kernel injected that no other event explains
    /// (`kvm_inj_exception` in observe mode or import).
    Exception {
        vector: u8,
        error_code: Option<u32>,
        reinjected: bool,
    },
    /// `KVM_EXIT_HLT`.
    Halt,
    /// An exit the recorder did not understand, recorded raw and flagged.
    RawExit { exit_reason: u32, data: Vec<u8> },
    /// Events that could not be recorded (`--on-full drop`, ring overrun, skipped
    /// import lines): the trace is tainted by `count` lost events; `count` 0
    /// is a loss the kernel did not count (`CPU:N [LOST EVENTS]`).
    Lost { source: LostSource, count: u64 },
    /// The end of this vCPU's run.
    End { reason: EndReason },

    // ---- Format 1.1: captures of other VMMs (kernel tracepoints) ----
    /// The kernel put this vCPU in its RESET state (`KVM_CREATE_VCPU`), as a
    /// capture that cannot read registers saw it (wrap/attach recording from
    /// tracepoints, import): `known` holds what the capture saw, every other
    /// register is unknown (never invented). Replay puts the vCPU in the
    /// model's RESET state and compares only `known`. The first state event of
    /// each vCPU of such a capture.
    KernelReset { known: Box<KnownState> },
    /// An INIT the in-kernel local APIC accepted for this vCPU
    /// (`kvm_apic_accept_irq` with delivery mode INIT, not a level de-assert),
    /// sent by vCPU `from` when the sender was a vCPU of this VM. The kernel
    /// applies its INIT state when the vCPU next runs; registers as for
    /// `KernelReset`.
    KernelInit {
        from: Option<u32>,
        known: Box<KnownState>,
    },
    /// Which thread of which process ran this vCPU, and how kvmtrace tells:
    /// the first record of each vCPU of a wrap/attach/import trace. A
    /// `FirstSeen` identity is a guess (`info` says so).
    VcpuThread {
        pid: u32,
        tid: u32,
        /// The thread's name (`/proc/PID/task/TID/comm` or the trace's task
        /// field), at most 16 bytes as the kernel keeps it.
        comm: String,
        identity: VcpuIdentity,
    },

    // ---- Format 1.3: the VMM's vCPU state ioctls (ioctl tap) ----
    /// A vCPU state ioctl of another VMM, seen by wrap mode's ioctl tap: the
    /// fields of its argument the models use ([`VmmSet`]) and the ioctl's
    /// result (0, or -errno: the kernel refused it and changed nothing the
    /// model tracks). The VMM's own resets (QEMU sets the APIC base with
    /// `KVM_SET_SREGS2` at every reset) and restores.
    VmmState { set: Box<VmmSet>, result: i32 },

    // ---- Format 1.4: every KVM_ENABLE_CAP of the VMM (ioctl tap) ----
    /// A `KVM_ENABLE_CAP` of another VMM, seen by wrap mode's ioctl tap, on
    /// the VM fd (`vcpu_scope` false; the record's vCPU is then 0) or on a
    /// vCPU fd (`vcpu_scope` true): the capability number (`KVM_CAP_*`), its
    /// four `args` exactly as passed, and the ioctl's result (0, or -errno:
    /// the kernel refused to enable it). Every enable is recorded, also the
    /// ones that have a configuration event of their own (`QuirksDisabled`,
    /// `UserSpaceMsr`), so replay can tell which capabilities a release lacks
    /// and what later ioctls depended on them.
    CapEnabled {
        cap: u32,
        args: Box<[u64; 4]>,
        vcpu_scope: bool,
        result: i32,
    },
}

/// What a VMM's vCPU state ioctl set (format 1.3, [`Event::VmmState`]): only
/// the fields a policy model reads, exactly as the VMM passed them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmmSet {
    /// `KVM_SET_REGS`.
    Regs { rip: u64, rflags: u64 },
    /// `KVM_SET_SREGS`, or `KVM_SET_SREGS2` (`sregs2`: same fields).
    Sregs {
        apic_base: u64,
        cr0: u64,
        cr4: u64,
        efer: u64,
        cs: Segment,
        sregs2: bool,
    },
    /// `KVM_SET_MP_STATE` (`KVM_MP_STATE_*`).
    MpState { mp_state: u32 },
    /// `KVM_SET_VCPU_EVENTS`.
    VcpuEvents(VcpuEventsSet),
    /// `KVM_SET_LAPIC`: the registers of the 1 KiB APIC page the models use.
    Lapic(LapicPage),
    /// `KVM_X86_SET_MCE`: a machine check the VMM injects into bank `bank`.
    Mce {
        bank: u8,
        status: u64,
        addr: u64,
        misc: u64,
        mcg_status: u64,
    },
}

/// The parts of `struct kvm_vcpu_events` a model reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VcpuEventsSet {
    /// `KVM_VCPUEVENT_VALID_*` (NMI_PENDING 1, SIPI_VECTOR 2, SHADOW 4, SMM 8,
    /// PAYLOAD 0x10, TRIPLE_FAULT 0x20).
    pub flags: u32,
    pub exception_injected: bool,
    pub exception_pending: bool,
    pub exception_nr: u8,
    /// `has_error_code` set: the error code.
    pub exception_error_code: Option<u32>,
    pub nmi_injected: bool,
    pub nmi_pending: bool,
    pub nmi_masked: bool,
    /// Meaningful with `KVM_VCPUEVENT_VALID_SIPI_VECTOR`.
    pub sipi_vector: u32,
    /// `smi.pending` and `smi.latched_init` (meaningful with VALID_SMM).
    pub smi_pending: bool,
    pub latched_init: bool,
}

/// The registers of a `KVM_SET_LAPIC` page (`struct kvm_lapic_state`, the
/// xAPIC register layout, one u32 every 16 bytes) the models use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LapicPage {
    /// 0x20 (the xAPIC ID in bits 31:24, or the x2APIC ID with the x2APIC API
    /// in x2APIC mode).
    pub id: u32,
    /// 0x30.
    pub version: u32,
    /// 0x80.
    pub tpr: u32,
    /// 0xd0.
    pub ldr: u32,
    /// 0xe0.
    pub dfr: u32,
    /// 0xf0 (spurious-interrupt vector register).
    pub svr: u32,
    /// 0x280.
    pub esr: u32,
    /// 0x2f0.
    pub lvt_cmci: u32,
    /// 0x300, 0x310.
    pub icr_low: u32,
    pub icr_high: u32,
    /// 0x320 .. 0x370.
    pub lvt_timer: u32,
    pub lvt_thermal: u32,
    pub lvt_perf: u32,
    pub lvt_lint0: u32,
    pub lvt_lint1: u32,
    pub lvt_error: u32,
    /// 0x380, 0x3e0.
    pub timer_initial: u32,
    pub timer_divide: u32,
}

impl LapicPage {
    /// (offset in the APIC page, value) of every field, in offset order.
    pub fn regs(&self) -> [(u16, u32); 18] {
        [
            (0x20, self.id),
            (0x30, self.version),
            (0x80, self.tpr),
            (0xd0, self.ldr),
            (0xe0, self.dfr),
            (0xf0, self.svr),
            (0x280, self.esr),
            (0x2f0, self.lvt_cmci),
            (0x300, self.icr_low),
            (0x310, self.icr_high),
            (0x320, self.lvt_timer),
            (0x330, self.lvt_thermal),
            (0x340, self.lvt_perf),
            (0x350, self.lvt_lint0),
            (0x360, self.lvt_lint1),
            (0x370, self.lvt_error),
            (0x380, self.timer_initial),
            (0x3e0, self.timer_divide),
        ]
    }

    /// The page's fields from the register at each offset (`reg(0x20)` = ID).
    pub fn from_regs(reg: impl Fn(u16) -> u32) -> LapicPage {
        LapicPage {
            id: reg(0x20),
            version: reg(0x30),
            tpr: reg(0x80),
            ldr: reg(0xd0),
            dfr: reg(0xe0),
            svr: reg(0xf0),
            esr: reg(0x280),
            lvt_cmci: reg(0x2f0),
            icr_low: reg(0x300),
            icr_high: reg(0x310),
            lvt_timer: reg(0x320),
            lvt_thermal: reg(0x330),
            lvt_perf: reg(0x340),
            lvt_lint0: reg(0x350),
            lvt_lint1: reg(0x360),
            lvt_error: reg(0x370),
            timer_initial: reg(0x380),
            timer_divide: reg(0x3e0),
        }
    }
}

impl VmmSet {
    /// The ioctl's uapi name.
    pub fn ioctl(&self) -> &'static str {
        match self {
            VmmSet::Regs { .. } => "KVM_SET_REGS",
            VmmSet::Sregs { sregs2: false, .. } => "KVM_SET_SREGS",
            VmmSet::Sregs { sregs2: true, .. } => "KVM_SET_SREGS2",
            VmmSet::MpState { .. } => "KVM_SET_MP_STATE",
            VmmSet::VcpuEvents(_) => "KVM_SET_VCPU_EVENTS",
            VmmSet::Lapic(_) => "KVM_SET_LAPIC",
            VmmSet::Mce { .. } => "KVM_X86_SET_MCE",
        }
    }

    /// One line, human form (`dump`, replay context, `info`).
    pub fn describe(&self) -> String {
        match self {
            VmmSet::Regs { rip, rflags } => format!("rip {rip:#x} rflags {rflags:#x}"),
            VmmSet::Sregs {
                apic_base,
                cr0,
                cr4,
                efer,
                cs,
                ..
            } => format!(
                "apic_base {apic_base:#x} cr0 {cr0:#x} cr4 {cr4:#x} efer {efer:#x} cs {:#x}/{:#x}",
                cs.selector, cs.base
            ),
            VmmSet::MpState { mp_state } => format!("mp_state {}", mp_state_name(*mp_state)),
            VmmSet::VcpuEvents(e) => {
                let mut s = format!("flags {:#x}", e.flags);
                if e.exception_injected || e.exception_pending {
                    s.push_str(&format!(
                        " exception {} {}",
                        e.exception_nr,
                        if e.exception_pending {
                            "pending"
                        } else {
                            "injected"
                        }
                    ));
                    if let Some(c) = e.exception_error_code {
                        s.push_str(&format!(" error {c:#x}"));
                    }
                }
                for (on, what) in [
                    (e.nmi_injected, " nmi injected"),
                    (e.nmi_pending, " nmi pending"),
                    (e.nmi_masked, " nmi masked"),
                    (e.smi_pending, " smi pending"),
                    (e.latched_init, " init latched"),
                ] {
                    if on {
                        s.push_str(what);
                    }
                }
                if e.flags & 2 != 0 {
                    s.push_str(&format!(" sipi_vector {:#x}", e.sipi_vector));
                }
                s
            }
            VmmSet::Lapic(p) => format!(
                "id {:#x} ldr {:#x} dfr {:#x} svr {:#x} tpr {:#x} lvtt {:#x} lint0 {:#x} lint1 {:#x}",
                p.id, p.ldr, p.dfr, p.svr, p.tpr, p.lvt_timer, p.lvt_lint0, p.lvt_lint1
            ),
            VmmSet::Mce {
                bank,
                status,
                addr,
                misc,
                mcg_status,
            } => format!(
                "bank {bank} status {status:#x} addr {addr:#x} misc {misc:#x} mcg_status {mcg_status:#x}"
            ),
        }
    }
}

/// An ioctl's result in words: `ok`, or `failed: Invalid argument (errno 22)`.
pub fn ioctl_result(result: i32) -> String {
    if result == 0 {
        "ok".into()
    } else if result < 0 {
        let e = result.unsigned_abs() as i32;
        format!("failed: {} (errno {e})", errno_text(e))
    } else {
        format!("returned {result}")
    }
}

/// The message of an errno without Rust's " (os error N)" suffix.
fn errno_text(e: i32) -> String {
    let s = std::io::Error::from_raw_os_error(e).to_string();
    match s.rfind(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// A `CapEnabled` event's enable in words:
/// `KVM_CAP_X86_TRIPLE_FAULT_EVENT args [0x1, 0, 0, 0] on the VM`.
pub fn describe_cap_enable(cap: u32, args: &[u64; 4], vcpu_scope: bool) -> String {
    format!(
        "{} args [{:#x}, {:#x}, {:#x}, {:#x}] on the {}",
        cap_name(cap),
        args[0],
        args[1],
        args[2],
        args[3],
        if vcpu_scope { "vCPU" } else { "VM" }
    )
}

/// `KVM_CAP_*` by name, for the capabilities VMMs enable (uapi numbers from
/// include/uapi/linux/kvm.h); others as `KVM_CAP_<number>`.
pub fn cap_name(cap: u32) -> String {
    let name = match cap {
        KVM_CAP_SPLIT_IRQCHIP => "KVM_CAP_SPLIT_IRQCHIP",
        KVM_CAP_MAX_VCPU_ID => "KVM_CAP_MAX_VCPU_ID",
        KVM_CAP_X2APIC_API => "KVM_CAP_X2APIC_API",
        KVM_CAP_HYPERV_SYNIC => "KVM_CAP_HYPERV_SYNIC",
        KVM_CAP_HYPERV_SYNIC2 => "KVM_CAP_HYPERV_SYNIC2",
        KVM_CAP_HYPERV_ENLIGHTENED_VMCS => "KVM_CAP_HYPERV_ENLIGHTENED_VMCS",
        KVM_CAP_HYPERV_DIRECT_TLBFLUSH => "KVM_CAP_HYPERV_DIRECT_TLBFLUSH",
        KVM_CAP_HYPERV_ENFORCE_CPUID => "KVM_CAP_HYPERV_ENFORCE_CPUID",
        KVM_CAP_EXCEPTION_PAYLOAD => "KVM_CAP_EXCEPTION_PAYLOAD",
        KVM_CAP_X86_USER_SPACE_MSR => "KVM_CAP_X86_USER_SPACE_MSR",
        KVM_CAP_X86_BUS_LOCK_EXIT => "KVM_CAP_X86_BUS_LOCK_EXIT",
        KVM_CAP_DISABLE_QUIRKS => "KVM_CAP_DISABLE_QUIRKS",
        KVM_CAP_DISABLE_QUIRKS2 => "KVM_CAP_DISABLE_QUIRKS2",
        KVM_CAP_X86_TRIPLE_FAULT_EVENT => "KVM_CAP_X86_TRIPLE_FAULT_EVENT",
        KVM_CAP_X86_NOTIFY_VMEXIT => "KVM_CAP_X86_NOTIFY_VMEXIT",
        KVM_CAP_X86_DISABLE_EXITS => "KVM_CAP_X86_DISABLE_EXITS",
        KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 => "KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2",
        _ => return format!("KVM_CAP_{cap}"),
    };
    name.into()
}

/// `KVM_CAP_X86_DISABLE_EXITS` (include/uapi/linux/kvm.h).
pub const KVM_CAP_X86_DISABLE_EXITS: u32 = 143;
/// `KVM_CAP_SPLIT_IRQCHIP`.
pub const KVM_CAP_SPLIT_IRQCHIP: u32 = 121;
/// `KVM_CAP_HYPERV_SYNIC`.
pub const KVM_CAP_HYPERV_SYNIC: u32 = 123;
/// `KVM_CAP_MAX_VCPU_ID` (QEMU 7.2 enables it on every VM).
pub const KVM_CAP_MAX_VCPU_ID: u32 = 128;
/// `KVM_CAP_X2APIC_API`.
pub const KVM_CAP_X2APIC_API: u32 = 129;
/// `KVM_CAP_HYPERV_SYNIC2`.
pub const KVM_CAP_HYPERV_SYNIC2: u32 = 148;
/// `KVM_CAP_HYPERV_ENLIGHTENED_VMCS`.
pub const KVM_CAP_HYPERV_ENLIGHTENED_VMCS: u32 = 163;
/// `KVM_CAP_EXCEPTION_PAYLOAD`.
pub const KVM_CAP_EXCEPTION_PAYLOAD: u32 = 164;
/// `KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2`.
pub const KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2: u32 = 168;
/// `KVM_CAP_HYPERV_DIRECT_TLBFLUSH`.
pub const KVM_CAP_HYPERV_DIRECT_TLBFLUSH: u32 = 175;
/// `KVM_CAP_X86_USER_SPACE_MSR`.
pub const KVM_CAP_X86_USER_SPACE_MSR: u32 = 188;
/// `KVM_CAP_X86_BUS_LOCK_EXIT`.
pub const KVM_CAP_X86_BUS_LOCK_EXIT: u32 = 193;
/// `KVM_CAP_HYPERV_ENFORCE_CPUID`.
pub const KVM_CAP_HYPERV_ENFORCE_CPUID: u32 = 199;
/// `KVM_CAP_DISABLE_QUIRKS`.
pub const KVM_CAP_DISABLE_QUIRKS: u32 = 116;
/// `KVM_CAP_DISABLE_QUIRKS2`.
pub const KVM_CAP_DISABLE_QUIRKS2: u32 = 213;
/// `KVM_CAP_X86_TRIPLE_FAULT_EVENT`.
pub const KVM_CAP_X86_TRIPLE_FAULT_EVENT: u32 = 218;
/// `KVM_CAP_X86_NOTIFY_VMEXIT`.
pub const KVM_CAP_X86_NOTIFY_VMEXIT: u32 = 219;

/// `KVM_MP_STATE_*` by name.
pub fn mp_state_name(mp_state: u32) -> String {
    match mp_state {
        0 => "runnable".into(),
        1 => "uninitialized".into(),
        2 => "init_received".into(),
        3 => "halted".into(),
        4 => "sipi_received".into(),
        n => format!("{n}"),
    }
}

/// `Sipi::from` when the sender is unknown.
pub const SIPI_FROM_UNKNOWN: u32 = u32::MAX;

/// The registers of a RESET or INIT state that a capture saw; `None` is
/// unknown. Tracepoint captures see none of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KnownState {
    pub rip: Option<u64>,
    pub cs_selector: Option<u16>,
    pub cs_base: Option<u64>,
    pub rdx: Option<u64>,
    pub cr0: Option<u64>,
    pub apic_base: Option<u64>,
    pub mp_state: Option<u32>,
}

impl KnownState {
    /// Nothing known.
    pub const UNKNOWN: KnownState = KnownState {
        rip: None,
        cs_selector: None,
        cs_base: None,
        rdx: None,
        cr0: None,
        apic_base: None,
        mp_state: None,
    };

    pub fn is_unknown(&self) -> bool {
        *self == KnownState::UNKNOWN
    }
}

/// How a capture tied a thread to its vCPU (`VcpuThread`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VcpuIdentity {
    /// The recorder's own VMM: it created the vCPU on this thread.
    Recorder,
    /// The VMM's thread-name convention (`CPU N/KVM`, `fc_vcpu N`, `vcpuN`,
    /// `crosvm_vcpuN`): docs/vmm-threads.md.
    ThreadName,
    /// `vcpu_id` of the kernel's `kvm_entry`/`kvm_exit` lines.
    KvmEntry,
    /// The VMM's own `KVM_CREATE_VCPU`/vCPU ioctls, seen by the ioctl tap.
    IoctlTap,
    /// A guess: vCPUs numbered in the order their threads' first KVM event
    /// appeared (no name convention matched, no `vcpu_id` in the capture).
    FirstSeen,
    /// The vCPU fd of the `KVM_RUN` the thread was in
    /// (`/proc/PID/task/TID/syscall`, fd link `anon_inode:kvm-vcpu:N`).
    RunSyscall,
}

/// The kind of an event, for statistics and filters (`stats --json` `by_kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    MsrRead,
    MsrWrite,
    Monitor,
    Mwait,
    Shutdown,
    Reset,
    Init,
    Sipi,
    Ipi,
    Cpuid,
    QuirksDisabled,
    MsrFilter,
    UserSpaceMsr,
    SetupMce,
    Io,
    Exception,
    Halt,
    RawExit,
    Lost,
    End,
    KernelReset,
    KernelInit,
    VcpuThread,
    VmmState,
    CapEnabled,
}

impl EventKind {
    pub const ALL: [EventKind; 25] = [
        EventKind::MsrRead,
        EventKind::MsrWrite,
        EventKind::Monitor,
        EventKind::Mwait,
        EventKind::Shutdown,
        EventKind::Reset,
        EventKind::Init,
        EventKind::Sipi,
        EventKind::Ipi,
        EventKind::Cpuid,
        EventKind::QuirksDisabled,
        EventKind::MsrFilter,
        EventKind::UserSpaceMsr,
        EventKind::SetupMce,
        EventKind::Io,
        EventKind::Exception,
        EventKind::Halt,
        EventKind::RawExit,
        EventKind::Lost,
        EventKind::End,
        EventKind::KernelReset,
        EventKind::KernelInit,
        EventKind::VcpuThread,
        EventKind::VmmState,
        EventKind::CapEnabled,
    ];

    /// The snake_case name used in JSON and on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            EventKind::MsrRead => "msr_read",
            EventKind::MsrWrite => "msr_write",
            EventKind::Monitor => "monitor",
            EventKind::Mwait => "mwait",
            EventKind::Shutdown => "shutdown",
            EventKind::Reset => "reset",
            EventKind::Init => "init",
            EventKind::Sipi => "sipi",
            EventKind::Ipi => "ipi",
            EventKind::Cpuid => "cpuid",
            EventKind::QuirksDisabled => "quirks_disabled",
            EventKind::MsrFilter => "msr_filter",
            EventKind::UserSpaceMsr => "user_space_msr",
            EventKind::SetupMce => "setup_mce",
            EventKind::Io => "io",
            EventKind::Exception => "exception",
            EventKind::Halt => "halt",
            EventKind::RawExit => "raw_exit",
            EventKind::Lost => "lost",
            EventKind::End => "end",
            EventKind::KernelReset => "kernel_reset",
            EventKind::KernelInit => "kernel_init",
            EventKind::VcpuThread => "vcpu_thread",
            EventKind::VmmState => "vmm_state",
            EventKind::CapEnabled => "cap_enabled",
        }
    }
}

// Every record is moved through the decoder's batch, the reader's iterator and
// the replay batch: a large variant slows decode and replay for all of them.
const _: () = assert!(std::mem::size_of::<Event>() <= 40);

impl Event {
    /// An `MsrRead` (`value` None) or `MsrWrite`: the one place that builds an
    /// MSR access from an exit or a decoded record, whichever it is.
    pub fn msr_access(
        index: u32,
        value: Option<u64>,
        origin: Origin,
        outcome: MsrOutcome,
        decided_by: DecidedBy,
        capture: Option<MsrExitReason>,
    ) -> Event {
        match value {
            None => Event::MsrRead {
                index,
                origin,
                outcome,
                decided_by,
                capture,
            },
            Some(value) => Event::MsrWrite {
                index,
                value,
                origin,
                outcome,
                decided_by,
                capture,
            },
        }
    }

    pub fn kind(&self) -> EventKind {
        match self {
            Event::MsrRead { .. } => EventKind::MsrRead,
            Event::MsrWrite { .. } => EventKind::MsrWrite,
            Event::Monitor { .. } => EventKind::Monitor,
            Event::Mwait { .. } => EventKind::Mwait,
            Event::Shutdown { .. } => EventKind::Shutdown,
            Event::Reset { .. } => EventKind::Reset,
            Event::Init { .. } => EventKind::Init,
            Event::Sipi { .. } => EventKind::Sipi,
            Event::Ipi { .. } => EventKind::Ipi,
            Event::Cpuid { .. } => EventKind::Cpuid,
            Event::QuirksDisabled { .. } => EventKind::QuirksDisabled,
            Event::MsrFilter { .. } => EventKind::MsrFilter,
            Event::UserSpaceMsr { .. } => EventKind::UserSpaceMsr,
            Event::SetupMce { .. } => EventKind::SetupMce,
            Event::Io { .. } => EventKind::Io,
            Event::Exception { .. } => EventKind::Exception,
            Event::Halt => EventKind::Halt,
            Event::RawExit { .. } => EventKind::RawExit,
            Event::Lost { .. } => EventKind::Lost,
            Event::End { .. } => EventKind::End,
            Event::KernelReset { .. } => EventKind::KernelReset,
            Event::KernelInit { .. } => EventKind::KernelInit,
            Event::VcpuThread { .. } => EventKind::VcpuThread,
            Event::VmmState { .. } => EventKind::VmmState,
            Event::CapEnabled { .. } => EventKind::CapEnabled,
        }
    }

    /// Who decided this event's outcome, for events that have one.
    pub fn decided_by(&self) -> Option<DecidedBy> {
        match self {
            Event::MsrRead { decided_by, .. }
            | Event::MsrWrite { decided_by, .. }
            | Event::Monitor { decided_by, .. }
            | Event::Mwait { decided_by, .. }
            | Event::Shutdown { decided_by, .. }
            | Event::Reset { decided_by, .. }
            | Event::Init { decided_by, .. } => Some(*decided_by),
            Event::KernelReset { .. } | Event::KernelInit { .. } => Some(DecidedBy::Kernel),
            _ => None,
        }
    }
}
