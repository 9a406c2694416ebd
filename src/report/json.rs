//! JSON export: the summary figures of every run, pretty-printed.

use super::data::Comparison;

/// JSON: `{"runs": [...]}` with every summary figure (not the per-answer detail), pretty-printed.
pub fn json(comparison: &Comparison) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(comparison).unwrap_or_else(|e| {
        // Only non-string map keys could fail; the data has none.
        format!("{{\"error\": \"{e}\"}}").into_bytes()
    });
    bytes.push(b'\n');
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture::{assert_snapshot, fixture};

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
}
