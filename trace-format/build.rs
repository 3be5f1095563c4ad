fn main() {
    // `cargo fuzz` builds with `--cfg fuzzing` (wire::CHECK_CRC).
    println!("cargo::rustc-check-cfg=cfg(fuzzing)");
}
