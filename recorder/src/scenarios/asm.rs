//! Small building blocks shared by the scenarios: guest code in the ABI of
//! [`crate::layout`] (ports, R15 fault marker), assembled with iced-x86.
//!
//! [`Guest`] wraps a 64-bit `CodeAssembler` and collects the scenario's host steps,
//! so a scenario body can say "host writes this MSR now" and get the `HOSTCALL`
//! index right even when bodies are composed (the `tour`).

use iced_x86::IcedError;
use iced_x86::code_asm::*;

use super::HostStep;
use crate::layout::{CODE_ADDR, DATA_ADDR, ports};

/// Guest-physical address of the MONITOR line the scenarios arm.
pub const MONITOR_LINE: u64 = DATA_ADDR;
/// A page-directory page the guest may use to map the xAPIC page (see
/// [`Guest::map_xapic`]); inside the data area, zeroed by the scenario's data region.
pub const XAPIC_PD: u64 = DATA_ADDR + 0xf000;
/// Flags vCPUs use to hand over to each other (long-mode side).
pub const FLAGS: u64 = DATA_ADDR + 0x100;
/// Where `triple-fault` saves the VMM's IDTR (10 bytes) and builds its empty one.
pub const IDTR_SAVE: u64 = DATA_ADDR + 0x200;
pub const IDTR_EMPTY: u64 = DATA_ADDR + 0x210;
/// Size of the zeroed data region every scenario loads at `DATA_ADDR`.
pub const DATA_REGION_SIZE: usize = 0x10000;

/// Result of one emitted instruction or block.
pub type R = Result<(), IcedError>;

/// 64-bit scenario code under construction, plus its host steps.
pub struct Guest {
    pub a: CodeAssembler,
    pub host_steps: Vec<HostStep>,
}

impl Guest {
    pub fn new() -> Result<Self, IcedError> {
        Ok(Guest {
            a: CodeAssembler::new(64)?,
            host_steps: Vec::new(),
        })
    }

    /// Assemble for `CODE_ADDR`.
    pub fn finish(mut self) -> Result<(Vec<u8>, Vec<HostStep>), IcedError> {
        let bytes = self.a.assemble(CODE_ADDR)?;
        Ok((bytes, self.host_steps))
    }

    /// Clear the fault marker (R15 = last vector + 1 after a skipped fault).
    pub fn clear_fault(&mut self) -> R {
        self.a.xor(r15d, r15d)
    }

    /// `RDMSR(index)`; EDX:EAX are zeroed first so a faulting read leaves 0.
    pub fn rdmsr(&mut self, index: u32) -> R {
        self.a.xor(eax, eax)?;
        self.a.xor(edx, edx)?;
        self.a.mov(ecx, index)?;
        self.a.rdmsr()
    }

    /// `WRMSR(index, value)`.
    pub fn wrmsr(&mut self, index: u32, value: u64) -> R {
        self.a.mov(ecx, index)?;
        self.a.mov(eax, lo(value))?;
        self.a.mov(edx, hi(value))?;
        self.a.wrmsr()
    }

    /// `WRMSR(index, EDX:EAX)` with EDX:EAX as they are.
    pub fn wrmsr_edx_eax(&mut self, index: u32) -> R {
        self.a.mov(ecx, index)?;
        self.a.wrmsr()
    }

    /// Read-modify-write: `RDMSR(index)`, set `set` and clear `clear`, `WRMSR`.
    pub fn rmw_msr(&mut self, index: u32, set: u64, clear: u64) -> R {
        self.rdmsr(index)?;
        self.a.shl(rdx, 32u32)?;
        self.a.or(rax, rdx)?;
        if set != 0 {
            self.a.mov(rdx, set)?;
            self.a.or(rax, rdx)?;
        }
        if clear != 0 {
            self.a.mov(rdx, !clear)?;
            self.a.and(rax, rdx)?;
        }
        self.a.mov(rdx, rax)?;
        self.a.shr(rdx, 32u32)?;
        self.wrmsr_edx_eax(index)
    }

    /// `out REPORT, eax`.
    pub fn report_eax(&mut self) -> R {
        self.a.mov(dx, ports::REPORT as u32)?;
        self.a.out(dx, eax)
    }

    /// Report a constant (a marker that says where the guest is).
    pub fn report_imm(&mut self, value: u32) -> R {
        self.a.mov(eax, value)?;
        self.report_eax()
    }

    /// Report the fault marker R15.
    pub fn report_fault(&mut self) -> R {
        self.a.mov(eax, r15d)?;
        self.report_eax()
    }

    /// Append `step` to the host steps and ask the VMM to run it now.
    pub fn host(&mut self, step: HostStep) -> R {
        let n = u32::try_from(self.host_steps.len()).unwrap_or(u32::MAX);
        self.host_steps.push(step);
        self.a.mov(eax, n)?;
        self.a.mov(dx, ports::HOSTCALL as u32)?;
        self.a.out(dx, eax)
    }

    /// `out DONE, status`, then halt forever should the VMM resume the vCPU.
    pub fn done(&mut self, status: u32) -> R {
        self.a.mov(eax, status)?;
        self.a.mov(dx, ports::DONE as u32)?;
        self.a.out(dx, eax)?;
        let mut again = self.a.create_label();
        self.a.set_label(&mut again)?;
        self.a.hlt()?;
        self.a.jmp(again)
    }

    /// MONITOR on [`MONITOR_LINE`] (RAX = address, ECX = EDX = 0), then MWAIT
    /// (EAX = ECX = 0).
    pub fn monitor_mwait(&mut self) -> R {
        self.a.mov(rax, MONITOR_LINE)?;
        self.a.xor(ecx, ecx)?;
        self.a.xor(edx, edx)?;
        self.a.monitor()?;
        self.a.xor(eax, eax)?;
        self.a.xor(ecx, ecx)?;
        self.a.mwait()
    }

    /// Make sure the xAPIC page at 0xfee00000 is mapped (uncached, 2 MiB page) in
    /// the VMM's identity map, which need only cover guest RAM: if PML4[0]'s PDPT
    /// has no entry for 3..4 GiB, install [`XAPIC_PD`] there with one 2 MiB page.
    /// Leaves RAX = the xAPIC base.
    pub fn map_xapic(&mut self) -> R {
        let a = &mut self.a;
        let mut mapped = a.create_label();
        a.mov(rax, cr3)?;
        a.mov(rcx, 0x000f_ffff_ffff_f000u64)?;
        a.and(rax, rcx)?;
        a.mov(rax, qword_ptr(rax))?; // PML4[0]
        a.and(rax, rcx)?; // PDPT
        a.test(byte_ptr(rax + 0x18), 1)?; // PDPT[3] present?
        a.jnz(mapped)?;
        // PD[0x1f7] = 0xfee00000 | PS | PCD | PWT | RW | P
        a.mov(rdx, 0xfee0_009bu64)?;
        a.mov(rcx, XAPIC_PD + 0x1f7 * 8)?;
        a.mov(qword_ptr(rcx), rdx)?;
        a.mov(rdx, XAPIC_PD | 3)?;
        a.mov(qword_ptr(rax + 0x18), rdx)?;
        a.mov(rax, cr3)?;
        a.mov(cr3, rax)?;
        a.set_label(&mut mapped)?;
        a.mov(rax, crate::layout::XAPIC_BASE)
    }

    /// Spin until the dword at `addr` equals `value`, at most `max` rounds; leaves
    /// ZF set iff it matched.
    pub fn wait_dword(&mut self, addr: u64, value: u32, max: u32) -> R {
        let a = &mut self.a;
        let mut top = a.create_label();
        let mut out = a.create_label();
        a.mov(rsi, addr)?;
        a.mov(ebx, max)?;
        a.set_label(&mut top)?;
        a.cmp(dword_ptr(rsi), value)?;
        a.je(out)?;
        a.pause()?;
        a.dec(ebx)?;
        a.jnz(top)?;
        a.cmp(dword_ptr(rsi), value)?;
        a.set_label(&mut out)?;
        a.nop()
    }

    /// Store `value` in the dword at `addr`.
    pub fn set_dword(&mut self, addr: u64, value: u32) -> R {
        self.a.mov(rsi, addr)?;
        self.a.mov(dword_ptr(rsi), value)
    }
}

/// Low half of `v` (the EAX of a WRMSR).
pub fn lo(v: u64) -> u32 {
    (v & 0xffff_ffff) as u32
}

/// High half of `v` (the EDX of a WRMSR).
pub fn hi(v: u64) -> u32 {
    (v >> 32) as u32
}
