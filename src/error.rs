//! Typed errors of the library and the process exit codes they map to.

use std::path::PathBuf;

/// Exit codes of the `docent-eval` binary (see `../shared/design.md`).
pub mod exit_code {
    /// Everything requested was done.
    pub const OK: i32 = 0;
    /// The run finished but some questions ended as `error` rows.
    pub const SOME_FAILED: i32 = 1;
    /// Usage or input error; nothing was written.
    pub const USAGE: i32 = 2;
    /// Stopped before the end (signal or `stop`); the run can be resumed.
    pub const STOPPED: i32 = 3;
    /// Another live process holds the run.
    pub const HELD: i32 = 4;
    /// The run failed (model load, decode, out of memory); it is recorded as `failed` and resumable.
    pub const RUN_FAILED: i32 = 5;
}

/// Everything that can go wrong in docent-eval, grouped by who must act.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A problem with what the user asked for: a flag, a file, a setting. Nothing was written.
    #[error("{0}")]
    Usage(String),

    /// One or more malformed lines in a question file (each message names file and line).
    #[error("{} problem(s) in the question set:\n{}", .0.len(), .0.join("\n"))]
    InvalidQuestions(Vec<String>),

    /// `--resume` found a run whose identity differs from the requested one.
    #[error("cannot resume run {run_id}: it was started with different settings:\n{}\nStart a new run (drop --resume) or pass the same settings.", .differences.join("\n"))]
    ResumeMismatch {
        /// The run that was asked to continue.
        run_id: i64,
        /// One line per differing setting.
        differences: Vec<String>,
    },

    /// Another live process is writing this run.
    #[error("run {run_id} is held by process {pid} (started {since}); wait for it, or `docent-eval stop --db {db}`")]
    Held {
        /// The run.
        run_id: i64,
        /// The process holding it.
        pid: i64,
        /// When that process took it.
        since: String,
        /// Database path, for the hint.
        db: String,
    },

    /// The database file is not usable by this binary.
    #[error("database {path}: {reason}")]
    Database {
        /// The database file.
        path: PathBuf,
        /// What is wrong, and what to do.
        reason: String,
    },

    /// The engine failed while running (load, context, decode). The run is marked `failed`.
    #[error("{0}")]
    Engine(String),

    /// SQLite failed.
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),

    /// I/O failed on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl Error {
    /// The process exit code this error should produce.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::InvalidQuestions(_) | Error::ResumeMismatch { .. } => {
                exit_code::USAGE
            }
            Error::Database { .. } => exit_code::USAGE,
            Error::Held { .. } => exit_code::HELD,
            Error::Engine(_) | Error::Sqlite(_) | Error::Io { .. } => exit_code::RUN_FAILED,
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result type of the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
