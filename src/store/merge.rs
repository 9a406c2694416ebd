//! Merging shard databases (`merge --into`): reading a shard's run and partition, creating the
//! merged run, and copying one shard run into it in one transaction. The shard database is
//! attached read-only by a bound URI, its schema checked first; no statement is built from user
//! input.

use super::{Identity, PlannedQuestion, RunStatus, Store};
use crate::config::GenerationSettings;
use crate::error::{usage, Result};
use crate::units::now_text;
use rusqlite::{params, OptionalExtension};
use sha2::{Digest, Sha256};
use std::path::Path;

/// A run as `merge` reads it: what identifies it and what the merged run takes from it.
#[derive(Debug, Clone)]
pub struct MergeableRun {
    /// `runs.id` in its own file (never used to match runs).
    pub run_id: i64,
    /// Status when read.
    pub status: RunStatus,
    /// Why it is failed or interrupted.
    pub status_reason: Option<String>,
    /// When the run was created.
    pub started_at: String,
    /// When it finished.
    pub finished_at: Option<String>,
    /// Generation time, all sessions.
    pub active_ms: i64,
    /// Sessions.
    pub sessions: i64,
    /// Model as recorded.
    pub model_path: String,
    /// Short model name.
    pub model_name: String,
    /// Model size.
    pub model_size_bytes: i64,
    /// Model hash.
    pub model_sha256: String,
    /// Question file as recorded.
    pub questions_path: String,
    /// Question file hash.
    pub questions_sha256: String,
    /// Questions in the run.
    pub question_count: i64,
    /// Identity settings; `None` when `config_json` cannot be read.
    pub settings: Option<GenerationSettings>,
    /// `runs.host_json` as stored.
    pub host_json: String,
    /// Host name from `host_json` ('' when not recorded).
    pub host: String,
    /// `runs.engine_json` as stored.
    pub engine_json: Option<String>,
    /// Preflight's predicted peak.
    pub predicted_peak_bytes: Option<i64>,
    /// Answer rows.
    pub answers: i64,
    /// Of those, `ok`.
    pub ok_answers: i64,
    /// sha256 of its answers' ids and statuses: tells apart two copies of one run with the same
    /// counts but different answers.
    pub answers_sha256: String,
}

/// What merging one shard run changed in the merged run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PartCounts {
    /// Answers of questions the merged run had none for.
    pub added: i64,
    /// `error` answers replaced by this shard's `ok` answer.
    pub replaced_errors: i64,
    /// Answers the merged run already had (an `ok` is never replaced).
    pub unchanged: i64,
}

/// A question of a merged run's plan that has no complete answer yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingQuestion {
    /// The shard it belongs to.
    pub shard_index: u32,
    /// Its id.
    pub question_id: String,
}

const RUN_COLUMNS: &str =
    "r.id, r.status, r.status_reason, r.started_at, r.finished_at, r.active_ms, r.sessions,
     r.model_path, r.model_name, r.model_size_bytes, r.model_sha256, r.questions_path,
     r.questions_sha256, r.question_count, r.config_json, r.host_json,
     COALESCE(json_extract(r.host_json, '$.hostname'), ''), r.engine_json, r.predicted_peak_bytes,
     (SELECT COUNT(*) FROM answers a WHERE a.run_id = r.id),
     (SELECT COUNT(*) FROM answers a WHERE a.run_id = r.id AND a.status = 'ok')";

impl Store {
    /// Every run of the database, as `merge` reads them.
    pub fn mergeable_runs(&self) -> Result<Vec<MergeableRun>> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs r ORDER BY r.id");
        let mut statement = self.connection.prepare(&sql)?;
        let runs = statement
            .query_map([], |row| {
                Ok(MergeableRun {
                    run_id: row.get(0)?,
                    status: row.get(1)?,
                    status_reason: row.get(2)?,
                    started_at: row.get(3)?,
                    finished_at: row.get(4)?,
                    active_ms: row.get(5)?,
                    sessions: row.get(6)?,
                    model_path: row.get(7)?,
                    model_name: row.get(8)?,
                    model_size_bytes: row.get(9)?,
                    model_sha256: row.get(10)?,
                    questions_path: row.get(11)?,
                    questions_sha256: row.get(12)?,
                    question_count: row.get(13)?,
                    settings: row
                        .get::<_, String>(14)
                        .ok()
                        .and_then(|text| serde_json::from_str(&text).ok()),
                    host_json: row.get(15)?,
                    host: row.get(16)?,
                    engine_json: row.get(17)?,
                    predicted_peak_bytes: row.get(18)?,
                    answers: row.get(19)?,
                    ok_answers: row.get(20)?,
                    answers_sha256: String::new(),
                })
            })?
            .collect::<rusqlite::Result<Vec<MergeableRun>>>()?;
        runs.into_iter()
            .map(|run| {
                Ok(MergeableRun {
                    answers_sha256: self.answers_sha256(run.run_id)?,
                    ..run
                })
            })
            .collect()
    }

    /// sha256 of a run's answers as `id<TAB>status` lines in id order.
    fn answers_sha256(&self, run_id: i64) -> Result<String> {
        let mut statement = self.connection.prepare(
            "SELECT question_id, status FROM answers WHERE run_id = ?1 ORDER BY question_id",
        )?;
        let mut hasher = Sha256::new();
        let mut rows = statement.query(params![run_id])?;
        while let Some(row) = rows.next()? {
            let (id, status): (String, String) = (row.get(0)?, row.get(1)?);
            hasher.update(format!("{id}\t{status}\n").as_bytes());
        }
        Ok(format!("{:x}", hasher.finalize()))
    }

    /// A sharded run's partition of the whole set, in file order.
    pub fn shard_plan(&self, run_id: i64) -> Result<Vec<PlannedQuestion>> {
        let mut statement = self.connection.prepare(
            "SELECT question_id, ordinal, shard_index FROM shard_plan WHERE run_id = ?1 ORDER BY ordinal",
        )?;
        let plan = statement
            .query_map(params![run_id], |row| {
                Ok(PlannedQuestion {
                    question_id: row.get(0)?,
                    ordinal: row.get(1)?,
                    shard_index: row.get(2)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(plan)
    }

    /// The ids of a run's questions.
    pub fn question_ids(&self, run_id: i64) -> Result<Vec<String>> {
        let mut statement = self
            .connection
            .prepare("SELECT question_id FROM questions WHERE run_id = ?1 ORDER BY ordinal")?;
        let ids = statement
            .query_map(params![run_id], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(ids)
    }

    /// Create the run shards are merged into: the first shard's model, files and host, the
    /// split's settings, and the whole set's plan. It stays `interrupted` until every planned
    /// question has its answer.
    pub fn create_merged_run(
        &self,
        from: &MergeableRun,
        settings: &GenerationSettings,
        plan: &[PlannedQuestion],
    ) -> Result<i64> {
        let tx = self.connection.unchecked_transaction()?;
        tx.execute(
            "INSERT INTO runs(status, status_reason, started_at, updated_at, model_path, model_name,
                              model_size_bytes, model_sha256, questions_path, questions_sha256,
                              question_count, config_json, engine_json, predicted_peak_bytes, host_json)
             VALUES ('interrupted', 'no shard merged yet', ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                from.started_at,
                now_text(),
                from.model_path,
                from.model_name,
                from.model_size_bytes,
                from.model_sha256,
                from.questions_path,
                from.questions_sha256,
                plan.len() as i64,
                serde_json::to_string(settings)?,
                from.engine_json,
                from.predicted_peak_bytes,
                from.host_json
            ],
        )?;
        let run_id = tx.last_insert_rowid();
        super::write::insert_shard_plan(&tx, run_id, plan)?;
        tx.commit()?;
        Ok(run_id)
    }

    /// Copy shard run `part` of the database at `source` into merged run `run_id`, in one
    /// transaction: its questions, its answers (an `ok` replaces an `error`, never the reverse),
    /// its choice scores, its memory samples (replacing those of an earlier merge of the same
    /// part), its row in `shard_parts`, and the merged run's totals and status.
    pub fn merge_part(
        &self,
        run_id: i64,
        source: &Path,
        part: &MergeableRun,
        shard_index: u32,
    ) -> Result<PartCounts> {
        self.attach_part(source)?;
        let merged = self.merge_attached(run_id, source, part, shard_index);
        let detached = self.connection.execute_batch("DETACH DATABASE part");
        let counts = merged?;
        detached?;
        Ok(counts)
    }

    /// Attach the shard database at `source` read-only as `part`, by a URI that names any path,
    /// once its schema is checked as an opened database's is: the file may have been replaced
    /// since it was read.
    fn attach_part(&self, source: &Path) -> Result<()> {
        let uri = super::file_uri(source);
        let attach = |mode: &str| {
            self.connection.execute(
                "ATTACH DATABASE ?1 AS part",
                params![format!("{uri}?{mode}")],
            )
        };
        let mut attached = false;
        let probe = attach("mode=ro").and_then(|_| {
            attached = true;
            self.connection
                .query_row("SELECT COUNT(*) FROM part.sqlite_master", [], |_| Ok(()))
        });
        if let Err(e) = probe {
            if attached {
                self.connection.execute_batch("DETACH DATABASE part")?;
            }
            if !super::needs_immutable(&e) {
                return Err(e.into());
            }
            // As a read-only connection does: no shared-memory file can be made here.
            attach("mode=ro&immutable=1")?;
        }
        let refused = match super::schema::identify(&self.connection, "part", source, "") {
            Ok(Identity::Ours) => return Ok(()),
            Ok(Identity::Empty) => usage(format!(
                "{}: an empty database holds no shard run; give the databases of a run's shards",
                source.display()
            )),
            Err(e) => e,
        };
        self.connection.execute_batch("DETACH DATABASE part")?;
        Err(refused)
    }

    /// [`Store::merge_part`] with the shard database attached as `part`: the part compared with
    /// the copy of it merged before, then its rows copied, in one transaction.
    fn merge_attached(
        &self,
        run_id: i64,
        source: &Path,
        part: &MergeableRun,
        shard_index: u32,
    ) -> Result<PartCounts> {
        let tx = rusqlite::Transaction::new_unchecked(
            &self.connection,
            rusqlite::TransactionBehavior::Immediate,
        )?;
        let copy = compare_with_merged(&tx, run_id, part, shard_index)?;
        if copy == Copy::Same {
            // Nothing new since the last merge of this part: write nothing at all.
            return Ok(PartCounts {
                unchanged: part.answers,
                ..PartCounts::default()
            });
        }
        let counts: PartCounts =
            tx.query_row(COUNT_ANSWERS, params![run_id, part.run_id], |row| {
                Ok(PartCounts {
                    added: row.get(0)?,
                    replaced_errors: row.get(1)?,
                    unchanged: row.get(2)?,
                })
            })?;
        for statement in COPY_ROWS {
            tx.execute(statement, params![run_id, part.run_id])?;
        }
        // The part's row and memory samples follow the furthest-along copy of the shard run: an
        // older snapshot merged after the final file adds answers it alone has, nothing else.
        if copy == Copy::Newer {
            let part_id = upsert_part(&tx, run_id, source, part, shard_index)?;
            replace_memory_samples(&tx, run_id, part, part_id)?;
        }
        refresh_merged_run(&tx, run_id, part)?;
        tx.commit()?;
        Ok(counts)
    }

    /// The planned questions of merged run `run_id` without a complete answer, by shard and
    /// file order.
    pub fn missing_questions(&self, run_id: i64) -> Result<Vec<MissingQuestion>> {
        let sql = format!(
            "SELECT p.shard_index, p.question_id {MISSING_FROM} ORDER BY p.shard_index, p.ordinal"
        );
        let mut statement = self.connection.prepare(&sql)?;
        let missing = statement
            .query_map(params![run_id], |row| {
                Ok(MissingQuestion {
                    shard_index: row.get(0)?,
                    question_id: row.get(1)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(missing)
    }

    /// The merged run for `settings` (a split) with this model and question set, if any.
    pub fn merged_run_id(
        &self,
        model_sha256: &str,
        questions_sha256: &str,
        settings: &GenerationSettings,
    ) -> Result<Option<i64>> {
        let candidates: Vec<(i64, String)> = {
            let mut statement = self.connection.prepare(
                "SELECT id, config_json FROM runs WHERE model_sha256 = ?1 AND questions_sha256 = ?2
                 AND id IN (SELECT run_id FROM shard_parts UNION SELECT run_id FROM shard_plan)
                 ORDER BY id",
            )?;
            let rows = statement
                .query_map(params![model_sha256, questions_sha256], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            rows
        };
        Ok(candidates.into_iter().find_map(|(id, json)| {
            let recorded: GenerationSettings = serde_json::from_str(&json).ok()?;
            (recorded == *settings).then_some(id)
        }))
    }
}

/// Of a shard run's answers (?2), how many the merged run (?1) lacks, holds as an `error` that an
/// `ok` replaces, and holds already.
const COUNT_ANSWERS: &str = "SELECT COALESCE(SUM(m.id IS NULL), 0),
                    COALESCE(SUM(m.status = 'error' AND p.status = 'ok'), 0),
                    COALESCE(SUM(m.id IS NOT NULL AND NOT (m.status = 'error' AND p.status = 'ok')), 0)
             FROM part.answers p
             LEFT JOIN main.answers m ON m.run_id = ?1 AND m.question_id = p.question_id
             WHERE p.run_id = ?2";

/// A shard run's rows (?2 in the attached `part`) into the merged run (?1), in this order:
/// - its questions the merged run lacks;
/// - the choice scores of questions whose `error` answer its `ok` answer is about to replace,
///   dropped, so the answer and its scores come from one shard run (`--mc-scoring both`);
/// - its answers: new ones added, an `ok` replacing an `error`, never the reverse (`WHERE true`
///   lets SQLite parse an upsert after a SELECT, its documented ambiguity);
/// - the choice scores of questions that have none (a question's scores are written together,
///   so it has all or none).
const COPY_ROWS: [&str; 4] = [
    "INSERT OR IGNORE INTO questions(run_id, question_id, ordinal, question, reference,
                                             answer_index, choices_json, category, context, extra_json)
             SELECT ?1, question_id, ordinal, question, reference, answer_index, choices_json,
                    category, context, extra_json
             FROM part.questions WHERE run_id = ?2",
    "DELETE FROM main.choice_scores WHERE run_id = ?1 AND question_id IN (
                 SELECT p.question_id FROM part.answers p
                 JOIN main.answers m ON m.run_id = ?1 AND m.question_id = p.question_id
                 WHERE p.run_id = ?2 AND m.status = 'error' AND p.status = 'ok')",
    "INSERT INTO main.answers(run_id, question_id, status, answer, error, finish_reason,
                 prompt_tokens, prompt_tokens_reused, completion_tokens, queued_at, started_at,
                 first_token_at, finished_at, ttft_ms, latency_ms, decode_tok_per_s, rss_bytes,
                 gpu_used_bytes, score, exact_match, f1, chosen_index, parallel_slot)
             SELECT ?1, question_id, status, answer, error, finish_reason, prompt_tokens,
                    prompt_tokens_reused, completion_tokens, queued_at, started_at, first_token_at,
                    finished_at, ttft_ms, latency_ms, decode_tok_per_s, rss_bytes, gpu_used_bytes,
                    score, exact_match, f1, chosen_index, parallel_slot
             FROM part.answers WHERE run_id = ?2 AND true
             ON CONFLICT(run_id, question_id) DO UPDATE SET
                 status = excluded.status, answer = excluded.answer, error = excluded.error,
                 finish_reason = excluded.finish_reason, prompt_tokens = excluded.prompt_tokens,
                 prompt_tokens_reused = excluded.prompt_tokens_reused,
                 completion_tokens = excluded.completion_tokens, queued_at = excluded.queued_at,
                 started_at = excluded.started_at, first_token_at = excluded.first_token_at,
                 finished_at = excluded.finished_at, ttft_ms = excluded.ttft_ms,
                 latency_ms = excluded.latency_ms, decode_tok_per_s = excluded.decode_tok_per_s,
                 rss_bytes = excluded.rss_bytes, gpu_used_bytes = excluded.gpu_used_bytes,
                 score = excluded.score, exact_match = excluded.exact_match, f1 = excluded.f1,
                 chosen_index = excluded.chosen_index, parallel_slot = excluded.parallel_slot
             WHERE main.answers.status = 'error' AND excluded.status = 'ok'",
    "INSERT OR IGNORE INTO main.choice_scores(run_id, question_id, choice_index, continuation,
                 logprob, tokens, chars, bytes, greedy, tokens_computed, tokens_reused,
                 token_ids_json, token_logprobs_json, scored_at)
             SELECT ?1, question_id, choice_index, continuation, logprob, tokens, chars, bytes,
                    greedy, tokens_computed, tokens_reused, token_ids_json, token_logprobs_json,
                    scored_at
             FROM part.choice_scores s
             WHERE s.run_id = ?2 AND NOT EXISTS (SELECT 1 FROM main.choice_scores c
                   WHERE c.run_id = ?1 AND c.question_id = s.question_id)",
];

/// The planned questions of merged run ?1 with no answer row: what a run counts as unfinished
/// (a question log-likelihood scoring refused has its `error` row, as in any run).
const MISSING_FROM: &str = "FROM shard_plan p
     LEFT JOIN answers a ON a.run_id = p.run_id AND a.question_id = p.question_id
     WHERE p.run_id = ?1 AND a.id IS NULL";

/// The part's memory samples, replacing those an earlier merge of it copied.
fn replace_memory_samples(
    tx: &rusqlite::Transaction<'_>,
    run_id: i64,
    part: &MergeableRun,
    part_id: i64,
) -> Result<()> {
    tx.execute(
        "DELETE FROM main.memory_samples WHERE run_id = ?1 AND shard_part_id = ?2",
        params![run_id, part_id],
    )?;
    tx.execute(
        "INSERT INTO main.memory_samples(run_id, at, rss_bytes, ram_used_bytes, ram_total_bytes,
             swap_used_bytes, swap_total_bytes, gpu_index, gpu_used_bytes, gpu_total_bytes,
             gpu_util_pct, shard_part_id)
         SELECT ?1, at, rss_bytes, ram_used_bytes, ram_total_bytes, swap_used_bytes,
                swap_total_bytes, gpu_index, gpu_used_bytes, gpu_total_bytes, gpu_util_pct, ?3
         FROM part.memory_samples WHERE run_id = ?2",
        params![run_id, part.run_id, part_id],
    )?;
    Ok(())
}

/// Record (or update) the part's row in `shard_parts`; returns its id.
fn upsert_part(
    tx: &rusqlite::Transaction<'_>,
    run_id: i64,
    source: &Path,
    part: &MergeableRun,
    shard_index: u32,
) -> Result<i64> {
    Ok(tx.query_row(
        "INSERT INTO shard_parts(run_id, shard_index, host, source_started_at, source_path,
                                     source_run_id, status, status_reason, finished_at, active_ms,
                                     sessions, question_count, answers, ok_answers, answers_sha256,
                                     merged_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
             ON CONFLICT(run_id, shard_index, host, source_started_at) DO UPDATE SET
                 source_path = excluded.source_path, source_run_id = excluded.source_run_id,
                 status = excluded.status, status_reason = excluded.status_reason,
                 finished_at = excluded.finished_at, active_ms = excluded.active_ms,
                 sessions = excluded.sessions, question_count = excluded.question_count,
                 answers = excluded.answers, ok_answers = excluded.ok_answers,
                 answers_sha256 = excluded.answers_sha256,
                 merged_at = excluded.merged_at
             RETURNING id",
        params![
            run_id,
            shard_index,
            part.host,
            part.started_at,
            source.display().to_string(),
            part.run_id,
            part.status.as_str(),
            part.status_reason,
            part.finished_at,
            part.active_ms,
            part.sessions,
            part.question_count,
            part.answers,
            part.ok_answers,
            part.answers_sha256,
            now_text()
        ],
        |row| row.get(0),
    )?)
}

/// How a shard run compares with the copy of it merged before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Copy {
    /// The same state (answers and statuses, status, sessions, generation time): merging it
    /// again would change nothing.
    Same,
    /// Never merged, or as far along in every count or further.
    Newer,
    /// Behind in some count: a snapshot taken before the copy merged already.
    Older,
}

/// The copy of `part` merged before (by shard, host and start time), compared with `part`.
fn compare_with_merged(
    tx: &rusqlite::Transaction<'_>,
    run_id: i64,
    part: &MergeableRun,
    shard_index: u32,
) -> Result<Copy> {
    type Recorded = (i64, i64, i64, i64, String, Option<String>, String);
    let recorded: Option<Recorded> = tx
        .query_row(
            "SELECT answers, ok_answers, sessions, active_ms, status, finished_at, answers_sha256
             FROM shard_parts
             WHERE run_id = ?1 AND shard_index = ?2 AND host = ?3 AND source_started_at = ?4",
            params![run_id, shard_index, part.host, part.started_at],
            |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                    row.get(5)?,
                    row.get(6)?,
                ))
            },
        )
        .optional()?;
    let Some((answers, ok_answers, sessions, active_ms, status, finished_at, answers_sha256)) =
        recorded
    else {
        return Ok(Copy::Newer);
    };
    let counts = (part.answers, part.ok_answers, part.sessions, part.active_ms);
    if counts == (answers, ok_answers, sessions, active_ms)
        && part.status.as_str() == status
        && part.finished_at == finished_at
        && part.answers_sha256 == answers_sha256
    {
        return Ok(Copy::Same);
    }
    let ahead = counts.0 >= answers
        && counts.1 >= ok_answers
        && counts.2 >= sessions
        && counts.3 >= active_ms;
    Ok(if ahead { Copy::Newer } else { Copy::Older })
}

/// The merged run's totals from its parts, and its status: `finished` once every planned
/// question is answered, else `interrupted` with how many are missing.
fn refresh_merged_run(
    tx: &rusqlite::Transaction<'_>,
    run_id: i64,
    part: &MergeableRun,
) -> Result<()> {
    let missing: i64 = tx.query_row(
        &format!("SELECT COUNT(*) {MISSING_FROM}"),
        params![run_id],
        |row| row.get(0),
    )?;
    tx.execute(
        "UPDATE runs SET
             active_ms  = (SELECT COALESCE(SUM(active_ms), 0) FROM shard_parts WHERE run_id = ?1),
             sessions   = (SELECT COALESCE(SUM(sessions), 0) FROM shard_parts WHERE run_id = ?1),
             started_at = MIN(started_at, ?2),
             predicted_peak_bytes = MAX(COALESCE(predicted_peak_bytes, ?3), COALESCE(?3, predicted_peak_bytes)),
             updated_at = ?4,
             status = CASE WHEN ?5 = 0 THEN 'finished' ELSE 'interrupted' END,
             status_reason = CASE WHEN ?5 = 0 THEN NULL
                 ELSE printf('%d of %d questions have no answer in the shards merged so far; merge the missing shards', ?5, question_count) END,
             finished_at = CASE WHEN ?5 = 0
                 THEN (SELECT MAX(COALESCE(finished_at, merged_at)) FROM shard_parts WHERE run_id = ?1) END
         WHERE id = ?1",
        params![
            run_id,
            part.started_at,
            part.predicted_peak_bytes,
            now_text(),
            missing
        ],
    )?;
    Ok(())
}

#[cfg(test)]
impl Store {
    /// What a merge decides, as text: the merged runs (without the clock, and without the host,
    /// which is the first merged part's), their answers, questions and parts (without the
    /// copy's path and the merge time), each in a fixed order.
    pub(crate) fn merged_state(&self) -> String {
        let queries = [
            "SELECT id, status, status_reason, started_at, model_sha256, questions_sha256,
                    question_count, config_json, active_ms, sessions FROM runs ORDER BY id",
            "SELECT run_id, question_id, status, answer, error, latency_ms FROM answers
             ORDER BY run_id, question_id",
            "SELECT run_id, question_id, ordinal, question FROM questions
             ORDER BY run_id, question_id",
            "SELECT run_id, shard_index, host, source_started_at, source_run_id, status,
                    status_reason, finished_at, active_ms, sessions, question_count, answers,
                    ok_answers, answers_sha256 FROM shard_parts
             ORDER BY run_id, shard_index, host, source_started_at",
        ];
        let mut text = String::new();
        for sql in queries {
            let mut statement = self.connection.prepare(sql).expect("merged-state query");
            let columns = statement.column_count();
            let mut rows = statement.query([]).expect("merged-state rows");
            while let Some(row) = rows.next().expect("merged-state row") {
                let values: Vec<String> = (0..columns)
                    .map(|i| format!("{:?}", row.get_ref(i).expect("column")))
                    .collect();
                text.push_str(&values.join("|"));
                text.push('\n');
            }
            text.push_str("--\n");
        }
        text
    }

    /// The `ok` answers of every run: (question id, answer text).
    pub(crate) fn ok_answers(&self) -> std::collections::BTreeSet<(String, Option<String>)> {
        let mut statement = self
            .connection
            .prepare("SELECT question_id, answer FROM answers WHERE status = 'ok'")
            .expect("ok answers query");
        let rows = statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .expect("ok answers");
        rows.collect::<rusqlite::Result<_>>()
            .expect("ok answer row")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_file_replaced_after_it_was_read_is_checked_again_once_attached() {
        let dir = tempfile::tempdir().unwrap();
        let shard = dir.path().join("shard.db");
        let part = {
            let store = Store::open(&shard).unwrap();
            store.test_run("m", &[]);
            store.mergeable_runs().unwrap().remove(0)
        };
        let into = Store::open(&dir.path().join("all.db")).unwrap();
        let run_id = into
            .create_merged_run(&part, &GenerationSettings::default(), &[])
            .unwrap();
        // Between the read and the merge, the shard becomes a database with a trigger.
        rusqlite::Connection::open(&shard)
            .unwrap()
            .execute_batch("CREATE TRIGGER t AFTER UPDATE ON runs BEGIN DELETE FROM answers; END;")
            .unwrap();
        let error = into.merge_part(run_id, &shard, &part, 0).unwrap_err();
        assert_eq!(
            crate::error::exit_code_of(&error),
            crate::error::exit_code::USAGE
        );
        assert!(format!("{error:#}").contains("trigger `t`"), "{error:#}");
        assert!(into.shard_summaries(run_id).unwrap().is_empty());
        // Detached again: the next part attaches under the same name.
        assert!(into
            .connection
            .query_row(
                "SELECT COUNT(*) FROM pragma_database_list WHERE name = 'part'",
                [],
                |r| r.get::<_, i64>(0)
            )
            .is_ok_and(|n| n == 0));
    }
}
