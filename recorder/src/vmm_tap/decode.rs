//! Decoding the tapped ioctls' arguments (read from the VMM's memory) and
//! results into events. Pure: memory comes through [`Mem`], so every path is
//! tested without a tracee. Sizes are bounded by the kernel's own limits; an
//! argument over a limit is an ioctl the kernel refuses, recorded as such.

use std::mem::{offset_of, size_of};

use kvm_bindings as kb;
use kvmtrace_format::{
    CpuidEntry, DecidedBy, Event, LapicPage, MsrFilter, MsrFilterRange, MsrOutcome, Origin,
    Segment, VcpuEventsSet, VmmSet,
};

use super::filter as f;

/// `MAX_IO_MSRS` (arch/x86/kvm/x86.c): `KVM_{GET,SET}_MSRS` refuse
/// `nmsrs >= 256` with E2BIG.
pub const MAX_IO_MSRS: u32 = 256;
/// `KVM_MAX_CPUID_ENTRIES` (arch/x86/include/asm/kvm_host.h).
pub const MAX_CPUID_ENTRIES: u32 = 256;
/// `KVM_MSR_FILTER_MAX_BITMAP_SIZE` and `KVM_MSR_FILTER_MAX_RANGES`.
pub const MAX_FILTER_BITMAP: usize = 0x600;
pub const MAX_FILTER_RANGES: usize = 16;

/// `KVM_CAP_*` numbers the tap folds into configuration events.
pub const CAP_DISABLE_QUIRKS: u32 = 116;
pub const CAP_SPLIT_IRQCHIP: u32 = 121;
pub const CAP_X86_USER_SPACE_MSR: u32 = 188;
pub const CAP_DISABLE_QUIRKS2: u32 = 213;

/// The VMM's memory, as seen from the tracer.
pub trait Mem {
    /// Fill `buf` from `addr` in the tracee, or fail (unmapped, gone).
    fn read(&self, addr: u64, buf: &mut [u8]) -> std::io::Result<()>;
}

/// What an ioctl's argument held at syscall entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arg {
    /// Nothing to read (or a plain integer argument).
    None,
    EnableCap {
        cap: u32,
        args: [u64; 4],
    },
    MsrFilter(MsrFilter),
    Cpuid(Vec<CpuidEntry>),
    Mce(u64),
    /// `KVM_SET_MSRS`: (index, value); `KVM_GET_MSRS`: (index, 0).
    Msrs(Vec<(u32, u64)>),
    /// A vCPU state ioctl (`KVM_SET_REGS/SREGS/SREGS2/MP_STATE/VCPU_EVENTS/
    /// LAPIC`, `KVM_X86_SET_MCE`): what it sets that the models use.
    State(VmmSet),
    /// The count was over the kernel's limit: the ioctl fails with E2BIG.
    TooMany {
        what: &'static str,
        n: u32,
    },
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]))
}
fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// A `struct kvm_segment` at `at`, as `Segment` (VMX access-rights layout,
/// as `recorder::state::seg_attr` builds it from the same struct).
fn segment(b: &[u8], at: usize) -> Segment {
    let byte = |f: usize| u32::from(b[at + f]);
    let attr = (byte(offset_of!(kb::kvm_segment, type_)) & 0xf)
        | ((byte(offset_of!(kb::kvm_segment, s)) & 1) << 4)
        | ((byte(offset_of!(kb::kvm_segment, dpl)) & 3) << 5)
        | ((byte(offset_of!(kb::kvm_segment, present)) & 1) << 7)
        | ((byte(offset_of!(kb::kvm_segment, avl)) & 1) << 12)
        | ((byte(offset_of!(kb::kvm_segment, l)) & 1) << 13)
        | ((byte(offset_of!(kb::kvm_segment, db)) & 1) << 14)
        | ((byte(offset_of!(kb::kvm_segment, g)) & 1) << 15)
        | ((byte(offset_of!(kb::kvm_segment, unusable)) & 1) << 16);
    Segment {
        selector: le16(b, at + offset_of!(kb::kvm_segment, selector)),
        base: le64(b, at + offset_of!(kb::kvm_segment, base)),
        limit: le32(b, at + offset_of!(kb::kvm_segment, limit)),
        attr,
    }
}

/// The vCPU state ioctls' arguments: fixed-size structs (layouts from
/// kvm-bindings), read whole (`KVM_SET_LAPIC`: 1 KiB) and decoded to the
/// fields the models use.
fn read_state(mem: &dyn Mem, req: u32, arg: u64) -> Result<Option<VmmSet>, String> {
    Ok(Some(match req {
        f::KVM_SET_REGS => {
            let b = read_vec(mem, arg, size_of::<kb::kvm_regs>(), "struct kvm_regs")?;
            VmmSet::Regs {
                rip: le64(&b, offset_of!(kb::kvm_regs, rip)),
                rflags: le64(&b, offset_of!(kb::kvm_regs, rflags)),
            }
        }
        f::KVM_SET_SREGS | f::KVM_SET_SREGS2 => {
            // kvm_sregs2 shares kvm_sregs's layout up to apic_base.
            const _: () = assert!(
                offset_of!(kb::kvm_sregs, apic_base) == offset_of!(kb::kvm_sregs2, apic_base)
            );
            let sregs2 = req == f::KVM_SET_SREGS2;
            let (len, what) = if sregs2 {
                (size_of::<kb::kvm_sregs2>(), "struct kvm_sregs2")
            } else {
                (size_of::<kb::kvm_sregs>(), "struct kvm_sregs")
            };
            let b = read_vec(mem, arg, len, what)?;
            VmmSet::Sregs {
                apic_base: le64(&b, offset_of!(kb::kvm_sregs, apic_base)),
                cr0: le64(&b, offset_of!(kb::kvm_sregs, cr0)),
                cr4: le64(&b, offset_of!(kb::kvm_sregs, cr4)),
                efer: le64(&b, offset_of!(kb::kvm_sregs, efer)),
                cs: segment(&b, offset_of!(kb::kvm_sregs, cs)),
                sregs2,
            }
        }
        f::KVM_SET_MP_STATE => {
            let b = read_vec(mem, arg, 4, "struct kvm_mp_state")?;
            VmmSet::MpState {
                mp_state: le32(&b, 0),
            }
        }
        f::KVM_SET_VCPU_EVENTS => {
            let b = read_vec(
                mem,
                arg,
                size_of::<kb::kvm_vcpu_events>(),
                "struct kvm_vcpu_events",
            )?;
            let ex = offset_of!(kb::kvm_vcpu_events, exception);
            let nmi = offset_of!(kb::kvm_vcpu_events, nmi);
            let smi = offset_of!(kb::kvm_vcpu_events, smi);
            let has_error = b[ex + 2] != 0;
            VmmSet::VcpuEvents(VcpuEventsSet {
                flags: le32(&b, offset_of!(kb::kvm_vcpu_events, flags)),
                exception_injected: b[ex] != 0,
                exception_nr: b[ex + 1],
                exception_pending: b[ex + 3] != 0,
                exception_error_code: has_error.then(|| le32(&b, ex + 4)),
                nmi_injected: b[nmi] != 0,
                nmi_pending: b[nmi + 1] != 0,
                nmi_masked: b[nmi + 2] != 0,
                sipi_vector: le32(&b, offset_of!(kb::kvm_vcpu_events, sipi_vector)),
                smi_pending: b[smi + 1] != 0,
                latched_init: b[smi + 3] != 0,
            })
        }
        f::KVM_SET_LAPIC => {
            let b = read_vec(
                mem,
                arg,
                size_of::<kb::kvm_lapic_state>(),
                "struct kvm_lapic_state",
            )?;
            VmmSet::Lapic(LapicPage::from_regs(|off| le32(&b, usize::from(off))))
        }
        f::KVM_X86_SET_MCE => {
            let b = read_vec(mem, arg, size_of::<kb::kvm_x86_mce>(), "struct kvm_x86_mce")?;
            VmmSet::Mce {
                bank: b[offset_of!(kb::kvm_x86_mce, bank)],
                status: le64(&b, offset_of!(kb::kvm_x86_mce, status)),
                addr: le64(&b, offset_of!(kb::kvm_x86_mce, addr)),
                misc: le64(&b, offset_of!(kb::kvm_x86_mce, misc)),
                mcg_status: le64(&b, offset_of!(kb::kvm_x86_mce, mcg_status)),
            }
        }
        _ => return Ok(None),
    }))
}

fn read_vec(mem: &dyn Mem, addr: u64, len: usize, what: &str) -> Result<Vec<u8>, String> {
    let mut b = vec![0u8; len];
    mem.read(addr, &mut b)
        .map_err(|e| format!("{what} at {addr:#x} ({len} bytes) is unreadable: {e}"))?;
    Ok(b)
}

/// Reads what `req`'s argument `arg` points at, at syscall entry. `Err` is a
/// one-line note (unreadable memory): the ioctl is then recorded as unread.
pub fn read_arg(mem: &dyn Mem, req: u32, arg: u64) -> Result<Arg, String> {
    match req {
        f::KVM_ENABLE_CAP => {
            let b = read_vec(mem, arg, 40, "struct kvm_enable_cap")?;
            let args = [le64(&b, 8), le64(&b, 16), le64(&b, 24), le64(&b, 32)];
            Ok(Arg::EnableCap {
                cap: le32(&b, 0),
                args,
            })
        }
        f::KVM_X86_SET_MSR_FILTER => {
            let b = read_vec(
                mem,
                arg,
                8 + 24 * MAX_FILTER_RANGES,
                "struct kvm_msr_filter",
            )?;
            let mut filter = MsrFilter {
                default_deny: le32(&b, 0) & 1 != 0,
                ranges: Vec::new(),
            };
            for i in 0..MAX_FILTER_RANGES {
                let r = 8 + 24 * i;
                let flags = le32(&b, r);
                if flags == 0 {
                    // The kernel stops at the first empty range.
                    break;
                }
                let nmsrs = le32(&b, r + 4);
                let len = (nmsrs as usize).div_ceil(8);
                let bitmap = if len > MAX_FILTER_BITMAP {
                    Vec::new() // refused by the kernel (EINVAL)
                } else {
                    read_vec(mem, le64(&b, r + 16), len, "MSR filter bitmap")?
                };
                filter.ranges.push(MsrFilterRange {
                    flags,
                    base: le32(&b, r + 8),
                    nmsrs,
                    bitmap,
                });
            }
            Ok(Arg::MsrFilter(filter))
        }
        f::KVM_SET_CPUID2 => {
            let h = read_vec(mem, arg, 8, "struct kvm_cpuid2")?;
            let n = le32(&h, 0);
            if n > MAX_CPUID_ENTRIES {
                return Ok(Arg::TooMany { what: "nent", n });
            }
            let b = read_vec(mem, arg + 8, 40 * n as usize, "kvm_cpuid2 entries")?;
            Ok(Arg::Cpuid(
                b.chunks_exact(40)
                    .map(|e| CpuidEntry {
                        function: le32(e, 0),
                        index: le32(e, 4),
                        flags: le32(e, 8),
                        eax: le32(e, 12),
                        ebx: le32(e, 16),
                        ecx: le32(e, 20),
                        edx: le32(e, 24),
                    })
                    .collect(),
            ))
        }
        f::KVM_X86_SETUP_MCE => {
            let b = read_vec(mem, arg, 8, "MCG_CAP")?;
            Ok(Arg::Mce(le64(&b, 0)))
        }
        f::KVM_SET_MSRS | f::KVM_GET_MSRS => Ok(read_msrs(mem, arg)?),
        _ => Ok(read_state(mem, req, arg)?.map_or(Arg::None, Arg::State)),
    }
}

fn read_msrs(mem: &dyn Mem, arg: u64) -> Result<Arg, String> {
    let h = read_vec(mem, arg, 8, "struct kvm_msrs")?;
    let n = le32(&h, 0);
    if n >= MAX_IO_MSRS {
        return Ok(Arg::TooMany { what: "nmsrs", n });
    }
    let b = read_vec(mem, arg + 8, 16 * n as usize, "kvm_msrs entries")?;
    Ok(Arg::Msrs(
        b.chunks_exact(16)
            .map(|e| (le32(e, 0), le64(e, 8)))
            .collect(),
    ))
}

/// Events of an MSR ioctl that returned `ret` (`__msr_io` in
/// arch/x86/kvm/x86.c returns how many entries it processed and stops at the
/// first the kernel refused): entries before `ret` accepted, the entry at
/// `ret` refused (`MsrOutcome::InjectGp` with `Origin::Host`: "refused"), the
/// rest not attempted (no event). `read_back`: for `KVM_GET_MSRS`, the entries
/// as the kernel wrote them back (values at syscall exit).
pub fn msr_events(
    write: bool,
    entries: &[(u32, u64)],
    read_back: &[(u32, u64)],
    ret: i64,
) -> Vec<Event> {
    if ret < 0 {
        return Vec::new();
    }
    let done = (ret as usize).min(entries.len());
    let mut out = Vec::with_capacity(done + 1);
    for (i, &(index, value)) in entries.iter().enumerate().take(done) {
        let (value, outcome) = if write {
            (Some(value), MsrOutcome::Ok)
        } else {
            let v = read_back.get(i).map_or(value, |&(_, v)| v);
            (None, MsrOutcome::Value(v))
        };
        out.push(Event::msr_access(
            index,
            value,
            Origin::Host,
            outcome,
            DecidedBy::Kernel,
            None,
        ));
    }
    if let Some(&(index, value)) = entries.get(done) {
        let value = write.then_some(value);
        out.push(Event::msr_access(
            index,
            value,
            Origin::Host,
            MsrOutcome::InjectGp,
            DecidedBy::Kernel,
            None,
        ));
    }
    out
}

/// The event of a vCPU state ioctl that returned `ret` (0 or -errno), failed
/// or not: the model replays the kernel's decision.
pub fn state_event(arg: &Arg, ret: i64) -> Option<Event> {
    match arg {
        Arg::State(set) => Some(Event::VmmState {
            set: Box::new(set.clone()),
            result: ret.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
        }),
        _ => None,
    }
}

/// The `CapEnabled` event of a `KVM_ENABLE_CAP` that returned `ret` (0 or
/// -errno), on a vCPU fd when `vcpu_scope`: every enable, accepted or not
/// (format 1.4), beside the configuration event [`config_event`] adds.
pub fn cap_event(arg: &Arg, ret: i64, vcpu_scope: bool) -> Option<Event> {
    match *arg {
        Arg::EnableCap { cap, args } => Some(Event::CapEnabled {
            cap,
            args: Box::new(args),
            vcpu_scope,
            result: ret.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
        }),
        _ => None,
    }
}

/// The configuration event a successful ioctl adds (none for the MSR ioctls,
/// which [`msr_events`] turns into accesses).
pub fn config_event(req: u32, arg: &Arg) -> Option<Event> {
    match (req, arg) {
        (f::KVM_ENABLE_CAP, &Arg::EnableCap { cap, args }) => match cap {
            CAP_DISABLE_QUIRKS | CAP_DISABLE_QUIRKS2 => {
                Some(Event::QuirksDisabled { cap, mask: args[0] })
            }
            CAP_X86_USER_SPACE_MSR => Some(Event::UserSpaceMsr {
                mask: args[0] as u32,
            }),
            _ => None,
        },
        (f::KVM_X86_SET_MSR_FILTER, Arg::MsrFilter(filter)) => Some(Event::MsrFilter {
            filter: filter.clone(),
        }),
        (f::KVM_SET_CPUID2, Arg::Cpuid(entries)) => Some(Event::Cpuid {
            entries: entries.clone(),
        }),
        (f::KVM_X86_SETUP_MCE, &Arg::Mce(mcg_cap)) => Some(Event::SetupMce { mcg_cap }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tracee memory: one mapped range.
    struct Fake {
        base: u64,
        bytes: Vec<u8>,
    }
    impl Mem for Fake {
        fn read(&self, addr: u64, buf: &mut [u8]) -> std::io::Result<()> {
            let off = addr
                .checked_sub(self.base)
                .ok_or(std::io::ErrorKind::InvalidInput)? as usize;
            let src = self
                .bytes
                .get(off..off + buf.len())
                .ok_or(std::io::Error::from_raw_os_error(libc::EFAULT))?;
            buf.copy_from_slice(src);
            Ok(())
        }
    }

    fn msrs(entries: &[(u32, u64)]) -> Vec<u8> {
        let mut b = (entries.len() as u32).to_le_bytes().to_vec();
        b.extend([0; 4]);
        for &(i, v) in entries {
            b.extend(i.to_le_bytes());
            b.extend([0; 4]);
            b.extend(v.to_le_bytes());
        }
        b
    }

    #[test]
    fn set_msrs_accepted_refused_not_attempted() {
        let entries = [(0x3a, 5), (0x10a, 1), (0x1a0, 1)];
        let mem = Fake {
            base: 0x1000,
            bytes: msrs(&entries),
        };
        let Arg::Msrs(read) = read_arg(&mem, f::KVM_SET_MSRS, 0x1000).unwrap() else {
            panic!()
        };
        assert_eq!(read, entries);
        let ev = msr_events(true, &read, &[], 1);
        assert_eq!(ev.len(), 2, "0x1a0 was not attempted");
        assert!(matches!(
            ev[0],
            Event::MsrWrite {
                index: 0x3a,
                value: 5,
                origin: Origin::Host,
                outcome: MsrOutcome::Ok,
                ..
            }
        ));
        assert!(matches!(
            ev[1],
            Event::MsrWrite {
                index: 0x10a,
                outcome: MsrOutcome::InjectGp,
                ..
            }
        ));
        // All accepted; a failed ioctl (E2BIG) has no per-entry events.
        assert_eq!(msr_events(true, &read, &[], 3).len(), 3);
        assert!(msr_events(true, &read, &[], -7).is_empty());
    }

    #[test]
    fn get_msrs_values_come_from_exit() {
        let entries = [(0x10, 0), (0x3a, 0)];
        let back = [(0x10, 1234), (0x3a, 5)];
        let ev = msr_events(false, &entries, &back, 2);
        assert!(matches!(
            ev[0],
            Event::MsrRead {
                index: 0x10,
                outcome: MsrOutcome::Value(1234),
                origin: Origin::Host,
                ..
            }
        ));
        assert!(matches!(
            ev[1],
            Event::MsrRead {
                index: 0x3a,
                outcome: MsrOutcome::Value(5),
                ..
            }
        ));
    }

    #[test]
    fn bounds_and_unreadable_memory() {
        let mut b = msrs(&[]);
        b[0..4].copy_from_slice(&300u32.to_le_bytes());
        let mem = Fake {
            base: 0x1000,
            bytes: b,
        };
        assert_eq!(
            read_arg(&mem, f::KVM_SET_MSRS, 0x1000).unwrap(),
            Arg::TooMany {
                what: "nmsrs",
                n: 300
            }
        );
        let err = read_arg(&mem, f::KVM_SET_CPUID2, 0x9000).unwrap_err();
        assert!(err.contains("kvm_cpuid2 at 0x9000"), "{err}");
        // nmsrs says 2 but only the header is mapped.
        let mut b = msrs(&[]);
        b[0..4].copy_from_slice(&2u32.to_le_bytes());
        let mem = Fake {
            base: 0x1000,
            bytes: b,
        };
        assert!(
            read_arg(&mem, f::KVM_GET_MSRS, 0x1000)
                .unwrap_err()
                .contains("entries")
        );
    }

    #[test]
    fn state_ioctls() {
        // kvm_sregs2: CS at 0, cr0 224, cr4 248, efer 264, apic_base 272.
        let mut b = vec![0u8; size_of::<kb::kvm_sregs2>()];
        b[0..8].copy_from_slice(&0xffff_0000u64.to_le_bytes());
        b[8..12].copy_from_slice(&0xffffu32.to_le_bytes());
        b[12..14].copy_from_slice(&0xf000u16.to_le_bytes());
        b[14] = 0xb; // type
        b[15] = 1; // present
        b[18] = 1; // s
        b[224..232].copy_from_slice(&0x6000_0010u64.to_le_bytes());
        b[264..272].copy_from_slice(&0x500u64.to_le_bytes());
        b[272..280].copy_from_slice(&0xfee0_0900u64.to_le_bytes());
        let mem = Fake { base: 0, bytes: b };
        let arg = read_arg(&mem, f::KVM_SET_SREGS2, 0).unwrap();
        assert_eq!(
            arg,
            Arg::State(VmmSet::Sregs {
                apic_base: 0xfee0_0900,
                cr0: 0x6000_0010,
                cr4: 0,
                efer: 0x500,
                cs: Segment {
                    selector: 0xf000,
                    base: 0xffff_0000,
                    limit: 0xffff,
                    attr: 0x9b,
                },
                sregs2: true,
            })
        );
        // A refused ioctl is recorded with its errno.
        assert!(matches!(
            state_event(&arg, -22),
            Some(Event::VmmState { result: -22, .. })
        ));
        // kvm_sregs is 8 bytes shorter: SET_SREGS reads only its own size.
        let mut b = vec![0u8; size_of::<kb::kvm_sregs>()];
        b[272..280].copy_from_slice(&0xfee0_0d00u64.to_le_bytes());
        let mem = Fake { base: 0, bytes: b };
        let Arg::State(VmmSet::Sregs {
            apic_base, sregs2, ..
        }) = read_arg(&mem, f::KVM_SET_SREGS, 0).unwrap()
        else {
            panic!()
        };
        assert_eq!((apic_base, sregs2), (0xfee0_0d00, false));
        assert!(read_arg(&mem, f::KVM_SET_SREGS2, 0).is_err());

        // The APIC page: ID at 0x20, SVR 0xf0, LVT LINT0 0x350, TDCR 0x3e0.
        let mut page = vec![0u8; 1024];
        for (off, v) in [
            (0x20, 1u32 << 24),
            (0xf0, 0x1ff),
            (0x350, 0x700),
            (0x3e0, 0xb),
        ] {
            page[off..off + 4].copy_from_slice(&v.to_le_bytes());
        }
        let mem = Fake {
            base: 0x1000,
            bytes: page,
        };
        let Arg::State(VmmSet::Lapic(p)) = read_arg(&mem, f::KVM_SET_LAPIC, 0x1000).unwrap() else {
            panic!()
        };
        assert_eq!(
            (p.id, p.svr, p.lvt_lint0, p.timer_divide, p.ldr),
            (1 << 24, 0x1ff, 0x700, 0xb, 0)
        );
        // One byte short of the page: a note, no event.
        assert!(
            read_arg(&mem, f::KVM_SET_LAPIC, 0x1001)
                .unwrap_err()
                .contains("kvm_lapic_state")
        );

        // kvm_vcpu_events: #GP(0) pending, NMI masked, SIPI 0x9f valid.
        let mut ev = vec![0u8; 64];
        ev[1] = 13;
        ev[2] = 1;
        ev[3] = 1;
        ev[14] = 1;
        ev[16..20].copy_from_slice(&0x9fu32.to_le_bytes());
        ev[20..24].copy_from_slice(&2u32.to_le_bytes());
        ev[27] = 1;
        let mem = Fake { base: 0, bytes: ev };
        assert_eq!(
            read_arg(&mem, f::KVM_SET_VCPU_EVENTS, 0).unwrap(),
            Arg::State(VmmSet::VcpuEvents(VcpuEventsSet {
                flags: 2,
                exception_pending: true,
                exception_nr: 13,
                exception_error_code: Some(0),
                nmi_masked: true,
                sipi_vector: 0x9f,
                latched_init: true,
                ..Default::default()
            }))
        );

        // REGS (rip 128, rflags 136), MP_STATE, SET_MCE (bank at 32).
        let mut r = vec![0u8; 144];
        r[128..136].copy_from_slice(&0xfff0u64.to_le_bytes());
        r[136..144].copy_from_slice(&2u64.to_le_bytes());
        let mem = Fake { base: 0, bytes: r };
        assert_eq!(
            read_arg(&mem, f::KVM_SET_REGS, 0).unwrap(),
            Arg::State(VmmSet::Regs {
                rip: 0xfff0,
                rflags: 2
            })
        );
        assert_eq!(
            read_arg(&mem, f::KVM_SET_MP_STATE, 0).unwrap(),
            Arg::State(VmmSet::MpState { mp_state: 0 })
        );
        let mut m = vec![0u8; 64];
        m[0..8].copy_from_slice(&(1u64 << 63).to_le_bytes());
        m[32] = 3;
        let mem = Fake { base: 0, bytes: m };
        assert!(matches!(
            read_arg(&mem, f::KVM_X86_SET_MCE, 0).unwrap(),
            Arg::State(VmmSet::Mce { bank: 3, status, .. }) if status == 1 << 63
        ));
    }

    #[test]
    fn enable_cap_and_filter() {
        let mut cap = vec![0u8; 104];
        cap[0..4].copy_from_slice(&CAP_DISABLE_QUIRKS2.to_le_bytes());
        cap[8..16].copy_from_slice(&0x7fu64.to_le_bytes());
        let mem = Fake {
            base: 0,
            bytes: cap,
        };
        let arg = read_arg(&mem, f::KVM_ENABLE_CAP, 0).unwrap();
        // Every enable is a CapEnabled event with its result, accepted or
        // refused, VM or vCPU scope.
        assert_eq!(
            cap_event(&arg, 0, false),
            Some(Event::CapEnabled {
                cap: 213,
                args: Box::new([0x7f, 0, 0, 0]),
                vcpu_scope: false,
                result: 0
            })
        );
        assert!(matches!(
            cap_event(&arg, -22, true),
            Some(Event::CapEnabled {
                cap: 213,
                vcpu_scope: true,
                result: -22,
                ..
            })
        ));
        assert_eq!(cap_event(&Arg::Mce(0), 0, false), None);
        assert_eq!(
            config_event(f::KVM_ENABLE_CAP, &arg),
            Some(Event::QuirksDisabled {
                cap: 213,
                mask: 0x7f
            })
        );

        let mut fb = vec![0u8; 392 + 2];
        fb[0..4].copy_from_slice(&1u32.to_le_bytes()); // default deny
        fb[8..12].copy_from_slice(&3u32.to_le_bytes()); // read|write
        fb[12..16].copy_from_slice(&16u32.to_le_bytes());
        fb[16..20].copy_from_slice(&0x3au32.to_le_bytes());
        fb[24..32].copy_from_slice(&392u64.to_le_bytes());
        fb[392] = 0xff;
        fb[393] = 0x01;
        let mem = Fake { base: 0, bytes: fb };
        let Arg::MsrFilter(filter) = read_arg(&mem, f::KVM_X86_SET_MSR_FILTER, 0).unwrap() else {
            panic!()
        };
        assert!(filter.default_deny);
        assert_eq!(filter.ranges.len(), 1);
        assert_eq!(filter.ranges[0].base, 0x3a);
        assert_eq!(filter.ranges[0].bitmap, vec![0xff, 0x01]);
    }
}
