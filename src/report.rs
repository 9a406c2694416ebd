//! Reports read from the database: one run (`report`), several side by side (`compare`), in
//! Markdown, CSV, JSON or a self-contained HTML page with charts; and re-scoring stored answers
//! (`score`).
//!
//! [`data`] reads plain structs with bound parameters and computes the figures; [`export`] turns
//! them into bytes (pure functions); [`charts`] draws the HTML charts with `plotters`.

pub mod charts;
pub mod data;
pub mod export;
pub mod stats;

pub use data::{load, Comparison, RunReport};
pub use export::{COLUMNS, CSV_HEADER};

use crate::dataset::Question;
use crate::error::{Error, Result};
use crate::store::Store;
use rusqlite::params;
use std::path::Path;
use std::str::FromStr;

/// Output format of `report` and `compare`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Markdown tables (the terminal default).
    Markdown,
    /// One CSV row per run.
    Csv,
    /// Pretty-printed JSON.
    Json,
    /// One self-contained HTML page with inline SVG charts.
    Html,
}

impl FromStr for Format {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Format, String> {
        match text.to_ascii_lowercase().as_str() {
            "md" | "markdown" => Ok(Format::Markdown),
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            "html" | "htm" => Ok(Format::Html),
            other => Err(format!(
                "unknown format {other:?}; use md, csv, json or html"
            )),
        }
    }
}

impl Format {
    /// The format named by `--format`, else by the `--out` file's extension, else Markdown.
    pub fn choose(explicit: Option<Format>, out: Option<&Path>) -> Format {
        explicit
            .or_else(|| {
                out.and_then(|p| p.extension())
                    .and_then(|e| e.to_str())
                    .and_then(|e| e.parse().ok())
            })
            .unwrap_or(Format::Markdown)
    }
}

/// Render a comparison in `format`.
pub fn render(comparison: &Comparison, format: Format) -> Vec<u8> {
    match format {
        Format::Markdown => export::markdown(comparison).into_bytes(),
        Format::Csv => export::csv(comparison),
        Format::Json => export::json(comparison),
        Format::Html => export::html(comparison),
    }
}

/// The run `report` shows: `--run-id`, else the most recent run.
pub fn report_run(store: &Store, run_id: Option<i64>) -> Result<i64> {
    match run_id {
        Some(id) => {
            if store.run(id)?.is_none() {
                return Err(Error::Usage(format!(
                    "--run-id {id}: no such run in {}; `docent-eval compare --db {}` lists the finished runs",
                    store.path().display(),
                    store.path().display()
                )));
            }
            Ok(id)
        }
        None => store.latest_run()?.map(|r| r.id).ok_or_else(|| {
            Error::Usage(format!(
                "{} holds no runs yet; start one with `docent-eval run --db {}`",
                store.path().display(),
                store.path().display()
            ))
        }),
    }
}

/// The runs `compare` shows: the ids given (each must exist), else every finished run.
pub fn compare_runs(store: &Store, run_ids: &[i64]) -> Result<Vec<i64>> {
    if !run_ids.is_empty() {
        for &id in run_ids {
            if store.run(id)?.is_none() {
                return Err(Error::Usage(format!(
                    "RUN_ID {id}: no such run in {}",
                    store.path().display()
                )));
            }
        }
        return Ok(run_ids.to_vec());
    }
    let mut statement = store
        .connection()
        .prepare("SELECT id FROM runs WHERE status = 'finished' ORDER BY id")?;
    let ids: Vec<i64> = statement
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if ids.is_empty() {
        return Err(Error::Usage(format!(
            "{} has no finished runs; pass the RUN_IDs to compare unfinished ones",
            store.path().display()
        )));
    }
    Ok(ids)
}

/// Write `bytes` to `out`, or to standard output.
pub fn write_output(bytes: &[u8], out: Option<&Path>) -> Result<()> {
    match out {
        Some(path) => std::fs::write(path, bytes).map_err(|e| {
            Error::Usage(format!(
                "--out {} cannot be written ({e}); check the path",
                path.display()
            ))
        }),
        None => {
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(bytes)
                .and_then(|_| stdout.flush())
                .map_err(|e| Error::io("<stdout>", e))
        }
    }
}

/// What [`rescore`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rescored {
    /// Runs whose answers were scored again.
    pub runs: Vec<i64>,
    /// Answer rows scored (status ok).
    pub answers: usize,
    /// Rows whose score, exact match, F1 or chosen option changed.
    pub changed: usize,
}

/// Score every ok answer of `run_id` (or of every run) again with the current rules of
/// [`crate::score`], from the stored questions, and update the rows that change, in one
/// transaction. Error rows keep NULL scores.
pub fn rescore(store: &Store, run_id: Option<i64>) -> Result<Rescored> {
    let runs: Vec<i64> = match run_id {
        Some(id) => vec![report_run(store, Some(id))?],
        None => {
            let mut statement = store
                .connection()
                .prepare("SELECT id FROM runs ORDER BY id")?;
            let ids = statement
                .query_map([], |row| row.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            ids
        }
    };
    let tx = store.connection().unchecked_transaction()?;
    let mut answers = 0;
    let mut changed = 0;
    {
        let mut select = tx.prepare(
            "SELECT a.id, q.question_id, q.ordinal, q.question, q.reference, q.answer_index,
                    q.choices_json, q.category, q.context, a.answer,
                    a.score, a.exact_match, a.f1, a.chosen_index
             FROM answers a
             JOIN questions q ON q.run_id = a.run_id AND q.question_id = a.question_id
             WHERE a.run_id = ?1 AND a.status = 'ok'
             ORDER BY q.ordinal",
        )?;
        let mut update = tx.prepare(
            "UPDATE answers SET score = ?2, exact_match = ?3, f1 = ?4, chosen_index = ?5 WHERE id = ?1",
        )?;
        for &run in &runs {
            type Stored = (Option<f64>, Option<bool>, Option<f64>, Option<i64>);
            let rows: Vec<(i64, Question, String, Stored)> = select
                .query_map(params![run], |r| {
                    let choices_json: Option<String> = r.get(6)?;
                    let answer_index: Option<i64> = r.get(5)?;
                    let question = Question {
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
                    };
                    let answer: Option<String> = r.get(9)?;
                    Ok((
                        r.get(0)?,
                        question,
                        answer.unwrap_or_default(),
                        (r.get(10)?, r.get(11)?, r.get(12)?, r.get(13)?),
                    ))
                })?
                .collect::<rusqlite::Result<_>>()?;
            for (id, question, answer, stored) in rows {
                answers += 1;
                let scores = crate::score::score(&question, &answer);
                let fresh: Stored = (
                    scores.score,
                    scores.exact_match,
                    scores.f1,
                    scores.chosen_index.map(|i| i as i64),
                );
                if fresh != stored {
                    changed += 1;
                    update.execute(params![id, fresh.0, fresh.1, fresh.2, fresh.3])?;
                }
            }
        }
    }
    tx.commit()?;
    Ok(Rescored {
        runs,
        answers,
        changed,
    })
}

fn number(value: Option<f64>, unit: &str) -> String {
    value.map_or("-".into(), |v| format!("{v:.1}{unit}"))
}

/// " (predicted X, +E%)" beside a measured peak, when preflight recorded a prediction.
fn predicted(bytes: Option<i64>, error_pct: Option<f64>) -> String {
    match (bytes, error_pct) {
        (Some(b), Some(e)) => format!(
            " (predicted {}, {e:+.1}%)",
            crate::monitor::gib_text(Some(b))
        ),
        (Some(b), None) => format!(" (predicted {})", crate::monitor::gib_text(Some(b))),
        _ => String::new(),
    }
}

/// A short multi-line summary of one run from `run_summary`.
pub fn summary_text(store: &Store, run_id: i64) -> Result<String> {
    Ok(store.connection().query_row(
        "SELECT model_name, status, done, total, ok, errors, accuracy, mean_f1, mean_latency_ms,
                p50_latency_ms, p95_latency_ms, mean_ttft_ms, throughput_tok_per_s,
                mean_decode_tok_per_s, peak_rss_bytes, peak_gpu_used_bytes, wall_time_s,
                predicted_peak_bytes, rss_prediction_error_pct, predicted_gpu_bytes,
                gpu_prediction_error_pct
         FROM run_summary WHERE run_id = ?1",
        [run_id],
        |row| {
            let accuracy: Option<f64> = row.get(6)?;
            let f1: Option<f64> = row.get(7)?;
            Ok(format!(
                "run {run_id} · {} · {}\n  answered {}/{} (ok {}, errors {})  accuracy {}  mean F1 {}\n  latency mean {} p50 {} p95 {}  TTFT mean {}\n  generation {} aggregate, {} per sequence  wall {}\n  peak RSS {}{}  peak GPU {}{}",
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, i64>(4)?,
                row.get::<_, i64>(5)?,
                accuracy.map_or("-".into(), |a| format!("{:.1}%", a * 100.0)),
                f1.map_or("-".into(), |a| format!("{a:.3}")),
                number(row.get(8)?, " ms"),
                number(row.get(9)?, " ms"),
                number(row.get(10)?, " ms"),
                number(row.get(11)?, " ms"),
                number(row.get(12)?, " tok/s"),
                number(row.get(13)?, " tok/s"),
                number(row.get(16)?, " s"),
                crate::monitor::gib_text(row.get(14)?),
                predicted(row.get(17)?, row.get(18)?),
                crate::monitor::gib_text(row.get(15)?),
                predicted(row.get(19)?, row.get(20)?),
            ))
        },
    )?)
}
