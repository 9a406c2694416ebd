//! What a report shows, as plain data: read from the database with bound parameters only, then
//! summarised by pure functions (so the metrics are unit-testable without a database).

use super::stats::{mean, Rate, Spread};
use crate::error::{Error, Result};
use crate::store::Store;
use regex::Regex;
use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// Runs side by side (one run for `report`, several for `compare`).
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The runs, in the order asked for.
    pub runs: Vec<RunReport>,
}

/// Everything a report says about one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Run id.
    pub run_id: i64,
    /// running | interrupted | finished | failed.
    pub status: String,
    /// Why a run is interrupted or failed.
    pub status_reason: Option<String>,
    /// When the run was created.
    pub started_at: String,
    /// When the last answer was committed (finished runs).
    pub finished_at: Option<String>,
    /// The model.
    pub model: ModelSummary,
    /// Generation and execution settings.
    pub settings: Settings,
    /// Questions in the run.
    pub questions_total: i64,
    /// Questions with a committed answer row (ok or error).
    pub questions_done: i64,
    /// Answer rows with status ok.
    pub ok: i64,
    /// Answer rows with status error.
    pub errors: i64,
    /// ok / total.
    pub success_rate: Option<f64>,
    /// Multiple choice: chosen option == reference, over answered questions with a key (an error
    /// row counts as wrong).
    pub mc_accuracy: Option<Rate>,
    /// Short answer: normalised reference contained in the normalised answer (`answers.score`),
    /// over answered questions with a reference (an error row counts as wrong).
    pub free_text_accuracy: Option<Rate>,
    /// Short answer: normalised answer == normalised reference, same questions.
    pub exact_match: Option<Rate>,
    /// Short answer: mean character F1, same questions (an error row counts as 0).
    pub mean_f1: Option<f64>,
    /// Latency (prompt in a batch → end of generation) of ok answers, ms.
    pub latency_ms: Option<Spread>,
    /// Time to first token of ok answers, ms.
    pub ttft_ms: Option<Spread>,
    /// Mean decode speed of one sequence, tokens/s.
    pub decode_tok_per_s: Option<f64>,
    /// Generated tokens over the run's generation wall time, tokens/s (all sequences together).
    pub throughput_tok_per_s: Option<f64>,
    /// Prompt tokens of all answers.
    pub prompt_tokens: i64,
    /// Generated tokens of all answers.
    pub completion_tokens: i64,
    /// Generation wall time summed over the run's sessions (`runs.active_ms`), s.
    pub wall_time_s: Option<f64>,
    /// Answered questions per hour of wall time.
    pub questions_per_hour: Option<f64>,
    /// Memory peaks and the preflight prediction.
    pub memory: MemoryPeaks,
    /// Error rows grouped by reason (numbers replaced by N), most frequent first.
    pub errors_by_reason: Vec<ErrorReason>,
    /// Per category, when the questions carry one.
    pub categories: Vec<CategoryReport>,
    /// Memory samples over time (HTML charts only).
    #[serde(skip)]
    pub timeline: Vec<MemoryPoint>,
    /// Every question with its answer (HTML charts and tables only).
    #[serde(skip)]
    pub answers: Vec<AnswerDetail>,
}

/// The model of a run.
#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    /// Short name (file stem).
    pub name: String,
    /// Model path as given to `run`.
    pub path: String,
    /// Quantization read from the file name (`Q4_K_M`, `Q8_0`, `F16`), else `unknown`.
    pub quantization: String,
    /// Model file size.
    pub size_bytes: i64,
    /// GGUF `general.architecture`, when the engine recorded it.
    pub architecture: Option<String>,
    /// Parameter count, when the engine recorded it.
    pub parameters: Option<u64>,
}

/// Settings that shape the answers and the speed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Settings {
    /// Most tokens generated per answer.
    pub max_tokens: Option<u64>,
    /// Sampling temperature (0 = greedy).
    pub temperature: Option<f64>,
    /// Nucleus mass.
    pub top_p: Option<f64>,
    /// Seed.
    pub seed: Option<u64>,
    /// Context tokens per sequence the engine used.
    pub ctx: Option<u64>,
    /// Sequences decoded together.
    pub parallel: Option<u64>,
    /// Layers offloaded to the GPU.
    pub gpu_layers: Option<u64>,
    /// CPU threads.
    pub threads: Option<u64>,
    /// Whether a system prompt was given.
    pub system_prompt: bool,
}

/// Memory peaks of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MemoryPeaks {
    /// Memory samples (distinct times).
    pub samples: usize,
    /// Largest process RSS, over samples and answer rows.
    pub peak_rss_bytes: Option<i64>,
    /// Largest host RAM in use.
    pub peak_ram_used_bytes: Option<i64>,
    /// Host RAM.
    pub ram_total_bytes: Option<i64>,
    /// Largest swap in use.
    pub peak_swap_used_bytes: Option<i64>,
    /// Swap size.
    pub swap_total_bytes: Option<i64>,
    /// Largest GPU memory in use, summed over GPUs (NULL without NVML).
    pub peak_gpu_used_bytes: Option<i64>,
    /// GPU memory, summed over GPUs.
    pub gpu_total_bytes: Option<i64>,
    /// Preflight's prediction of the run's peak (`runs.predicted_peak_bytes`), when recorded.
    pub predicted_peak_bytes: Option<i64>,
}

/// Error rows sharing a reason.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorReason {
    /// The error text with every number replaced by `N`.
    pub reason: String,
    /// How many rows.
    pub count: usize,
    /// The first such error, verbatim.
    pub example: String,
}

/// Quality and speed of the questions of one category.
#[derive(Debug, Clone, Serialize)]
pub struct CategoryReport {
    /// Category (`(none)` for questions without one).
    pub category: String,
    /// Questions.
    pub total: i64,
    /// Answered (ok or error).
    pub done: i64,
    /// Answered ok.
    pub ok: i64,
    /// Multiple choice and short answer pooled: `answers.score` == 1.
    pub accuracy: Option<Rate>,
    /// Multiple choice only.
    pub mc_accuracy: Option<Rate>,
    /// Short answer only (reference contained).
    pub free_text_accuracy: Option<Rate>,
    /// Short answer exact match.
    pub exact_match: Option<Rate>,
    /// Short answer mean character F1.
    pub mean_f1: Option<f64>,
    /// Mean latency of ok answers, ms.
    pub mean_latency_ms: Option<f64>,
}

/// One memory sample (GPUs summed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryPoint {
    /// Seconds since the run started.
    pub t_s: f64,
    /// Process RSS.
    pub rss_bytes: Option<i64>,
    /// Host RAM in use.
    pub ram_used_bytes: Option<i64>,
    /// Host RAM.
    pub ram_total_bytes: Option<i64>,
    /// Swap in use.
    pub swap_used_bytes: Option<i64>,
    /// Swap size.
    pub swap_total_bytes: Option<i64>,
    /// GPU memory in use (summed over GPUs; `None` without NVML).
    pub gpu_used_bytes: Option<i64>,
    /// GPU memory (summed).
    pub gpu_total_bytes: Option<i64>,
}

/// What kind of scoring a question gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuestionKind {
    /// Choices and a known correct index.
    MultipleChoice,
    /// A reference answer text.
    FreeText,
    /// Nothing to score against.
    Unscored,
}

/// A question of a run with its answer row (if committed).
#[derive(Debug, Clone)]
pub struct AnswerDetail {
    /// Question id.
    pub question_id: String,
    /// 1-based position.
    pub ordinal: i64,
    /// Category.
    pub category: Option<String>,
    /// Question text.
    pub question: String,
    /// How it is scored.
    pub kind: QuestionKind,
    /// The reference, for display (`2. 세종` for multiple choice).
    pub reference: Option<String>,
    /// `Some(true)` ok, `Some(false)` error, `None` not answered yet.
    pub ok: Option<bool>,
    /// Generated text.
    pub answer: Option<String>,
    /// Error text.
    pub error: Option<String>,
    /// 1/0 (see `score`).
    pub score: Option<f64>,
    /// Short-answer exact match.
    pub exact_match: Option<bool>,
    /// Short-answer character F1.
    pub f1: Option<f64>,
    /// Extracted choice (0-based).
    pub chosen_index: Option<i64>,
    /// Prompt tokens.
    pub prompt_tokens: Option<i64>,
    /// Generated tokens.
    pub completion_tokens: Option<i64>,
    /// Time to first token.
    pub ttft_ms: Option<f64>,
    /// Latency.
    pub latency_ms: Option<f64>,
    /// Decode speed.
    pub decode_tok_per_s: Option<f64>,
    /// RSS when committed.
    pub rss_bytes: Option<i64>,
    /// When generation ended, seconds since the run started.
    pub finished_s: Option<f64>,
}

/// The `runs` row fields a report needs.
#[derive(Debug, Clone, Default)]
pub struct RunRow {
    /// Run id.
    pub id: i64,
    /// Status text.
    pub status: String,
    /// Status reason.
    pub status_reason: Option<String>,
    /// Created.
    pub started_at: String,
    /// Finished.
    pub finished_at: Option<String>,
    /// Model path.
    pub model_path: String,
    /// Model short name.
    pub model_name: String,
    /// Model file size.
    pub model_size_bytes: i64,
    /// Questions in the run.
    pub question_count: i64,
    /// Generation settings JSON.
    pub config_json: String,
    /// Engine choices JSON.
    pub engine_json: Option<String>,
    /// Preflight prediction.
    pub predicted_peak_bytes: Option<i64>,
    /// Generation wall time over all sessions, ms.
    pub active_ms: i64,
}

/// Quantization named in a GGUF file name (`…Q4_K_M.gguf`, `…-q8_0.gguf`, `…F16.gguf`), upper
/// case; `unknown` when the name carries none.
pub fn quantization_from_name(path: &str) -> String {
    static PATTERN: OnceLock<Regex> = OnceLock::new();
    let pattern = PATTERN.get_or_init(|| {
        Regex::new(
            r"(?i)(?:^|[._\-])((?:I?Q[1-8](?:_[0-9])?(?:_K)?(?:_(?:XXS|XS|XL|NL|S|M|L))?(?:_[0-9]_[0-9])?)|BF16|FP16|F16|F32|TQ[12]_0|MXFP4)(?:[._\-]|$)",
        )
        .expect("valid built-in pattern")
    });
    let file = path.rsplit(['/', '\\']).next().unwrap_or(path);
    let stem = file
        .strip_suffix(".gguf")
        .or_else(|| file.strip_suffix(".GGUF"))
        .unwrap_or(file);
    // Matches may share a delimiter, so scan from each delimiter and keep the last.
    let mut found = None;
    let mut start = 0;
    while let Some(captures) = pattern.captures_at(stem, start) {
        let whole = captures.get(1).expect("group 1 always participates");
        found = Some(whole.as_str().to_ascii_uppercase());
        start = whole.end();
        if start >= stem.len() {
            break;
        }
    }
    found.unwrap_or_else(|| "unknown".to_string())
}

/// An error text with its numbers replaced by `N`, so that errors of one cause group together.
pub fn error_reason(error: &str) -> String {
    static DIGITS: OnceLock<Regex> = OnceLock::new();
    let digits = DIGITS.get_or_init(|| Regex::new(r"[0-9]+(?:\.[0-9]+)?").expect("valid"));
    let text = digits.replace_all(error.trim(), "N");
    let mut reason: String = text.chars().take(160).collect();
    if text.chars().count() > 160 {
        reason.push('…');
    }
    reason
}

fn json_u64(value: &Value, pointer: &str) -> Option<u64> {
    value.pointer(pointer).and_then(Value::as_u64)
}

fn settings_from(config_json: &str, engine_json: Option<&str>) -> Settings {
    let config: Value = serde_json::from_str(config_json).unwrap_or(Value::Null);
    let engine: Value = engine_json
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or(Value::Null);
    Settings {
        max_tokens: json_u64(&config, "/max_tokens"),
        temperature: config.pointer("/temperature").and_then(Value::as_f64),
        top_p: config.pointer("/top_p").and_then(Value::as_f64),
        seed: json_u64(&config, "/seed"),
        ctx: json_u64(&engine, "/session/ctx_per_sequence").or(json_u64(&config, "/ctx")),
        parallel: json_u64(&engine, "/execution/parallel")
            .or(json_u64(&engine, "/session/sequences")),
        gpu_layers: json_u64(&engine, "/model/gpu_layers"),
        threads: json_u64(&engine, "/session/threads").or(json_u64(&engine, "/execution/threads")),
        system_prompt: config
            .pointer("/system_prompt")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty()),
    }
}

fn model_from(row: &RunRow) -> ModelSummary {
    let engine: Value = row
        .engine_json
        .as_deref()
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or(Value::Null);
    ModelSummary {
        name: row.model_name.clone(),
        path: row.model_path.clone(),
        quantization: quantization_from_name(&row.model_path),
        size_bytes: row.model_size_bytes,
        architecture: engine
            .pointer("/model/architecture")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        parameters: json_u64(&engine, "/model/n_params"),
    }
}

/// Accuracy figures over a set of answered questions.
struct Quality {
    mc: Option<Rate>,
    free: Option<Rate>,
    exact: Option<Rate>,
    f1: Option<f64>,
    pooled: Option<Rate>,
}

fn quality(answers: &[&AnswerDetail]) -> Quality {
    let answered: Vec<&AnswerDetail> = answers.iter().copied().filter(|a| a.ok.is_some()).collect();
    let of_kind = |keep: &dyn Fn(QuestionKind) -> bool| -> Vec<&AnswerDetail> {
        answered.iter().copied().filter(|a| keep(a.kind)).collect()
    };
    let rate = |items: &[&AnswerDetail], hit: &dyn Fn(&AnswerDetail) -> bool| {
        Rate::new(
            items.iter().filter(|a| hit(a)).count() as u64,
            items.len() as u64,
        )
    };
    let correct = |a: &AnswerDetail| a.ok == Some(true) && a.score == Some(1.0);
    let mc = of_kind(&|k| k == QuestionKind::MultipleChoice);
    let free = of_kind(&|k| k == QuestionKind::FreeText);
    let scored = of_kind(&|k| k != QuestionKind::Unscored);
    let f1s: Vec<f64> = free
        .iter()
        .map(|a| match a.ok {
            Some(true) => a.f1.unwrap_or(0.0),
            _ => 0.0,
        })
        .collect();
    Quality {
        mc: rate(&mc, &correct),
        free: rate(&free, &correct),
        exact: rate(&free, &|a| {
            a.ok == Some(true) && a.exact_match == Some(true)
        }),
        f1: mean(&f1s),
        pooled: rate(&scored, &correct),
    }
}

fn ok_values(answers: &[AnswerDetail], field: impl Fn(&AnswerDetail) -> Option<f64>) -> Vec<f64> {
    answers
        .iter()
        .filter(|a| a.ok == Some(true))
        .filter_map(field)
        .collect()
}

fn max_of(values: impl Iterator<Item = Option<i64>>) -> Option<i64> {
    values.flatten().max()
}

/// Summarise one run from its row, its questions with answers, and its memory samples.
pub fn summarize(
    row: &RunRow,
    answers: Vec<AnswerDetail>,
    timeline: Vec<MemoryPoint>,
) -> RunReport {
    let done = answers.iter().filter(|a| a.ok.is_some()).count() as i64;
    let ok = answers.iter().filter(|a| a.ok == Some(true)).count() as i64;
    let errors = done - ok;
    let total = row.question_count;
    let overall = quality(&answers.iter().collect::<Vec<_>>());

    let wall_time_s = (row.active_ms > 0).then(|| row.active_ms as f64 / 1000.0);
    let completion_tokens: i64 = answers.iter().filter_map(|a| a.completion_tokens).sum();
    let prompt_tokens: i64 = answers.iter().filter_map(|a| a.prompt_tokens).sum();

    let mut reasons: Vec<ErrorReason> = Vec::new();
    for a in answers.iter().filter(|a| a.ok == Some(false)) {
        let text = a.error.as_deref().unwrap_or("(no error text)");
        let reason = error_reason(text);
        match reasons.iter_mut().find(|r| r.reason == reason) {
            Some(existing) => existing.count += 1,
            None => reasons.push(ErrorReason {
                reason,
                count: 1,
                example: text.to_string(),
            }),
        }
    }
    // Stable sort: equal counts keep first-seen (question) order.
    reasons.sort_by_key(|r| std::cmp::Reverse(r.count));

    let mut by_category: BTreeMap<String, Vec<&AnswerDetail>> = BTreeMap::new();
    if answers.iter().any(|a| a.category.is_some()) {
        for a in &answers {
            let name = a.category.clone().unwrap_or_else(|| "(none)".to_string());
            by_category.entry(name).or_default().push(a);
        }
    }
    let mut categories: Vec<CategoryReport> = by_category
        .into_iter()
        .map(|(category, items)| {
            let q = quality(&items);
            let latencies: Vec<f64> = items
                .iter()
                .filter(|a| a.ok == Some(true))
                .filter_map(|a| a.latency_ms)
                .collect();
            CategoryReport {
                category,
                total: items.len() as i64,
                done: items.iter().filter(|a| a.ok.is_some()).count() as i64,
                ok: items.iter().filter(|a| a.ok == Some(true)).count() as i64,
                accuracy: q.pooled,
                mc_accuracy: q.mc,
                free_text_accuracy: q.free,
                exact_match: q.exact,
                mean_f1: q.f1,
                mean_latency_ms: mean(&latencies),
            }
        })
        .collect();
    // Categories in the order of their first question, as the question file has them.
    let first_ordinal = |name: &str| {
        answers
            .iter()
            .filter(|a| a.category.as_deref().unwrap_or("(none)") == name)
            .map(|a| a.ordinal)
            .min()
            .unwrap_or(i64::MAX)
    };
    categories.sort_by_key(|c| first_ordinal(&c.category));

    let samples = {
        let mut times: Vec<f64> = timeline.iter().map(|p| p.t_s).collect();
        times.dedup();
        times.len()
    };
    let memory = MemoryPeaks {
        samples,
        peak_rss_bytes: max_of(
            timeline
                .iter()
                .map(|p| p.rss_bytes)
                .chain(answers.iter().map(|a| a.rss_bytes)),
        ),
        peak_ram_used_bytes: max_of(timeline.iter().map(|p| p.ram_used_bytes)),
        ram_total_bytes: max_of(timeline.iter().map(|p| p.ram_total_bytes)),
        peak_swap_used_bytes: max_of(timeline.iter().map(|p| p.swap_used_bytes)),
        swap_total_bytes: max_of(timeline.iter().map(|p| p.swap_total_bytes)),
        peak_gpu_used_bytes: max_of(timeline.iter().map(|p| p.gpu_used_bytes)),
        gpu_total_bytes: max_of(timeline.iter().map(|p| p.gpu_total_bytes)),
        predicted_peak_bytes: row.predicted_peak_bytes,
    };

    RunReport {
        run_id: row.id,
        status: row.status.clone(),
        status_reason: row.status_reason.clone(),
        started_at: row.started_at.clone(),
        finished_at: row.finished_at.clone(),
        model: model_from(row),
        settings: settings_from(&row.config_json, row.engine_json.as_deref()),
        questions_total: total,
        questions_done: done,
        ok,
        errors,
        success_rate: (total > 0).then(|| ok as f64 / total as f64),
        mc_accuracy: overall.mc,
        free_text_accuracy: overall.free,
        exact_match: overall.exact,
        mean_f1: overall.f1,
        latency_ms: Spread::of(&ok_values(&answers, |a| a.latency_ms)),
        ttft_ms: Spread::of(&ok_values(&answers, |a| a.ttft_ms)),
        decode_tok_per_s: mean(&ok_values(&answers, |a| a.decode_tok_per_s)),
        throughput_tok_per_s: wall_time_s.map(|s| completion_tokens as f64 / s),
        prompt_tokens,
        completion_tokens,
        wall_time_s,
        questions_per_hour: wall_time_s.map(|s| done as f64 * 3600.0 / s),
        memory,
        errors_by_reason: reasons,
        categories,
        timeline,
        answers,
    }
}

fn read_run_row(store: &Store, run_id: i64) -> Result<Option<RunRow>> {
    Ok(store
        .connection()
        .query_row(
            "SELECT id, status, status_reason, started_at, finished_at, model_path, model_name,
                    model_size_bytes, question_count, config_json, engine_json,
                    predicted_peak_bytes, active_ms
             FROM runs WHERE id = ?1",
            params![run_id],
            |r| {
                Ok(RunRow {
                    id: r.get(0)?,
                    status: r.get(1)?,
                    status_reason: r.get(2)?,
                    started_at: r.get(3)?,
                    finished_at: r.get(4)?,
                    model_path: r.get(5)?,
                    model_name: r.get(6)?,
                    model_size_bytes: r.get(7)?,
                    question_count: r.get(8)?,
                    config_json: r.get(9)?,
                    engine_json: r.get(10)?,
                    predicted_peak_bytes: r.get(11)?,
                    active_ms: r.get(12)?,
                })
            },
        )
        .optional()?)
}

fn read_answers(store: &Store, row: &RunRow) -> Result<Vec<AnswerDetail>> {
    let mut statement = store.connection().prepare(
        "SELECT q.question_id, q.ordinal, q.category, q.question, q.reference, q.answer_index,
                q.choices_json, a.status, a.answer, a.error, a.score, a.exact_match, a.f1,
                a.chosen_index, a.prompt_tokens, a.completion_tokens, a.ttft_ms, a.latency_ms,
                a.decode_tok_per_s, a.rss_bytes,
                (julianday(a.finished_at) - julianday(?2)) * 86400.0
         FROM questions q
         LEFT JOIN answers a ON a.run_id = q.run_id AND a.question_id = q.question_id
         WHERE q.run_id = ?1
         ORDER BY q.ordinal",
    )?;
    let rows = statement.query_map(params![row.id, row.started_at], |r| {
        let reference: Option<String> = r.get(4)?;
        let answer_index: Option<i64> = r.get(5)?;
        let choices_json: Option<String> = r.get(6)?;
        let choices: Option<Vec<String>> = choices_json
            .as_deref()
            .and_then(|text| serde_json::from_str(text).ok());
        let (kind, shown) = match (&choices, answer_index) {
            (Some(choices), Some(index)) => (
                QuestionKind::MultipleChoice,
                Some(format!(
                    "{}. {}",
                    index + 1,
                    usize::try_from(index)
                        .ok()
                        .and_then(|i| choices.get(i))
                        .map_or("", String::as_str)
                )),
            ),
            (Some(_), None) => (QuestionKind::Unscored, reference),
            (None, _) if reference.is_some() => (QuestionKind::FreeText, reference),
            (None, _) => (QuestionKind::Unscored, None),
        };
        let status: Option<String> = r.get(7)?;
        Ok(AnswerDetail {
            question_id: r.get(0)?,
            ordinal: r.get(1)?,
            category: r.get(2)?,
            question: r.get(3)?,
            kind,
            reference: shown,
            ok: status.map(|s| s == "ok"),
            answer: r.get(8)?,
            error: r.get(9)?,
            score: r.get(10)?,
            exact_match: r.get(11)?,
            f1: r.get(12)?,
            chosen_index: r.get(13)?,
            prompt_tokens: r.get(14)?,
            completion_tokens: r.get(15)?,
            ttft_ms: r.get(16)?,
            latency_ms: r.get(17)?,
            decode_tok_per_s: r.get(18)?,
            rss_bytes: r.get(19)?,
            finished_s: r.get(20)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn read_timeline(store: &Store, row: &RunRow) -> Result<Vec<MemoryPoint>> {
    let mut statement = store.connection().prepare(
        "SELECT (julianday(at) - julianday(?2)) * 86400.0, MAX(rss_bytes), MAX(ram_used_bytes),
                MAX(ram_total_bytes), MAX(swap_used_bytes), MAX(swap_total_bytes),
                SUM(gpu_used_bytes), SUM(gpu_total_bytes)
         FROM memory_samples WHERE run_id = ?1
         GROUP BY at ORDER BY at",
    )?;
    let rows = statement.query_map(params![row.id, row.started_at], |r| {
        Ok(MemoryPoint {
            t_s: r.get::<_, Option<f64>>(0)?.unwrap_or(0.0),
            rss_bytes: r.get(1)?,
            ram_used_bytes: r.get(2)?,
            ram_total_bytes: r.get(3)?,
            swap_used_bytes: r.get(4)?,
            swap_total_bytes: r.get(5)?,
            gpu_used_bytes: r.get(6)?,
            gpu_total_bytes: r.get(7)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Read and summarise the given runs, in order. A missing run is a usage error naming it.
pub fn load(store: &Store, run_ids: &[i64]) -> Result<Comparison> {
    let mut runs = Vec::with_capacity(run_ids.len());
    for &run_id in run_ids {
        let row = read_run_row(store, run_id)?.ok_or_else(|| {
            Error::Usage(format!(
                "run {run_id} does not exist in {}; `docent-eval compare --db {}` lists every finished run",
                store.path().display(),
                store.path().display()
            ))
        })?;
        let answers = read_answers(store, &row)?;
        let timeline = read_timeline(store, &row)?;
        runs.push(summarize(&row, answers, timeline));
    }
    Ok(Comparison { runs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantization_is_read_from_the_file_name() {
        let cases = [
            ("models/SmolLM2-135M-Instruct.Q4_1.gguf", "Q4_1"),
            ("models/gemma-3-270m-q4_k_m.gguf", "Q4_K_M"),
            ("/m/llama-3-Korean-Bllossom-8B-Q8_0.gguf", "Q8_0"),
            ("Qwen2.5-7B-Instruct-IQ4_XS.gguf", "IQ4_XS"),
            ("model-UD-Q4_K_XL.gguf", "Q4_K_XL"),
            ("phi-3-mini-f16.gguf", "F16"),
            ("x.BF16.gguf", "BF16"),
            ("q4_0_4_4-model.Q4_0_4_4.gguf", "Q4_0_4_4"),
            ("SmolLM2-135M-Instruct.gguf", "unknown"),
            ("Q4 notes.gguf", "unknown"),
        ];
        for (path, expected) in cases {
            assert_eq!(quantization_from_name(path), expected, "{path}");
        }
    }

    #[test]
    fn error_reasons_group_by_text_without_numbers() {
        assert_eq!(
            error_reason("prompt of 734 tokens + --max-tokens 12 exceeds the context of 512 tokens per sequence; raise --ctx"),
            "prompt of N tokens + --max-tokens N exceeds the context of N tokens per sequence; raise --ctx"
        );
        assert_eq!(error_reason("  x 1.5 y  "), "x N y");
    }

    fn detail(id: &str, kind: QuestionKind, ok: Option<bool>) -> AnswerDetail {
        AnswerDetail {
            question_id: id.into(),
            ordinal: 0,
            category: None,
            question: format!("question {id}"),
            kind,
            reference: None,
            ok,
            answer: None,
            error: None,
            score: None,
            exact_match: None,
            f1: None,
            chosen_index: None,
            prompt_tokens: None,
            completion_tokens: None,
            ttft_ms: None,
            latency_ms: None,
            decode_tok_per_s: None,
            rss_bytes: None,
            finished_s: None,
        }
    }

    #[test]
    fn summary_counts_errors_as_wrong_and_groups_categories() {
        use QuestionKind::*;
        let mut answers = Vec::new();
        for (i, (kind, ok, score, exact, f1, category, latency, error)) in [
            (
                MultipleChoice,
                Some(true),
                Some(1.0),
                None,
                None,
                "a",
                100.0,
                None,
            ),
            (
                MultipleChoice,
                Some(true),
                Some(0.0),
                None,
                None,
                "a",
                300.0,
                None,
            ),
            (
                MultipleChoice,
                Some(false),
                None,
                None,
                None,
                "b",
                0.0,
                Some("prompt of 900 tokens too long"),
            ),
            (
                FreeText,
                Some(true),
                Some(1.0),
                Some(true),
                Some(1.0),
                "b",
                200.0,
                None,
            ),
            (
                FreeText,
                Some(true),
                Some(0.0),
                Some(false),
                Some(0.5),
                "b",
                400.0,
                None,
            ),
            (
                FreeText,
                Some(false),
                None,
                None,
                None,
                "a",
                0.0,
                Some("prompt of 1000 tokens too long"),
            ),
            (FreeText, None, None, None, None, "a", 0.0, None),
            (Unscored, Some(true), None, None, None, "b", 500.0, None),
        ]
        .into_iter()
        .enumerate()
        {
            let mut a = detail(&format!("q{i}"), kind, ok);
            a.ordinal = i as i64 + 1;
            a.score = score;
            a.exact_match = exact;
            a.f1 = f1;
            a.category = Some(category.to_string());
            a.error = error.map(str::to_string);
            if ok == Some(true) {
                a.latency_ms = Some(latency);
                a.ttft_ms = Some(latency / 10.0);
                a.completion_tokens = Some(10);
                a.rss_bytes = Some(1000 + i as i64);
            }
            answers.push(a);
        }
        let row = RunRow {
            id: 7,
            status: "interrupted".into(),
            model_path: "models/m.Q8_0.gguf".into(),
            model_name: "m.Q8_0".into(),
            question_count: 8,
            config_json: r#"{"max_tokens":12,"temperature":0.0,"top_p":1.0,"seed":42,"system_prompt":null}"#.into(),
            engine_json: Some(r#"{"model":{"architecture":"llama","n_params":135,"gpu_layers":0},"session":{"sequences":2,"ctx_per_sequence":512,"threads":2},"execution":{"parallel":2}}"#.into()),
            active_ms: 2000,
            ..Default::default()
        };
        let timeline = vec![MemoryPoint {
            t_s: 1.0,
            rss_bytes: Some(5000),
            ram_used_bytes: Some(9000),
            ram_total_bytes: Some(10000),
            swap_used_bytes: Some(0),
            swap_total_bytes: Some(0),
            gpu_used_bytes: None,
            gpu_total_bytes: None,
        }];
        let report = summarize(&row, answers, timeline);
        assert_eq!((report.questions_done, report.ok, report.errors), (7, 5, 2));
        assert_eq!(report.success_rate, Some(5.0 / 8.0));
        let mc = report.mc_accuracy.unwrap();
        assert_eq!((mc.successes, mc.n), (1, 3));
        let free = report.free_text_accuracy.unwrap();
        assert_eq!((free.successes, free.n), (1, 3));
        let exact = report.exact_match.unwrap();
        assert_eq!((exact.successes, exact.n), (1, 3));
        assert!((report.mean_f1.unwrap() - 0.5).abs() < 1e-12);
        let latency = report.latency_ms.unwrap();
        assert_eq!((latency.n, latency.p50, latency.max), (5, 300.0, 500.0));
        assert_eq!(report.completion_tokens, 50);
        assert_eq!(report.throughput_tok_per_s, Some(25.0));
        assert_eq!(report.questions_per_hour, Some(7.0 * 1800.0));
        assert_eq!(report.memory.peak_rss_bytes, Some(5000));
        assert_eq!(report.memory.peak_gpu_used_bytes, None);
        assert_eq!(report.model.quantization, "Q8_0");
        assert_eq!(report.settings.parallel, Some(2));
        assert_eq!(report.settings.ctx, Some(512));
        assert_eq!(
            report.errors_by_reason,
            vec![ErrorReason {
                reason: "prompt of N tokens too long".into(),
                count: 2,
                example: "prompt of 900 tokens too long".into()
            }]
        );
        let names: Vec<&str> = report
            .categories
            .iter()
            .map(|c| c.category.as_str())
            .collect();
        assert_eq!(names, ["a", "b"]);
        let a = &report.categories[0];
        assert_eq!((a.total, a.done, a.ok), (4, 3, 2));
        let pooled = a.accuracy.unwrap();
        assert_eq!((pooled.successes, pooled.n), (1, 3));
        assert_eq!(a.mean_latency_ms, Some(200.0));
    }
}
