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

/// What `docent-eval status` reports about one run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StatusReport {
    /// Run id.
    pub run_id: i64,
    /// Stored status: running, interrupted, finished, failed.
    pub status: String,
    /// Stored status, corrected for a dead holder: `running` with no live process reads `dead`.
    pub state: String,
    /// Why it failed or stopped.
    pub status_reason: Option<String>,
    /// Model name.
    pub model: String,
    /// Recorded holder process.
    pub holder_pid: Option<i64>,
    /// Whether that process is alive (same pid and start time).
    pub holder_alive: bool,
    /// Questions in the run.
    pub total: i64,
    /// Committed answers.
    pub done: i64,
    /// `ok` answers.
    pub ok: i64,
    /// `error` answers.
    pub errors: i64,
    /// Answers per minute over the last `rate_window_minutes` (at most 5, less early in a run).
    pub recent_per_minute: f64,
    /// The window used for the rate.
    pub rate_window_minutes: f64,
    /// Seconds to finish at the recent rate, when it is running.
    pub eta_seconds: Option<f64>,
    /// Last heartbeat of the holder.
    pub updated_at: String,
    /// The last memory sample.
    pub last_sample: Option<serde_json::Value>,
    /// The last error row: question id and message.
    pub last_error: Option<(String, String)>,
    /// Sessions (start + resumes).
    pub sessions: i64,
}

/// Minutes of recent answers used for the rate and the ETA.
const RATE_WINDOW_MINUTES: f64 = 5.0;

/// Resolve `--run-id` or the most recent run.
pub fn pick_run(store: &crate::store::Store, run_id: Option<i64>) -> crate::error::Result<i64> {
    use crate::error::Error;
    match run_id {
        Some(id) => store.run(id)?.map(|r| r.id).ok_or_else(|| {
            Error::Usage(format!(
                "--run-id {id}: no such run in {}",
                store.path().display()
            ))
        }),
        None => store.latest_run()?.map(|r| r.id).ok_or_else(|| {
            Error::Usage(format!(
                "{} holds no runs yet; start one with `docent-eval run`",
                store.path().display()
            ))
        }),
    }
}

/// Read a run's progress from the database (works while another process is writing it).
pub fn status(store: &crate::store::Store, run_id: i64) -> crate::error::Result<StatusReport> {
    let connection = store.connection();
    let mut report = connection.query_row(
        "SELECT r.id, r.status, r.status_reason, r.model_name, r.holder_pid, r.holder_started_at,
                r.question_count, r.updated_at, r.sessions,
                (SELECT COUNT(*) FROM answers a WHERE a.run_id = r.id),
                (SELECT COUNT(*) FROM answers a WHERE a.run_id = r.id AND a.status = 'ok'),
                (SELECT COUNT(*) FROM answers a WHERE a.run_id = r.id AND a.finished_at >=
                     strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?2)),
                -- The window starts at the earliest of those answers' queue times, so a run that
                -- began a minute ago is not averaged over five.
                (SELECT (julianday('now') - julianday(MIN(a.queued_at))) * 1440.0 FROM answers a
                 WHERE a.run_id = r.id AND a.finished_at >= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?2))
         FROM runs r WHERE r.id = ?1",
        rusqlite::params![run_id, format!("-{} minutes", RATE_WINDOW_MINUTES)],
        |row| {
            let holder_pid: Option<i64> = row.get(4)?;
            let holder_started: Option<String> = row.get(5)?;
            let alive = match (holder_pid, &holder_started) {
                (Some(pid), Some(started)) => holder_alive(pid, started),
                _ => false,
            };
            let status: String = row.get(1)?;
            let done: i64 = row.get(9)?;
            let ok: i64 = row.get(10)?;
            let recent: i64 = row.get(11)?;
            let window_minutes: f64 = row
                .get::<_, Option<f64>>(12)?
                .unwrap_or(RATE_WINDOW_MINUTES)
                .clamp(1.0 / 60.0, RATE_WINDOW_MINUTES);
            Ok(StatusReport {
                run_id: row.get(0)?,
                state: if status == "running" && !alive {
                    "dead (killed or crashed; --resume continues it)".into()
                } else {
                    status.clone()
                },
                status,
                status_reason: row.get(2)?,
                model: row.get(3)?,
                holder_pid,
                holder_alive: alive,
                total: row.get(6)?,
                done,
                ok,
                errors: done - ok,
                recent_per_minute: recent as f64 / window_minutes,
                rate_window_minutes: window_minutes,
                eta_seconds: None,
                updated_at: row.get(7)?,
                last_sample: None,
                last_error: None,
                sessions: row.get(8)?,
            })
        },
    )?;
    if report.holder_alive && report.recent_per_minute > 0.0 {
        report.eta_seconds =
            Some((report.total - report.done).max(0) as f64 / report.recent_per_minute * 60.0);
    }
    report.last_sample = connection
        .query_row(
            "SELECT at, rss_bytes, ram_used_bytes, ram_total_bytes, swap_used_bytes, swap_total_bytes,
                    gpu_used_bytes, gpu_total_bytes, gpu_util_pct
             FROM memory_samples WHERE run_id = ?1 ORDER BY at DESC LIMIT 1",
            [run_id],
            |row| {
                Ok(serde_json::json!({
                    "at": row.get::<_, String>(0)?,
                    "rss_bytes": row.get::<_, Option<i64>>(1)?,
                    "ram_used_bytes": row.get::<_, Option<i64>>(2)?,
                    "ram_total_bytes": row.get::<_, Option<i64>>(3)?,
                    "swap_used_bytes": row.get::<_, Option<i64>>(4)?,
                    "swap_total_bytes": row.get::<_, Option<i64>>(5)?,
                    "gpu_used_bytes": row.get::<_, Option<i64>>(6)?,
                    "gpu_total_bytes": row.get::<_, Option<i64>>(7)?,
                    "gpu_util_pct": row.get::<_, Option<i64>>(8)?,
                }))
            },
        )
        .ok();
    report.last_error = connection
        .query_row(
            "SELECT question_id, error FROM answers WHERE run_id = ?1 AND status = 'error' ORDER BY id DESC LIMIT 1",
            [run_id],
            |row| Ok((row.get(0)?, row.get::<_, Option<String>>(1)?.unwrap_or_default())),
        )
        .ok();
    Ok(report)
}

/// `status` as text for a person.
pub fn status_text(report: &StatusReport) -> String {
    let mut text = format!(
        "run {} · {} · {}\n  progress {}/{} ({:.1}%)  ok {}  errors {}  sessions {}\n",
        report.run_id,
        report.model,
        report.state,
        report.done,
        report.total,
        100.0 * report.done as f64 / report.total.max(1) as f64,
        report.ok,
        report.errors,
        report.sessions
    );
    match (report.holder_pid, report.holder_alive) {
        (Some(pid), true) => {
            text += &format!(
                "  held by process {pid} (alive), last heartbeat {}\n",
                report.updated_at
            )
        }
        (Some(pid), false) => {
            text += &format!("  recorded holder {pid} is gone; `--resume` takes the run over\n")
        }
        (None, _) => text += &format!("  no process holds it; last update {}\n", report.updated_at),
    }
    text += &format!(
        "  rate {:.1} answers/min over the last {:.1} min",
        report.recent_per_minute, report.rate_window_minutes
    );
    if let Some(eta) = report.eta_seconds {
        text += &format!(", ETA {}", format_duration(eta));
    }
    text.push('\n');
    if let Some(sample) = &report.last_sample {
        let get = |key: &str| sample.get(key).and_then(serde_json::Value::as_i64);
        text += &format!(
            "  memory at {}: RSS {}  RAM {} / {}  swap {} / {}  GPU {}\n",
            sample.get("at").and_then(|v| v.as_str()).unwrap_or("-"),
            crate::monitor::gib_text(get("rss_bytes")),
            crate::monitor::gib_text(get("ram_used_bytes")),
            crate::monitor::gib_text(get("ram_total_bytes")),
            crate::monitor::gib_text(get("swap_used_bytes")),
            crate::monitor::gib_text(get("swap_total_bytes")),
            get("gpu_used_bytes").map_or("n/a (no NVML)".into(), |g| format!(
                "{} / {}",
                crate::monitor::gib_text(Some(g)),
                crate::monitor::gib_text(get("gpu_total_bytes"))
            )),
        );
    }
    if let Some(reason) = &report.status_reason {
        text += &format!("  reason: {reason}\n");
    }
    if let Some((question, error)) = &report.last_error {
        text += &format!("  last error: {question}: {error}\n");
    }
    text
}

fn format_duration(seconds: f64) -> String {
    let seconds = seconds.round() as u64;
    format!(
        "{}h{:02}m{:02}s",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
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
        )));
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
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
