//! `perf script` text to ftrace lines, one line for one line (so errors name the
//! `perf script` line number):
//!
//! ```text
//! perf script:        qemu-system-x86  1902 [000]  1256.753430:   kvm:kvm_msr: msr_write 3a = 0x5 (#GP)
//! with -F pid,tid:    qemu-system-x86 1899/1902 [000]  1256.753430:   kvm:kvm_msr: ...
//! raw fields:         ... kvm:kvm_inj_exception: [FAILED TO PARSE] exception=13 has_error=1 error_code=0 reinjected=0
//! becomes:            qemu-system-x86-1902 [000] 1256.753430: kvm_msr: msr_write 3a = 0x5 (#GP)
//! ```
//!
//! Lines that are not `perf script` event lines (comments, blank lines, other
//! text) pass through unchanged, for the ftrace reader to classify or reject.

use std::io::{BufRead, BufReader, Read};

use crate::line::{MAX_LINE, parse_dec, parse_hex};

/// Reads `perf script` text, yields ftrace text.
pub struct PerfScriptText<R> {
    inner: BufReader<R>,
    line: Vec<u8>,
    out: Vec<u8>,
    pos: usize,
    /// Inside an over-long line: pass the rest through as it comes.
    passthrough: bool,
}

impl<R: Read> PerfScriptText<R> {
    pub fn new(inner: R) -> Self {
        PerfScriptText {
            inner: BufReader::with_capacity(256 * 1024, inner),
            line: Vec::with_capacity(MAX_LINE + 1),
            out: Vec::with_capacity(MAX_LINE + 64),
            pos: 0,
            passthrough: false,
        }
    }

    /// Fill `out` with the next converted line (or a piece of an over-long
    /// one); false at end of input.
    fn refill(&mut self) -> std::io::Result<bool> {
        self.out.clear();
        self.pos = 0;
        self.line.clear();
        loop {
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                break;
            }
            let room = MAX_LINE + 1 - self.line.len();
            let (take, done) = match buf.iter().take(room).position(|&b| b == b'\n') {
                Some(nl) => (nl + 1, true),
                None => (buf.len().min(room), false),
            };
            self.line.extend_from_slice(&buf[..take]);
            self.inner.consume(take);
            if done {
                break;
            }
            if self.line.len() > MAX_LINE {
                // Over-long: hand it on as is; the ftrace reader reports it.
                self.passthrough = true;
                std::mem::swap(&mut self.out, &mut self.line);
                return Ok(true);
            }
        }
        if self.line.is_empty() {
            return Ok(false);
        }
        if self.passthrough {
            self.passthrough = !self.line.ends_with(b"\n");
            std::mem::swap(&mut self.out, &mut self.line);
            return Ok(true);
        }
        let body = self.line.strip_suffix(b"\n").unwrap_or(&self.line);
        if !convert_line(body, &mut self.out) {
            self.out.clear();
            self.out.extend_from_slice(&self.line);
        } else if self.line.ends_with(b"\n") {
            self.out.push(b'\n');
        }
        Ok(true)
    }
}

impl<R: Read> Read for PerfScriptText<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.out.len() && !self.refill()? {
            return Ok(0);
        }
        Ok(super::copy_out(&self.out, &mut self.pos, buf))
    }
}

fn is_space(b: u8) -> bool {
    b == b' ' || b == b'\t' || b == b'\r'
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_space(b)).unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|&b| !is_space(b))
        .map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}

/// One `perf script` event line into an ftrace line (no newline); false if it
/// is not one.
pub fn convert_line(line: &[u8], out: &mut Vec<u8>) -> bool {
    let t = trim(line);
    if t.is_empty() || t[0] == b'#' {
        return false;
    }
    // The CPU field: `[NNN]` after a space.
    let Some((lb, rb)) = (0..t.len()).find_map(|i| {
        if t[i] != b'[' || i == 0 || !is_space(t[i - 1]) {
            return None;
        }
        let close = t[i + 1..].iter().take(8).position(|&b| b == b']')?;
        parse_dec(&t[i + 1..i + 1 + close], 6).map(|_| (i, i + 1 + close))
    }) else {
        return false;
    };
    let cpu = &t[lb + 1..rb];
    let head = trim(&t[..lb]);
    let split = head.iter().rposition(|&b| is_space(b));
    let (comm, ids) = match split {
        Some(s) => (trim(&head[..s]), &head[s + 1..]),
        None => (&b""[..], head),
    };
    let tid = match ids.iter().position(|&b| b == b'/') {
        Some(sl) => &ids[sl + 1..],
        None => ids,
    };
    if parse_dec(tid, 10).is_none() {
        return false;
    }
    let rest = trim(&t[rb + 1..]);
    let Some(ts_end) = rest.iter().position(|&b| b == b':') else {
        return false;
    };
    let ts = &rest[..ts_end];
    if ts.is_empty() || !ts.iter().all(|&b| b.is_ascii_digit() || b == b'.') {
        return false;
    }
    let rest = trim(&rest[ts_end + 1..]);
    // `SYSTEM:EVENT:` (perf) or `EVENT:`.
    let Some(c1) = rest.iter().position(|&b| b == b':') else {
        return false;
    };
    let (mut event, mut after) = (&rest[..c1], &rest[c1 + 1..]);
    if let Some(c2) = after.iter().position(|&b| b == b':')
        && !after[..c2].contains(&b' ')
        && !after[..c2].is_empty()
    {
        event = &after[..c2];
        after = &after[c2 + 1..];
    }
    if event.is_empty()
        || !event
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return false;
    }
    let fields = trim(after);
    out.extend_from_slice(if comm.is_empty() { b"<...>" } else { comm });
    out.push(b'-');
    out.extend_from_slice(tid);
    out.extend_from_slice(b" [");
    out.extend_from_slice(cpu);
    out.extend_from_slice(b"] ");
    out.extend_from_slice(ts);
    out.extend_from_slice(b": ");
    out.extend_from_slice(event);
    out.extend_from_slice(b": ");
    match fields.strip_prefix(b"[FAILED TO PARSE]") {
        Some(kv) => {
            let ev = std::str::from_utf8(event).unwrap_or("");
            let lookup = |name: &str| raw_field(kv, name);
            if super::printk::print(ev, &lookup, out).is_none() {
                out.extend_from_slice(fields);
            }
        }
        None => out.extend_from_slice(fields),
    }
    true
}

/// `name=VALUE` among perf's raw fields (decimal, possibly negative, or hex).
fn raw_field(kv: &[u8], name: &str) -> Option<u64> {
    kv.split(|&b| is_space(b)).find_map(|w| {
        let v = w.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
        if let Some(neg) = v.strip_prefix(b"-") {
            return parse_dec(neg, 20).map(|n| (n as i64).wrapping_neg() as u64);
        }
        if v.starts_with(b"0x") {
            return parse_hex(v);
        }
        parse_dec(v, 20)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(s: &str) -> Option<String> {
        let mut out = Vec::new();
        convert_line(s.as_bytes(), &mut out).then(|| String::from_utf8(out).unwrap())
    }

    #[test]
    fn perf_script_lines_become_ftrace_lines() {
        assert_eq!(
            conv(" qemu-system-x86  1902 [000]  1256.753430:                        kvm:kvm_msr: msr_write 3a = 0x5 (#GP)").as_deref(),
            Some("qemu-system-x86-1902 [000] 1256.753430: kvm_msr: msr_write 3a = 0x5 (#GP)")
        );
        assert_eq!(
            conv(" qemu-system-x86 18530/18533 [000]  1682.600371:  kvm:kvm_userspace_exit: reason KVM_EXIT_UNKNOWN (0)").as_deref(),
            Some("qemu-system-x86-18533 [000] 1682.600371: kvm_userspace_exit: reason KVM_EXIT_UNKNOWN (0)")
        );
        assert_eq!(
            conv("       CPU 0/KVM  1902 [001]  1.5:  kvm:kvm_inj_exception: [FAILED TO PARSE] exception=13 has_error=1 error_code=0 reinjected=0").as_deref(),
            Some("CPU 0/KVM-1902 [001] 1.5: kvm_inj_exception: #GP (0x0)")
        );
        assert_eq!(conv("# ========"), None);
        assert_eq!(conv(""), None);
        assert_eq!(conv("garbage [x] 1: a: b"), None);
    }

    #[test]
    fn every_line_stays_one_line() {
        let text = b"# header\n qemu 1 [000] 1.000001: kvm:kvm_msr: msr_read 10 = 0x1\nnot perf\n";
        let mut out = String::new();
        PerfScriptText::new(&text[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(
            out,
            "# header\nqemu-1 [000] 1.000001: kvm_msr: msr_read 10 = 0x1\nnot perf\n"
        );
        let long = vec![b'x'; MAX_LINE * 3];
        let mut v = Vec::new();
        PerfScriptText::new(&long[..]).read_to_end(&mut v).unwrap();
        assert_eq!(v, long);
    }
}
