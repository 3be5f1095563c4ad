//! The guest ABI every payload and built-in scenario runs under: where the VMM
//! puts things in guest memory, which ports mean what, and how a vCPU starts.
//!
//! Guest code runs in 64-bit long mode at CPL0 with interrupts off, on identity-
//! mapped 2 MiB pages covering all guest memory, with a flat GDT and an IDT whose
//! stubs report every exception to the VMM (see [`ports::EXCEPTION`]). RDI holds
//! the vCPU index at entry and RSP the top of that vCPU's stack. After an
//! exception report the VMM resumes the guest at the instruction after the
//! faulting one (it decodes the length with iced-x86), so scenario code can run
//! faulting RDMSR/WRMSR/MONITOR/MWAIT in a straight line. `R15` holds the number of
//! the last exception vector + 1 after a fault was skipped (0 if none since the
//! guest last cleared it), so guest code can branch on it.

/// Default guest memory size.
pub const MEM_SIZE: u64 = 16 << 20;
/// Where the scenario's (or payload's) 64-bit code is loaded.
pub const CODE_ADDR: u64 = 0x10_0000;
/// Largest code image (scenario or flat payload) the layout accepts.
pub const CODE_MAX: u64 = 8 << 20;
/// Free guest memory scenario code may use as data (e.g. a MONITOR line).
pub const DATA_ADDR: u64 = 0x90_0000;
/// Size of the data area.
pub const DATA_SIZE: u64 = 1 << 20;
/// Real-mode trampolines for SIPI targets go below 1 MiB, at `vector << 12`;
/// the VMM keeps pages 0x8000..0x10000 free for them (vectors 0x08..0x0f).
pub const SIPI_PAGE_MIN: u64 = 0x8000;
pub const SIPI_PAGE_MAX: u64 = 0x10000;
/// The xAPIC MMIO page the user-space local APIC answers (ICR low at +0x300,
/// ICR high at +0x310).
pub const XAPIC_BASE: u64 = 0xfee0_0000;

/// I/O ports of the guest ABI (all `out dx, eax` unless noted).
pub mod ports {
    /// The vCPU is done; EAX = status (0 = success).
    pub const DONE: u16 = 0x500;
    /// Run host step number EAX of the scenario (e.g. a `KVM_SET_MSRS`), then resume.
    pub const HOSTCALL: u16 = 0x501;
    /// Report a value (recorded as an `Io` event).
    pub const REPORT: u16 = 0x502;
    /// Used by the VMM's own IDT stubs: an exception vector is being reported.
    pub const EXCEPTION: u16 = 0x503;
    /// Console: one byte (`out dx, al`).
    pub const CONSOLE: u16 = 0x3f8;
}
