//! Streaming ftrace text import: bounded line reader, classification, conversion
//! to records. Memory stays bounded whatever the input size: one fixed buffer,
//! one vCPU table (at most `MAX_VCPUS`), records handed to the sink as they come.

use std::io::Read;

use crate::line::MAX_LINE;
use crate::split::{SplitError, ThreadDesc, VmSplitter};
use crate::{ConvertStats, FieldError, LineError, LineKind, parse_event, parse_line};
use kvmtrace_format::{Event, LostSource, Record};

/// Lines that are neither comments nor event lines tolerated before the first
/// event line (a shell prompt pasted with the text); more means it is not ftrace.
const MAX_LEADING_JUNK: u64 = 16;
const READ_BUF: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("reading {file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}: binary data (a NUL byte): this is not ftrace text")]
    Binary { file: String, line: u64 },
    #[error("{file}:{line}: not ftrace output ({why}): {text:?}")]
    NotFtrace {
        file: String,
        line: u64,
        why: LineError,
        text: String,
    },
    #[error("{file}:{line}: line longer than {MAX_LINE} bytes")]
    LineTooLong { file: String, line: u64 },
    #[error("{file}:{line}: not an ftrace event line ({why}; cut mid-way?): {text:?}")]
    BadLine {
        file: String,
        line: u64,
        why: LineError,
        text: String,
    },
    #[error(
        "{file}:{line}: the last line does not end in a newline: the text was cut mid-line \
         ({text:?}); pass --lenient to import the rest and record the line as lost"
    )]
    CutLine {
        file: String,
        line: u64,
        text: String,
    },
    #[error("{file}:{line}: {why}: {text:?}")]
    Malformed {
        file: String,
        line: u64,
        why: FieldError,
        text: String,
    },
    #[error("{file}:{line}: {source}")]
    Convert {
        file: String,
        line: u64,
        #[source]
        source: SplitError,
    },
    #[error("{file}: no VM {select:?} among its {vms} VMs")]
    NoSuchVm {
        file: String,
        select: VmSelect,
        vms: usize,
    },
    #[error(
        "{file}: no KVM events ({lines} lines, {other} events of other types): nothing to import"
    )]
    NoKvmEvents {
        file: String,
        lines: u64,
        other: u64,
    },
    #[error("writing the trace: {0}")]
    Write(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Import options.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Skip malformed lines (counted, recorded as `Lost { source: Import }`).
    pub lenient: bool,
}

/// What an import read and wrote.
#[derive(Clone, Debug, Default)]
pub struct ImportSummary {
    pub lines: u64,
    pub bytes: u64,
    pub records: u64,
    pub kvm_lines: u64,
    /// Event lines of types kvmtrace does not decode, skipped.
    pub other_events: u64,
    /// Lines skipped with `--lenient`.
    pub skipped: u64,
    /// Events the kernel reported lost (`[LOST N EVENTS]`).
    pub ring_lost: u64,
    /// vCPUs over every VM.
    pub vcpus: u32,
    pub convert: ConvertStats,
    /// The text did not end in a newline: its last line may be cut short.
    pub unterminated: bool,
    /// VMs in the text (each its own trace).
    pub vms: usize,
    /// Per VM written: (process id if known, vCPU numbers, records, vCPUs
    /// whose number is a guess).
    pub per_vm: Vec<VmImport>,
    /// Records of VMs left out (`pid` selected another).
    pub other_vm_records: u64,
    /// VMs were told apart without process ids (no tgid column).
    pub membership_guessed: bool,
}

/// One VM of an import.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VmImport {
    /// Index in the text (order of first event).
    pub vm: usize,
    pub pid: Option<u32>,
    pub vcpus: Vec<u32>,
    pub guessed: Vec<u32>,
    pub records: u64,
}

/// A line reader with a fixed buffer: lines longer than `MAX_LINE` are reported,
/// never buffered whole.
struct LineReader<R> {
    inner: R,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    eof: bool,
    consumed: u64,
    unterminated: bool,
}

enum NextLine {
    Line(std::ops::Range<usize>),
    TooLong,
    Eof,
}

impl<R: Read> LineReader<R> {
    fn new(inner: R) -> Self {
        LineReader {
            inner,
            buf: vec![0; READ_BUF].into_boxed_slice(),
            start: 0,
            end: 0,
            eof: false,
            consumed: 0,
            unterminated: false,
        }
    }

    fn fill(&mut self) -> std::io::Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while self.end < self.buf.len() {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => {
                    self.end += n;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn next(&mut self) -> std::io::Result<NextLine> {
        let mut searched = 0;
        loop {
            let avail = &self.buf[self.start + searched..self.end];
            if let Some(nl) = avail.iter().position(|&b| b == b'\n') {
                let line_end = self.start + searched + nl;
                let range = self.start..line_end;
                self.consumed += (line_end + 1 - self.start) as u64;
                self.start = line_end + 1;
                if range.len() > MAX_LINE {
                    return Ok(NextLine::TooLong);
                }
                return Ok(NextLine::Line(range));
            }
            searched = self.end - self.start;
            if searched > MAX_LINE {
                // Drop the rest of the over-long line.
                loop {
                    self.start = self.end;
                    self.fill()?;
                    if let Some(nl) = self.buf[..self.end].iter().position(|&b| b == b'\n') {
                        self.start = nl + 1;
                        return Ok(NextLine::TooLong);
                    }
                    if self.eof {
                        self.start = self.end;
                        return Ok(NextLine::TooLong);
                    }
                }
            }
            if self.eof {
                if self.start == self.end {
                    return Ok(NextLine::Eof);
                }
                let range = self.start..self.end;
                self.consumed += range.len() as u64;
                self.start = self.end;
                self.unterminated = true;
                return Ok(NextLine::Line(range));
            }
            self.fill()?;
            searched = searched.min(self.end - self.start);
        }
    }
}

fn lossy(line: &[u8]) -> String {
    let cut = &line[..line.len().min(160)];
    String::from_utf8_lossy(cut).into_owned()
}

/// Import ftrace text from `input` (named `file` in errors), handing VM 0's
/// records to `sink` in order (a text of several VMs: `import_ftrace_split`).
/// `progress` is told the bytes consumed every 64Ki lines.
pub fn import_ftrace<R: Read, E>(
    input: R,
    file: &str,
    opts: &ImportOptions,
    sink: &mut dyn FnMut(Record) -> Result<(), E>,
    progress: &mut dyn FnMut(u64),
) -> Result<ImportSummary, ImportError>
where
    E: std::error::Error + Send + Sync + 'static,
{
    import_ftrace_split(
        input,
        file,
        opts,
        Some(VmSelect::Index(0)),
        &mut |_, r| sink(r),
        progress,
    )
}

/// Which VM of a text to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmSelect {
    /// The VM of this process (tgid column) or holding this thread id.
    Pid(u32),
    /// The k-th VM in order of first event.
    Index(usize),
}

/// One VM's output state.
#[derive(Clone, Debug, Default)]
struct VmSeq {
    seq: u64,
    records: u64,
    /// Losses before this VM's first record (sent with it).
    lost_import: u64,
    /// `[LOST N EVENTS]` before this VM's first record (N may be 0: the
    /// kernel could not count them).
    lost_ring: Option<u64>,
}

/// Import ftrace text holding any number of VMs (`split::VmSplitter`: never
/// merged): records go to `sink` as (VM index, record), each VM with its own
/// sequence numbers. `select` keeps one VM only. A loss (`[LOST N EVENTS]`,
/// skipped lines) is recorded in every VM's trace, since the text does not
/// say whose events were lost.
pub fn import_ftrace_split<R: Read, E>(
    input: R,
    file: &str,
    opts: &ImportOptions,
    select: Option<VmSelect>,
    sink: &mut dyn FnMut(usize, Record) -> Result<(), E>,
    progress: &mut dyn FnMut(u64),
) -> Result<ImportSummary, ImportError>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let file = file.to_string();
    let mut reader = LineReader::new(input);
    let mut split = VmSplitter::new(false);
    let mut out = VmOuts {
        select,
        vms: Vec::new(),
        early_ring_lost: None,
        sink,
    };
    let mut sum = ImportSummary::default();
    let mut base_ts: Option<u64> = None;
    let mut last_ts = 0u64;
    let mut seen_event_line = false;
    let mut leading_junk: Option<(u64, LineError, String)> = None;
    let mut junk_count = 0u64;
    let mut pending_lost = 0u64;
    let read_err = |file: &str, e| ImportError::Read {
        file: file.to_string(),
        source: e,
    };

    // A binary file is told apart before any line is cut from it.
    reader.fill().map_err(|e| read_err(&file, e))?;
    if reader.buf[..reader.end].contains(&0) {
        return Err(ImportError::Binary { file, line: 1 });
    }
    loop {
        let range = match reader.next().map_err(|e| read_err(&file, e))? {
            NextLine::Eof => break,
            NextLine::TooLong => {
                sum.lines += 1;
                if opts.lenient && seen_event_line {
                    sum.skipped += 1;
                    pending_lost += 1;
                    continue;
                }
                return Err(ImportError::LineTooLong {
                    file,
                    line: sum.lines,
                });
            }
            NextLine::Line(r) => r,
        };
        sum.lines += 1;
        let lineno = sum.lines;
        if lineno & 0xffff == 0 {
            progress(reader.consumed);
        }
        let raw = &reader.buf[range];
        // A last line without its newline was cut (a copy or a kill mid-write):
        // its last field may be short (`0x1edffed788` read as `0x1edffe`).
        if reader.unterminated
            && !matches!(parse_line(raw), Ok(LineKind::Blank | LineKind::Comment))
        {
            if opts.lenient && seen_event_line {
                sum.skipped += 1;
                pending_lost += 1;
                continue;
            }
            return Err(ImportError::CutLine {
                file,
                line: lineno,
                text: lossy(raw),
            });
        }
        let kind = match parse_line(raw) {
            Ok(k) => k,
            Err(LineError::Binary) => return Err(ImportError::Binary { file, line: lineno }),
            Err(why) if !seen_event_line => {
                junk_count += 1;
                if leading_junk.is_none() {
                    leading_junk = Some((lineno, why, lossy(raw)));
                }
                if junk_count > MAX_LEADING_JUNK {
                    let (line, why, text) =
                        leading_junk
                            .take()
                            .unwrap_or((0, LineError::NoCpuField, String::new()));
                    return Err(ImportError::NotFtrace {
                        file,
                        line,
                        why,
                        text,
                    });
                }
                continue;
            }
            Err(why) => {
                if opts.lenient {
                    sum.skipped += 1;
                    pending_lost += 1;
                    continue;
                }
                return Err(ImportError::BadLine {
                    file,
                    line: lineno,
                    why,
                    text: lossy(raw),
                });
            }
        };
        let line = match kind {
            LineKind::Blank | LineKind::Comment | LineKind::Preamble => continue,
            LineKind::Lost { count, .. } => {
                sum.ring_lost = sum.ring_lost.saturating_add(count);
                let time_ns = last_ts.saturating_sub(base_ts.unwrap_or(last_ts));
                if out.vms.is_empty() {
                    out.early_ring_lost =
                        Some(out.early_ring_lost.unwrap_or(0).saturating_add(count));
                }
                out.lost_everywhere(&split, &mut sum, time_ns, LostSource::Tracefs, count)?;
                continue;
            }
            LineKind::Event(l) => l,
        };
        seen_event_line = true;
        let Some(decoded) = parse_event(line.event, line.fields) else {
            sum.other_events += 1;
            continue;
        };
        let kvm = match decoded {
            Ok(k) => k,
            Err(why) => {
                if opts.lenient {
                    sum.skipped += 1;
                    pending_lost += 1;
                    continue;
                }
                return Err(ImportError::Malformed {
                    file,
                    line: lineno,
                    why,
                    text: lossy(raw),
                });
            }
        };
        sum.kvm_lines += 1;
        let base = *base_ts.get_or_insert(line.ts_ns);
        last_ts = line.ts_ns;
        let time_ns = line.ts_ns.saturating_sub(base);
        let tgid = line.tgid;
        let task = line.task;
        let mut placed: Vec<(usize, crate::Observed)> = Vec::new();
        split
            .feed(
                line.ts_ns,
                line.pid,
                kvm,
                &mut |_| ThreadDesc {
                    tgid,
                    comm: String::from_utf8_lossy(task).chars().take(16).collect(),
                    vcpu: None,
                },
                &mut |vm, o| placed.push((vm, o)),
            )
            .map_err(|source| ImportError::Convert {
                file: file.clone(),
                line: lineno,
                source,
            })?;
        for (vm, o) in placed {
            out.emit(&split, &mut sum, &mut pending_lost, vm, time_ns, o)?;
        }
    }
    // MONITOR/MWAIT intercepts still waiting for their outcome were skipped.
    let mut tail = Vec::new();
    split.finish(&mut |vm, o| tail.push((vm, o)));
    for (vm, o) in tail {
        let time_ns = o.ts_ns.saturating_sub(base_ts.unwrap_or(o.ts_ns));
        out.emit(&split, &mut sum, &mut pending_lost, vm, time_ns, o)?;
    }
    sum.bytes = reader.consumed;
    sum.unterminated = reader.unterminated;
    progress(reader.consumed);
    if !seen_event_line {
        if let Some((line, why, text)) = leading_junk {
            return Err(ImportError::NotFtrace {
                file,
                line,
                why,
                text,
            });
        }
    }
    if sum.kvm_lines == 0 {
        return Err(ImportError::NoKvmEvents {
            file,
            lines: sum.lines,
            other: sum.other_events,
        });
    }
    // Skipped lines after the last record: every VM's trace says so.
    if pending_lost > 0 {
        let time_ns = last_ts.saturating_sub(base_ts.unwrap_or(last_ts));
        out.lost_everywhere(&split, &mut sum, time_ns, LostSource::Import, pending_lost)?;
    }
    sum.vms = split.vms.len();
    sum.membership_guessed = split.membership_guessed;
    let mut stats = ConvertStats::default();
    let mut vcpus = 0usize;
    for (i, vm) in split.vms.iter().enumerate() {
        let numbers = vm.vcpu_numbers();
        vcpus += numbers.len();
        add_stats(&mut stats, vm.stats());
        if selected(&split, select, i) {
            sum.per_vm.push(VmImport {
                vm: i,
                pid: vm.tgid,
                vcpus: numbers,
                guessed: vm.guessed.clone(),
                records: out.vms.get(i).map_or(0, |v| v.records),
            });
        }
    }
    if let Some(sel) = select
        && sum.per_vm.is_empty()
    {
        return Err(ImportError::NoSuchVm {
            file,
            select: sel,
            vms: split.vms.len(),
        });
    }
    sum.vcpus = u32::try_from(vcpus).unwrap_or(u32::MAX);
    sum.convert = stats;
    Ok(sum)
}

fn add_stats(a: &mut ConvertStats, b: &ConvertStats) {
    a.msr += b.msr;
    a.exceptions += b.exceptions;
    a.exceptions_explained += b.exceptions_explained;
    a.userspace_exits += b.userspace_exits;
    a.userspace_exits_skipped += b.userspace_exits_skipped;
    a.ipis += b.ipis;
    a.ipis_skipped += b.ipis_skipped;
    a.cpuid += b.cpuid;
    a.mwait += b.mwait;
    a.exit_entry += b.exit_entry;
    a.inits += b.inits;
    a.sipis += b.sipis;
    a.accepted_skipped += b.accepted_skipped;
    a.foreign += b.foreign;
}

/// Whether VM `vm` is written.
fn selected(split: &VmSplitter, select: Option<VmSelect>, vm: usize) -> bool {
    match select {
        None => true,
        Some(VmSelect::Index(i)) => i == vm,
        Some(VmSelect::Pid(p)) => split.vms.get(vm).is_some_and(|v| v.holds(p)),
    }
}

/// The per-VM outputs of one import: each VM's sequence numbers and the
/// losses it has not been told of yet, and the sink they go to.
struct VmOuts<'s, E> {
    select: Option<VmSelect>,
    vms: Vec<VmSeq>,
    /// `[LOST N EVENTS]` before the first VM: every VM gets them.
    early_ring_lost: Option<u64>,
    sink: &'s mut dyn FnMut(usize, Record) -> Result<(), E>,
}

impl<E> VmOuts<'_, E>
where
    E: std::error::Error + Send + Sync + 'static,
{
    /// One record of VM `vm`, numbered in that VM's sequence.
    fn push(
        &mut self,
        sum: &mut ImportSummary,
        vm: usize,
        vcpu: u32,
        time_ns: u64,
        event: Event,
    ) -> Result<(), ImportError> {
        let v = &mut self.vms[vm];
        let rec = Record {
            seq: v.seq,
            vcpu,
            time_ns,
            event,
        };
        v.seq += 1;
        v.records += 1;
        sum.records += 1;
        (self.sink)(vm, rec).map_err(|e| ImportError::Write(Box::new(e)))
    }

    /// A loss the text does not attribute: recorded in every selected VM.
    fn lost_everywhere(
        &mut self,
        split: &VmSplitter,
        sum: &mut ImportSummary,
        time_ns: u64,
        source: LostSource,
        count: u64,
    ) -> Result<(), ImportError> {
        for vm in 0..self.vms.len() {
            if selected(split, self.select, vm) {
                self.push(sum, vm, 0, time_ns, Event::Lost { source, count })?;
            }
        }
        Ok(())
    }

    /// One converted event of VM `vm` to the sink, after any loss it has not
    /// been told of yet (`pending_lost`: lines skipped since the last record,
    /// which every VM may have lost).
    fn emit(
        &mut self,
        split: &VmSplitter,
        sum: &mut ImportSummary,
        pending_lost: &mut u64,
        vm: usize,
        time_ns: u64,
        o: crate::Observed,
    ) -> Result<(), ImportError> {
        while self.vms.len() <= vm {
            self.vms.push(VmSeq {
                lost_ring: self.early_ring_lost,
                ..Default::default()
            });
        }
        if !selected(split, self.select, vm) {
            sum.other_vm_records += 1;
            return Ok(());
        }
        if *pending_lost > 0 {
            for v in self.vms.iter_mut() {
                v.lost_import = v.lost_import.saturating_add(*pending_lost);
            }
            *pending_lost = 0;
        }
        if let Some(count) = self.vms[vm].lost_ring.take() {
            let source = LostSource::Tracefs;
            self.push(sum, vm, o.vcpu, time_ns, Event::Lost { source, count })?;
        }
        if self.vms[vm].lost_import > 0 {
            let count = std::mem::take(&mut self.vms[vm].lost_import);
            let source = LostSource::Import;
            self.push(sum, vm, o.vcpu, time_ns, Event::Lost { source, count })?;
        }
        self.push(sum, vm, o.vcpu, time_ns, o.event)
    }
}

/// Import from memory into a vector (tests, fuzzing, small inputs).
pub fn import_to_vec(
    text: &[u8],
    opts: &ImportOptions,
) -> Result<(Vec<Record>, ImportSummary), ImportError> {
    let mut out = Vec::new();
    let sum = import_ftrace::<_, std::convert::Infallible>(
        text,
        "<memory>",
        opts,
        &mut |r| {
            out.push(r);
            Ok(())
        },
        &mut |_| {},
    )?;
    Ok((out, sum))
}

/// A realistic `trace_pipe` text of `lines` lines (mixed reads, writes with and
/// without `#GP`, injected exceptions, user-space exits, two vCPU threads).
pub fn synthetic_text(lines: usize) -> Vec<u8> {
    use std::io::Write;
    let mut out = Vec::with_capacity(lines * 96);
    for i in 0..lines {
        let tid = 4000 + (i / 8) % 2;
        let ts = 1_000_000_000 + i as u64 * 3;
        let (secs, us) = (ts / 1_000_000, ts % 1_000_000);
        let fields = match i % 8 {
            0..=3 => format!(
                "kvm_msr: msr_read 10 = 0x{:x}",
                0x1227083af590u64 + i as u64
            ),
            4 => "kvm_msr: msr_write 1b = 0xfee00900".to_string(),
            5 => "kvm_msr: msr_write 401 = 0x1 (#GP)".to_string(),
            6 => "kvm_inj_exception: #GP (0x0)".to_string(),
            _ => "kvm_userspace_exit: reason KVM_EXIT_IO (2)".to_string(),
        };
        let _ = writeln!(
            out,
            "{:>16}-{tid:<7} [{:03}] ..... {secs:5}.{us:06}: {fields}",
            "kvmprobe",
            (i / 8) % 2
        );
    }
    out
}

/// Import speed, for `kvmtrace bench`: lines per second parsing and converting
/// `lines` synthetic lines on one thread (records are built, then dropped).
pub fn import_lines_per_s(lines: usize) -> f64 {
    let text = synthetic_text(lines);
    let start = std::time::Instant::now();
    let mut n = 0u64;
    let res = import_ftrace::<_, std::convert::Infallible>(
        &text[..],
        "<bench>",
        &ImportOptions::default(),
        &mut |r| {
            n += r.seq & 1;
            Ok(())
        },
        &mut |_| {},
    );
    let secs = start.elapsed().as_secs_f64();
    std::hint::black_box(n);
    match res {
        Ok(sum) => sum.lines as f64 / secs.max(1e-9),
        Err(_) => 0.0,
    }
}
