//! Cell text shared by the exporters: figures formatted for people (`94 MiB`, `45.0% [29.2,
//! 61.9] 9/20`, `1235 ms`), the comparison columns of Markdown and HTML, and the per-category
//! rows. One definition each; the exporters only lay the cells out.
//!
//! Cells are raw text: model names and paths, categories and error messages come from files the
//! tool does not trust, and each exporter makes every cell inert for its format (Markdown:
//! `markdown::inert`; HTML: [`super::html::escape`]; CSV: `csv::inert`).

use super::data::{CategoryReport, Comparison, RunReport};
use super::stats::{Rate, Spread};

const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// The text of an unknown figure.
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

/// `90.0%` from a fraction.
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

/// `1235 ms`.
pub fn millis(value: Option<f64>) -> String {
    value.map_or_else(dash, |v| format!("{v:.0} ms"))
}

/// `0.123` with `decimals` decimals.
fn fixed(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(dash, |v| format!("{v:.decimals$}"))
}

/// One figure of a latency spread, in ms.
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

/// A column of the comparison table: its name and the cell of one run.
pub type Column = (&'static str, fn(&RunReport) -> String);

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
    ("loglik acc [95% CI]", |r| rate(r.loglik_acc)),
    ("loglik acc_norm [95% CI]", |r| rate(r.loglik_acc_norm)),
    ("chance", |r| percent(r.loglik_chance)),
    ("generated = loglik", |r| {
        percent(r.generated_loglik_agreement)
    }),
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

/// Header of the per-category table, the same in Markdown and HTML.
pub const CATEGORY_HEADER: [&str; 9] = [
    "category",
    "run",
    "done/total",
    "accuracy [95% CI]",
    "MC accuracy",
    "free-text accuracy",
    "exact match",
    "F1",
    "latency mean",
];

/// The rows of the per-category table (cells in [`CATEGORY_HEADER`] order): categories in
/// first-seen order, runs in order within each.
pub fn category_rows(comparison: &Comparison) -> Vec<Vec<String>> {
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
                rows.push(category_cells(run, c));
            }
        }
    }
    rows
}

/// One run's figures in one category.
fn category_cells(run: &RunReport, c: &CategoryReport) -> Vec<String> {
    vec![
        c.category.clone(),
        format!("{} · {}", run.run_id, run.model.name),
        format!("{}/{}", c.done, c.total),
        rate(c.accuracy),
        rate(c.mc_accuracy),
        rate(c.free_text_accuracy),
        rate(c.exact_match),
        fixed(c.mean_f1, 3),
        millis(c.mean_latency_ms),
    ]
}

/// Header of the per-shard table of a merged run.
pub const SHARD_HEADER: [&str; 9] = [
    "run",
    "shard",
    "done/questions",
    "ok",
    "errors",
    "hosts",
    "wall time",
    "throughput",
    "questions/hour",
];

/// The rows of the per-shard table (cells in [`SHARD_HEADER`] order), runs in order.
pub fn shard_rows(runs: &[RunReport]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for run in runs {
        for s in &run.shards {
            rows.push(vec![
                run.run_id.to_string(),
                s.shard_index.to_string(),
                format!("{}/{}", s.done, s.questions),
                s.ok.to_string(),
                s.errors.to_string(),
                s.hosts.clone().unwrap_or_else(|| "not merged".into()),
                s.wall_time_s.map_or("-".into(), |v| format!("{v:.1} s")),
                s.throughput_tok_per_s
                    .map_or("-".into(), |v| format!("{v:.1} tok/s")),
                s.questions_per_hour
                    .map_or("-".into(), |v| format!("{v:.0}")),
            ]);
        }
    }
    rows
}

/// A merged run in one sentence: shards merged and the elapsed time across them.
pub fn merged_text(run: &RunReport) -> Option<String> {
    let m = run.merged.as_ref()?;
    Some(format!(
        "run {}: {} of {} shards merged ({} shard runs); first start to last finish {}, {} questions/hour over it (wall time above sums the shards' generation time)",
        run.run_id,
        m.shards_merged,
        m.shard_count.unwrap_or_default(),
        m.parts,
        m.elapsed_s.map_or("-".into(), |v| format!("{v:.1} s")),
        m.questions_per_hour_elapsed
            .map_or("-".into(), |v| format!("{v:.0}"))
    ))
}
