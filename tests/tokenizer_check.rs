//! The tokenizer check (`preflight`/`run --hf-tokenizer`), offline: a tokenizer.json built from
//! SmolLM2's own GGUF vocabulary and merges must agree with llama.cpp on every prompt; variants
//! with another pre-tokenizer or half the merges must not (scripts/make_hf_tokenizer.py).

use crate::util::*;
use std::path::Path;

fn preflight(hf_tokenizer: &Path, extra: &[&str]) -> std::process::Output {
    preflight_on(&bundled_questions(), hf_tokenizer, extra)
}

fn preflight_on(questions: &Path, hf_tokenizer: &Path, extra: &[&str]) -> std::process::Output {
    let model = smollm().display().to_string();
    let tokenizer = hf_tokenizer.display().to_string();
    let questions = questions.display().to_string();
    let mut args = vec![
        "preflight",
        "--model",
        &model,
        "--hf-tokenizer",
        &tokenizer,
        "--questions",
        &questions,
    ];
    args.extend(extra);
    cli(&args)
}

/// (checked, differ) from the check's summary line.
fn counts(text: &str) -> (usize, usize) {
    let line = text
        .lines()
        .find(|l| l.contains("prompts tokenize differently"))
        .unwrap_or_else(|| panic!("no tokenizer check in:\n{text}"));
    let words: Vec<&str> = line.split(": ").nth(1).unwrap().split(' ').collect();
    (words[2].parse().unwrap(), words[0].parse().unwrap())
}

#[test]
fn preflight_finds_the_same_tokens_with_the_original_vocabulary_and_differences_with_a_broken_one()
{
    let dir = tempdir();
    let good = make_hf_tokenizer(dir.path(), None);
    let text = ok_stdout(&preflight(&good, &["--require-tokenizer-match"]));
    assert_eq!(counts(&text), (60, 0), "{text}");
    assert!(text.contains("GGUF pre-tokenizer smollm"), "{text}");
    for broken in ["pre-tokenizer", "merges"] {
        let tokenizer = make_hf_tokenizer(dir.path(), Some(broken));
        let text = ok_stdout(&preflight(&tokenizer, &[]));
        let (checked, differ) = counts(&text);
        assert_eq!(checked, 60);
        assert!(differ > 0, "{broken}: {text}");
        // The first differing examples: the text around the difference and both tokenizations.
        assert_eq!(text.matches("\n    GGUF: ").count(), 3, "{broken}: {text}");
        assert_eq!(text.matches("\n    HF:   ").count(), 3, "{broken}: {text}");
        let strict = preflight(&tokenizer, &["--require-tokenizer-match"]);
        assert_eq!(code(&strict), 2, "{broken}: {}", stderr(&strict));
        assert!(stderr(&strict).contains("does not tokenize like the original model"));
    }
    let json = ok_stdout(&preflight(&good, &["--json"]));
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["tokenizer_check"]["prompts_checked"], 60);
    assert_eq!(value["tokenizer_check"]["prompts_differ"], 0);
    let not_a_tokenizer = write_questions(dir.path(), "t.json", "{\"model\": {}}");
    let output = preflight(&not_a_tokenizer, &[]);
    assert_eq!(code(&output), 2);
    assert!(stderr(&output).contains(&not_a_tokenizer.display().to_string()));
}

#[test]
fn run_stores_the_check_and_report_shows_it_and_strict_runs_refuse() {
    let dir = tempdir();
    let questions = write_questions(
        dir.path(),
        "q.jsonl",
        "{\"id\":\"a\",\"question\":\"세종대왕은 1443년에 무엇을 만들었습니까?\",\"choices\":[\"훈민정음\",\"측우기\"],\"answer_index\":0}\n\
         {\"id\":\"b\",\"question\":\"What is 12 + 30?\",\"choices\":[\"42\",\"24\"],\"answer_index\":0}\n",
    );
    let broken = make_hf_tokenizer(dir.path(), Some("merges"));
    let broken_arg = broken.display().to_string();
    let strict_db = dir.path().join("strict.db");
    let strict = run(
        &smollm(),
        &questions,
        &strict_db,
        &[
            "--mc-scoring",
            "loglik",
            "--hf-tokenizer",
            &broken_arg,
            "--require-tokenizer-match",
        ],
    );
    assert_eq!(code(&strict), 2, "{}", stderr(&strict));
    assert!(!strict_db.exists(), "a refused run writes nothing");
    let db = dir.path().join("r.db");
    let output = run(
        &smollm(),
        &questions,
        &db,
        &["--mc-scoring", "loglik", "--hf-tokenizer", &broken_arg],
    );
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert!(
        stderr(&output).contains("2 of 2 prompts tokenize differently"),
        "{}",
        stderr(&output)
    );
    let stored: String = open(&db)
        .query_row(
            "SELECT tokenizer_check_json FROM runs WHERE id = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let stored: serde_json::Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(
        (
            stored["prompts_checked"].as_u64(),
            stored["prompts_differ"].as_u64()
        ),
        (Some(2), Some(2))
    );
    assert_eq!(stored["examples"][0]["question_id"], "a");
    let report = ok_stdout(&cli(&["report", "--db", &db.display().to_string()]));
    assert!(report.contains("### Tokenizer check"), "{report}");
    assert!(
        report.contains(&format!("| 1 | {broken_arg} | 2 | 2 |")),
        "{report}"
    );
    // The good tokenizer on a second run of the same database: stored as agreeing.
    let good = make_hf_tokenizer(dir.path(), None).display().to_string();
    let output = run(
        &smollm(),
        &questions,
        &db,
        &["--mc-scoring", "loglik", "--hf-tokenizer", &good],
    );
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let json = ok_stdout(&cli(&[
        "report",
        "--db",
        &db.display().to_string(),
        "--run-id",
        "2",
        "--format",
        "json",
    ]));
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["runs"][0]["tokenizer_check"]["prompts_differ"], 0);
    assert_eq!(value["runs"][0]["tokenizer_check"]["prompts_checked"], 2);
}

#[test]
fn special_token_text_in_a_question_is_text_on_both_sides() {
    let dir = tempdir();
    let questions = write_questions(
        dir.path(),
        "q.jsonl",
        "{\"id\":\"a\",\"question\":\"Does the text <|im_end|><|im_start|>assistant end the turn?\",\"answer\":\"no\"}\n\
         {\"id\":\"b\",\"question\":\"<|endoftext|> and <file_sep> are tokens of the vocabulary.\",\"answer\":\"yes\"}\n",
    );
    let good = make_hf_tokenizer(dir.path(), None);
    let text = ok_stdout(&preflight_on(
        &questions,
        &good,
        &["--require-tokenizer-match"],
    ));
    assert_eq!(counts(&text), (2, 0), "{text}");
    let broken = make_hf_tokenizer(dir.path(), Some("merges"));
    let strict = preflight_on(&questions, &broken, &["--require-tokenizer-match"]);
    assert_eq!(code(&strict), 2, "{}", stderr(&strict));
    assert!(stderr(&strict).contains("does not tokenize like the original model"));
}

#[test]
fn question_ids_and_paths_in_the_check_are_shown_escaped() {
    let dir = tempdir();
    let questions = write_questions(
        dir.path(),
        "q.jsonl",
        "{\"id\":\"red\\u001b[31m\\u001b]0;owned\\u0007\",\"question\":\"What is 12 + 30?\",\"choices\":[\"42\",\"24\"],\"answer_index\":0}\n",
    );
    let broken = make_hf_tokenizer(dir.path(), Some("merges"));
    let hostile = dir.path().join("tok\u{1b}[2J.json");
    std::fs::copy(&broken, &hostile).unwrap();
    let output = preflight_on(&questions, &hostile, &[]);
    let text = ok_stdout(&output);
    assert!(
        text.contains("question red\\x1b[31m\\x1b]0;owned\\x07, token"),
        "{text}"
    );
    assert!(text.contains("tok\\x1b[2J.json"), "{text}");
    // A run logs the check as a warning on standard error.
    let hostile_arg = hostile.display().to_string();
    let output = run(
        &smollm(),
        &questions,
        &dir.path().join("r.db"),
        &["--mc-scoring", "loglik", "--hf-tokenizer", &hostile_arg],
    );
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert!(
        stderr(&output).contains("question red\\x1b[31m"),
        "{}",
        stderr(&output)
    );
    for shown in [stdout(&output), stderr(&output), text] {
        assert!(
            !shown.contains('\u{1b}') && !shown.contains('\u{7}'),
            "{shown:?}"
        );
    }
}

#[test]
fn a_tokenizer_whose_normalizers_double_the_text_is_refused_naming_the_file() {
    let dir = tempdir();
    let good = make_hf_tokenizer(dir.path(), None);
    let mut tokenizer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&good).unwrap()).unwrap();
    // Forty steps that each double every space: 2^40 times the spaces, were they followed
    // (before the bound: "memory allocation of 2147486784 bytes failed" under a 4 GB limit).
    let doubling =
        serde_json::json!({"type": "Replace", "pattern": {"String": " "}, "content": "  "});
    tokenizer["normalizer"] =
        serde_json::json!({"type": "Sequence", "normalizers": vec![doubling; 40]});
    let path = dir.path().join("doubling.json");
    std::fs::write(&path, tokenizer.to_string()).unwrap();
    let output = preflight(&path, &[]);
    assert_eq!(code(&output), 2, "{}", stderr(&output));
    let message = stderr(&output);
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("beyond 64 times its length"), "{message}");
    assert_eq!(message.trim_end().lines().count(), 1, "{message}");
}
