//! SQLite store: schema migrations from `sql/` applied by `PRAGMA user_version`, WAL, one
//! transaction per finished answer. SQL text lives in `sql/` or as constant statements here; no
//! statement is ever built from user input (every value is a bound parameter).

use crate::config::GenerationSettings;
use crate::dataset::Question;
use crate::error::{usage, Error, Result};
use crate::record::HostRecord;
use anyhow::Context;
use rusqlite::Connection;
use std::path::{Path, PathBuf};

mod merge;
mod read;
mod schema;
mod write;

use schema::Identity;

pub use merge::{MergeableRun, MissingQuestion, PartCounts};

pub use read::{
    CategorySummary, MemoryPoint, MergedRunSummary, QuestionAnswer, RunDetails, RunSummary,
    ScoredAnswer, ShardSummary, StoredScores,
};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/migrations.rs"));
}

/// The schema version this binary writes.
pub fn schema_version() -> u32 {
    embedded::MIGRATIONS.last().map_or(0, |m| m.0)
}

/// Lifecycle of a run, as stored in `runs.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
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

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl rusqlite::types::FromSql for RunStatus {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        // The schema's CHECK constraint admits only the four names.
        value.as_str().map(RunStatus::parse)
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
    /// Identity settings (`runs.config_json`).
    pub settings: &'a GenerationSettings,
    /// Host and build (`runs.host_json`).
    pub host: &'a HostRecord,
    /// The questions of the run (after `--limit`, and of its shard).
    pub questions: &'a [Question],
    /// A shard's run: the whole set's partition (`shard_plan`); empty otherwise.
    pub shard_plan: &'a [PlannedQuestion],
}

/// One question of a sharded set and the shard it belongs to (`shard_plan`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedQuestion {
    /// Question id.
    pub question_id: String,
    /// 1-based position in the question file.
    pub ordinal: i64,
    /// 0-based shard.
    pub shard_index: u32,
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
    /// Identity settings; `None` when `config_json` cannot be read as settings.
    pub settings: Option<GenerationSettings>,
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

/// One choice of a multiple-choice question scored by log-likelihood (`choice_scores`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChoiceRow {
    /// 0-based choice index.
    pub choice_index: i64,
    /// The text scored after the prompt (a letter label or the choice text).
    pub continuation: String,
    /// Sum of the natural-log probabilities of the continuation's tokens.
    pub logprob: f64,
    /// Continuation tokens.
    pub tokens: i64,
    /// Unicode characters of the continuation.
    pub chars: i64,
    /// Its UTF-8 bytes.
    pub bytes: i64,
    /// Whether every continuation token was the most probable one.
    pub greedy: bool,
    /// Tokens decoded for this choice alone.
    pub tokens_computed: i64,
    /// Tokens taken from KV computed once for several choices (the prompt).
    pub tokens_reused: i64,
    /// The continuation's token ids.
    pub token_ids: Vec<i32>,
    /// Each token's log-probability.
    pub token_logprobs: Vec<f64>,
}

/// Every choice of one question, committed in one transaction; with `--mc-scoring loglik` the
/// question's answer row (the choice picked by `acc`) goes into the same transaction.
#[derive(Debug, Clone, Default)]
pub struct ChoiceScores {
    /// Question id.
    pub question_id: String,
    /// One row per choice, in choice order.
    pub choices: Vec<ChoiceRow>,
    /// The answer row, when log-likelihood is the question's only scoring.
    pub answer: Option<AnswerRow>,
}

fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

fn cannot_open(path: &Path, error: &rusqlite::Error) -> anyhow::Error {
    usage(format!(
        "--db {}: cannot open ({error}); check the path and its permissions",
        path.display()
    ))
}

/// A read-only connection. A WAL database on a read-only mount, or in a directory this user
/// cannot write (a killed run read by another user), cannot get its shared-memory file; SQLite
/// then opens it only as `immutable`, which is true there: nobody can write it.
fn read_only_connection(path: &Path) -> Result<Connection> {
    use rusqlite::OpenFlags;
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let open = |target: &Path, flags: OpenFlags| -> Result<Connection> {
        let connection =
            Connection::open_with_flags(target, flags).map_err(|e| cannot_open(path, &e))?;
        schema::distrust_schema(&connection).map_err(|e| cannot_open(path, &e))?;
        Ok(connection)
    };
    let connection = open(path, flags)?;
    match connection.query_row("SELECT COUNT(*) FROM sqlite_master", [], |_| Ok(())) {
        Err(e) if needs_immutable(&e) => {
            warn_if_wal_unread(path);
            let uri = format!("{}?immutable=1", file_uri(path));
            open(Path::new(&uri), flags | OpenFlags::SQLITE_OPEN_URI)
        }
        _ => Ok(connection),
    }
}

/// Whether a read of a WAL database failed only because its shared-memory file cannot be made
/// (read-only file system, or a directory this user cannot write).
fn needs_immutable(error: &rusqlite::Error) -> bool {
    matches!(error, rusqlite::Error::SqliteFailure(e, _)
        if matches!(e.code, rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::ReadOnly))
}

/// An `immutable` read does not see a write-ahead log: say so when one with content is there.
fn warn_if_wal_unread(path: &Path) {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
        log::warn!(
            "{}: read without its write-ahead log (it cannot be opened here), so the answers committed last may not show; read it where the directory is writable",
            path.display()
        );
    }
}

/// `path` as an absolute `file:` URI that names exactly its bytes: every byte but unreserved
/// ASCII and `/` is percent-encoded (a Korean or non-UTF-8 name included), and a path written
/// with a leading `//` is not read as a URI authority.
fn file_uri(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let absolute = std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf());
    let mut bytes = absolute.as_os_str().as_bytes();
    while bytes.starts_with(b"//") {
        bytes = &bytes[1..];
    }
    let mut uri = String::from("file://");
    if !bytes.starts_with(b"/") {
        uri.push('/');
    }
    for &byte in bytes {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                uri.push(char::from(byte))
            }
            _ => uri.push_str(&format!("%{byte:02X}")),
        }
    }
    uri
}

/// The views as temporary views of one connection (temp objects shadow the file's own).
fn temporary_views() -> String {
    embedded::VIEWS
        .replace("DROP VIEW IF EXISTS ", "DROP VIEW IF EXISTS temp.")
        .replace("CREATE VIEW ", "CREATE TEMP VIEW ")
}

/// The process that holds a run (pid and start time, so a reused pid is never taken for it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Process id.
    pub pid: i64,
    /// Its start time, seconds since the epoch, as text.
    pub started_at: String,
}

/// An open results database.
pub struct Store {
    connection: Connection,
    path: PathBuf,
    /// The file opened, by (device, inode): a database removed or replaced during a run is noticed.
    file_id: Option<(u64, u64)>,
    /// Set by [`Store::claim_run`] (or [`Store::acting_for`]): the writes of a session are made in
    /// this holder's name.
    holder: Option<Holder>,
}

impl Store {
    /// Open a results database for writing (`run`, `score`), creating it if missing, and bring
    /// its schema up to date. A file that is not a docent-eval database, or one written by a
    /// newer docent-eval, is refused before anything in it changes.
    pub fn open(path: &Path) -> Result<Store> {
        let connection = Connection::open(path).map_err(|e| cannot_open(path, &e))?;
        schema::distrust_schema(&connection).map_err(|e| cannot_open(path, &e))?;
        let mut store = Store {
            connection,
            path: path.to_path_buf(),
            file_id: None,
            holder: None,
        };
        store.check_identity()?;
        store.configure()?;
        store.migrate()?;
        store.file_id = file_id(path);
        Ok(store)
    }

    /// This store writes in the name of `holder`, which has claimed the run (the recorder's own
    /// connection, opened after the claim).
    pub fn acting_for(mut self, holder: Holder) -> Store {
        self.holder = Some(holder);
        self
    }

    /// Whether the database path still names the file this store opened. A file removed or
    /// replaced during a run would take every later row into a file nobody can open.
    pub fn check_still_at_path(&self) -> Result<()> {
        if self.file_id.is_some() && file_id(&self.path) != self.file_id {
            return Err(anyhow::anyhow!(
                "{} was removed or replaced while this run wrote to it; restore the file and --resume, or start a new run",
                self.path.display()
            ));
        }
        Ok(())
    }

    /// Open an existing results database for reading only (`status`, `report`, `compare`,
    /// `stop`): nothing in the file changes, and a database on a read-only mount works. The
    /// views are created as temporary views of this connection, so a database last written by
    /// an older docent-eval still reads with this binary's definitions.
    pub fn open_read_only(path: &Path) -> Result<Store> {
        if !path.is_file() {
            return Err(usage(format!(
                "--db {}: no such database file; check the path",
                path.display()
            )));
        }
        Store::open_read_only_if_any(path)?.ok_or_else(|| {
            usage(format!(
                "--db {}: an empty database holds no runs; check the path",
                path.display()
            ))
        })
    }

    /// [`Store::open_read_only`] for a file that may not be a database yet: `None` when it does
    /// not exist or holds no schema (what `run` or `merge` would create).
    pub fn open_read_only_if_any(path: &Path) -> Result<Option<Store>> {
        if !path.exists() {
            return Ok(None);
        }
        let store = Store {
            connection: read_only_connection(path)?,
            path: path.to_path_buf(),
            file_id: None,
            holder: None,
        };
        if store.check_identity()? == Identity::Empty {
            return Ok(None);
        }
        store
            .connection
            .execute_batch("PRAGMA busy_timeout = 10000;")?;
        store.connection.execute_batch(&temporary_views())?;
        Ok(Some(store))
    }

    /// What the file is, read without writing: an empty database, or one of ours at a schema
    /// this binary understands, as its migrations made it. Anything else is refused.
    fn check_identity(&self) -> Result<Identity> {
        schema::identify(&self.connection, "main", &self.path, "--db ")
    }

    /// The database path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn configure(&self) -> Result<()> {
        // FULL makes each committed answer survive a power loss or reboot, not only a killed
        // process; the writer thread keeps the fsync off the decode loop.
        self.connection
            .execute_batch(
                "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;
             PRAGMA busy_timeout = 10000;",
            )
            .map_err(|e| {
                Error::Usage(format!(
                    "--db {}: not a usable SQLite database ({e}); give a docent-eval results database or a new file name",
                    self.path.display()
                ))
            })?;
        Ok(())
    }

    fn migrate(&self) -> Result<()> {
        let current: u32 = self
            .connection
            .query_row("PRAGMA user_version", [], |row| row.get(0))?;
        let latest = schema_version();
        if current > latest {
            return Err(Error::SchemaTooNew {
                path: self.path.clone(),
                found: current,
                supported: latest,
            }
            .into());
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
            apply().with_context(|| {
                format!("{}: schema migration {file} failed", self.path.display())
            })?;
            log::info!("applied schema migration {file}");
        }
        self.connection.execute_batch(embedded::VIEWS)?;
        Ok(())
    }
}

#[cfg(test)]
impl Store {
    /// A run of `questions` with placeholder identity, as the tests of other modules need one.
    pub(crate) fn test_run(&self, model_name: &str, questions: &[Question]) -> i64 {
        self.create_run(&NewRun {
            model_path: "models/m.Q8_0.gguf",
            model_name,
            model_size_bytes: 1,
            model_sha256: "x",
            questions_path: "q.jsonl",
            questions_sha256: "y",
            settings: &GenerationSettings::default(),
            host: &HostRecord::default(),
            questions,
            shard_plan: &[],
        })
        .expect("create a test run")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_uris_name_every_byte_of_the_path() {
        use std::os::unix::ffi::OsStrExt;
        assert_eq!(
            file_uri(Path::new("/runs/결과 #1?50%.db")),
            "file:///runs/%EA%B2%B0%EA%B3%BC%20%231%3F50%25.db"
        );
        assert_eq!(
            file_uri(Path::new(std::ffi::OsStr::from_bytes(b"/no/such/bad\xff"))),
            "file:///no/such/bad%FF"
        );
        assert_eq!(file_uri(Path::new("//no/such")), "file:///no/such");
    }

    #[test]
    fn migrations_apply_once_and_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        {
            let store = Store::open(&path).unwrap();
            let version: u32 = store
                .connection
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap();
            assert_eq!(version, schema_version());
            let views: i64 = store
                .connection
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
        assert_eq!(
            crate::error::exit_code_of(&error),
            crate::error::exit_code::USAGE
        );
    }

    #[test]
    fn duplicate_answer_is_rejected_by_the_schema() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("r.db")).unwrap();
        let questions = vec![Question {
            id: "q1".into(),
            question: "?".into(),
            ..Default::default()
        }];
        let run_id = store.test_run("m", &questions);
        let row = AnswerRow {
            question_id: "q1".into(),
            ok: true,
            ..Default::default()
        };
        store.insert_answer(run_id, &row).unwrap();
        assert!(store.insert_answer(run_id, &row).is_err());
        assert_eq!(store.answered_question_ids(run_id).unwrap().len(), 1);
    }

    fn digest(path: &Path) -> String {
        crate::dataset::hex_sha256(&std::fs::read(path).unwrap())
    }

    #[test]
    fn a_file_that_is_not_ours_is_refused_untouched_by_every_open() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "not a database\n".repeat(100)).unwrap();
        let foreign = dir.path().join("foreign.db");
        Connection::open(&foreign)
            .unwrap()
            .execute_batch("CREATE TABLE x(a); INSERT INTO x VALUES (1);")
            .unwrap();
        // Another program's database with a `runs` table and a schema version of its own.
        let lookalike = dir.path().join("lookalike.db");
        Connection::open(&lookalike)
            .unwrap()
            .execute_batch("CREATE TABLE runs(id INTEGER PRIMARY KEY); PRAGMA user_version = 3;")
            .unwrap();
        for path in [&text, &foreign, &lookalike] {
            let before = digest(path);
            for error in [
                Store::open(path).err().unwrap(),
                Store::open_read_only(path).err().unwrap(),
            ] {
                let message = format!("{error:#}");
                assert!(message.contains(&path.display().to_string()), "{message}");
                assert_eq!(
                    crate::error::exit_code_of(&error),
                    crate::error::exit_code::USAGE
                );
            }
            assert_eq!(digest(path), before, "{} was modified", path.display());
        }
        assert!(!dir.path().join("foreign.db-wal").exists());
        assert!(!dir.path().join("lookalike.db-wal").exists());
    }

    #[test]
    fn every_connection_distrusts_the_files_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let writer = Store::open(&path).unwrap();
        let reader = Store::open_read_only(&path).unwrap();
        for store in [&writer, &reader] {
            let trusted: bool = store
                .connection
                .query_row("PRAGMA trusted_schema", [], |r| r.get(0))
                .unwrap();
            assert!(!trusted);
        }
    }

    #[test]
    fn a_newer_database_is_refused_before_anything_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("newer.db");
        {
            let connection = Connection::open(&path).unwrap();
            connection
                .execute_batch("CREATE TABLE runs(id INTEGER PRIMARY KEY);")
                .unwrap();
            connection
                .pragma_update(None, "user_version", schema_version() + 1)
                .unwrap();
        }
        let before = digest(&path);
        assert!(Store::open(&path).is_err());
        assert!(Store::open_read_only(&path).is_err());
        assert_eq!(digest(&path), before, "journal mode and schema unchanged");
    }

    #[test]
    fn reading_never_writes_and_sees_this_binarys_views() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        {
            let store = Store::open(&path).unwrap();
            // A database last opened by an older binary: its views lack today's columns.
            store
                .connection
                .execute_batch("DROP VIEW run_summary; CREATE VIEW run_summary AS SELECT 1 AS x;")
                .unwrap();
        }
        let before = digest(&path);
        let store = Store::open_read_only(&path).unwrap();
        assert_eq!(store.run_ids(false).unwrap(), Vec::<i64>::new());
        assert!(
            store.run_summary(1).unwrap().is_none(),
            "today's columns read"
        );
        drop(store);
        assert_eq!(digest(&path), before);
        assert!(Store::open_read_only(&dir.path().join("missing.db")).is_err());
    }

    #[test]
    fn a_writer_that_lost_its_claim_adds_nothing_and_exits_4() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let question = Question {
            id: "q1".into(),
            question: "?".into(),
            ..Default::default()
        };
        let mut first = Store::open(&path).unwrap();
        let run_id = first.test_run("m", std::slice::from_ref(&question));
        let a = Holder {
            pid: 1,
            started_at: "10".into(),
        };
        let b = Holder {
            pid: 2,
            started_at: "20".into(),
        };
        first.claim_run(run_id, &a, |_, _| true).unwrap();
        let mut second = Store::open(&path).unwrap();
        let held = second.claim_run(run_id, &b, |_, _| true).unwrap_err();
        assert_eq!(
            crate::error::exit_code_of(&held),
            crate::error::exit_code::HELD
        );
        // A clock step or a second host makes `b` believe `a` is gone and take the run over.
        second.claim_run(run_id, &b, |_, _| false).unwrap();
        let row = AnswerRow {
            question_id: "q1".into(),
            ok: true,
            ..Default::default()
        };
        for error in [
            first.insert_answer(run_id, &row).unwrap_err(),
            first.heartbeat(run_id, 5).unwrap_err(),
            first
                .end_session(run_id, RunStatus::Failed, Some("x"), 0)
                .unwrap_err(),
        ] {
            assert_eq!(
                crate::error::exit_code_of(&error),
                crate::error::exit_code::HELD
            );
        }
        assert!(first.answered_question_ids(run_id).unwrap().is_empty());
        let run = second.run(run_id).unwrap().unwrap();
        assert_eq!((run.holder_pid, run.status), (Some(2), RunStatus::Running));
        second.insert_answer(run_id, &row).unwrap();
        second
            .end_session(run_id, RunStatus::Finished, None, 0)
            .unwrap();
    }

    #[test]
    fn a_database_removed_during_a_run_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let store = Store::open(&path).unwrap();
        store.check_still_at_path().unwrap();
        std::fs::rename(&path, dir.path().join("moved.db")).unwrap();
        let error = store.check_still_at_path().unwrap_err();
        assert!(
            format!("{error}").contains("removed or replaced"),
            "{error}"
        );
    }
}
