//! Everything a session needs before decoding, decided once: each question's prompt tokens (or
//! why it cannot run), the context per sequence, the prompt prefix all questions share, and the
//! shape of the llama.cpp context.

use super::scheduler::SharedPrefix;
use super::RunRequest;
use crate::dataset::Question;
use crate::engine::{Engine, SessionOptions, Token};
use crate::error::Result;
use std::path::Path;

/// Shortest shared prompt prefix worth its own KV sequence, in tokens.
const MIN_SHARED_PREFIX: usize = 8;

/// A question's prompt, or why it cannot run.
pub enum Prompt {
    /// Tokens ready for decoding (they fit the context with `--max-tokens`).
    Ready(Vec<Token>),
    /// Recorded as an `error` row with this reason.
    Rejected(String),
}

/// What one session decodes with.
pub struct SessionPlan {
    /// One prompt per question of the run, in question-file order.
    pub prompts: Vec<Prompt>,
    /// Sequence slots decoding questions.
    pub slots: u32,
    /// The prefix every prompt shares (empty when too short or not supported).
    pub prefix: SharedPrefix,
    /// The llama.cpp context.
    pub options: SessionOptions,
    /// Tokens of the longest prompt.
    pub longest_prompt: usize,
}

/// The chat-templated text and tokens of each question: the one place a question becomes the
/// model's input (used by `run` and by `prompts`).
pub fn render(
    engine: &Engine,
    questions: &[Question],
    system: Option<&str>,
) -> Vec<Result<(String, Vec<Token>)>> {
    questions
        .iter()
        .map(|question| engine.prompt(system, &crate::prompt::user_message(question)))
        .collect()
}

/// Plan a session over `questions`, of which `pending` still need an answer. Every question is
/// tokenized (not only pending ones) so the context and the shared prefix are the same in every
/// session of the run.
pub fn plan(
    engine: &Engine,
    questions: &[Question],
    pending: &[usize],
    request: &RunRequest,
) -> SessionPlan {
    let settings = &request.generation;
    let rendered = render(engine, questions, settings.system_prompt.as_deref());
    let longest_prompt = rendered
        .iter()
        .filter_map(|p| p.as_ref().ok().map(|(_, tokens)| tokens.len()))
        .max()
        .unwrap_or(0);
    let ctx_per_sequence = crate::preflight::context_per_sequence(
        longest_prompt,
        settings,
        u64::from(engine.info().n_ctx_train),
    );
    let prompts: Vec<Prompt> = rendered
        .into_iter()
        .map(|p| admit(p, ctx_per_sequence, request))
        .collect();
    let runnable = pending
        .iter()
        .filter(|&&i| matches!(prompts[i], Prompt::Ready(_)))
        .count();
    let slots = request.execution.parallel.min(runnable.max(1) as u32);
    let prefix = shared_prefix(engine, &prompts, slots, request);
    let sequences = slots + u32::from(!prefix.tokens.is_empty());
    let options = SessionOptions {
        sequences,
        ctx_per_sequence,
        batch_size: request.execution.batch_size.max(sequences),
        threads: request.execution.effective_threads(),
        kv_unified: request.execution.kv_unified,
    };
    SessionPlan {
        prompts,
        slots,
        prefix,
        options,
        longest_prompt,
    }
}

/// A prompt runs when it tokenized to something that fits the context with `--max-tokens`.
fn admit(
    rendered: Result<(String, Vec<Token>)>,
    ctx_per_sequence: u32,
    request: &RunRequest,
) -> Prompt {
    let max_tokens = request.generation.max_tokens as usize;
    match rendered {
        Err(e) => Prompt::Rejected(format!("prompt could not be built: {e:#}")),
        Ok((_, tokens)) if tokens.is_empty() => {
            Prompt::Rejected("prompt is empty after tokenization".into())
        }
        Ok((_, tokens)) if tokens.len() + max_tokens > ctx_per_sequence as usize => {
            Prompt::Rejected(format!(
                "prompt of {} tokens + --max-tokens {max_tokens} exceeds the context of {ctx_per_sequence} tokens per sequence{}",
                tokens.len(),
                if request.generation.ctx.is_some() {
                    "; raise --ctx"
                } else {
                    " (the model's trained context)"
                }
            ))
        }
        Ok((_, tokens)) => Prompt::Ready(tokens),
    }
}

/// The prefix common to every runnable prompt of the run, in the sequence after the slots; empty
/// when disabled, unsupported (recurrent models cannot copy a sequence) or too short to pay.
fn shared_prefix(
    engine: &Engine,
    prompts: &[Prompt],
    slots: u32,
    request: &RunRequest,
) -> SharedPrefix {
    let tokens = if request.execution.prefix_cache && engine.supports_sequence_copy() {
        super::scheduler::common_prefix(prompts.iter().filter_map(|p| match p {
            Prompt::Ready(tokens) => Some(tokens.as_slice()),
            Prompt::Rejected(_) => None,
        }))
    } else {
        Vec::new()
    };
    SharedPrefix {
        sequence: slots,
        tokens: if tokens.len() >= MIN_SHARED_PREFIX {
            tokens
        } else {
            Vec::new()
        },
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

/// Every question's prompt as the model receives it (`docent-eval prompts`: for inspection and
/// for feeding the same prompts to other tools in `make bench`).
pub fn rendered_prompts(
    model: &Path,
    questions: &Path,
    system_prompt: Option<&str>,
    limit: Option<usize>,
) -> Result<Vec<RenderedPrompt>> {
    let set = crate::dataset::load(questions)?;
    crate::preflight::check_model_file(model)?;
    let engine = Engine::load(model, crate::config::GpuLayers::Count(0))?;
    let questions = super::limited(&set.questions, limit);
    render(&engine, questions, system_prompt)
        .into_iter()
        .zip(questions)
        .map(|(rendered, question)| {
            let (prompt, tokens) = rendered?;
            Ok(RenderedPrompt {
                id: question.id.clone(),
                prompt_tokens: tokens.len(),
                prompt,
            })
        })
        .collect()
}
