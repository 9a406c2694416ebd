//! One run, end to end, as named steps: validate the input → preflight → open the store →
//! resolve or create the run → claim it → load the model → plan the session → decode (the
//! scheduler over the engine, the recorder committing each answer) → record how it ended.
//!
//! Input problems are found before anything is written. Once the run exists, any failure marks
//! it `failed` with the reason; `--resume` continues it after the cause is fixed.

mod choices;
mod loglik;
mod prefix_tree;
mod prepare;
pub mod progress;
pub mod recorder;
mod resume;
pub mod scheduler;
#[cfg(test)]
mod scripted;
pub mod signal;

pub use prepare::{rendered_prompts, RenderedPrompt};
pub use resume::sha256_file;
pub use signal::StopSignal;

use crate::config::{ExecutionSettings, GenerationSettings, RunIdentity};
use crate::dataset::shard::{ShardIndex, ShardKey, ShardSpec};
use crate::dataset::{Question, QuestionSet};
use crate::engine::{self, Engine};
use crate::error::{exit_code, Error, Result};
use crate::preflight::{self, RunPreflight};
use crate::prompt::Prompter;
use crate::record::{EngineRecord, PreflightRecord, TokenizerCheck};
use crate::store::{AnswerRow, Holder, NewRun, PlannedQuestion, RunRecord, RunStatus, Store};
use prepare::{Prompt, SessionPlan};
use recorder::{Recorder, RecorderState};
use resume::Resolution;
use scheduler::{Completion, Control, Ended, Job, Limits};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// The original model's tokenizer.json to check the GGUF's tokenizer against.
    pub hf_tokenizer: Option<PathBuf>,
    /// Refuse the run when the tokenizer check finds a difference.
    pub require_tokenizer_match: bool,
    /// Answer only this shard of the set (`--shard`, resolved), split by `shard_key`.
    pub shard: Option<ShardIndex>,
    /// What the split is by.
    pub shard_key: ShardKey,
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
    pub exit_code: u8,
    /// One sentence for the user.
    pub message: String,
}

/// Run (or resume) an evaluation.
pub fn run(request: &RunRequest, stop: &StopSignal) -> Result<RunOutcome> {
    let set = validate(request)?;
    let selection = select_shard(request, limited(&set.questions, request.generation.limit));
    let (request, questions) = (&selection.request, &selection.questions[..]);
    let tokenizer = check_tokenizer(request, questions)?;
    let backend = engine::backend_facts();
    // A run predicted not to fit is refused here, before the store is opened (unless --force).
    let preflight = preflight::check_run(
        &request.model,
        questions,
        &request.generation,
        &request.execution,
        request.force,
        &backend,
    )?;
    let mut store = Store::open(&request.db)?;
    let identity = resume::identity(&store, request, &set.sha256)?;
    let run_id = match resume::resolve(&store, request, &identity)? {
        Resolution::AlreadyFinished(run) => return already_finished(&store, &run),
        Resolution::Continue(run) => run.id,
        Resolution::New => create_run(&store, request, &selection, &identity, &backend)?,
    };
    let holder = crate::holder::this_process();
    store.claim_run(run_id, &holder, crate::holder::holder_alive)?;
    if let Some(check) = &tokenizer {
        store.set_tokenizer_check(run_id, check)?;
    }
    let outcome = if questions.is_empty() {
        empty_shard(&store, run_id)
    } else {
        session(
            &store, request, run_id, &holder, questions, stop, &preflight,
        )
    }
    .map_err(|error| record_failure(&store, run_id, error));
    checkpoint(&store);
    outcome
}

/// The questions this invocation answers: the whole set, or the shard `--shard` names. A shard
/// is recorded in the settings (so it is part of the run identity) with the hash of its ids and
/// the host, and the whole set's partition goes with the run for `merge`.
struct Selection {
    request: RunRequest,
    questions: Vec<Question>,
    plan: Vec<PlannedQuestion>,
}

fn select_shard(request: &RunRequest, questions: &[Question]) -> Selection {
    let Some(shard) = request.shard else {
        return Selection {
            request: request.clone(),
            questions: questions.to_vec(),
            plan: Vec::new(),
        };
    };
    let shard_of = crate::dataset::shard::partition(questions, request.shard_key, shard.count);
    let plan = questions
        .iter()
        .zip(&shard_of)
        .map(|(q, &shard_index)| PlannedQuestion {
            question_id: q.id.clone(),
            ordinal: q.ordinal as i64,
            shard_index,
        })
        .collect();
    let selected: Vec<Question> = questions
        .iter()
        .zip(&shard_of)
        .filter(|&(_, &s)| s == shard.index)
        .map(|(q, _)| q.clone())
        .collect();
    log::info!(
        "shard {shard} by {}: {} of {} questions",
        request.shard_key,
        selected.len(),
        questions.len()
    );
    let mut request = request.clone();
    request.generation.shard = Some(ShardSpec {
        index: Some(shard.index),
        count: shard.count,
        key: request.shard_key,
        ids_sha256: Some(crate::dataset::shard::ids_sha256(
            selected.iter().map(|q| q.id.as_str()),
        )),
        host: sysinfo::System::host_name(),
    });
    Selection {
        request,
        questions: selected,
        plan,
    }
}

/// A shard the split left without questions (more shards than questions or passages): finished
/// at once, without loading the model, so that the job array and the merge go on.
fn empty_shard(store: &Store, run_id: i64) -> Result<RunOutcome> {
    store.end_session(run_id, RunStatus::Finished, None, 0)?;
    Ok(RunOutcome {
        run_id,
        status: RunStatus::Finished,
        committed_now: 0,
        total: 0,
        answered: 0,
        errors: 0,
        exit_code: exit_code::OK,
        message: format!("run {run_id}: this shard holds no questions; nothing to do"),
    })
}

/// Fold the WAL into the database file, so that a copy of the file alone (a shard's database
/// copied off a node's local disk) holds every committed row.
fn checkpoint(store: &Store) {
    if let Err(e) = store.checkpoint() {
        log::warn!(
            "could not checkpoint {} ({e:#}); copy its -wal file with it",
            store.path().display()
        );
    }
}

/// Settings, flags and the question set (read through the mapping, every prompt rendered with
/// the template), checked before anything is loaded or written.
fn validate(request: &RunRequest) -> Result<QuestionSet> {
    request.generation.validate()?;
    request.execution.validate()?;
    let set = crate::dataset::load_mapped(&request.questions, request.generation.mapping.as_ref())?;
    Prompter::new(&request.generation)?.check(&set.path, &set.questions)?;
    preflight::check_model_file(&request.model)?;
    Ok(set)
}

/// `--hf-tokenizer`: compare the GGUF's tokenizer with the original model's on every prompt
/// before anything is written. A difference is logged and stored with the run; with
/// `--require-tokenizer-match` it refuses the run.
fn check_tokenizer(request: &RunRequest, questions: &[Question]) -> Result<Option<TokenizerCheck>> {
    let Some(hf_tokenizer) = &request.hf_tokenizer else {
        return Ok(None);
    };
    let prompter = Prompter::new(&request.generation)?;
    let check = crate::tokcheck::check(&request.model, hf_tokenizer, questions, &prompter)?;
    if !check.agrees() {
        if request.require_tokenizer_match {
            return Err(Error::TokenizerMismatch(check.text()).into());
        }
        log::warn!("{}", check.text().trim_end());
    }
    Ok(Some(check))
}

/// The first `limit` questions (all without a limit).
fn limited(questions: &[Question], limit: Option<usize>) -> &[Question] {
    &questions[..limit.map_or(questions.len(), |l| l.min(questions.len()))]
}

fn create_run(
    store: &Store,
    request: &RunRequest,
    selection: &Selection,
    identity: &RunIdentity,
    backend: &crate::record::BackendFacts,
) -> Result<i64> {
    let model_size_bytes = std::fs::metadata(&request.model)
        .map_err(|e| crate::error::io(&request.model, e))?
        .len();
    let run_id = store.create_run(&NewRun {
        model_path: &request.model.display().to_string(),
        model_name: &request
            .model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        model_size_bytes,
        model_sha256: &identity.model_sha256,
        questions_path: &request.questions.display().to_string(),
        questions_sha256: &identity.questions_sha256,
        settings: &request.generation,
        host: &crate::monitor::host_record(&backend.system_info),
        questions: &selection.questions,
        shard_plan: &selection.plan,
    })?;
    log::info!(
        "started run {run_id}: {} questions",
        selection.questions.len()
    );
    Ok(run_id)
}

fn already_finished(store: &Store, run: &RunRecord) -> Result<RunOutcome> {
    let (answered, errors) = store.answer_counts(run.id)?;
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

/// Mark the run failed with the error as its reason; the error becomes [`Error::RunFailed`].
/// A process that lost its claim leaves the run to the process that took it.
fn record_failure(store: &Store, run_id: i64, error: anyhow::Error) -> anyhow::Error {
    if let Some(Error::ClaimLost { .. }) = error.downcast_ref::<Error>() {
        return error;
    }
    let reason = format!("{error:#}");
    if let Err(e) = store.end_session(run_id, RunStatus::Failed, Some(&reason), 0) {
        log::error!("could not mark run {run_id} failed: {e:#}");
    }
    Error::RunFailed { run_id, reason }.into()
}

/// One session of a claimed run: load, plan, decode, record the end.
fn session(
    store: &Store,
    request: &RunRequest,
    run_id: i64,
    holder: &Holder,
    questions: &[Question],
    stop: &StopSignal,
    preflight: &RunPreflight,
) -> Result<RunOutcome> {
    let pending = resume::pending(store, run_id, questions)?;
    let scoring = request.generation.mc_scoring;
    let to_score = resume::unscored_choices(store, run_id, questions, scoring)?;
    let to_generate: Vec<usize> = pending
        .into_iter()
        .filter(|&i| scoring.generates_choices() || !questions[i].is_multiple_choice())
        .collect();
    let engine = load_engine(request, preflight)?;
    let plan = prepare::plan(&engine, questions, &to_generate, request)?;
    let scoring = choices::plan(request, &engine, questions, &to_score)?;
    let sessions = Sessions {
        generation: (!to_generate.is_empty()).then_some(&plan),
        scoring: scoring.as_ref(),
    };
    record_plan(store, run_id, request, preflight, &engine, &plan, sessions)?;
    let scored = choices::phase(request, run_id, holder, questions, scoring, &engine, stop)?;
    if scored.ended == Ended::Stopped || to_generate.is_empty() {
        return end_session(store, request, run_id, questions.len() as i64, scored);
    }
    let decoded = decode(
        request,
        run_id,
        holder,
        questions,
        &to_generate,
        &engine,
        plan,
        stop,
    )?;
    let decoded = Decoded {
        ended: decoded.ended,
        committed_now: decoded.committed_now + scored.committed_now,
    };
    end_session(store, request, run_id, questions.len() as i64, decoded)
}

/// Load the weights where the preflight (or llama.cpp's own fitting, for `auto` with a GPU)
/// places them.
fn load_engine(request: &RunRequest, preflight: &RunPreflight) -> Result<Engine> {
    let fitted = preflight
        .fit_request(request.execution.gpu_layers)
        .map(|fit| {
            engine::fit_gpu_layers(
                &request.model,
                fit.n_ctx,
                fit.n_seq,
                fit.n_batch,
                fit.margin_bytes,
            )
        });
    let placement = preflight.placement(fitted);
    Engine::load_placed(&request.model, placement.gpu_layers, placement.reason).map_err(|error| {
        let model = &preflight.report.model;
        if model.is_truncated() {
            // The header said so already: name the cause in the failed run's reason.
            error.context(format!(
                "the file is {} bytes but its header declares {}: it is truncated (re-download or re-convert it and start a new run: a different file is a different run)",
                model.file_bytes, model.declared_file_bytes
            ))
        } else {
            error
        }
    })
}

/// The llama.cpp contexts a session creates, one after the other: log-likelihood scoring, then
/// generation (each absent when it has nothing to do).
#[derive(Clone, Copy)]
struct Sessions<'a> {
    generation: Option<&'a SessionPlan>,
    scoring: Option<&'a choices::ScoringPlan>,
}

/// The estimate for the contexts the session creates: the larger of scoring and generation
/// (they never coexist), or the generation plan's when neither has work.
fn predicted_peak(
    preflight: &RunPreflight,
    layers: u32,
    plan: &SessionPlan,
    sessions: Sessions<'_>,
) -> crate::preflight::estimate::Estimate {
    let options = plan.options;
    let generation = sessions.generation.map(|plan| {
        let o = plan.options;
        let largest_batch = (plan.longest_prompt as u32)
            .saturating_mul(o.sequences)
            .min(o.batch_size);
        preflight.refined(
            o.ctx_per_sequence,
            o.sequences,
            o.batch_size,
            largest_batch,
            None,
            layers,
        )
    });
    let scoring = sessions.scoring.map(|s| {
        let o = s.options;
        log::info!(
            "scoring context: {} tokens per sequence x {} sequences",
            o.ctx_per_sequence,
            o.sequences
        );
        preflight.refined(
            o.ctx_per_sequence,
            o.sequences,
            o.batch_size,
            s.largest_batch,
            Some(s.logits_rows),
            layers,
        )
    });
    match (generation, scoring) {
        (Some(g), Some(s)) if s.host_peak > g.host_peak => s,
        (Some(g), _) => g,
        (None, Some(s)) => s,
        (None, None) => preflight.refined(
            options.ctx_per_sequence,
            options.sequences,
            options.batch_size,
            options.batch_size,
            None,
            layers,
        ),
    }
}

/// Store the prediction for the settings really used and what the engine chose. The contexts of
/// scoring and generation never coexist: the prediction is the larger of the two.
fn record_plan(
    store: &Store,
    run_id: i64,
    request: &RunRequest,
    preflight: &RunPreflight,
    engine: &Engine,
    plan: &SessionPlan,
    sessions: Sessions<'_>,
) -> Result<()> {
    let options = plan.options;
    let predicted = predicted_peak(preflight, engine.info().gpu_layers, plan, sessions);
    store.set_predicted_peak(run_id, predicted.host_peak)?;
    let record = EngineRecord {
        placement: crate::record::Placement {
            gpu_layers: engine.info().gpu_layers,
            method: preflight.report.evaluation.placement.method.clone(),
            reason: engine.info().gpu_layers_reason.clone(),
        },
        preflight: PreflightRecord {
            verdict: preflight.report.verdict().name().to_string(),
            verdict_text: preflight.report.evaluation.verdict_text.clone(),
            predicted_peak_rss_bytes: predicted.host_peak,
            predicted_gpu_bytes: predicted.gpu_peak,
            weights_bytes: predicted.host.weights + predicted.host.repacked + predicted.gpu.weights,
            kv_cache_bytes: predicted.host.kv_cache + predicted.gpu.kv_cache,
            compute_bytes: predicted.host.compute + predicted.gpu.compute,
        },
        model: engine.info().clone(),
        session: options,
        shared_prefix_tokens: plan.prefix.common_tokens(),
        execution: request.execution.clone(),
    };
    log::info!(
        "predicted peak: RSS {}, GPU {} (KV cache {}, compute {}); context {} tokens per sequence x {} sequences; batch {}; {} threads; shared prompt prefix: {} tokens",
        crate::units::gib(predicted.host_peak),
        crate::units::gib(predicted.gpu_peak),
        crate::units::gib(record.preflight.kv_cache_bytes),
        crate::units::gib(record.preflight.compute_bytes),
        options.ctx_per_sequence,
        options.sequences,
        options.batch_size,
        options.threads,
        record.shared_prefix_tokens
    );
    if !plan.prefix.nodes.is_empty() {
        log::info!(
            "prompt prefixes: {} shared ({} tokens computed once), {} sequences hold them",
            plan.prefix.nodes.len(),
            // A prefix extending another is built from a copy of it: only its own tokens.
            plan.prefix
                .nodes
                .iter()
                .map(|n| n.tokens.len() - n.parent.map_or(0, |p| plan.prefix.nodes[p].tokens.len()))
                .sum::<usize>(),
            plan.prefix.sequences.len()
        );
    }
    store.set_engine_record(run_id, &record)
}

/// What decoding a session produced.
pub(crate) struct Decoded {
    pub ended: Ended,
    pub committed_now: u64,
}

/// Decode every pending question: rejected prompts become `error` rows at once, the rest go
/// through the scheduler; each finished answer is scored and handed to the recorder thread.
#[allow(clippy::too_many_arguments)]
fn decode(
    request: &RunRequest,
    run_id: i64,
    holder: &Holder,
    questions: &[Question],
    pending: &[usize],
    engine: &Engine,
    plan: SessionPlan,
    stop: &StopSignal,
) -> Result<Decoded> {
    let mut session = engine.session(plan.options)?;
    let recorder = if request.discard_answers {
        Recorder::discarding()
    } else {
        Recorder::start(
            &request.db,
            run_id,
            holder.clone(),
            Duration::from_millis(request.execution.sample_interval_ms),
        )?
    };
    let already = (questions.len() - pending.len()) as u64;
    let mut progress = progress::Progress::new(questions.len() as u64, already);
    let jobs = jobs(
        request,
        questions,
        &plan.order,
        engine,
        plan.prompts,
        &recorder,
        &mut progress,
    );
    let state = Arc::clone(recorder.state());
    let limits = Limits {
        sequences: plan.slots,
        max_tokens: request.generation.max_tokens as usize,
        ignore_eos: request.generation.ignore_eos,
    };
    let mut control = || control(&state, stop, request.grace);
    let mut answer_work = Duration::ZERO;
    let mut on_complete = |completion: Completion| {
        let handling = Instant::now();
        let question = &questions[completion.question_index];
        let scores = crate::score::score(question, &completion.text);
        progress.advance(true, completion.completion_tokens as u64, recorder.state());
        recorder.record(answer_row(question, &completion, scores));
        answer_work += handling.elapsed();
    };
    let decode_started = Instant::now();
    let ended = scheduler::run(
        &mut session,
        limits,
        &plan.prefix,
        &mut jobs.into_iter(),
        &mut control,
        &mut on_complete,
    );
    let decode_seconds = decode_started.elapsed().as_secs_f64();
    let written = recorder.finish();
    log_recording_cost(&state, decode_seconds, answer_work);
    progress.finish();
    let ended = ended?;
    written?;
    Ok(Decoded {
        ended,
        committed_now: state.committed.load(Ordering::SeqCst),
    })
}

/// The scheduler's jobs, in question order; a rejected prompt is recorded as an `error` row.
fn jobs(
    request: &RunRequest,
    questions: &[Question],
    pending: &[usize],
    engine: &Engine,
    mut prompts: Vec<Prompt>,
    recorder: &Recorder,
    progress: &mut progress::Progress,
) -> Vec<Job<engine::SequenceSampler>> {
    let mut jobs = Vec::with_capacity(pending.len());
    for &index in pending {
        let question = &questions[index];
        match std::mem::replace(&mut prompts[index], Prompt::Rejected(String::new())) {
            Prompt::Rejected(reason) => {
                log::warn!(
                    "question {}: {reason}",
                    crate::units::printable(&question.id, crate::units::Lines::Escape)
                );
                recorder.record(AnswerRow {
                    question_id: question.id.clone(),
                    ok: false,
                    error: Some(reason),
                    ..Default::default()
                });
                progress.advance(false, 0, recorder.state());
            }
            Prompt::Ready(tokens) => jobs.push(Job {
                question_index: index,
                prompt: tokens,
                sampler: engine.sampler(
                    &request.generation,
                    resume::question_seed(request.generation.seed, &question.id),
                ),
            }),
        }
    }
    jobs
}

/// Continue; drain on the first stop request until the grace period ends; abort after it, or
/// at once when writing failed (answers that cannot be stored are not worth computing).
pub(super) fn control(state: &RecorderState, stop: &StopSignal, grace: Duration) -> Control {
    if state.failed.load(Ordering::SeqCst) {
        return Control::Abort;
    }
    match stop.requested_for() {
        None => Control::Continue,
        Some(elapsed) if elapsed < grace => Control::Drain,
        Some(_) => Control::Abort,
    }
}

/// `make bench` reads these two lines: the decode loop's wall time (without load and
/// tokenization), and what recording cost, measured on both threads.
fn log_recording_cost(state: &RecorderState, decode_seconds: f64, answer_work: Duration) {
    let committed = state.committed.load(Ordering::SeqCst);
    log::info!("decode loop: {committed} questions in {decode_seconds:.3} s");
    let recorder_cpu_ms = state.cpu_ns.load(Ordering::Relaxed) as f64 / 1e6;
    let answer_work_ms = answer_work.as_secs_f64() * 1000.0;
    log::info!(
        "recording cost: recorder thread {recorder_cpu_ms:.1} ms CPU for {committed} answers and {} memory samples; decode thread {answer_work_ms:.1} ms on answers; {:.3} % of the decode loop",
        state.samples.load(Ordering::Relaxed),
        100.0 * (recorder_cpu_ms + answer_work_ms) / (decode_seconds * 1000.0).max(1e-9)
    );
}

/// Record how the session ended: finished when every question has a row, else interrupted.
fn end_session(
    store: &Store,
    request: &RunRequest,
    run_id: i64,
    total: i64,
    decoded: Decoded,
) -> Result<RunOutcome> {
    let (answered, errors) = store.answer_counts(run_id)?;
    let outcome = |status, exit_code, message| RunOutcome {
        run_id,
        status,
        committed_now: decoded.committed_now,
        total,
        answered,
        errors,
        exit_code,
        message,
    };
    if request.discard_answers {
        let reason = "benchmark run: answers were discarded";
        store.end_session(run_id, RunStatus::Interrupted, Some(reason), 0)?;
        return Ok(outcome(
            RunStatus::Interrupted,
            exit_code::OK,
            format!("run {run_id}: {reason}"),
        ));
    }
    if decoded.ended == Ended::AllDone && answered == total {
        store.end_session(run_id, RunStatus::Finished, None, 0)?;
        let exit = if errors > 0 {
            exit_code::SOME_FAILED
        } else {
            exit_code::OK
        };
        return Ok(outcome(
            RunStatus::Finished,
            exit,
            format!("run {run_id} finished: {answered}/{total} answered, {errors} errors"),
        ));
    }
    store.end_session(
        run_id,
        RunStatus::Interrupted,
        Some("stopped by a signal or `stop`"),
        0,
    )?;
    Ok(outcome(
        RunStatus::Interrupted,
        exit_code::STOPPED,
        format!("run {run_id} stopped: {answered}/{total} answered; continue with --resume"),
    ))
}

fn answer_row(question: &Question, c: &Completion, scores: crate::score::Scores) -> AnswerRow {
    AnswerRow {
        question_id: question.id.clone(),
        ok: true,
        answer: Some(c.text.clone()),
        error: None,
        finish_reason: Some(c.finish_reason.as_str().to_string()),
        prompt_tokens: Some(c.prompt_tokens as i64),
        prompt_tokens_reused: Some(c.prompt_tokens_reused as i64),
        completion_tokens: Some(c.completion_tokens as i64),
        queued_at: Some(crate::units::time_text(c.queued_at)),
        started_at: Some(crate::units::time_text(c.started_at)),
        first_token_at: Some(crate::units::time_text(c.first_token_at)),
        finished_at: Some(crate::units::time_text(c.finished_at)),
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
