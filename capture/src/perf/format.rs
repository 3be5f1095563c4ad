//! Tracepoint record layouts: the kernel's `events/SYSTEM/NAME/format` files,
//! read from a `perf.data` tracing-data section (the recording kernel's own) or
//! from this machine's tracefs. Bounded: sizes are checked against the bytes
//! there are, at most [`MAX_EVENTS`] formats and [`MAX_FIELDS`] fields each.

/// Most event formats kept from one tracing-data section.
pub const MAX_EVENTS: usize = 4096;
/// Most fields of one event.
pub const MAX_FIELDS: usize = 64;

/// One field of a tracepoint record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: usize,
    pub size: usize,
    pub signed: bool,
}

/// One tracepoint's format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventFormat {
    pub system: String,
    pub name: String,
    pub id: u64,
    pub fields: Vec<Field>,
}

impl EventFormat {
    /// The value of field `name` in `raw` (little-endian), zero- or
    /// sign-extended to 64 bits; `None` if the field is missing, not 1/2/4/8
    /// bytes, or past the end of `raw`.
    pub fn get(&self, raw: &[u8], name: &str) -> Option<u64> {
        let f = self.fields.iter().find(|f| f.name == name)?;
        let b = raw.get(f.offset..f.offset.checked_add(f.size)?)?;
        Some(match (f.size, f.signed) {
            (1, false) => u64::from(b[0]),
            (1, true) => b[0] as i8 as i64 as u64,
            (2, false) => u64::from(u16::from_le_bytes([b[0], b[1]])),
            (2, true) => i16::from_le_bytes([b[0], b[1]]) as i64 as u64,
            (4, false) => u64::from(u32::from_le_bytes(b.try_into().ok()?)),
            (4, true) => i32::from_le_bytes(b.try_into().ok()?) as i64 as u64,
            (8, _) => u64::from_le_bytes(b.try_into().ok()?),
            _ => return None,
        })
    }
}

/// Why a format or a tracing-data section could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("tracing data at offset {offset}: {what}")]
    TracingData { offset: usize, what: &'static str },
    #[error("event format: {0}")]
    Format(&'static str),
}

fn kv<'a>(part: &'a str, key: &str) -> Option<&'a str> {
    part.trim()
        .strip_prefix(key)?
        .strip_prefix(':')
        .map(str::trim)
}

/// Parse one `format` file's text (`system` is the directory it came from).
pub fn parse_format(system: &str, text: &str) -> Result<EventFormat, FormatError> {
    let mut name = None;
    let mut id = None;
    let mut fields = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("name:") {
            name = Some(v.trim().to_string());
        } else if let Some(v) = t.strip_prefix("ID:") {
            id = Some(
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| FormatError::Format("ID is not a number"))?,
            );
        } else if t.starts_with("field:") {
            if fields.len() >= MAX_FIELDS {
                return Err(FormatError::Format("too many fields"));
            }
            let mut parts = t.split(';');
            let decl = parts
                .next()
                .and_then(|p| kv(p, "field"))
                .ok_or(FormatError::Format("no field declaration"))?;
            // `TYPE NAME` or `TYPE NAME[N]`: the name is the last word.
            let fname = decl
                .rsplit(|c: char| c.is_whitespace() || c == '*')
                .next()
                .unwrap_or("");
            let fname = fname.split('[').next().unwrap_or("");
            let (mut offset, mut size, mut signed) = (None, None, false);
            for p in parts {
                if let Some(v) = kv(p, "offset") {
                    offset = v.parse::<usize>().ok();
                } else if let Some(v) = kv(p, "size") {
                    size = v.parse::<usize>().ok();
                } else if let Some(v) = kv(p, "signed") {
                    signed = v == "1";
                }
            }
            let (Some(offset), Some(size)) = (offset, size) else {
                return Err(FormatError::Format("field without offset or size"));
            };
            if offset > 1 << 16 || size > 1 << 16 {
                return Err(FormatError::Format("field offset or size past 64 KiB"));
            }
            fields.push(Field {
                name: fname.to_string(),
                offset,
                size,
                signed,
            });
        }
    }
    Ok(EventFormat {
        system: system.to_string(),
        name: name.ok_or(FormatError::Format("no name:"))?,
        id: id.ok_or(FormatError::Format("no ID:"))?,
        fields,
    })
}

/// A bounded reader of the tracing-data section.
struct Cur<'a> {
    b: &'a [u8],
    at: usize,
    big: bool,
}

impl<'a> Cur<'a> {
    fn err(&self, what: &'static str) -> FormatError {
        FormatError::TracingData {
            offset: self.at,
            what,
        }
    }
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], FormatError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| self.err(what))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, FormatError> {
        let s: [u8; 4] = self.take(4, what)?.try_into().map_err(|_| self.err(what))?;
        Ok(if self.big {
            u32::from_be_bytes(s)
        } else {
            u32::from_le_bytes(s)
        })
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, FormatError> {
        let s: [u8; 8] = self.take(8, what)?.try_into().map_err(|_| self.err(what))?;
        Ok(if self.big {
            u64::from_be_bytes(s)
        } else {
            u64::from_le_bytes(s)
        })
    }
    fn cstr(&mut self, what: &'static str) -> Result<&'a [u8], FormatError> {
        let rest = &self.b[self.at..];
        let nul = rest
            .iter()
            .take(4096)
            .position(|&c| c == 0)
            .ok_or_else(|| self.err(what))?;
        self.at += nul + 1;
        Ok(&rest[..nul])
    }
    fn sized(&mut self, what: &'static str) -> Result<&'a [u8], FormatError> {
        let n = self.u64(what)?;
        let n = usize::try_from(n).map_err(|_| self.err(what))?;
        self.take(n, what)
    }
}

/// The event formats of a `perf.data` tracing-data section (perf's
/// `tracing_data_get`, trace-event-read.c): magic, version, endianness, long and
/// page size, `header_page`, `header_event`, the ftrace formats, then per
/// system its event formats. Formats that do not parse are skipped (an event
/// without a format is counted as undecoded, never guessed).
pub fn parse_tracing_data(b: &[u8]) -> Result<Vec<EventFormat>, FormatError> {
    let mut c = Cur {
        b,
        at: 0,
        big: false,
    };
    if c.take(10, "no magic")? != b"\x17\x08\x44tracing" {
        return Err(c.err("not a tracing-data section (bad magic)"));
    }
    c.cstr("no version string")?;
    c.big = c.take(1, "no endianness byte")?[0] != 0;
    c.take(1, "no long size")?;
    c.u32("no page size")?;
    if c.take(12, "no header_page")? != b"header_page\0" {
        return Err(c.err("expected header_page"));
    }
    c.sized("header_page size past the end")?;
    if c.take(13, "no header_event")? != b"header_event\0" {
        return Err(c.err("expected header_event"));
    }
    c.sized("header_event size past the end")?;
    let n = c.u32("no ftrace format count")?;
    for _ in 0..n {
        c.sized("ftrace format past the end")?;
    }
    let systems = c.u32("no system count")?;
    let mut out = Vec::new();
    for _ in 0..systems {
        let sys = String::from_utf8_lossy(c.cstr("system name not terminated")?).into_owned();
        let count = c.u32("no event count")?;
        for _ in 0..count {
            let text = c.sized("event format past the end")?;
            if out.len() >= MAX_EVENTS {
                return Err(c.err("too many event formats"));
            }
            if let Ok(f) = parse_format(&sys, &String::from_utf8_lossy(text)) {
                out.push(f);
            }
        }
    }
    Ok(out)
}

/// This machine's format of `kvm/NAME` from tracefs, if readable.
pub fn host_format(name: &str) -> Option<EventFormat> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    for root in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        let p = format!("{root}/events/kvm/{name}/format");
        if let Ok(text) = std::fs::read_to_string(&p)
            && let Ok(f) = parse_format("kvm", &text)
        {
            return Some(f);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const KVM_MSR: &str = "name: kvm_msr\nID: 1627\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\tfield:unsigned write;\toffset:8;\tsize:4;\tsigned:0;\n\tfield:u32 ecx;\toffset:12;\tsize:4;\tsigned:0;\n\tfield:u64 data;\toffset:16;\tsize:8;\tsigned:0;\n\tfield:u8 exception;\toffset:24;\tsize:1;\tsigned:0;\n\nprint fmt: \"msr_%s %x = 0x%llx%s\", ...\n";

    #[test]
    fn reads_a_format_and_its_fields() {
        let f = parse_format("kvm", KVM_MSR).unwrap();
        assert_eq!(
            (f.name.as_str(), f.id, f.fields.len()),
            ("kvm_msr", 1627, 8)
        );
        let mut raw = vec![0u8; 32];
        raw[8] = 1;
        raw[12..16].copy_from_slice(&0x3au32.to_le_bytes());
        raw[16..24].copy_from_slice(&5u64.to_le_bytes());
        raw[24] = 1;
        raw[4..8].copy_from_slice(&(-2i32).to_le_bytes());
        assert_eq!(f.get(&raw, "ecx"), Some(0x3a));
        assert_eq!(f.get(&raw, "data"), Some(5));
        assert_eq!(f.get(&raw, "common_pid"), Some(-2i64 as u64));
        assert_eq!(f.get(&raw[..20], "data"), None, "past the end");
        assert_eq!(f.get(&raw, "nope"), None);
    }

    #[test]
    fn tracing_data_is_bounded() {
        let mut b = b"\x17\x08\x44tracing0.6\0\0\x08".to_vec();
        b.extend_from_slice(&4096u32.to_le_bytes());
        b.extend_from_slice(b"header_page\0");
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(b"header_event\0");
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(b"kvm\0");
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&(KVM_MSR.len() as u64).to_le_bytes());
        b.extend_from_slice(KVM_MSR.as_bytes());
        let f = parse_tracing_data(&b).unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].system, "kvm");
        for cut in 0..b.len() - 1 {
            let _ = parse_tracing_data(&b[..cut]);
        }
        let mut huge = b.clone();
        let at = b.len() - KVM_MSR.len() - 8;
        huge[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(parse_tracing_data(&huge).is_err());
    }
}
