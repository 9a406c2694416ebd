//! SQLite store: schema migrations from `sql/` applied by `PRAGMA user_version`, WAL, one
//! transaction per finished answer. SQL text lives in `sql/` or as constant statements here; no
//! statement is ever built from user input (every value is a bound parameter).

use crate::dataset::Question;
use crate::error::{Error, Result};
use crate::monitor::MemorySample;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/migrations.rs"));
}

/// The schema version this binary writes.
pub fn schema_version() -> u32 {
    embedded::MIGRATIONS.last().map_or(0, |m| m.0)
}

/// Current UTC time as ISO-8601 text with milliseconds, the format of every time column.
pub fn now_text() -> String {
    time_text(chrono::Utc::now())
}

/// Format a UTC time the way the database stores it.
pub fn time_text(time: chrono::DateTime<chrono::Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Lifecycle of a run, as stored in `runs.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// A process is (or was, if it died) working on it.
    Running,
    /// Stopped by a signal or `stop`; resumable.
    Interrupted,
    /// Every question has a committed answer row.
    Finished,
    /// Stopped by an error (model load, decode, memory); resumable once fixed.
    Failed,
}

impl RunStatus {
    /// The text stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Finished => "finished",
            RunStatus::Failed => "failed",
        }
    }

    fn parse(text: &str) -> RunStatus {
        match text {
            "interrupted" => RunStatus::Interrupted,
            "finished" => RunStatus::Finished,
            "failed" => RunStatus::Failed,
            _ => RunStatus::Running,
        }
    }
}

/// What identifies and describes a run when it is created.
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    /// Model file as given.
    pub model_path: &'a str,
    /// Short model name (file stem or GGUF `general.name`).
    pub model_name: &'a str,
    /// Model file size.
    pub model_size_bytes: u64,
    /// Model file hash.
    pub model_sha256: &'a str,
    /// Question file as given.
    pub questions_path: &'a str,
    /// Question file hash.
    pub questions_sha256: &'a str,
    /// Identity settings as JSON.
    pub config_json: &'a str,
    /// Host description as JSON.
    pub host_json: &'a str,
    /// The questions of the run (after `--limit`).
    pub questions: &'a [Question],
}

/// A run as read back from the database.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// Run id.
    pub id: i64,
    /// Status.
    pub status: RunStatus,
    /// Model path recorded at creation.
    pub model_path: String,
    /// Model hash.
    pub model_sha256: String,
    /// Question file path recorded at creation.
    pub questions_path: String,
    /// Question file hash.
    pub questions_sha256: String,
    /// Identity settings.
    pub config_json: String,
    /// Number of questions in the run.
    pub question_count: i64,
    /// Process holding the run, if recorded.
    pub holder_pid: Option<i64>,
    /// When that process started (to tell a reused pid apart).
    pub holder_started_at: Option<String>,
}

/// One finished question, ready to be committed.
#[derive(Debug, Clone, Default)]
pub struct AnswerRow {
    /// Question id.
    pub question_id: String,
    /// `ok` or `error`.
    pub ok: bool,
    /// Generated text.
    pub answer: Option<String>,
    /// Why the question failed.
    pub error: Option<String>,
    /// eos | length | context.
    pub finish_reason: Option<String>,
    /// Prompt tokens.
    pub prompt_tokens: Option<i64>,
    /// Prompt tokens reused from a shared prefix.
    pub prompt_tokens_reused: Option<i64>,
    /// Generated tokens.
    pub completion_tokens: Option<i64>,
    /// Taken for decoding.
    pub queued_at: Option<String>,
    /// Prompt entered a batch.
    pub started_at: Option<String>,
    /// First token sampled.
    pub first_token_at: Option<String>,
    /// Generation ended.
    pub finished_at: Option<String>,
    /// first_token_at - started_at.
    pub ttft_ms: Option<f64>,
    /// finished_at - started_at.
    pub latency_ms: Option<f64>,
    /// (completion_tokens - 1) / (finished_at - first_token_at).
    pub decode_tok_per_s: Option<f64>,
    /// Process RSS when the answer was committed.
    pub rss_bytes: Option<i64>,
    /// GPU memory used when the answer was committed.
    pub gpu_used_bytes: Option<i64>,
    /// Score (see `score`).
    pub score: Option<f64>,
    /// Exact match, short answers.
    pub exact_match: Option<bool>,
    /// Character F1, short answers.
    pub f1: Option<f64>,
    /// Extracted choice, multiple choice.
    pub chosen_index: Option<i64>,
    /// Sequence slot that produced it.
    pub parallel_slot: Option<i64>,
}

/// An open results database.
pub struct Store {
    connection: Connection,
    path: PathBuf,
}

impl Store {
    /// Open (creating if needed) a results database and bring its schema up to date. A database
    /// written by a newer docent-eval is refused.
    pub fn open(path: &Path) -> Result<Store> {
        let connection = Connection::open(path).map_err(|e| Error::Database {
            path: path.to_path_buf(),
            reason: format!("cannot open: {e}; check the --db path"),
        })?;
        let store = Store {
            connection,
            path: path.to_path_buf(),
        };
        store.configure()?;
        store.migrate()?;
        Ok(store)
    }

    /// Open an existing database read-mostly (for status/report). Refuses a missing file.
    pub fn open_existing(path: &Path) -> Result<Store> {
        if !path.exists() {
            return Err(Error::Usage(format!(
                "database {} does not exist; check the --db path",
                path.display()
            )));
        }
        Store::open(path)
    }

    /// The database path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying connection, for read queries of the report layer.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    fn configure(&self) -> Result<()> {
        // FULL makes each committed answer survive a power loss or reboot, not only a killed
        // process; the writer thread keeps the fsync off the decode loop.
        self.connection.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;
             PRAGMA busy_timeout = 10000;",
        )?;
        Ok(())
    }

    fn migrate(&self) -> Result<()> {
        let current: u32 = self
            .connection
            .query_row("PRAGMA user_version", [], |row| row.get(0))?;
        let latest = schema_version();
        if current > latest {
            return Err(Error::Database {
                path: self.path.clone(),
                reason: format!(
                    "schema version {current} is newer than this docent-eval understands ({latest}); upgrade docent-eval or use another --db"
                ),
            });
        }
        for (version, file, sql) in embedded::MIGRATIONS {
            if *version <= current {
                continue;
            }
            let apply = || -> rusqlite::Result<()> {
                let tx = self.connection.unchecked_transaction()?;
                tx.execute_batch(sql)?;
                tx.pragma_update(None, "user_version", version)?;
                tx.commit()
            };
            apply().map_err(|e| Error::Database {
                path: self.path.clone(),
                reason: format!("migration {file} failed: {e}"),
            })?;
            log::info!("applied schema migration {file}");
        }
        self.connection.execute_batch(embedded::VIEWS)?;
        Ok(())
    }

    /// Cached sha256 of a file keyed by canonical path, size and mtime; `compute` runs on a miss.
    pub fn cached_file_hash(
        &self,
        path: &Path,
        compute: impl FnOnce() -> Result<String>,
    ) -> Result<String> {
        let canonical = std::fs::canonicalize(path).map_err(|e| Error::io(path, e))?;
        let metadata = std::fs::metadata(&canonical).map_err(|e| Error::io(path, e))?;
        let mtime_ns = metadata
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as i64);
        let key = canonical.to_string_lossy().into_owned();
        let size = metadata.len() as i64;
        let cached: Option<String> = self
            .connection
            .query_row(
                "SELECT sha256 FROM file_hashes WHERE path = ?1 AND size_bytes = ?2 AND mtime_ns = ?3",
                params![key, size, mtime_ns],
                |row| row.get(0),
            )
            .optional()?;
        if let Some(hash) = cached {
            return Ok(hash);
        }
        let hash = compute()?;
        self.connection.execute(
            "INSERT OR REPLACE INTO file_hashes(path, size_bytes, mtime_ns, sha256) VALUES (?1, ?2, ?3, ?4)",
            params![key, size, mtime_ns, hash],
        )?;
        Ok(hash)
    }

    /// Create a run with its questions, in one transaction. Returns the run id.
    pub fn create_run(&self, run: &NewRun<'_>) -> Result<i64> {
        let tx = self.connection.unchecked_transaction()?;
        let now = now_text();
        tx.execute(
            "INSERT INTO runs(status, started_at, updated_at, model_path, model_name, model_size_bytes,
                              model_sha256, questions_path, questions_sha256, question_count,
                              config_json, host_json)
             VALUES ('running', ?1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                now,
                run.model_path,
                run.model_name,
                run.model_size_bytes as i64,
                run.model_sha256,
                run.questions_path,
                run.questions_sha256,
                run.questions.len() as i64,
                run.config_json,
                run.host_json
            ],
        )?;
        let run_id = tx.last_insert_rowid();
        {
            let mut insert = tx.prepare(
                "INSERT INTO questions(run_id, question_id, ordinal, question, reference, answer_index,
                                       choices_json, category, context, extra_json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            for q in run.questions {
                let choices = q
                    .choices
                    .as_ref()
                    .map(|c| serde_json::to_string(c).unwrap_or_default());
                let extra = (!q.extra.is_empty())
                    .then(|| serde_json::Value::Object(q.extra.clone()).to_string());
                insert.execute(params![
                    run_id,
                    q.id,
                    q.ordinal as i64,
                    q.question,
                    q.reference,
                    q.answer_index.map(|i| i as i64),
                    choices,
                    q.category,
                    q.context,
                    extra
                ])?;
            }
        }
        tx.commit()?;
        Ok(run_id)
    }

    /// A run by id.
    pub fn run(&self, run_id: i64) -> Result<Option<RunRecord>> {
        self.query_run("SELECT id, status, model_path, model_sha256, questions_path, questions_sha256, config_json, question_count, holder_pid, holder_started_at FROM runs WHERE id = ?1", params![run_id])
    }

    /// The most recent run that is not finished.
    pub fn latest_unfinished_run(&self) -> Result<Option<RunRecord>> {
        self.query_run("SELECT id, status, model_path, model_sha256, questions_path, questions_sha256, config_json, question_count, holder_pid, holder_started_at FROM runs WHERE status != 'finished' ORDER BY id DESC LIMIT 1", [])
    }

    /// The most recent run of any status.
    pub fn latest_run(&self) -> Result<Option<RunRecord>> {
        self.query_run("SELECT id, status, model_path, model_sha256, questions_path, questions_sha256, config_json, question_count, holder_pid, holder_started_at FROM runs ORDER BY id DESC LIMIT 1", [])
    }

    fn query_run(&self, sql: &str, params: impl rusqlite::Params) -> Result<Option<RunRecord>> {
        Ok(self
            .connection
            .query_row(sql, params, |row| {
                Ok(RunRecord {
                    id: row.get(0)?,
                    status: RunStatus::parse(&row.get::<_, String>(1)?),
                    model_path: row.get(2)?,
                    model_sha256: row.get(3)?,
                    questions_path: row.get(4)?,
                    questions_sha256: row.get(5)?,
                    config_json: row.get(6)?,
                    question_count: row.get(7)?,
                    holder_pid: row.get(8)?,
                    holder_started_at: row.get(9)?,
                })
            })
            .optional()?)
    }

    /// Ids of the questions of a run that already have a committed answer row.
    pub fn answered_question_ids(&self, run_id: i64) -> Result<std::collections::HashSet<String>> {
        let mut statement = self
            .connection
            .prepare("SELECT question_id FROM answers WHERE run_id = ?1")?;
        let ids = statement
            .query_map(params![run_id], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(ids)
    }

    /// Take run `run_id` for this process (one writer per run). In one IMMEDIATE transaction:
    /// if another live process holds it, refuse with [`Error::Held`]; a holder that is gone
    /// (killed, crashed) is taken over.
    pub fn claim_run(
        &self,
        run_id: i64,
        pid: i64,
        process_started_at: &str,
        holder_alive: impl Fn(i64, &str) -> bool,
    ) -> Result<()> {
        let tx = rusqlite::Transaction::new_unchecked(
            &self.connection,
            rusqlite::TransactionBehavior::Immediate,
        )?;
        let holder: Option<(Option<i64>, Option<String>)> = tx
            .query_row(
                "SELECT holder_pid, holder_started_at FROM runs WHERE id = ?1",
                params![run_id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        if let Some((Some(holder_pid), Some(since))) = holder {
            let same_process = holder_pid == pid && since == process_started_at;
            if !same_process && holder_alive(holder_pid, &since) {
                return Err(Error::Held {
                    run_id,
                    pid: holder_pid,
                    since,
                    db: self.path.display().to_string(),
                });
            }
            if !same_process {
                log::warn!(
                    "run {run_id} was held by process {holder_pid}, which is gone; taking it over"
                );
            }
        }
        tx.execute(
            "UPDATE runs SET status = 'running', status_reason = NULL, finished_at = NULL,
                             holder_pid = ?2, holder_started_at = ?3, updated_at = ?4,
                             sessions = sessions + 1
             WHERE id = ?1",
            params![run_id, pid, process_started_at, now_text()],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Record what the engine chose for this session (layers, context, threads, prompt format).
    pub fn set_engine_json(&self, run_id: i64, engine_json: &str) -> Result<()> {
        self.connection.execute(
            "UPDATE runs SET engine_json = ?2 WHERE id = ?1",
            params![run_id, engine_json],
        )?;
        Ok(())
    }

    /// Record the preflight prediction of the run's peak memory.
    pub fn set_predicted_peak(&self, run_id: i64, bytes: u64) -> Result<()> {
        self.connection.execute(
            "UPDATE runs SET predicted_peak_bytes = ?2 WHERE id = ?1",
            params![run_id, bytes as i64],
        )?;
        Ok(())
    }

    /// End a session: set the final status, release the hold, add the active time.
    pub fn end_session(
        &self,
        run_id: i64,
        status: RunStatus,
        reason: Option<&str>,
        active_ms_delta: i64,
    ) -> Result<()> {
        let now = now_text();
        let finished_at = (status == RunStatus::Finished).then_some(now.as_str());
        self.connection.execute(
            "UPDATE runs SET status = ?2, status_reason = ?3, finished_at = ?4, updated_at = ?5,
                             holder_pid = NULL, holder_started_at = NULL,
                             active_ms = active_ms + ?6
             WHERE id = ?1",
            params![
                run_id,
                status.as_str(),
                reason,
                finished_at,
                now,
                active_ms_delta
            ],
        )?;
        Ok(())
    }

    /// Heartbeat: the holder is alive; add generation time done since the last heartbeat.
    pub fn heartbeat(&self, run_id: i64, active_ms_delta: i64) -> Result<()> {
        self.connection.execute(
            "UPDATE runs SET updated_at = ?2, active_ms = active_ms + ?3 WHERE id = ?1",
            params![run_id, now_text(), active_ms_delta],
        )?;
        Ok(())
    }

    /// Commit one answer in its own transaction.
    pub fn insert_answer(&self, run_id: i64, a: &AnswerRow) -> Result<()> {
        let tx = self.connection.unchecked_transaction()?;
        tx.execute(
            "INSERT INTO answers(run_id, question_id, status, answer, error, finish_reason,
                                 prompt_tokens, prompt_tokens_reused, completion_tokens,
                                 queued_at, started_at, first_token_at, finished_at,
                                 ttft_ms, latency_ms, decode_tok_per_s, rss_bytes, gpu_used_bytes,
                                 score, exact_match, f1, chosen_index, parallel_slot)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                     ?18, ?19, ?20, ?21, ?22, ?23)",
            params![
                run_id,
                a.question_id,
                if a.ok { "ok" } else { "error" },
                a.answer,
                a.error,
                a.finish_reason,
                a.prompt_tokens,
                a.prompt_tokens_reused,
                a.completion_tokens,
                a.queued_at,
                a.started_at,
                a.first_token_at,
                a.finished_at,
                a.ttft_ms,
                a.latency_ms,
                a.decode_tok_per_s,
                a.rss_bytes,
                a.gpu_used_bytes,
                a.score,
                a.exact_match,
                a.f1,
                a.chosen_index,
                a.parallel_slot
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Store one memory sample: one row per GPU, or one row with NULL GPU columns without NVML.
    pub fn insert_memory_sample(&self, run_id: i64, sample: &MemorySample) -> Result<()> {
        let tx = self.connection.unchecked_transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO memory_samples(run_id, at, rss_bytes, ram_used_bytes, ram_total_bytes,
                                            swap_used_bytes, swap_total_bytes, gpu_index,
                                            gpu_used_bytes, gpu_total_bytes, gpu_util_pct)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            let host = params![
                run_id,
                sample.at,
                sample.rss_bytes as i64,
                sample.ram_used_bytes as i64,
                sample.ram_total_bytes as i64,
                sample.swap_used_bytes as i64,
                sample.swap_total_bytes as i64
            ];
            if sample.gpus.is_empty() {
                let mut values: Vec<&dyn rusqlite::ToSql> = host.to_vec();
                let null = rusqlite::types::Null;
                values.extend([&null as &dyn rusqlite::ToSql, &null, &null, &null]);
                insert.execute(values.as_slice())?;
            }
            for gpu in &sample.gpus {
                let index = gpu.index as i64;
                let used = gpu.used_bytes as i64;
                let total = gpu.total_bytes as i64;
                let util = gpu.util_pct.map(i64::from);
                let mut values: Vec<&dyn rusqlite::ToSql> = host.to_vec();
                values.extend([&index as &dyn rusqlite::ToSql, &used, &total, &util]);
                insert.execute(values.as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_once_and_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        {
            let store = Store::open(&path).unwrap();
            let version: u32 = store
                .connection()
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap();
            assert_eq!(version, schema_version());
            let views: i64 = store
                .connection()
                .query_row(
                    "SELECT COUNT(*) FROM sqlite_master WHERE type='view' AND name IN ('run_summary','answers_view')",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(views, 2);
        }
        Store::open(&path).expect("reopening applies nothing new");
        {
            let connection = Connection::open(&path).unwrap();
            connection
                .pragma_update(None, "user_version", schema_version() + 1)
                .unwrap();
        }
        let error = Store::open(&path).err().expect("newer schema refused");
        assert!(
            error.to_string().contains("newer than this docent-eval"),
            "{error}"
        );
        assert_eq!(error.exit_code(), crate::error::exit_code::USAGE);
    }

    #[test]
    fn duplicate_answer_is_rejected_by_the_schema() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("r.db")).unwrap();
        let questions = vec![Question {
            id: "q1".into(),
            ordinal: 1,
            line: 1,
            question: "?".into(),
            reference: None,
            choices: None,
            answer_index: None,
            category: None,
            context: None,
            extra: Default::default(),
        }];
        let run_id = store
            .create_run(&NewRun {
                model_path: "m",
                model_name: "m",
                model_size_bytes: 1,
                model_sha256: "x",
                questions_path: "q",
                questions_sha256: "y",
                config_json: "{}",
                host_json: "{}",
                questions: &questions,
            })
            .unwrap();
        let row = AnswerRow {
            question_id: "q1".into(),
            ok: true,
            ..Default::default()
        };
        store.insert_answer(run_id, &row).unwrap();
        assert!(store.insert_answer(run_id, &row).is_err());
        assert_eq!(store.answered_question_ids(run_id).unwrap().len(), 1);
    }
}
