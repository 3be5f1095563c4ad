//! Ad-hoc guest specs for the recorder's KVM tests (built here with iced-x86 so
//! these tests do not depend on the built-in scenarios).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use iced_x86::code_asm::*;
use kvmtrace_format::{Record, TraceHeader};
use kvmtrace_recorder::layout::{self, ports};
use kvmtrace_recorder::scenarios::{Region, ScenarioSpec};

/// One vCPU in long mode running `code` (which should end with `done`).
pub fn spec(name: &str, code: Vec<u8>) -> ScenarioSpec {
    let regions = vec![Region {
        addr: layout::CODE_ADDR,
        bytes: code,
    }];
    ScenarioSpec::long_mode(name, 1, regions, layout::CODE_ADDR)
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

/// Record the built-in `scenario` (`iterations` for looping ones) in `mode`
/// into `tmp(file)` and read it back.
pub fn record_scenario(
    file: &str,
    scenario: &str,
    mode: kvmtrace_format::CaptureMode,
    iterations: Option<u64>,
) -> (TraceHeader, Vec<Record>) {
    let out = tmp(file);
    let mut cfg = kvmtrace_recorder::RecordConfig::new(&out);
    cfg.scenario = Some(scenario.into());
    cfg.mode = mode;
    cfg.iterations = iterations;
    kvmtrace_recorder::record(&cfg).unwrap();
    read_trace(&out)
}
