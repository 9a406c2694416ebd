//! `docent-eval status`: a run's progress, rate, ETA and last memory sample, from the database.

use crate::error::{usage, Result};
use crate::holder::holder_alive;
use crate::store::{MemoryPoint, RunStatus, ShardSummary, Store};
use crate::units::{gib_or_dash, printable, Lines};
use std::borrow::Cow;

/// What `docent-eval status` reports about one run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StatusReport {
    /// Run id.
    pub run_id: i64,
    /// Stored status.
    pub status: RunStatus,
    /// Stored status, corrected for a dead holder: `running` with no live process reads `dead`.
    pub state: String,
    /// Why it failed or stopped.
    pub status_reason: Option<String>,
    /// Model name.
    pub model: String,
    /// Recorded holder process.
    pub holder_pid: Option<i64>,
    /// Whether that process is alive (same pid and start time).
    pub holder_alive: bool,
    /// Questions in the run.
    pub total: i64,
    /// Committed answers.
    pub done: i64,
    /// `ok` answers.
    pub ok: i64,
    /// `error` answers.
    pub errors: i64,
    /// Answers per minute over the last `rate_window_minutes` (at most 5, less early in a run).
    pub recent_per_minute: f64,
    /// The window used for the rate.
    pub rate_window_minutes: f64,
    /// Seconds to finish at the recent rate, when it is running.
    pub eta_seconds: Option<f64>,
    /// Last heartbeat of the holder.
    pub updated_at: String,
    /// The last memory sample (GPUs summed).
    pub last_sample: Option<MemoryPoint>,
    /// The last error row: question id and message.
    pub last_error: Option<(String, String)>,
    /// Sessions (start + resumes).
    pub sessions: i64,
    /// The run's shard (`shard 2/4 by id`) or split (`merged from 4 shards by id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    /// A merged run: each shard's progress, hosts and speed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<ShardSummary>,
}

/// Minutes of recent answers used for the rate and the ETA.
const RATE_WINDOW_MINUTES: f64 = 5.0;

/// Read a run's progress from the database (works while another process is writing it).
pub fn status(store: &Store, run_id: i64) -> Result<StatusReport> {
    let run = store
        .run_details(run_id)?
        .ok_or_else(|| usage(format!("run {run_id} does not exist")))?;
    let summary = store
        .run_summary(run_id)?
        .ok_or_else(|| usage(format!("run {run_id} does not exist")))?;
    let alive = match (run.holder_pid, &run.holder_started_at) {
        (Some(pid), Some(started)) => holder_alive(pid, started),
        _ => false,
    };
    let (recent, covered_minutes) = store.recent_answers(run_id, RATE_WINDOW_MINUTES)?;
    let window_minutes = covered_minutes
        .unwrap_or(RATE_WINDOW_MINUTES)
        .clamp(1.0 / 60.0, RATE_WINDOW_MINUTES);
    let recent_per_minute = recent as f64 / window_minutes;
    let eta_seconds = (alive && recent_per_minute > 0.0)
        .then(|| (summary.total - summary.done).max(0) as f64 / recent_per_minute * 60.0);
    Ok(StatusReport {
        run_id,
        state: if run.status == RunStatus::Running && !alive {
            "dead (killed or crashed; --resume continues it)".into()
        } else {
            run.status.to_string()
        },
        status: run.status,
        status_reason: run.status_reason,
        model: run.model_name,
        holder_pid: run.holder_pid,
        holder_alive: alive,
        total: summary.total,
        done: summary.done,
        ok: summary.ok,
        errors: summary.errors,
        recent_per_minute,
        rate_window_minutes: window_minutes,
        eta_seconds,
        updated_at: run.updated_at,
        last_sample: store.last_memory_sample(run_id)?,
        last_error: store.last_error(run_id)?,
        sessions: run.sessions,
        shard: run
            .settings
            .as_ref()
            .and_then(|c| c.shard.as_ref())
            .map(|shard| shard.label()),
        shards: store.shard_summaries(run_id)?,
    })
}

/// A value from the database on one line of the status text: control characters shown as
/// escapes ([`printable`]).
fn shown(text: &str) -> Cow<'_, str> {
    printable(text, Lines::Escape)
}

/// `status` as text for a person. The model name, status reason, question id, error message and
/// times come from a database and question files the tool does not trust: each is [`shown`].
pub fn status_text(report: &StatusReport) -> String {
    let mut text = format!(
        "run {} · {} · {}\n  progress {}/{} ({:.1}%)  ok {}  errors {}  sessions {}\n",
        report.run_id,
        shown(&report.model),
        shown(&report.state),
        report.done,
        report.total,
        100.0 * report.done as f64 / report.total.max(1) as f64,
        report.ok,
        report.errors,
        report.sessions
    );
    match (report.holder_pid, report.holder_alive) {
        (Some(pid), true) => {
            text += &format!(
                "  held by process {pid} (alive), last heartbeat {}\n",
                shown(&report.updated_at)
            )
        }
        (Some(pid), false) => {
            text += &format!("  recorded holder {pid} is gone; `--resume` takes the run over\n")
        }
        (None, _) => {
            text += &format!(
                "  no process holds it; last update {}\n",
                shown(&report.updated_at)
            )
        }
    }
    text += &format!(
        "  rate {:.1} answers/min over the last {:.1} min",
        report.recent_per_minute, report.rate_window_minutes
    );
    if let Some(eta) = report.eta_seconds {
        text += &format!(", ETA {}", crate::units::duration_text(eta));
    }
    text.push('\n');
    if let Some(sample) = &report.last_sample {
        text += &format!(
            "  memory at {}: RSS {}  RAM {} / {}  swap {} / {}  GPU {}\n",
            shown(&sample.at),
            gib_or_dash(sample.rss_bytes),
            gib_or_dash(sample.ram_used_bytes),
            gib_or_dash(sample.ram_total_bytes),
            gib_or_dash(sample.swap_used_bytes),
            gib_or_dash(sample.swap_total_bytes),
            sample
                .gpu_used_bytes
                .map_or("n/a (no NVML)".into(), |g| format!(
                    "{} / {}",
                    gib_or_dash(Some(g)),
                    gib_or_dash(sample.gpu_total_bytes)
                )),
        );
    }
    if let Some(reason) = &report.status_reason {
        text += &format!("  reason: {}\n", shown(reason));
    }
    if let Some(shard) = &report.shard {
        text += &format!("  {shard}\n");
    }
    for s in &report.shards {
        text += &format!(
            "    shard {}: {}/{}  ok {}  errors {}  on {}  {} s  {} questions/hour\n",
            s.shard_index,
            s.done,
            s.questions,
            s.ok,
            s.errors,
            shown(s.hosts.as_deref().unwrap_or("(not merged)")),
            s.wall_time_s.map_or("-".into(), |v| format!("{v:.1}")),
            s.questions_per_hour
                .map_or("-".into(), |v| format!("{v:.0}"))
        );
    }
    if let Some((question, error)) = &report.last_error {
        text += &format!("  last error: {}: {}\n", shown(question), shown(error));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture::{HOSTILE_ERROR, HOSTILE_MODEL};

    fn hostile_report() -> StatusReport {
        StatusReport {
            run_id: 7,
            status: RunStatus::Failed,
            state: RunStatus::Failed.to_string(),
            status_reason: Some(HOSTILE_ERROR.into()),
            model: HOSTILE_MODEL.into(),
            holder_pid: None,
            holder_alive: false,
            total: 10,
            done: 3,
            ok: 2,
            errors: 1,
            recent_per_minute: 0.0,
            rate_window_minutes: 5.0,
            eta_seconds: None,
            updated_at: "2026-01-01T00:00:00.000Z\u{1b}[1A".into(),
            last_sample: Some(MemoryPoint {
                at: "2026-01-01T00:00:00.000Z".into(),
                ..Default::default()
            }),
            last_error: Some(("q\u{9b}1\u{2066}".into(), HOSTILE_ERROR.into())),
            sessions: 1,
            shard: None,
            shards: Vec::new(),
        }
    }

    #[test]
    fn status_text_shows_control_characters_as_escapes() {
        let text = status_text(&hostile_report());
        // Nothing a terminal acts on; the error's line break does not forge a line.
        assert_eq!(printable(&text, Lines::Keep), text);
        assert!(!text.contains('\t'));
        assert_eq!(text.lines().count(), 7, "{text}");
        assert!(
            text.starts_with("run 7 · =HYPERLINK(\"http://x\",\"y\")\\x1b]0;owned\\x07 · failed\n")
        );
        let shown_error = "bad answer\\x1b[2J\\u{202e}txt.exe\\nforged line `code` &amp;";
        assert!(
            text.contains(&format!("  reason: {shown_error}\n")),
            "{text}"
        );
        assert!(text.contains(&format!(
            "  last error: q\\u{{9b}}1\\u{{2066}}: {shown_error}\n"
        )));
        assert!(text.contains("last update 2026-01-01T00:00:00.000Z\\x1b[1A\n"));
    }

    #[test]
    fn status_json_escapes_controls_and_round_trips() {
        let report = hostile_report();
        let text = serde_json::to_string_pretty(&report).unwrap();
        assert!(!text.chars().any(|c| c.is_ascii_control() && c != '\n'));
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["model"], HOSTILE_MODEL);
        assert_eq!(value["status_reason"], HOSTILE_ERROR);
        assert_eq!(value["last_error"][0], "q\u{9b}1\u{2066}");
        assert_eq!(value["last_error"][1], HOSTILE_ERROR);
    }
}
