//! Continuous batching with `--parallel`, the shared prompt prefix, and kill -9 + resume while
//! several sequences are in flight — the real binary on the real SmolLM2 model.

use crate::util::*;

const SYSTEM: &str = "당신은 국립중앙박물관 한국사 전시실의 도슨트입니다. Answer every question in Korean, briefly and accurately.";

#[test]
fn parallel_4_answers_each_question_once_with_ordered_timestamps_and_a_reused_prefix() {
    let dir = tempdir();
    let db = dir.path().join("results.db");
    let output = run(
        &smollm(),
        &bundled_questions(),
        &db,
        &[
            "--parallel",
            "4",
            "--limit",
            "14",
            "--max-tokens",
            "16",
            "--system",
            SYSTEM,
        ],
    );
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let connection = open(&db);
    let (rows, distinct, slots, bad_order): (i64, i64, i64, i64) = connection
        .query_row(
            "SELECT COUNT(*), COUNT(DISTINCT question_id), COUNT(DISTINCT parallel_slot),
                    SUM(NOT (queued_at <= started_at AND started_at <= first_token_at
                             AND first_token_at <= finished_at))
             FROM answers",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!((rows, distinct), (14, 14), "every question exactly once");
    assert_eq!(slots, 4, "all four sequences were used");
    assert_eq!(
        bad_order, 0,
        "queued <= started <= first_token <= finished on every row"
    );

    // The chat-template header and the system prompt are computed once and copied.
    let (min_reused, max_reused, all_less): (i64, i64, i64) = connection
        .query_row(
            "SELECT MIN(prompt_tokens_reused), MAX(prompt_tokens_reused),
                    SUM(prompt_tokens_reused < prompt_tokens)
             FROM answers",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert!(
        min_reused >= 20,
        "system prompt tokens reused: {min_reused}"
    );
    assert_eq!(
        min_reused, max_reused,
        "one shared prefix for the whole run"
    );
    assert_eq!(all_less, 14, "the last prompt token is always computed");
    let engine: String = connection
        .query_row("SELECT engine_json FROM runs", [], |r| r.get(0))
        .unwrap();
    let engine: serde_json::Value = serde_json::from_str(&engine).unwrap();
    assert_eq!(
        engine["session"]["sequences"], 5,
        "4 slots + the prefix sequence"
    );
    assert_eq!(engine["shared_prefix_tokens"], max_reused);

    // Several questions were in flight at once: some answer started before another finished.
    let overlapping: i64 = connection
        .query_row(
            "SELECT COUNT(*) FROM answers a JOIN answers b ON a.id < b.id
             WHERE a.started_at < b.finished_at AND b.started_at < a.finished_at",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(overlapping > 0, "continuous batching overlaps questions");

    // What recording cost is measured and reported, and agrees with what was stored.
    let log = stderr(&output);
    let line = log
        .lines()
        .find(|l| l.contains("recording cost: recorder thread"))
        .unwrap_or_else(|| panic!("no recording-cost line in:\n{log}"));
    let number_before = |marker: &str| -> f64 {
        let head = &line[..line
            .find(marker)
            .unwrap_or_else(|| panic!("{marker} in {line}"))];
        head.split_whitespace().last().unwrap().parse().unwrap()
    };
    let samples: i64 = connection
        .query_row("SELECT COUNT(*) FROM memory_samples", [], |r| r.get(0))
        .unwrap();
    assert_eq!(number_before(" answers and") as i64, 14, "{line}");
    assert_eq!(number_before(" memory samples") as i64, samples, "{line}");
    assert!(number_before(" ms CPU for") > 0.0, "{line}");
    let share = number_before(" % of the decode loop");
    assert!(share > 0.0 && share < 100.0, "{line}");
}

#[test]
fn without_the_prefix_cache_nothing_is_reused_and_answers_still_come() {
    let dir = tempdir();
    let db = dir.path().join("results.db");
    let output = run(
        &smollm(),
        &bundled_questions(),
        &db,
        &[
            "--parallel",
            "2",
            "--limit",
            "4",
            "--max-tokens",
            "8",
            "--system",
            SYSTEM,
            "--no-prefix-cache",
        ],
    );
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let (rows, reused): (i64, i64) = open(&db)
        .query_row(
            "SELECT COUNT(*), SUM(prompt_tokens_reused) FROM answers",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((rows, reused), (4, 0));
}

#[test]
fn kill_9_with_parallel_4_then_resume_loses_no_committed_row() {
    let dir = tempdir();
    let db = dir.path().join("results.db");
    let args = ["--parallel", "4", "--limit", "32", "--max-tokens", "16"];
    let mut child = spawn(&smollm(), &bundled_questions(), &db, &args);
    wait_for_answers(&db, 6, &mut child);
    child.kill().expect("kill -9");
    child.wait().unwrap();
    let before = answer_rows(&db, 1);
    assert!(
        before.len() >= 6 && before.len() < 32,
        "killed mid-run: {}",
        before.len()
    );

    let output = run(
        &smollm(),
        &bundled_questions(),
        &db,
        &[&args[..], &["--resume"]].concat(),
    );
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let after = answer_rows(&db, 1);
    assert_eq!(after.len(), 32, "exactly one row per question");
    for (id, row) in &before {
        assert_eq!(
            after.get(id),
            Some(row),
            "committed row {id} changed on resume"
        );
    }
}

#[test]
fn an_overlong_prompt_among_short_ones_is_an_error_row_with_parallel_sequences() {
    let dir = tempdir();
    let db = dir.path().join("results.db");
    let long = "고려와 조선의 역사를 자세히 설명하세요. ".repeat(40);
    let mut lines: Vec<String> = (1..=6)
        .map(|i| format!("{{\"id\":\"s{i}\",\"question\":\"조선의 {i}번째 왕은 누구입니까?\"}}"))
        .collect();
    lines.insert(3, format!("{{\"id\":\"long\",\"question\":\"{long}\"}}"));
    let questions = write_questions(dir.path(), "q.jsonl", &(lines.join("\n") + "\n"));
    let output = run(
        &smollm(),
        &questions,
        &db,
        &["--parallel", "3", "--max-tokens", "8", "--ctx", "256"],
    );
    assert_eq!(code(&output), 1, "{}", stderr(&output));
    let connection = open(&db);
    let (ok, errors, long_error): (i64, i64, String) = connection
        .query_row(
            "SELECT SUM(status = 'ok'), SUM(status = 'error'),
                    (SELECT error FROM answers WHERE question_id = 'long')
             FROM answers",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((ok, errors), (6, 1));
    assert!(
        long_error.contains("exceeds the context of 256 tokens"),
        "{long_error}"
    );
}

#[test]
fn questions_sharing_a_passage_compute_it_once_and_answer_as_without_the_cache() {
    // Twelve questions on four passages, interleaved in the file (a reading-comprehension set).
    let questions = root().join("questions/passages_sample.jsonl");
    let dir = tempdir();
    let args = [
        "--parallel",
        "2",
        "--max-tokens",
        "6",
        "--threads",
        "2",
        "--system",
        SYSTEM,
    ];
    let tree = dir.path().join("tree.db");
    let output = run(&smollm(), &questions, &tree, &args);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert!(
        stderr(&output).contains("prompt prefixes: 5 shared"),
        "the template with the system prompt, and under it one per passage: {}",
        stderr(&output)
    );
    let plain = dir.path().join("plain.db");
    let output = run(
        &smollm(),
        &questions,
        &plain,
        &[&args[..], &["--no-prefix-cache"]].concat(),
    );
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    // A passage's KV computed in another batch differs only by rounding (llama.cpp's CPU kernels
    // differ by batch size), so greedy answers match except at near-ties; a wrong copy would
    // change them all.
    let (with_tree, without) = (answer_texts(&tree), answer_texts(&plain));
    let same = with_tree
        .iter()
        .filter(|(id, a)| without.get(*id) == Some(a))
        .count();
    assert!(same >= 10, "{same}/12 equal:\n{with_tree:#?}\n{without:#?}");
    let (prompt, reused): (i64, i64) = open(&tree)
        .query_row(
            "SELECT SUM(prompt_tokens), SUM(prompt_tokens_reused) FROM answers",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let computed = prompt - reused;
    println!("passages: {prompt} prompt tokens, {computed} computed per question");
    // Every question computes only its own words; each passage is computed once, elsewhere.
    assert!(
        computed * 5 < prompt,
        "{computed} of {prompt} computed per question"
    );
    // `--prefix-cache global` shares only what every prompt starts with (the template and the
    // system prompt): one prefix, the same number of tokens reused by every answer.
    let global = dir.path().join("global.db");
    let output = run(
        &smollm(),
        &questions,
        &global,
        &[&args[..], &["--prefix-cache", "global"]].concat(),
    );
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert!(
        stderr(&output).contains("prompt prefixes: 1 shared"),
        "{}",
        stderr(&output)
    );
    let reused: Vec<i64> = open(&global)
        .prepare("SELECT prompt_tokens_reused FROM answers")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(reused.len(), 12);
    assert!(
        reused[0] > 0 && reused.iter().all(|&r| r == reused[0]),
        "{reused:?}"
    );
    assert!(
        reused.iter().sum::<i64>() * 2 < prompt - computed,
        "tree reuses far more"
    );
}

/// Answer text by question id.
fn answer_texts(db: &std::path::Path) -> std::collections::BTreeMap<String, String> {
    open(db)
        .prepare("SELECT question_id, answer FROM answers")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}
