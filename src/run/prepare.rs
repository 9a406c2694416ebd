//! Everything a session needs before decoding, decided once: each question's prompt tokens (or
//! why it cannot run), the context per sequence, the prompt prefix all questions share, and the
//! shape of the llama.cpp context.

use super::scheduler::{PrefixNode, Prefixes};
use super::RunRequest;
use crate::config::GenerationSettings;
use crate::dataset::Question;
use crate::engine::{Engine, SessionOptions, Token, MAX_SEQUENCES};
use crate::error::Result;
use crate::prompt::Prompter;
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
    /// The prompt prefixes several questions share, computed once each (none when too short
    /// or not supported).
    pub prefix: Prefixes,
    /// The pending questions in the order to run them: questions sharing a prefix together.
    pub order: Vec<usize>,
    /// The llama.cpp context.
    pub options: SessionOptions,
    /// Tokens of the longest prompt.
    pub longest_prompt: usize,
}

/// One question's prompt text and tokens, or why it could not be built.
pub type Rendered = Result<(String, Vec<Token>)>;

/// The chat-templated text and tokens of each question: the one place a question becomes the
/// model's input (used by `run` and by `prompts`).
pub fn render(
    engine: &Engine,
    questions: &[Question],
    settings: &GenerationSettings,
) -> Result<Vec<Rendered>> {
    let prompter = Prompter::new(settings)?;
    let system = settings.system_prompt.as_deref();
    Ok(questions
        .iter()
        .map(|question| {
            let message = prompter
                .user_message(question)
                .map_err(anyhow::Error::msg)?;
            engine.prompt(system, &message, settings.chat_template)
        })
        .collect())
}

/// Plan a session over `questions`, of which `pending` still need an answer. Every question is
/// tokenized (not only pending ones) so the context and the shared prefix are the same in every
/// session of the run.
pub fn plan(
    engine: &Engine,
    questions: &[Question],
    pending: &[usize],
    request: &RunRequest,
) -> Result<SessionPlan> {
    let settings = &request.generation;
    let rendered = render(engine, questions, settings)?;
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
    let (prefix, order) = shared_prefixes(engine, &prompts, pending, slots, request);
    let sequences = slots + prefix.sequences.len() as u32;
    let options = SessionOptions {
        sequences,
        ctx_per_sequence,
        batch_size: request.execution.batch_size.max(sequences),
        threads: request.execution.effective_threads(),
        kv_unified: request.execution.kv_unified,
    };
    Ok(SessionPlan {
        prompts,
        slots,
        prefix,
        order,
        options,
        longest_prompt,
    })
}

/// A prompt runs when it tokenized to something that fits the context with `--max-tokens`.
fn admit(rendered: Rendered, ctx_per_sequence: u32, request: &RunRequest) -> Prompt {
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

/// The prefixes shared by runnable prompts of the run (all of them, so every session of a run
/// computes the same prefixes) and the pending questions in the order that groups them; no
/// prefixes when disabled, unsupported (recurrent and sliding-window models cannot copy a
/// sequence) or too short to pay. A prefix sequence (after the slots) is needed per level of
/// nesting, and one more so the next prefix can be built while the last one's questions start.
fn shared_prefixes(
    engine: &Engine,
    prompts: &[Prompt],
    pending: &[usize],
    slots: u32,
    request: &RunRequest,
) -> (Prefixes, Vec<usize>) {
    if !request.execution.prefix_cache || !engine.supports_sequence_copy() {
        return (Prefixes::default(), pending.to_vec());
    }
    let runnable: Vec<(usize, &[Token])> = prompts
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match p {
            Prompt::Ready(tokens) => Some((i, tokens.as_slice())),
            Prompt::Rejected(_) => None,
        })
        .collect();
    let position: std::collections::HashMap<usize, usize> = runnable
        .iter()
        .enumerate()
        .map(|(at, &(i, _))| (i, at))
        .collect();
    let token_lists: Vec<&[Token]> = runnable.iter().map(|&(_, t)| t).collect();
    let pending_runnable: Vec<usize> = pending
        .iter()
        .filter_map(|i| position.get(i).copied())
        .collect();
    let (nodes, order) = if request.execution.global_prefix_only {
        (
            global_prefix(&token_lists, &pending_runnable),
            pending_runnable,
        )
    } else {
        super::prefix_tree::build(&token_lists, &pending_runnable, MIN_SHARED_PREFIX)
    };
    let depth = nodes
        .iter()
        .map(|n| std::iter::successors(Some(n), |n| n.parent.map(|p| &nodes[p])).count())
        .max()
        .unwrap_or(0);
    let held = (depth + usize::from(nodes.len() > depth)).min(nodes.len()) as u32;
    // llama.cpp holds at most MAX_SEQUENCES in a context: slots come first, the prefixes are
    // only a saving, so a run with too many slots to hold them runs without them.
    if slots + held > MAX_SEQUENCES {
        log::warn!(
            "shared prompt prefixes need {held} sequences beside {slots} slots, past llama.cpp's {MAX_SEQUENCES}; running without them"
        );
        return (Prefixes::default(), pending.to_vec());
    }
    // Rejected prompts keep their place at the front: they become error rows at once.
    let rejected = pending
        .iter()
        .copied()
        .filter(|i| !position.contains_key(i));
    let order = rejected
        .chain(order.into_iter().map(|at| runnable[at].0))
        .collect();
    (
        Prefixes {
            nodes,
            sequences: (slots..slots + held).collect(),
        },
        order,
    )
}

/// `--prefix-cache global`: the one prefix every runnable prompt shares, for the pending ones,
/// when it is long enough to pay.
fn global_prefix(prompts: &[&[Token]], pending: &[usize]) -> Vec<PrefixNode> {
    let tokens = super::scheduler::common_prefix(prompts.iter().copied());
    if prompts.len() < 2 || tokens.len() < MIN_SHARED_PREFIX {
        return Vec::new();
    }
    vec![PrefixNode {
        tokens,
        parent: None,
        users: pending.len(),
    }]
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
/// for feeding the same prompts to other tools in `make bench`). `settings` gives the system
/// prompt, the limit, the chat template, the column mapping and the prompt template.
pub fn rendered_prompts(
    model: &Path,
    questions: &Path,
    settings: &GenerationSettings,
) -> Result<Vec<RenderedPrompt>> {
    settings.validate()?;
    let set = crate::dataset::load_mapped(questions, settings.mapping.as_ref())?;
    Prompter::new(settings)?.check(&set.path, &set.questions)?;
    crate::preflight::check_model_file(model)?;
    let engine = Engine::load(model, crate::config::GpuLayers::Count(0))?;
    let questions = super::limited(&set.questions, settings.limit);
    render(&engine, questions, settings)?
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
