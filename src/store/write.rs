//! Writes: one run's rows, each commit in its own transaction. Only the run's holder writes.

use super::{AnswerRow, ChoiceScores, Holder, NewRun, RunStatus, Store, StoredScores};
use crate::error::{Error, Result};
use crate::monitor::MemorySample;
use crate::record::{EngineRecord, TokenizerCheck};
use crate::units::now_text;
use rusqlite::{params, OptionalExtension};
use std::path::Path;

impl Store {
    /// Cached sha256 of a file keyed by canonical path, size and mtime; `compute` runs on a miss.
    pub fn cached_file_hash(
        &self,
        path: &Path,
        compute: impl FnOnce() -> Result<String>,
    ) -> Result<String> {
        let canonical = std::fs::canonicalize(path).map_err(|e| crate::error::io(path, e))?;
        let metadata = std::fs::metadata(&canonical).map_err(|e| crate::error::io(path, e))?;
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
                serde_json::to_string(run.settings)?,
                serde_json::to_string(run.host)?
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
        insert_shard_plan(&tx, run_id, run.shard_plan)?;
        tx.commit()?;
        Ok(run_id)
    }

    /// Fold the WAL into the database file (`wal_checkpoint(TRUNCATE)`) and leave WAL mode, so
    /// that the file alone holds every committed row. Readers still open keep it from
    /// completing; that is logged.
    pub fn checkpoint(&self) -> Result<()> {
        let (busy, log_frames, checkpointed): (i64, i64, i64) =
            self.connection
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })?;
        if busy != 0 || checkpointed < log_frames {
            log::warn!(
                "{}: WAL checkpoint incomplete ({checkpointed} of {log_frames} frames; another connection reads it)",
                self.path.display()
            );
            return Ok(());
        }
        // Out of WAL mode until the next writer opens it: the file alone is then the database,
        // and readers of a copy (`merge`, `report`) add no -wal/-shm files beside it.
        if let Err(e) = self
            .connection
            .query_row("PRAGMA journal_mode = DELETE", [], |_| Ok(()))
        {
            log::debug!("{}: stays in WAL mode ({e})", self.path.display());
        }
        Ok(())
    }

    /// Take run `run_id` for this process (one writer per run). In one IMMEDIATE transaction:
    /// if another live process holds it, refuse with [`Error::Held`]; a holder that is gone
    /// (killed, crashed) is taken over.
    /// Every later write of this store is made in the holder's name and fails with
    /// [`Error::ClaimLost`] once another process has taken the run.
    pub fn claim_run(
        &mut self,
        run_id: i64,
        claimant: &Holder,
        holder_alive: impl Fn(i64, &str) -> bool,
    ) -> Result<()> {
        let (pid, process_started_at) = (claimant.pid, claimant.started_at.as_str());
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
                }
                .into());
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
        self.holder = Some(claimant.clone());
        Ok(())
    }

    /// Check that an update of run `run_id` made in this store's holder's name changed a row:
    /// none means another process holds the run now.
    fn held(&self, run_id: i64, changed: usize) -> Result<()> {
        if changed == 0 {
            return Err(Error::ClaimLost { run_id }.into());
        }
        Ok(())
    }

    fn holder_keys(&self) -> (Option<i64>, Option<&str>) {
        let holder = self.holder.as_ref();
        (holder.map(|h| h.pid), holder.map(|h| h.started_at.as_str()))
    }

    /// Record what the engine chose for this session (layers, context, threads, prompt format).
    pub fn set_engine_record(&self, run_id: i64, record: &EngineRecord) -> Result<()> {
        let (pid, started) = self.holder_keys();
        let changed = self.connection.execute(
            "UPDATE runs SET engine_json = ?2
             WHERE id = ?1 AND holder_pid IS ?3 AND holder_started_at IS ?4",
            params![run_id, serde_json::to_string(record)?, pid, started],
        )?;
        self.held(run_id, changed)
    }

    /// Record the tokenizer check of this session (`run --hf-tokenizer`).
    pub fn set_tokenizer_check(&self, run_id: i64, check: &TokenizerCheck) -> Result<()> {
        let (pid, started) = self.holder_keys();
        let changed = self.connection.execute(
            "UPDATE runs SET tokenizer_check_json = ?2
             WHERE id = ?1 AND holder_pid IS ?3 AND holder_started_at IS ?4",
            params![run_id, serde_json::to_string(check)?, pid, started],
        )?;
        self.held(run_id, changed)
    }

    /// Record the preflight prediction of the run's peak memory.
    pub fn set_predicted_peak(&self, run_id: i64, bytes: u64) -> Result<()> {
        let (pid, started) = self.holder_keys();
        let changed = self.connection.execute(
            "UPDATE runs SET predicted_peak_bytes = ?2
             WHERE id = ?1 AND holder_pid IS ?3 AND holder_started_at IS ?4",
            params![run_id, bytes as i64, pid, started],
        )?;
        self.held(run_id, changed)
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
        let (pid, started) = self.holder_keys();
        let changed = self.connection.execute(
            "UPDATE runs SET status = ?2, status_reason = ?3, finished_at = ?4, updated_at = ?5,
                             holder_pid = NULL, holder_started_at = NULL,
                             active_ms = active_ms + ?6
             WHERE id = ?1 AND holder_pid IS ?7 AND holder_started_at IS ?8",
            params![
                run_id,
                status.as_str(),
                reason,
                finished_at,
                now,
                active_ms_delta,
                pid,
                started
            ],
        )?;
        self.held(run_id, changed)
    }

    /// Heartbeat: the holder is alive; add generation time done since the last heartbeat.
    pub fn heartbeat(&self, run_id: i64, active_ms_delta: i64) -> Result<()> {
        let (pid, started) = self.holder_keys();
        let changed = self.connection.execute(
            "UPDATE runs SET updated_at = ?2, active_ms = active_ms + ?3
             WHERE id = ?1 AND holder_pid IS ?4 AND holder_started_at IS ?5",
            params![run_id, now_text(), active_ms_delta, pid, started],
        )?;
        self.held(run_id, changed)
    }

    /// Commit one answer in its own transaction, only while this store's holder holds the run
    /// (checked inside the transaction, so a writer that lost its claim adds nothing).
    pub fn insert_answer(&self, run_id: i64, a: &AnswerRow) -> Result<()> {
        let tx = self.holding_transaction(run_id)?;
        insert_answer_row(&tx, run_id, a)?;
        tx.commit()?;
        Ok(())
    }

    /// Commit every choice of one question (and its answer row, if any) in one transaction,
    /// under the same holder check as [`Store::insert_answer`].
    pub fn insert_choice_scores(&self, run_id: i64, scores: &ChoiceScores) -> Result<()> {
        let tx = self.holding_transaction(run_id)?;
        {
            let now = now_text();
            let mut insert = tx.prepare_cached(
                "INSERT OR REPLACE INTO choice_scores(run_id, question_id, choice_index, continuation,
                     logprob, tokens, chars, bytes, greedy, tokens_computed, tokens_reused,
                     token_ids_json, token_logprobs_json, scored_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )?;
            for c in &scores.choices {
                insert.execute(params![
                    run_id,
                    scores.question_id,
                    c.choice_index,
                    c.continuation,
                    c.logprob,
                    c.tokens,
                    c.chars,
                    c.bytes,
                    c.greedy,
                    c.tokens_computed,
                    c.tokens_reused,
                    serde_json::to_string(&c.token_ids)?,
                    serde_json::to_string(&c.token_logprobs)?,
                    now
                ])?;
            }
        }
        if let Some(answer) = &scores.answer {
            insert_answer_row(&tx, run_id, answer)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// An immediate transaction in which this store's holder still holds `run_id`.
    fn holding_transaction(&self, run_id: i64) -> Result<rusqlite::Transaction<'_>> {
        let tx = rusqlite::Transaction::new_unchecked(
            &self.connection,
            rusqlite::TransactionBehavior::Immediate,
        )?;
        let (pid, started) = self.holder_keys();
        let holds: bool = tx.query_row(
            "SELECT EXISTS(SELECT 1 FROM runs
                           WHERE id = ?1 AND holder_pid IS ?2 AND holder_started_at IS ?3)",
            params![run_id, pid, started],
            |row| row.get(0),
        )?;
        self.held(run_id, usize::from(holds))?;
        Ok(tx)
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

    /// Store new scores for answer rows, all in one transaction.
    pub fn update_scores(&self, updates: &[(i64, StoredScores)]) -> Result<()> {
        let tx = self.connection.unchecked_transaction()?;
        {
            let mut update = tx.prepare(
                "UPDATE answers SET score = ?2, exact_match = ?3, f1 = ?4, chosen_index = ?5
                 WHERE id = ?1",
            )?;
            for (id, s) in updates {
                update.execute(params![id, s.score, s.exact_match, s.f1, s.chosen_index])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// The `answers` row of `a`, inside the caller's transaction.
fn insert_answer_row(tx: &rusqlite::Transaction<'_>, run_id: i64, a: &AnswerRow) -> Result<()> {
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
    Ok(())
}

/// The whole set's partition of a sharded run, in its creation transaction.
pub(super) fn insert_shard_plan(
    tx: &rusqlite::Transaction<'_>,
    run_id: i64,
    plan: &[super::PlannedQuestion],
) -> Result<()> {
    let mut insert = tx.prepare(
        "INSERT INTO shard_plan(run_id, question_id, ordinal, shard_index) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for q in plan {
        insert.execute(params![run_id, q.question_id, q.ordinal, q.shard_index])?;
    }
    Ok(())
}
