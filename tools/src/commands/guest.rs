//! `kvmtrace guest qemu -o guest.elf`: write the QEMU guest (see
//! `kvmtrace_recorder::qemu_guest`), for
//! `qemu-system-x86_64 -kernel guest.elf -device isa-debug-exit,iobase=0xf4,iosize=0x04 …`
//! or `kvmtrace record --payload guest.elf`.

use std::io::Write;

use anyhow::Context;

use crate::cli::{GuestArgs, GuestKind};

/// The QEMU command line the tests, the demo and the README use for the guest
/// (without `qemu-system-x86_64` itself).
pub fn qemu_args(guest: &std::path::Path) -> Vec<String> {
    [
        "-machine",
        "accel=kvm",
        "-smp",
        "2",
        "-m",
        "64",
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=0x04",
        "-kernel",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([guest.display().to_string()])
    .collect()
}

pub fn run(args: &GuestArgs, _out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<i32> {
    match args.kind {
        GuestKind::Qemu => {
            let bytes = kvmtrace_recorder::qemu_guest::build()?;
            std::fs::write(&args.output, &bytes)
                .with_context(|| format!("cannot write {}", args.output.display()))?;
            writeln!(
                err,
                "wrote {} ({} bytes); run it with: qemu-system-x86_64 {}",
                args.output.display(),
                bytes.len(),
                qemu_args(&args.output).join(" ")
            )?;
        }
    }
    Ok(0)
}
