//! Ctrl-C and SIGTERM as a request to stop a recording cleanly (issue 14,
//! item 3): the first SIGINT, SIGTERM or SIGHUP is noted (the recorder then
//! stops the vCPUs, flushes, writes the footer and renames the file, as at the
//! end of the guest); the handler resets itself, so a second one of the same
//! signal takes its default action and ends the process at once.
//!
//! One [`StopSignal`] is installed by the binary around a recording (wrap and
//! attach captures use the same piece); the recorder's supervisor loop polls
//! [`StopSignal::requested`]. Without an installed `StopSignal` nothing is
//! ever requested, so library users and in-process tests are unaffected.

use std::sync::atomic::{AtomicI32, Ordering};

/// The first stop signal received (0: none).
static REQUESTED: AtomicI32 = AtomicI32::new(0);

/// The signals that request a clean stop.
const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

extern "C" fn on_signal(sig: libc::c_int) {
    // Async-signal-safe: one atomic store.
    let _ = REQUESTED.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
}

/// Installed stop handlers; dropping it restores the previous ones.
pub struct StopSignal {
    old: Vec<(libc::c_int, libc::sigaction)>,
}

impl StopSignal {
    /// Installs the handlers for SIGINT, SIGTERM and SIGHUP and clears any
    /// earlier request.
    pub fn install() -> std::io::Result<StopSignal> {
        REQUESTED.store(0, Ordering::SeqCst);
        let mut old = Vec::new();
        for sig in SIGNALS {
            // SAFETY: a zeroed sigaction is a valid "no flags, empty mask"
            // value; sa_sigaction holds a plain `extern "C" fn(c_int)` handler
            // (no SA_SIGINFO), which only stores to an atomic.
            let prev = unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
                sa.sa_flags = libc::SA_RESETHAND | libc::SA_RESTART;
                libc::sigemptyset(&mut sa.sa_mask);
                let mut prev: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, &sa, &mut prev) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                prev
            };
            old.push((sig, prev));
        }
        Ok(StopSignal { old })
    }

    /// The signal that asked for a stop, if one came.
    pub fn requested() -> Option<i32> {
        match REQUESTED.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s),
        }
    }
}

impl Drop for StopSignal {
    fn drop(&mut self) {
        for (sig, prev) in &self.old {
            // SAFETY: restores the sigaction saved by `install` for this signal.
            unsafe {
                libc::sigaction(*sig, prev, std::ptr::null_mut());
            }
        }
        REQUESTED.store(0, Ordering::SeqCst);
    }
}

/// The name of a signal number (`SIGINT`), for messages.
pub fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGINT => "SIGINT (Ctrl-C)".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGHUP => "SIGHUP".into(),
        s => format!("signal {s}"),
    }
}
