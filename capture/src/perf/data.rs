//! `perf.data` to ftrace text: each tracepoint sample's raw record is decoded
//! with its event's format (see [`super::format`]) and printed as the kernel's
//! text (see [`super::printk`]); `PERF_RECORD_LOST` becomes
//! `CPU:N [LOST M EVENTS]`. The file is read with `linux-perf-data` (maintained,
//! the reader of the `samply` profiler; handles both endiannesses, compressed
//! records and perf's round ordering) after [`check_header`] has bounded every
//! section it will allocate by the file's size. Errors while reading records
//! surface as I/O errors naming the file and the sample number (the "line" of
//! the ftrace reader's messages is the sample's position in the output).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use linux_perf_data::linux_perf_event_reader::{EventRecord, PerfEventType};
use linux_perf_data::{Feature, PerfFile, PerfFileReader, PerfFileRecord, PerfRecordIter};

use super::format::{EventFormat, host_format, parse_tracing_data};

/// perf.data's magic, little- and big-endian.
pub const MAGIC_LE: &[u8; 8] = b"PERFILE2";
pub const MAGIC_BE: &[u8; 8] = b"2ELIFREP";
const HEADER_SIZE: u64 = 104;
/// Thread names kept (a `COMM` record per thread); more are named `<...>`.
const MAX_COMMS: usize = 1 << 16;

/// Does this look like a perf.data file?
pub fn is_perf_data(head: &[u8]) -> bool {
    head.starts_with(MAGIC_LE) || head.starts_with(MAGIC_BE)
}

#[derive(Debug, thiserror::Error)]
pub enum PerfDataError {
    #[error("reading {file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file} at offset {offset}: {what}")]
    Malformed {
        file: String,
        offset: u64,
        what: String,
    },
    #[error("{file}: {what}")]
    Unsupported { file: String, what: String },
}

/// Check the header and feature-section table against the file's length, so
/// that nothing the reader allocates can exceed it.
pub fn check_header<R: Read + Seek>(f: &mut R, len: u64, file: &str) -> Result<(), PerfDataError> {
    let io = |source| PerfDataError::Io {
        file: file.to_string(),
        source,
    };
    let bad = |offset: u64, what: String| PerfDataError::Malformed {
        file: file.to_string(),
        offset,
        what,
    };
    let mut h = [0u8; HEADER_SIZE as usize];
    f.seek(SeekFrom::Start(0)).map_err(io)?;
    if len < HEADER_SIZE {
        return Err(bad(
            0,
            format!("{len} bytes: shorter than the perf.data header ({HEADER_SIZE})"),
        ));
    }
    f.read_exact(&mut h).map_err(io)?;
    let big = match &h[..8] {
        m if m == MAGIC_LE => false,
        m if m == MAGIC_BE => true,
        _ => {
            return Err(bad(
                0,
                "not a perf.data file (magic is not PERFILE2)".into(),
            ));
        }
    };
    let u64_at = |b: &[u8], at: usize| {
        let v: [u8; 8] = b[at..at + 8].try_into().unwrap_or([0; 8]);
        if big {
            u64::from_be_bytes(v)
        } else {
            u64::from_le_bytes(v)
        }
    };
    let size = u64_at(&h, 8);
    if size != HEADER_SIZE {
        return Err(bad(
            8,
            format!(
                "header size {size}, expected {HEADER_SIZE} (pipe-mode output is not supported: record to a file)"
            ),
        ));
    }
    let within = |off: u64, sz: u64| off.checked_add(sz).is_some_and(|e| e <= len);
    for (at, name) in [(24, "attrs"), (40, "data"), (56, "event types")] {
        let (off, sz) = (u64_at(&h, at), u64_at(&h, at + 8));
        if !within(off, sz) {
            return Err(bad(
                at as u64,
                format!("{name} section {off}+{sz} runs past the end of the file ({len} bytes)"),
            ));
        }
    }
    let features: u32 = (0..4).map(|i| u64_at(&h, 72 + 8 * i).count_ones()).sum();
    let table = u64_at(&h, 40) + u64_at(&h, 48);
    let table_len = u64::from(features) * 16;
    if !within(table, table_len) {
        return Err(bad(
            table,
            format!(
                "feature table ({features} sections) runs past the end of the file ({len} bytes)"
            ),
        ));
    }
    let mut t = vec![0u8; table_len as usize];
    f.seek(SeekFrom::Start(table)).map_err(io)?;
    f.read_exact(&mut t).map_err(io)?;
    let attr_size = u64_at(&h, 16);
    if !(64..=1024).contains(&attr_size) {
        return Err(bad(
            16,
            format!("attr_size {attr_size} is not in 64..=1024"),
        ));
    }
    // EVENT_DESC (feature bit 12) names the events and their IDs; the reader
    // allocates from its counts, so its entries are walked here first.
    let bitmap0 = u64_at(&h, 72);
    if bitmap0 & 1 << 12 == 0 {
        return Err(PerfDataError::Unsupported {
            file: file.to_string(),
            what: "no EVENT_DESC header feature (written by every perf since 3.6)".into(),
        });
    }
    let desc = (bitmap0 & ((1 << 12) - 1)).count_ones() as usize;
    let mut total = 0u64;
    for i in 0..features as usize {
        let (off, sz) = (u64_at(&t, 16 * i), u64_at(&t, 16 * i + 8));
        if i == desc && within(off, sz) {
            let mut d = vec![0u8; sz as usize];
            f.seek(SeekFrom::Start(off)).map_err(io)?;
            f.read_exact(&mut d).map_err(io)?;
            check_event_desc(&d, big).map_err(|(at, what)| bad(off + at as u64, what))?;
        }
        if !within(off, sz) {
            return Err(bad(
                table + 16 * i as u64,
                format!("feature section {off}+{sz} runs past the end of the file ({len} bytes)"),
            ));
        }
        total = total.saturating_add(sz);
    }
    if total > len {
        return Err(bad(
            table,
            format!("feature sections total {total} bytes, more than the file ({len})"),
        ));
    }
    f.seek(SeekFrom::Start(0)).map_err(io)?;
    Ok(())
}

/// Walk the EVENT_DESC section: `nr`, `attr_size`, then per event the attr,
/// `nr_ids`, a length-prefixed name and the IDs, each inside the section.
fn check_event_desc(d: &[u8], big: bool) -> Result<(), (usize, String)> {
    let u32_at = |at: usize| -> Result<u32, (usize, String)> {
        let b: [u8; 4] = d
            .get(at..at + 4)
            .and_then(|s| s.try_into().ok())
            .ok_or((at, "EVENT_DESC runs past its section".to_string()))?;
        Ok(if big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    };
    let nr = u32_at(0)?;
    let attr_size = u32_at(4)? as usize;
    if nr == 0 {
        return Err((0, "EVENT_DESC lists no event".into()));
    }
    if !(64..=1024).contains(&attr_size) {
        return Err((
            4,
            format!("EVENT_DESC attr_size {attr_size} is not in 64..=1024"),
        ));
    }
    let mut at = 8usize;
    for i in 0..nr {
        let past = |at: usize| (at, format!("EVENT_DESC event {i} runs past its section"));
        // Every entry takes at least attr_size + 8 bytes: the loop is bounded
        // by the section's size.
        at = at
            .checked_add(attr_size)
            .filter(|&a| a <= d.len())
            .ok_or_else(|| past(at))?;
        let nr_ids = u32_at(at)? as usize;
        let name_len = u32_at(at + 4)? as usize;
        at = (at + 8)
            .checked_add(name_len)
            .and_then(|a| a.checked_add(nr_ids.checked_mul(8)?))
            .filter(|&a| a <= d.len())
            .ok_or_else(|| past(at))?;
    }
    Ok(())
}

/// How each attribute (event) of the file is decoded.
struct Attr {
    name: String,
    format: Option<EventFormat>,
}

/// What the conversion saw.
#[derive(Clone, Debug, Default)]
pub struct PerfDataStats {
    pub samples: u64,
    pub lost: u64,
    /// Events with no format (neither in the file nor on this machine).
    pub no_format: u64,
    /// Where the formats came from: "perf.data tracing data" or "this machine's tracefs".
    pub formats_from: &'static str,
}

/// A `perf.data` file read as ftrace text.
pub struct PerfDataText<R: Read = BufReader<File>> {
    file: String,
    perf_file: PerfFile,
    iter: PerfRecordIter<R>,
    attrs: Vec<Attr>,
    comms: HashMap<i32, Vec<u8>>,
    out: Vec<u8>,
    pos: usize,
    done: bool,
    pub stats: PerfDataStats,
}

impl PerfDataText {
    pub fn open(path: &Path) -> Result<Self, PerfDataError> {
        let file = path.display().to_string();
        let io = |source| PerfDataError::Io {
            file: file.clone(),
            source,
        };
        let f = File::open(path).map_err(io)?;
        let len = f.metadata().map_err(io)?.len();
        PerfDataText::from_reader(BufReader::new(f), len, &file)
    }
}

impl<R: Read + Seek> PerfDataText<R> {
    /// Read `len` bytes of perf.data from `r` (named `file` in errors).
    pub fn from_reader(mut r: R, len: u64, file: &str) -> Result<Self, PerfDataError> {
        let file = file.to_string();
        check_header(&mut r, len, &file)?;
        let reader = PerfFileReader::parse_file(r).map_err(|e| PerfDataError::Malformed {
            file: file.clone(),
            offset: 0,
            what: e.to_string(),
        })?;
        let PerfFileReader {
            perf_file,
            record_iter,
        } = reader;
        let mut stats = PerfDataStats::default();
        let from_file = perf_file
            .feature_section_data(Feature::TRACING_DATA)
            .map(parse_tracing_data)
            .transpose()
            .map_err(|e| PerfDataError::Malformed {
                file: file.clone(),
                offset: 0,
                what: e.to_string(),
            })?;
        stats.formats_from = if from_file.is_some() {
            "perf.data tracing data"
        } else {
            "this machine's tracefs"
        };
        let formats = from_file.unwrap_or_default();
        let mut attrs = Vec::new();
        for a in perf_file.event_attributes() {
            let PerfEventType::Tracepoint(id) = a.attr.type_ else {
                attrs.push(Attr {
                    name: a.name.clone().unwrap_or_default(),
                    format: None,
                });
                continue;
            };
            let named = a.name.as_deref().unwrap_or("");
            let short = named.rsplit(':').next().unwrap_or(named).to_string();
            let format = formats
                .iter()
                .find(|f| f.id == id)
                .or_else(|| formats.iter().find(|f| f.name == short))
                .cloned()
                .or_else(|| {
                    if formats.is_empty() {
                        host_format(&short)
                    } else {
                        None
                    }
                });
            let name = format.as_ref().map_or(short, |f| f.name.clone());
            attrs.push(Attr { name, format });
        }
        if attrs.iter().all(|a| a.format.is_none()) {
            return Err(PerfDataError::Unsupported {
                file,
                what:
                    "no tracepoint event with a known format (record with `perf record -e 'kvm:*'`)"
                        .into(),
            });
        }
        Ok(PerfDataText {
            file,
            perf_file,
            iter: record_iter,
            attrs,
            comms: HashMap::new(),
            out: Vec::with_capacity(512),
            pos: 0,
            done: false,
            stats,
        })
    }

    /// The next line into `out`; false at the end.
    fn refill(&mut self) -> std::io::Result<bool> {
        self.out.clear();
        self.pos = 0;
        while !self.done && self.out.is_empty() {
            let Self {
                perf_file,
                iter,
                attrs,
                comms,
                out,
                stats,
                file,
                ..
            } = self;
            let at = stats.samples + 1;
            let rec = iter.next_record(perf_file).map_err(|e| {
                std::io::Error::other(format!("{file}: record after sample {}: {e}", at - 1))
            })?;
            let Some(rec) = rec else {
                self.done = true;
                break;
            };
            let PerfFileRecord::EventRecord { attr_index, record } = rec else {
                continue;
            };
            let parsed = record
                .parse()
                .map_err(|e| std::io::Error::other(format!("{file}: sample {at}: {e}")))?;
            match parsed {
                EventRecord::Comm(c) if comms.len() < MAX_COMMS || comms.contains_key(&c.tid) => {
                    let name: Vec<u8> = c
                        .name
                        .as_slice()
                        .iter()
                        .copied()
                        .filter(|&b| b != b'\n' && b != 0)
                        .take(64)
                        .collect();
                    comms.insert(c.tid, name);
                }
                EventRecord::Lost(l) => {
                    stats.lost = stats.lost.saturating_add(l.count);
                    use std::io::Write;
                    let _ = writeln!(out, "CPU:0 [LOST {} EVENTS]", l.count);
                }
                EventRecord::Sample(s) => {
                    let Some(attr) = attrs.get(attr_index) else {
                        continue;
                    };
                    let Some(raw) = s.raw else { continue };
                    stats.samples += 1;
                    let raw = raw.as_slice();
                    let tid = s.tid.unwrap_or(0).max(0);
                    let comm: &[u8] = comms.get(&tid).map_or(b"<...>", |c| &c[..]);
                    let ts = s.timestamp.unwrap_or(0);
                    use std::io::Write;
                    out.extend_from_slice(comm);
                    let _ = write!(
                        out,
                        "-{tid} [{:03}] {}.{:09}: {}: ",
                        s.cpu.unwrap_or(0),
                        ts / 1_000_000_000,
                        ts % 1_000_000_000,
                        attr.name
                    );
                    match &attr.format {
                        Some(f) => {
                            let get = |n: &str| f.get(&raw, n);
                            let _ = super::printk::print(&attr.name, &get, out);
                        }
                        None => stats.no_format += 1,
                    }
                    out.push(b'\n');
                }
                _ => {}
            }
        }
        Ok(!self.out.is_empty())
    }
}

impl<R: Read + Seek> Read for PerfDataText<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.out.len() && !self.refill()? {
            return Ok(0);
        }
        Ok(super::copy_out(&self.out, &mut self.pos, buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn open(b: &[u8]) -> Result<PerfDataText<Cursor<Vec<u8>>>, PerfDataError> {
        PerfDataText::from_reader(Cursor::new(b.to_vec()), b.len() as u64, "t.data")
    }

    fn header() -> Vec<u8> {
        let mut h = vec![0u8; 104];
        h[..8].copy_from_slice(MAGIC_LE);
        h[8..16].copy_from_slice(&104u64.to_le_bytes());
        h
    }

    #[test]
    fn hostile_headers_are_one_line_errors() {
        let e = open(b"PERFILE2").err().unwrap().to_string();
        assert!(e.contains("shorter than the perf.data header"), "{e}");
        let mut h = header();
        h[0] = b'X';
        let e = open(&h).err().unwrap().to_string();
        assert!(e.contains("not a perf.data file"), "{e}");
        let mut h = header();
        h[40..48].copy_from_slice(&u64::MAX.to_le_bytes());
        let e = open(&h).err().unwrap().to_string();
        assert!(
            e.contains("data section") && e.contains("past the end"),
            "{e}"
        );
        let mut h = header();
        h[72] = 0xff; // 8 feature sections, no table
        let e = open(&h).err().unwrap().to_string();
        assert!(e.contains("feature table"), "{e}");
        let mut h = header();
        h[8..16].copy_from_slice(&0u64.to_le_bytes());
        let e = open(&h).err().unwrap().to_string();
        assert!(e.contains("pipe-mode"), "{e}");
        assert!(open(&header()).is_err(), "no EVENT_DESC, no event");
        assert!(!e.contains('\n'));
    }
}
