//! What a report shows, as plain data. Every aggregate figure is read from the `run_summary` and
//! `category_summary` views (their one definition); answers and memory samples feed tables and charts.

use super::stats::{Rate, Spread};
use crate::error::{usage, Result};
use crate::record::TokenizerCheck;
use crate::store::{CategorySummary, QuestionAnswer, RunDetails, RunSummary, Store};
pub use crate::store::{MergedRunSummary, ShardSummary};
use regex::Regex;
use serde::Serialize;
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
    /// Multiple choice by log-likelihood: the choice of highest log-probability is correct.
    pub loglik_acc: Option<Rate>,
    /// The same per character of the choice's continuation (lm-evaluation-harness's acc_norm).
    pub loglik_acc_norm: Option<Rate>,
    /// The accuracy of guessing: mean of 1 / choices over the questions scored.
    pub loglik_chance: Option<f64>,
    /// Generated answers that chose what log-likelihood chose (`--mc-scoring both`).
    pub generated_loglik_agreement: Option<f64>,
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
    /// How the question file was read and prompted (absent for the built-in format).
    #[serde(skip_serializing_if = "QuestionFormat::is_builtin")]
    pub question_format: QuestionFormat,
    /// The GGUF's tokenizer against the original model's (`run --hf-tokenizer`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokenizer_check: Option<TokenizerCheck>,
    /// Memory samples over time (HTML charts only).
    #[serde(skip)]
    pub timeline: Vec<MemoryPoint>,
    /// The run's shard (`shard 2/4 by id`) or split (`merged from 4 shards by id`); absent for
    /// a run of the whole set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    /// A merged run: each shard's questions, answers, hosts, wall time and throughput.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<ShardSummary>,
    /// A merged run: shards merged and the elapsed time across them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merged: Option<MergedRunSummary>,
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

/// The column mapping, prompt template and choice label of a run (all part of its identity).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QuestionFormat {
    /// The mapping's canonical text (`--map`).
    pub mapping: Option<String>,
    /// sha256 of the prompt template (`--template`).
    pub template_sha256: Option<String>,
    /// The template text.
    pub template: Option<String>,
    /// The label letter scoring scores (`--mc-label`).
    pub mc_label: Option<String>,
}

impl QuestionFormat {
    /// Whether the run used the built-in question format and wording.
    pub fn is_builtin(&self) -> bool {
        *self == QuestionFormat::default()
    }

    /// One line for people: `mapping … · template sha256 … · label …`, or `built-in`.
    pub fn text(&self) -> String {
        let mut parts = Vec::new();
        if let Some(mapping) = &self.mapping {
            parts.push(format!("mapping {mapping}"));
        }
        if let (Some(hash), Some(text)) = (&self.template_sha256, &self.template) {
            parts.push(format!(
                "template sha256 {} {text:?}",
                hash.get(..12).unwrap_or(hash)
            ));
        }
        if let Some(label) = &self.mc_label {
            parts.push(format!("choice label {label}"));
        }
        if parts.is_empty() {
            return "built-in".into();
        }
        parts.join(" · ")
    }
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
    /// Log-likelihood `acc` (absent without log-likelihood scores).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loglik_acc: Option<Rate>,
    /// Log-likelihood `acc_norm`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loglik_acc_norm: Option<Rate>,
    /// What guessing scores on those questions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loglik_chance: Option<f64>,
}

/// A question of a run with its answer row (if committed), as the store reads it.
pub type AnswerDetail = QuestionAnswer;

pub use crate::store::MemoryPoint;

/// The reference as a report shows it: `2. 세종` for multiple choice (the correct option's
/// number and text), the reference text otherwise.
pub fn shown_reference(a: &AnswerDetail) -> Option<String> {
    match (&a.choices, a.answer_index) {
        (Some(choices), Some(index)) => Some(format!(
            "{}. {}",
            index + 1,
            usize::try_from(index)
                .ok()
                .and_then(|i| choices.get(i))
                .map_or("", String::as_str)
        )),
        _ => a.reference.clone(),
    }
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

fn settings_from(run: &RunDetails) -> Settings {
    let config = run.settings.as_ref();
    let engine = run.engine.as_ref();
    Settings {
        max_tokens: config.map(|c| u64::from(c.max_tokens)),
        temperature: config.map(|c| f64::from(c.temperature)),
        top_p: config.map(|c| f64::from(c.top_p)),
        seed: config.map(|c| u64::from(c.seed)),
        ctx: engine
            .map(|e| u64::from(e.session.ctx_per_sequence))
            .or_else(|| config.and_then(|c| c.ctx).map(u64::from)),
        parallel: engine.map(|e| u64::from(e.execution.parallel)),
        gpu_layers: engine.map(|e| u64::from(e.model.gpu_layers)),
        threads: engine.map(|e| u64::from(e.session.threads)),
        system_prompt: config
            .and_then(|c| c.system_prompt.as_deref())
            .is_some_and(|s| !s.is_empty()),
    }
}

fn question_format(run: &RunDetails) -> QuestionFormat {
    let Some(config) = run.settings.as_ref() else {
        return QuestionFormat::default();
    };
    QuestionFormat {
        mapping: config.mapping.as_ref().map(ToString::to_string),
        template_sha256: config.template.as_ref().map(|t| t.sha256.clone()),
        template: config.template.as_ref().map(|t| t.text.clone()),
        mc_label: config.mc_label.clone(),
    }
}

fn model_from(run: &RunDetails) -> ModelSummary {
    let model = run.engine.as_ref().map(|e| &e.model);
    ModelSummary {
        name: run.model_name.clone(),
        path: run.model_path.clone(),
        quantization: quantization_from_name(&run.model_path),
        size_bytes: run.model_size_bytes,
        architecture: model
            .map(|m| m.architecture.clone())
            .filter(|a| !a.is_empty()),
        parameters: model.map(|m| m.n_params),
    }
}

/// A rate from a view's counts (`None` when nothing was graded).
fn rate(successes: i64, n: i64) -> Option<Rate> {
    Rate::new(successes.max(0) as u64, n.max(0) as u64)
}

/// Mean, p50, p95 and max as the view computed them, over `n` ok rows.
fn spread(
    n: i64,
    mean: Option<f64>,
    p50: Option<f64>,
    p95: Option<f64>,
    max: Option<f64>,
) -> Option<Spread> {
    Some(Spread {
        n: usize::try_from(n).ok().filter(|&n| n > 0)?,
        mean: mean?,
        p50: p50?,
        p95: p95?,
        max: max?,
    })
}

/// Error rows grouped by their text with numbers replaced, most frequent first (ties keep
/// question order).
fn errors_by_reason(answers: &[AnswerDetail]) -> Vec<ErrorReason> {
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
    reasons.sort_by_key(|r| std::cmp::Reverse(r.count));
    reasons
}

fn category(c: &CategorySummary) -> CategoryReport {
    CategoryReport {
        category: c.category.clone(),
        total: c.total,
        done: c.done,
        ok: c.ok,
        accuracy: rate(c.correct, c.graded),
        mc_accuracy: rate(c.mc_correct, c.mc_graded),
        free_text_accuracy: rate(c.free_correct, c.free_graded),
        exact_match: rate(c.exact_matches, c.free_graded),
        mean_f1: c.mean_f1,
        mean_latency_ms: c.mean_latency_ms,
        loglik_acc: rate(c.loglik_acc_correct, c.loglik_scored),
        loglik_acc_norm: rate(c.loglik_acc_norm_correct, c.loglik_scored),
        loglik_chance: c.loglik_chance,
    }
}

fn memory(s: &RunSummary) -> MemoryPeaks {
    MemoryPeaks {
        samples: usize::try_from(s.memory_samples).unwrap_or(0),
        peak_rss_bytes: s.peak_rss_bytes,
        peak_ram_used_bytes: s.peak_ram_used_bytes,
        ram_total_bytes: s.ram_total_bytes,
        peak_swap_used_bytes: s.peak_swap_used_bytes,
        swap_total_bytes: s.swap_total_bytes,
        peak_gpu_used_bytes: s.peak_gpu_used_bytes,
        gpu_total_bytes: s.gpu_total_bytes,
        predicted_peak_bytes: s.predicted_peak_bytes,
    }
}

/// Put one run's report together. Every aggregate comes from the run's `run_summary` and
/// `category_summary` rows (the one definition of each figure); the answers and the memory
/// timeline only feed the tables and charts.
pub fn summarize(
    run: &RunDetails,
    summary: &RunSummary,
    categories: &[CategorySummary],
    answers: Vec<AnswerDetail>,
    timeline: Vec<MemoryPoint>,
) -> RunReport {
    let s = summary;
    // Categories only when the questions carry one.
    let categories = if answers.iter().any(|a| a.category.is_some()) {
        categories.iter().map(category).collect()
    } else {
        Vec::new()
    };
    RunReport {
        run_id: run.id,
        status: run.status.to_string(),
        status_reason: run.status_reason.clone(),
        started_at: run.started_at.clone(),
        finished_at: run.finished_at.clone(),
        model: model_from(run),
        settings: settings_from(run),
        questions_total: s.total,
        questions_done: s.done,
        ok: s.ok,
        errors: s.errors,
        success_rate: s.success_rate,
        mc_accuracy: rate(s.mc_correct, s.mc_graded),
        free_text_accuracy: rate(s.free_correct, s.free_graded),
        exact_match: rate(s.exact_matches, s.free_graded),
        loglik_acc: rate(s.loglik_acc_correct, s.loglik_scored),
        loglik_acc_norm: rate(s.loglik_acc_norm_correct, s.loglik_scored),
        loglik_chance: s.loglik_chance,
        generated_loglik_agreement: s.generated_loglik_agreement,
        mean_f1: s.mean_f1,
        latency_ms: spread(
            s.ok,
            s.mean_latency_ms,
            s.p50_latency_ms,
            s.p95_latency_ms,
            s.max_latency_ms,
        ),
        ttft_ms: spread(
            s.ok,
            s.mean_ttft_ms,
            s.p50_ttft_ms,
            s.p95_ttft_ms,
            s.max_ttft_ms,
        ),
        decode_tok_per_s: s.mean_decode_tok_per_s,
        throughput_tok_per_s: s.throughput_tok_per_s,
        prompt_tokens: s.prompt_tokens,
        completion_tokens: s.completion_tokens,
        wall_time_s: s.wall_time_s,
        questions_per_hour: s.questions_per_hour,
        memory: memory(s),
        errors_by_reason: errors_by_reason(&answers),
        categories,
        question_format: question_format(run),
        tokenizer_check: run.tokenizer_check.clone(),
        shard: run
            .settings
            .as_ref()
            .and_then(|c| c.shard.as_ref())
            .map(|shard| shard.label()),
        shards: Vec::new(),
        merged: None,
        timeline,
        answers,
    }
}

/// Read and summarise the given runs, in order. A missing run is a usage error naming it.
pub fn load(store: &Store, run_ids: &[i64]) -> Result<Comparison> {
    let mut runs = Vec::with_capacity(run_ids.len());
    for &run_id in run_ids {
        let missing = || {
            usage(format!(
                "run {run_id} does not exist in {}; `docent-eval compare --db {}` lists every finished run",
                store.path().display(),
                store.path().display()
            ))
        };
        let run = store.run_details(run_id)?.ok_or_else(missing)?;
        let summary = store.run_summary(run_id)?.ok_or_else(missing)?;
        let categories = store.category_summaries(run_id)?;
        let answers = store.question_answers(run_id)?;
        let timeline = store.memory_timeline(run_id)?;
        let mut report = summarize(&run, &summary, &categories, answers, timeline);
        report.shards = store.shard_summaries(run_id)?;
        report.merged = store.merged_run_summary(run_id)?;
        runs.push(report);
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
}
