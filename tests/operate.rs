//! Operating a long run from other processes — status, stop, signals, monitor — with the real
//! binary on the real SmolLM2-135M model. The one-writer rule (exit 4) is in `exit_codes`.

use crate::util::*;
use std::time::Duration;

const SLOW: &[&str] = &["--max-tokens", "24", "--threads", "2", "--limit", "60"];

#[test]
fn status_from_a_second_process_reports_a_live_run() {
    let dir = tempdir();
    let db = dir.path().join("results.db");
    let mut child = spawn(&smollm(), &bundled_questions(), &db, SLOW);
    wait_for_answers(&db, 3, &mut child);

    let db_arg = db.to_str().unwrap();
    let output = cli(&["status", "--db", db_arg, "--json"]);
    let committed_after = answer_count(&db);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("status --json");
    assert_eq!(report["status"], "running");
    assert_eq!(report["holder_alive"], true);
    assert_eq!(report["holder_pid"], child.id());
    assert_eq!(report["total"], 60);
    let done = report["done"].as_i64().unwrap();
    assert!(
        done >= 3 && done <= committed_after,
        "done {done}, committed {committed_after}"
    );
    assert!(report["recent_per_minute"].as_f64().unwrap() > 0.0);
    assert!(report["eta_seconds"].as_f64().unwrap() > 0.0);
    assert!(report["last_sample"]["rss_bytes"].as_i64().unwrap() > 50 << 20);

    let text = cli(&["status", "--db", db_arg]);
    assert!(
        stdout(&text).contains("held by process"),
        "{}",
        stdout(&text)
    );
    assert!(stdout(&text).contains("/60"), "{}", stdout(&text));

    child.kill().unwrap();
    child.wait().unwrap();
    let dead = cli(&["status", "--db", db_arg, "--json"]);
    let report: serde_json::Value = serde_json::from_str(&stdout(&dead)).unwrap();
    assert_eq!(report["holder_alive"], false);
    assert!(
        report["state"].as_str().unwrap().starts_with("dead"),
        "{report}"
    );
}

#[test]
fn stop_ends_a_live_run_gracefully_and_waits_for_it() {
    let dir = tempdir();
    let db = dir.path().join("results.db");
    let mut child = spawn(&smollm(), &bundled_questions(), &db, SLOW);
    wait_for_answers(&db, 2, &mut child);

    let output = cli(&["stop", "--db", db.to_str().unwrap()]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert!(
        stdout(&output).contains("stopped; status interrupted"),
        "{}",
        stdout(&output)
    );
    // `stop` returned only after the run was released: the child has exited (or is exiting) with 3.
    let exit = child.wait_with_output().unwrap();
    assert_eq!(code(&exit), 3, "{}", stderr(&exit));
    let (status, holder): (String, Option<i64>) = open(&db)
        .query_row("SELECT status, holder_pid FROM runs", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((status.as_str(), holder), ("interrupted", None));

    let again = cli(&["stop", "--db", db.to_str().unwrap()]);
    assert_eq!(code(&again), 0);
    assert!(stdout(&again).contains("not running"), "{}", stdout(&again));
}

#[test]
fn a_second_interrupt_stops_at_once_and_committed_rows_survive() {
    let dir = tempdir();
    let db = dir.path().join("results.db");
    // Every answer is exactly 200 tokens (end-of-sequence ignored), so draining the question in
    // flight takes seconds and the grace period is long: only the second signal can end the run
    // before that question is answered and the run released.
    let args = [
        "--max-tokens",
        "200",
        "--ignore-eos",
        "--threads",
        "2",
        "--limit",
        "10",
        "--grace-seconds",
        "600",
    ];
    let mut child = spawn(&smollm(), &bundled_questions(), &db, &args);
    wait_for_answers(&db, 1, &mut child);
    let before = answer_rows(&db, 1);
    let pid = child.id();
    // SAFETY: signalling our own child process.
    unsafe {
        libc::kill(pid as i32, libc::SIGINT);
        std::thread::sleep(Duration::from_millis(100));
        libc::kill(pid as i32, libc::SIGINT);
    }
    let output = child.wait_with_output().unwrap();
    assert_eq!(code(&output), 3, "{}", stderr(&output));
    let after = answer_rows(&db, 1);
    for (id, row) in &before {
        assert_eq!(after.get(id), Some(row), "row {id} survived");
    }
    // Exited at once: the question in flight was abandoned, not drained, and the run was left as
    // a killed process leaves it (still `running`, its holder recorded) instead of released.
    assert_eq!(
        after.len(),
        before.len(),
        "the question in flight was not finished"
    );
    let (status, holder): (String, Option<i64>) = open(&db)
        .query_row("SELECT status, holder_pid FROM runs", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(
        (status.as_str(), holder),
        ("running", Some(i64::from(pid))),
        "no graceful release after the second signal"
    );
}

#[test]
fn monitor_prints_ram_and_swap_and_says_once_when_nvml_is_absent() {
    let output = cli(&["monitor", "--interval-ms", "100", "--count", "3"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let text = stdout(&output);
    let samples: Vec<&str> = text.lines().filter(|l| l.contains("GiB")).collect();
    assert_eq!(samples.len(), 3, "{text}");
    assert!(
        samples
            .iter()
            .all(|l| l.contains("swap") && l.contains("GiB")),
        "{text}"
    );
    if !std::path::Path::new("/dev/nvidia0").exists() {
        assert_eq!(text.matches("NVML not available").count(), 1, "{text}");
    }
}
