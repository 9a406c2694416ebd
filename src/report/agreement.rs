//! One definition per figure: a run with an error row, an unscored row, an unanswered question
//! and memory samples from two GPUs, inserted through the store, printed by the end-of-run
//! summary, `report` (Markdown), `compare` (JSON and CSV), `status` and read from the views:
//! every figure they share must be the same number.

use super::*;
use crate::dataset::Question;
use crate::monitor::{GpuSample, MemorySample};
use crate::store::{AnswerRow, RunStatus};

const GIB: u64 = 1 << 30;

fn question(id: &str, category: &str, choices: bool, reference: Option<&str>) -> Question {
    Question {
        id: id.into(),
        ordinal: id[1..].parse().unwrap(),
        line: 0,
        question: format!("question {id}"),
        reference: reference.map(str::to_string),
        choices: choices.then(|| vec!["a".into(), "b".into(), "c".into()]),
        answer_index: (choices && reference.is_some()).then_some(0),
        category: Some(category.into()),
        context: None,
        extra: Default::default(),
    }
}

/// (id, ok, score, exact, f1, latency)
type Row = (
    &'static str,
    bool,
    Option<f64>,
    Option<bool>,
    Option<f64>,
    f64,
);

fn answer((id, ok, score, exact, f1, latency): Row) -> AnswerRow {
    AnswerRow {
        question_id: id.into(),
        ok,
        answer: ok.then(|| "answer".into()),
        error: (!ok).then(|| "prompt of 900 tokens too long".into()),
        latency_ms: ok.then_some(latency),
        ttft_ms: ok.then_some(latency / 10.0),
        completion_tokens: ok.then_some(10),
        rss_bytes: Some(100 << 20),
        score,
        exact_match: exact,
        f1,
        ..Default::default()
    }
}

fn sample(at: &str, gpu0_gib: f64, gpu1_gib: f64) -> MemorySample {
    let gpu = |index, gib: f64| GpuSample {
        index,
        name: format!("GPU{index}"),
        used_bytes: (gib * GIB as f64) as u64,
        total_bytes: 80 * GIB,
        util_pct: Some(50),
    };
    MemorySample {
        at: at.into(),
        rss_bytes: 200 << 20,
        ram_used_bytes: 3 * GIB,
        ram_total_bytes: 24 * GIB,
        swap_used_bytes: 0,
        swap_total_bytes: 0,
        gpus: vec![gpu(0, gpu0_gib), gpu(1, gpu1_gib)],
    }
}

/// Nine questions: multiple choice in `a` and `b` (one right, one wrong, one error), short
/// answers (two right, one wrong, one error, one never answered) and one unscored.
fn fixture() -> (tempfile::TempDir, Store, i64) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("r.db")).unwrap();
    let questions = vec![
        question("q1", "a", true, Some("a")),
        question("q2", "a", true, Some("a")),
        question("q3", "b", true, Some("a")),
        question("q4", "b", false, Some("x")),
        question("q5", "b", false, Some("x")),
        question("q6", "a", false, Some("x")),
        question("q7", "a", false, Some("x")),
        question("q8", "b", false, None),
        question("q9", "a", false, Some("x")),
    ];
    let run_id = store.test_run("m.Q8_0", &questions);
    let rows: [Row; 8] = [
        ("q1", true, Some(1.0), None, None, 100.0),
        ("q2", true, Some(0.0), None, None, 300.0),
        ("q3", false, None, None, None, 0.0),
        ("q4", true, Some(1.0), Some(true), Some(1.0), 200.0),
        ("q5", true, Some(0.0), Some(false), Some(0.5), 400.0),
        ("q6", false, None, None, None, 0.0),
        ("q8", true, None, None, None, 500.0),
        ("q9", true, Some(1.0), Some(false), Some(0.8), 600.0),
    ];
    for row in rows {
        store.insert_answer(run_id, &answer(row)).unwrap();
    }
    store
        .insert_memory_sample(run_id, &sample("2026-01-01T00:00:01.000Z", 1.0, 2.0))
        .unwrap();
    store
        .insert_memory_sample(run_id, &sample("2026-01-01T00:00:02.000Z", 1.5, 2.5))
        .unwrap();
    store.heartbeat(run_id, 2000).unwrap();
    store
        .end_session(run_id, RunStatus::Interrupted, Some("stopped"), 0)
        .unwrap();
    (dir, store, run_id)
}

#[test]
fn the_views_define_each_figure_once() {
    let (_dir, store, run_id) = fixture();
    let s = store.run_summary(run_id).unwrap().unwrap();
    assert_eq!((s.total, s.done, s.ok, s.errors), (9, 8, 6, 2));
    // Graded: every answered question with a reference; errors count as wrong; q8 is unscored
    // and q7 unanswered, so neither is in a denominator.
    assert_eq!((s.correct, s.graded), (3, 7));
    assert_eq!((s.mc_correct, s.mc_graded), (1, 3));
    assert_eq!((s.free_correct, s.free_graded), (2, 4));
    assert_eq!((s.exact_matches, s.free_graded), (1, 4));
    assert_eq!(s.accuracy, Some(0.4286));
    assert_eq!(s.mean_f1, Some(0.575));
    // Latency over ok rows 100..600: nearest-rank p50 = 300, p95 = 600.
    assert_eq!(
        (
            s.mean_latency_ms,
            s.p50_latency_ms,
            s.p95_latency_ms,
            s.max_latency_ms
        ),
        (Some(350.0), Some(300.0), Some(600.0), Some(600.0))
    );
    // GPU: the sum over both GPUs at a sample time (1.5 + 2.5), not one GPU's maximum.
    assert_eq!(s.peak_gpu_used_bytes, Some(4 * GIB as i64));
    assert_eq!(s.peak_rss_bytes, Some(200 << 20));
    let categories = store.category_summaries(run_id).unwrap();
    let a = &categories[0];
    assert_eq!((a.category.as_str(), a.correct, a.graded), ("a", 2, 4));
    let b = &categories[1];
    assert_eq!((b.category.as_str(), b.correct, b.graded), ("b", 1, 3));
}

#[test]
fn summary_report_compare_and_status_print_the_same_numbers() {
    let (_dir, store, run_id) = fixture();
    let summary = summary_text(&store, run_id).unwrap();
    for figure in [
        "ok 6, errors 2",
        "accuracy 42.9%",
        "mean F1 0.575",
        "latency mean 350.0 ms p50 300.0 ms p95 600.0 ms",
        "peak GPU 4.00 GiB",
    ] {
        assert!(
            summary.contains(figure),
            "summary lacks {figure:?}:\n{summary}"
        );
    }

    let comparison = load(&store, &[run_id]).unwrap();
    let markdown = render(&comparison, Format::Markdown);
    let markdown = String::from_utf8(markdown).unwrap();
    for figure in [
        "33.3% [", // multiple choice 1/3
        "] 1/3", "50.0% [", // short answer 2/4
        "] 2/4", "25.0% [", // exact match 1/4
        "0.575", "300 ms", "600 ms", "4.00 GiB",
    ] {
        assert!(
            markdown.contains(figure),
            "report lacks {figure:?}:\n{markdown}"
        );
    }

    let json: serde_json::Value =
        serde_json::from_slice(&render(&comparison, Format::Json)).unwrap();
    let run = &json["runs"][0];
    assert_eq!(run["errors"], 2);
    assert_eq!(run["ok"], 6);
    assert_eq!(run["mc_accuracy"]["successes"], 1);
    assert_eq!(run["mc_accuracy"]["n"], 3);
    assert_eq!(run["free_text_accuracy"]["n"], 4);
    assert_eq!(run["mean_f1"], 0.575);
    assert_eq!(run["latency_ms"]["p50"], 300.0);
    assert_eq!(run["latency_ms"]["p95"], 600.0);
    assert_eq!(run["memory"]["peak_gpu_used_bytes"], 4 * GIB);
    assert_eq!(run["categories"][0]["accuracy"]["successes"], 2);
    assert_eq!(run["categories"][0]["accuracy"]["n"], 4);

    let csv = String::from_utf8(render(&comparison, Format::Csv)).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let values: Vec<&str> = lines.next().unwrap().split(',').collect();
    let cell = |name: &str| values[header.iter().position(|h| *h == name).unwrap()];
    assert_eq!(cell("errors"), "2");
    assert_eq!(cell("mean_f1").parse::<f64>().unwrap(), 0.575);

    let status = status::status(&store, run_id).unwrap();
    assert_eq!((status.done, status.ok, status.errors), (8, 6, 2));
    assert_eq!(
        status.last_sample.unwrap().gpu_used_bytes,
        Some(4 * GIB as i64)
    );
}
