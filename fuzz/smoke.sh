#!/usr/bin/env bash
# Fuzz smoke run (CI): builds the fuzz targets with libFuzzer's coverage
# instrumentation on *stable* Rust (no cargo-fuzz, no nightly: the flags below
# are what `cargo fuzz build -s none` passes; `--cfg fuzzing` turns the CRC
# checks off so mutations reach the decoder) and runs each target for
# FUZZ_SECONDS (default 60) with a memory limit: libFuzzer fails the run when a
# single input makes the process exceed -rss_limit_mb or asks for more than
# -malloc_limit_mb in one allocation (a decompression bomb, an unbounded
# length). Needs a C++ compiler (libfuzzer-sys builds libFuzzer); without one
# it says FUZZ-SKIPPED and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-60}
rss=${FUZZ_RSS_MB:-512}
if ! command -v c++ >/dev/null 2>&1; then
    echo "FUZZ-SKIPPED: no C++ compiler to build libFuzzer"
    exit 0
fi
host=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
# --target keeps the flags off build scripts.
cargo build -q --release --manifest-path fuzz/Cargo.toml --target "$host" --bins
status=0
for t in $(ls fuzz/fuzz_targets | sed -n "s/\.rs$//p"); do
    corpus="fuzz/corpus/$t"
    mkdir -p "$corpus"
    echo "== fuzz $t: ${secs} s, -rss_limit_mb=${rss}"
    if ! "fuzz/target/$host/release/$t" -max_total_time="$secs" -rss_limit_mb="$rss" \
        -malloc_limit_mb="$rss" -timeout=10 -print_final_stats=1 \
        -artifact_prefix="fuzz/artifacts-$t-" "$corpus" $([ -d "fuzz/seeds/$t" ] && echo "fuzz/seeds/$t") 2>"fuzz/$t.log"; then
        status=1
        echo "FUZZ-FAILED $t: see fuzz/$t.log and fuzz/artifacts-$t-*"
        tail -20 "fuzz/$t.log"
    fi
    grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb' "fuzz/$t.log" | tr '\n' ' '
    echo
done
exit "$status"
