fn main() {
    println!("kvmtrace {}", env!("CARGO_PKG_VERSION"));
}
