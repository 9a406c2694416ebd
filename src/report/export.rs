//! Exporters: pure functions from a [`Comparison`] to the bytes of a Markdown, CSV, JSON or HTML
//! document. No I/O, no clock: the same data always gives the same bytes.

use super::charts;
use super::data::{AnswerDetail, Comparison, RunReport};
use super::stats::{Rate, Spread};
use std::fmt::Write as _;

const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

fn dash() -> String {
    "-".to_string()
}

/// `94 MiB` below 1 GiB, `7.46 GiB` above.
pub fn bytes(value: Option<i64>) -> String {
    value.map_or_else(dash, |b| {
        let b = b as f64;
        if b < GIB {
            format!("{:.0} MiB", b / MIB)
        } else {
            format!("{:.2} GiB", b / GIB)
        }
    })
}

fn percent(value: Option<f64>) -> String {
    value.map_or_else(dash, |v| format!("{:.1}%", v * 100.0))
}

/// `45.0% [29.2, 61.9] 9/20`: rate, 95% Wilson interval, successes/n.
pub fn rate(value: Option<Rate>) -> String {
    value.map_or_else(dash, |r| {
        format!(
            "{:.1}% [{:.1}, {:.1}] {}/{}",
            r.rate * 100.0,
            r.low * 100.0,
            r.high * 100.0,
            r.successes,
            r.n
        )
    })
}

fn millis(value: Option<f64>) -> String {
    value.map_or_else(dash, |v| format!("{v:.0} ms"))
}

fn fixed(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(dash, |v| format!("{v:.decimals$}"))
}

fn spread(value: Option<Spread>, pick: fn(&Spread) -> f64) -> String {
    millis(value.as_ref().map(pick))
}

/// `max_tokens=12 temp=0 top_p=1 seed=42 ctx=512 parallel=1 gpu_layers=0 threads=2`.
pub fn settings_text(run: &RunReport) -> String {
    let s = &run.settings;
    let mut parts = Vec::new();
    let mut push = |name: &str, value: Option<String>| {
        if let Some(v) = value {
            parts.push(format!("{name}={v}"));
        }
    };
    push("max_tokens", s.max_tokens.map(|v| v.to_string()));
    push("temp", s.temperature.map(|v| v.to_string()));
    push("top_p", s.top_p.map(|v| v.to_string()));
    push("seed", s.seed.map(|v| v.to_string()));
    push("ctx", s.ctx.map(|v| v.to_string()));
    push("parallel", s.parallel.map(|v| v.to_string()));
    push("gpu_layers", s.gpu_layers.map(|v| v.to_string()));
    push("threads", s.threads.map(|v| v.to_string()));
    if s.system_prompt {
        parts.push("system_prompt".into());
    }
    parts.join(" ")
}

/// `none`, or `×2 prompt of N tokens …; ×1 …`.
pub fn errors_text(run: &RunReport) -> String {
    if run.errors_by_reason.is_empty() {
        return "none".into();
    }
    run.errors_by_reason
        .iter()
        .map(|e| format!("×{} {}", e.count, e.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

type Column = (&'static str, fn(&RunReport) -> String);

/// The comparison columns, in order: the same in Markdown and HTML.
pub const COLUMNS: &[Column] = &[
    ("run", |r| r.run_id.to_string()),
    ("model", |r| r.model.name.clone()),
    ("quant", |r| r.model.quantization.clone()),
    ("size", |r| bytes(Some(r.model.size_bytes))),
    ("settings", settings_text),
    ("status", |r| r.status.clone()),
    ("done/total", |r| {
        format!("{}/{}", r.questions_done, r.questions_total)
    }),
    ("success", |r| percent(r.success_rate)),
    ("MC accuracy [95% CI]", |r| rate(r.mc_accuracy)),
    ("free-text accuracy [95% CI]", |r| {
        rate(r.free_text_accuracy)
    }),
    ("exact match [95% CI]", |r| rate(r.exact_match)),
    ("F1", |r| fixed(r.mean_f1, 3)),
    ("latency mean", |r| spread(r.latency_ms, |s| s.mean)),
    ("latency p50", |r| spread(r.latency_ms, |s| s.p50)),
    ("latency p95", |r| spread(r.latency_ms, |s| s.p95)),
    ("latency max", |r| spread(r.latency_ms, |s| s.max)),
    ("TTFT mean", |r| spread(r.ttft_ms, |s| s.mean)),
    ("TTFT p95", |r| spread(r.ttft_ms, |s| s.p95)),
    ("tok/s per sequence", |r| fixed(r.decode_tok_per_s, 1)),
    ("tok/s total", |r| fixed(r.throughput_tok_per_s, 1)),
    ("wall time", |r| {
        r.wall_time_s.map_or_else(dash, |s| format!("{s:.1} s"))
    }),
    ("questions/hour", |r| fixed(r.questions_per_hour, 1)),
    ("peak RSS", |r| bytes(r.memory.peak_rss_bytes)),
    ("peak RAM used", |r| bytes(r.memory.peak_ram_used_bytes)),
    ("peak swap used", |r| bytes(r.memory.peak_swap_used_bytes)),
    ("peak GPU used", |r| bytes(r.memory.peak_gpu_used_bytes)),
    ("predicted peak", |r| bytes(r.memory.predicted_peak_bytes)),
    ("errors", errors_text),
];

fn md_cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn md_row(cells: &[String]) -> String {
    let escaped: Vec<String> = cells.iter().map(|c| md_cell(c)).collect();
    format!("| {} |\n", escaped.join(" | "))
}

fn md_rule(n: usize) -> String {
    format!("|{}\n", "---|".repeat(n))
}

/// Markdown: one run as a metric/value table, several as one row per run; then accuracy per
/// category and errors by reason.
pub fn markdown(comparison: &Comparison) -> String {
    let runs = &comparison.runs;
    let mut out = String::new();
    if let [run] = runs.as_slice() {
        let _ = writeln!(out, "## Run {} · {}\n", run.run_id, run.model.name);
        out.push_str(&md_row(&["metric".into(), "value".into()]));
        out.push_str(&md_rule(2));
        for (name, value) in COLUMNS {
            out.push_str(&md_row(&[name.to_string(), value(run)]));
        }
    } else {
        let _ = writeln!(out, "## Comparison of {} runs\n", runs.len());
        let header: Vec<String> = COLUMNS.iter().map(|(name, _)| name.to_string()).collect();
        out.push_str(&md_row(&header));
        out.push_str(&md_rule(COLUMNS.len()));
        for run in runs {
            let cells: Vec<String> = COLUMNS.iter().map(|(_, value)| value(run)).collect();
            out.push_str(&md_row(&cells));
        }
    }
    if runs.iter().any(|r| !r.categories.is_empty()) {
        out.push_str("\n### Per category\n\n");
        out.push_str(&md_row(
            &[
                "category",
                "run",
                "done/total",
                "accuracy [95% CI]",
                "MC accuracy",
                "free-text accuracy",
                "exact match",
                "F1",
                "latency mean",
            ]
            .map(String::from),
        ));
        out.push_str(&md_rule(9));
        for (category, run, c) in category_rows(comparison) {
            out.push_str(&md_row(&[
                category,
                format!("{} · {}", run.run_id, run.model.name),
                format!("{}/{}", c.done, c.total),
                rate(c.accuracy),
                rate(c.mc_accuracy),
                rate(c.free_text_accuracy),
                rate(c.exact_match),
                fixed(c.mean_f1, 3),
                millis(c.mean_latency_ms),
            ]));
        }
    }
    if runs.iter().any(|r| !r.errors_by_reason.is_empty()) {
        out.push_str("\n### Errors by reason\n\n");
        out.push_str(&md_row(
            &["run", "count", "reason", "example"].map(String::from),
        ));
        out.push_str(&md_rule(4));
        for run in runs {
            for e in &run.errors_by_reason {
                out.push_str(&md_row(&[
                    run.run_id.to_string(),
                    e.count.to_string(),
                    e.reason.clone(),
                    e.example.clone(),
                ]));
            }
        }
    }
    out
}

/// (category, run, its figures), categories in first-seen order, runs in order.
fn category_rows(
    comparison: &Comparison,
) -> Vec<(String, &RunReport, &super::data::CategoryReport)> {
    let mut names: Vec<&str> = Vec::new();
    for run in &comparison.runs {
        for c in &run.categories {
            if !names.contains(&c.category.as_str()) {
                names.push(&c.category);
            }
        }
    }
    let mut rows = Vec::new();
    for name in names {
        for run in &comparison.runs {
            if let Some(c) = run.categories.iter().find(|c| c.category == name) {
                rows.push((name.to_string(), run, c));
            }
        }
    }
    rows
}

fn opt<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(String::new, |v| v.to_string())
}

fn opt_fixed(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(String::new, |v| format!("{v:.decimals$}"))
}

fn rate_fields(value: Option<Rate>) -> [String; 5] {
    match value {
        None => Default::default(),
        Some(r) => [
            r.successes.to_string(),
            r.n.to_string(),
            format!("{:.4}", r.rate),
            format!("{:.4}", r.low),
            format!("{:.4}", r.high),
        ],
    }
}

/// Header of the CSV export.
pub const CSV_HEADER: &[&str] = &[
    "run_id",
    "status",
    "model",
    "model_path",
    "quantization",
    "model_size_bytes",
    "architecture",
    "parameters",
    "max_tokens",
    "temperature",
    "top_p",
    "seed",
    "ctx",
    "parallel",
    "gpu_layers",
    "threads",
    "questions_done",
    "questions_total",
    "ok",
    "errors",
    "success_rate",
    "mc_correct",
    "mc_n",
    "mc_accuracy",
    "mc_ci_low",
    "mc_ci_high",
    "free_text_correct",
    "free_text_n",
    "free_text_accuracy",
    "free_text_ci_low",
    "free_text_ci_high",
    "exact_match_hits",
    "exact_match_n",
    "exact_match_rate",
    "exact_match_ci_low",
    "exact_match_ci_high",
    "mean_f1",
    "latency_mean_ms",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_max_ms",
    "ttft_mean_ms",
    "ttft_p95_ms",
    "decode_tok_per_s",
    "throughput_tok_per_s",
    "prompt_tokens",
    "completion_tokens",
    "wall_time_s",
    "questions_per_hour",
    "peak_rss_bytes",
    "peak_ram_used_bytes",
    "ram_total_bytes",
    "peak_swap_used_bytes",
    "peak_gpu_used_bytes",
    "predicted_peak_bytes",
    "errors_by_reason",
];

/// CSV: one row per run, numbers in plain units (bytes, ms, s, fractions); empty when unknown.
pub fn csv(comparison: &Comparison) -> Vec<u8> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    // Writing to a Vec cannot fail; the results are checked anyway for the header and each row.
    let mut rows: Vec<Vec<String>> = vec![CSV_HEADER.iter().map(|s| s.to_string()).collect()];
    for r in &comparison.runs {
        let s = &r.settings;
        let m = &r.memory;
        let mut row = vec![
            r.run_id.to_string(),
            r.status.clone(),
            r.model.name.clone(),
            r.model.path.clone(),
            r.model.quantization.clone(),
            r.model.size_bytes.to_string(),
            opt(r.model.architecture.clone()),
            opt(r.model.parameters),
            opt(s.max_tokens),
            opt(s.temperature),
            opt(s.top_p),
            opt(s.seed),
            opt(s.ctx),
            opt(s.parallel),
            opt(s.gpu_layers),
            opt(s.threads),
            r.questions_done.to_string(),
            r.questions_total.to_string(),
            r.ok.to_string(),
            r.errors.to_string(),
            opt_fixed(r.success_rate, 4),
        ];
        row.extend(rate_fields(r.mc_accuracy));
        row.extend(rate_fields(r.free_text_accuracy));
        row.extend(rate_fields(r.exact_match));
        row.extend([
            opt_fixed(r.mean_f1, 4),
            opt_fixed(r.latency_ms.map(|l| l.mean), 1),
            opt_fixed(r.latency_ms.map(|l| l.p50), 1),
            opt_fixed(r.latency_ms.map(|l| l.p95), 1),
            opt_fixed(r.latency_ms.map(|l| l.max), 1),
            opt_fixed(r.ttft_ms.map(|l| l.mean), 1),
            opt_fixed(r.ttft_ms.map(|l| l.p95), 1),
            opt_fixed(r.decode_tok_per_s, 2),
            opt_fixed(r.throughput_tok_per_s, 2),
            r.prompt_tokens.to_string(),
            r.completion_tokens.to_string(),
            opt_fixed(r.wall_time_s, 1),
            opt_fixed(r.questions_per_hour, 1),
            opt(m.peak_rss_bytes),
            opt(m.peak_ram_used_bytes),
            opt(m.ram_total_bytes),
            opt(m.peak_swap_used_bytes),
            opt(m.peak_gpu_used_bytes),
            opt(m.predicted_peak_bytes),
            r.errors_by_reason
                .iter()
                .map(|e| format!("{}={}", e.reason, e.count))
                .collect::<Vec<_>>()
                .join("; "),
        ]);
        rows.push(row);
    }
    for row in rows {
        if let Err(e) = writer.write_record(&row) {
            log::error!("CSV row could not be written: {e}");
        }
    }
    writer
        .into_inner()
        .unwrap_or_else(|e| e.into_inner().get_ref().clone())
}

/// JSON: `{"runs": [...]}` with every summary figure (not the per-answer detail), pretty-printed.
pub fn json(comparison: &Comparison) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(comparison).unwrap_or_else(|e| {
        // Only non-string map keys could fail; the data has none.
        format!("{{\"error\": \"{e}\"}}").into_bytes()
    });
    bytes.push(b'\n');
    bytes
}

/// HTML-escape text for element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
body { font-family: 'Noto Sans CJK KR', 'Noto Sans KR', 'Apple SD Gothic Neo', 'Malgun Gothic', sans-serif; margin: 24px; color: #222; background: #fff; }
h1 { font-size: 22px; } h2 { font-size: 19px; margin-top: 32px; border-bottom: 1px solid #ddd; } h3 { font-size: 16px; }
table { border-collapse: collapse; font-size: 12px; margin: 8px 0 16px; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #f2f4f7; }
.scroll { overflow-x: auto; }
td.text { max-width: 420px; white-space: pre-wrap; word-break: break-word; }
svg { display: block; max-width: 100%; height: auto; margin: 8px 0; }
svg text { font-family: 'Noto Sans CJK KR', 'Noto Sans KR', sans-serif; }
.muted { color: #777; }
.wrong { color: #b00; } .right { color: #070; }
";

fn html_table(out: &mut String, header: &[&str], rows: &[Vec<String>], text_columns: &[usize]) {
    out.push_str("<div class=\"scroll\"><table>\n<tr>");
    for h in header {
        let _ = write!(out, "<th>{}</th>", escape(h));
    }
    out.push_str("</tr>\n");
    for row in rows {
        out.push_str("<tr>");
        for (i, cell) in row.iter().enumerate() {
            let class = if text_columns.contains(&i) {
                " class=\"text\""
            } else {
                ""
            };
            let _ = write!(out, "<td{class}>{}</td>", escape(cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table></div>\n");
}

fn verdict(a: &AnswerDetail) -> String {
    match (a.ok, a.score) {
        (Some(false), _) => "error".into(),
        (_, Some(s)) if s >= 1.0 => "correct".into(),
        (_, Some(_)) => "wrong".into(),
        _ => "-".into(),
    }
}

fn answer_rows(answers: &[&AnswerDetail]) -> Vec<Vec<String>> {
    answers
        .iter()
        .map(|a| {
            vec![
                a.question_id.clone(),
                a.category.clone().unwrap_or_default(),
                a.question.clone(),
                a.reference.clone().unwrap_or_default(),
                a.answer
                    .clone()
                    .or_else(|| a.error.clone())
                    .unwrap_or_default(),
                verdict(a),
                millis(a.latency_ms),
            ]
        })
        .collect()
}

const ANSWER_HEADER: &[&str] = &[
    "id",
    "category",
    "question",
    "reference",
    "answer / error",
    "result",
    "latency",
];

/// Slowest answers shown per run.
pub const SLOWEST: usize = 5;
/// Failed (error) and wrong answers shown per run, at most.
pub const FAILED: usize = 20;

/// HTML: one self-contained page (inline CSS and SVG, no script, nothing fetched): the comparison
/// table, accuracy per category, and per run its memory timeline, latency distribution, errors,
/// slowest and failed questions.
pub fn html(comparison: &Comparison) -> Vec<u8> {
    let runs = &comparison.runs;
    let mut out = String::new();
    let title = match runs.as_slice() {
        [run] => format!("docent-eval · run {} · {}", run.run_id, run.model.name),
        _ => format!("docent-eval · comparison of {} runs", runs.len()),
    };
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"ko\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );

    out.push_str("<section id=\"comparison\">\n<h2>Comparison</h2>\n");
    // Transposed (one column per run) so that every figure is visible without scrolling.
    let run_headers: Vec<String> = runs.iter().map(|r| format!("run {}", r.run_id)).collect();
    let mut header: Vec<&str> = vec!["metric"];
    header.extend(run_headers.iter().map(String::as_str));
    let rows: Vec<Vec<String>> = COLUMNS
        .iter()
        .map(|(name, value)| {
            let mut row = vec![name.to_string()];
            row.extend(runs.iter().map(value));
            row
        })
        .collect();
    html_table(&mut out, &header, &rows, &[]);
    out.push_str("<p class=\"muted\">Accuracy: multiple choice = chosen option equals the key; free text = normalised reference contained in the answer; exact match and F1 after NFKC, whitespace and punctuation normalisation (KorQuAD). Error rows count as wrong. Intervals are 95% Wilson intervals. Latency and TTFT over answered questions; wall time is the generation time summed over sessions.</p>\n</section>\n");

    if let Some(chart) = charts::accuracy_by_category(runs) {
        out.push_str("<section id=\"categories\">\n<h2>Accuracy per category</h2>\n");
        out.push_str(&chart);
        out.push('\n');
        let rows: Vec<Vec<String>> = category_rows(comparison)
            .into_iter()
            .map(|(category, run, c)| {
                vec![
                    category,
                    format!("{} · {}", run.run_id, run.model.name),
                    format!("{}/{}", c.done, c.total),
                    rate(c.accuracy),
                    rate(c.mc_accuracy),
                    rate(c.free_text_accuracy),
                    rate(c.exact_match),
                    fixed(c.mean_f1, 3),
                    millis(c.mean_latency_ms),
                ]
            })
            .collect();
        html_table(
            &mut out,
            &[
                "category",
                "run",
                "done/total",
                "accuracy [95% CI]",
                "MC accuracy",
                "free-text accuracy",
                "exact match",
                "F1",
                "latency mean",
            ],
            &rows,
            &[],
        );
        out.push_str("</section>\n");
    }

    for (j, run) in runs.iter().enumerate() {
        let color = charts::RUN_COLORS[j % charts::RUN_COLORS.len()];
        let _ = write!(
            out,
            "<section class=\"run\" id=\"run-{}\">\n<h2>Run {} · {} ({}, {}) · {}</h2>\n<p class=\"muted\">{} · started {} · {}</p>\n",
            run.run_id,
            run.run_id,
            escape(&run.model.name),
            escape(&run.model.quantization),
            escape(&bytes(Some(run.model.size_bytes))),
            escape(&run.status),
            escape(&settings_text(run)),
            escape(&run.started_at),
            escape(&run.model.path),
        );
        out.push_str("<h3>Memory over time</h3>\n");
        out.push_str(&charts::memory_timeline(run));
        out.push_str("\n<h3>Latency distribution</h3>\n");
        out.push_str(&charts::latency_distribution(run, color));
        out.push('\n');

        out.push_str("<h3>Errors by reason</h3>\n");
        if run.errors_by_reason.is_empty() {
            out.push_str("<p class=\"muted\">No errors.</p>\n");
        } else {
            let rows: Vec<Vec<String>> = run
                .errors_by_reason
                .iter()
                .map(|e| vec![e.count.to_string(), e.reason.clone(), e.example.clone()])
                .collect();
            html_table(&mut out, &["count", "reason", "example"], &rows, &[1, 2]);
        }

        let mut slowest: Vec<&AnswerDetail> = run
            .answers
            .iter()
            .filter(|a| a.ok == Some(true) && a.latency_ms.is_some())
            .collect();
        slowest.sort_by(|a, b| {
            b.latency_ms
                .unwrap_or(0.0)
                .total_cmp(&a.latency_ms.unwrap_or(0.0))
        });
        slowest.truncate(SLOWEST);
        out.push_str("<h3>Slowest questions</h3>\n");
        html_table(&mut out, ANSWER_HEADER, &answer_rows(&slowest), &[2, 3, 4]);

        let failed: Vec<&AnswerDetail> = run
            .answers
            .iter()
            .filter(|a| a.ok == Some(false))
            .take(FAILED)
            .collect();
        out.push_str("<h3>Failed questions</h3>\n");
        if failed.is_empty() {
            out.push_str("<p class=\"muted\">None.</p>\n");
        } else {
            html_table(&mut out, ANSWER_HEADER, &answer_rows(&failed), &[2, 3, 4]);
        }

        let wrong: Vec<&AnswerDetail> = run
            .answers
            .iter()
            .filter(|a| a.ok == Some(true) && a.score.is_some_and(|s| s < 1.0))
            .take(FAILED)
            .collect();
        let wrong_total = run
            .answers
            .iter()
            .filter(|a| a.ok == Some(true) && a.score.is_some_and(|s| s < 1.0))
            .count();
        let _ = writeln!(
            out,
            "<h3>Wrong answers ({} of {wrong_total})</h3>",
            wrong.len()
        );
        if wrong.is_empty() {
            out.push_str("<p class=\"muted\">None.</p>\n");
        } else {
            html_table(&mut out, ANSWER_HEADER, &answer_rows(&wrong), &[2, 3, 4]);
        }
        out.push_str("</section>\n");
    }
    out.push_str("</body>\n</html>\n");
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::data::{
        AnswerDetail, CategoryReport, ErrorReason, MemoryPeaks, MemoryPoint, ModelSummary,
        QuestionKind, Settings,
    };

    fn answer(id: &str, ordinal: i64, ok: bool, score: Option<f64>, latency: f64) -> AnswerDetail {
        AnswerDetail {
            question_id: id.into(),
            ordinal,
            category: Some("고려".into()),
            question: format!("질문 {id} <b>&</b>"),
            kind: QuestionKind::MultipleChoice,
            reference: Some("2. 세종".into()),
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
    fn fixture() -> Comparison {
        let first = RunReport {
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
            mean_f1: Some(0.1234),
            latency_ms: Some(Spread { n: 9, mean: 1234.5, p50: 1100.0, p95: 2500.25, max: 2600.0 }),
            ttft_ms: Some(Spread { n: 9, mean: 210.0, p50: 200.0, p95: 420.0, max: 430.0 }),
            decode_tok_per_s: Some(31.25),
            throughput_tok_per_s: Some(12.5),
            prompt_tokens: 400,
            completion_tokens: 108,
            wall_time_s: Some(8.64),
            questions_per_hour: Some(4166.7),
            memory: MemoryPeaks {
                samples: 3,
                peak_rss_bytes: Some(157_286_400),
                peak_ram_used_bytes: Some(3_221_225_472),
                ram_total_bytes: Some(25_276_510_208),
                peak_swap_used_bytes: Some(0),
                swap_total_bytes: Some(0),
                peak_gpu_used_bytes: None,
                gpu_total_bytes: None,
                predicted_peak_bytes: Some(209_715_200),
            },
            errors_by_reason: vec![ErrorReason {
                reason: "prompt of N tokens + --max-tokens N exceeds the context of N tokens per sequence; raise --ctx".into(),
                count: 1,
                example: "prompt of 900 tokens + --max-tokens 12 exceeds the context of 512 tokens per sequence; raise --ctx".into(),
            }],
            categories: vec![
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
                },
            ],
            timeline: vec![
                MemoryPoint { t_s: 0.5, rss_bytes: Some(100 << 20), ram_used_bytes: Some(3 << 30), ram_total_bytes: Some(24 << 30), swap_used_bytes: Some(0), swap_total_bytes: Some(0), gpu_used_bytes: None, gpu_total_bytes: None },
                MemoryPoint { t_s: 4.0, rss_bytes: Some(150 << 20), ram_used_bytes: Some(3 << 30), ram_total_bytes: Some(24 << 30), swap_used_bytes: Some(0), swap_total_bytes: Some(0), gpu_used_bytes: None, gpu_total_bytes: None },
                MemoryPoint { t_s: 8.6, rss_bytes: Some(140 << 20), ram_used_bytes: Some(3 << 30), ram_total_bytes: Some(24 << 30), swap_used_bytes: Some(0), swap_total_bytes: Some(0), gpu_used_bytes: None, gpu_total_bytes: None },
            ],
            answers: vec![
                answer("q1", 1, true, Some(1.0), 1100.0),
                answer("q2", 2, true, Some(0.0), 2600.0),
                answer("q3", 3, false, None, 0.0),
            ],
        };
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
        Comparison {
            runs: vec![first, second],
        }
    }

    /// Compare with a reviewed snapshot in `src/report/snapshots/`; `UPDATE_SNAPSHOTS=1` rewrites
    /// it (review the diff before committing).
    fn assert_snapshot(name: &str, actual: &str) {
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

    #[test]
    fn markdown_snapshots() {
        let c = fixture();
        assert_snapshot("compare.md", &markdown(&c));
        let one = Comparison {
            runs: vec![c.runs[0].clone()],
        };
        assert_snapshot("report.md", &markdown(&one));
    }

    #[test]
    fn csv_snapshot_and_shape() {
        let bytes = csv(&fixture());
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert_snapshot("compare.csv", &text);
        let mut reader = csv::Reader::from_reader(bytes.as_slice());
        assert_eq!(reader.headers().unwrap().len(), CSV_HEADER.len());
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|r| r.len() == CSV_HEADER.len()));
    }

    #[test]
    fn json_snapshot_and_shape() {
        let c = fixture();
        let one = Comparison {
            runs: vec![c.runs[0].clone()],
        };
        let text = String::from_utf8(json(&one)).unwrap();
        assert_snapshot("report.json", &text);
        let value: serde_json::Value = serde_json::from_slice(&json(&c)).unwrap();
        assert_eq!(value["runs"].as_array().unwrap().len(), 2);
        assert_eq!(value["runs"][1]["mc_accuracy"]["successes"], 5);
        assert_eq!(
            value["runs"][1]["memory"]["peak_gpu_used_bytes"],
            1_610_612_736_i64
        );
    }

    #[test]
    fn html_is_one_self_contained_page_with_every_chart() {
        let c = fixture();
        let page = String::from_utf8(html(&c)).unwrap();
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.trim_end().ends_with("</html>"));
        // One accuracy-per-category chart, then a memory timeline and a latency chart per run.
        assert_eq!(page.matches("<svg").count(), 1 + 2 * c.runs.len());
        assert_eq!(page.matches("</svg>").count(), 1 + 2 * c.runs.len());
        for id in [
            "id=\"comparison\"",
            "id=\"categories\"",
            "id=\"run-1\"",
            "id=\"run-2\"",
        ] {
            assert!(page.contains(id), "{id}");
        }
        for heading in [
            "Memory over time",
            "Latency distribution",
            "Errors by reason",
            "Slowest questions",
            "Failed questions",
            "Wrong answers",
        ] {
            assert_eq!(page.matches(heading).count(), 2, "{heading}");
        }
        // Every comparison column is a row of the transposed table.
        for (name, _) in COLUMNS {
            assert!(
                page.contains(&format!("<td>{}</td>", escape(name))),
                "{name}"
            );
        }
        // Nothing is fetched: no scripts, links or external resources; only the SVG namespace.
        assert!(!page.contains("<script") && !page.contains("<link") && !page.contains("src="));
        let urls = page.matches("http").count();
        assert_eq!(urls, page.matches("http://www.w3.org/2000/svg").count());
        // Text from the database is escaped.
        assert!(page.contains("질문 q1 &lt;b&gt;&amp;&lt;/b&gt;"));
        assert!(!page.contains("<b>&</b>"));
        assert!(page.contains("정답은 2번 &quot;세종&quot;"));
        // The error row is listed with its reason; the memory chart marks completed answers.
        assert!(page.contains("prompt of 900 tokens"));
        assert!(page.contains("answer completed"));
        assert!(page.contains("p95"));
        // Deterministic: the same data gives the same bytes.
        assert_eq!(html(&c), html(&c));
    }
}
