//! How sizes, durations and times are written for people and for the database: one formatter
//! each, so every command prints a figure the same way.

/// Bytes per GiB.
const GIB: f64 = (1u64 << 30) as f64;

/// Bytes as a number of GiB (for column-aligned output that formats the number itself).
pub fn gib_value(bytes: u64) -> f64 {
    bytes as f64 / GIB
}

/// `1.23 GiB`.
pub fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", gib_value(bytes))
}

/// `1.23 GiB`, or `-` when unknown (a NULL column).
pub fn gib_or_dash(bytes: Option<i64>) -> String {
    bytes.map_or("-".into(), |b| gib(b.max(0) as u64))
}

/// Bytes as a short figure: MiB below 1 GiB, GiB above.
pub fn human_bytes(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        gib(bytes)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}

/// `1h02m03s`.
pub fn duration_text(seconds: f64) -> String {
    let seconds = seconds.max(0.0).round() as u64;
    format!(
        "{}h{:02}m{:02}s",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

/// Current UTC time as ISO-8601 text with milliseconds, the format of every time column.
pub fn now_text() -> String {
    time_text(chrono::Utc::now())
}

/// A UTC time the way the database stores it.
pub fn time_text(time: chrono::DateTime<chrono::Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(gib(3 << 29), "1.50 GiB");
        assert_eq!(gib_or_dash(None), "-");
        assert_eq!(human_bytes(5 << 20), "5.0 MiB");
        assert_eq!(duration_text(3723.4), "1h02m03s");
        let time = chrono::DateTime::from_timestamp(0, 5_000_000).unwrap();
        assert_eq!(time_text(time), "1970-01-01T00:00:00.005Z");
    }
}
