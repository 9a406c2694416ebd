//! Benchmark files as users download them, read through the recipes in `recipes/` (column
//! mapping and prompt template, docs/benchmarks/): small fixtures written here in the shapes of
//! KMMLU's CSV, CLIcK's JSON and HAE-RAE's records (no benchmark data), run on SmolLM2.

use crate::util::*;
use std::path::{Path, PathBuf};

/// KMMLU's CSV columns; `answer` is the 1-based number of the correct choice.
const KMMLU_CSV: &str = "question,answer,A,B,C,D,Category,Human Accuracy
\"다음 중 조선을 건국한 인물은?\",2,왕건,이성계,주몽,온조,Korean-History,0.81
\"  세종대왕이 훈민정음을 반포한 해는?  \",3,1392,1420,1446,1592,Korean-History,0.72
\"물의 화학식으로 옳은 것은?\",1,H2O,CO2,O2,NaCl,Chemistry,0.95
";

/// CLIcK's JSON: a passage that may be empty, the choices as a list, the answer as its text.
const CLICK_JSON: &str = r#"[
  {"id": "KHB_1", "paragraph": "", "question": "고려를 세운 왕은?", "choices": ["왕건", "궁예", "견훤", "이성계"], "answer": "왕건"},
  {"id": "Kedu_society_2", "paragraph": "설날에는 떡국을 먹는다.", "question": "설날에 먹는 음식은?", "choices": ["송편", "떡국", "팥죽", "냉면"], "answer": "떡국"}
]
"#;

/// HAE-RAE 1.1's records: the whole prompt in `query`, the options as a Python list literal,
/// the answer as `(C)`.
const HAERAE_JSONL: &str = r#"{"query": "다음 단어의 올바른 뜻을 고르시오.\n### 단어: 가납사니\n### 선택지:\n(A) 말이 많은 사람\n(B) 게으른 사람\n(C) 쓸데없이 지껄이기를 좋아하는 사람\n(D) 욕심 많은 사람\n(E) 부지런한 사람\n### 정답:", "answer": "(C)", "options": "['말이 많은 사람', '게으른 사람', '쓸데없이 지껄이기를 좋아하는 사람', '욕심 많은 사람', '부지런한 사람']"}
{"query": "다음 중 표준어는?\n### 선택지:\n(A) 삭월세\n(B) 사글세\n(C) 삯월세\n(D) 싻월세\n(E) 삵월세\n### 정답:", "answer": "(B)", "options": "['삭월세', '사글세', '삯월세', '싻월세', '삵월세']"}
"#;

fn recipe(name: &str) -> String {
    root().join("recipes").join(name).display().to_string()
}

/// `docent-eval prompts` over `questions` with `args`: the prompts, in order.
fn prompts(questions: &Path, args: &[&str]) -> Vec<String> {
    let mut all = vec!["prompts", "--model"];
    let model = smollm().display().to_string();
    let questions = questions.display().to_string();
    all.extend([model.as_str(), "--questions", questions.as_str()]);
    all.extend(args);
    ok_stdout(&cli(&all))
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            value["prompt"].as_str().unwrap().to_string()
        })
        .collect()
}

/// (question id, answer_index, category) of the stored questions, in order.
fn stored_questions(db: &Path) -> Vec<(String, Option<i64>, Option<String>)> {
    open(db)
        .prepare("SELECT question_id, answer_index, category FROM questions ORDER BY ordinal")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The continuations scored for each question's choices, in order.
fn continuations(db: &Path) -> Vec<Vec<(String, i64)>> {
    let connection = open(db);
    let mut statement = connection
        .prepare(
            "SELECT c.continuation, c.tokens FROM choice_scores c
             JOIN questions q USING (run_id, question_id) ORDER BY q.ordinal, c.choice_index",
        )
        .unwrap();
    let rows: Vec<(String, i64)> = statement
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let questions = stored_questions(db).len();
    rows.chunks(rows.len() / questions.max(1))
        .map(<[_]>::to_vec)
        .collect()
}

fn kmmlu(dir: &Path) -> PathBuf {
    write_questions(dir, "kmmlu_test.csv", KMMLU_CSV)
}

/// `--map-file recipes/NAME.map --template recipes/NAME.template.txt --no-chat-template`, as the
/// recipe pages run it (lm-evaluation-harness applies no chat template by default).
fn recipe_args(name: &str) -> Vec<String> {
    vec![
        "--map-file".into(),
        recipe(&format!("{name}.map")),
        "--template".into(),
        recipe(&format!("{name}.template.txt")),
        "--no-chat-template".into(),
    ]
}

#[test]
fn kmmlu_csv_renders_lm_evaluation_harness_prompts_and_scores_letters() {
    let dir = tempdir();
    let questions = kmmlu(dir.path());
    let kmmlu_args = recipe_args("kmmlu");
    let mut args: Vec<&str> = kmmlu_args.iter().map(String::as_str).collect();
    // lm-evaluation-harness: "{{question.strip()}}\nA. {{A}}\nB. {{B}}\nC. {{C}}\nD. {{D}}\n정답："
    assert_eq!(
        prompts(&questions, &args),
        [
            "다음 중 조선을 건국한 인물은?\nA. 왕건\nB. 이성계\nC. 주몽\nD. 온조\n정답：",
            "세종대왕이 훈민정음을 반포한 해는?\nA. 1392\nB. 1420\nC. 1446\nD. 1592\n정답：",
            "물의 화학식으로 옳은 것은?\nA. H2O\nB. CO2\nC. O2\nD. NaCl\n정답：",
        ]
    );
    let db = dir.path().join("kmmlu.db");
    args.extend(["--mc-scoring", "loglik"]);
    let output = run(&smollm(), &questions, &db, &args);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    // answer 2, 3, 1 (1-based) are choices 1, 2, 0; Category is the category; the rest is kept.
    assert_eq!(
        stored_questions(&db),
        [
            ("1".into(), Some(1), Some("Korean-History".into())),
            ("2".into(), Some(2), Some("Korean-History".into())),
            ("3".into(), Some(0), Some("Chemistry".into())),
        ]
    );
    let extra: String = open(&db)
        .query_row(
            "SELECT extra_json FROM questions WHERE question_id = '1'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(extra, r#"{"Human Accuracy":"0.81"}"#);
    // Each choice is scored as its letter after the prompt (" A" without a chat template): one token.
    for choices in continuations(&db) {
        assert_eq!(
            choices,
            ["A", "B", "C", "D"].map(|l| (l.to_string(), 1)).to_vec()
        );
    }
    let report = ok_stdout(&cli(&["report", "--db", &db.display().to_string()]));
    assert!(
        report.contains("category=Category,choices=A\\|B\\|C\\|D,answer=answer:index1"),
        "{report}"
    );
    assert!(
        report.contains("\"{{question.strip()}}\\\\nA. {{A}}"),
        "{report}"
    );
}

#[test]
fn resuming_with_another_mapping_or_template_is_refused_naming_it() {
    let dir = tempdir();
    let questions = kmmlu(dir.path());
    let db = dir.path().join("kmmlu.db");
    let kmmlu_args = recipe_args("kmmlu");
    let mut args: Vec<&str> = kmmlu_args.iter().map(String::as_str).collect();
    args.extend(["--mc-scoring", "loglik"]);
    assert_eq!(code(&run(&smollm(), &questions, &db, &args)), 0);
    let before = answer_rows(&db, 1);
    let other_template = write_questions(dir.path(), "other.txt", "{{question}}\n정답:\n");
    let other_template = other_template.display().to_string();
    let template = recipe("kmmlu.template.txt");
    let cases: [(Vec<&str>, &str); 2] = [
        (
            vec!["--map", "choices=A|B|C|D,answer=answer:index1", "--template", &template],
            "mapping: run has \"category=Category,choices=A|B|C|D,answer=answer:index1\", now \"choices=A|B|C|D,answer=answer:index1\"",
        ),
        (
            vec!["--map-file", &kmmlu_args[1], "--template", &other_template],
            "template: run has template with sha256",
        ),
    ];
    for (format, expected) in cases {
        let mut resume = format.clone();
        resume.extend([
            "--no-chat-template",
            "--mc-scoring",
            "loglik",
            "--resume",
            "--run-id",
            "1",
        ]);
        let output = run(&smollm(), &questions, &db, &resume);
        assert_eq!(code(&output), 2, "{}", stderr(&output));
        assert!(stderr(&output).contains(expected), "{}", stderr(&output));
    }
    assert_eq!(
        answer_rows(&db, 1),
        before,
        "a refused resume writes nothing"
    );
    // The same recipe resumes (the finished run: nothing to do).
    args.extend(["--resume", "--run-id", "1"]);
    let output = run(&smollm(), &questions, &db, &args);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert!(
        stderr(&output).contains("already finished"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn click_json_renders_both_branches_and_maps_answer_text() {
    let dir = tempdir();
    let questions = write_questions(dir.path(), "click.json", CLICK_JSON);
    let click_args = recipe_args("click");
    let args: Vec<&str> = click_args.iter().map(String::as_str).collect();
    // lm-evaluation-harness's click utils.get_context, with and without a passage.
    assert_eq!(
        prompts(&questions, &args),
        [
            "주어진 질문을 천천히 읽고, 적절한 정답을 A, B, C, D 중에 골라 알파벳 하나로 답하시오.\n\n질문: 고려를 세운 왕은?\n보기:\nA:왕건, B: 궁예, C: 견훤, D: 이성계\n정답:",
            "주어진 맥락을 천천히 읽고, 질문에 대한 적절한 정답을 A, B, C, D 중에 골라 알파벳 하나로 답하시오.\n\n맥락: 설날에는 떡국을 먹는다.\n질문: 설날에 먹는 음식은?\n보기:\nA:송편, B: 떡국, C: 팥죽, D: 냉면\n정답:",
        ]
    );
    let db = dir.path().join("click.db");
    let mut run_args = args.clone();
    run_args.extend(["--mc-scoring", "loglik"]);
    let output = run(&smollm(), &questions, &db, &run_args);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(
        stored_questions(&db),
        [
            ("KHB_1".into(), Some(0), None),
            ("Kedu_society_2".into(), Some(1), None)
        ]
    );
}

#[test]
fn haerae_records_score_parenthesised_labels() {
    let dir = tempdir();
    let questions = write_questions(dir.path(), "haerae.jsonl", HAERAE_JSONL);
    let haerae_args = recipe_args("haerae");
    let mut args: Vec<&str> = haerae_args.iter().map(String::as_str).collect();
    args.extend(["--mc-scoring", "loglik", "--mc-label", "({{letter}})"]);
    // The prompt is the query itself (lm-evaluation-harness: doc_to_text "{{query}}").
    let first = prompts(&questions, &args[..5]);
    assert!(
        first[0].starts_with("다음 단어의 올바른 뜻을 고르시오.\n### 단어: 가납사니")
            && first[0].ends_with("(E) 부지런한 사람\n### 정답:"),
        "{first:?}"
    );
    let db = dir.path().join("haerae.db");
    let output = run(&smollm(), &questions, &db, &args);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(
        stored_questions(&db),
        [("1".into(), Some(2), None), ("2".into(), Some(1), None)]
    );
    let choices: String = open(&db)
        .query_row(
            "SELECT choices_json FROM questions WHERE question_id = '2'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(choices, r#"["삭월세","사글세","삯월세","싻월세","삵월세"]"#);
    // lm-evaluation-harness's doc_to_choice ["(A)", ..., "(E)"].
    for choices in continuations(&db) {
        let labels: Vec<String> = choices.into_iter().map(|(text, _)| text).collect();
        assert_eq!(labels, ["(A)", "(B)", "(C)", "(D)", "(E)"]);
    }
}

#[test]
fn bad_mappings_and_templates_are_input_errors_naming_the_field_and_nothing_is_written() {
    let dir = tempdir();
    let questions = kmmlu(dir.path());
    let file = questions.display().to_string();
    let unknown_placeholder = write_questions(dir.path(), "bad.txt", "{{question}}\n{{answer}}\n");
    let unknown_placeholder = unknown_placeholder.display().to_string();
    let five_letters = write_questions(dir.path(), "five.txt", "{{question}} {{E}}\n");
    let five_letters = five_letters.display().to_string();
    let deep = "{%if id%}\n".repeat(100_000);
    let deep = write_questions(dir.path(), "deep.txt", &deep);
    let deep = deep.display().to_string();
    let map_file = recipe("kmmlu.map");
    let cases: [(Vec<&str>, String); 7] = [
        (vec!["--map", "qustion=query"], "--map \"qustion=query\": unknown field \"qustion\"".into()),
        (
            vec!["--map", "choices=A|B|C|D,answer=answr:index1"],
            format!("{file}: no record has a value in column \"answr\" (mapped to answer)"),
        ),
        (
            vec!["--map", "choices=A|B|C|D,answer=Category:index1"],
            format!("{file}:2: column \"Category\" (answer:index1) is \"Korean-History\", not a whole number"),
        ),
        (
            vec!["--map", "choices=A|B|C|D,answer=answer:ordinal"],
            "unknown answer form \"ordinal\"".into(),
        ),
        (
            vec!["--map-file", &map_file, "--template", &unknown_placeholder],
            format!("{unknown_placeholder}:2: unknown placeholder {{{{answer}}}}"),
        ),
        (
            vec!["--map-file", &map_file, "--template", &five_letters],
            format!("{file}:2: the template uses {{{{E}}}}, but this question has 4 choices"),
        ),
        (
            vec!["--map-file", &map_file, "--template", &deep],
            format!("{deep}:33: {{% if id %}} is nested more than 32 deep"),
        ),
    ];
    for (args, expected) in cases {
        refused_before_writing(dir.path(), &questions, &args, &expected);
    }
}

#[test]
fn a_mapped_choice_list_with_a_blank_item_is_refused_naming_the_line() {
    // Dropping the blank item would store "d" as the reference of answer index 2.
    let dir = tempdir();
    let questions = write_questions(
        dir.path(),
        "lists.csv",
        "query,options,gold\n\"Q1\",\"[\"\"a\"\", \"\"b\"\"]\",1\n\"Q2\",\"[\"\"a\"\", \"\"\"\", \"\"c\"\", \"\"d\"\"]\",2\n",
    );
    let args = ["--map", "question=query,choices=options,answer=gold:index0"];
    let expected = format!(
        "{}:3: column \"options\": choice 2 is blank",
        questions.display()
    );
    refused_before_writing(dir.path(), &questions, &args, &expected);
}

/// `run` over `questions` with `args` exits 2 with `expected` in its error and creates no database.
fn refused_before_writing(dir: &Path, questions: &Path, args: &[&str], expected: &str) {
    let db = dir.join("never.db");
    let output = run(&smollm(), questions, &db, args);
    assert_eq!(code(&output), 2, "{args:?}: {}", stderr(&output));
    assert!(
        stderr(&output).contains(expected),
        "{args:?}: {}",
        stderr(&output)
    );
    assert!(!db.exists(), "{args:?}: nothing is written");
}

#[test]
fn a_template_lists_all_thirty_choices_and_letter_scoring_refuses_them_naming_the_line() {
    let dir = tempdir();
    let choices: Vec<String> = (1..=30).map(|n| format!("choice {n}")).collect();
    let line = serde_json::json!({"id": "q30", "question": "Which one?", "choices": choices, "answer_index": 28});
    let questions = write_questions(
        dir.path(),
        "thirty.jsonl",
        &format!("{{\"question\": \"first\", \"choices\": [\"x\", \"y\"]}}\n{line}\n"),
    );
    let template = write_questions(dir.path(), "t.txt", "{{question}}\n{{choices}}\nAnswer:\n");
    let template = template.display().to_string();
    let rendered = prompts(&questions, &["--template", &template, "--no-chat-template"]);
    assert_eq!(rendered.len(), 2);
    let labels = ('A'..='Z')
        .map(String::from)
        .chain(["AA", "AB", "AC", "AD"].map(String::from));
    for (label, choice) in labels.zip(&choices) {
        assert!(
            rendered[1].contains(&format!("\n{label}. {choice}\n")),
            "{label}. {choice} is missing: {}",
            rendered[1]
        );
    }
    assert!(rendered[1].contains("\nAC. choice 29\nAD. choice 30\nAnswer:"));
    let args = ["--template", &template, "--mc-scoring", "loglik"];
    let expected = format!(
        "{}:2: 30 choices are more than letter scoring can label",
        questions.display()
    );
    refused_before_writing(dir.path(), &questions, &args, &expected);
}
