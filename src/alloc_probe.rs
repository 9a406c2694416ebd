//! Test-only: the test binary's global allocator, which records per thread the largest single
//! allocation request made while a probe is armed. Property tests arm it around one parse and
//! assert that no count or length read from the input was trusted for an allocation: the inputs
//! are small, so a large request can only come from a number in the file.
//!
//! The state is two const-initialised thread-local `Cell`s (no destructor, no lazy
//! initialisation), so reading them inside the allocator never allocates or re-enters it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Requests larger than this, while armed, are refused: the test then fails fast with
/// "memory allocation of N bytes failed" instead of paging or being killed by the OOM killer.
const REFUSE_ABOVE: usize = 1 << 30;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

struct Probe;

#[global_allocator]
static PROBE: Probe = Probe;

/// Record a request; `false` when it must be refused.
fn note(size: usize) -> bool {
    // `try_with`: during thread teardown the slots may already be gone; nothing is recorded then.
    let armed = ARMED.try_with(Cell::get).unwrap_or(false);
    if armed {
        let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
    }
    !(armed && size > REFUSE_ABOVE)
}

// SAFETY: every call is forwarded unchanged to the system allocator; a refused request returns
// null, which `GlobalAlloc` allows (the caller then reports the failure).
unsafe impl GlobalAlloc for Probe {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !note(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract for `layout` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !note(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !note(new_size) {
            return std::ptr::null_mut();
        }
        // SAFETY: `ptr` came from this allocator, i.e. from `System`, with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Run `f` with the probe armed on this thread; returns its result and the largest single
/// allocation request (bytes) it made on this thread.
pub fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|largest| largest.set(0));
    ARMED.with(|armed| armed.set(true));
    // Disarm even if `f` panics, so the panic's own reporting is not probed.
    struct Disarm;
    impl Drop for Disarm {
        fn drop(&mut self) {
            ARMED.with(|armed| armed.set(false));
        }
    }
    let guard = Disarm;
    let out = f();
    drop(guard);
    (out, LARGEST.with(Cell::get))
}

/// Largest single allocation a parse may request: the longest GGUF string accepted (64 MiB, which
/// a huge sparse file can hold). Far above what a few hundred KB of input needs, far below what a
/// count or length trusted from the input asks for.
pub const PARSE_ALLOCATION_LIMIT: usize = 64 << 20;

/// Cases per property test: `PROPTEST_CASES` when set (`make fuzz` sets 20000), else `default`.
pub fn property_config(default: u32) -> proptest::test_runner::Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    proptest::test_runner::Config {
        // A failure prints its shrunk input; nothing is written next to the sources.
        failure_persistence: None,
        ..proptest::test_runner::Config::with_cases(cases)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_the_largest_request_while_armed_only() {
        let ((), largest) = largest_allocation(|| {
            let small = std::hint::black_box(vec![0u8; 1000]);
            let large: Vec<u64> = std::hint::black_box(Vec::with_capacity(10_000));
            drop((small, large));
        });
        assert_eq!(largest, 80_000);
        let _outside = std::hint::black_box(vec![0u8; 1 << 20]);
        let ((), largest) = largest_allocation(|| {});
        assert_eq!(largest, 0, "requests made while disarmed are not recorded");
    }
}
