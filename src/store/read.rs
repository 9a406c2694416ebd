//! Reads: typed rows for resume, status, reports and rescoring. Every value is a bound
//! parameter; no statement is built from user input.

use super::{RunRecord, RunStatus, Store};
use crate::config::GenerationSettings;
use crate::dataset::Question;
use crate::error::{usage, Result};
use crate::record::{EngineRecord, TokenizerCheck};
use rusqlite::{params, OptionalExtension, Row};
use serde::Serialize;
use std::collections::HashSet;

impl Store {
    /// A run by id.
    pub fn run(&self, run_id: i64) -> Result<Option<RunRecord>> {
        self.query_run("SELECT id, status, model_path, model_sha256, questions_path, questions_sha256, config_json, question_count, holder_pid, holder_started_at FROM runs WHERE id = ?1", params![run_id])
    }

    /// The most recent run that is not finished.
    pub fn latest_unfinished_run(&self) -> Result<Option<RunRecord>> {
        self.query_run("SELECT id, status, model_path, model_sha256, questions_path, questions_sha256, config_json, question_count, holder_pid, holder_started_at FROM runs WHERE status != 'finished' ORDER BY id DESC LIMIT 1", [])
    }

    /// The most recent run of any status.
    pub fn latest_run(&self) -> Result<Option<RunRecord>> {
        self.query_run("SELECT id, status, model_path, model_sha256, questions_path, questions_sha256, config_json, question_count, holder_pid, holder_started_at FROM runs ORDER BY id DESC LIMIT 1", [])
    }

    fn query_run(&self, sql: &str, params: impl rusqlite::Params) -> Result<Option<RunRecord>> {
        Ok(self
            .connection
            .query_row(sql, params, |row| {
                Ok(RunRecord {
                    id: row.get(0)?,
                    status: row.get(1)?,
                    model_path: row.get(2)?,
                    model_sha256: row.get(3)?,
                    questions_path: row.get(4)?,
                    questions_sha256: row.get(5)?,
                    settings: row
                        .get::<_, String>(6)
                        .ok()
                        .and_then(|text| serde_json::from_str(&text).ok()),
                    question_count: row.get(7)?,
                    holder_pid: row.get(8)?,
                    holder_started_at: row.get(9)?,
                })
            })
            .optional()?)
    }

    /// Ids of the questions of a run that already have a committed answer row.
    pub fn answered_question_ids(&self, run_id: i64) -> Result<HashSet<String>> {
        let mut statement = self
            .connection
            .prepare("SELECT question_id FROM answers WHERE run_id = ?1")?;
        let ids = statement
            .query_map(params![run_id], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(ids)
    }

    /// Questions of a run whose choices are scored by log-likelihood (all in one transaction,
    /// so one row means all of them).
    pub fn choice_scored_question_ids(&self, run_id: i64) -> Result<HashSet<String>> {
        let mut statement = self
            .connection
            .prepare("SELECT DISTINCT question_id FROM choice_scores WHERE run_id = ?1")?;
        let ids = statement
            .query_map(params![run_id], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(ids)
    }

    /// `--run-id` if that run exists, else the most recent run; a usage error naming the
    /// database otherwise.
    pub fn pick_run(&self, run_id: Option<i64>) -> Result<i64> {
        let db = self.path.display();
        match run_id {
            Some(id) => self.run(id)?.map(|r| r.id).ok_or_else(|| {
                usage(format!(
                    "--run-id {id}: no such run in {db}; `docent-eval status --db {db}` shows the latest"
                ))
            }),
            None => self.latest_run()?.map(|r| r.id).ok_or_else(|| {
                usage(format!(
                    "{db} holds no runs yet; start one with `docent-eval run --db {db}`"
                ))
            }),
        }
    }

    /// Answer rows of a run: (all, of which `error`).
    pub fn answer_counts(&self, run_id: i64) -> Result<(i64, i64)> {
        Ok(self.connection.query_row(
            "SELECT COUNT(*), COALESCE(SUM(status = 'error'), 0) FROM answers WHERE run_id = ?1",
            [run_id],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?)
    }

    /// Ids of every run, or of the finished ones, oldest first.
    pub fn run_ids(&self, finished_only: bool) -> Result<Vec<i64>> {
        let mut statement = self
            .connection
            .prepare("SELECT id FROM runs WHERE (?1 = 0 OR status = 'finished') ORDER BY id")?;
        let ids = statement
            .query_map([finished_only], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(ids)
    }

    /// A run's `run_summary` row: every aggregate figure, as defined once in sql/views.sql.
    pub fn run_summary(&self, run_id: i64) -> Result<Option<RunSummary>> {
        Ok(self
            .connection
            .query_row(
                "SELECT * FROM run_summary WHERE run_id = ?1",
                [run_id],
                RunSummary::from_row,
            )
            .optional()?)
    }

    /// A run's `category_summary` rows, in the order of each category's first question.
    pub fn category_summaries(&self, run_id: i64) -> Result<Vec<CategorySummary>> {
        let mut statement = self
            .connection
            .prepare("SELECT * FROM category_summary WHERE run_id = ?1 ORDER BY first_ordinal")?;
        let rows = statement
            .query_map([run_id], CategorySummary::from_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// What a report says about a run beyond its summary: reason, settings, engine record.
    pub fn run_details(&self, run_id: i64) -> Result<Option<RunDetails>> {
        Ok(self
            .connection
            .query_row(
                "SELECT id, status, status_reason, started_at, finished_at, model_path, model_name,
                        model_size_bytes, question_count, config_json, engine_json, updated_at,
                        holder_pid, holder_started_at, sessions, tokenizer_check_json
                 FROM runs WHERE id = ?1",
                params![run_id],
                |r| {
                    Ok(RunDetails {
                        id: r.get(0)?,
                        status: r.get(1)?,
                        status_reason: r.get(2)?,
                        started_at: r.get(3)?,
                        finished_at: r.get(4)?,
                        model_path: r.get(5)?,
                        model_name: r.get(6)?,
                        model_size_bytes: r.get(7)?,
                        question_count: r.get(8)?,
                        settings: r
                            .get::<_, String>(9)
                            .ok()
                            .and_then(|text| serde_json::from_str(&text).ok()),
                        engine: r
                            .get::<_, Option<String>>(10)?
                            .and_then(|text| serde_json::from_str(&text).ok()),
                        updated_at: r.get(11)?,
                        holder_pid: r.get(12)?,
                        holder_started_at: r.get(13)?,
                        sessions: r.get(14)?,
                        tokenizer_check: r
                            .get::<_, Option<String>>(15)?
                            .and_then(|text| serde_json::from_str(&text).ok()),
                    })
                },
            )
            .optional()?)
    }

    /// Every question of a run with its answer row (if committed), in question-file order.
    /// `finished_s` counts from the run's start.
    pub fn question_answers(&self, run_id: i64) -> Result<Vec<QuestionAnswer>> {
        let mut statement = self.connection.prepare(
            "SELECT q.question_id, q.ordinal, q.category, q.question, q.reference, q.answer_index,
                    q.choices_json, a.status, a.answer, a.error, a.score, a.exact_match, a.f1,
                    a.chosen_index, a.prompt_tokens, a.completion_tokens, a.ttft_ms, a.latency_ms,
                    a.decode_tok_per_s, a.rss_bytes,
                    (julianday(a.finished_at) - julianday(r.started_at)) * 86400.0
             FROM questions q
             JOIN runs r ON r.id = q.run_id
             LEFT JOIN answers a ON a.run_id = q.run_id AND a.question_id = q.question_id
             WHERE q.run_id = ?1
             ORDER BY q.ordinal",
        )?;
        let rows = statement.query_map(params![run_id], |r| {
            let choices_json: Option<String> = r.get(6)?;
            let status: Option<String> = r.get(7)?;
            Ok(QuestionAnswer {
                question_id: r.get(0)?,
                ordinal: r.get(1)?,
                category: r.get(2)?,
                question: r.get(3)?,
                reference: r.get(4)?,
                answer_index: r.get(5)?,
                choices: choices_json.and_then(|text| serde_json::from_str(&text).ok()),
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

    /// A run's memory over time (`memory_by_time`: GPUs summed per sample), seconds from its start.
    pub fn memory_timeline(&self, run_id: i64) -> Result<Vec<MemoryPoint>> {
        let mut statement = self.connection.prepare(
            "SELECT (julianday(m.at) - julianday(r.started_at)) * 86400.0, m.at, m.rss_bytes,
                    m.ram_used_bytes, m.ram_total_bytes, m.swap_used_bytes, m.swap_total_bytes,
                    m.gpu_used_bytes, m.gpu_total_bytes
             FROM memory_by_time m JOIN runs r ON r.id = m.run_id
             WHERE m.run_id = ?1 ORDER BY m.at",
        )?;
        let rows = statement.query_map(params![run_id], MemoryPoint::from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The last memory sample of a run (GPUs summed), if any.
    pub fn last_memory_sample(&self, run_id: i64) -> Result<Option<MemoryPoint>> {
        Ok(self
            .connection
            .query_row(
                "SELECT (julianday(m.at) - julianday(r.started_at)) * 86400.0, m.at, m.rss_bytes,
                        m.ram_used_bytes, m.ram_total_bytes, m.swap_used_bytes, m.swap_total_bytes,
                        m.gpu_used_bytes, m.gpu_total_bytes
                 FROM memory_by_time m JOIN runs r ON r.id = m.run_id
                 WHERE m.run_id = ?1 ORDER BY m.at DESC LIMIT 1",
                params![run_id],
                MemoryPoint::from_row,
            )
            .optional()?)
    }

    /// The last `error` row of a run: question id and message.
    pub fn last_error(&self, run_id: i64) -> Result<Option<(String, String)>> {
        Ok(self
            .connection
            .query_row(
                "SELECT question_id, error FROM answers WHERE run_id = ?1 AND status = 'error'
                 ORDER BY id DESC LIMIT 1",
                [run_id],
                |row| {
                    Ok((
                        row.get(0)?,
                        row.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    ))
                },
            )
            .optional()?)
    }

    /// Answers finished in the last `window_minutes`, and the minutes they actually cover (from
    /// the earliest of their queue times, so a run that began a minute ago is not averaged over
    /// the whole window).
    pub fn recent_answers(&self, run_id: i64, window_minutes: f64) -> Result<(i64, Option<f64>)> {
        let window = format!("-{window_minutes} minutes");
        Ok(self.connection.query_row(
            "SELECT COUNT(*), (julianday('now') - julianday(MIN(queued_at))) * 1440.0
             FROM answers
             WHERE run_id = ?1 AND finished_at >= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?2)",
            params![run_id, window],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?)
    }

    /// The `ok` answers of a run with their questions and stored scores, for rescoring.
    pub fn scored_answers(&self, run_id: i64) -> Result<Vec<ScoredAnswer>> {
        let mut select = self.connection.prepare(
            "SELECT a.id, q.question_id, q.ordinal, q.question, q.reference, q.answer_index,
                    q.choices_json, q.category, q.context, a.answer,
                    a.score, a.exact_match, a.f1, a.chosen_index
             FROM answers a
             JOIN questions q ON q.run_id = a.run_id AND q.question_id = a.question_id
             WHERE a.run_id = ?1 AND a.status = 'ok'
             ORDER BY q.ordinal",
        )?;
        let rows = select.query_map(params![run_id], |r| {
            let choices_json: Option<String> = r.get(6)?;
            let answer_index: Option<i64> = r.get(5)?;
            let answer: Option<String> = r.get(9)?;
            Ok(ScoredAnswer {
                answer_row_id: r.get(0)?,
                question: Question {
                    id: r.get(1)?,
                    ordinal: usize::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                    line: 0,
                    question: r.get(3)?,
                    reference: r.get(4)?,
                    choices: choices_json.and_then(|text| serde_json::from_str(&text).ok()),
                    answer_index: answer_index.and_then(|i| usize::try_from(i).ok()),
                    category: r.get(7)?,
                    context: r.get(8)?,
                    extra: Default::default(),
                },
                answer: answer.unwrap_or_default(),
                stored: StoredScores {
                    score: r.get(10)?,
                    exact_match: r.get(11)?,
                    f1: r.get(12)?,
                    chosen_index: r.get(13)?,
                },
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

/// The `runs` row fields a report or `status` needs besides the summary.
#[derive(Debug, Clone)]
pub struct RunDetails {
    /// Run id.
    pub id: i64,
    /// Lifecycle status.
    pub status: RunStatus,
    /// Why a run is interrupted or failed.
    pub status_reason: Option<String>,
    /// Created.
    pub started_at: String,
    /// Finished.
    pub finished_at: Option<String>,
    /// Model path as given to `run`.
    pub model_path: String,
    /// Model short name.
    pub model_name: String,
    /// Model file size.
    pub model_size_bytes: i64,
    /// Questions in the run.
    pub question_count: i64,
    /// The generation settings (`None` if `config_json` is unreadable).
    pub settings: Option<GenerationSettings>,
    /// What the engine chose in the last session (`None` before the model loaded).
    pub engine: Option<EngineRecord>,
    /// Last heartbeat of the holder.
    pub updated_at: String,
    /// Recorded holder process.
    pub holder_pid: Option<i64>,
    /// Its start time.
    pub holder_started_at: Option<String>,
    /// Sessions (start + resumes).
    pub sessions: i64,
    /// The last tokenizer check (`run --hf-tokenizer`), if any.
    pub tokenizer_check: Option<TokenizerCheck>,
}

/// A question of a run with its answer row, if committed.
#[derive(Debug, Clone, Default)]
pub struct QuestionAnswer {
    /// Question id.
    pub question_id: String,
    /// 1-based position in the question file.
    pub ordinal: i64,
    /// Category.
    pub category: Option<String>,
    /// Question text.
    pub question: String,
    /// Reference answer text.
    pub reference: Option<String>,
    /// 0-based correct choice.
    pub answer_index: Option<i64>,
    /// Choices, multiple choice only.
    pub choices: Option<Vec<String>>,
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
    /// Time to first token, ms.
    pub ttft_ms: Option<f64>,
    /// Latency, ms.
    pub latency_ms: Option<f64>,
    /// Decode speed.
    pub decode_tok_per_s: Option<f64>,
    /// RSS when committed.
    pub rss_bytes: Option<i64>,
    /// When generation ended, seconds since the run started.
    pub finished_s: Option<f64>,
}

/// One memory sample time of a run, GPUs summed (`memory_by_time`).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct MemoryPoint {
    /// Seconds since the run started.
    pub t_s: f64,
    /// Sample time.
    pub at: String,
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
    /// GPU memory in use, summed over GPUs (`None` without NVML).
    pub gpu_used_bytes: Option<i64>,
    /// GPU memory, summed over GPUs.
    pub gpu_total_bytes: Option<i64>,
}

impl MemoryPoint {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<MemoryPoint> {
        Ok(MemoryPoint {
            t_s: r.get::<_, Option<f64>>(0)?.unwrap_or(0.0),
            at: r.get(1)?,
            rss_bytes: r.get(2)?,
            ram_used_bytes: r.get(3)?,
            ram_total_bytes: r.get(4)?,
            swap_used_bytes: r.get(5)?,
            swap_total_bytes: r.get(6)?,
            gpu_used_bytes: r.get(7)?,
            gpu_total_bytes: r.get(8)?,
        })
    }
}

/// Scores as stored on an answer row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoredScores {
    /// 1/0.
    pub score: Option<f64>,
    /// Short-answer exact match.
    pub exact_match: Option<bool>,
    /// Short-answer character F1.
    pub f1: Option<f64>,
    /// Extracted choice.
    pub chosen_index: Option<i64>,
}

/// An `ok` answer with its question, to be scored again.
#[derive(Debug, Clone)]
pub struct ScoredAnswer {
    /// `answers.id`.
    pub answer_row_id: i64,
    /// The question as stored.
    pub question: Question,
    /// The generated text.
    pub answer: String,
    /// Its scores as stored.
    pub stored: StoredScores,
}

/// Declares a struct whose fields are columns of a view read by name, so a renamed or missing
/// column is an error at the first read, and the struct and the view cannot drift apart silently.
macro_rules! view_row {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Serialize)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
        }

        impl $name {
            /// The view's column names this struct reads.
            pub const COLUMNS: &'static [&'static str] = &[$(stringify!($field)),*];

            fn from_row(row: &Row<'_>) -> rusqlite::Result<$name> {
                Ok($name { $($field: row.get(stringify!($field))?,)* })
            }
        }
    };
}

view_row! {
    /// One `run_summary` row (sql/views.sql defines each figure; docs/metrics.md in words).
    RunSummary {
        /// Run id.
        run_id: i64,
        /// Lifecycle status.
        status: RunStatus,
        /// Model short name.
        model_name: String,
        /// Questions in the run.
        total: i64,
        /// Answer rows (ok + error).
        done: i64,
        /// `ok` rows.
        ok: i64,
        /// `error` rows.
        errors: i64,
        /// ok / total.
        success_rate: Option<f64>,
        /// Answered questions with a reference.
        graded: i64,
        /// Of those, correct.
        correct: i64,
        /// correct / graded.
        accuracy: Option<f64>,
        /// Graded multiple-choice questions.
        mc_graded: i64,
        /// Of those, correct.
        mc_correct: i64,
        /// mc_correct / mc_graded.
        mc_accuracy: Option<f64>,
        /// Graded short-answer questions.
        free_graded: i64,
        /// Of those, correct (reference contained).
        free_correct: i64,
        /// free_correct / free_graded.
        free_text_accuracy: Option<f64>,
        /// Graded short answers matching exactly.
        exact_matches: i64,
        /// exact_matches / free_graded.
        exact_match_rate: Option<f64>,
        /// Mean character F1 over graded short answers (error = 0).
        mean_f1: Option<f64>,
        /// Multiple-choice questions with a key scored by log-likelihood.
        loglik_scored: i64,
        /// Of those, the choice of highest log-probability is correct (acc).
        loglik_acc_correct: i64,
        /// Of those, the highest log-probability per character is correct (acc_norm).
        loglik_acc_norm_correct: i64,
        /// loglik_acc_correct / loglik_scored.
        loglik_acc: Option<f64>,
        /// loglik_acc_norm_correct / loglik_scored.
        loglik_acc_norm: Option<f64>,
        /// Mean of 1 / choices over the scored questions.
        loglik_chance: Option<f64>,
        /// Share of generated answers choosing what acc chose (`--mc-scoring both`).
        generated_loglik_agreement: Option<f64>,
        /// Latency of ok rows: mean, nearest-rank p50 and p95, max (ms).
        mean_latency_ms: Option<f64>,
        /// p50.
        p50_latency_ms: Option<f64>,
        /// p95.
        p95_latency_ms: Option<f64>,
        /// Max.
        max_latency_ms: Option<f64>,
        /// Time to first token of ok rows: mean, p50, p95, max (ms).
        mean_ttft_ms: Option<f64>,
        /// p50.
        p50_ttft_ms: Option<f64>,
        /// p95.
        p95_ttft_ms: Option<f64>,
        /// Max.
        max_ttft_ms: Option<f64>,
        /// Mean decode speed of one sequence.
        mean_decode_tok_per_s: Option<f64>,
        /// Generated tokens per second of generation time, all sequences.
        throughput_tok_per_s: Option<f64>,
        /// Answer rows per hour of generation time.
        questions_per_hour: Option<f64>,
        /// Prompt tokens of all answers.
        prompt_tokens: i64,
        /// Of those, reused from a shared prefix.
        prompt_tokens_reused: i64,
        /// Generated tokens of all answers.
        completion_tokens: i64,
        /// Memory sample times.
        memory_samples: i64,
        /// Peak RSS over samples and answer rows.
        peak_rss_bytes: Option<i64>,
        /// Peak host RAM in use.
        peak_ram_used_bytes: Option<i64>,
        /// Host RAM.
        ram_total_bytes: Option<i64>,
        /// Peak swap in use.
        peak_swap_used_bytes: Option<i64>,
        /// Swap size.
        swap_total_bytes: Option<i64>,
        /// Peak GPU memory, summed over GPUs per sample.
        peak_gpu_used_bytes: Option<i64>,
        /// GPU memory, summed over GPUs.
        gpu_total_bytes: Option<i64>,
        /// Preflight's predicted peak RSS.
        predicted_peak_bytes: Option<i64>,
        /// (predicted - measured) / measured RSS, percent.
        rss_prediction_error_pct: Option<f64>,
        /// Preflight's predicted GPU memory.
        predicted_gpu_bytes: Option<i64>,
        /// (predicted - measured) / measured GPU memory, percent.
        gpu_prediction_error_pct: Option<f64>,
        /// Generation wall time over all sessions, s.
        wall_time_s: Option<f64>,
        /// Sessions (start + resumes).
        sessions: i64,
    }
}

view_row! {
    /// One `category_summary` row: run_summary's definitions restricted to one category.
    CategorySummary {
        /// Run id.
        run_id: i64,
        /// Category (`(none)` for questions without one).
        category: String,
        /// Ordinal of its first question.
        first_ordinal: i64,
        /// Questions.
        total: i64,
        /// Answered (ok or error).
        done: i64,
        /// `ok` rows.
        ok: i64,
        /// `error` rows.
        errors: i64,
        /// Answered questions with a reference.
        graded: i64,
        /// Of those, correct.
        correct: i64,
        /// correct / graded.
        accuracy: Option<f64>,
        /// Graded multiple-choice questions.
        mc_graded: i64,
        /// Of those, correct.
        mc_correct: i64,
        /// mc_correct / mc_graded.
        mc_accuracy: Option<f64>,
        /// Graded short-answer questions.
        free_graded: i64,
        /// Of those, correct.
        free_correct: i64,
        /// free_correct / free_graded.
        free_text_accuracy: Option<f64>,
        /// Exact matches.
        exact_matches: i64,
        /// exact_matches / free_graded.
        exact_match_rate: Option<f64>,
        /// Mean character F1 over graded short answers.
        mean_f1: Option<f64>,
        /// Mean latency of ok rows, ms.
        mean_latency_ms: Option<f64>,
        /// Mean TTFT of ok rows, ms.
        mean_ttft_ms: Option<f64>,
        /// Questions scored by log-likelihood with a known answer.
        loglik_scored: i64,
        /// Of those, correct by `acc`.
        loglik_acc_correct: i64,
        /// Of those, correct by `acc_norm`.
        loglik_acc_norm_correct: i64,
        /// Mean of 1 / choices over them: what guessing scores.
        loglik_chance: Option<f64>,
    }
}

view_row! {
    /// One `shard_summary` row: a shard of a merged run (sql/views.sql).
    ShardSummary {
        /// The merged run.
        run_id: i64,
        /// 0-based shard.
        shard_index: u32,
        /// Questions in the shard.
        questions: i64,
        /// Answer rows.
        done: i64,
        /// `ok` rows.
        ok: i64,
        /// `error` rows.
        errors: i64,
        /// Shard runs merged for it.
        parts: i64,
        /// Hosts it ran on, comma-separated.
        hosts: Option<String>,
        /// Sessions of its runs.
        sessions: i64,
        /// Its generation time, all sessions (s).
        wall_time_s: Option<f64>,
        /// Completion tokens per second of that time.
        throughput_tok_per_s: Option<f64>,
        /// Answers per hour of that time.
        questions_per_hour: Option<f64>,
        /// First start.
        started_at: Option<String>,
        /// Last finish.
        finished_at: Option<String>,
    }
}

view_row! {
    /// One `merged_runs` row: how a merged run's shards add up (sql/views.sql).
    MergedRunSummary {
        /// The merged run.
        run_id: i64,
        /// Shards in the split.
        shard_count: Option<i64>,
        /// What the split is by.
        shard_key: Option<String>,
        /// Shards with at least one run merged.
        shards_merged: i64,
        /// Shard runs merged.
        parts: i64,
        /// First shard start to last shard finish (s).
        elapsed_s: Option<f64>,
        /// Answers per hour of that elapsed time.
        questions_per_hour_elapsed: Option<f64>,
    }
}

impl Store {
    /// A merged run's `shard_summary` rows, by shard (none for any other run, or a database from
    /// before shards existed).
    pub fn shard_summaries(&self, run_id: i64) -> Result<Vec<ShardSummary>> {
        if !self.has_table("shard_parts")? {
            return Ok(Vec::new());
        }
        let mut statement = self
            .connection
            .prepare("SELECT * FROM shard_summary WHERE run_id = ?1 ORDER BY shard_index")?;
        let rows = statement
            .query_map([run_id], ShardSummary::from_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// A merged run's `merged_runs` row.
    pub fn merged_run_summary(&self, run_id: i64) -> Result<Option<MergedRunSummary>> {
        if !self.has_table("shard_parts")? {
            return Ok(None);
        }
        Ok(self
            .connection
            .query_row(
                "SELECT * FROM merged_runs WHERE run_id = ?1",
                [run_id],
                MergedRunSummary::from_row,
            )
            .optional()?)
    }

    fn has_table(&self, name: &str) -> Result<bool> {
        Ok(self.connection.query_row(
            "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [name],
            |row| row.get(0),
        )?)
    }
}
