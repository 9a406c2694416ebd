//! Multiple choice scored by log-likelihood (`run --mc-scoring loglik|both`) on the real
//! SmolLM2 model: rows per choice, the figures the views derive from them, crash safety.

use crate::util::*;
use rusqlite::Connection;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The bundled set's multiple-choice questions (30 Korean-history questions, 4 choices each).
fn bundled_multiple_choice(dir: &Path, limit: usize) -> PathBuf {
    let text = std::fs::read_to_string(bundled_questions()).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("\"choices\""))
        .take(limit)
        .collect();
    write_questions(dir, "mc.jsonl", &(lines.join("\n") + "\n"))
}

/// Per question: (correct index, category, [(logprob, chars, bytes, tokens)]) from the rows.
type Choices = BTreeMap<String, (Option<i64>, String, Vec<(f64, i64, i64, i64)>)>;

fn choice_rows(connection: &Connection) -> Choices {
    let mut statement = connection
        .prepare(
            "SELECT c.question_id, q.answer_index, COALESCE(q.category, '(none)'), c.logprob,
                    c.chars, c.bytes, c.tokens
             FROM choice_scores c JOIN questions q USING (run_id, question_id)
             ORDER BY c.question_id, c.choice_index",
        )
        .unwrap();
    let mut out = Choices::new();
    let rows = statement
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, String>(2)?,
                (r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?),
            ))
        })
        .unwrap();
    for row in rows {
        let (id, answer, category, choice) = row.unwrap();
        out.entry(id)
            .or_insert_with(|| (answer, category, Vec::new()))
            .2
            .push(choice);
    }
    out
}

/// The first index of the largest value (numpy's argmax, as lm-evaluation-harness).
fn argmax(values: impl Iterator<Item = f64>) -> usize {
    let mut best = (0, f64::NEG_INFINITY);
    for (index, value) in values.enumerate() {
        if value > best.1 {
            best = (index, value);
        }
    }
    best.0
}

/// acc, acc_norm (chars), acc_bytes and the per-token mean, computed here from the rows alone.
fn accuracies(choices: &Choices) -> [f64; 4] {
    let mut correct = [0usize; 4];
    for (answer, _, rows) in choices.values() {
        let answer = answer.expect("graded") as usize;
        let picks = [
            argmax(rows.iter().map(|r| r.0)),
            argmax(rows.iter().map(|r| r.0 / r.1 as f64)),
            argmax(rows.iter().map(|r| r.0 / r.2 as f64)),
            argmax(rows.iter().map(|r| r.0 / r.3 as f64)),
        ];
        for (count, pick) in correct.iter_mut().zip(picks) {
            *count += usize::from(pick == answer);
        }
    }
    correct.map(|c| c as f64 / choices.len() as f64)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-3
}

#[test]
fn letter_labels_score_one_token_per_choice_and_the_views_match_the_rows() {
    let dir = tempdir();
    let questions = bundled_multiple_choice(dir.path(), 12);
    let db = dir.path().join("loglik.db");
    let output = run(
        &smollm(),
        &questions,
        &db,
        &["--mc-scoring", "loglik", "--parallel", "3"],
    );
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let connection = open(&db);
    let choices = choice_rows(&connection);
    assert_eq!(choices.len(), 12, "every question scored");
    for (id, (_, _, rows)) in &choices {
        assert_eq!(rows.len(), 4, "{id}: one row per choice");
        assert!(
            rows.iter().all(|r| r.3 == 1 && r.1 == 1),
            "{id}: letters are one token, one char"
        );
        assert!(
            rows.iter().all(|r| r.0 < 0.0 && r.0.is_finite()),
            "{id}: {rows:?}"
        );
    }
    // The answer row is the choice of highest log-probability; nothing was generated.
    let answers: Vec<(String, i64, String, i64)> = connection
        .prepare("SELECT question_id, chosen_index, answer, completion_tokens FROM answers WHERE finish_reason = 'loglik' ORDER BY question_id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(answers.len(), 12);
    for (id, chosen, answer, generated) in &answers {
        let rows = &choices[id].2;
        assert_eq!(*chosen as usize, argmax(rows.iter().map(|r| r.0)), "{id}");
        assert_eq!(answer, &["A", "B", "C", "D"][*chosen as usize]);
        assert_eq!(*generated, 0);
    }
    // The views' accuracies are the ones computed here from the rows.
    let [acc, acc_norm, acc_bytes, acc_token] = accuracies(&choices);
    let summary: (i64, f64, f64, f64, f64, f64, f64) = connection
        .query_row(
            "SELECT loglik_scored, loglik_acc, loglik_acc_norm, loglik_acc_bytes, loglik_acc_token,
                    loglik_chance, accuracy FROM run_summary",
            [],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            },
        )
        .unwrap();
    assert_eq!(summary.0, 12);
    assert!(
        close(summary.1, acc) && close(summary.2, acc_norm),
        "{summary:?}"
    );
    assert!(
        close(summary.3, acc_bytes) && close(summary.4, acc_token),
        "{summary:?}"
    );
    assert!(close(summary.5, 0.25), "chance with 4 choices: {summary:?}");
    assert!(
        close(summary.6, acc),
        "the run's accuracy is acc when loglik is the only scoring"
    );
    // Per category, the same definitions over the category's questions.
    let mut by_category: BTreeMap<String, Choices> = BTreeMap::new();
    for (id, row) in &choices {
        by_category
            .entry(row.1.clone())
            .or_default()
            .insert(id.clone(), row.clone());
    }
    for (category, subset) in &by_category {
        let (scored, acc_norm_view): (i64, f64) = connection
            .query_row(
                "SELECT loglik_scored, loglik_acc_norm FROM category_summary WHERE category = ?1",
                [category],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(scored as usize, subset.len());
        assert!(close(acc_norm_view, accuracies(subset)[1]), "{category}");
    }
    // The report carries the same per-category figures, and the HTML page charts them.
    let db_text = db.display().to_string();
    let json: serde_json::Value = serde_json::from_str(&ok_stdout(&cli(&[
        "report", "--db", &db_text, "--format", "json",
    ])))
    .unwrap();
    let categories = json["runs"][0]["categories"].as_array().unwrap();
    assert_eq!(categories.len(), by_category.len());
    for c in categories {
        let subset = &by_category[c["category"].as_str().unwrap()];
        let [acc, acc_norm, _, _] = accuracies(subset);
        assert!(close(c["loglik_acc"]["rate"].as_f64().unwrap(), acc), "{c}");
        assert!(
            close(c["loglik_acc_norm"]["rate"].as_f64().unwrap(), acc_norm),
            "{c}"
        );
        assert!(close(c["loglik_chance"].as_f64().unwrap(), 0.25), "{c}");
    }
    let html = ok_stdout(&cli(&["report", "--db", &db_text, "--format", "html"]));
    assert!(html.contains("Log-likelihood accuracy per category"));
}

#[test]
fn a_choice_equal_to_the_generated_answer_is_greedy_and_beats_a_nonsense_choice() {
    let dir = tempdir();
    let question = "What is the capital of France? Answer with the city name only.";
    let free = write_questions(
        dir.path(),
        "free.jsonl",
        &format!("{{\"id\": \"q\", \"question\": \"{question}\"}}\n"),
    );
    let db = dir.path().join("generated.db");
    let output = run(&smollm(), &free, &db, &["--max-tokens", "4"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let generated: String = open(&db)
        .query_row("SELECT answer FROM answers", [], |r| r.get(0))
        .unwrap();
    assert!(!generated.trim().is_empty(), "{generated:?}");
    // The greedy answer, scored as a choice after the same prompt, was the argmax at each step.
    let choices = serde_json::json!([generated, "zebra helicopter purple"]);
    let mc = write_questions(
        dir.path(),
        "mc.jsonl",
        &format!(
            "{}\n",
            serde_json::json!({"id": "q", "question": question, "choices": choices, "answer_index": 0})
        ),
    );
    let mut scores_by_parallel = Vec::new();
    for parallel in ["1", "2"] {
        let db = dir.path().join(format!("text-{parallel}.db"));
        let output = run(
            &smollm(),
            &mc,
            &db,
            &[
                "--mc-scoring",
                "loglik",
                "--mc-continuation",
                "text",
                "--parallel",
                parallel,
            ],
        );
        assert_eq!(code(&output), 0, "{}", stderr(&output));
        let rows: Vec<(String, f64, i64, bool, i64)> = open(&db)
            .prepare("SELECT continuation, logprob, tokens, greedy, tokens_computed FROM choice_scores ORDER BY choice_index")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].0, generated.trim());
        assert!(rows[0].3, "the generated answer is greedy: {rows:?}");
        assert!(!rows[1].3, "{rows:?}");
        assert!(rows[0].1 > rows[1].1, "{rows:?}");
        // The two choices share no first token: every token of each is its own.
        assert!(rows[1].2 >= 3 && rows[1].4 == rows[1].2, "{rows:?}");
        scores_by_parallel.push(rows.iter().map(|r| r.1).collect::<Vec<f64>>());
    }
    // A question is decoded alone, so --parallel does not change a single bit of its scores.
    assert_eq!(scores_by_parallel[0], scores_by_parallel[1]);
}

#[test]
fn both_modes_side_by_side_and_kill_9_then_resume_loses_nothing() {
    let dir = tempdir();
    let questions = bundled_multiple_choice(dir.path(), 30);
    let db = dir.path().join("both.db");
    let args = [
        "--mc-scoring",
        "both",
        "--mc-continuation",
        "text",
        "--max-tokens",
        "6",
    ];
    let mut child = spawn(&smollm(), &questions, &db, &args);
    // Scores come first: kill once some questions have all their choices.
    let start = std::time::Instant::now();
    loop {
        let scored: i64 = if db.exists() {
            open(&db)
                .query_row(
                    "SELECT COUNT(DISTINCT question_id) FROM choice_scores",
                    [],
                    |r| r.get(0),
                )
                .unwrap_or(0)
        } else {
            0
        };
        if scored >= 3 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before the kill"
        );
        assert!(
            start.elapsed().as_secs() < 600,
            "no scores after 10 minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().expect("kill -9");
    child.wait().unwrap();
    let before = choice_rows(&open(&db));
    assert!(
        before.len() >= 3 && before.len() < 30,
        "killed mid-scoring: {}",
        before.len()
    );
    assert!(
        before.values().all(|q| q.2.len() == 4),
        "a question has all its choices or none"
    );

    // A different scoring is a different run.
    let other = run(
        &smollm(),
        &questions,
        &db,
        &["--mc-scoring", "loglik", "--resume"],
    );
    assert_eq!(code(&other), 2, "{}", stderr(&other));
    assert!(stderr(&other).contains("mc_scoring"), "{}", stderr(&other));

    let output = run(
        &smollm(),
        &questions,
        &db,
        &[&args[..], &["--resume"]].concat(),
    );
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let connection = open(&db);
    let after = choice_rows(&connection);
    assert_eq!(after.len(), 30);
    for (id, choices) in &before {
        assert_eq!(
            after.get(id),
            Some(choices),
            "{id}: scored rows changed on resume"
        );
    }
    let (generated, rows, status): (i64, i64, String) = connection
        .query_row(
            "SELECT (SELECT COUNT(*) FROM answers WHERE finish_reason <> 'loglik'),
                    (SELECT COUNT(*) FROM choice_scores), (SELECT status FROM runs)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((generated, rows, status.as_str()), (30, 120, "finished"));
    // Agreement: the generated answer's choice against the loglik choice, from the rows.
    let pairs: Vec<(Option<i64>, String)> = connection
        .prepare("SELECT chosen_index, question_id FROM answers WHERE status = 'ok'")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let agree = pairs
        .iter()
        .filter(|(chosen, id)| *chosen == Some(argmax(after[id].2.iter().map(|r| r.0)) as i64))
        .count() as f64
        / pairs.len() as f64;
    let view: f64 = connection
        .query_row(
            "SELECT generated_loglik_agreement FROM run_summary",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(close(view, agree), "view {view}, rows {agree}");
}

#[test]
fn the_memory_prediction_counts_a_sequence_per_choice_and_stays_within_10_percent() {
    let dir = tempdir();
    let questions = bundled_multiple_choice(dir.path(), 8);
    let db = dir.path().join("memory.db");
    // Text continuations: a sequence per choice (4), one question at a time at any --parallel.
    let output = run(
        &smollm(),
        &questions,
        &db,
        &[
            "--mc-scoring",
            "loglik",
            "--mc-continuation",
            "text",
            "--parallel",
            "8",
        ],
    );
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert!(
        stderr(&output).contains("x 4 sequences"),
        "one sequence per choice: {}",
        stderr(&output)
    );
    let (predicted, measured, error): (i64, i64, f64) = open(&db)
        .query_row(
            "SELECT predicted_peak_bytes, peak_rss_bytes, rss_prediction_error_pct FROM run_summary",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    println!("loglik, 4 sequences: predicted {predicted}, measured {measured} ({error:+.1}%)");
    assert!(error.abs() <= 10.0, "{error:+.1}%");
}

/// Per choice of a question: (logprob, tokens_computed, tokens_reused), in choice order.
fn choice_scores_of(connection: &Connection, id: &str) -> Vec<(f64, i64, i64)> {
    connection
        .prepare(
            "SELECT logprob, tokens_computed, tokens_reused FROM choice_scores
             WHERE question_id = ?1 ORDER BY choice_index",
        )
        .unwrap()
        .query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn a_question_with_more_choices_than_llama_cpp_has_sequences_is_scored_in_groups() {
    let dir = tempdir();
    // 300 choices of several tokens each: more sequences than a llama.cpp context holds (256).
    let many: Vec<String> = (1..=300).map(|i| format!("선택지 번호 {i}")).collect();
    let lines = [
        serde_json::json!({"id": "small-1", "question": "1 + 1 = ?", "choices": ["two apples", "three pears"], "answer_index": 0}),
        serde_json::json!({"id": "big", "question": "몇 번이 정답입니까?", "choices": many, "answer_index": 41}),
        serde_json::json!({"id": "small-2", "question": "Sky colour?", "choices": ["deep blue", "bright green", "dark red"], "answer_index": 0}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let questions = write_questions(dir.path(), "many.jsonl", &text);
    let db = dir.path().join("many.db");
    let args = ["--mc-scoring", "loglik", "--mc-continuation", "text"];
    let output = run(&smollm(), &questions, &db, &args);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let connection = open(&db);
    let counts: Vec<(String, String, i64)> = connection
        .prepare(
            "SELECT a.question_id, a.status, COUNT(c.choice_index) FROM answers a
             LEFT JOIN choice_scores c USING (run_id, question_id)
             GROUP BY a.question_id ORDER BY a.question_id",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let expected = [("big", 300), ("small-1", 2), ("small-2", 3)]
        .map(|(id, n)| (id.to_string(), "ok".to_string(), n));
    assert_eq!(counts, expected);
    let big = choice_scores_of(&connection, "big");
    assert!(big.iter().all(|c| c.0.is_finite() && c.0 < 0.0), "{big:?}");
    // Each group decodes the tokens all 300 choices share: every choice reuses the same count.
    assert!(big.iter().all(|c| c.2 == big[0].2), "{big:?}");
    drop(connection);

    // A run that failed on this question (as it did when it was one batch) resumes, and the
    // question scores the same again: its groups depend on its choices alone.
    let connection = open(&db);
    connection
        .execute_batch(
            "DELETE FROM choice_scores WHERE question_id = 'big';
             DELETE FROM answers WHERE question_id = 'big';
             UPDATE runs SET status = 'failed', status_reason = 'test', finished_at = NULL;",
        )
        .unwrap();
    drop(connection);
    let output = run(
        &smollm(),
        &questions,
        &db,
        &[&args[..], &["--resume"]].concat(),
    );
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let connection = open(&db);
    assert_eq!(choice_scores_of(&connection, "big"), big);
    let (ok, status): (i64, String) = connection
        .query_row(
            "SELECT (SELECT COUNT(*) FROM answers WHERE status = 'ok'), (SELECT status FROM runs)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((ok, status.as_str()), (3, "finished"));
}
