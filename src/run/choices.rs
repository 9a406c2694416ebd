//! The log-likelihood phase of a session (`--mc-scoring loglik|both`): every multiple-choice
//! question still without choice scores gets its prompt and continuations ([`prompt`]), is
//! scored by [`super::loglik`] in a llama.cpp context of its own, and is committed with all its
//! choices in one transaction (with its answer row when log-likelihood is its only scoring).

use super::loglik::{self, ChoiceJob, Scored};
use super::recorder::Recorder;
use super::scheduler::Ended;
use super::signal::StopSignal;
use super::{Decoded, RunRequest};
use crate::config::McScoring;
use crate::dataset::Question;
use crate::engine::{Engine, SessionOptions, MAX_SEQUENCES};
use crate::error::Result;
use crate::prompt::Prompter;
use crate::store::{AnswerRow, ChoiceRow, ChoiceScores, Holder};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A question ready for scoring, or why it cannot be scored.
enum Prepared {
    Ready(ChoiceJob, Vec<String>),
    Rejected(usize, String),
}

/// The scoring phase decided before decoding: the questions to score, those that cannot be
/// scored and why, and the llama.cpp context they need (counted by the preflight estimate).
pub struct ScoringPlan {
    jobs: Vec<ChoiceJob>,
    continuations: HashMap<usize, Vec<String>>,
    rejected: Vec<(usize, String)>,
    /// The context of the scoring session.
    pub options: SessionOptions,
    /// Tokens of the largest batch: one question's prompt and continuations, up to the batch.
    pub largest_batch: u32,
    /// Most rows of logits one batch reads: a row per continuation token of one question.
    pub logits_rows: u32,
}

/// Tokenize the prompt and continuations of every question in `to_score` (indices into
/// `questions`); `None` when there is nothing to score.
pub fn plan(
    request: &RunRequest,
    engine: &Engine,
    questions: &[Question],
    to_score: &[usize],
) -> Result<Option<ScoringPlan>> {
    if to_score.is_empty() {
        return Ok(None);
    }
    let prompter = Prompter::new(&request.generation)?;
    let ctx_train = engine.info().n_ctx_train as usize;
    let mut jobs = Vec::new();
    let mut continuations = HashMap::new();
    let mut rejected = Vec::new();
    for &index in to_score {
        match prepare(
            request,
            &prompter,
            engine,
            &questions[index],
            index,
            ctx_train,
        ) {
            Prepared::Rejected(index, reason) => rejected.push((index, reason)),
            Prepared::Ready(job, texts) => {
                continuations.insert(job.question_index, texts);
                jobs.push(job);
            }
        }
    }
    let options = session_options(request, &jobs);
    // A question (a group of its choices) is decoded alone: the largest batch is the largest
    // group, up to the batch.
    let group_tokens = |j: &ChoiceJob| -> Vec<usize> {
        let tokens = |g: std::ops::Range<usize>| j.continuations[g].iter().map(Vec::len).sum();
        j.groups(MAX_SEQUENCES).into_iter().map(tokens).collect()
    };
    let tokens_of = |j: &ChoiceJob| -> usize {
        match j.sequences(MAX_SEQUENCES) {
            1 => j.prompt.len(),
            _ => j.prompt.len() + group_tokens(j).into_iter().max().unwrap_or(0),
        }
    };
    let rows_of = |j: &ChoiceJob| -> usize {
        match j.sequences(MAX_SEQUENCES) {
            1 => 1,
            _ => group_tokens(j).into_iter().max().unwrap_or(0),
        }
    };
    let largest_batch = jobs.iter().map(tokens_of).max().unwrap_or(1);
    let logits_rows = jobs.iter().map(rows_of).max().unwrap_or(1);
    Ok(Some(ScoringPlan {
        jobs,
        continuations,
        rejected,
        largest_batch: (largest_batch as u32).min(options.batch_size),
        logits_rows: (logits_rows as u32).min(options.batch_size),
        options,
    }))
}

/// Score the planned questions; returns what was committed.
pub fn phase(
    request: &RunRequest,
    run_id: i64,
    holder: &Holder,
    questions: &[Question],
    plan: Option<ScoringPlan>,
    engine: &Engine,
    stop: &StopSignal,
) -> Result<Decoded> {
    let Some(plan) = plan else {
        return Ok(Decoded {
            ended: Ended::AllDone,
            committed_now: 0,
        });
    };
    let only_scoring = request.generation.mc_scoring == McScoring::Loglik;
    let recorder = Recorder::start(
        &request.db,
        run_id,
        holder.clone(),
        Duration::from_millis(request.execution.sample_interval_ms),
    )?;
    for (index, reason) in plan.rejected {
        reject(&recorder, &questions[index], reason, only_scoring);
    }
    let ScoringPlan {
        jobs,
        mut continuations,
        options,
        ..
    } = plan;
    log::info!(
        "log-likelihood scoring: {} questions, {} sequences of {} tokens",
        jobs.len(),
        options.sequences,
        options.ctx_per_sequence
    );
    let state = std::sync::Arc::clone(recorder.state());
    let ended = if jobs.is_empty() {
        Ok(Ended::AllDone)
    } else {
        let mut session = engine.session(options)?;
        let mut control = || super::control(&state, stop, request.grace);
        let started = Instant::now();
        let mut on_scored = |scored: Scored| {
            let question = &questions[scored.question_index];
            let texts = continuations
                .remove(&scored.question_index)
                .unwrap_or_default();
            recorder.record_choices(choice_scores(question, &scored, &texts, only_scoring));
        };
        let ended = loglik::run(
            &mut session,
            options.sequences,
            &mut jobs.into_iter(),
            &mut control,
            &mut on_scored,
        );
        log::info!(
            "log-likelihood scoring took {:.3} s",
            started.elapsed().as_secs_f64()
        );
        ended
    };
    let written = recorder.finish();
    let ended = ended?;
    written?;
    Ok(Decoded {
        ended,
        committed_now: state.committed.load(Ordering::SeqCst),
    })
}

/// The question's scoring prompt and continuation tokens, or why it cannot be scored: letters
/// for more than 26 choices, or a prompt and continuation longer than the trained context.
fn prepare(
    request: &RunRequest,
    prompter: &Prompter,
    engine: &Engine,
    question: &Question,
    index: usize,
    ctx_train: usize,
) -> Prepared {
    let style = request.generation.mc_continuation;
    let (message, continuations) = match prompter.loglik_message(question, style) {
        Ok(prepared) => prepared,
        Err(reason) => return Prepared::Rejected(index, reason),
    };
    let system = request.generation.system_prompt.as_deref();
    let chat = request.generation.chat_template;
    // Without a chat template a continuation follows a space (lm-evaluation-harness's
    // target_delimiter; llama-perplexity's question + " " + answer).
    // The stored text (and its characters and bytes, as lm-evaluation-harness's acc_norm counts
    // them) is the choice without the space.
    let scored: Vec<String> = if chat {
        continuations.clone()
    } else {
        continuations.iter().map(|c| format!(" {c}")).collect()
    };
    let (prompt, tokens) = match engine.scoring_prompt(system, &message, &scored, chat) {
        Ok(split) => split,
        Err(e) => return Prepared::Rejected(index, format!("prompt could not be built: {e:#}")),
    };
    let longest = prompt.len() + tokens.iter().map(Vec::len).max().unwrap_or(0);
    if prompt.is_empty() {
        return Prepared::Rejected(index, "prompt is empty after tokenization".into());
    }
    if longest > ctx_train {
        return Prepared::Rejected(
            index,
            format!("prompt and choice of {longest} tokens exceed the model's trained context of {ctx_train}"),
        );
    }
    Prepared::Ready(
        ChoiceJob {
            question_index: index,
            prompt,
            continuations: tokens,
        },
        continuations,
    )
}

/// One question at a time (see [`super::loglik`]): a sequence per choice of its largest group
/// (llama.cpp's limit of sequences splits a question with more choices), in a unified KV
/// cache (a token shared by the choices belongs to all their sequences, which llama.cpp allows
/// only within one stream), each long enough for the longest prompt and continuation.
fn session_options(request: &RunRequest, jobs: &[ChoiceJob]) -> SessionOptions {
    let sequences = jobs
        .iter()
        .map(|j| j.sequences(MAX_SEQUENCES))
        .max()
        .unwrap_or(1) as u32;
    let longest = jobs
        .iter()
        .map(|j| j.prompt.len() + j.continuations.iter().map(Vec::len).max().unwrap_or(0))
        .max()
        .unwrap_or(1) as u32;
    // llama.cpp pads the KV cache to 256 cells; round up so no sequence runs out.
    let ctx_per_sequence = longest.div_ceil(256).max(1) * 256;
    SessionOptions {
        sequences,
        ctx_per_sequence,
        batch_size: request.execution.batch_size.max(sequences),
        threads: request.execution.effective_threads(),
        kv_unified: true,
    }
}

/// A question that cannot be scored: an `error` answer row when scoring is its only answer,
/// else a warning (its generated answer still comes).
fn reject(recorder: &Recorder, question: &Question, reason: String, only_scoring: bool) {
    let id = crate::units::printable(&question.id, crate::units::Lines::Escape);
    log::warn!("question {id}: not scored by log-likelihood: {reason}");
    if only_scoring {
        recorder.record(AnswerRow {
            question_id: question.id.clone(),
            ok: false,
            error: Some(reason),
            ..Default::default()
        });
    }
}

/// The rows one scored question commits: a row per choice, and with `only_scoring` the answer
/// row for the choice of highest log-probability (graded 1/0 when the correct index is known).
fn choice_scores(
    question: &Question,
    scored: &Scored,
    continuations: &[String],
    only_scoring: bool,
) -> ChoiceScores {
    let choices: Vec<ChoiceRow> = scored
        .choices
        .iter()
        .zip(continuations)
        .zip(&scored.continuation_tokens)
        .enumerate()
        .map(|(index, ((score, text), tokens))| ChoiceRow {
            choice_index: index as i64,
            continuation: text.clone(),
            logprob: score.logprob,
            tokens: score.tokens as i64,
            chars: text.chars().count() as i64,
            bytes: text.len() as i64,
            greedy: score.greedy,
            tokens_computed: score.tokens_computed as i64,
            tokens_reused: score.tokens_reused as i64,
            token_ids: tokens.iter().map(|t| t.id()).collect(),
            token_logprobs: score.token_logprobs.clone(),
        })
        .collect();
    let answer = only_scoring.then(|| answer_row(question, scored, &choices));
    ChoiceScores {
        question_id: question.id.clone(),
        choices,
        answer,
    }
}

/// The answer of log-likelihood scoring: the first choice of highest log-probability (`acc`,
/// ties to the first as lm-evaluation-harness), timed over its batch.
fn answer_row(question: &Question, scored: &Scored, choices: &[ChoiceRow]) -> AnswerRow {
    let best = choices
        .iter()
        .fold(None::<&ChoiceRow>, |best, c| match best {
            Some(b) if b.logprob >= c.logprob => Some(b),
            _ => Some(c),
        });
    let chosen = best.map(|c| c.choice_index);
    let score = match (chosen, question.answer_index) {
        (Some(chosen), Some(correct)) => Some(f64::from(u8::from(chosen == correct as i64))),
        _ => None,
    };
    let started = crate::units::time_text(scored.started);
    let finished = crate::units::time_text(scored.finished);
    AnswerRow {
        question_id: question.id.clone(),
        ok: true,
        answer: best.map(|c| c.continuation.clone()),
        finish_reason: Some("loglik".into()),
        prompt_tokens: Some(scored.prompt_tokens as i64),
        prompt_tokens_reused: Some(0),
        completion_tokens: Some(0),
        queued_at: Some(started.clone()),
        started_at: Some(started),
        finished_at: Some(finished),
        latency_ms: Some(
            (scored.finished - scored.started)
                .num_microseconds()
                .unwrap_or(0) as f64
                / 1000.0,
        ),
        score,
        chosen_index: chosen,
        ..Default::default()
    }
}
