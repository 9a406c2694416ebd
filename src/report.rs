//! Reports read from the database: one run (`report`), several side by side (`compare`), in
//! Markdown, CSV, JSON or a self-contained HTML page with charts; and re-scoring stored answers
//! (`score`).
//!
//! [`data`] reads typed rows from the store (every figure from the views); one module per
//! format turns them into bytes ([`markdown`], [`csv`], [`json`], [`html`]: pure functions, no
//! I/O, no clock, so the same data always gives the same bytes) from the cell text of [`cells`];
//! [`charts`] draws the HTML charts with `plotters`.

#[cfg(test)]
mod agreement;
pub mod cells;
pub mod charts;
pub mod csv;
pub mod data;
#[cfg(test)]
mod fixture;
pub mod html;
pub mod json;
pub mod markdown;
pub mod stats;
pub mod status;

pub use cells::COLUMNS;
pub use csv::CSV_HEADER;
pub use data::{load, Comparison, RunReport};

use crate::error::{usage, Result};
use crate::store::{Store, StoredScores};
use crate::units::{gib_or_dash, printable, Lines};
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
        Format::Markdown => markdown::markdown(comparison).into_bytes(),
        Format::Csv => csv::csv(comparison),
        Format::Json => json::json(comparison),
        Format::Html => html::html(comparison),
    }
}

/// The runs `compare` shows: the ids given (each must exist), else every finished run.
pub fn compare_runs(store: &Store, run_ids: &[i64]) -> Result<Vec<i64>> {
    if !run_ids.is_empty() {
        for &id in run_ids {
            if store.run(id)?.is_none() {
                return Err(usage(format!(
                    "RUN_ID {id}: no such run in {}",
                    store.path().display()
                )));
            }
        }
        return Ok(run_ids.to_vec());
    }
    let ids = store.run_ids(true)?;
    if ids.is_empty() {
        return Err(usage(format!(
            "{} has no finished runs; pass the RUN_IDs to compare unfinished ones",
            store.path().display()
        )));
    }
    Ok(ids)
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
    let runs = match run_id {
        Some(id) => vec![store.pick_run(Some(id))?],
        None => store.run_ids(false)?,
    };
    let mut answers = 0;
    let mut updates = Vec::new();
    for &run in &runs {
        for stored in store.scored_answers(run)? {
            answers += 1;
            let scores = crate::score::score(&stored.question, &stored.answer);
            let fresh = StoredScores {
                score: scores.score,
                exact_match: scores.exact_match,
                f1: scores.f1,
                chosen_index: scores.chosen_index.map(|i| i as i64),
            };
            if fresh != stored.stored {
                updates.push((stored.answer_row_id, fresh));
            }
        }
    }
    store.update_scores(&updates)?;
    Ok(Rescored {
        runs,
        answers,
        changed: updates.len(),
    })
}

fn number(value: Option<f64>, unit: &str) -> String {
    value.map_or("-".into(), |v| format!("{v:.1}{unit}"))
}

fn percent(value: Option<f64>) -> String {
    value.map_or("-".into(), |v| format!("{:.1}%", v * 100.0))
}

/// " (predicted X, +E%)" beside a measured peak, when preflight recorded a prediction.
fn predicted(bytes: Option<i64>, error_pct: Option<f64>) -> String {
    match (bytes, error_pct) {
        (Some(b), Some(e)) => format!(" (predicted {}, {e:+.1}%)", gib_or_dash(Some(b))),
        (Some(b), None) => format!(" (predicted {})", gib_or_dash(Some(b))),
        _ => String::new(),
    }
}

/// The end-of-run summary: a few lines from the run's `run_summary` row. The model name comes
/// from a model file the tool does not trust: control characters in it are shown as escapes.
pub fn summary_text(store: &Store, run_id: i64) -> Result<String> {
    let s = store
        .run_summary(run_id)?
        .ok_or_else(|| usage(format!("run {run_id} does not exist")))?;
    let loglik = if s.loglik_scored > 0 {
        format!(
            "\n  log-likelihood ({} questions): acc {}  acc_norm {}  chance {}{}",
            s.loglik_scored,
            percent(s.loglik_acc),
            percent(s.loglik_acc_norm),
            percent(s.loglik_chance),
            s.generated_loglik_agreement
                .map_or(String::new(), |a| format!(
                    "  generated = loglik {}",
                    percent(Some(a))
                )),
        )
    } else {
        String::new()
    };
    Ok(format!(
        "run {run_id} · {} · {}\n  answered {}/{} (ok {}, errors {})  accuracy {}  mean F1 {}\n  latency mean {} p50 {} p95 {}  TTFT mean {}\n  generation {} aggregate, {} per sequence  wall {}\n  peak RSS {}{}  peak GPU {}{}{loglik}",
        printable(&s.model_name, Lines::Escape),
        s.status,
        s.done,
        s.total,
        s.ok,
        s.errors,
        percent(s.accuracy),
        s.mean_f1.map_or("-".into(), |a| format!("{a:.3}")),
        number(s.mean_latency_ms, " ms"),
        number(s.p50_latency_ms, " ms"),
        number(s.p95_latency_ms, " ms"),
        number(s.mean_ttft_ms, " ms"),
        number(s.throughput_tok_per_s, " tok/s"),
        number(s.mean_decode_tok_per_s, " tok/s"),
        number(s.wall_time_s, " s"),
        gib_or_dash(s.peak_rss_bytes),
        predicted(s.predicted_peak_bytes, s.rss_prediction_error_pct),
        gib_or_dash(s.peak_gpu_used_bytes),
        predicted(s.predicted_gpu_bytes, s.gpu_prediction_error_pct),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Question;
    use crate::report::fixture::{HOSTILE_ERROR, HOSTILE_MODEL};
    use crate::store::{AnswerRow, RunStatus};

    /// A run of a hostile model file whose one question (with a hostile id) ended in a hostile
    /// error, stopped with a hostile reason: all stored through the store.
    fn hostile_run() -> (tempfile::TempDir, Store, i64) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("r.db")).unwrap();
        let question = Question {
            id: "q\u{1b}[2K1".into(),
            question: "?".into(),
            category: Some("<img src=x onerror=alert(1)>|x".into()),
            ..Default::default()
        };
        let run_id = store.test_run(HOSTILE_MODEL, std::slice::from_ref(&question));
        let row = AnswerRow {
            question_id: "q\u{1b}[2K1".into(),
            ok: false,
            error: Some(HOSTILE_ERROR.into()),
            ..Default::default()
        };
        store.insert_answer(run_id, &row).unwrap();
        store
            .end_session(run_id, RunStatus::Failed, Some(HOSTILE_ERROR), 0)
            .unwrap();
        (dir, store, run_id)
    }

    #[test]
    fn terminal_texts_show_stored_control_characters_as_escapes() {
        let (_dir, store, run_id) = hostile_run();
        let summary = summary_text(&store, run_id).unwrap();
        assert_eq!(printable(&summary, Lines::Keep), summary);
        assert!(summary.starts_with(&format!(
            "run {run_id} · =HYPERLINK(\"http://x\",\"y\")\\x1b]0;owned\\x07 · failed\n"
        )));
        let status = status::status_text(&status::status(&store, run_id).unwrap());
        assert_eq!(printable(&status, Lines::Keep), status);
        assert!(status.contains("  reason: bad answer\\x1b[2J\\u{202e}txt.exe\\nforged line"));
        assert!(status.contains("  last error: q\\x1b[2K1: bad answer\\x1b[2J\\u{202e}"));
        // Markdown of the same run: entities, escaped pipe, no raw control.
        let markdown = markdown::markdown(&load(&store, &[run_id]).unwrap());
        assert_eq!(printable(&markdown, Lines::Keep), markdown);
        assert!(markdown.contains("&lt;img src=x onerror=alert(1)&gt;\\|x"));
        assert!(!markdown.contains("<img"));
    }
}
