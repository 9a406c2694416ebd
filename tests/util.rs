//! Helpers shared by every test module: they run the real `docent-eval` binary on the real small
//! models that `make models` fetches into `models/`.

use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_docent-eval");

/// How long a test waits for answers before it calls the run hung. Only a guard against a hang:
/// generous enough that a loaded 2-core machine never reaches it.
const HANG_GUARD: Duration = Duration::from_secs(600);

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn model(name: &str) -> PathBuf {
    let path = root().join("models").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `make models` (the tests use real models, never a mock)",
        path.display()
    );
    path
}

/// SmolLM2-135M-Instruct Q4_1 (Llama architecture).
pub fn smollm() -> PathBuf {
    model("SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// Gemma-3 270M Q4_K_M (a second, different real model).
pub fn gemma() -> PathBuf {
    model("gemma-3-270m-q4_k_m.gguf")
}

/// The bundled Korean-history question set.
pub fn bundled_questions() -> PathBuf {
    root().join("questions/korean_history_sample.jsonl")
}

/// A fresh temporary directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// `docent-eval run` with the given model, questions, db and extra arguments, as a Command.
pub fn run_command(model: &Path, questions: &Path, db: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("run")
        .arg("--model")
        .arg(model)
        .arg("--questions")
        .arg(questions)
        .arg("--db")
        .arg(db)
        .args(["--sample-interval-ms", "200"])
        .args(extra)
        .env("RUST_LOG", "docent_eval=info,warn")
        .stdin(Stdio::null());
    // A test run inside a cluster job must not take the job's shard for its own.
    for name in CLUSTER_VARIABLES {
        command.env_remove(name);
    }
    command
}

/// What `run --shard auto` reads.
pub const CLUSTER_VARIABLES: [&str; 6] = [
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_COUNT",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_MAX",
    "SLURM_ARRAY_TASK_STEP",
    "JOB_COMPLETION_INDEX",
];

/// Run to completion and return the output.
pub fn run(model: &Path, questions: &Path, db: &Path, extra: &[&str]) -> Output {
    run_command(model, questions, db, extra)
        .output()
        .expect("spawn docent-eval")
}

/// Exit code, or panic with both streams when the process was killed by a signal.
pub fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or_else(|| {
        panic!(
            "no exit code: {:?}\nstdout:{}\nstderr:{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Any other subcommand (`status`, `stop`, `report`, ...), run to completion.
pub fn cli(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("spawn docent-eval")
}

/// Stdout of a command that must exit 0 (panics with its stderr otherwise).
pub fn ok_stdout(output: &Output) -> String {
    assert_eq!(code(output), 0, "stderr: {}", stderr(output));
    stdout(output)
}

/// Start a run in the background with piped output.
pub fn spawn(model: &Path, questions: &Path, db: &Path, extra: &[&str]) -> Child {
    run_command(model, questions, db, extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn docent-eval")
}

/// Open the results database (readers never block the WAL writer).
pub fn open(db: &Path) -> Connection {
    let connection = Connection::open(db).expect("open db");
    connection.busy_timeout(Duration::from_secs(10)).unwrap();
    connection
}

/// Number of committed answers, 0 while the database or its tables do not exist yet.
pub fn answer_count(db: &Path) -> i64 {
    if !db.exists() {
        return 0;
    }
    open(db)
        .query_row("SELECT COUNT(*) FROM answers", [], |r| r.get(0))
        .unwrap_or(0)
}

/// Wait until at least `n` answers are committed; panics if the run exits first or hangs.
pub fn wait_for_answers(db: &Path, n: i64, child: &mut Child) {
    let start = Instant::now();
    while answer_count(db) < n {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("docent-eval exited early with {status}");
        }
        assert!(
            start.elapsed() < HANG_GUARD,
            "fewer than {n} answers after {HANG_GUARD:?}: the run hangs"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Write a question file into `dir`.
pub fn write_questions(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write questions");
    path
}

/// All answer rows of a run as text, keyed by question id (for before/after comparisons).
pub fn answer_rows(db: &Path, run_id: i64) -> std::collections::BTreeMap<String, String> {
    let connection = open(db);
    let mut statement = connection
        .prepare(
            "SELECT question_id, status, answer, error, prompt_tokens, completion_tokens, queued_at,
                    started_at, first_token_at, finished_at, ttft_ms, latency_ms, rss_bytes, score, id
             FROM answers WHERE run_id = ?1",
        )
        .unwrap();
    let rows = statement
        .query_map([run_id], |row| {
            let mut fields = Vec::new();
            for i in 1..15 {
                let value: rusqlite::types::Value = row.get(i)?;
                fields.push(format!("{value:?}"));
            }
            Ok((row.get::<_, String>(0)?, fields.join("|")))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    rows
}

/// `python3 scripts/make_gguf.py ARGS --out DIR/NAME` (tiny or header-only GGUF models); returns
/// the path.
pub fn make_gguf(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let output = Command::new("python3")
        .arg(root().join("scripts/make_gguf.py"))
        .args(args)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "make_gguf.py {args:?} failed (run `make pydeps` for the gguf and numpy packages):\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

/// A GGUF whose header declares more tensor data than the file holds (SmolLM2's tokenizer).
pub fn truncated_gguf(dir: &Path) -> PathBuf {
    make_gguf(
        dir,
        "broken.gguf",
        &[
            "--arch",
            "llama",
            "--vocab-from",
            &smollm().display().to_string(),
            "--truncate",
        ],
    )
}

/// `python3 scripts/make_hf_tokenizer.py` over SmolLM2's GGUF: a Hugging Face tokenizer.json with
/// its vocabulary and merges, or a broken variant (`pre-tokenizer`, `merges`); returns the path.
pub fn make_hf_tokenizer(dir: &Path, broken: Option<&str>) -> PathBuf {
    let out = dir.join(format!("tokenizer-{}.json", broken.unwrap_or("good")));
    let mut command = Command::new("python3");
    command
        .arg(root().join("scripts/make_hf_tokenizer.py"))
        .arg("--gguf")
        .arg(smollm())
        .arg("--out")
        .arg(&out);
    if let Some(broken) = broken {
        command.args(["--break", broken]);
    }
    let output = command.output().expect("python3 runs");
    assert!(
        output.status.success(),
        "make_hf_tokenizer.py failed (run `make pydeps` for the gguf package):\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

/// What a merge or a shard run is compared by: every row of every table, as text.
pub fn dump(db: &Path) -> String {
    let connection = open(db);
    let mut text = String::new();
    for table in [
        "runs",
        "questions",
        "answers",
        "choice_scores",
        "memory_samples",
        "shard_plan",
        "shard_parts",
    ] {
        let mut statement = connection
            .prepare(&format!("SELECT * FROM {table} ORDER BY 1, 2"))
            .unwrap();
        let columns = statement.column_count();
        let rows: Vec<String> = statement
            .query_map([], |row| {
                let mut fields = Vec::new();
                for i in 0..columns {
                    let value: rusqlite::types::Value = row.get(i)?;
                    fields.push(format!("{value:?}"));
                }
                Ok(fields.join("|"))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        text += &format!("{table}\n{}\n", rows.join("\n"));
    }
    text
}

/// question id → (status, answer) of run `run_id`.
pub fn answers(
    db: &Path,
    run_id: i64,
) -> std::collections::BTreeMap<String, (String, Option<String>)> {
    let connection = open(db);
    let mut statement = connection
        .prepare("SELECT question_id, status, answer FROM answers WHERE run_id = ?1")
        .unwrap();
    let rows = statement
        .query_map([run_id], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    rows
}
