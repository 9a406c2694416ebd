//! Who holds a run, and how a run is asked to stop.
//!
//! A run records the pid and the start time of the process writing it. A pid alone can be reused
//! after a reboot or a crash; pid plus start time names one process.

use crate::error::{usage, Result};
use crate::store::{Holder, Store};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
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
pub fn this_process() -> Holder {
    let pid = std::process::id();
    Holder {
        pid: i64::from(pid),
        started_at: process_start_time(pid).unwrap_or(0).to_string(),
    }
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
/// the run. A database names a pid, and a copied or edited one could name any process, so the
/// pid is signalled only when it is a live docent-eval process of the calling user, started
/// when the run says, that has this database open; otherwise `stop` refuses and says why.
pub fn stop(store: &Store, run_id: i64, timeout: Duration) -> Result<StopOutcome> {
    let run = store
        .run(run_id)?
        .ok_or_else(|| usage(format!("--run-id {run_id}: no such run")))?;
    let (Some(pid), Some(started)) = (run.holder_pid, run.holder_started_at.clone()) else {
        return Ok(StopOutcome::NotRunning {
            status: run.status.to_string(),
        });
    };
    if !holder_alive(pid, &started) {
        return Ok(StopOutcome::NotRunning {
            status: format!("{} (holder {pid} is gone)", run.status),
        });
    }
    let target = verify_holder(pid, store.path()).map_err(|why| {
        usage(format!(
            "refusing to signal process {pid}, which {} names as the holder of run {run_id}: {why}",
            store.path().display()
        ))
    })?;
    // SAFETY: plain kill(2) on a pid verified above to be this database's docent-eval writer.
    if unsafe { libc::kill(target, libc::SIGTERM) } != 0 {
        return Err(usage(format!(
            "cannot signal process {pid}: {}; run `stop` as the user that started the run",
            std::io::Error::last_os_error()
        )));
    }
    wait_for_release(store, run_id, pid, &started, timeout)
}

/// Why process `pid` must not be signalled on behalf of the database at `db`, if it must not.
fn verify_holder(pid: i64, db: &Path) -> std::result::Result<i32, String> {
    let target = i32::try_from(pid).map_err(|_| format!("{pid} is not a valid pid"))?;
    let proc_dir = PathBuf::from(format!("/proc/{target}"));
    let metadata =
        std::fs::metadata(&proc_dir).map_err(|e| format!("it cannot be inspected ({e})"))?;
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if metadata.uid() != uid {
        return Err(format!(
            "it belongs to user {}, not to you ({uid})",
            metadata.uid()
        ));
    }
    let exe = std::fs::read_link(proc_dir.join("exe"))
        .map_err(|e| format!("its executable cannot be read ({e})"))?;
    let ours = std::env::current_exe().ok();
    let name = |p: &Path| {
        p.file_name().map(|n| {
            n.to_string_lossy()
                .trim_end_matches(" (deleted)")
                .to_string()
        })
    };
    if name(&exe) != ours.as_deref().and_then(name) {
        return Err(format!("it runs {}, not docent-eval", exe.display()));
    }
    let db = std::fs::canonicalize(db)
        .map_err(|e| format!("the database path cannot be resolved ({e})"))?;
    let holds_db = std::fs::read_dir(proc_dir.join("fd"))
        .map_err(|e| format!("its open files cannot be read ({e})"))?
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .any(|open| open == db);
    if !holds_db {
        return Err(format!("it does not have {} open", db.display()));
    }
    Ok(target)
}

/// Wait until the holder has released the run (or died), up to `timeout`.
fn wait_for_release(
    store: &Store,
    run_id: i64,
    pid: i64,
    started: &str,
    timeout: Duration,
) -> Result<StopOutcome> {
    // A timeout too large to add to the clock means no deadline.
    let deadline = Instant::now().checked_add(timeout);
    loop {
        let now = store.run(run_id)?;
        let released = now.as_ref().is_none_or(|r| r.holder_pid.is_none());
        if released || !holder_alive(pid, started) {
            let status = now.map_or("gone".into(), |r| r.status.to_string());
            return Ok(StopOutcome::Stopped { pid, status });
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(usage(format!(
                "process {pid} did not stop within {}s; send it a second signal (kill -INT {pid}) to stop at once",
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_not() {
        let Holder {
            pid,
            started_at: started,
        } = this_process();
        assert!(holder_alive(pid, &started));
        let other: u64 = started.parse::<u64>().unwrap() + 1000;
        assert!(!holder_alive(pid, &other.to_string()));
        assert!(!holder_alive(i64::from(u32::MAX - 1), &started));
    }

    #[test]
    fn only_a_docent_eval_process_holding_the_database_may_be_signalled() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("r.db");
        std::fs::write(&db, b"").unwrap();
        let pid = this_process().pid;
        // This process runs the same executable as itself; it qualifies only while the database
        // is open in it.
        let why = verify_holder(pid, &db).unwrap_err();
        assert!(why.contains("does not have"), "{why}");
        let open = std::fs::File::open(&db).unwrap();
        assert_eq!(verify_holder(pid, &db), Ok(pid as i32));
        drop(open);
        // pid 1 (init) is not ours either way.
        assert!(verify_holder(1, &db).is_err());
        assert!(verify_holder(i64::from(u32::MAX), &db).is_err());
    }
}
