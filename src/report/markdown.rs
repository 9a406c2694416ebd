//! Markdown export: one run as a metric/value table, several as one row per run; then accuracy
//! per category and errors by reason.

use super::cells::{category_rows, CATEGORY_HEADER, COLUMNS};
use super::data::{Comparison, RunReport};
use std::fmt::Write as _;

/// A table cell: `|` escaped, line breaks as spaces.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// `| a | b |` and a newline.
fn row(cells: &[String]) -> String {
    let escaped: Vec<String> = cells.iter().map(|c| cell(c)).collect();
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
    errors(&mut out, &comparison.runs);
    out
}

/// `## Run N · model` and a metric/value table.
fn one_run(out: &mut String, run: &RunReport) {
    let _ = writeln!(out, "## Run {} · {}\n", run.run_id, run.model.name);
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
    use crate::report::fixture::{assert_snapshot, fixture};

    #[test]
    fn markdown_snapshots() {
        let c = fixture();
        assert_snapshot("compare.md", &markdown(&c));
        let one = Comparison {
            runs: vec![c.runs[0].clone()],
        };
        assert_snapshot("report.md", &markdown(&one));
    }
}
