//! Who holds a run, and how a run is asked to stop.
//!
//! A run records the pid and the start time of the process writing it. A pid alone can be reused
//! after a reboot or a crash; pid plus start time names one process.

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

/// What `stop` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopOutcome {
    /// The holder was signalled and released the run.
    Stopped { pid: i64, status: String },
    /// No live process holds the run.
    NotRunning { status: String },
}

/// Ask the live holder of `run_id` to stop gracefully (SIGTERM) and wait until it has released
/// the run. The pid is signalled only when its start time matches the recorded one, so a
/// reused pid is never hit.
pub fn stop(
    store: &crate::store::Store,
    run_id: i64,
    timeout: Duration,
) -> crate::error::Result<StopOutcome> {
    use crate::error::Error;
    let run = store
        .run(run_id)?
        .ok_or_else(|| Error::Usage(format!("--run-id {run_id}: no such run")))?;
    let (Some(pid), Some(started)) = (run.holder_pid, run.holder_started_at.clone()) else {
        return Ok(StopOutcome::NotRunning {
            status: run.status.as_str().into(),
        });
    };
    if !holder_alive(pid, &started) {
        return Ok(StopOutcome::NotRunning {
            status: format!("{} (holder {pid} is gone)", run.status.as_str()),
        });
    }
    let target =
        i32::try_from(pid).map_err(|_| Error::Usage(format!("recorded pid {pid} is invalid")))?;
    // SAFETY: plain kill(2) on a pid verified above to be the run's holder.
    if unsafe { libc::kill(target, libc::SIGTERM) } != 0 {
        return Err(Error::Usage(format!(
            "cannot signal process {pid}: {}; run `stop` as the user that started the run",
            std::io::Error::last_os_error()
        ))
        .into());
    }
    let deadline = Instant::now() + timeout;
    loop {
        let now = store.run(run_id)?;
        let released = now.as_ref().is_none_or(|r| r.holder_pid.is_none());
        if released || !holder_alive(pid, &started) {
            let status = now.map_or("gone".into(), |r| r.status.as_str().to_string());
            return Ok(StopOutcome::Stopped { pid, status });
        }
        if Instant::now() >= deadline {
            return Err(Error::Usage(format!(
                "process {pid} did not stop within {}s; send it a second signal (kill -INT {pid}) to stop at once",
                timeout.as_secs()
            )).into());
        }
        std::thread::sleep(Duration::from_millis(100));
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
}
