//! The fixed in-memory data the exporters' tests render (test-only): two runs, one finished with
//! an error row and categories, one with GPU figures; and the snapshot comparison.

use super::data::{
    AnswerDetail, CategoryReport, Comparison, ErrorReason, MemoryPeaks, MemoryPoint, ModelSummary,
    RunReport, Settings,
};
use super::stats::{Rate, Spread};

fn answer(id: &str, ordinal: i64, ok: bool, score: Option<f64>, latency: f64) -> AnswerDetail {
    AnswerDetail {
        question_id: id.into(),
        ordinal,
        category: Some("고려".into()),
        question: format!("질문 {id} <b>&</b>"),
        reference: None,
        answer_index: Some(1),
        choices: Some(vec!["태조".into(), "세종".into()]),
        ok: Some(ok),
        answer: ok.then(|| "정답은 2번 \"세종\"".to_string()),
        error: (!ok).then(|| "prompt of 900 tokens + --max-tokens 12 exceeds the context of 512 tokens per sequence; raise --ctx".to_string()),
        score: if ok { score } else { None },
        exact_match: None,
        f1: None,
        chosen_index: Some(1),
        prompt_tokens: Some(40),
        completion_tokens: Some(12),
        ttft_ms: Some(latency / 4.0),
        latency_ms: ok.then_some(latency),
        decode_tok_per_s: Some(30.0),
        rss_bytes: Some(150 << 20),
        finished_s: Some(ordinal as f64),
    }
}

/// Two fixed runs: one finished with an error row and categories, one with GPU figures.
pub fn fixture() -> Comparison {
    let first = first_run();
    let second = second_run(&first);
    Comparison {
        runs: vec![first, second],
    }
}

/// A finished run on the CPU with one error row, two categories and a prediction.
fn first_run() -> RunReport {
    RunReport {
        run_id: 1,
        status: "finished".into(),
        status_reason: None,
        started_at: "2026-01-02T03:04:05.678Z".into(),
        finished_at: Some("2026-01-02T03:14:05.678Z".into()),
        model: ModelSummary {
            name: "SmolLM2-135M-Instruct.Q4_1".into(),
            path: "models/SmolLM2-135M-Instruct.Q4_1.gguf".into(),
            quantization: "Q4_1".into(),
            size_bytes: 98_362_432,
            architecture: Some("llama".into()),
            parameters: Some(134_515_008),
        },
        settings: Settings {
            max_tokens: Some(12),
            temperature: Some(0.0),
            top_p: Some(1.0),
            seed: Some(42),
            ctx: Some(512),
            parallel: Some(1),
            gpu_layers: Some(0),
            threads: Some(2),
            system_prompt: false,
        },
        questions_total: 10,
        questions_done: 10,
        ok: 9,
        errors: 1,
        success_rate: Some(0.9),
        mc_accuracy: Rate::new(2, 5),
        free_text_accuracy: Rate::new(1, 5),
        exact_match: Rate::new(0, 5),
        loglik_acc: Rate::new(3, 5),
        loglik_acc_norm: Rate::new(2, 5),
        loglik_chance: Some(0.25),
        generated_loglik_agreement: Some(0.6),
        mean_f1: Some(0.1234),
        latency_ms: Some(Spread { n: 9, mean: 1234.5, p50: 1100.0, p95: 2500.25, max: 2600.0 }),
        ttft_ms: Some(Spread { n: 9, mean: 210.0, p50: 200.0, p95: 420.0, max: 430.0 }),
        decode_tok_per_s: Some(31.25),
        throughput_tok_per_s: Some(12.5),
        prompt_tokens: 400,
        completion_tokens: 108,
        wall_time_s: Some(8.64),
        questions_per_hour: Some(4166.7),
        memory: memory(),
        errors_by_reason: vec![ErrorReason {
            reason: "prompt of N tokens + --max-tokens N exceeds the context of N tokens per sequence; raise --ctx".into(),
            count: 1,
            example: "prompt of 900 tokens + --max-tokens 12 exceeds the context of 512 tokens per sequence; raise --ctx".into(),
        }],
        categories: categories(),
        question_format: Default::default(),
        tokenizer_check: None,
        shard: None,
        shards: Vec::new(),
        merged: None,
        timeline: timeline(),
        answers: vec![
            answer("q1", 1, true, Some(1.0), 1100.0),
            answer("q2", 2, true, Some(0.0), 2600.0),
            answer("q3", 3, false, None, 0.0),
        ],
    }
}

/// `first` on another model with GPU figures, no errors, one category, no latencies.
fn second_run(first: &RunReport) -> RunReport {
    let mut second = first.clone();
    second.run_id = 2;
    second.model = ModelSummary {
        name: "gemma-3-270m-q4_k_m".into(),
        path: "models/gemma-3-270m-q4_k_m.gguf".into(),
        quantization: "Q4_K_M".into(),
        size_bytes: 253_113_024,
        architecture: Some("gemma3".into()),
        parameters: Some(268_098_176),
    };
    second.settings.gpu_layers = Some(19);
    second.settings.system_prompt = true;
    second.errors = 0;
    second.ok = 10;
    second.success_rate = Some(1.0);
    second.mc_accuracy = Rate::new(5, 5);
    second.memory.peak_gpu_used_bytes = Some(1_610_612_736);
    second.memory.gpu_total_bytes = Some(85_899_345_920);
    second.memory.predicted_peak_bytes = None;
    second.errors_by_reason = Vec::new();
    second.categories.truncate(1);
    second.latency_ms = None;
    second.ttft_ms = None;
    second.answers[2] = answer("q3", 3, true, Some(1.0), 900.0);
    second
}

/// Memory peaks of the first run: CPU only, with a predicted peak.
fn memory() -> MemoryPeaks {
    MemoryPeaks {
        samples: 3,
        peak_rss_bytes: Some(157_286_400),
        peak_ram_used_bytes: Some(3_221_225_472),
        ram_total_bytes: Some(25_276_510_208),
        peak_swap_used_bytes: Some(0),
        swap_total_bytes: Some(0),
        peak_gpu_used_bytes: None,
        gpu_total_bytes: None,
        predicted_peak_bytes: Some(209_715_200),
    }
}

/// Two categories, one with a `|` to escape in Markdown.
fn categories() -> Vec<CategoryReport> {
    vec![
        CategoryReport {
            category: "고려".into(),
            total: 6,
            done: 6,
            ok: 5,
            accuracy: Rate::new(2, 6),
            mc_accuracy: Rate::new(2, 3),
            free_text_accuracy: Rate::new(0, 3),
            exact_match: Rate::new(0, 3),
            mean_f1: Some(0.05),
            mean_latency_ms: Some(1200.0),
            loglik_acc: None,
            loglik_acc_norm: None,
            loglik_chance: None,
        },
        CategoryReport {
            category: "조선 | 근대".into(),
            total: 4,
            done: 4,
            ok: 4,
            accuracy: Rate::new(1, 4),
            mc_accuracy: Rate::new(0, 2),
            free_text_accuracy: Rate::new(1, 2),
            exact_match: Rate::new(0, 2),
            mean_f1: Some(0.25),
            mean_latency_ms: Some(1300.0),
            loglik_acc: None,
            loglik_acc_norm: None,
            loglik_chance: None,
        },
    ]
}

/// Three memory samples.
fn timeline() -> Vec<MemoryPoint> {
    vec![
        MemoryPoint {
            t_s: 0.5,
            rss_bytes: Some(100 << 20),
            ram_used_bytes: Some(3 << 30),
            ram_total_bytes: Some(24 << 30),
            swap_used_bytes: Some(0),
            swap_total_bytes: Some(0),
            gpu_used_bytes: None,
            gpu_total_bytes: None,
            ..Default::default()
        },
        MemoryPoint {
            t_s: 4.0,
            rss_bytes: Some(150 << 20),
            ram_used_bytes: Some(3 << 30),
            ram_total_bytes: Some(24 << 30),
            swap_used_bytes: Some(0),
            swap_total_bytes: Some(0),
            gpu_used_bytes: None,
            gpu_total_bytes: None,
            ..Default::default()
        },
        MemoryPoint {
            t_s: 8.6,
            rss_bytes: Some(140 << 20),
            ram_used_bytes: Some(3 << 30),
            ram_total_bytes: Some(24 << 30),
            swap_used_bytes: Some(0),
            swap_total_bytes: Some(0),
            gpu_used_bytes: None,
            gpu_total_bytes: None,
            ..Default::default()
        },
    ]
}

/// A model name from a hostile model file: a spreadsheet formula, then a terminal escape that
/// retitles the window.
pub const HOSTILE_MODEL: &str = "=HYPERLINK(\"http://x\",\"y\")\u{1b}]0;owned\u{7}";
/// A category from a hostile question file: raw HTML and a table-cell break.
pub const HOSTILE_CATEGORY: &str = "<img src=x onerror=alert(1)>|x";
/// An error message quoting a hostile question file: clear-screen, a right-to-left override, a
/// line break, a code span and an entity.
pub const HOSTILE_ERROR: &str = "bad answer\u{1b}[2J\u{202e}txt.exe\nforged line `code` &amp;";

/// [`fixture`] with untrusted text from hostile files in every place it can reach an output:
/// run 1's model name and path, categories (`<script>` and [`HOSTILE_CATEGORY`]), status
/// reason, errors by reason, and an error row's question id and message.
pub fn hostile() -> Comparison {
    let mut comparison = fixture();
    let run = &mut comparison.runs[0];
    run.model.name = HOSTILE_MODEL.into();
    run.model.path = format!("models/{HOSTILE_MODEL}.gguf");
    run.status_reason = Some(HOSTILE_ERROR.into());
    run.categories[0].category = "<script>".into();
    run.categories[1].category = HOSTILE_CATEGORY.into();
    for answer in &mut run.answers {
        answer.category = Some("<script>".into());
    }
    run.answers[2].question_id = "<script>alert(1)</script>\u{1b}[1A".into();
    run.answers[2].error = Some(HOSTILE_ERROR.into());
    run.errors_by_reason = vec![ErrorReason {
        reason: HOSTILE_ERROR.into(),
        count: 1,
        example: HOSTILE_ERROR.into(),
    }];
    comparison
}

/// Compare with a reviewed snapshot in `src/report/snapshots/`; `UPDATE_SNAPSHOTS=1` rewrites
/// it (review the diff before committing).
pub fn assert_snapshot(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/report/snapshots")
        .join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        expected == actual,
        "{name} differs from its snapshot {}:\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}
