//! Guest memory and the long-mode environment of `layout`: page tables, GDT,
//! IDT with exception stubs (assembled with iced-x86), and the register state a
//! vCPU enters with.

use iced_x86::code_asm::{CodeAssembler, dx, eax, rax, rdx, rsp};
use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::layout::{self, ports};

#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("cannot allocate {size} bytes of guest memory")]
    Allocate {
        size: u64,
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
    #[error("cannot write {len} bytes at guest address {addr:#x}")]
    Write {
        addr: u64,
        len: usize,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    #[error("cannot read {len} bytes at guest address {addr:#x}")]
    Read {
        addr: u64,
        len: usize,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    #[error("assembling the IDT stub of vector {vector}: {message}")]
    Assemble { vector: u8, message: String },
}

/// Vectors for which the CPU pushes an error code.
pub const fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10 | 11 | 12 | 13 | 14 | 17 | 21 | 29 | 30)
}

/// Bytes reserved for each IDT stub.
const STUB_SIZE: u64 = 32;

pub fn alloc(size: u64) -> Result<GuestMemoryMmap, GuestError> {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size as usize)])
        .map_err(|source| GuestError::Allocate { size, source })
}

pub fn write(mem: &GuestMemoryMmap, addr: u64, bytes: &[u8]) -> Result<(), GuestError> {
    mem.write_slice(bytes, GuestAddress(addr))
        .map_err(|source| GuestError::Write {
            addr,
            len: bytes.len(),
            source,
        })
}

pub fn read(mem: &GuestMemoryMmap, addr: u64, buf: &mut [u8]) -> Result<(), GuestError> {
    mem.read_slice(buf, GuestAddress(addr))
        .map_err(|source| GuestError::Read {
            addr,
            len: buf.len(),
            source,
        })
}

pub fn read_u64(mem: &GuestMemoryMmap, addr: u64) -> Result<u64, GuestError> {
    let mut b = [0u8; 8];
    read(mem, addr, &mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// Up to 15 instruction bytes at `addr` (fewer at the end of memory).
pub fn insn_bytes(mem: &GuestMemoryMmap, addr: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(15);
    for i in 0..15u64 {
        let mut b = [0u8; 1];
        if mem.read_slice(&mut b, GuestAddress(addr + i)).is_err() {
            break;
        }
        out.push(b[0]);
    }
    out
}

/// Write the page tables, GDT, TSS, IDT and exception stubs.
pub fn write_long_mode_tables(mem: &GuestMemoryMmap) -> Result<(), GuestError> {
    // PML4[0] -> PDPT; PDPT[0..4] -> PD0..PD3; each PD maps 1 GiB with 2 MiB pages.
    write(
        mem,
        layout::PML4_ADDR,
        &(layout::PDPT_ADDR | 0x3).to_le_bytes(),
    )?;
    for g in 0..4u64 {
        let pd = layout::PD_ADDR + g * 0x1000;
        write(mem, layout::PDPT_ADDR + g * 8, &(pd | 0x3).to_le_bytes())?;
        let mut table = Vec::with_capacity(4096);
        for i in 0..512u64 {
            let phys = (g << 30) | (i << 21);
            // P | RW | PS, plus PCD|PWT on the xAPIC page so its MMIO is uncached.
            let mut entry = phys | 0x83;
            if phys == layout::XAPIC_BASE & !0x1f_ffff {
                entry |= 0x18;
            }
            table.extend_from_slice(&entry.to_le_bytes());
        }
        write(mem, pd, &table)?;
    }

    let tss_base = layout::TSS_ADDR;
    let tss_limit = 0x67u64;
    let tss_lo = (tss_limit & 0xffff)
        | ((tss_base & 0xff_ffff) << 16)
        | (0x8b << 40) // present, busy 64-bit TSS
        | (((tss_base >> 24) & 0xff) << 56);
    let tss_hi = tss_base >> 32;
    let gdt: [u64; 6] = [
        0,
        0x00af_9b00_0000_ffff, // 0x08: 64-bit code
        0x00cf_9300_0000_ffff, // 0x10: data
        0x00cf_9b00_0000_ffff, // 0x18: 32-bit code
        tss_lo,                // 0x20: TSS (two slots)
        tss_hi,
    ];
    let gdt_bytes: Vec<u8> = gdt.iter().flat_map(|e| e.to_le_bytes()).collect();
    write(mem, layout::GDT_ADDR, &gdt_bytes)?;
    write(mem, layout::TSS_ADDR, &[0u8; 0x68])?;

    let mut idt = Vec::with_capacity(256 * 16);
    let mut stubs = Vec::with_capacity((256 * STUB_SIZE) as usize);
    for v in 0..=255u8 {
        let addr = layout::STUBS_ADDR + u64::from(v) * STUB_SIZE;
        let mut code = exception_stub(v, addr)?;
        code.resize(STUB_SIZE as usize, 0xcc);
        stubs.extend_from_slice(&code);
        let lo = (addr & 0xffff)
            | (u64::from(layout::CODE64_SEL) << 16)
            | (0x8e << 40) // present, DPL 0, 64-bit interrupt gate
            | (((addr >> 16) & 0xffff) << 48);
        idt.extend_from_slice(&lo.to_le_bytes());
        idt.extend_from_slice(&(addr >> 32).to_le_bytes());
    }
    write(mem, layout::IDT_ADDR, &idt)?;
    write(mem, layout::STUBS_ADDR, &stubs)?;
    Ok(())
}

/// `push rax; push rdx; mov eax, v; mov dx, EXCEPTION; out dx, eax; pop rdx;
/// pop rax; [add rsp, 8]; iretq` — 64-bit `iretq` only (HOST.md: no 32-bit IRET).
fn exception_stub(vector: u8, addr: u64) -> Result<Vec<u8>, GuestError> {
    let err = |e: iced_x86::IcedError| GuestError::Assemble {
        vector,
        message: e.to_string(),
    };
    let mut a = CodeAssembler::new(64).map_err(err)?;
    a.push(rax).map_err(err)?;
    a.push(rdx).map_err(err)?;
    a.mov(eax, u32::from(vector)).map_err(err)?;
    a.mov(dx, u32::from(ports::EXCEPTION)).map_err(err)?;
    a.out(dx, eax).map_err(err)?;
    a.pop(rdx).map_err(err)?;
    a.pop(rax).map_err(err)?;
    if has_error_code(vector) {
        a.add(rsp, 8).map_err(err)?;
    }
    a.iretq().map_err(err)?;
    a.assemble(addr).map_err(err)
}

fn seg(selector: u16, type_: u8, code64: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: u8::from(!code64),
        s: 1,
        l: u8::from(code64),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Long-mode system registers on top of what `KVM_GET_SREGS` returned.
pub fn long_mode_sregs(mut sregs: kvm_sregs) -> kvm_sregs {
    sregs.cs = seg(layout::CODE64_SEL, 0xb, true);
    let data = seg(layout::DATA_SEL, 0x3, false);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = kvm_segment {
        base: layout::TSS_ADDR,
        limit: 0x67,
        selector: layout::TSS_SEL,
        type_: 0xb,
        present: 1,
        ..Default::default()
    };
    sregs.gdt.base = layout::GDT_ADDR;
    sregs.gdt.limit = 6 * 8 - 1;
    sregs.idt.base = layout::IDT_ADDR;
    sregs.idt.limit = 256 * 16 - 1;
    sregs.cr3 = layout::PML4_ADDR;
    sregs.cr4 = 0x20; // PAE
    sregs.cr0 = 0x8001_0033; // PG | WP | NE | ET | MP | PE
    sregs.efer = 0x500; // LMA | LME
    sregs
}

/// General registers at a long-mode entry.
pub fn long_mode_regs(vcpu: u32, rip: u64) -> kvm_regs {
    kvm_regs {
        rip,
        rflags: 0x2,
        rsp: layout::stack_top(vcpu),
        rdi: u64::from(vcpu),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions, Mnemonic};

    #[test]
    fn stubs_end_in_iretq_and_fit() {
        for v in [0u8, 6, 8, 13, 14, 255] {
            let code = exception_stub(v, 0x1000).unwrap();
            assert!(code.len() as u64 <= STUB_SIZE, "vector {v}: {}", code.len());
            let mut d = Decoder::with_ip(64, &code, 0x1000, DecoderOptions::NONE);
            let mnemonics: Vec<Mnemonic> = d.iter().map(|i| i.mnemonic()).collect();
            assert_eq!(mnemonics.last(), Some(&Mnemonic::Iretq), "vector {v}");
            assert!(mnemonics.contains(&Mnemonic::Out));
        }
    }

    // The VMM's tables stay clear of the SIPI pages, code, data and stacks.
    const _: () = {
        assert!(layout::TSS_ADDR + 0x68 <= layout::SIPI_PAGE_MIN);
        assert!(layout::STUBS_ADDR + 256 * STUB_SIZE <= layout::CODE_ADDR);
        assert!(layout::stack_top(layout::MAX_VCPUS - 1) <= layout::MEM_SIZE);
        assert!(layout::DATA_ADDR + layout::DATA_SIZE <= layout::STACK_BASE);
    };
}
