//! Markdown export: one run as a metric/value table, several as one row per run; then accuracy
//! per category and errors by reason.

use super::cells::{
    category_rows, merged_text, shard_rows, CATEGORY_HEADER, COLUMNS, SHARD_HEADER,
};
use super::data::{Comparison, RunReport};
use crate::record::{pieces, TokenizerCheck};
use crate::units::{printable, Lines};
use std::fmt::Write as _;

/// Text from the database (model names and paths, categories, error messages: all from files
/// the tool does not trust) made inert in Markdown, on one line: `&`, `<` and `>` as entities
/// (no raw HTML, no autolink), `|`, `` ` `` and `\` backslash-escaped (no cell break, no code
/// span), line breaks and tabs as spaces (no row break), and any other control character as a
/// visible escape ([`printable`]), since Markdown is what `report` prints on a terminal.
fn inert(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.replace("\r\n", "\n").chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '|' | '`' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' | '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    // The escapes above add no control character, and the backslashes `printable` adds are not
    // doubled.
    printable(&out, Lines::Escape).into_owned()
}

/// `| a | b |` and a newline, each cell [`inert`].
fn row(cells: &[String]) -> String {
    let escaped: Vec<String> = cells.iter().map(|c| inert(c)).collect();
    format!("| {} |\n", escaped.join(" | "))
}

/// The `|---|---|` line under a header of `n` columns.
fn rule(n: usize) -> String {
    format!("|{}\n", "---|".repeat(n))
}

/// Markdown: one run as a metric/value table, several as one row per run; then accuracy per
/// category and errors by reason.
pub fn markdown(comparison: &Comparison) -> String {
    let mut out = String::new();
    match comparison.runs.as_slice() {
        [run] => one_run(&mut out, run),
        runs => comparison_table(&mut out, runs),
    }
    categories(&mut out, comparison);
    shards(&mut out, &comparison.runs);
    question_formats(&mut out, &comparison.runs);
    tokenizer_checks(&mut out, &comparison.runs);
    errors(&mut out, &comparison.runs);
    out
}

/// `### Question format`: the mapping, template and choice label of runs that have one.
fn question_formats(out: &mut String, runs: &[RunReport]) {
    let runs: Vec<&RunReport> = runs
        .iter()
        .filter(|r| !r.question_format.is_builtin())
        .collect();
    if runs.is_empty() {
        return;
    }
    out.push_str("\n### Question format\n\n");
    out.push_str(&row(
        &["run", "mapping", "template", "choice label"].map(String::from)
    ));
    out.push_str(&rule(4));
    for run in runs {
        let f = &run.question_format;
        let template = match (&f.template_sha256, &f.template) {
            (Some(hash), Some(text)) => {
                format!("sha256 {} {text:?}", hash.get(..12).unwrap_or(hash))
            }
            _ => "built-in".into(),
        };
        out.push_str(&row(&[
            run.run_id.to_string(),
            f.mapping.clone().unwrap_or_else(|| "-".into()),
            template,
            f.mc_label.clone().unwrap_or_else(|| "letter".into()),
        ]));
    }
}

/// `### Tokenizer check`: each checked run's counts, then its first differing prompts.
fn tokenizer_checks(out: &mut String, runs: &[RunReport]) {
    let checked: Vec<(i64, &TokenizerCheck)> = runs
        .iter()
        .filter_map(|r| Some((r.run_id, r.tokenizer_check.as_ref()?)))
        .collect();
    if checked.is_empty() {
        return;
    }
    out.push_str("\n### Tokenizer check\n\n");
    out.push_str(&row(&[
        "run",
        "tokenizer.json",
        "prompts",
        "differ",
        "GGUF tokens",
        "HF tokens",
    ]
    .map(String::from)));
    out.push_str(&rule(6));
    for (run_id, check) in &checked {
        out.push_str(&row(&[
            run_id.to_string(),
            check.hf_tokenizer.clone(),
            check.prompts_checked.to_string(),
            check.prompts_differ.to_string(),
            check.gguf_tokens.to_string(),
            check.hf_tokens.to_string(),
        ]));
    }
    if checked.iter().all(|(_, c)| c.examples.is_empty()) {
        return;
    }
    out.push('\n');
    out.push_str(&row(
        &["run", "question", "token", "text", "GGUF", "HF"].map(String::from)
    ));
    out.push_str(&rule(6));
    for (run_id, check) in checked {
        for e in &check.examples {
            out.push_str(&row(&[
                run_id.to_string(),
                e.question_id.clone(),
                e.token_index.to_string(),
                e.snippet.clone(),
                pieces(&e.gguf),
                pieces(&e.hf),
            ]));
        }
    }
}

/// `## Run N · model` and a metric/value table.
fn one_run(out: &mut String, run: &RunReport) {
    let _ = writeln!(out, "## Run {} · {}\n", run.run_id, inert(&run.model.name));
    out.push_str(&row(&["metric".into(), "value".into()]));
    out.push_str(&rule(2));
    for (name, value) in COLUMNS {
        out.push_str(&row(&[name.to_string(), value(run)]));
    }
}

/// `## Comparison of N runs` and one row per run.
fn comparison_table(out: &mut String, runs: &[RunReport]) {
    let _ = writeln!(out, "## Comparison of {} runs\n", runs.len());
    let header: Vec<String> = COLUMNS.iter().map(|(name, _)| name.to_string()).collect();
    out.push_str(&row(&header));
    out.push_str(&rule(COLUMNS.len()));
    for run in runs {
        let cells: Vec<String> = COLUMNS.iter().map(|(_, value)| value(run)).collect();
        out.push_str(&row(&cells));
    }
}

/// `### Per category`, when any run has categories.
fn categories(out: &mut String, comparison: &Comparison) {
    if comparison.runs.iter().all(|r| r.categories.is_empty()) {
        return;
    }
    out.push_str("\n### Per category\n\n");
    out.push_str(&row(&CATEGORY_HEADER.map(String::from)));
    out.push_str(&rule(CATEGORY_HEADER.len()));
    for cells in category_rows(comparison) {
        out.push_str(&row(&cells));
    }
}

/// `### Shards`, when any run is merged from shards: one row per shard, then the elapsed time.
fn shards(out: &mut String, runs: &[RunReport]) {
    let rows = shard_rows(runs);
    if rows.is_empty() {
        return;
    }
    out.push_str("\n### Shards\n\n");
    out.push_str(&row(&SHARD_HEADER.map(String::from)));
    out.push_str(&rule(SHARD_HEADER.len()));
    for cells in rows {
        out.push_str(&row(&cells));
    }
    for text in runs.iter().filter_map(merged_text) {
        let _ = writeln!(out, "\n{}", inert(&text));
    }
}

/// `### Errors by reason`, when any run has errors.
fn errors(out: &mut String, runs: &[RunReport]) {
    if runs.iter().all(|r| r.errors_by_reason.is_empty()) {
        return;
    }
    out.push_str("\n### Errors by reason\n\n");
    out.push_str(&row(
        &["run", "count", "reason", "example"].map(String::from)
    ));
    out.push_str(&rule(4));
    for run in runs {
        for e in &run.errors_by_reason {
            out.push_str(&row(&[
                run.run_id.to_string(),
                e.count.to_string(),
                e.reason.clone(),
                e.example.clone(),
            ]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture::{
        assert_snapshot, fixture, hostile, HOSTILE_CATEGORY, HOSTILE_ERROR, HOSTILE_MODEL,
    };

    #[test]
    fn markdown_snapshots() {
        let c = fixture();
        assert_snapshot("compare.md", &markdown(&c));
        let one = Comparison {
            runs: vec![c.runs[0].clone()],
        };
        assert_snapshot("report.md", &markdown(&one));
    }

    /// The `|` of a table line that are not backslash-escaped: one more than its cells.
    fn cell_breaks(line: &str) -> usize {
        let mut breaks = 0;
        let mut escaped = false;
        for c in line.chars() {
            match (escaped, c) {
                (false, '\\') => escaped = true,
                (false, '|') => breaks += 1,
                _ => escaped = false,
            }
        }
        breaks
    }

    #[test]
    fn untrusted_text_is_inert_markdown() {
        assert_eq!(
            inert(HOSTILE_CATEGORY),
            "&lt;img src=x onerror=alert(1)&gt;\\|x"
        );
        assert_eq!(
            inert(HOSTILE_ERROR),
            "bad answer\\x1b[2J\\u{202e}txt.exe forged line \\`code\\` &amp;amp;"
        );
        assert_eq!(inert("a\\|b\r\nc\td"), "a\\\\\\|b c d");
        let hostile = hostile();
        let one = Comparison {
            runs: vec![hostile.runs[0].clone()],
        };
        for text in [markdown(&hostile), markdown(&one)] {
            // No raw HTML, no control character a terminal would act on, no reordered text.
            assert!(
                !text.contains("<img") && !text.contains("<script"),
                "{text}"
            );
            assert_eq!(printable(&text, Lines::Keep), text);
            assert!(text.contains("&lt;img src=x onerror=alert(1)&gt;\\|x"));
            assert!(text.contains("&lt;script&gt;"));
            assert!(text.contains("\\x1b[2J\\u{202e}txt.exe forged line"));
            assert!(text.contains("=HYPERLINK(\"http://x\",\"y\")\\x1b]0;owned\\x07"));
            // Every line of a table (header, rule, rows) has as many cell breaks as its header:
            // no cell or row is forged.
            let mut header_breaks = None;
            for line in text.lines() {
                if !line.starts_with('|') {
                    header_breaks = None;
                    continue;
                }
                let breaks = cell_breaks(line);
                assert_eq!(breaks, *header_breaks.get_or_insert(breaks), "{line}");
            }
        }
        assert!(markdown(&one).starts_with(&format!("## Run 1 · {}", inert(HOSTILE_MODEL))));
    }
}
