//! The errors a caller branches on, and the exit code each maps to. Everything else is an
//! `anyhow::Error` with context naming the file or flag; inside a run such an error ends the run
//! as `failed` (exit 5).

use std::path::{Path, PathBuf};

/// Exit codes of the `docent-eval` binary (see `../shared/design.md` and the README).
pub mod exit_code {
    /// Everything requested was done.
    pub const OK: u8 = 0;
    /// The run finished but some questions ended as `error` rows.
    pub const SOME_FAILED: u8 = 1;
    /// Usage or input error; nothing was written.
    pub const USAGE: u8 = 2;
    /// Stopped before the end (signal or `stop`); the run can be resumed. From `merge`: some
    /// questions have no answer in the shards given.
    pub const STOPPED: u8 = 3;
    /// Another live process holds the run.
    pub const HELD: u8 = 4;
    /// The run failed (model load, decode, out of memory); it is recorded as `failed` and
    /// resumable. Also any other failure that is not the user's input.
    pub const FAILED: u8 = 5;
}

/// The kinds of failure a caller (or the exit code) depends on.
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

    /// Another process took over the run this process was writing (its claim in the database
    /// names another holder); this process stops writing.
    #[error("run {run_id} was taken over by another process while this one wrote it; this process stopped writing (its committed rows stay). `docent-eval status` shows the holder")]
    ClaimLost {
        /// The run.
        run_id: i64,
    },

    /// The database was written by a newer docent-eval.
    #[error("database {}: schema version {found} is newer than this docent-eval understands ({supported}); upgrade docent-eval or use another --db", .path.display())]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// Its `user_version`.
        found: u32,
        /// The newest this binary knows.
        supported: u32,
    },

    /// `--require-tokenizer-match`: the GGUF tokenizes some prompts differently from the
    /// original model's tokenizer.json. Nothing was written.
    #[error("{0}\nThe GGUF file does not tokenize like the original model: re-convert it with a current llama.cpp, or drop --require-tokenizer-match to run anyway")]
    TokenizerMismatch(String),

    /// The run failed after it was created and is recorded as `failed`; `--resume` continues it.
    #[error("run {run_id} failed: {reason}")]
    RunFailed {
        /// The run.
        run_id: i64,
        /// What went wrong (the error chain, one line).
        reason: String,
    },
}

impl Error {
    /// The exit code of this kind.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_)
            | Error::InvalidQuestions(_)
            | Error::ResumeMismatch { .. }
            | Error::TokenizerMismatch(_)
            | Error::SchemaTooNew { .. } => exit_code::USAGE,
            Error::Held { .. } | Error::ClaimLost { .. } => exit_code::HELD,
            Error::RunFailed { .. } => exit_code::FAILED,
        }
    }
}

/// The exit code for any error: the first typed [`Error`] in its chain decides; anything else
/// is a failure (5).
pub fn exit_code_of(error: &anyhow::Error) -> u8 {
    error
        .chain()
        .find_map(|cause| cause.downcast_ref::<Error>())
        .map_or(exit_code::FAILED, Error::exit_code)
}

/// A usage error as an `anyhow::Error`.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    Error::Usage(message.into()).into()
}

/// An I/O error on `path`, naming it.
pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> anyhow::Error {
    anyhow::Error::new(source).context(path.as_ref().display().to_string())
}

/// Result type of the library.
pub type Result<T, E = anyhow::Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn the_first_typed_error_in_the_chain_decides_the_exit_code() {
        let held: anyhow::Error = Error::Held {
            run_id: 1,
            pid: 2,
            since: "0".into(),
            db: "r.db".into(),
        }
        .into();
        assert_eq!(exit_code_of(&held), exit_code::HELD);
        let wrapped = Err::<(), _>(usage("--ctx 1 is too small"))
            .context("while preparing")
            .unwrap_err();
        assert_eq!(exit_code_of(&wrapped), exit_code::USAGE);
        assert_eq!(
            exit_code_of(&anyhow::anyhow!("disk on fire")),
            exit_code::FAILED
        );
    }
}
