//! One run, end to end: validate → open or resume the store → load → schedule → finish.
//! Data flows one way: question set → engine → recorder (SQLite) → summary.

use crate::config::{ExecutionSettings, GenerationSettings, RunIdentity};
use crate::control::{self, StopSignal};
use crate::dataset::{self, Question, QuestionSet};
use crate::engine::{Engine, SessionOptions, Token};
use crate::error::{exit_code, Error, Result};
use crate::recorder::Recorder;
use crate::scheduler::{self, Completion, Control, Ended, Job, Limits, SharedPrefix};
use crate::store::{self, AnswerRow, NewRun, RunRecord, RunStatus, Store};
use crate::{preflight, progress, score};
use serde_json::json;
use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Everything `docent-eval run` was asked to do.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// GGUF model file.
    pub model: PathBuf,
    /// Question file.
    pub questions: PathBuf,
    /// Results database.
    pub db: PathBuf,
    /// Continue an unfinished run instead of starting a new one.
    pub resume: bool,
    /// With `resume`: this run rather than the latest unfinished one.
    pub run_id: Option<i64>,
    /// Settings that shape answers (the run identity).
    pub generation: GenerationSettings,
    /// Settings that shape speed and memory.
    pub execution: ExecutionSettings,
    /// Seconds in-flight questions get to finish after a stop request.
    pub grace: Duration,
    /// Benchmark only: decode as usual but commit no answers and take no memory samples.
    pub discard_answers: bool,
    /// Run even when preflight predicts the model will not fit.
    pub force: bool,
}

/// How a run invocation ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    /// The run.
    pub run_id: i64,
    /// Its status now.
    pub status: RunStatus,
    /// Answers committed by this invocation.
    pub committed_now: u64,
    /// Questions in the run.
    pub total: i64,
    /// Answer rows in the run, all sessions.
    pub answered: i64,
    /// `error` rows in the run, all sessions.
    pub errors: i64,
    /// Process exit code for this outcome.
    pub exit_code: i32,
    /// One sentence for the user.
    pub message: String,
}

/// Shortest shared prompt prefix worth its own KV sequence, in tokens.
const MIN_SHARED_PREFIX: usize = 8;

/// sha256 of a file, streamed (a multi-GB model is never read into memory).
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer).map_err(|e| Error::io(path, e))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Run (or resume) an evaluation. Input problems return `Err` before anything is written.
pub fn run(request: &RunRequest, stop: &StopSignal) -> Result<RunOutcome> {
    request.generation.validate()?;
    request.execution.validate()?;
    if request.run_id.is_some() && !request.resume {
        return Err(Error::Usage("--run-id needs --resume".into()));
    }
    let set = dataset::load(&request.questions)?;
    let model_size = preflight::check_model_file(&request.model)?;
    let questions = limited(&set, request.generation.limit);
    // Memory preflight from the GGUF header: a run predicted not to fit is refused here, before
    // the store is opened or the weights load (unless --force).
    let preflight = preflight::check_run(
        &request.model,
        questions,
        &request.generation,
        &request.execution,
        request.force,
    )?;

    let store = Store::open(&request.db)?;
    log::info!(
        "hashing {} (cached after the first run)",
        request.model.display()
    );
    let model_sha256 = store.cached_file_hash(&request.model, || sha256_file(&request.model))?;
    let identity = RunIdentity {
        model_sha256,
        questions_sha256: set.sha256.clone(),
        settings: request.generation.clone(),
    };

    let run_id = match resolve_run(&store, request, &identity)? {
        Resolution::Continue(run) => run.id,
        Resolution::AlreadyFinished(run) => return finished_outcome(&store, &run),
        Resolution::New => {
            let model_path = request.model.display().to_string();
            let model_name = request
                .model
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let config_json = serde_json::to_string(&request.generation).unwrap_or_default();
            let host_json = host_json().to_string();
            let questions_path = request.questions.display().to_string();
            let run_id = store.create_run(&NewRun {
                model_path: &model_path,
                model_name: &model_name,
                model_size_bytes: model_size,
                model_sha256: &identity.model_sha256,
                questions_path: &questions_path,
                questions_sha256: &identity.questions_sha256,
                config_json: &config_json,
                host_json: &host_json,
                questions,
            })?;
            log::info!("started run {run_id}: {} questions", questions.len());
            run_id
        }
    };
    let (pid, started) = control::this_process();
    store.claim_run(run_id, pid, &started, control::holder_alive)?;

    match execute(&store, request, run_id, questions, stop, &preflight) {
        Ok(outcome) => Ok(outcome),
        Err(error) => {
            let reason = error.to_string();
            if let Err(e) = store.end_session(run_id, RunStatus::Failed, Some(&reason), 0) {
                log::error!("could not mark run {run_id} failed: {e}");
            }
            Err(error)
        }
    }
}

fn limited(set: &QuestionSet, limit: Option<usize>) -> &[Question] {
    let n = limit.map_or(set.questions.len(), |l| l.min(set.questions.len()));
    &set.questions[..n]
}

enum Resolution {
    New,
    Continue(RunRecord),
    AlreadyFinished(RunRecord),
}

fn recorded_identity(run: &RunRecord) -> Result<RunIdentity> {
    let settings = serde_json::from_str(&run.config_json).map_err(|e| {
        Error::Usage(format!(
            "run {} has unreadable settings ({e}); start a new run without --resume",
            run.id
        ))
    })?;
    Ok(RunIdentity {
        model_sha256: run.model_sha256.clone(),
        questions_sha256: run.questions_sha256.clone(),
        settings,
    })
}

fn resolve_run(store: &Store, request: &RunRequest, identity: &RunIdentity) -> Result<Resolution> {
    if !request.resume {
        return Ok(Resolution::New);
    }
    let target = match request.run_id {
        Some(id) => Some(store.run(id)?.ok_or_else(|| {
            Error::Usage(format!(
                "--run-id {id}: no such run in {}; `docent-eval status --db {}` lists runs",
                request.db.display(),
                request.db.display()
            ))
        })?),
        None => store.latest_unfinished_run()?,
    };
    let Some(run) = target else {
        // Nothing unfinished: the same run already done is "nothing to do", else start one.
        if let Some(last) = store.latest_run()? {
            if recorded_identity(&last)?.differences(identity).is_empty() {
                return Ok(Resolution::AlreadyFinished(last));
            }
        }
        log::info!(
            "--resume: no unfinished run in {}; starting a new run",
            request.db.display()
        );
        return Ok(Resolution::New);
    };
    let differences = identity.differences(&recorded_identity(&run)?);
    if !differences.is_empty() {
        return Err(Error::ResumeMismatch {
            run_id: run.id,
            differences,
        });
    }
    if run.status == RunStatus::Finished {
        return Ok(Resolution::AlreadyFinished(run));
    }
    log::info!("resuming run {} ({})", run.id, run.status.as_str());
    Ok(Resolution::Continue(run))
}

fn counts(store: &Store, run_id: i64) -> Result<(i64, i64)> {
    Ok(store.connection().query_row(
        "SELECT COUNT(*), COALESCE(SUM(status = 'error'), 0) FROM answers WHERE run_id = ?1",
        [run_id],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?)
}

fn finished_outcome(store: &Store, run: &RunRecord) -> Result<RunOutcome> {
    let (answered, errors) = counts(store, run.id)?;
    Ok(RunOutcome {
        run_id: run.id,
        status: RunStatus::Finished,
        committed_now: 0,
        total: run.question_count,
        answered,
        errors,
        exit_code: exit_code::OK,
        message: format!(
            "run {} already finished ({answered}/{} answered); nothing to do",
            run.id, run.question_count
        ),
    })
}

/// Host, hardware and build, stored once per run.
pub fn host_json() -> serde_json::Value {
    let mut probe = crate::monitor::Probe::new();
    let sample = probe.sample();
    let mut system = sysinfo::System::new();
    system.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
    json!({
        "hostname": sysinfo::System::host_name(),
        "os": sysinfo::System::long_os_version(),
        "cpu": system.cpus().first().map(|c| c.brand().trim().to_string()),
        "logical_cpus": system.cpus().len(),
        "ram_total_bytes": sample.ram_total_bytes,
        "swap_total_bytes": sample.swap_total_bytes,
        "gpus": sample.gpus.iter().map(|g| json!({"index": g.index, "name": g.name, "total_bytes": g.total_bytes})).collect::<Vec<_>>(),
        "llama_system_info": crate::engine::system_info(),
        "build": crate::build_info(),
    })
}

/// A prepared question: its prompt, or why it cannot run.
enum Prepared {
    Ready(Vec<Token>),
    Rejected(String),
}

fn execute(
    store: &Store,
    request: &RunRequest,
    run_id: i64,
    questions: &[Question],
    stop: &StopSignal,
    preflight: &preflight::RunPreflight,
) -> Result<RunOutcome> {
    let answered: HashSet<String> = store.answered_question_ids(run_id)?;
    let pending: Vec<usize> = (0..questions.len())
        .filter(|&i| !answered.contains(&questions[i].id))
        .collect();
    log::info!(
        "run {run_id}: {} of {} questions already answered, {} to go",
        answered.len(),
        questions.len(),
        pending.len()
    );

    let placement = preflight.placement_for_load(request.execution.gpu_layers, &request.model);
    let engine = Engine::load_placed(
        &request.model,
        placement.gpu_layers,
        placement.reason.clone(),
    )
    .map_err(|error| match error {
        // The header said so already: name the cause in the failed run's reason.
        Error::Engine(message) if preflight.report.model.is_truncated() => Error::Engine(format!(
            "{message}. Preflight: the file is {} bytes but its header declares {}: it is truncated (re-download or re-convert it and start a new run: a different file is a different run)",
            preflight.report.model.file_bytes, preflight.report.model.declared_file_bytes
        )),
        other => other,
    })?;
    let settings = &request.generation;
    let system = settings.system_prompt.as_deref();
    let max_tokens = settings.max_tokens as usize;

    // Tokenize every question (not only pending ones) so the context size is the same in every
    // session of the run.
    let prompts: Vec<Result<Vec<Token>>> = questions
        .iter()
        .map(|q| {
            engine
                .render_prompt(system, &q.user_message())
                .map(|p| engine.tokenize(&p))
        })
        .collect();
    let longest = prompts
        .iter()
        .filter_map(|p| p.as_ref().ok().map(Vec::len))
        .max()
        .unwrap_or(0);
    let trained = engine.info().n_ctx_train.max(256) as usize;
    let ctx_per_sequence = match settings.ctx {
        Some(ctx) => ctx as usize,
        None => (longest + max_tokens)
            .div_ceil(256)
            .max(1)
            .saturating_mul(256)
            .min(trained),
    };
    let prepared: Vec<Prepared> = prompts
        .into_iter()
        .map(|p| match p {
            Err(e) => Prepared::Rejected(format!("prompt could not be built: {e}")),
            Ok(tokens) if tokens.is_empty() => Prepared::Rejected("prompt is empty after tokenization".into()),
            Ok(tokens) if tokens.len() + max_tokens > ctx_per_sequence => Prepared::Rejected(format!(
                "prompt of {} tokens + --max-tokens {max_tokens} exceeds the context of {ctx_per_sequence} tokens per sequence{}",
                tokens.len(),
                if settings.ctx.is_some() { "; raise --ctx" } else { " (the model's trained context)" }
            )),
            Ok(tokens) => Prepared::Ready(tokens),
        })
        .collect();

    let runnable: Vec<usize> = pending
        .iter()
        .copied()
        .filter(|&i| matches!(prepared[i], Prepared::Ready(_)))
        .collect();
    let slots = (request.execution.parallel as usize).min(runnable.len().max(1)) as u32;
    // The prefix is taken over every question of the run, so it is the same in every session.
    let shared = if request.execution.prefix_cache && engine.supports_sequence_copy() {
        scheduler::common_prefix(prepared.iter().filter_map(|p| match p {
            Prepared::Ready(tokens) => Some(tokens.as_slice()),
            Prepared::Rejected(_) => None,
        }))
    } else {
        Vec::new()
    };
    // A short prefix is not worth a sequence of its own.
    let prefix = SharedPrefix {
        sequence: slots,
        tokens: if shared.len() >= MIN_SHARED_PREFIX {
            shared
        } else {
            Vec::new()
        },
    };
    let sequences = slots + u32::from(!prefix.tokens.is_empty());
    let threads = request.execution.effective_threads();
    let options = SessionOptions {
        sequences,
        ctx_per_sequence: ctx_per_sequence as u32,
        batch_size: request.execution.batch_size.max(sequences),
        threads,
        kv_unified: request.execution.kv_unified,
    };
    // The prediction for the settings really used (context and prompt lengths now known).
    let predicted = preflight.refined(
        options.ctx_per_sequence,
        options.sequences,
        options.batch_size,
        (longest as u32)
            .saturating_mul(options.sequences)
            .min(options.batch_size),
        engine.info().gpu_layers,
    );
    store.set_predicted_peak(run_id, predicted.host_peak)?;
    log::info!(
        "predicted peak: RSS {}, GPU {} (KV cache {}, compute {})",
        preflight::hardware::gib(predicted.host_peak),
        preflight::hardware::gib(predicted.gpu_peak),
        preflight::hardware::gib(predicted.host.kv_cache + predicted.gpu.kv_cache),
        preflight::hardware::gib(predicted.host.compute + predicted.gpu.compute)
    );
    let engine_json = json!({
        "placement": placement,
        "preflight": {
            "verdict": preflight.report.verdict(),
            "verdict_text": preflight.report.evaluation.verdict_text,
            "predicted_peak_rss_bytes": predicted.host_peak,
            "predicted_gpu_bytes": predicted.gpu_peak,
            "estimate": predicted,
            "hardware": preflight.report.hardware,
        },
        "model": engine.info(),
        "session": options,
        "shared_prefix_tokens": prefix.tokens.len(),
        "execution": request.execution,
    });
    store.set_engine_json(run_id, &engine_json.to_string())?;
    let mut session = engine.session(options)?;
    log::info!(
        "context: {} tokens per sequence x {} sequences; batch {}; {} threads; shared prompt prefix: {} tokens",
        options.ctx_per_sequence,
        options.sequences,
        options.batch_size,
        threads,
        prefix.tokens.len()
    );

    let recorder = if request.discard_answers {
        Recorder::discarding()
    } else {
        Recorder::start(
            &request.db,
            run_id,
            Duration::from_millis(request.execution.sample_interval_ms),
        )?
    };
    let mut progress = progress::Progress::new(questions.len() as u64, answered.len() as u64);

    let mut jobs_vec = Vec::with_capacity(runnable.len());
    for &index in &pending {
        let question = &questions[index];
        match &prepared[index] {
            Prepared::Rejected(reason) => {
                log::warn!("question {}: {reason}", question.id);
                recorder.record(AnswerRow {
                    question_id: question.id.clone(),
                    ok: false,
                    error: Some(reason.clone()),
                    ..Default::default()
                });
                progress.advance(false, 0, recorder.state());
            }
            Prepared::Ready(tokens) => jobs_vec.push(Job {
                question_index: index,
                prompt: tokens.clone(),
                sampler: engine.sampler(settings, question_seed(settings.seed, &question.id)),
            }),
        }
    }
    let mut jobs = jobs_vec.into_iter();
    let limits = Limits {
        sequences: slots,
        max_tokens,
        ignore_eos: settings.ignore_eos,
    };
    let grace = request.grace;
    let state = std::sync::Arc::clone(recorder.state());
    let mut control = || {
        if state.failed.load(Ordering::SeqCst) {
            return Control::Abort;
        }
        match stop.requested_for() {
            None => Control::Continue,
            Some(elapsed) if elapsed < grace => Control::Drain,
            Some(_) => Control::Abort,
        }
    };
    // Time the decode thread spends on each answer (scoring, progress, handing the row over), so
    // the cost of recording is measured rather than assumed.
    let mut answer_work = Duration::ZERO;
    let mut on_complete = |completion: Completion| {
        let handling = std::time::Instant::now();
        let question = &questions[completion.question_index];
        let scores = score::score(question, &completion.text);
        progress.advance(true, completion.completion_tokens as u64, recorder.state());
        recorder.record(answer_row(question, &completion, scores));
        answer_work += handling.elapsed();
    };
    let decode_started = std::time::Instant::now();
    let ended = scheduler::run(
        &mut session,
        limits,
        &prefix,
        &mut jobs,
        &mut control,
        &mut on_complete,
    );
    let decode_seconds = decode_started.elapsed().as_secs_f64();
    let write_result = recorder.finish();
    // `make bench` reads this line: the decode loop's wall time, without load and tokenization.
    log::info!(
        "decode loop: {} questions in {decode_seconds:.3} s",
        state.committed.load(Ordering::SeqCst)
    );
    let recorder_cpu_ms = state.cpu_ns.load(Ordering::Relaxed) as f64 / 1e6;
    let answer_work_ms = answer_work.as_secs_f64() * 1000.0;
    // `make bench` reads this line too: what recording cost, measured on both threads.
    log::info!(
        "recording cost: recorder thread {recorder_cpu_ms:.1} ms CPU for {} answers and {} memory samples; decode thread {answer_work_ms:.1} ms on answers; {:.3} % of the decode loop",
        state.committed.load(Ordering::SeqCst),
        state.samples.load(Ordering::Relaxed),
        100.0 * (recorder_cpu_ms + answer_work_ms) / (decode_seconds * 1000.0).max(1e-9)
    );
    progress.finish();
    let ended = ended?;
    write_result?;

    let (answered_rows, errors) = counts(store, run_id)?;
    let total = questions.len() as i64;
    let committed_now = state.committed.load(Ordering::SeqCst);
    if request.discard_answers {
        let reason = "benchmark run: answers were discarded";
        store.end_session(run_id, RunStatus::Interrupted, Some(reason), 0)?;
        return Ok(RunOutcome {
            run_id,
            status: RunStatus::Interrupted,
            committed_now,
            total,
            answered: answered_rows,
            errors,
            exit_code: exit_code::OK,
            message: format!("run {run_id}: {reason}"),
        });
    }
    let (status, exit, message) = if ended == Ended::AllDone && answered_rows == total {
        let exit = if errors > 0 {
            exit_code::SOME_FAILED
        } else {
            exit_code::OK
        };
        (
            RunStatus::Finished,
            exit,
            format!("run {run_id} finished: {answered_rows}/{total} answered, {errors} errors"),
        )
    } else {
        (
            RunStatus::Interrupted,
            exit_code::STOPPED,
            format!(
                "run {run_id} stopped: {answered_rows}/{total} answered; continue with --resume"
            ),
        )
    };
    let reason = (status == RunStatus::Interrupted).then_some("stopped by a signal or `stop`");
    store.end_session(run_id, status, reason, 0)?;
    Ok(RunOutcome {
        run_id,
        status,
        committed_now,
        total,
        answered: answered_rows,
        errors,
        exit_code: exit,
        message,
    })
}

/// Per-question seed: independent of scheduling order and of which questions share a batch.
fn question_seed(seed: u32, question_id: &str) -> u32 {
    let digest = dataset::hex_sha256(format!("{seed}:{question_id}").as_bytes());
    u32::from_str_radix(&digest[..8], 16).unwrap_or(seed)
}

fn answer_row(question: &Question, c: &Completion, scores: score::Scores) -> AnswerRow {
    AnswerRow {
        question_id: question.id.clone(),
        ok: true,
        answer: Some(c.text.clone()),
        error: None,
        finish_reason: Some(c.finish_reason.as_str().to_string()),
        prompt_tokens: Some(c.prompt_tokens as i64),
        prompt_tokens_reused: Some(c.prompt_tokens_reused as i64),
        completion_tokens: Some(c.completion_tokens as i64),
        queued_at: Some(store::time_text(c.queued_at)),
        started_at: Some(store::time_text(c.started_at)),
        first_token_at: Some(store::time_text(c.first_token_at)),
        finished_at: Some(store::time_text(c.finished_at)),
        ttft_ms: Some(c.ttft_ms),
        latency_ms: Some(c.latency_ms),
        decode_tok_per_s: c.decode_tok_per_s,
        rss_bytes: None,
        gpu_used_bytes: None,
        score: scores.score,
        exact_match: scores.exact_match,
        f1: scores.f1,
        chosen_index: scores.chosen_index.map(|i| i as i64),
        parallel_slot: Some(i64::from(c.slot)),
    }
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

/// A question's prompt exactly as the model receives it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RenderedPrompt {
    /// Question id.
    pub id: String,
    /// The rendered prompt text (chat template applied).
    pub prompt: String,
    /// Its length in the model's tokens.
    pub prompt_tokens: usize,
}

/// Render every question's prompt with the model's chat template (for inspection and for
/// feeding the same prompts to other tools in `make bench`).
pub fn render_prompts(
    model: &Path,
    questions: &Path,
    system_prompt: Option<&str>,
    limit: Option<usize>,
) -> Result<Vec<RenderedPrompt>> {
    let set = dataset::load(questions)?;
    preflight::check_model_file(model)?;
    let engine = Engine::load(model, crate::config::GpuLayers::Count(0))?;
    limited(&set, limit)
        .iter()
        .map(|q| {
            let prompt = engine.render_prompt(system_prompt, &q.user_message())?;
            Ok(RenderedPrompt {
                id: q.id.clone(),
                prompt_tokens: engine.tokenize(&prompt).len(),
                prompt,
            })
        })
        .collect()
}
