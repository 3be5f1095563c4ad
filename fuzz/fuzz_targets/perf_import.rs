//! `import perf` on arbitrary bytes, both readers: as `perf.data` (the header
//! checks, `linux-perf-data`, the tracing-data formats, the raw-field printer)
//! and as `perf script` text, each into the one ftrace decoder. Never a panic,
//! never an unbounded allocation. `cargo +nightly fuzz run perf_import`

#![no_main]

use kvmtrace_capture::ftrace::{ImportOptions, import_ftrace};
use kvmtrace_capture::perf::{PerfDataText, PerfScriptText, format::parse_tracing_data};
use libfuzzer_sys::fuzz_target;

fn import(r: impl std::io::Read) {
    let _ = import_ftrace::<_, std::convert::Infallible>(
        r,
        "<fuzz>",
        &ImportOptions { lenient: true },
        &mut |_| Ok(()),
        &mut |_| {},
    );
}

fuzz_target!(|data: &[u8]| {
    let _ = parse_tracing_data(data);
    import(PerfScriptText::new(data));
    if let Ok(text) = PerfDataText::from_reader(
        std::io::Cursor::new(data.to_vec()),
        data.len() as u64,
        "<fuzz>",
    ) {
        import(text);
    }
});
