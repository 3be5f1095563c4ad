//! The `kvmtrace` command line, as a library so tests can drive it.
