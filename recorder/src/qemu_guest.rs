//! The QEMU guest (`kvmtrace guest qemu -o guest.elf`): one small file that QEMU
//! boots with `-kernel` and that our own VMM runs with `record --payload`.
//!
//! The file is a 64-bit ELF (one `PT_LOAD` of the whole file at [`LOAD_ADDR`],
//! entry = the long-mode entry our VMM uses) that also carries a multiboot v1
//! header with the "address fields" flag (bit 16). QEMU's multiboot loader refuses
//! 64-bit ELF images but loads any file by those fields, so it copies the same
//! bytes to the same address and starts [`ENTRY32`] in 32-bit protected mode
//! (EAX = 0x2badb002). From there a 32-bit stub builds identity-mapped 2 MiB page
//! tables for the low 4 GiB (the xAPIC page uncached), a GDT, enables long mode
//! and far-jumps to the 64-bit code, which sets up its own IDT (64-bit gates:
//! a 32-bit `IRET` is not emulated on the `kvm_pvm` host, HOST.md).
//!
//! Every exception the guest does not expect ends the run with status
//! [`STATUS_EXCEPTION`] | vector; a `#GP` (the refused RDMSR/WRMSR) is skipped
//! (all faulting instructions are the 2-byte RDMSR/WRMSR) and counted in R15 =
//! vector + 1, the convention of [`crate::layout`].
//!
//! What it does, in order (the kernel decides every outcome; no MONITOR/MWAIT,
//! which ends a QEMU run on this host with an emulation failure):
//! - section A, under both VMMs: IA32_FEAT_CTL read and write, MISC_ENABLE read,
//!   bit 18 set and cleared, the APIC base, x2APIC MSRs with x2APIC off (refused:
//!   `#GP`), EFER and PAT reads;
//! - section B, under QEMU only (needs the in-kernel LAPIC and QEMU's MCE setup):
//!   AP startup through the xAPIC ICR (INIT, SIPI to APIC ID 1, the AP writes a
//!   flag from real mode), the APIC base to x2APIC, x2APIC registers read and
//!   written (legal and illegal), INIT + SIPI through the x2APIC ICR MSR, the
//!   invalid x2APIC -> xAPIC transition, back to xAPIC, then the MCE banks (good
//!   and bad MCi_CTL/STATUS writes, HWCR[18], the bank beyond MCG_CAP's count).
//!
//! It ends through `isa-debug-exit` at port [`DEBUG_EXIT_PORT`] under QEMU (exit
//! status `(status << 1) | 1`, so success is 1) and `out DONE, status` under our
//! VMM. Status bits: [`STATUS_AP_XAPIC`], [`STATUS_AP_X2APIC`] (the AP did not
//! start), [`STATUS_EXCEPTION`].

use iced_x86::BlockEncoderOptions;
use iced_x86::IcedError;
use iced_x86::code_asm::*;

use crate::layout::ports;

/// Where the whole file is loaded (QEMU and our VMM alike).
pub const LOAD_ADDR: u64 = 0x10_0000;
/// The multiboot header's file offset (inside the first 8 KiB, 4-aligned).
pub const MULTIBOOT_OFFSET: u64 = 0x80;
/// The 32-bit multiboot entry.
pub const ENTRY32: u64 = LOAD_ADDR + 0x200;
/// The 64-bit code; its first instruction is the entry from [`ENTRY32`].
pub const CODE64: u64 = LOAD_ADDR + 0x1000;
/// Scratch memory the guest builds at run time (zeroed by the loaders: it is the
/// multiboot "bss" and the ELF segment's `p_memsz` tail).
pub const GDT: u64 = LOAD_ADDR + 0x1_0000;
pub const GDTR: u64 = GDT + 0x100;
pub const IDT: u64 = LOAD_ADDR + 0x1_1000;
pub const IDTR: u64 = IDT + 0x1000 - 0x10;
pub const PML4: u64 = LOAD_ADDR + 0x2_0000;
pub const PDPT: u64 = PML4 + 0x1000;
pub const PD: u64 = PML4 + 0x2000;
/// Top of the BSP stack under QEMU (our VMM gives its own).
pub const STACK_TOP: u64 = LOAD_ADDR + 0x3_0000;
/// End of the memory the image occupies.
pub const IMAGE_END: u64 = STACK_TOP;
/// The AP's real-mode start page (SIPI vector 0x08) and the flag it sets.
pub const SIPI_VECTOR: u8 = 0x08;
pub const TRAMPOLINE: u64 = (SIPI_VECTOR as u64) << 12;
pub const AP_FLAG: u64 = TRAMPOLINE + 0xf00;
pub const AP_MARK: u32 = 0x5151;
/// `-device isa-debug-exit,iobase=0xf4,iosize=0x04`.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;
/// QEMU's exit status for a guest status of 0: `(0 << 1) | 1`.
pub const QEMU_EXIT_OK: i32 = 1;
pub const STATUS_AP_XAPIC: u32 = 1 << 0;
pub const STATUS_AP_X2APIC: u32 = 1 << 1;
/// Section C: an interrupt never reached its handler.
pub const STATUS_IPI: u32 = 1 << 2;
/// Section C (QEMU): the x2APIC self-IPI rounds (each an ICR or SELF_IPI
/// write and the handler's EOI).
pub const IPI_ROUNDS: u32 = 300;
/// Section C vectors: fixed IPI, timer; the NMI handler counts too.
pub const V_IPI: u8 = 0x40;
pub const V_TIMER: u8 = 0x41;
/// Interrupt counters (dwords: IPI, timer, NMI), in the scratch memory.
pub const COUNTERS: u64 = GDT + 0x200;
/// Where the 32-bit entry saves the multiboot information pointer (EBX).
pub const MBI_SAVE: u64 = GDT + 0x300;
/// QEMU `-append init-bsp` (QEMU passes "<kernel> init-bsp"): section D
/// instead of the rest (the BSP INITs
/// itself in x2APIC mode; run without `-no-reboot`).
pub const CMDLINE_INIT_BSP: &str = "init-bsp";
/// The CMOS byte section D marks its first boot in (survives QEMU's reset).
const CMOS_MARK_REG: u32 = 0x7e;
const CMOS_MARK: u32 = 0x5a;
/// Section D: the second boot did not see xAPIC mode (bit), or the INIT
/// never restarted the BSP.
pub const STATUS_INIT_BSP: u32 = 1 << 3;
/// Gates in the IDT (exceptions, then up to the section C vectors).
const IDT_GATES: u32 = 0x42;
/// An unexpected exception: this bit plus the vector.
pub const STATUS_EXCEPTION: u32 = 0x80;
/// How long the BSP waits for the AP (rounds of a 5-instruction loop; the
/// emulator runs ~1 M instructions/s).
pub const AP_SPIN: u32 = 400_000;
pub const XAPIC_BASE: u64 = 0xfee0_0000;

const MB_MAGIC: u32 = 0x1bad_b002;
const MB_FLAGS: u32 = 1 << 16;
const ELF_HEADER: u64 = 64;
const PHDR_SIZE: u64 = 56;

const MSR_FEAT_CTL: u32 = 0x3a;
const MSR_APIC_BASE: u32 = 0x1b;
const MSR_MISC_ENABLE: u32 = 0x1a0;
const MSR_PAT: u32 = 0x277;
const MSR_EFER: u32 = 0xc000_0080;
const MSR_HWCR: u32 = 0xc001_0015;
const MSR_MCG_CAP: u32 = 0x179;
const MSR_MCG_STATUS: u32 = 0x17a;
const MSR_MCG_CTL: u32 = 0x17b;
const APIC_EN: u64 = 1 << 11;
const APIC_EXTD: u64 = 1 << 10;

/// MSR accesses of section A, run under both VMMs: the outcomes (refused or
/// not) do not depend on the VM's configuration. `(index, Some(value))` is a
/// write, `(index, None)` a read.
pub const SECTION_A: &[(u32, Option<u64>)] = &[
    (MSR_FEAT_CTL, None),
    (MSR_FEAT_CTL, Some(0)),
    (MSR_FEAT_CTL, Some(5)),
    (MSR_MISC_ENABLE, None),
    (MSR_APIC_BASE, None),
    (0x802, None),
    (0x808, Some(0)),
    (0x830, None),
    (0x80b, Some(0)),
    (MSR_EFER, None),
    (MSR_PAT, None),
    (0x4b56_4d00, None),
    (0x474f_4f00, None),
];

/// Why the guest could not be built (an assembler error: a bug, not input).
#[derive(Debug, thiserror::Error)]
pub enum QemuGuestError {
    #[error("assembling the QEMU guest")]
    Assemble(#[from] IcedError),
    #[error("the QEMU guest's {0} does not fit its layout")]
    Layout(&'static str),
}

type R = Result<(), IcedError>;

/// The guest file's bytes (deterministic).
pub fn build() -> Result<Vec<u8>, QemuGuestError> {
    let stub = entry32()?;
    let (code, vmm_entry) = code64()?;
    let mut file = vec![0u8; (CODE64 - LOAD_ADDR) as usize];
    let stub_at = (ENTRY32 - LOAD_ADDR) as usize;
    if stub_at + stub.len() > file.len() {
        return Err(QemuGuestError::Layout("32-bit stub"));
    }
    file[stub_at..stub_at + stub.len()].copy_from_slice(&stub);
    file.extend_from_slice(&code);
    let file_len = file.len() as u64;
    if LOAD_ADDR + file_len > GDT {
        return Err(QemuGuestError::Layout("64-bit code"));
    }
    // ELF header.
    let mut h = Vec::with_capacity(128);
    h.extend_from_slice(b"\x7fELF\x02\x01\x01\x00");
    h.extend_from_slice(&[0; 8]);
    h.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    h.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    h.extend_from_slice(&1u32.to_le_bytes());
    h.extend_from_slice(&vmm_entry.to_le_bytes());
    h.extend_from_slice(&ELF_HEADER.to_le_bytes()); // e_phoff
    h.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    h.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    h.extend_from_slice(&(ELF_HEADER as u16).to_le_bytes());
    h.extend_from_slice(&(PHDR_SIZE as u16).to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    h.extend_from_slice(&64u16.to_le_bytes()); // e_shentsize
    h.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    h.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
    // The one PT_LOAD: the whole file at LOAD_ADDR, zeros up to IMAGE_END.
    h.extend_from_slice(&1u32.to_le_bytes());
    h.extend_from_slice(&7u32.to_le_bytes()); // RWX
    h.extend_from_slice(&0u64.to_le_bytes()); // p_offset
    h.extend_from_slice(&LOAD_ADDR.to_le_bytes());
    h.extend_from_slice(&LOAD_ADDR.to_le_bytes());
    h.extend_from_slice(&file_len.to_le_bytes());
    h.extend_from_slice(&(IMAGE_END - LOAD_ADDR).to_le_bytes());
    h.extend_from_slice(&0x1000u64.to_le_bytes());
    file[..h.len()].copy_from_slice(&h);
    // Multiboot v1 header with the address fields.
    let mb = [
        MB_MAGIC,
        MB_FLAGS,
        0u32.wrapping_sub(MB_MAGIC.wrapping_add(MB_FLAGS)),
        (LOAD_ADDR + MULTIBOOT_OFFSET) as u32, // header_addr
        LOAD_ADDR as u32,                      // load_addr
        (LOAD_ADDR + file_len) as u32,         // load_end_addr
        IMAGE_END as u32,                      // bss_end_addr
        ENTRY32 as u32,                        // entry_addr
    ];
    let at = MULTIBOOT_OFFSET as usize;
    for (i, v) in mb.iter().enumerate() {
        file[at + 4 * i..at + 4 * i + 4].copy_from_slice(&v.to_le_bytes());
    }
    Ok(file)
}

/// The 32-bit multiboot entry: page tables, GDT, long mode, far jump to CODE64.
fn entry32() -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(32)?;
    a.cli()?;
    // The multiboot information pointer (section D reads the command line).
    a.mov(dword_ptr(MBI_SAVE as u32), ebx)?;
    // Zero PML4, PDPT and the four PDs.
    a.mov(edi, PML4 as u32)?;
    a.xor(eax, eax)?;
    a.mov(ecx, 6 * 1024u32)?;
    a.rep().stosd()?;
    a.mov(dword_ptr(PML4 as u32), (PDPT | 3) as u32)?;
    for i in 0..4u32 {
        a.mov(
            dword_ptr(PDPT as u32 + 8 * i),
            (PD + 0x1000 * u64::from(i)) as u32 | 3,
        )?;
    }
    // PD[j] = j * 2 MiB | PS | RW | P, j in 0..2048 (4 GiB).
    let mut fill = a.create_label();
    a.xor(ecx, ecx)?;
    a.mov(eax, 0x83u32)?;
    a.set_label(&mut fill)?;
    a.mov(dword_ptr(ecx * 8 + PD as u32), eax)?;
    a.add(eax, 0x20_0000u32)?;
    a.inc(ecx)?;
    a.cmp(ecx, 2048u32)?;
    a.jne(fill)?;
    // The xAPIC page uncached (PCD | PWT).
    a.or(
        dword_ptr(PD as u32 + 8 * (XAPIC_BASE >> 21) as u32),
        0x18u32,
    )?;
    // GDT: null, 64-bit code (0x08), data (0x10); GDTR.
    let gdt: [u64; 3] = [0, 0x00af_9a00_0000_ffff, 0x00cf_9200_0000_ffff];
    for (i, d) in gdt.iter().enumerate() {
        let at = GDT as u32 + 8 * i as u32;
        a.mov(dword_ptr(at), *d as u32)?;
        a.mov(dword_ptr(at + 4), (*d >> 32) as u32)?;
    }
    a.mov(word_ptr(GDTR as u32), (8 * gdt.len() - 1) as u32)?;
    a.mov(dword_ptr(GDTR as u32 + 2), GDT as u32)?;
    a.lgdt(ptr(GDTR as u32))?;
    // PAE, CR3, EFER.LME, paging.
    a.mov(eax, cr4)?;
    a.or(eax, 0x20u32)?;
    a.mov(cr4, eax)?;
    a.mov(eax, PML4 as u32)?;
    a.mov(cr3, eax)?;
    a.mov(ecx, MSR_EFER)?;
    a.rdmsr()?;
    a.or(eax, 0x100u32)?;
    a.wrmsr()?;
    a.mov(eax, cr0)?;
    a.or(eax, 0x8000_0001u32)?;
    a.mov(cr0, eax)?;
    // Far return into the 64-bit code segment.
    a.push(0x08u32)?;
    a.push(CODE64 as u32)?;
    a.retf()?;
    a.assemble(ENTRY32)
}

/// `RDMSR(index)` with EDX:EAX zeroed first.
fn rdmsr(a: &mut CodeAssembler, index: u32) -> R {
    a.xor(eax, eax)?;
    a.xor(edx, edx)?;
    a.mov(ecx, index)?;
    a.rdmsr()
}

/// `WRMSR(index, value)`.
fn wrmsr(a: &mut CodeAssembler, index: u32, value: u64) -> R {
    a.mov(ecx, index)?;
    a.mov(eax, value as u32)?;
    a.mov(edx, (value >> 32) as u32)?;
    a.wrmsr()
}

/// Read-modify-write of an MSR: set `set`, clear `clear`.
fn rmw(a: &mut CodeAssembler, index: u32, set: u64, clear: u64) -> R {
    rdmsr(a, index)?;
    a.shl(rdx, 32u32)?;
    a.or(rax, rdx)?;
    if set != 0 {
        a.mov(rdx, set)?;
        a.or(rax, rdx)?;
    }
    if clear != 0 {
        a.mov(rdx, !clear)?;
        a.and(rax, rdx)?;
    }
    a.mov(rdx, rax)?;
    a.shr(rdx, 32u32)?;
    a.mov(ecx, index)?;
    a.wrmsr()
}

/// `out REPORT, eax` (our VMM records it; QEMU ignores the port).
fn report_eax(a: &mut CodeAssembler) -> R {
    a.mov(dx, ports::REPORT as u32)?;
    a.out(dx, eax)
}

/// Copy the AP's real-mode trampoline to [`TRAMPOLINE`] and clear its flag.
fn copy_trampoline(a: &mut CodeAssembler) -> R {
    let mut t = CodeAssembler::new(16)?;
    let mut again = t.create_label();
    t.cli()?;
    t.xor(ax, ax)?;
    t.mov(ds, ax)?;
    t.mov(dword_ptr(AP_FLAG as u32), AP_MARK)?;
    t.set_label(&mut again)?;
    t.hlt()?;
    t.jmp(again)?;
    let mut bytes = t.assemble(0)?;
    bytes.resize(bytes.len().div_ceil(4) * 4, 0x90);
    for (i, w) in bytes.chunks_exact(4).enumerate() {
        let v = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        a.mov(rsi, TRAMPOLINE + 4 * i as u64)?;
        a.mov(dword_ptr(rsi), v)?;
    }
    a.mov(rsi, AP_FLAG)?;
    a.mov(dword_ptr(rsi), 0u32)
}

/// Wait (bounded) for the AP's flag; set `fail` in R14 if it never came.
fn wait_ap(a: &mut CodeAssembler, fail: u32) -> R {
    let mut top = a.create_label();
    let mut ok = a.create_label();
    let mut out = a.create_label();
    a.mov(rsi, AP_FLAG)?;
    a.mov(ebx, AP_SPIN)?;
    a.set_label(&mut top)?;
    a.cmp(dword_ptr(rsi), AP_MARK)?;
    a.je(ok)?;
    a.pause()?;
    a.dec(ebx)?;
    a.jnz(top)?;
    a.or(r14d, fail)?;
    a.jmp(out)?;
    a.set_label(&mut ok)?;
    a.mov(eax, dword_ptr(rsi))?;
    report_eax(a)?;
    a.set_label(&mut out)?;
    a.nop()
}

/// The 64-bit code and the address of the entry our VMM uses.
fn code64() -> Result<(Vec<u8>, u64), IcedError> {
    let mut a = CodeAssembler::new(64)?;
    let mut vmm_entry = a.create_label();
    let mut common = a.create_label();
    let mut ap_vmm = a.create_label();
    let mut finish = a.create_label();
    let mut generic = a.create_label();
    let mut stubs: Vec<CodeLabel> = (0..32).map(|_| a.create_label()).collect();
    // Section C handlers: fixed IPI, timer (count, EOI), NMI (count).
    let mut handlers: [CodeLabel; 3] = [a.create_label(), a.create_label(), a.create_label()];

    // QEMU: from ENTRY32, in long mode with CS = 0x08.
    a.mov(eax, 0x10u32)?;
    a.mov(ds, ax)?;
    a.mov(es, ax)?;
    a.mov(ss, ax)?;
    a.mov(rsp, STACK_TOP)?;
    a.mov(r13d, 1u32)?;
    a.xor(edi, edi)?;
    a.jmp(common)?;
    // Our VMM: RDI = vCPU index, RSP set, flat GDT with the same selectors.
    a.set_label(&mut vmm_entry)?;
    a.xor(r13d, r13d)?;
    a.set_label(&mut common)?;
    a.test(edi, edi)?;
    a.jnz(ap_vmm)?;
    a.xor(r14d, r14d)?;
    a.xor(r15d, r15d)?;

    // IDT: 32 interrupt gates (64-bit, CS 0x08, DPL 0) to the stubs.
    for (i, stub) in stubs.iter().enumerate() {
        let gate = IDT + 16 * i as u64;
        a.lea(rax, ptr(*stub))?;
        a.mov(rsi, gate)?;
        a.mov(word_ptr(rsi), ax)?;
        a.mov(word_ptr(rsi + 2), 0x08u32)?;
        a.mov(word_ptr(rsi + 4), 0x8e00u32)?;
        a.shr(rax, 16u32)?;
        a.mov(word_ptr(rsi + 6), ax)?;
        a.shr(rax, 16u32)?;
        a.mov(dword_ptr(rsi + 8), eax)?;
        a.mov(dword_ptr(rsi + 12), 0u32)?;
    }
    for (vector, label) in [
        (u64::from(V_IPI), handlers[0]),
        (u64::from(V_TIMER), handlers[1]),
        (2, handlers[2]),
    ] {
        gate(&mut a, vector, label)?;
    }
    a.mov(rsi, IDTR)?;
    a.mov(word_ptr(rsi), IDT_GATES * 16 - 1)?;
    a.mov(rax, IDT)?;
    a.mov(qword_ptr(rsi + 2), rax)?;
    a.lidt(ptr(rsi))?;

    // QEMU with `-append init-bsp`: section D only.
    let mut not_d = a.create_label();
    a.test(r13d, r13d)?;
    a.jz(not_d)?;
    a.mov(rsi, MBI_SAVE)?;
    a.mov(esi, dword_ptr(rsi))?;
    a.test(esi, esi)?;
    a.jz(not_d)?;
    a.test(dword_ptr(rsi), 4u32)?; // MULTIBOOT_INFO_CMDLINE
    a.jz(not_d)?;
    // QEMU passes "<kernel file> <append>": look for the word anywhere in
    // the first 256 bytes (stop at the NUL).
    a.mov(esi, dword_ptr(rsi + 16))?;
    a.mov(ecx, 256u32)?;
    a.mov(rdx, u64::from_le_bytes(*b"init-bsp"))?;
    let mut scan = a.create_label();
    let mut found = a.create_label();
    a.set_label(&mut scan)?;
    a.cmp(byte_ptr(rsi), 0u32)?;
    a.je(not_d)?;
    a.cmp(qword_ptr(rsi), rdx)?;
    a.je(found)?;
    a.inc(rsi)?;
    a.dec(ecx)?;
    a.jnz(scan)?;
    a.jmp(not_d)?;
    a.set_label(&mut found)?;
    section_d(&mut a)?;
    a.jmp(finish)?;
    a.set_label(&mut not_d)?;

    // Section A: under both VMMs.
    for &(index, value) in SECTION_A {
        match value {
            None => rdmsr(&mut a, index)?,
            Some(v) => wrmsr(&mut a, index, v)?,
        }
    }
    rmw(&mut a, MSR_MISC_ENABLE, 1 << 18, 0)?;
    rdmsr(&mut a, MSR_MISC_ENABLE)?;
    rmw(&mut a, MSR_MISC_ENABLE, 0, 1 << 18)?;
    a.mov(eax, r15d)?;
    report_eax(&mut a)?;
    a.test(r13d, r13d)?;
    a.jz(finish)?;

    // Section B: QEMU only. AP startup through the xAPIC ICR.
    copy_trampoline(&mut a)?;
    a.mov(rbx, XAPIC_BASE)?;
    a.mov(dword_ptr(rbx + 0xf0), 0x1ffu32)?; // SVR: software-enable
    for icr in [0x4500u32, 0x4600 | u32::from(SIPI_VECTOR)] {
        a.mov(dword_ptr(rbx + 0x310), 1u32 << 24)?;
        a.mov(dword_ptr(rbx + 0x300), icr)?;
    }
    wait_ap(&mut a, STATUS_AP_XAPIC)?;
    // x2APIC on, its registers, INIT + SIPI through the ICR MSR.
    rmw(&mut a, MSR_APIC_BASE, APIC_EN | APIC_EXTD, 0)?;
    rdmsr(&mut a, MSR_APIC_BASE)?;
    for index in [
        0x802, 0x803, 0x808, 0x80a, 0x80d, 0x80f, 0x830, 0x832, 0x838,
    ] {
        rdmsr(&mut a, index)?;
    }
    // Write-only, read-only, reserved and the x2APIC-invalid DFR.
    for index in [0x80b, 0x83f, 0x804, 0x80e, 0x831] {
        rdmsr(&mut a, index)?;
    }
    for (index, value) in [
        (0x808, 0),             // TPR
        (0x80b, 0),             // EOI
        (0x802, 0),             // ID: read-only
        (0x803, 0),             // version: read-only
        (0x80d, 0),             // LDR: read-only in x2APIC mode
        (0x80f, 0x1ff),         // SVR
        (0x832, 0x1_0000),      // LVT timer masked
        (0x838, 0),             // timer initial count
        (0x83e, 0),             // divide config
        (0x804, 0),             // reserved
        (0x830, 0x4_0000_00ff), // ICR with reserved bits (no shorthand, vector 0xff)
    ] {
        wrmsr(&mut a, index, value)?;
    }
    copy_trampoline(&mut a)?;
    wrmsr(&mut a, 0x830, 1 << 32 | 0x4500)?;
    wrmsr(&mut a, 0x830, 1 << 32 | 0x4600 | u64::from(SIPI_VECTOR))?;
    wait_ap(&mut a, STATUS_AP_X2APIC)?;
    // x2APIC -> xAPIC directly is invalid; then off and back to xAPIC.
    rmw(&mut a, MSR_APIC_BASE, 0, APIC_EXTD)?;
    rmw(&mut a, MSR_APIC_BASE, 0, APIC_EN | APIC_EXTD)?;
    rmw(&mut a, MSR_APIC_BASE, APIC_EN, 0)?;
    rdmsr(&mut a, MSR_APIC_BASE)?;
    rdmsr(&mut a, 0x802)?;
    // MCE banks as QEMU set them up.
    for index in [MSR_MCG_CAP, MSR_MCG_STATUS, MSR_MCG_CTL, 0x400, 0x401] {
        rdmsr(&mut a, index)?;
    }
    for (index, value) in [
        (0x400u32, 0u64),
        (0x400, !0),
        (0x400, 1),
        (0x400, !1),
        (0x400, !0),
        (0x401, 0),
        (0x401, 1),
    ] {
        wrmsr(&mut a, index, value)?;
    }
    rmw(&mut a, MSR_HWCR, 1 << 18, 0)?;
    wrmsr(&mut a, 0x401, 1)?;
    rdmsr(&mut a, 0x401)?;
    wrmsr(&mut a, 0x401, 0)?;
    rmw(&mut a, MSR_HWCR, 0, 1 << 18)?;
    for index in [0x424u32, 0x425, 0x428, 0x429] {
        rdmsr(&mut a, index)?;
    }
    wrmsr(&mut a, 0x428, 0)?;
    wrmsr(&mut a, MSR_MCG_STATUS, 0)?;
    wrmsr(&mut a, MSR_MCG_CAP, 0)?;
    a.mov(eax, r15d)?;
    report_eax(&mut a)?;
    section_c(&mut a)?;

    a.set_label(&mut finish)?;
    exit(&mut a, r14d)?;
    // Other vCPUs under our VMM: nothing to do.
    a.set_label(&mut ap_vmm)?;
    a.xor(r14d, r14d)?;
    exit(&mut a, r14d)?;

    // Section C handlers.
    for (i, label) in handlers.iter_mut().enumerate() {
        a.set_label(label)?;
        a.push(rax)?;
        a.push(rcx)?;
        a.push(rdx)?;
        a.mov(rax, COUNTERS + 4 * i as u64)?;
        a.lock().inc(dword_ptr(rax))?;
        if i < 2 {
            a.mov(ecx, 0x80bu32)?; // EOI
            a.xor(eax, eax)?;
            a.xor(edx, edx)?;
            a.wrmsr()?;
        }
        a.pop(rdx)?;
        a.pop(rcx)?;
        a.pop(rax)?;
        a.iretq()?;
    }
    // Exception stubs: push RAX, EAX = vector, to the common handler.
    for (i, stub) in stubs.iter_mut().enumerate() {
        a.set_label(stub)?;
        a.push(rax)?;
        a.mov(eax, i as u32)?;
        a.jmp(generic)?;
    }
    // #GP: drop RAX and the error code, skip the 2-byte RDMSR/WRMSR, mark R15.
    // Anything else ends the run with STATUS_EXCEPTION | vector.
    let mut other = a.create_label();
    a.set_label(&mut generic)?;
    a.cmp(eax, 13u32)?;
    a.jne(other)?;
    a.pop(rax)?;
    a.add(rsp, 8)?;
    a.add(qword_ptr(rsp), 2)?;
    a.mov(r15d, 14u32)?;
    a.iretq()?;
    a.set_label(&mut other)?;
    a.or(eax, STATUS_EXCEPTION)?;
    exit(&mut a, eax)?;

    let result = a.assemble_options(CODE64, BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS)?;
    let entry = result.label_ip(&vmm_entry)?;
    Ok((result.inner.code_buffer, entry))
}

/// A 64-bit interrupt gate for `vector` to `label`.
fn gate(a: &mut CodeAssembler, vector: u64, label: CodeLabel) -> R {
    a.lea(rax, ptr(label))?;
    a.mov(rsi, IDT + 16 * vector)?;
    a.mov(word_ptr(rsi), ax)?;
    a.mov(word_ptr(rsi + 2), 0x08u32)?;
    a.mov(word_ptr(rsi + 4), 0x8e00u32)?;
    a.shr(rax, 16u32)?;
    a.mov(word_ptr(rsi + 6), ax)?;
    a.shr(rax, 16u32)?;
    a.mov(dword_ptr(rsi + 8), eax)?;
    a.mov(dword_ptr(rsi + 12), 0u32)
}

/// `sti`, wait (bounded) until counter `slot` reaches R12D, `cli`; a timeout
/// sets [`STATUS_IPI`] in R14.
fn wait_counter(a: &mut CodeAssembler, slot: u64) -> R {
    let mut top = a.create_label();
    let mut out = a.create_label();
    let mut ok = a.create_label();
    a.mov(rsi, COUNTERS + 4 * slot)?;
    a.mov(ebx, AP_SPIN)?;
    a.sti()?;
    a.set_label(&mut top)?;
    a.cmp(dword_ptr(rsi), r12d)?;
    a.jae(out)?;
    a.pause()?;
    a.dec(ebx)?;
    a.jnz(top)?;
    a.set_label(&mut out)?;
    a.cli()?;
    a.cmp(dword_ptr(rsi), r12d)?;
    a.jae(ok)?;
    a.or(r14d, STATUS_IPI)?;
    a.set_label(&mut ok)?;
    a.nop()
}

/// Section C (QEMU): the LAPIC the way a unit-test suite's IPI and timer
/// tests drive it, in x2APIC mode (PIC and LINT0 masked first): self-IPIs through the ICR (shorthand
/// self, then the physical ID 0) and SELF_IPI, each taken and EOI'd through
/// 0x80b by the handler; NMI to itself; the one-shot timer and, where the
/// CPUID has it, TSC-deadline mode with IA32_TSC_DEADLINE; INIT and SIPI of
/// the AP once more (it halts in real mode again).
fn section_c(a: &mut CodeAssembler) -> R {
    // Firmware left the 8259 PIC on LINT0 (ExtINT) with the timer at vector
    // 8: mask both PICs, and LINT0.
    a.mov(al, 0xffu32)?;
    a.out(0x21u32, al)?;
    a.out(0xa1u32, al)?;
    rmw(a, MSR_APIC_BASE, APIC_EN | APIC_EXTD, 0)?;
    wrmsr(a, 0x80f, 0x1ff)?;
    wrmsr(a, 0x835, 0x1_0700)?;
    rdmsr(a, 0x835)?;
    a.xor(r12d, r12d)?;
    for (icr, msr) in [
        (0x4_4000u64 | u64::from(V_IPI), 0x830u32),
        (0x4000 | u64::from(V_IPI), 0x830),
        (u64::from(V_IPI), 0x83f),
    ] {
        let mut top = a.create_label();
        a.mov(r11d, IPI_ROUNDS)?;
        a.set_label(&mut top)?;
        a.inc(r12d)?;
        wrmsr(a, msr, icr)?;
        wait_counter(a, 0)?;
        a.dec(r11d)?;
        a.jnz(top)?;
    }
    // NMI to itself (shorthand self, assert).
    a.mov(r12d, 1u32)?;
    wrmsr(a, 0x830, 0x4_4400)?;
    wait_counter(a, 2)?;
    // One-shot timer, divide by 1.
    a.mov(r12d, 1u32)?;
    wrmsr(a, 0x832, u64::from(V_TIMER))?;
    wrmsr(a, 0x83e, 0xb)?;
    wrmsr(a, 0x838, 0x4000)?;
    wait_counter(a, 1)?;
    rdmsr(a, 0x839)?;
    rdmsr(a, 0x6e0)?;
    // TSC-deadline mode (masked to one-shot without CPUID TSC_DEADLINE):
    // a deadline in the past fires at once where the mode exists.
    wrmsr(a, 0x832, (2 << 17) | u64::from(V_TIMER))?;
    rdmsr(a, 0x832)?;
    rdmsr(a, 0x6e0)?;
    a.rdtsc()?;
    a.mov(ecx, 0x6e0u32)?;
    a.wrmsr()?;
    let mut no_deadline = a.create_label();
    a.mov(eax, 1u32)?;
    a.cpuid()?;
    a.bt(ecx, 24u32)?;
    a.jnc(no_deadline)?;
    a.mov(r12d, 2u32)?;
    wait_counter(a, 1)?;
    a.set_label(&mut no_deadline)?;
    rdmsr(a, 0x6e0)?;
    wrmsr(a, 0x832, 0x1_0000 | u64::from(V_TIMER))?;
    rdmsr(a, 0x6e0)?;
    // TPR through the MSR, then the AP INITed and SIPIed again.
    wrmsr(a, 0x808, 0x20)?;
    rdmsr(a, 0x808)?;
    wrmsr(a, 0x808, 0)?;
    copy_trampoline(a)?;
    wrmsr(a, 0x830, 1 << 32 | 0x4500)?;
    wrmsr(a, 0x830, 1 << 32 | 0x8500)?;
    wrmsr(a, 0x830, 1 << 32 | 0x4600 | u64::from(SIPI_VECTOR))?;
    wait_ap(a, STATUS_AP_X2APIC)?;
    a.mov(eax, r14d)?;
    report_eax(a)
}

/// Section D (QEMU, `-append init-bsp`, without `-no-reboot`): the unit-test
/// suite's "INIT to BSP". First boot: mark CMOS, x2APIC on, INIT itself
/// through the ICR (shorthand self): `kvm_lapic_reset(init_event = true)`
/// keeps x2APIC, the BSP restarts at the reset vector, firmware finds a warm
/// boot and resets the machine, QEMU resets every vCPU (KVM_SET_SREGS:
/// APIC base 0xfee00900) and boots this image again. Second boot: clear the
/// mark, read the APIC base (xAPIC) and an x2APIC register (#GP). R14 gets
/// [`STATUS_INIT_BSP`] if either is not so.
fn section_d(a: &mut CodeAssembler) -> R {
    let mut second = a.create_label();
    let mut out = a.create_label();
    let cmos = |a: &mut CodeAssembler| -> R {
        a.mov(al, CMOS_MARK_REG)?;
        a.out(0x70u32, al)
    };
    cmos(a)?;
    a.in_(al, 0x71u32)?;
    a.cmp(al, CMOS_MARK)?;
    a.je(second)?;
    cmos(a)?;
    a.mov(al, CMOS_MARK)?;
    a.out(0x71u32, al)?;
    rmw(a, MSR_APIC_BASE, APIC_EN | APIC_EXTD, 0)?;
    rdmsr(a, MSR_APIC_BASE)?;
    wrmsr(a, 0x80f, 0x1ff)?;
    rdmsr(a, 0x802)?;
    wrmsr(a, 0x830, 0x4_4500)?;
    // Not reached if the INIT came: wait, then fail.
    a.mov(ebx, AP_SPIN)?;
    let mut spin = a.create_label();
    a.set_label(&mut spin)?;
    a.pause()?;
    a.dec(ebx)?;
    a.jnz(spin)?;
    a.or(r14d, STATUS_INIT_BSP)?;
    a.jmp(out)?;
    a.set_label(&mut second)?;
    cmos(a)?;
    a.xor(eax, eax)?;
    a.out(0x71u32, al)?;
    rdmsr(a, MSR_APIC_BASE)?;
    report_eax(a)?;
    a.and(eax, (APIC_EN | APIC_EXTD) as u32)?;
    a.cmp(eax, APIC_EN as u32)?;
    let mut xapic = a.create_label();
    a.je(xapic)?;
    a.or(r14d, STATUS_INIT_BSP)?;
    a.set_label(&mut xapic)?;
    a.xor(r15d, r15d)?;
    rdmsr(a, 0x802)?;
    a.cmp(r15d, 14u32)?;
    a.je(out)?;
    a.or(r14d, STATUS_INIT_BSP)?;
    a.set_label(&mut out)?;
    a.nop()
}

/// End the run with `status`: isa-debug-exit under QEMU (R13 = 1), `out DONE`
/// under our VMM; halt should either VMM resume the vCPU.
fn exit(a: &mut CodeAssembler, status: AsmRegister32) -> R {
    let mut vmm = a.create_label();
    let mut halt = a.create_label();
    if status != eax {
        a.mov(eax, status)?;
    }
    a.test(r13d, r13d)?;
    a.jz(vmm)?;
    a.mov(dx, DEBUG_EXIT_PORT as u32)?;
    a.out(dx, eax)?;
    a.jmp(halt)?;
    a.set_label(&mut vmm)?;
    a.mov(dx, ports::DONE as u32)?;
    a.out(dx, eax)?;
    a.set_label(&mut halt)?;
    a.cli()?;
    a.hlt()?;
    a.jmp(halt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_a_payload_and_a_multiboot_image() {
        let bytes = build().unwrap();
        assert_eq!(bytes, build().unwrap(), "deterministic");
        let p = crate::payload::parse(std::path::Path::new("guest.elf"), bytes.clone()).unwrap();
        assert_eq!(p.regions.len(), 1);
        assert_eq!(p.regions[0].addr, LOAD_ADDR);
        assert!(p.entry > CODE64);
        // Multiboot: magic, flags, checksum within the first 8 KiB.
        let at = MULTIBOOT_OFFSET as usize;
        let word =
            |i: usize| u32::from_le_bytes(bytes[at + 4 * i..at + 4 * i + 4].try_into().unwrap());
        assert_eq!(word(0), MB_MAGIC);
        assert_eq!(word(0).wrapping_add(word(1)).wrapping_add(word(2)), 0);
        assert_eq!(u64::from(word(7)), ENTRY32);
        assert_eq!(u64::from(word(5)), LOAD_ADDR + bytes.len() as u64);
    }
}
