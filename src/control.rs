//! Who holds a run, and how a run is asked to stop.
//!
//! A run records the pid and the start time of the process writing it. A pid alone can be reused
//! after a reboot or a crash; pid plus start time names one process.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// Start time (seconds since the epoch) of process `pid`, if it exists.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let mut system = System::new();
    let pid = Pid::from_u32(pid);
    system.refresh_processes_specifics(
        ProcessesToUpdate::Some(&[pid]),
        false,
        ProcessRefreshKind::nothing(),
    );
    system.process(pid).map(|p| p.start_time())
}

/// This process's identity as stored in `runs.holder_pid` / `runs.holder_started_at`.
pub fn this_process() -> (i64, String) {
    let pid = std::process::id();
    let started = process_start_time(pid).unwrap_or(0);
    (i64::from(pid), started.to_string())
}

/// Whether the process recorded as (pid, started_at) is still the same live process.
pub fn holder_alive(pid: i64, started_at: &str) -> bool {
    let Ok(pid) = u32::try_from(pid) else {
        return false;
    };
    match process_start_time(pid) {
        // sysinfo rounds start times to seconds; allow a second of skew between two reads.
        Some(now) => started_at
            .parse::<u64>()
            .is_ok_and(|then| now.abs_diff(then) <= 1),
        None => false,
    }
}

/// SIGINT/SIGTERM handling: the first signal drains (no new questions, in-flight ones finish
/// within the grace period), the second exits at once. Committed rows are safe either way.
#[derive(Clone)]
pub struct StopSignal {
    count: Arc<AtomicUsize>,
    first_at: Arc<std::sync::Mutex<Option<Instant>>>,
}

impl StopSignal {
    /// Install the handlers for this process.
    pub fn install() -> std::io::Result<StopSignal> {
        let count = Arc::new(AtomicUsize::new(0));
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            let counter = Arc::clone(&count);
            // SAFETY: the handler only performs async-signal-safe operations: an atomic
            // increment, and `_exit` on the second signal.
            unsafe {
                signal_hook::low_level::register(signal, move || {
                    if counter.fetch_add(1, Ordering::SeqCst) >= 1 {
                        signal_hook::low_level::exit(crate::error::exit_code::STOPPED);
                    }
                })?;
            }
        }
        Ok(StopSignal {
            count,
            first_at: Arc::new(std::sync::Mutex::new(None)),
        })
    }

    /// A signal that is never raised (library use, tests).
    pub fn never() -> StopSignal {
        StopSignal {
            count: Arc::new(AtomicUsize::new(0)),
            first_at: Arc::new(std::sync::Mutex::new(None)),
        }
    }

    /// Raise the stop request from code (as a signal would).
    pub fn request(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether a stop was requested.
    pub fn requested(&self) -> bool {
        self.count.load(Ordering::SeqCst) > 0
    }

    /// Time since the first stop request, if any (the grace period counts from it).
    pub fn requested_for(&self) -> Option<Duration> {
        if !self.requested() {
            return None;
        }
        let mut first = self.first_at.lock().unwrap_or_else(|p| p.into_inner());
        Some(first.get_or_insert_with(Instant::now).elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_not() {
        let (pid, started) = this_process();
        assert!(holder_alive(pid, &started));
        let other: u64 = started.parse::<u64>().unwrap() + 1000;
        assert!(!holder_alive(pid, &other.to_string()));
        assert!(!holder_alive(i64::from(u32::MAX - 1), &started));
    }

    #[test]
    fn stop_signal_counts_requests() {
        let signal = StopSignal::never();
        assert!(!signal.requested());
        assert!(signal.requested_for().is_none());
        signal.request();
        assert!(signal.requested());
        assert!(signal.requested_for().is_some());
    }
}
