//! The seccomp filter of the ioctl tap: `SECCOMP_RET_TRACE` for `ioctl(2)`
//! with one of the KVM configuration requests, `SECCOMP_RET_ALLOW` for
//! everything else (so `KVM_RUN` and every hot syscall never stops).
//!
//! Hand-written rather than built with `seccompiler` (rust-vmm, Firecracker's
//! filter compiler), which was evaluated: it is made for sandboxes, so its
//! architecture check is hard-wired to `SECCOMP_RET_KILL_PROCESS` (a 32-bit
//! helper the VMM execs would be killed) and its `apply_filter` always sets
//! `PR_SET_NO_NEW_PRIVS` (a setuid helper such as `qemu-bridge-helper` would
//! lose its privileges even when kvmtrace runs as root). A tap must change
//! nothing but the stops; the program is 6 + 2 × requests instructions, each
//! path checked by the interpreter in the tests below.

use std::mem::size_of;

use kvm_bindings as kb;

/// `_IOC` as include/uapi/asm-generic/ioctl.h defines it (x86).
const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | (0xAE << 8) | nr
}
const fn io(nr: u32) -> u32 {
    ioc(0, nr, 0)
}
const fn iow(nr: u32, size: usize) -> u32 {
    ioc(1, nr, size)
}
const fn iowr(nr: u32, size: usize) -> u32 {
    ioc(3, nr, size)
}

pub const KVM_CREATE_VM: u32 = io(0x01);
pub const KVM_CREATE_VCPU: u32 = io(0x41);
pub const KVM_CREATE_IRQCHIP: u32 = io(0x60);
pub const KVM_ENABLE_CAP: u32 = iow(0xa3, size_of::<kb::kvm_enable_cap>());
pub const KVM_X86_SET_MSR_FILTER: u32 = iow(0xc6, size_of::<kb::kvm_msr_filter>());
pub const KVM_SET_CPUID2: u32 = iow(0x90, size_of::<kb::kvm_cpuid2>());
pub const KVM_X86_SETUP_MCE: u32 = iow(0x9c, size_of::<u64>());
pub const KVM_GET_MSRS: u32 = iowr(0x88, size_of::<kb::kvm_msrs>());
pub const KVM_SET_MSRS: u32 = iow(0x89, size_of::<kb::kvm_msrs>());
pub const KVM_SET_REGS: u32 = iow(0x82, size_of::<kb::kvm_regs>());
pub const KVM_SET_SREGS: u32 = iow(0x84, size_of::<kb::kvm_sregs>());
pub const KVM_SET_LAPIC: u32 = iow(0x8f, size_of::<kb::kvm_lapic_state>());
pub const KVM_SET_MP_STATE: u32 = iow(0x99, size_of::<kb::kvm_mp_state>());
pub const KVM_SET_VCPU_EVENTS: u32 = iow(0xa0, size_of::<kb::kvm_vcpu_events>());
pub const KVM_SET_SREGS2: u32 = iow(0xcd, size_of::<kb::kvm_sregs2>());
pub const KVM_X86_SET_MCE: u32 = iow(0x9e, size_of::<kb::kvm_x86_mce>());

/// Every request the tap stops on, with its uapi name.
pub const TAPPED: [(u32, &str); 16] = [
    (KVM_CREATE_VM, "KVM_CREATE_VM"),
    (KVM_CREATE_VCPU, "KVM_CREATE_VCPU"),
    (KVM_CREATE_IRQCHIP, "KVM_CREATE_IRQCHIP"),
    (KVM_ENABLE_CAP, "KVM_ENABLE_CAP"),
    (KVM_X86_SET_MSR_FILTER, "KVM_X86_SET_MSR_FILTER"),
    (KVM_SET_CPUID2, "KVM_SET_CPUID2"),
    (KVM_X86_SETUP_MCE, "KVM_X86_SETUP_MCE"),
    (KVM_GET_MSRS, "KVM_GET_MSRS"),
    (KVM_SET_MSRS, "KVM_SET_MSRS"),
    (KVM_SET_REGS, "KVM_SET_REGS"),
    (KVM_SET_SREGS, "KVM_SET_SREGS"),
    (KVM_SET_LAPIC, "KVM_SET_LAPIC"),
    (KVM_SET_MP_STATE, "KVM_SET_MP_STATE"),
    (KVM_SET_VCPU_EVENTS, "KVM_SET_VCPU_EVENTS"),
    // QEMU 7.0+ sets the special registers with SREGS2 where the kernel has
    // it (KVM_CAP_SREGS2, 5.14+); KVM_X86_SET_MCE runs only when the VMM
    // injects a machine check.
    (KVM_SET_SREGS2, "KVM_SET_SREGS2"),
    (KVM_X86_SET_MCE, "KVM_X86_SET_MCE"),
];

/// The uapi name of a tapped request.
pub fn request_name(req: u32) -> &'static str {
    TAPPED
        .iter()
        .find(|&&(r, _)| r == req)
        .map_or("ioctl", |&(_, n)| n)
}

const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K

const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
pub const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
pub const SECCOMP_RET_TRACE: u32 = 0x7ff0_0000;
/// `struct seccomp_data`: nr at 0, arch at 4, args at 16 (8 bytes each; the
/// low half of args[1], the request, at 24 on little endian).
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARG1_LO: u32 = 24;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jeq(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: BPF_JEQ_K,
        jt,
        jf,
        k,
    }
}

/// The filter program. The request is compared on its low 32 bits: the
/// kernel's `ioctl` takes `unsigned int cmd`, so the high half never matters.
pub fn program() -> Vec<libc::sock_filter> {
    let n = TAPPED.len();
    let mut p = vec![
        stmt(BPF_LD_W_ABS, OFF_ARCH),
        // Not x86-64 (an i386 binary or int 0x80): allow.
        jeq(AUDIT_ARCH_X86_64, 0, (n + 3) as u8),
        stmt(BPF_LD_W_ABS, OFF_NR),
        jeq(libc::SYS_ioctl as u32, 0, (n + 1) as u8),
        stmt(BPF_LD_W_ABS, OFF_ARG1_LO),
    ];
    for (i, &(req, _)) in TAPPED.iter().enumerate() {
        // Match: jump over the remaining compares and the ALLOW to TRACE.
        p.push(jeq(req, (n - i) as u8, 0));
    }
    p.push(stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
    p.push(stmt(BPF_RET_K, SECCOMP_RET_TRACE));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the three instruction kinds the program uses on a `seccomp_data`.
    fn run(p: &[libc::sock_filter], nr: u32, arch: u32, arg1: u64) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        data[24..32].copy_from_slice(&arg1.to_le_bytes());
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = p[pc];
            pc += 1;
            match i.code {
                BPF_LD_W_ABS => {
                    let k = i.k as usize;
                    acc = u32::from_le_bytes(data[k..k + 4].try_into().unwrap());
                }
                BPF_JEQ_K => pc += usize::from(if acc == i.k { i.jt } else { i.jf }),
                BPF_RET_K => return i.k,
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    #[test]
    fn ioctl_numbers_match_uapi() {
        // Values from include/uapi/linux/kvm.h on x86-64 (as strace prints them).
        assert_eq!(KVM_CREATE_VM, 0xae01);
        assert_eq!(KVM_CREATE_VCPU, 0xae41);
        assert_eq!(KVM_ENABLE_CAP, 0x4068_aea3);
        assert_eq!(KVM_X86_SET_MSR_FILTER, 0x4188_aec6);
        assert_eq!(KVM_SET_CPUID2, 0x4008_ae90);
        assert_eq!(KVM_X86_SETUP_MCE, 0x4008_ae9c);
        assert_eq!(KVM_GET_MSRS, 0xc008_ae88);
        assert_eq!(KVM_SET_MSRS, 0x4008_ae89);
        assert_eq!(KVM_SET_REGS, 0x4090_ae82);
        assert_eq!(KVM_SET_SREGS, 0x4138_ae84);
        assert_eq!(KVM_SET_LAPIC, 0x4400_ae8f);
        assert_eq!(KVM_SET_MP_STATE, 0x4004_ae99);
        assert_eq!(KVM_SET_VCPU_EVENTS, 0x4040_aea0);
        assert_eq!(KVM_SET_SREGS2, 0x4140_aecd);
        assert_eq!(KVM_X86_SET_MCE, 0x4040_ae9e);
    }

    #[test]
    fn traces_only_the_tapped_ioctls() {
        let p = program();
        let ioctl = libc::SYS_ioctl as u32;
        for &(req, name) in &TAPPED {
            assert_eq!(
                run(&p, ioctl, AUDIT_ARCH_X86_64, u64::from(req)),
                SECCOMP_RET_TRACE,
                "{name}"
            );
            // High bits of the request are ignored by the kernel, so by us too.
            let hi = u64::from(req) | 0xffff_ffff_0000_0000;
            assert_eq!(
                run(&p, ioctl, AUDIT_ARCH_X86_64, hi),
                SECCOMP_RET_TRACE,
                "{name}"
            );
        }
        const KVM_RUN: u64 = 0xae80;
        assert_eq!(
            run(&p, ioctl, AUDIT_ARCH_X86_64, KVM_RUN),
            SECCOMP_RET_ALLOW
        );
        // TCGETS, and a tapped request number on another syscall.
        assert_eq!(run(&p, ioctl, AUDIT_ARCH_X86_64, 0x5401), SECCOMP_RET_ALLOW);
        let read = libc::SYS_read as u32;
        assert_eq!(
            run(&p, read, AUDIT_ARCH_X86_64, u64::from(KVM_SET_MSRS)),
            SECCOMP_RET_ALLOW
        );
        // i386 ioctl (54) with a tapped request: allowed, never killed.
        assert_eq!(
            run(&p, 54, 0x4000_0003, u64::from(KVM_SET_MSRS)),
            SECCOMP_RET_ALLOW
        );
    }
}
