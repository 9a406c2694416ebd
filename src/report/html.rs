//! HTML export: one self-contained page (inline CSS and SVG, no script, nothing fetched).

use super::cells;
use super::cells::{bytes, category_rows, millis, settings_text, CATEGORY_HEADER, COLUMNS};
use super::charts;
use super::data::{shown_reference, AnswerDetail, Comparison, RunReport};
use plotters::style::RGBColor;
use std::fmt::Write as _;

/// Slowest answers shown per run.
pub const SLOWEST: usize = 5;
/// Failed (error) and wrong answers shown per run, at most.
pub const FAILED: usize = 20;

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

const ANSWER_HEADER: &[&str] = &[
    "id",
    "category",
    "question",
    "reference",
    "answer / error",
    "result",
    "latency",
];

/// Columns of [`ANSWER_HEADER`] holding long text.
const ANSWER_TEXT_COLUMNS: &[usize] = &[2, 3, 4];

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

/// HTML: one self-contained page (inline CSS and SVG, no script, nothing fetched): the comparison
/// table, accuracy per category, and per run its memory timeline, latency distribution, errors,
/// slowest and failed questions.
pub fn html(comparison: &Comparison) -> Vec<u8> {
    let runs = &comparison.runs;
    let mut out = String::new();
    head(&mut out, runs);
    comparison_section(&mut out, runs);
    categories_section(&mut out, comparison);
    for (j, run) in runs.iter().enumerate() {
        run_section(
            &mut out,
            run,
            charts::RUN_COLORS[j % charts::RUN_COLORS.len()],
        );
    }
    out.push_str("</body>\n</html>\n");
    out.into_bytes()
}

/// A table in a horizontally scrolling box; cells of `text_columns` wrap long text.
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>], text_columns: &[usize]) {
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

/// The doctype, `<head>` with the style, and the `<h1>` title.
fn head(out: &mut String, runs: &[RunReport]) {
    let title = match runs {
        [run] => format!("docent-eval · run {} · {}", run.run_id, run.model.name),
        _ => format!("docent-eval · comparison of {} runs", runs.len()),
    };
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"ko\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
}

/// The comparison table, transposed (one column per run) so that every figure is visible
/// without scrolling, and how the figures are computed.
fn comparison_section(out: &mut String, runs: &[RunReport]) {
    out.push_str("<section id=\"comparison\">\n<h2>Comparison</h2>\n");
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
    table(out, &header, &rows, &[]);
    out.push_str("<p class=\"muted\">Accuracy: multiple choice = chosen option equals the key; free text = normalised reference contained in the answer; exact match and F1 after NFKC, whitespace and punctuation normalisation (KorQuAD). Error rows count as wrong. Intervals are 95% Wilson intervals. Latency and TTFT over answered questions; wall time is the generation time summed over sessions.</p>\n</section>\n");
}

/// The accuracy-per-category chart and table, when any run has categories.
fn categories_section(out: &mut String, comparison: &Comparison) {
    let Some(chart) = charts::accuracy_by_category(&comparison.runs) else {
        return;
    };
    out.push_str("<section id=\"categories\">\n<h2>Accuracy per category</h2>\n");
    out.push_str(&chart);
    out.push('\n');
    table(out, &CATEGORY_HEADER, &category_rows(comparison), &[]);
    if let Some(chart) = charts::loglik_by_category(&comparison.runs) {
        out.push_str("<h3>Log-likelihood accuracy per category</h3>\n");
        out.push_str(&chart);
        out.push('\n');
    }
    out.push_str("</section>\n");
}

/// One run: its heading, charts, errors by reason, and slowest, failed and wrong answers.
fn run_section(out: &mut String, run: &RunReport, color: RGBColor) {
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
    if !run.question_format.is_builtin() {
        let _ = writeln!(
            out,
            "<p class=\"muted\">question format: {}</p>",
            escape(&run.question_format.text())
        );
    }
    if let Some(check) = &run.tokenizer_check {
        let _ = writeln!(out, "<pre>{}</pre>", escape(&check.text()));
    }
    shards(out, run);
    out.push_str("<h3>Memory over time</h3>\n");
    out.push_str(&charts::memory_timeline(run));
    out.push_str("\n<h3>Latency distribution</h3>\n");
    out.push_str(&charts::latency_distribution(run, color));
    out.push('\n');
    errors_by_reason(out, run);
    slowest(out, run);
    failed(out, run);
    wrong(out, run);
    out.push_str("</section>\n");
}

/// `Shards` of a merged run: each shard's answers, hosts, wall time and throughput.
fn shards(out: &mut String, run: &RunReport) {
    let rows = cells::shard_rows(std::slice::from_ref(run));
    if rows.is_empty() {
        return;
    }
    out.push_str("<h3>Shards</h3>\n");
    table(out, &cells::SHARD_HEADER, &rows, &[5]);
    if let Some(text) = cells::merged_text(run) {
        let _ = writeln!(out, "<p class=\"muted\">{}</p>", escape(&text));
    }
}

/// `Errors by reason`: count, reason and an example message.
fn errors_by_reason(out: &mut String, run: &RunReport) {
    out.push_str("<h3>Errors by reason</h3>\n");
    if run.errors_by_reason.is_empty() {
        out.push_str("<p class=\"muted\">No errors.</p>\n");
        return;
    }
    let rows: Vec<Vec<String>> = run
        .errors_by_reason
        .iter()
        .map(|e| vec![e.count.to_string(), e.reason.clone(), e.example.clone()])
        .collect();
    table(out, &["count", "reason", "example"], &rows, &[1, 2]);
}

/// `Slowest questions`: the [`SLOWEST`] answered questions with the highest latency.
fn slowest(out: &mut String, run: &RunReport) {
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
    table(
        out,
        ANSWER_HEADER,
        &answer_rows(&slowest),
        ANSWER_TEXT_COLUMNS,
    );
}

/// `Failed questions`: the first [`FAILED`] error rows.
fn failed(out: &mut String, run: &RunReport) {
    let failed: Vec<&AnswerDetail> = run
        .answers
        .iter()
        .filter(|a| a.ok == Some(false))
        .take(FAILED)
        .collect();
    out.push_str("<h3>Failed questions</h3>\n");
    answers_or_none(out, &failed);
}

/// `Wrong answers (shown of total)`: the first [`FAILED`] answered questions scored below 1.
fn wrong(out: &mut String, run: &RunReport) {
    let is_wrong = |a: &&AnswerDetail| a.ok == Some(true) && a.score.is_some_and(|s| s < 1.0);
    let wrong: Vec<&AnswerDetail> = run.answers.iter().filter(is_wrong).take(FAILED).collect();
    let wrong_total = run.answers.iter().filter(is_wrong).count();
    let _ = writeln!(
        out,
        "<h3>Wrong answers ({} of {wrong_total})</h3>",
        wrong.len()
    );
    answers_or_none(out, &wrong);
}

/// A table of `answers`, or `None.` when there are none.
fn answers_or_none(out: &mut String, answers: &[&AnswerDetail]) {
    if answers.is_empty() {
        out.push_str("<p class=\"muted\">None.</p>\n");
    } else {
        table(
            out,
            ANSWER_HEADER,
            &answer_rows(answers),
            ANSWER_TEXT_COLUMNS,
        );
    }
}

/// `error`, `correct`, `wrong`, or `-` when unscored.
fn verdict(a: &AnswerDetail) -> String {
    match (a.ok, a.score) {
        (Some(false), _) => "error".into(),
        (_, Some(s)) if s >= 1.0 => "correct".into(),
        (_, Some(_)) => "wrong".into(),
        _ => "-".into(),
    }
}

/// Answer cells in [`ANSWER_HEADER`] order.
fn answer_rows(answers: &[&AnswerDetail]) -> Vec<Vec<String>> {
    answers
        .iter()
        .map(|a| {
            vec![
                a.question_id.clone(),
                a.category.clone().unwrap_or_default(),
                a.question.clone(),
                shown_reference(a).unwrap_or_default(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture::{fixture, hostile, HOSTILE_CATEGORY, HOSTILE_MODEL};

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

    #[test]
    fn untrusted_text_is_escaped_in_tables_attributes_and_charts() {
        let c = hostile();
        let page = String::from_utf8(html(&c)).unwrap();
        // No markup from the data: not in the tables, the title, nor the SVG text of the charts.
        for raw in [
            "<img",
            "<script",
            "onerror=alert(1)>",
            "</script>",
            "\"http://x\"",
        ] {
            assert!(!page.contains(raw), "{raw} appears raw");
        }
        let category = escape(HOSTILE_CATEGORY);
        assert_eq!(category, "&lt;img src=x onerror=alert(1)&gt;|x");
        // The category table and the chart's label under its bars (plotters escapes SVG text).
        assert!(page.matches(category.as_str()).count() >= 2, "{category}");
        let chart = charts::accuracy_by_category(&c.runs).unwrap();
        assert!(chart.contains("&lt;script&gt;") && chart.contains(&category));
        assert!(!chart.contains("<script") && !chart.contains("<img"));
        // The model name in the title, headings and the chart legend: quotes escaped too.
        assert!(page.contains("<title>docent-eval · comparison of 2 runs</title>"));
        assert!(page.contains("=HYPERLINK(&quot;http://x&quot;,&quot;y&quot;)"));
        assert!(chart.contains("=HYPERLINK(&quot;http://x&quot;,&quot;y&quot;)"));
        let one = Comparison {
            runs: vec![c.runs[0].clone()],
        };
        let page = String::from_utf8(html(&one)).unwrap();
        let title = escape(&format!("docent-eval · run 1 · {HOSTILE_MODEL}"));
        assert!(page.contains(&format!("<title>{title}</title>")));
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!page.contains("<script") && !page.contains("<img"));
    }
}
