//! Architectural state (the registers RESET and INIT define, SEMANTICS.md §2) read
//! from and written to a vCPU.

use kvm_bindings::{Msrs, kvm_msr_entry, kvm_segment};
use kvm_ioctls::VcpuFd;
use kvmtrace_format::{ArchState, DescTable, Segment};

/// MSRs read back with every RESET/INIT state: APIC base, SYSENTER_CS/ESP/EIP,
/// MISC_ENABLE, DEBUGCTL, PAT (sorted; SEMANTICS.md §2 "RESET only" MSRs).
pub const STATE_MSRS: [u32; 7] = [0x1b, 0x174, 0x175, 0x176, 0x1a0, 0x1d9, 0x277];

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("KVM_GET_REGS")]
    GetRegs(#[source] kvm_ioctls::Error),
    #[error("KVM_GET_SREGS")]
    GetSregs(#[source] kvm_ioctls::Error),
    #[error("KVM_GET_DEBUGREGS")]
    GetDebugRegs(#[source] kvm_ioctls::Error),
    #[error("KVM_GET_MP_STATE")]
    GetMpState(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_REGS")]
    SetRegs(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_SREGS")]
    SetSregs(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_DEBUGREGS")]
    SetDebugRegs(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_MSRS")]
    SetMsrs(#[source] kvm_ioctls::Error),
    #[error("building an MSR list")]
    MsrList,
}

/// The VMX access-rights layout `Segment::attr` uses.
pub fn seg_attr(s: &kvm_segment) -> u32 {
    u32::from(s.type_ & 0xf)
        | (u32::from(s.s & 1) << 4)
        | (u32::from(s.dpl & 3) << 5)
        | (u32::from(s.present & 1) << 7)
        | (u32::from(s.avl & 1) << 12)
        | (u32::from(s.l & 1) << 13)
        | (u32::from(s.db & 1) << 14)
        | (u32::from(s.g & 1) << 15)
        | (u32::from(s.unusable & 1) << 16)
}

fn to_segment(s: &kvm_segment) -> Segment {
    Segment {
        selector: s.selector,
        base: s.base,
        limit: s.limit,
        attr: seg_attr(s),
    }
}

fn from_segment(s: &Segment) -> kvm_segment {
    let a = s.attr;
    kvm_segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: (a & 0xf) as u8,
        s: ((a >> 4) & 1) as u8,
        dpl: ((a >> 5) & 3) as u8,
        present: ((a >> 7) & 1) as u8,
        avl: ((a >> 12) & 1) as u8,
        l: ((a >> 13) & 1) as u8,
        db: ((a >> 14) & 1) as u8,
        g: ((a >> 15) & 1) as u8,
        unusable: ((a >> 16) & 1) as u8,
        padding: 0,
    }
}

/// A one-entry `KVM_GET_MSRS`/`KVM_SET_MSRS` buffer, allocated on first use
/// and reused: a vCPU answers every unmodeled MSR exit through it, and the exit
/// path should not allocate per event.
#[derive(Default)]
pub struct OneMsr(Option<Msrs>);

impl OneMsr {
    fn entry(&mut self, index: u32, data: u64) -> Result<&mut Msrs, kvm_ioctls::Error> {
        if self.0.is_none() {
            self.0 = Some(Msrs::new(1).map_err(|_| kvm_ioctls::Error::new(libc::E2BIG))?);
        }
        let msrs = self
            .0
            .as_mut()
            .ok_or_else(|| kvm_ioctls::Error::new(libc::E2BIG))?;
        if let Some(e) = msrs.as_mut_slice().first_mut() {
            *e = kvm_msr_entry {
                index,
                data,
                ..Default::default()
            };
        }
        Ok(msrs)
    }

    /// `KVM_GET_MSRS` of one MSR: `Some(value)` if KVM processed the entry.
    pub fn get(&mut self, vcpu: &VcpuFd, index: u32) -> Result<Option<u64>, kvm_ioctls::Error> {
        let msrs = self.entry(index, 0)?;
        let n = vcpu.get_msrs(msrs)?;
        Ok((n == 1).then(|| msrs.as_slice()[0].data))
    }

    /// `KVM_SET_MSRS` of one MSR: whether KVM accepted the entry.
    pub fn set(&mut self, vcpu: &VcpuFd, index: u32, data: u64) -> Result<bool, kvm_ioctls::Error> {
        let msrs = self.entry(index, data)?;
        Ok(vcpu.set_msrs(msrs)? == 1)
    }
}

/// `KVM_GET_MSRS` of one MSR: `Some(value)` if KVM processed the entry.
pub fn get_msr(vcpu: &VcpuFd, index: u32) -> Result<Option<u64>, kvm_ioctls::Error> {
    OneMsr::default().get(vcpu, index)
}

/// `KVM_SET_MSRS` of one MSR: whether KVM accepted the entry.
pub fn set_msr(vcpu: &VcpuFd, index: u32, data: u64) -> Result<bool, kvm_ioctls::Error> {
    OneMsr::default().set(vcpu, index, data)
}

/// Read the RESET/INIT-relevant state of `vcpu`.
pub fn read(vcpu: &VcpuFd) -> Result<ArchState, StateError> {
    let r = vcpu.get_regs().map_err(StateError::GetRegs)?;
    let s = vcpu.get_sregs().map_err(StateError::GetSregs)?;
    let d = vcpu.get_debug_regs().map_err(StateError::GetDebugRegs)?;
    let mp = vcpu.get_mp_state().map_err(StateError::GetMpState)?;
    let mut msrs = Vec::with_capacity(STATE_MSRS.len());
    for &i in &STATE_MSRS {
        // An MSR this KVM refuses to read is simply left out of the state.
        if let Ok(Some(v)) = get_msr(vcpu, i) {
            msrs.push((i, v));
        }
    }
    Ok(ArchState {
        gprs: [
            r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi, r.r8, r.r9, r.r10, r.r11,
            r.r12, r.r13, r.r14, r.r15,
        ],
        rip: r.rip,
        rflags: r.rflags,
        cr0: s.cr0,
        cr2: s.cr2,
        cr3: s.cr3,
        cr4: s.cr4,
        efer: s.efer,
        cs: to_segment(&s.cs),
        ds: to_segment(&s.ds),
        es: to_segment(&s.es),
        fs: to_segment(&s.fs),
        gs: to_segment(&s.gs),
        ss: to_segment(&s.ss),
        ldtr: to_segment(&s.ldt),
        tr: to_segment(&s.tr),
        gdtr: DescTable {
            base: s.gdt.base,
            limit: s.gdt.limit,
        },
        idtr: DescTable {
            base: s.idt.base,
            limit: s.idt.limit,
        },
        dr: d.db,
        dr6: d.dr6,
        dr7: d.dr7,
        apic_base: s.apic_base,
        mp_state: mp.mp_state,
        msrs,
    })
}

/// Write `st` into `vcpu` with `KVM_SET_SREGS`/`REGS`/`DEBUGREGS`/`MSRS`. The
/// mp_state is not written: without an in-kernel irqchip only RUNNABLE is
/// accepted, and INIT_RECEIVED does not reset registers (HOST.md, INIT / RESET).
/// Returns the MSRs KVM refused.
pub fn apply(vcpu: &VcpuFd, st: &ArchState) -> Result<Vec<u32>, StateError> {
    let mut s = vcpu.get_sregs().map_err(StateError::GetSregs)?;
    s.cr0 = st.cr0;
    s.cr2 = st.cr2;
    s.cr3 = st.cr3;
    s.cr4 = st.cr4;
    s.efer = st.efer;
    s.cs = from_segment(&st.cs);
    s.ds = from_segment(&st.ds);
    s.es = from_segment(&st.es);
    s.fs = from_segment(&st.fs);
    s.gs = from_segment(&st.gs);
    s.ss = from_segment(&st.ss);
    s.ldt = from_segment(&st.ldtr);
    s.tr = from_segment(&st.tr);
    s.gdt.base = st.gdtr.base;
    s.gdt.limit = st.gdtr.limit;
    s.idt.base = st.idtr.base;
    s.idt.limit = st.idtr.limit;
    s.apic_base = st.apic_base;
    vcpu.set_sregs(&s).map_err(StateError::SetSregs)?;

    let g = &st.gprs;
    let r = kvm_bindings::kvm_regs {
        rax: g[0],
        rcx: g[1],
        rdx: g[2],
        rbx: g[3],
        rsp: g[4],
        rbp: g[5],
        rsi: g[6],
        rdi: g[7],
        r8: g[8],
        r9: g[9],
        r10: g[10],
        r11: g[11],
        r12: g[12],
        r13: g[13],
        r14: g[14],
        r15: g[15],
        rip: st.rip,
        rflags: st.rflags,
    };
    vcpu.set_regs(&r).map_err(StateError::SetRegs)?;

    let mut d = vcpu.get_debug_regs().map_err(StateError::GetDebugRegs)?;
    d.db = st.dr;
    d.dr6 = st.dr6;
    d.dr7 = st.dr7;
    vcpu.set_debug_regs(&d).map_err(StateError::SetDebugRegs)?;

    let mut refused = Vec::new();
    for &(i, v) in &st.msrs {
        if !set_msr(vcpu, i, v).map_err(StateError::SetMsrs)? {
            refused.push(i);
        }
    }
    Ok(refused)
}

/// The INIT state by the ≥5.15 rule (SEMANTICS.md §2), for when the live policy
/// does not model INIT: the vCPU's RESET state with CR0.CD/NW kept from `before`,
/// RDX = CPUID.1.EAX, APIC base unchanged, and the RESET-only MSRs kept.
pub fn fallback_init(reset: &ArchState, before: &ArchState, cpuid1_eax: u32) -> ArchState {
    const CD_NW: u64 = (1 << 30) | (1 << 29);
    let mut st = reset.clone();
    st.cr0 = 0x10 | (before.cr0 & CD_NW);
    st.gprs[ArchState::RDX] = u64::from(cpuid1_eax);
    st.apic_base = before.apic_base;
    st.mp_state = before.mp_state;
    st.msrs = before.msrs.clone();
    if let Some(e) = st.msrs.iter_mut().find(|(i, _)| *i == 0x1b) {
        e.1 = before.apic_base;
    }
    st
}

/// A predicted state laid over the kernel's: the prediction's registers, the
/// kernel's segment attributes (a model may not know them; KVM's own are right
/// for the mode) and the kernel's MSRs with the predicted ones replacing them.
pub fn overlay(kernel: &ArchState, pred: &ArchState) -> ArchState {
    let mut s = pred.clone();
    for (d, k) in [
        (&mut s.cs, &kernel.cs),
        (&mut s.ds, &kernel.ds),
        (&mut s.es, &kernel.es),
        (&mut s.fs, &kernel.fs),
        (&mut s.gs, &kernel.gs),
        (&mut s.ss, &kernel.ss),
        (&mut s.ldtr, &kernel.ldtr),
        (&mut s.tr, &kernel.tr),
    ] {
        d.attr = k.attr;
    }
    let mut msrs = kernel.msrs.clone();
    for &(i, v) in &pred.msrs {
        match msrs.binary_search_by_key(&i, |&(k, _)| k) {
            Ok(j) => msrs[j].1 = v,
            Err(j) => msrs.insert(j, (i, v)),
        }
    }
    s.msrs = msrs;
    s.mp_state = kernel.mp_state;
    s
}

/// Real-mode entry at a SIPI vector: CS.sel = v << 8, CS.base = v << 12, RIP 0.
pub fn sipi(st: &mut ArchState, vector: u8) {
    st.cs.selector = u16::from(vector) << 8;
    st.cs.base = u64::from(vector) << 12;
    st.rip = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_attr_round_trips() {
        let s = kvm_segment {
            base: 0x1000,
            limit: 0xffff,
            selector: 0xf000,
            type_: 0xb,
            present: 1,
            dpl: 3,
            db: 1,
            s: 1,
            l: 0,
            g: 1,
            avl: 1,
            unusable: 0,
            padding: 0,
        };
        let seg = to_segment(&s);
        assert_eq!(seg.attr & 0xff, 0xfb);
        assert_eq!(from_segment(&seg), s);
    }

    #[test]
    fn fallback_init_keeps_cd_nw_and_sets_rdx() {
        let reset = ArchState {
            cr0: 0x6000_0010,
            rip: 0xfff0,
            apic_base: 0xfee0_0900,
            ..Default::default()
        };
        let before = ArchState {
            cr0: 0x4000_0011,
            apic_base: 0xfee0_0800,
            ..Default::default()
        };
        let st = fallback_init(&reset, &before, 0xa00f11);
        assert_eq!(st.cr0, 0x4000_0010);
        assert_eq!(st.rdx(), 0xa00f11);
        assert_eq!(st.apic_base, 0xfee0_0800);
        assert_eq!(st.rip, 0xfff0);
    }
}
