//! Shards and their merge, on SmolLM2: `run --shard K/N` answers a stable subset, `--resume`
//! works per shard, `merge --into` gives one run with every question once, refuses what does
//! not belong together, names what is missing, and changes nothing when repeated.

use crate::util::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn merge(into: &Path, shards: &[PathBuf], extra: &[&str]) -> std::process::Output {
    let mut args = vec!["merge".to_string(), "--into".into(), path_text(into)];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(shards.iter().map(|p| path_text(p)));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cli(&args)
}

fn path_text(path: &Path) -> String {
    path.display().to_string()
}

/// Run shards 0..n of `questions` into `dir/shard-K.db`, one after the other.
fn run_shards(dir: &Path, questions: &Path, n: u32, extra: &[&str]) -> Vec<PathBuf> {
    (0..n)
        .map(|k| {
            let db = dir.join(format!("shard-{k}.db"));
            let shard = format!("{k}/{n}");
            let mut args = vec!["--shard", shard.as_str()];
            args.extend_from_slice(extra);
            let output = run(&smollm(), questions, &db, &args);
            assert!(code(&output) <= 1, "shard {shard}: {}", stderr(&output));
            db
        })
        .collect()
}

#[test]
fn four_shards_merge_into_the_unsharded_run_and_a_second_merge_changes_nothing() {
    let dir = tempdir();
    let settings = ["--max-tokens", "8", "--parallel", "4"];
    let shards = run_shards(dir.path(), &bundled_questions(), 4, &settings);
    // Each shard's file alone holds its rows: the WAL was checkpointed into it at the end.
    for db in &shards {
        let wal = PathBuf::from(format!("{}-wal", db.display()));
        let wal_bytes = std::fs::metadata(&wal).map_or(0, |m| m.len());
        assert_eq!(wal_bytes, 0, "{} has an unfolded WAL", db.display());
    }
    let whole = dir.path().join("whole.db");
    let output = run(&smollm(), &bundled_questions(), &whole, &settings);
    assert_eq!(code(&output), 0, "{}", stderr(&output));

    let all = dir.path().join("all.db");
    let output = merge(&all, &shards, &[]);
    assert_eq!(code(&output), 0, "{}{}", stdout(&output), stderr(&output));
    let merged = answers(&all, 1);
    let unsharded = answers(&whole, 1);
    assert_eq!(merged.len(), 60, "every question exactly once");
    let statuses = |rows: &BTreeMap<String, (String, Option<String>)>| -> Vec<(String, String)> {
        rows.iter()
            .map(|(id, (s, _))| (id.clone(), s.clone()))
            .collect()
    };
    assert_eq!(statuses(&merged), statuses(&unsharded));
    // No committed row lost: every shard's answer is in the merged run, unchanged.
    for db in &shards {
        for (id, row) in answers(db, 1) {
            assert_eq!(merged.get(&id), Some(&row), "{id} from {}", db.display());
        }
    }
    let differ = merged
        .iter()
        .filter(|(id, (_, answer))| unsharded[*id].1 != *answer)
        .count();
    eprintln!("greedy answers that differ, 4 shards vs one run (--parallel 4): {differ} of 60");

    let before = dump(&all);
    let mut reversed = shards.clone();
    reversed.reverse();
    let again = merge(&all, &reversed, &[]);
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    assert_eq!(dump(&all), before, "a second merge changed the database");
    assert!(stdout(&again).contains("0 added, 0 errors replaced, 15 unchanged"));

    // The merged database reads as any other, with the shards shown.
    let json = ok_stdout(&cli(&[
        "report",
        "--db",
        &path_text(&all),
        "--format",
        "json",
    ]));
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    let run = &report["runs"][0];
    assert_eq!(run["questions_done"], 60);
    assert_eq!(run["status"], "finished");
    assert_eq!(run["shard"], "merged from 4 shards by id");
    let per_shard = run["shards"].as_array().unwrap();
    assert_eq!(per_shard.len(), 4);
    let done: i64 = per_shard.iter().map(|s| s["done"].as_i64().unwrap()).sum();
    assert_eq!(done, 60);
    assert!(per_shard
        .iter()
        .all(|s| s["wall_time_s"].as_f64().unwrap() > 0.0
            && s["throughput_tok_per_s"].as_f64().unwrap() > 0.0));
    let status = ok_stdout(&cli(&["status", "--db", &path_text(&all)]));
    assert!(
        status.contains("progress 60/60") && status.contains("shard 3: 15/15"),
        "{status}"
    );
    let markdown = ok_stdout(&cli(&["report", "--db", &path_text(&all)]));
    assert!(markdown.contains("### Shards"), "{markdown}");
    ok_stdout(&cli(&["compare", "--db", &path_text(&all)]));
    let summary: (i64, i64, String) = open(&all)
        .query_row(
            "SELECT done, total, status FROM run_summary WHERE run_id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(summary, (60, 60, "finished".into()));
}

#[test]
fn merge_names_the_missing_ids_by_shard_and_an_ok_answer_replaces_an_error() {
    let dir = tempdir();
    let shards = run_shards(
        dir.path(),
        &bundled_questions(),
        2,
        &["--max-tokens", "4", "--limit", "10"],
    );
    let all = dir.path().join("all.db");
    let output = merge(&all, &shards[..1], &["--json"]);
    assert_eq!(code(&output), 3, "questions missing: {}", stderr(&output));
    let outcome: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    let shard_one: Vec<String> = open(&shards[1])
        .prepare("SELECT question_id FROM questions ORDER BY ordinal")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(outcome["missing"][0]["shard_index"], 1);
    assert_eq!(outcome["missing"][0]["sources"], serde_json::json!([]));
    assert_eq!(
        outcome["missing"][0]["ids"],
        serde_json::to_value(&shard_one).unwrap()
    );
    let status: String = open(&all)
        .query_row("SELECT status FROM runs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(status, "interrupted");

    // Two copies of shard 1's run, each with a different failed answer (so the same counts): the
    // second is merged too, and its ok replaces the first's error, never the reverse.
    let failed_copy = |name: &str, id: &str| {
        let path = dir.path().join(name);
        std::fs::copy(&shards[1], &path).unwrap();
        open(&path)
            .execute(
                "UPDATE answers SET status = 'error', answer = NULL, error = 'out of memory' WHERE question_id = ?1",
                [id],
            )
            .unwrap();
        path
    };
    let (first, second) = (&shard_one[0], &shard_one[1]);
    let failed_a = failed_copy("shard-1-a.db", first);
    let failed_b = failed_copy("shard-1-b.db", second);
    let output = merge(&all, std::slice::from_ref(&failed_a), &[]);
    assert_eq!(
        code(&output),
        1,
        "complete with an error row: {}",
        stderr(&output)
    );
    assert_eq!(answers(&all, 1)[first].0, "error");
    let output = merge(&all, std::slice::from_ref(&failed_b), &[]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert!(
        stdout(&output).contains("0 added, 1 errors replaced"),
        "{}",
        stdout(&output)
    );
    assert_eq!(answers(&all, 1)[first].0, "ok");
    assert_eq!(
        answers(&all, 1)[second].0,
        "ok",
        "an error never replaces an ok"
    );
    let output = merge(&all, &[shards[1].clone()], &[]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(
        answers(&all, 1),
        answers(&shards[1], 1)
            .into_iter()
            .chain(answers(&shards[0], 1))
            .collect()
    );

    // An older copy merged after the final one (a snapshot taken mid-run) changes no figure:
    // the shard's row keeps the final copy's counts.
    let snapshot = dir.path().join("shard-1-snapshot.db");
    std::fs::copy(&shards[1], &snapshot).unwrap();
    open(&snapshot)
        .execute_batch(
            "DELETE FROM answers WHERE id IN (SELECT id FROM answers ORDER BY id DESC LIMIT 2)",
        )
        .unwrap();
    let part_row = || -> (i64, i64) {
        open(&all)
            .query_row(
                "SELECT answers, ok_answers FROM shard_parts WHERE shard_index = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
    };
    let final_row = part_row();
    assert_eq!(final_row, (shard_one.len() as i64, shard_one.len() as i64));
    for stale in [&snapshot, &failed_a] {
        let output = merge(&all, std::slice::from_ref(stale), &[]);
        assert_eq!(code(&output), 0, "{}", stderr(&output));
        assert_eq!(
            part_row(),
            final_row,
            "{} took the shard back",
            stale.display()
        );
    }
    assert_eq!(answers(&all, 1).len(), 10);
}

#[test]
fn merge_refuses_what_does_not_belong_together_and_writes_nothing() {
    let dir = tempdir();
    let questions = bundled_questions();
    let fast = ["--max-tokens", "4", "--limit", "6"];
    let a = dir.path().join("a.db");
    let b = dir.path().join("b.db");
    let c = dir.path().join("c.db");
    let d = dir.path().join("d.db");
    for (db, shard, extra) in [
        (&a, "0/2", &[][..]),
        (&b, "1/4", &[][..]),
        (&c, "1/2", &["--seed", "7", "--temperature", "0.5"][..]),
        (&d, "", &[][..]),
    ] {
        let mut args = fast.to_vec();
        if !shard.is_empty() {
            args.extend(["--shard", shard]);
        }
        args.extend(extra);
        let output = run(&smollm(), &questions, db, &args);
        assert_eq!(code(&output), 0, "{}", stderr(&output));
    }
    let all = dir.path().join("all.db");
    let cases: [(&[&PathBuf], &str); 3] = [
        (&[&a, &b], "overlap"),
        (&[&a, &c], "different runs"),
        (&[&a, &d], "holds no shard run"),
    ];
    for (inputs, expected) in cases {
        let inputs: Vec<PathBuf> = inputs.iter().map(|p| p.to_path_buf()).collect();
        let output = merge(&all, &inputs, &[]);
        assert_eq!(code(&output), 2, "{inputs:?}");
        assert!(stderr(&output).contains(expected), "{}", stderr(&output));
        assert!(!all.exists(), "a refused merge wrote {}", all.display());
    }
    // A shard database that also holds a question of another shard overlaps it.
    let stray = dir.path().join("a-stray.db");
    std::fs::copy(&a, &stray).unwrap();
    open(&stray)
        .execute_batch(
            "INSERT INTO questions(run_id, question_id, ordinal, question)
             SELECT 1, question_id, ordinal, 'stray' FROM shard_plan WHERE shard_index = 1 LIMIT 1",
        )
        .unwrap();
    let output = merge(&all, std::slice::from_ref(&stray), &[]);
    assert_eq!(code(&output), 2);
    assert!(
        stderr(&output).contains("overlaps other shards"),
        "{}",
        stderr(&output)
    );
    assert!(!all.exists());
    let output = merge(&a, std::slice::from_ref(&a), &[]);
    assert_eq!(code(&output), 2);
    assert!(
        stderr(&output).contains("also given as a shard"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_killed_shard_resumes_as_itself_and_only_as_itself() {
    let dir = tempdir();
    let db = dir.path().join("shard-1.db");
    let extra = ["--shard", "1/2", "--max-tokens", "48", "--limit", "24"];
    let mut child = spawn(&smollm(), &bundled_questions(), &db, &extra);
    wait_for_answers(&db, 3, &mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    let committed = answer_rows(&db, 1);
    assert!(committed.len() < 12, "killed before the end");

    let wrong = run(
        &smollm(),
        &bundled_questions(),
        &db,
        &[
            "--shard",
            "0/2",
            "--max-tokens",
            "48",
            "--limit",
            "24",
            "--resume",
        ],
    );
    assert_eq!(code(&wrong), 2, "{}", stderr(&wrong));
    assert!(stderr(&wrong).contains("shard"), "{}", stderr(&wrong));

    let mut resume = extra.to_vec();
    resume.push("--resume");
    let output = run(&smollm(), &bundled_questions(), &db, &resume);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let after = answer_rows(&db, 1);
    assert_eq!(after.len(), 12, "the shard's 12 questions, each once");
    for (id, row) in committed {
        assert_eq!(after[&id], row, "{id} changed on resume");
    }
}

#[test]
fn shard_auto_reads_the_cluster_and_context_keeps_passages_together() {
    let dir = tempdir();
    let mut lines = String::new();
    for p in 0..4 {
        for q in 0..3 {
            lines += &format!(
                "{{\"id\":\"p{p}-q{q}\",\"context\":\"지문 {p}: 조선은 1392년에 세워졌다.\",\"question\":\"질문 {q}?\"}}\n"
            );
        }
    }
    let questions = write_questions(dir.path(), "passages.jsonl", &lines);
    let slurm_db = dir.path().join("slurm.db");
    let output = run_command(
        &smollm(),
        &questions,
        &slurm_db,
        &[
            "--shard",
            "auto",
            "--shard-key",
            "context",
            "--max-tokens",
            "2",
        ],
    )
    .envs([
        ("SLURM_ARRAY_TASK_ID", "3"),
        ("SLURM_ARRAY_TASK_COUNT", "2"),
        ("SLURM_ARRAY_TASK_MIN", "1"),
        ("SLURM_ARRAY_TASK_MAX", "3"),
        ("SLURM_ARRAY_TASK_STEP", "2"),
    ])
    .output()
    .unwrap();
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert!(
        stderr(&output).contains("shard 1/2 by context"),
        "{}",
        stderr(&output)
    );
    let plan: Vec<(String, u32)> = open(&slurm_db)
        .prepare("SELECT question_id, shard_index FROM shard_plan ORDER BY ordinal")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(plan.len(), 12);
    for passage in plan.chunks(3) {
        assert!(
            passage.iter().all(|(_, s)| *s == passage[0].1),
            "{passage:?}"
        );
    }
    let answered = answers(&slurm_db, 1).len();
    assert_eq!(answered, 6, "two passages of three questions");

    let k8s_db = dir.path().join("k8s.db");
    let output = run_command(
        &smollm(),
        &questions,
        &k8s_db,
        &["--shard", "auto", "--shards", "20", "--max-tokens", "2"],
    )
    .env("JOB_COMPLETION_INDEX", "19")
    .output()
    .unwrap();
    assert_eq!(code(&output), 0, "an empty shard: {}", stderr(&output));
    assert!(
        stderr(&output).contains("no questions"),
        "{}",
        stderr(&output)
    );
    let missing = run(&smollm(), &questions, &k8s_db, &["--shard", "auto"]);
    assert_eq!(code(&missing), 2);
    assert!(
        stderr(&missing).contains("SLURM_ARRAY_TASK_ID"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn a_merge_that_fails_on_one_shard_keeps_the_shards_merged_before_it() {
    let dir = tempdir();
    let shards = run_shards(
        dir.path(),
        &bundled_questions(),
        2,
        &["--max-tokens", "4", "--limit", "10"],
    );
    // A shard database that reads as one (schema, run, partition and questions) but whose
    // generation time overflows the merged run's total: the merge fails inside that shard's
    // transaction.
    let broken = dir.path().join("shard-1-broken.db");
    std::fs::copy(&shards[1], &broken).unwrap();
    open(&broken)
        .execute_batch("UPDATE runs SET active_ms = 9223372036854775807")
        .unwrap();
    let all = dir.path().join("all.db");
    let output = merge(&all, &[shards[0].clone(), broken.clone()], &[]);
    assert_eq!(code(&output), 5, "{}", stderr(&output));
    assert!(
        stderr(&output).contains("shard-1-broken.db"),
        "{}",
        stderr(&output)
    );
    let connection = open(&all);
    let count = |sql: &str| -> i64 { connection.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(
        count("SELECT COUNT(*) FROM shard_parts"),
        1,
        "shard 0 stays merged"
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM answers"),
        answers(&shards[0], 1).len() as i64
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM questions"),
        answers(&shards[0], 1).len() as i64,
        "nothing of the failed shard"
    );
    let status: String = connection
        .query_row("SELECT status FROM runs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(status, "interrupted");
    drop(connection);
    let output = merge(&all, &shards, &[]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(answers(&all, 1).len(), 10);
}

fn digest(path: &Path) -> String {
    docent_eval::dataset::hex_sha256(&std::fs::read(path).unwrap())
}

/// A command that must end: a hostile database once made `status` and `merge` loop forever, so
/// a hang fails the test (after a guard far beyond any normal run) instead of stalling the suite.
fn ends(command: &mut std::process::Command) -> std::process::Output {
    use std::process::Stdio;
    let mut child = command
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(120) {
            child.kill().ok();
            panic!("{command:?} hung on a hostile database");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn docent() -> std::process::Command {
    std::process::Command::new(BIN)
}

#[test]
fn merge_refuses_a_shard_as_target_and_foreign_or_hostile_databases_untouched() {
    let dir = tempdir();
    let shards = run_shards(
        dir.path(),
        &bundled_questions(),
        2,
        &["--max-tokens", "4", "--limit", "6"],
    );
    let untouched = |path: &Path, before: &str, output: &std::process::Output, expected: &str| {
        assert_eq!(code(output), 2, "{}{}", stdout(output), stderr(output));
        assert!(stderr(output).contains(expected), "{}", stderr(output));
        assert_eq!(digest(path), before, "{} was written", path.display());
        assert!(!Path::new(&format!("{}-wal", path.display())).exists());
    };
    // `merge --into out/shard-*.db`: the pattern makes shard 0 the target.
    let shard_0 = digest(&shards[0]);
    let output = merge(&shards[0], &shards[1..], &[]);
    untouched(&shards[0], &shard_0, &output, "a shard database");
    // The same file by another name: a hard link.
    let link = dir.path().join("link.db");
    std::fs::hard_link(&shards[0], &link).unwrap();
    let output = merge(&link, &shards, &[]);
    untouched(&shards[0], &shard_0, &output, "also given as a shard");

    // Another program's file with a `runs` table and a schema version of its own.
    let foreign = dir.path().join("other-program.db");
    open(&foreign)
        .execute_batch(
            "CREATE TABLE runs(id INTEGER PRIMARY KEY, name TEXT); INSERT INTO runs(name) VALUES ('x');
             PRAGMA user_version = 3;",
        )
        .unwrap();
    let before = digest(&foreign);
    let output = merge(&foreign, &shards, &[]);
    untouched(&foreign, &before, &output, "did not create");
    let output = run(&smollm(), &bundled_questions(), &foreign, &["--limit", "1"]);
    untouched(&foreign, &before, &output, "did not create");

    // Shard 1 with hostile schema objects: an `answers` that is a view (one that never ends),
    // a trigger, an index on an expression.
    let all = dir.path().join("all.db");
    for (name, change) in [
        (
            "endless",
            "ALTER TABLE answers RENAME TO answers_t;
             CREATE VIEW answers AS WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n)
             SELECT a.* FROM answers_t a, n;",
        ),
        (
            "trigger",
            "CREATE TRIGGER t AFTER UPDATE ON runs BEGIN DELETE FROM answers; END;",
        ),
        ("index", "CREATE INDEX e ON answers(length(answer));"),
    ] {
        let hostile = dir.path().join(format!("shard-1-{name}.db"));
        std::fs::copy(&shards[1], &hostile).unwrap();
        open(&hostile).execute_batch(change).unwrap();
        let before = digest(&hostile);
        let db = path_text(&hostile);
        for args in [
            vec!["status", "--db", db.as_str()],
            vec!["report", "--db", db.as_str()],
        ] {
            let output = ends(docent().args(&args));
            untouched(&hostile, &before, &output, "schema was changed");
        }
        let output = ends(
            docent()
                .args(["merge", "--into"])
                .arg(&all)
                .arg(&shards[0])
                .arg(&hostile),
        );
        untouched(&hostile, &before, &output, "schema was changed");
        assert!(!all.exists(), "a refused merge wrote {}", all.display());
    }
}

#[test]
fn merge_takes_any_path_and_shows_stored_text_escaped() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempdir();
    let shards = run_shards(
        dir.path(),
        &bundled_questions(),
        2,
        &["--max-tokens", "4", "--limit", "6"],
    );
    // A directory whose name is not UTF-8, and a path written with a leading `//`.
    let odd = dir.path().join(std::ffi::OsStr::from_bytes(b"bad\xff #?%"));
    std::fs::create_dir(&odd).unwrap();
    let shard_0 = odd.join("shard-0.db");
    std::fs::copy(&shards[0], &shard_0).unwrap();
    let slashed = PathBuf::from(format!("/{}", shards[1].display()));
    let into = odd.join("all.db");
    let output = docent()
        .args(["merge", "--into"])
        .arg(&into)
        .arg(&shard_0)
        .arg(&slashed)
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "{}{}", stdout(&output), stderr(&output));
    assert_eq!(answers(&into, 1).len(), 6);

    // A shard whose host name and planned question ids carry terminal escapes.
    let hostile = dir.path().join("shard-0-hostile.db");
    std::fs::copy(&shards[0], &hostile).unwrap();
    open(&hostile)
        .execute_batch(
            "UPDATE runs SET host_json = json_set(host_json, '$.hostname', 'node' || char(27) || '[31m');
             UPDATE shard_plan SET question_id = question_id || char(27) || ']0;pwned' || char(7)
             WHERE shard_index = 1;",
        )
        .unwrap();
    let output = merge(&dir.path().join("escaped.db"), &[hostile], &[]);
    assert_eq!(code(&output), 3, "shard 1 missing: {}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("on node\\x1b[31m ("), "{text}");
    assert!(text.contains("\\x1b]0;pwned\\x07"), "{text}");
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{text:?}"
    );
}
