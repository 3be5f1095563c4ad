//! Ad-hoc guest specs for the recorder's KVM tests (built here with iced-x86 so
//! these tests do not depend on the built-in scenarios).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use iced_x86::code_asm::*;
use kvmtrace_format::{Irqchip, Record, TraceHeader};
use kvmtrace_recorder::layout::{self, ports};
use kvmtrace_recorder::scenarios::{OnShutdown, Region, ScenarioSpec, VcpuStart};

/// One vCPU in long mode running `code` (which should end with `done`).
pub fn spec(name: &str, code: Vec<u8>) -> ScenarioSpec {
    ScenarioSpec {
        name: name.into(),
        vcpus: 1,
        regions: vec![Region {
            addr: layout::CODE_ADDR,
            bytes: code,
        }],
        starts: vec![VcpuStart::LongMode {
            rip: layout::CODE_ADDR,
        }],
        cpuid: Vec::new(),
        disabled_quirks: 0,
        irqchip: Irqchip::None,
        mcg_cap: None,
        user_space_msr: 0,
        msr_filter: None,
        setup: Vec::new(),
        host_steps: Vec::new(),
        on_shutdown: OnShutdown::Stop,
    }
}

pub fn asm() -> CodeAssembler {
    CodeAssembler::new(64).unwrap()
}

pub fn rdmsr_(a: &mut CodeAssembler, index: u32) {
    a.mov(ecx, index).unwrap();
    a.rdmsr().unwrap();
}

pub fn wrmsr_(a: &mut CodeAssembler, index: u32, value: u64) {
    a.mov(ecx, index).unwrap();
    a.mov(eax, value as u32).unwrap();
    a.mov(edx, (value >> 32) as u32).unwrap();
    a.wrmsr().unwrap();
}

/// `out REPORT, eax = r15` (the last exception vector + 1).
pub fn report_r15(a: &mut CodeAssembler) {
    a.mov(rax, r15).unwrap();
    a.mov(dx, ports::REPORT as u32).unwrap();
    a.out(dx, eax).unwrap();
    a.xor(r15d, r15d).unwrap();
}

pub fn done(a: &mut CodeAssembler) {
    a.xor(eax, eax).unwrap();
    a.mov(dx, ports::DONE as u32).unwrap();
    a.out(dx, eax).unwrap();
    a.hlt().unwrap();
}

pub fn assemble(mut a: CodeAssembler) -> Vec<u8> {
    a.assemble(layout::CODE_ADDR).unwrap()
}

pub fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kvmtrace-recorder-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Read a trace written by the recorder.
pub fn read_trace(path: &Path) -> (TraceHeader, Vec<Record>) {
    kvmtrace_recorder::sink::read_all(path).unwrap()
}
