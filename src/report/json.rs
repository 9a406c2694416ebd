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
    use crate::report::fixture::{
        assert_snapshot, fixture, hostile, HOSTILE_CATEGORY, HOSTILE_ERROR, HOSTILE_MODEL,
    };

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
    fn untrusted_text_round_trips_with_controls_escaped() {
        let bytes = json(&hostile());
        // serde_json writes C0 controls as `\u001b` escapes: no raw ESC, CR or BEL reaches a
        // terminal, and the only line breaks are the pretty-printer's.
        assert!(!bytes.iter().any(|&b| b < 0x20 && b != b'\n'));
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("\\u001b[2J") && text.contains("\\u0007"));
        // And the text reads back exactly.
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let run = &value["runs"][0];
        assert_eq!(run["model"]["name"], HOSTILE_MODEL);
        assert_eq!(run["status_reason"], HOSTILE_ERROR);
        assert_eq!(run["categories"][1]["category"], HOSTILE_CATEGORY);
        assert_eq!(run["errors_by_reason"][0]["example"], HOSTILE_ERROR);
    }
}
