//! Reports read from the database (the `run_summary` view).

use crate::error::Result;
use crate::store::Store;

fn gib(bytes: Option<i64>) -> String {
    bytes.map_or("-".into(), |b| {
        format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
    })
}

fn number(value: Option<f64>, unit: &str) -> String {
    value.map_or("-".into(), |v| format!("{v:.1}{unit}"))
}

/// A short multi-line summary of one run from `run_summary`.
pub fn summary_text(store: &Store, run_id: i64) -> Result<String> {
    Ok(store.connection().query_row(
        "SELECT model_name, status, done, total, ok, errors, accuracy, mean_f1, mean_latency_ms,
                p50_latency_ms, p95_latency_ms, mean_ttft_ms, throughput_tok_per_s,
                mean_decode_tok_per_s, peak_rss_bytes, peak_gpu_used_bytes, wall_time_s
         FROM run_summary WHERE run_id = ?1",
        [run_id],
        |row| {
            let accuracy: Option<f64> = row.get(6)?;
            let f1: Option<f64> = row.get(7)?;
            Ok(format!(
                "run {run_id} · {} · {}\n  answered {}/{} (ok {}, errors {})  accuracy {}  mean F1 {}\n  latency mean {} p50 {} p95 {}  TTFT mean {}\n  generation {} aggregate, {} per sequence  wall {}\n  peak RSS {}  peak GPU {}",
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
                gib(row.get(14)?),
                gib(row.get(15)?),
            ))
        },
    )?)
}
