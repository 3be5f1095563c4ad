//! The ftrace text line parser: `trace`, `trace_pipe` and `trace-cmd report`
//! output of the KVM tracepoints (SEMANTICS.md §6 gives their printk formats).
//!
//! ```text
//! trace / trace_pipe:    kvmprobe-2990    [001] ..... 8161.637664: kvm_msr: msr_write 401 = 0x1 (#GP)
//! with the tgid option:  kvmprobe-2990  ( 2988) [001] d..1. 8161.637664: kvm_msr: ...
//! trace-cmd report:      kvmprobe-2990  [001]  8161.637664: kvm_msr:              msr_read 10 = 0x5
//! ring-buffer overrun:   CPU:1 [LOST 123 EVENTS]
//! ```
//!
//! The task name is right-aligned and may itself contain spaces and dashes
//! ("CPU 0/KVM-1234"), so the line is split on fixed markers: the CPU field
//! `[NNN]`, the last `-` before it, the `: ` after the timestamp. No regex, no
//! allocation: every parsed piece borrows the line.

/// Longest line the importer accepts; longer ones are an error (never a buffer
/// grown from untrusted input).
pub const MAX_LINE: usize = 4096;

/// The most CPUs a CPU field may name, and the largest timestamp in seconds
/// (about 317 years of uptime): larger numbers are not from a real trace.
pub const MAX_CPU: u32 = 1 << 16;
pub const MAX_TS_SECS: u64 = 10_000_000_000;

/// One classified line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineKind<'a> {
    /// Empty or whitespace only.
    Blank,
    /// `# tracer: nop` and the other header comments.
    Comment,
    /// A `trace-cmd report` preamble line (`cpus=2`, `version = 6`, `CPU 0 is empty`).
    Preamble,
    /// `CPU:N [LOST M EVENTS]`: the ring buffer of CPU N overran (`count` 0:
    /// `CPU:N [LOST EVENTS]`, an unknown number).
    Lost { cpu: u32, count: u64 },
    /// An event line.
    Event(EventLine<'a>),
}

/// The common part of an event line; `fields` is the tracepoint's printk text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventLine<'a> {
    pub task: &'a [u8],
    pub pid: u32,
    /// The thread group (process) id, when the text has the tgid column
    /// (`options/record-tgid`, `trace-cmd report` of such a capture).
    pub tgid: Option<u32>,
    pub cpu: u32,
    /// The timestamp in nanoseconds (text gives microseconds for the `local`,
    /// `global` and `mono` clocks; trace-cmd may give nanoseconds).
    pub ts_ns: u64,
    pub event: &'a [u8],
    pub fields: &'a [u8],
}

/// Why a line is not an ftrace line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("no `[CPU]` field")]
    NoCpuField,
    #[error("no `TASK-PID` before the CPU field")]
    NoPid,
    #[error("the pid is not a number below 2^32")]
    BadPid,
    #[error("the CPU number is not a number below {MAX_CPU}")]
    BadCpu,
    #[error("no `TIMESTAMP:` after the CPU field")]
    NoTimestamp,
    #[error("the timestamp is not SECONDS.FRACTION below {MAX_TS_SECS} s")]
    BadTimestamp,
    #[error("no `event:` after the timestamp")]
    NoEventName,
    #[error("the line holds a NUL byte (binary data)")]
    Binary,
}

fn is_space(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if is_space(*first) || *first == b'\r' || *first == b'\n' {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if is_space(*last) || *last == b'\r' || *last == b'\n' {
            s = rest;
        } else {
            break;
        }
    }
    s
}

fn trim_start(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if is_space(*first) {
            s = rest;
        } else {
            break;
        }
    }
    s
}

/// A decimal number of at most `max_digits` digits; the whole slice must be digits.
pub fn parse_dec(s: &[u8], max_digits: usize) -> Option<u64> {
    if s.is_empty() || s.len() > max_digits {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

/// A hexadecimal number with or without `0x`, at most 16 digits; the whole slice
/// must be the number.
pub fn parse_hex(s: &[u8]) -> Option<u64> {
    let s = s
        .strip_prefix(b"0x")
        .or_else(|| s.strip_prefix(b"0X"))
        .unwrap_or(s);
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | u64::from(d);
    }
    Some(v)
}

/// `SECONDS.FRACTION` (fraction of 1 to 9 digits) to nanoseconds; a bare
/// integer is a counter clock (`counter`, `x86-tsc`) taken as is.
fn parse_timestamp(s: &[u8]) -> Option<u64> {
    let Some(dot) = s.iter().position(|&b| b == b'.') else {
        return parse_dec(s, 20);
    };
    let (secs, frac) = (&s[..dot], &s[dot + 1..]);
    let secs = parse_dec(secs, 11)?;
    if secs > MAX_TS_SECS {
        return None;
    }
    let f = parse_dec(frac, 9)?;
    let scale = 10u64.pow(9 - u32::try_from(frac.len()).ok()?);
    Some(secs * 1_000_000_000 + f * scale)
}

/// Find the CPU field `[NNN]`: returns (index of `[`, index after `]`, cpu).
fn find_cpu_field(line: &[u8]) -> Option<(usize, usize, u32)> {
    let mut from = 0;
    while let Some(off) = line[from..].iter().position(|&b| b == b'[') {
        let lb = from + off;
        let rest = &line[lb + 1..];
        if let Some(rb) = rest.iter().take(8).position(|&b| b == b']') {
            let digits = &rest[..rb];
            // The task-pid (or tgid) field ends right before the CPU field.
            let before_ok = lb > 0 && matches!(line[lb - 1], b' ' | b'\t' | b')');
            if before_ok {
                if let Some(cpu) = parse_dec(trim(digits), 6) {
                    return u32::try_from(cpu).ok().map(|c| (lb, lb + 2 + rb, c));
                }
            }
        }
        from = lb + 1;
    }
    None
}

/// `CPU:N [LOST M EVENTS]`.
fn parse_lost(line: &[u8]) -> Option<(u32, u64)> {
    let rest = line.strip_prefix(b"CPU:")?;
    let sp = rest.iter().position(|&b| b == b' ')?;
    let cpu = u32::try_from(parse_dec(&rest[..sp], 6)?).ok()?;
    let rest = trim_start(&rest[sp..]).strip_prefix(b"[LOST ")?;
    // The kernel prints `[LOST EVENTS]` when it could not count them
    // (print_trace_line, lost_events == -1): 0 stands for "unknown".
    if rest == b"EVENTS]" {
        return Some((cpu, 0));
    }
    let sp = rest.iter().position(|&b| b == b' ')?;
    let count = parse_dec(&rest[..sp], 20)?;
    rest[sp..].starts_with(b" EVENTS]").then_some((cpu, count))
}

fn is_preamble(line: &[u8]) -> bool {
    line.starts_with(b"cpus=")
        || line.starts_with(b"version =")
        || line.starts_with(b"version=")
        || (line.starts_with(b"CPU ") && line.ends_with(b" is empty"))
        || line.starts_with(b"trace-cmd:")
}

/// Classify and split one line (without its newline).
pub fn parse_line(raw: &[u8]) -> Result<LineKind<'_>, LineError> {
    if raw.contains(&0) {
        return Err(LineError::Binary);
    }
    let line = trim(raw);
    if line.is_empty() {
        return Ok(LineKind::Blank);
    }
    if line[0] == b'#' {
        return Ok(LineKind::Comment);
    }
    if let Some((cpu, count)) = parse_lost(line) {
        return Ok(LineKind::Lost { cpu, count });
    }
    if is_preamble(line) {
        return Ok(LineKind::Preamble);
    }
    let (lb, after, cpu) = find_cpu_field(line).ok_or(LineError::NoCpuField)?;
    if cpu > MAX_CPU {
        return Err(LineError::BadCpu);
    }
    // TASK-PID, optionally followed by `(TGID)`.
    let mut head = trim(&line[..lb]);
    let mut tgid = None;
    if head.last() == Some(&b')') {
        let open = head
            .iter()
            .rposition(|&b| b == b'(')
            .ok_or(LineError::NoPid)?;
        // `(  1200)`, or `(-------)` when the kernel did not record it.
        tgid = parse_dec(trim(&head[open + 1..head.len() - 1]), 10)
            .and_then(|t| u32::try_from(t).ok())
            .filter(|&t| t != 0);
        head = trim(&head[..open]);
    }
    let dash = head
        .iter()
        .rposition(|&b| b == b'-')
        .ok_or(LineError::NoPid)?;
    let pid = parse_dec(&head[dash + 1..], 10)
        .and_then(|p| u32::try_from(p).ok())
        .ok_or(LineError::BadPid)?;
    let task = trim_start(&head[..dash]);

    // Optional flags, then the timestamp ending in ':'.
    let mut rest = trim_start(&line[after..]);
    let tok_end = |s: &[u8]| s.iter().position(|&b| is_space(b)).unwrap_or(s.len());
    let mut end = tok_end(rest);
    if end == 0 {
        return Err(LineError::NoTimestamp);
    }
    if rest[end - 1] != b':' {
        // The irq-info flags (`.....`, `.N...`, `d..1.`); trace-cmd may omit them.
        if end > 8 {
            return Err(LineError::NoTimestamp);
        }
        rest = trim_start(&rest[end..]);
        end = tok_end(rest);
        if end == 0 || rest[end - 1] != b':' {
            return Err(LineError::NoTimestamp);
        }
    }
    let ts_ns = parse_timestamp(&rest[..end - 1]).ok_or(LineError::BadTimestamp)?;
    let rest = trim_start(&rest[end..]);
    let colon = rest
        .iter()
        .position(|&b| b == b':')
        .ok_or(LineError::NoEventName)?;
    let event = &rest[..colon];
    if event.is_empty()
        || !event
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(LineError::NoEventName);
    }
    let fields = trim_start(&rest[colon + 1..]);
    Ok(LineKind::Event(EventLine {
        task,
        pid,
        tgid,
        cpu,
        ts_ns,
        event,
        fields,
    }))
}
