//! `record --payload FILE`: a flat binary loaded at `layout::CODE_ADDR`, or a
//! 64-bit x86-64 ELF whose PT_LOAD segments are loaded at their (identity-mapped)
//! addresses. See `recorder/PAYLOADS.md`.

use std::path::{Path, PathBuf};

use crate::layout;
use crate::scenarios::{Region, ScenarioSpec};

/// Lowest and end of the guest addresses a payload may load into: code and data
/// areas (below: VMM tables; above: stacks).
pub const LOAD_MIN: u64 = layout::CODE_ADDR;
pub const LOAD_END: u64 = layout::STACK_BASE;
/// Largest payload file read.
pub const FILE_MAX: u64 = 64 << 20;
const MAX_PHDRS: u16 = 64;
const PT_LOAD: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("cannot read payload {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("payload {path} is empty")]
    Empty { path: PathBuf },
    #[error(
        "payload {path} is {size} bytes; guest memory for code and data is {limit} bytes \
         ({LOAD_MIN:#x}..{LOAD_END:#x})"
    )]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("malformed ELF {path} at offset {offset:#x}: {what}")]
    Malformed {
        path: PathBuf,
        offset: u64,
        what: String,
    },
    #[error("ELF {path} is not a 64-bit little-endian x86-64 executable: {what}")]
    NotX86_64 { path: PathBuf, what: String },
    #[error(
        "ELF {path}: segment {index} ({start:#x}..{end:#x}) is outside the payload area \
         {LOAD_MIN:#x}..{LOAD_END:#x}"
    )]
    OutOfRange {
        path: PathBuf,
        index: usize,
        start: u64,
        end: u64,
    },
    #[error("ELF {path}: entry point {entry:#x} is not inside a loaded segment")]
    BadEntry { path: PathBuf, entry: u64 },
}

/// A loaded payload: regions, entry point, and the bytes that were hashed.
#[derive(Clone, Debug)]
pub struct Payload {
    pub regions: Vec<Region>,
    pub entry: u64,
    pub file_bytes: Vec<u8>,
}

pub fn load(path: &Path) -> Result<Payload, PayloadError> {
    let read_err = |source| PayloadError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if meta.len() > FILE_MAX {
        return Err(PayloadError::TooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
            limit: LOAD_END - LOAD_MIN,
        });
    }
    let bytes = std::fs::read(path).map_err(read_err)?;
    parse(path, bytes)
}

pub fn parse(path: &Path, bytes: Vec<u8>) -> Result<Payload, PayloadError> {
    if bytes.is_empty() {
        return Err(PayloadError::Empty {
            path: path.to_path_buf(),
        });
    }
    if bytes.starts_with(b"\x7fELF") {
        return parse_elf(path, bytes);
    }
    let size = bytes.len() as u64;
    if size > layout::CODE_MAX {
        return Err(PayloadError::TooLarge {
            path: path.to_path_buf(),
            size,
            limit: layout::CODE_MAX,
        });
    }
    Ok(Payload {
        regions: vec![Region {
            addr: layout::CODE_ADDR,
            bytes: bytes.clone(),
        }],
        entry: layout::CODE_ADDR,
        file_bytes: bytes,
    })
}

fn field<const N: usize>(
    path: &Path,
    b: &[u8],
    off: u64,
    what: &str,
) -> Result<[u8; N], PayloadError> {
    let start = usize::try_from(off).unwrap_or(usize::MAX);
    b.get(start..start.saturating_add(N))
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| PayloadError::Malformed {
            path: path.to_path_buf(),
            offset: off,
            what: format!("{what} runs past the end of the file ({} bytes)", b.len()),
        })
}

fn u16_at(path: &Path, b: &[u8], off: u64, what: &str) -> Result<u16, PayloadError> {
    field::<2>(path, b, off, what).map(u16::from_le_bytes)
}
fn u32_at(path: &Path, b: &[u8], off: u64, what: &str) -> Result<u32, PayloadError> {
    field::<4>(path, b, off, what).map(u32::from_le_bytes)
}
fn u64_at(path: &Path, b: &[u8], off: u64, what: &str) -> Result<u64, PayloadError> {
    field::<8>(path, b, off, what).map(u64::from_le_bytes)
}

fn parse_elf(path: &Path, bytes: Vec<u8>) -> Result<Payload, PayloadError> {
    let p = path;
    let not = |what: &str| PayloadError::NotX86_64 {
        path: p.to_path_buf(),
        what: what.into(),
    };
    let ident: [u8; 16] = field(p, &bytes, 0, "the ELF identification")?;
    if ident[4] != 2 {
        return Err(not("EI_CLASS is not ELFCLASS64"));
    }
    if ident[5] != 1 {
        return Err(not("EI_DATA is not little-endian"));
    }
    let machine = u16_at(p, &bytes, 18, "e_machine")?;
    if machine != 62 {
        return Err(not(&format!("e_machine is {machine}, not 62 (EM_X86_64)")));
    }
    let entry = u64_at(p, &bytes, 24, "e_entry")?;
    let phoff = u64_at(p, &bytes, 32, "e_phoff")?;
    let phentsize = u16_at(p, &bytes, 54, "e_phentsize")?;
    let phnum = u16_at(p, &bytes, 56, "e_phnum")?;
    let malformed = |offset: u64, what: String| PayloadError::Malformed {
        path: p.to_path_buf(),
        offset,
        what,
    };
    if phentsize < 56 {
        return Err(malformed(54, format!("e_phentsize {phentsize} < 56")));
    }
    if phnum == 0 || phnum > MAX_PHDRS {
        return Err(malformed(
            56,
            format!("e_phnum {phnum} is not in 1..={MAX_PHDRS}"),
        ));
    }
    let mut regions = Vec::new();
    for i in 0..phnum {
        let ph = phoff
            .checked_add(u64::from(i) * u64::from(phentsize))
            .ok_or_else(|| malformed(32, "e_phoff overflows".into()))?;
        if u32_at(p, &bytes, ph, "p_type")? != PT_LOAD {
            continue;
        }
        let offset = u64_at(p, &bytes, ph + 8, "p_offset")?;
        let vaddr = u64_at(p, &bytes, ph + 16, "p_vaddr")?;
        let filesz = u64_at(p, &bytes, ph + 32, "p_filesz")?;
        let memsz = u64_at(p, &bytes, ph + 40, "p_memsz")?;
        if filesz > memsz {
            return Err(malformed(
                ph + 32,
                format!("p_filesz {filesz:#x} > p_memsz {memsz:#x}"),
            ));
        }
        let end = vaddr.saturating_add(memsz);
        if vaddr < LOAD_MIN || end > LOAD_END {
            return Err(PayloadError::OutOfRange {
                path: p.to_path_buf(),
                index: usize::from(i),
                start: vaddr,
                end,
            });
        }
        let file_end = offset.saturating_add(filesz);
        if file_end > bytes.len() as u64 {
            return Err(malformed(
                ph + 8,
                format!(
                    "segment {i} data {offset:#x}..{file_end:#x} runs past the end of the file ({} bytes)",
                    bytes.len()
                ),
            ));
        }
        // memsz is bounded by LOAD_END - LOAD_MIN (checked above).
        let mut seg = bytes[offset as usize..file_end as usize].to_vec();
        seg.resize(memsz as usize, 0);
        regions.push(Region {
            addr: vaddr,
            bytes: seg,
        });
    }
    if regions.is_empty() {
        return Err(malformed(phoff, "no PT_LOAD segment".into()));
    }
    if !regions
        .iter()
        .any(|r| (r.addr..r.addr + r.bytes.len() as u64).contains(&entry))
    {
        return Err(PayloadError::BadEntry {
            path: p.to_path_buf(),
            entry,
        });
    }
    Ok(Payload {
        regions,
        entry,
        file_bytes: bytes,
    })
}

/// The spec a payload runs under: every vCPU enters long mode at the entry point,
/// no CPUID edits, no quirks, no irqchip, stop on shutdown.
pub fn spec(name: &str, payload: &Payload, vcpus: u32) -> ScenarioSpec {
    ScenarioSpec::long_mode(name, vcpus, payload.regions.clone(), payload.entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf(entry: u64, vaddr: u64, code: &[u8], machine: u16) -> Vec<u8> {
        let mut b = vec![0u8; 64 + 56];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        b[24..32].copy_from_slice(&entry.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&1u16.to_le_bytes());
        let ph = 64;
        b[ph..ph + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
        b[ph + 8..ph + 16].copy_from_slice(&120u64.to_le_bytes());
        b[ph + 16..ph + 24].copy_from_slice(&vaddr.to_le_bytes());
        b[ph + 32..ph + 40].copy_from_slice(&(code.len() as u64).to_le_bytes());
        b[ph + 40..ph + 48].copy_from_slice(&(code.len() as u64 + 16).to_le_bytes());
        b.extend_from_slice(code);
        b
    }

    #[test]
    fn flat_and_elf() {
        let p = Path::new("x");
        let flat = parse(p, vec![0xf4]).unwrap();
        assert_eq!(flat.entry, layout::CODE_ADDR);
        let e = parse(p, elf(0x200000, 0x200000, &[0x90, 0xf4], 62)).unwrap();
        assert_eq!(e.entry, 0x200000);
        assert_eq!(e.regions[0].bytes.len(), 18);
    }

    #[test]
    fn bad_elves_say_why() {
        let p = Path::new("bad.elf");
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (elf(0x200000, 0x200000, &[0x90], 3), "e_machine is 3"),
            (
                elf(0x200000, 0x1000, &[0x90], 62),
                "outside the payload area",
            ),
            (elf(0x300000, 0x200000, &[0x90], 62), "entry point"),
            (b"\x7fELF\x02\x01".to_vec(), "runs past the end"),
            (Vec::new(), "empty"),
        ];
        for (bytes, want) in cases {
            let err = parse(p, bytes).unwrap_err().to_string();
            assert!(err.contains(want), "{err} lacks {want:?}");
        }
        let mut truncated = elf(0x200000, 0x200000, &[0x90; 8], 62);
        truncated.truncate(124);
        let err = parse(p, truncated).unwrap_err().to_string();
        assert!(err.contains("runs past the end"), "{err}");
    }
}
