//! A run end to end: the real binary on the real SmolLM2-135M model (and Gemma-3 270M where a
//! second model is needed). Every test here can fail: each asserts on the database the run leaves.
//! Exit codes 1, 2 and 3 of a run are covered in `exit_codes`.

use crate::util::*;

const FAST: &[&str] = &["--max-tokens", "12", "--threads", "2"];

#[test]
fn a_run_answers_every_question_with_ordered_timings_and_memory_samples() {
    let dir = tempdir();
    let db = dir.path().join("results.db");
    // Debug logging, to count how often NVML's absence is reported.
    let output = run_command(
        &smollm(),
        &bundled_questions(),
        &db,
        &[FAST, &["--limit", "10"]].concat(),
    )
    .env("RUST_LOG", "docent_eval=debug,warn")
    .output()
    .expect("docent-eval runs");
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert!(
        stdout(&output).contains("answered 10/10"),
        "{}",
        stdout(&output)
    );

    let connection = open(&db);
    let (status, done, total, ok, errors): (String, i64, i64, i64, i64) = connection
        .query_row(
            "SELECT status, done, total, ok, errors FROM run_summary",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    assert_eq!(
        (status.as_str(), done, total, ok, errors),
        ("finished", 10, 10, 10, 0)
    );

    // Timestamps ordered; durations match the design's definitions; memory on every row.
    let bad: i64 = connection
        .query_row(
            "SELECT COUNT(*) FROM answers WHERE NOT (
                 queued_at <= started_at AND started_at <= first_token_at AND first_token_at <= finished_at
                 AND ttft_ms >= 0 AND latency_ms >= ttft_ms AND prompt_tokens > 0
                 AND completion_tokens BETWEEN 0 AND 12 AND rss_bytes > 0
                 AND length(finished_at) = 24 AND finished_at LIKE '%Z'
                 AND abs((julianday(finished_at) - julianday(started_at)) * 86400000.0 - latency_ms) < 2.0)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(bad, 0, "rows with inconsistent timings");
    let answered_with_text: i64 = connection
        .query_row(
            "SELECT COUNT(*) FROM answers WHERE length(answer) > 0",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        answered_with_text >= 8,
        "the real model writes text: {answered_with_text}/10"
    );

    // Memory samples from the sampler thread; without NVML the GPU columns are NULL, not an error.
    let (samples, rss, ram_total, gpu_rows): (i64, i64, i64, i64) = connection
        .query_row(
            "SELECT COUNT(*), MAX(rss_bytes), MAX(ram_total_bytes), COUNT(gpu_used_bytes) FROM memory_samples",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert!(
        samples >= 2,
        "at least the first and last sample: {samples}"
    );
    assert!(rss > 50 << 20, "RSS with a 98 MB model loaded: {rss}");
    assert!(ram_total > rss);
    if !std::path::Path::new("/dev/nvidia0").exists() {
        assert_eq!(gpu_rows, 0, "no NVML here: GPU columns stay NULL");
        // Every sample asks for GPU memory; NVML's absence is said once per process.
        let reports = stderr(&output).matches("NVML not available").count();
        assert_eq!(reports, 1, "{samples} samples:\n{}", stderr(&output));
    }
    let host_json: String = connection
        .query_row("SELECT host_json FROM runs", [], |r| r.get(0))
        .unwrap();
    assert!(host_json.contains("llama_system_info"), "{host_json}");
}

#[test]
fn kill_9_mid_run_then_resume_keeps_every_committed_row_and_duplicates_none() {
    let dir = tempdir();
    let db = dir.path().join("results.db");
    let args = [FAST, &["--limit", "24"]].concat();
    let mut child = spawn(&smollm(), &bundled_questions(), &db, &args);
    wait_for_answers(&db, 5, &mut child);
    child.kill().expect("kill -9");
    child.wait().unwrap();

    let before = answer_rows(&db, 1);
    assert!(
        before.len() >= 5 && before.len() < 24,
        "killed mid-run: {}",
        before.len()
    );
    let status: String = open(&db)
        .query_row("SELECT status FROM runs WHERE id = 1", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        status, "running",
        "a killed run still says running (its holder is dead)"
    );

    let output = run(
        &smollm(),
        &bundled_questions(),
        &db,
        &[&args[..], &["--resume"]].concat(),
    );
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert!(
        stderr(&output).contains("resuming run 1"),
        "{}",
        stderr(&output)
    );
    assert!(
        stderr(&output).contains("taking it over"),
        "stale holder noticed: {}",
        stderr(&output)
    );

    let after = answer_rows(&db, 1);
    assert_eq!(after.len(), 24, "exactly one row per question");
    for (id, row) in &before {
        assert_eq!(
            after.get(id),
            Some(row),
            "committed row {id} changed on resume"
        );
    }
    let connection = open(&db);
    let (runs, sessions, status): (i64, i64, String) = connection
        .query_row(
            "SELECT COUNT(*), MAX(sessions), MAX(status) FROM runs",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((runs, sessions, status.as_str()), (1, 2, "finished"));
}

#[test]
fn resume_refuses_a_different_model_or_setting_and_a_finished_run_does_nothing() {
    let dir = tempdir();
    let db = dir.path().join("results.db");
    let questions = bundled_questions();
    let args = [FAST, &["--limit", "3"]].concat();
    let first = run(&smollm(), &questions, &db, &args);
    assert_eq!(code(&first), 0, "{}", stderr(&first));

    // Resuming the finished run by id with other settings names every difference.
    let different = run(
        &gemma(),
        &questions,
        &db,
        &[
            "--max-tokens",
            "20",
            "--limit",
            "3",
            "--resume",
            "--run-id",
            "1",
        ],
    );
    assert_eq!(code(&different), 2, "{}", stderr(&different));
    let message = stderr(&different);
    assert!(message.contains("cannot resume run 1"), "{message}");
    assert!(message.contains("model file: run has sha256"), "{message}");
    assert!(
        message.contains("max_tokens: run has 12, now 20"),
        "{message}"
    );

    // The same run resumed again does nothing and says so.
    let again = run(
        &smollm(),
        &questions,
        &db,
        &[&args[..], &["--resume"]].concat(),
    );
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    assert!(
        stderr(&again).contains("already finished"),
        "{}",
        stderr(&again)
    );
    let (runs, answers, sessions): (i64, i64, i64) = open(&db)
        .query_row(
            "SELECT COUNT(*), (SELECT COUNT(*) FROM answers), MAX(sessions) FROM runs",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((runs, answers, sessions), (1, 3, 1));

    // An unfinished run with another question file is refused too.
    let mut child = spawn(
        &smollm(),
        &questions,
        &db,
        &[FAST, &["--limit", "30"]].concat(),
    );
    wait_for_answers(&db, 5, &mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    let other_questions =
        write_questions(dir.path(), "other.jsonl", "{\"question\":\"다른 질문\"}\n");
    let refused = run(
        &smollm(),
        &other_questions,
        &db,
        &[FAST, &["--limit", "30", "--resume"]].concat(),
    );
    assert_eq!(code(&refused), 2, "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("question file: run has sha256"),
        "{}",
        stderr(&refused)
    );
}
