//! Which run this invocation works on: a new one, the unfinished one `--resume` names, or none
//! (the same run already finished). A run is identified by the model file's hash, the question
//! file's hash and every setting that shapes an answer; resuming with any of them changed is
//! refused, naming each difference.

use super::RunRequest;
use crate::config::{McScoring, RunIdentity};
use crate::dataset::{hex_sha256, Question};
use crate::error::{usage, Error, Result};
use crate::store::{RunRecord, RunStatus, Store};
use std::collections::HashSet;
use std::io::Read;
use std::path::Path;

/// What `--resume` (or its absence) resolves to.
pub enum Resolution {
    /// Start a new run.
    New,
    /// Continue this unfinished run.
    Continue(RunRecord),
    /// The same run is already finished: nothing to do.
    AlreadyFinished(RunRecord),
}

/// The identity of the requested run. The model is hashed once per path, size and mtime (the
/// hash is cached in the database), since an 8B model takes tens of seconds to read.
pub fn identity(
    store: &Store,
    request: &RunRequest,
    questions_sha256: &str,
) -> Result<RunIdentity> {
    log::info!(
        "hashing {} (cached after the first run)",
        request.model.display()
    );
    let model_sha256 = store.cached_file_hash(&request.model, || sha256_file(&request.model))?;
    Ok(RunIdentity {
        model_sha256,
        questions_sha256: questions_sha256.to_string(),
        settings: request.generation.clone(),
    })
}

/// Resolve `--resume [--run-id]` against the runs in the store.
pub fn resolve(store: &Store, request: &RunRequest, identity: &RunIdentity) -> Result<Resolution> {
    if !request.resume {
        return Ok(Resolution::New);
    }
    let Some(run) = target_run(store, request)? else {
        return nothing_unfinished(store, request, identity);
    };
    let differences = identity.differences(&recorded_identity(&run)?);
    if !differences.is_empty() {
        return Err(Error::ResumeMismatch {
            run_id: run.id,
            differences,
        }
        .into());
    }
    if run.status == RunStatus::Finished {
        return Ok(Resolution::AlreadyFinished(run));
    }
    log::info!("resuming run {} ({})", run.id, run.status);
    Ok(Resolution::Continue(run))
}

/// The run `--run-id` names, else the most recent unfinished one.
fn target_run(store: &Store, request: &RunRequest) -> Result<Option<RunRecord>> {
    match request.run_id {
        Some(id) => Ok(Some(store.run(id)?.ok_or_else(|| {
            usage(format!(
                "--run-id {id}: no such run in {}; `docent-eval status --db {}` lists runs",
                request.db.display(),
                request.db.display()
            ))
        })?)),
        None => store.latest_unfinished_run(),
    }
}

/// Nothing unfinished: the same run already done is "nothing to do", anything else starts anew.
fn nothing_unfinished(
    store: &Store,
    request: &RunRequest,
    identity: &RunIdentity,
) -> Result<Resolution> {
    if let Some(last) = store.latest_run()? {
        if recorded_identity(&last)?.differences(identity).is_empty() {
            return Ok(Resolution::AlreadyFinished(last));
        }
    }
    log::info!(
        "--resume: no unfinished run in {}; starting a new run",
        request.db.display()
    );
    Ok(Resolution::New)
}

fn recorded_identity(run: &RunRecord) -> Result<RunIdentity> {
    let settings = run.settings.clone().ok_or_else(|| {
        usage(format!(
            "run {} has unreadable settings; start a new run without --resume",
            run.id
        ))
    })?;
    Ok(RunIdentity {
        model_sha256: run.model_sha256.clone(),
        questions_sha256: run.questions_sha256.clone(),
        settings,
    })
}

/// Indexes of the questions without a committed answer row, in question-file order.
pub fn pending(store: &Store, run_id: i64, questions: &[Question]) -> Result<Vec<usize>> {
    let answered: HashSet<String> = store.answered_question_ids(run_id)?;
    let pending: Vec<usize> = (0..questions.len())
        .filter(|&i| !answered.contains(&questions[i].id))
        .collect();
    log::info!(
        "run {run_id}: {} of {} questions already answered, {} to go",
        questions.len() - pending.len(),
        questions.len(),
        pending.len()
    );
    Ok(pending)
}

/// sha256 of a file, streamed (a multi-GB model is never read into memory).
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut file = std::fs::File::open(path).map_err(|e| crate::error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file
            .read(&mut buffer)
            .map_err(|e| crate::error::io(path, e))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(crate::units::hex(&hasher.finalize()))
}

/// Per-question seed: independent of scheduling order and of which questions share a batch.
pub fn question_seed(seed: u32, question_id: &str) -> u32 {
    let digest = hex_sha256(format!("{seed}:{question_id}").as_bytes());
    u32::from_str_radix(&digest[..8], 16).unwrap_or(seed)
}

/// With log-likelihood scoring: the multiple-choice questions (indices into `questions`) whose
/// choices are not scored yet. With `loglik` alone, a question answered already (an error row
/// for a prompt that could not be scored) is not scored again.
pub fn unscored_choices(
    store: &Store,
    run_id: i64,
    questions: &[Question],
    scoring: McScoring,
) -> Result<Vec<usize>> {
    if !scoring.scores_choices() {
        return Ok(Vec::new());
    }
    let scored = store.choice_scored_question_ids(run_id)?;
    let answered = if scoring.generates_choices() {
        HashSet::new()
    } else {
        store.answered_question_ids(run_id)?
    };
    Ok((0..questions.len())
        .filter(|&i| {
            let q = &questions[i];
            q.is_multiple_choice() && !scored.contains(&q.id) && !answered.contains(&q.id)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_seed_is_stable_and_distinct() {
        assert_eq!(question_seed(42, "a"), question_seed(42, "a"));
        assert_ne!(question_seed(42, "a"), question_seed(42, "b"));
        assert_ne!(question_seed(42, "a"), question_seed(43, "a"));
    }

    #[test]
    fn sha256_file_streams() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(
            sha256_file(&path).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
