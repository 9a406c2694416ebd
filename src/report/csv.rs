//! CSV export: one row per run, numbers in plain units (bytes, ms, s, fractions); empty when
//! unknown.

use super::data::{Comparison, RunReport};
use super::stats::Rate;

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

/// The value, or an empty cell.
fn opt<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(String::new, |v| v.to_string())
}

/// The value with `decimals` decimals, or an empty cell.
fn opt_fixed(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(String::new, |v| format!("{v:.decimals$}"))
}

/// successes, n, rate, interval low and high; five empty cells when unknown.
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

/// A cell a spreadsheet cannot take for a formula (OWASP "CSV injection"): text starting with
/// `=`, `+`, `-`, `@`, a tab or a carriage return gets a leading `'`, so a model file named
/// `=HYPERLINK("http://x","y").gguf` stays text. A plain number (`-3.5`) is left as it is: only a
/// cell that does not read as a finite number is prefixed.
fn inert(cell: String) -> String {
    let formula = cell.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if formula && !cell.parse::<f64>().is_ok_and(f64::is_finite) {
        format!("'{cell}")
    } else {
        cell
    }
}

/// CSV: one row per run, numbers in plain units (bytes, ms, s, fractions); empty when unknown.
/// Every cell is [`inert`].
pub fn csv(comparison: &Comparison) -> Vec<u8> {
    let mut writer = ::csv::Writer::from_writer(Vec::new());
    // Writing to a Vec cannot fail; the results are checked anyway for the header and each row.
    let mut rows: Vec<Vec<String>> = vec![CSV_HEADER.iter().map(|s| s.to_string()).collect()];
    rows.extend(comparison.runs.iter().map(row));
    for row in rows {
        if let Err(e) = writer.write_record(row.into_iter().map(inert)) {
            log::error!("CSV row could not be written: {e}");
        }
    }
    writer
        .into_inner()
        .unwrap_or_else(|e| e.into_inner().get_ref().clone())
}

/// One run's cells, in [`CSV_HEADER`] order.
fn row(r: &RunReport) -> Vec<String> {
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
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture::{assert_snapshot, fixture, hostile, HOSTILE_ERROR, HOSTILE_MODEL};

    #[test]
    fn csv_snapshot_and_shape() {
        let bytes = csv(&fixture());
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert_snapshot("compare.csv", &text);
        let mut reader = ::csv::Reader::from_reader(bytes.as_slice());
        assert_eq!(reader.headers().unwrap().len(), CSV_HEADER.len());
        let rows: Vec<::csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|r| r.len() == CSV_HEADER.len()));
    }

    #[test]
    fn formula_cells_are_neutralised_and_numbers_kept() {
        let cell = |text: &str| inert(text.to_string());
        for formula in [
            "=HYPERLINK(\"http://x\",\"y\")",
            "+cmd|' /C calc'!A0",
            "-2+3",
            "@SUM(A1:A2)",
            "\tx",
            "\rx",
            "-",
            "-inf",
            "+NaN",
        ] {
            assert_eq!(cell(formula), format!("'{formula}"), "{formula:?}");
        }
        for kept in [
            "-3.5",
            "-1e-3",
            "+2",
            "0.9000",
            "",
            "models/=x.gguf",
            "prompt=1",
        ] {
            assert_eq!(cell(kept), kept, "{kept:?}");
        }
    }

    #[test]
    fn untrusted_cells_cannot_become_formulas() {
        let bytes = csv(&hostile());
        let mut reader = ::csv::Reader::from_reader(bytes.as_slice());
        let header = reader.headers().unwrap().clone();
        let column = |name: &str| header.iter().position(|h| h == name).unwrap();
        let rows: Vec<::csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert!(rows.iter().all(|r| r.len() == CSV_HEADER.len()));
        // The model name starts with `=`: it reads back as text behind a `'`, otherwise intact.
        assert_eq!(&rows[0][column("model")], format!("'{HOSTILE_MODEL}"));
        assert_eq!(
            &rows[0][column("model_path")],
            format!("models/{HOSTILE_MODEL}.gguf")
        );
        assert_eq!(
            &rows[0][column("errors_by_reason")],
            format!("{HOSTILE_ERROR}=1")
        );
        // No cell of any row starts a formula.
        for row in &rows {
            for cell in row {
                assert!(
                    !cell.starts_with(['=', '+', '-', '@', '\t', '\r'])
                        || cell.parse::<f64>().is_ok_and(f64::is_finite),
                    "{cell:?}"
                );
            }
        }
    }
}
