//! `kvmtrace-recorder`: a KVM vCPU loop that records MSR accesses, MONITOR/MWAIT
//! and INIT/RESET/SHUTDOWN transitions, asking the replayer's engine what to answer.

pub mod kvm_check;
