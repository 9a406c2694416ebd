//! SIGINT/SIGTERM for a run: the first signal drains, the second exits at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
                        signal_hook::low_level::exit(i32::from(crate::error::exit_code::STOPPED));
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
    fn stop_signal_counts_requests() {
        let signal = StopSignal::never();
        assert!(!signal.requested());
        assert!(signal.requested_for().is_none());
        signal.request();
        assert!(signal.requested());
        assert!(signal.requested_for().is_some());
    }
}
