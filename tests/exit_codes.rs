//! The README's exit-code table, one end-to-end case (at least) per code, each running the real
//! binary on the real SmolLM2-135M model:
//!
//! | code | meaning | here |
//! |---:|---|---|
//! | 0 | done | `exit_0_*` (also every other successful run of the suite) |
//! | 1 | the run finished but some questions are `error` rows | `exit_1_*` (and `parallel`) |
//! | 2 | usage or input error, nothing written | `exit_2_*` (and `preflight`: a run that cannot fit) |
//! | 3 | stopped before the end (signal, `stop`), resumable | `exit_3_*` (and `operate`: `stop`, a second Ctrl-C) |
//! | 4 | another live process holds the run | `exit_4_*` |
//! | 5 | the run failed (model load, decode, out of memory), recorded as `failed`, resumable | `exit_5_*` (and `preflight`: `--force` past the memory check, then `--resume` after the fix) |
//!
//! Plus: a closed stdout (`docent-eval prompts ... | head -1`) is not an error.

use crate::util::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const FAST: &[&str] = &["--max-tokens", "12", "--threads", "2"];

#[test]
fn exit_0_when_every_question_is_answered() {
    let dir = tempdir();
    let db = dir.path().join("results.db");
    let output = run(
        &smollm(),
        &bundled_questions(),
        &db,
        &["--limit", "2", "--max-tokens", "4", "--threads", "2"],
    );
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let (status, ok, errors): (String, i64, i64) = open(&db)
        .query_row("SELECT status, ok, errors FROM run_summary", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!((status.as_str(), ok, errors), ("finished", 2, 0));
}

#[test]
fn exit_1_when_the_run_finishes_with_an_overlong_prompt_as_an_error_row() {
    let dir = tempdir();
    let db = dir.path().join("results.db");
    let long = "조선의 역사를 설명하세요. ".repeat(60);
    let questions = write_questions(
        dir.path(),
        "q.jsonl",
        &format!(
            "{{\"id\":\"short-1\",\"question\":\"고려를 세운 사람은?\",\"answer\":\"왕건\"}}\n{{\"id\":\"long\",\"question\":\"{long}\"}}\n{{\"id\":\"short-2\",\"question\":\"한글을 만든 왕은?\",\"answer\":\"세종\"}}\n"
        ),
    );
    let output = run(
        &smollm(),
        &questions,
        &db,
        &["--max-tokens", "8", "--ctx", "256"],
    );
    assert_eq!(
        code(&output),
        1,
        "finished with a failed question: {}",
        stderr(&output)
    );
    let connection = open(&db);
    let mut statement = connection
        .prepare("SELECT question_id, status, error FROM answers ORDER BY question_id")
        .unwrap();
    let rows: Vec<(String, String, Option<String>)> = statement
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!((rows[0].0.as_str(), rows[0].1.as_str()), ("long", "error"));
    assert!(
        rows[0]
            .2
            .as_deref()
            .unwrap_or("")
            .contains("exceeds the context of 256"),
        "{rows:?}"
    );
    assert_eq!(rows[1].1, "ok");
    assert_eq!(rows[2].1, "ok");
    let status: String = connection
        .query_row("SELECT status FROM runs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(status, "finished");
}

#[test]
fn exit_2_for_every_malformed_question_file_naming_the_line_and_nothing_written() {
    let dir = tempdir();
    let cases: Vec<(&str, &[u8], &str)> = vec![
        (
            "bad-json.jsonl",
            b"{\"question\":\"a\"}\n{oops\n",
            "bad-json.jsonl:2: invalid JSON",
        ),
        (
            "missing.jsonl",
            b"{\"question\":\"a\"}\n{\"answer\":\"b\"}\n",
            "missing.jsonl:2: missing required field \"question\"",
        ),
        (
            "empty-q.jsonl",
            b"{\"question\":\"\"}\n",
            "empty-q.jsonl:1: \"question\" is empty",
        ),
        (
            "dup.jsonl",
            b"{\"id\":1,\"question\":\"a\"}\n{\"id\":1,\"question\":\"b\"}\n",
            "dup.jsonl:2: duplicate id \"1\"",
        ),
        (
            "utf8.jsonl",
            b"{\"question\":\"a\"}\n{\"question\":\"\xc3\x28\"}\n",
            "utf8.jsonl:2: invalid UTF-8",
        ),
        (
            "array.json",
            b"[\n{\"question\":\"a\"},\n\"text\"\n]\n",
            "array.json:3: element 2 is a string",
        ),
        (
            "rows.csv",
            b"id,question\n1,a\n2,b,c\n",
            "rows.csv:3: invalid CSV row",
        ),
        (
            "choice.jsonl",
            b"{\"question\":\"a\",\"choices\":[\"x\",\"y\"],\"answer_index\":5}\n",
            "choice.jsonl:1: \"answer_index\" 5 is out of range",
        ),
        ("empty.jsonl", b"", "no questions found"),
    ];
    for (name, content, expected) in cases {
        let questions = dir.path().join(name);
        std::fs::write(&questions, content).unwrap();
        let db = dir.path().join(format!("{name}.db"));
        let output = run(&smollm(), &questions, &db, &[]);
        assert_eq!(code(&output), 2, "{name}: {}", stderr(&output));
        assert!(
            stderr(&output).contains(expected),
            "{name}: expected {expected:?} in {}",
            stderr(&output)
        );
        assert!(!db.exists(), "{name}: nothing may be written");
    }
}

#[test]
fn exit_2_for_a_bad_model_file_or_flag_naming_it_and_nothing_written() {
    // One sentence naming the file or flag; nothing written.
    let dir = tempdir();
    let good = bundled_questions();
    let not_gguf = dir.path().join("model.gguf");
    std::fs::write(&not_gguf, b"definitely not a model").unwrap();
    let flag_cases: Vec<(std::path::PathBuf, Vec<&str>, &str)> = vec![
        (not_gguf, vec![], "is not a GGUF file"),
        (dir.path().join("absent.gguf"), vec![], "cannot be read"),
        (
            smollm(),
            vec!["--top-p", "1.5"],
            "--top-p 1.5 must be in (0, 1]",
        ),
        (
            smollm(),
            vec!["--parallel", "0"],
            "--parallel 0 must be between",
        ),
        (
            smollm(),
            vec!["--max-tokens", "300", "--ctx", "256"],
            "--max-tokens 300 leaves no room",
        ),
        (
            smollm(),
            vec!["--system-file", "/nonexistent/prompt.txt"],
            "--system-file /nonexistent/prompt.txt cannot be read",
        ),
    ];
    for (model, extra, expected) in flag_cases {
        let db = dir.path().join("flags.db");
        let output = run(&model, &good, &db, &extra);
        assert_eq!(code(&output), 2, "{extra:?}: {}", stderr(&output));
        assert!(
            stderr(&output).contains(expected),
            "expected {expected:?} in {}",
            stderr(&output)
        );
        assert!(!db.exists(), "{extra:?}: nothing may be written");
    }
}

#[test]
fn exit_3_when_sigterm_stops_the_run_gracefully_and_resume_finishes_it() {
    let dir = tempdir();
    let db = dir.path().join("results.db");
    let args = [FAST, &["--limit", "20"]].concat();
    let mut child = spawn(&smollm(), &bundled_questions(), &db, &args);
    wait_for_answers(&db, 2, &mut child);
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let output = child.wait_with_output().unwrap();
    assert_eq!(code(&output), 3, "{}", stderr(&output));
    let connection = open(&db);
    let (status, holder, done): (String, Option<i64>, i64) = connection
        .query_row(
            "SELECT status, holder_pid, (SELECT COUNT(*) FROM answers) FROM runs",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(status, "interrupted");
    assert_eq!(holder, None, "a graceful stop releases the run");
    assert!(done < 20);

    let output = run(
        &smollm(),
        &bundled_questions(),
        &db,
        &[&args[..], &["--resume"]].concat(),
    );
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(answer_rows(&db, 1).len(), 20);
}

#[test]
fn exit_4_when_another_live_process_holds_the_run() {
    let dir = tempdir();
    let db = dir.path().join("results.db");
    // Short enough for the takeover below to finish quickly, long enough to be live when the
    // second writer arrives.
    let args = ["--max-tokens", "24", "--threads", "2", "--limit", "20"];
    let mut child = spawn(&smollm(), &bundled_questions(), &db, &args);
    wait_for_answers(&db, 1, &mut child);

    let second = run(
        &smollm(),
        &bundled_questions(),
        &db,
        &[&args[..], &["--resume"]].concat(),
    );
    assert_eq!(code(&second), 4, "{}", stderr(&second));
    assert!(
        stderr(&second).contains(&format!("held by process {}", child.id())),
        "{}",
        stderr(&second)
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "the holder keeps running"
    );
    child.kill().unwrap();
    child.wait().unwrap();

    // The holder is gone now: the same command takes the run over and finishes it.
    let takeover = run(
        &smollm(),
        &bundled_questions(),
        &db,
        &[&args[..], &["--resume"]].concat(),
    );
    assert_eq!(code(&takeover), 0, "{}", stderr(&takeover));
    assert_eq!(answer_rows(&db, 1).len(), 20);
}

#[test]
fn exit_5_when_the_model_cannot_load_recorded_as_a_failed_run_with_its_reason() {
    let dir = tempdir();
    let broken = truncated_gguf(dir.path());
    let db = dir.path().join("results.db");
    let output = run(
        &broken,
        &bundled_questions(),
        &db,
        &["--limit", "2", "--max-tokens", "4", "--threads", "2"],
    );
    assert_eq!(
        code(&output),
        5,
        "a failed run, not a crash: {}",
        stderr(&output)
    );
    assert!(
        stderr(&output).contains("could not load"),
        "{}",
        stderr(&output)
    );
    let (status, reason, answers): (String, String, i64) = open(&db)
        .query_row(
            "SELECT r.status, r.status_reason, (SELECT COUNT(*) FROM answers) FROM runs r WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(status, "failed");
    assert!(reason.contains("could not load"), "{reason}");
    assert!(
        reason.contains("truncated"),
        "preflight names the cause: {reason}"
    );
    assert_eq!(answers, 0);
}

#[test]
fn a_closed_stdout_ends_prompts_with_exit_0_and_no_panic() {
    // Far more output than a pipe holds (64 KiB), so the writer is still writing when the reader
    // goes away, as with `docent-eval prompts ... | head -1`.
    let dir = tempdir();
    let questions: String = (1..=1500)
        .map(|i| {
            format!("{{\"id\": {i}, \"question\": \"조선 왕조 {i}대 임금의 업적을 한 문장으로 설명하세요.\"}}\n")
        })
        .collect();
    let questions = write_questions(dir.path(), "many.jsonl", &questions);
    let mut child = Command::new(BIN)
        .arg("prompts")
        .arg("--model")
        .arg(smollm())
        .arg("--questions")
        .arg(&questions)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn docent-eval prompts");
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The reader (and with it the pipe's read end) is dropped here, as `head -1` exits.
    assert!(first.starts_with('{'), "one prompt a line: {first}");
    let output = child.wait_with_output().unwrap();
    let err = stderr(&output);
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "a closed stdout is not an error:\n{err}"
    );
    assert_eq!(output.status.code(), Some(0), "{:?}\n{err}", output.status);
}
