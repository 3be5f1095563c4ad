//! Progress bars for long runs (replay, corpus, import): shown only when stderr
//! is a terminal and the run lasts longer than a second.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar over `len` units (events, traces, bytes), hidden unless stderr is a
/// terminal; it becomes visible only after a second, so short runs stay quiet.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden());
    pb.set_style(
        ProgressStyle::with_template(&format!(
            "{{elapsed_precise}} [{{bar:40}}] {{human_pos}}/{{human_len}} {what} ({{rate}}, eta {{eta}})"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key("rate", rate_key)
        .progress_chars("=> "),
    );
    let shown = pb.clone();
    // Switch the draw target on after one second if the run is still going.
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        if !shown.is_finished() {
            shown.set_draw_target(ProgressDrawTarget::stderr());
            shown.enable_steady_tick(Duration::from_millis(200));
        }
    });
    pb
}

/// `{rate}`: events per second as `5.58 M/s` (indicatif's `{per_sec}` prints
/// `5,581,143.8403/s`).
fn rate_key(state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write) {
    let _ = write!(w, "{}", crate::commands::text::rate(state.per_sec()));
}

/// A spinner for work of unknown length (corpus runs), on the same terms.
pub fn spinner(what: &str) -> ProgressBar {
    let pb = bar(0, what);
    pb.set_style(
        ProgressStyle::with_template(&format!("{{elapsed_precise}} {{spinner}} {what}"))
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb
}

/// A bar over `len` bytes of input (import), on the same terms.
pub fn bytes(len: u64, what: &str) -> ProgressBar {
    let pb = bar(len, what);
    pb.set_style(
        ProgressStyle::with_template(&format!(
            "{what} {{bar:40}} {{bytes}}/{{total_bytes}} ({{bytes_per_sec}}, {{eta}})"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb
}

/// A spinner for a recording: elapsed time and the bytes written so far to
/// `file` (the `.incomplete` output), on the same terms as [`bar`].
pub fn recording(file: &std::path::Path) -> ProgressBar {
    let pb = bar(0, "recording");
    pb.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} {spinner} recording: {msg} written (Ctrl-C stops and keeps the trace)",
        )
        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    if !std::io::stderr().is_terminal() {
        return pb;
    }
    let shown = pb.clone();
    let file = file.to_path_buf();
    std::thread::spawn(move || {
        while !shown.is_finished() {
            let n = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            shown.set_message(kvmtrace_format::error::human_bytes(n));
            std::thread::sleep(Duration::from_millis(250));
        }
    });
    pb
}
