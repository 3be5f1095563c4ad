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

/// VMM-owned pages below 1 MiB (guest code must not write them): the page
/// tables identity-map the low 4 GiB with 2 MiB pages (PML4, one PDPT, four PDs;
/// the xAPIC page is mapped uncached so its MMIO reaches the VMM).
pub const PML4_ADDR: u64 = 0x1000;
pub const PDPT_ADDR: u64 = 0x2000;
/// Four page directories, 0x3000..0x7000.
pub const PD_ADDR: u64 = 0x3000;
/// Flat GDT: null, 64-bit code (0x08), data (0x10), 32-bit code (0x18), TSS (0x20).
pub const GDT_ADDR: u64 = 0x7000;
/// 64-bit TSS (no IST; interrupts stay on the current stack at CPL0).
pub const TSS_ADDR: u64 = 0x7800;
/// Selectors of the flat GDT.
pub const CODE64_SEL: u16 = 0x08;
pub const DATA_SEL: u16 = 0x10;
pub const TSS_SEL: u16 = 0x20;
/// IDT (256 gates) and the VMM's exception stubs it points to.
pub const IDT_ADDR: u64 = 0x1_0000;
pub const STUBS_ADDR: u64 = 0x1_1000;
/// Per-vCPU stacks: vCPU `i`'s RSP starts at `STACK_BASE + (i + 1) * STACK_SIZE`.
pub const STACK_BASE: u64 = 0xa0_0000;
pub const STACK_SIZE: u64 = 0x1_0000;
/// Most vCPUs a recording can have (stacks must fit below `MEM_SIZE`).
pub const MAX_VCPUS: u32 = 64;

/// The initial RSP of vCPU `index`.
pub const fn stack_top(index: u32) -> u64 {
    STACK_BASE + (index as u64 + 1) * STACK_SIZE
}

/// I/O ports of the guest ABI (all `out dx, eax` unless noted).
pub mod ports {
    /// The vCPU is done; EAX = status (0 = success).
    pub const DONE: u16 = 0x500;
    /// Run host step number EAX of the scenario (e.g. a `KVM_SET_MSRS`), then resume.
    pub const HOSTCALL: u16 = 0x501;
    /// Report a value (recorded as an `Io` event).
    pub const REPORT: u16 = 0x502;
    /// Used by the VMM's own IDT stubs: an exception vector is being reported.
    /// The stub pushes RAX and RDX, then `out` EAX = vector; the VMM reads the
    /// interrupt frame above them (error code for vectors that push one, then RIP),
    /// recorded as an `Io` event with data = vector, moves the saved RIP past the
    /// faulting instruction and sets R15 = vector + 1; the stub pops and `iretq`s.
    pub const EXCEPTION: u16 = 0x503;
    /// Console: one byte (`out dx, al`).
    pub const CONSOLE: u16 = 0x3f8;
}
