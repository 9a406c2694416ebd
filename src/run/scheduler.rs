//! Continuous batching over `--parallel` sequences of one model context, seen through the
//! [`Decoder`] trait (llama.cpp's in the engine, a scripted fake in the tests).
//!
//! Each step builds one batch: first one token for every sequence that is generating, then prompt
//! chunks of sequences that are prefilling, up to the batch capacity (so long prompts are chunked
//! and prefill shares batches with other sequences' decode steps). A finished sequence frees its
//! slot, which takes the next question in the same step.

use crate::engine::Token;
use crate::error::Result;
use chrono::{DateTime, Utc};
use std::time::Instant;

/// What the scheduler needs from a model context whose KV cache holds several sequences that are
/// decoded in shared batches. The engine implements it over llama.cpp; the tests over a script.
pub trait Decoder {
    /// Per-question sampling state, owned by the question's [`Job`].
    type Sampler;

    /// Most tokens one batch holds.
    fn batch_capacity(&self) -> usize;

    /// Start building a new batch.
    fn clear_batch(&mut self);

    /// Append `token` of `sequence` at `position`, which must follow the last position the
    /// sequence holds (in its KV cache and earlier in this batch); `wants_logits` marks the tokens
    /// to be sampled after [`Decoder::decode`]. Returns the token's index in the batch.
    fn push(
        &mut self,
        token: Token,
        position: u32,
        sequence: u32,
        wants_logits: bool,
    ) -> Result<usize> {
        self.push_shared(token, position, sequence..sequence + 1, wants_logits)
    }

    /// [`Decoder::push`] for several sequences at once: the token is computed once and its KV
    /// belongs to every sequence of `sequences` (llama.cpp needs a unified KV cache for that).
    fn push_shared(
        &mut self,
        token: Token,
        position: u32,
        sequences: std::ops::Range<u32>,
        wants_logits: bool,
    ) -> Result<usize>;

    /// Run the model over the batch; every pushed token's KV joins its sequence.
    fn decode(&mut self) -> Result<()>;

    /// Next token of the sequence whose logits sit at `batch_index` of the decoded batch.
    fn sample(&mut self, sampler: &mut Self::Sampler, batch_index: usize) -> Token;

    /// Whether `token` ends generation (EOS, EOT, ...).
    fn is_end_of_generation(&self, token: Token) -> bool;

    /// Natural-log probabilities of `tokens` under the logits at `batch_index` of the decoded
    /// batch, and whether each is the most probable token there.
    fn log_probs(&mut self, batch_index: usize, tokens: &[Token]) -> Vec<(f64, bool)>;

    /// The bytes of a token's text (a multi-byte character may span tokens).
    fn token_bytes(&self, token: Token) -> Vec<u8>;

    /// Make `destination` hold exactly `source`'s KV positions `[0, positions)`, dropping what it
    /// held before.
    fn copy_sequence(&mut self, source: u32, destination: u32, positions: u32) -> Result<()>;

    /// Drop everything a sequence holds, so its slot can take the next question.
    fn forget_sequence(&mut self, sequence: u32);

    /// Most sequences any context can hold, whatever this one was created with (llama.cpp's
    /// `LLAMA_MAX_SEQ`): log-likelihood scoring splits a question with more choices in groups.
    fn max_sequences(&self) -> u32;
}

/// One question ready for decoding.
pub struct Job<S> {
    /// Index of the question in the caller's list.
    pub question_index: usize,
    /// Tokenized prompt: not empty, and fits the sequence's context together with `max_tokens`.
    pub prompt: Vec<Token>,
    /// Sampler for this question.
    pub sampler: S,
}

/// Why generation of a question ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced an end-of-generation token.
    EndOfSequence,
    /// `max_tokens` were generated.
    Length,
}

impl FinishReason {
    /// Text stored in `answers.finish_reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::EndOfSequence => "eos",
            FinishReason::Length => "length",
        }
    }
}

/// A question whose generation ended, with its timings.
#[derive(Debug, Clone)]
pub struct Completion {
    /// Index of the question in the caller's list.
    pub question_index: usize,
    /// Sequence slot that decoded it.
    pub slot: u32,
    /// Generated text (lossy UTF-8 only if the model emitted invalid bytes).
    pub text: String,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Prompt tokens taken from the shared prefix instead of being computed.
    pub prompt_tokens_reused: usize,
    /// Generated tokens (an end-of-generation token is not counted).
    pub completion_tokens: usize,
    /// Taken for decoding.
    pub queued_at: DateTime<Utc>,
    /// Prompt entered a batch.
    pub started_at: DateTime<Utc>,
    /// First token sampled.
    pub first_token_at: DateTime<Utc>,
    /// Generation ended.
    pub finished_at: DateTime<Utc>,
    /// first_token_at - started_at.
    pub ttft_ms: f64,
    /// finished_at - started_at.
    pub latency_ms: f64,
    /// (completion_tokens - 1) / (finished_at - first_token_at); `None` under two tokens.
    pub decode_tok_per_s: Option<f64>,
}

/// What the caller wants the scheduler to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Keep taking questions.
    Continue,
    /// Take no new question; finish those in flight.
    Drain,
    /// Stop now; questions in flight are abandoned (they have no row and run again on resume).
    Abort,
}

/// How a schedule ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Every job was completed.
    AllDone,
    /// Draining finished or an abort came; some jobs were not run.
    Stopped,
}

/// Generation limits shared by all sequences.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Sequences (slots).
    pub sequences: u32,
    /// Most generated tokens per question.
    pub max_tokens: usize,
    /// Keep generating past end-of-generation (benchmarks with fixed lengths).
    pub ignore_eos: bool,
}

/// Prompt prefixes shared by several questions (a chat-template header with a system prompt, a
/// passage several questions read): each is computed once into a sequence of its own, built from
/// a copy of its parent, and copied into the slot of every question that starts with it.
#[derive(Debug, Clone, Default)]
pub struct Prefixes {
    /// The shared prefixes, each a proper extension of its parent; parents come first.
    pub nodes: Vec<PrefixNode>,
    /// Sequence ids that hold prefixes (after the slots); none disables reuse.
    pub sequences: Vec<u32>,
}

/// One shared prefix.
#[derive(Debug, Clone)]
pub struct PrefixNode {
    /// Its tokens.
    pub tokens: Vec<Token>,
    /// The longest other shared prefix it extends.
    pub parent: Option<usize>,
    /// Questions that start from it as their longest shared prefix, plus its children: once
    /// all have taken their copy, its sequence may hold another prefix.
    pub users: usize,
}

impl Prefixes {
    /// Tokens every prompt shares (the roots' common part when there is a single root).
    pub fn common_tokens(&self) -> usize {
        match self.nodes.iter().filter(|n| n.parent.is_none()).count() {
            1 => self.nodes[0].tokens.len(),
            _ => 0,
        }
    }

    /// The deepest prefix `prompt` starts with.
    pub fn node_for(&self, prompt: &[Token]) -> Option<usize> {
        deepest_prefix(&self.nodes, prompt)
    }
}

/// The deepest of `nodes` that `prompt` starts with, walking down from the roots.
pub fn deepest_prefix(nodes: &[PrefixNode], prompt: &[Token]) -> Option<usize> {
    let mut found = None;
    while let Some(next) = nodes
        .iter()
        .position(|n| n.parent == found && prompt.starts_with(&n.tokens))
    {
        found = Some(next);
    }
    found
}

/// Which prefix each prefix sequence holds, and how many users each prefix has left.
struct PrefixPool {
    held: Vec<Option<usize>>,
    users: Vec<usize>,
}

impl PrefixPool {
    fn new(prefixes: &Prefixes) -> PrefixPool {
        PrefixPool {
            held: vec![None; prefixes.sequences.len()],
            users: prefixes.nodes.iter().map(|n| n.users).collect(),
        }
    }

    /// The pool index holding `node`, computing it (from its parent's copy when the parent can
    /// be held) into a free sequence or one whose prefix has no users left; `None` when every
    /// prefix sequence is still needed.
    fn hold<D: Decoder>(
        &mut self,
        decoder: &mut D,
        prefixes: &Prefixes,
        node: usize,
    ) -> Result<Option<usize>> {
        if let Some(index) = self.held.iter().position(|&h| h == Some(node)) {
            return Ok(Some(index));
        }
        let parent = prefixes.nodes[node].parent;
        let parent_index = match parent {
            Some(p) => self.hold(decoder, prefixes, p)?,
            None => None,
        };
        let free = (0..self.held.len()).find(|&i| {
            Some(i) != parent_index && self.held[i].is_none_or(|held| self.users[held] == 0)
        });
        let Some(index) = free else {
            return Ok(None);
        };
        let sequence = prefixes.sequences[index];
        if self.held[index].take().is_some() {
            decoder.forget_sequence(sequence);
        }
        let start = match (parent, parent_index) {
            (Some(p), Some(from)) => {
                let positions = prefixes.nodes[p].tokens.len();
                decoder.copy_sequence(prefixes.sequences[from], sequence, positions as u32)?;
                positions
            }
            _ => 0,
        };
        if let Some(p) = parent {
            self.users[p] = self.users[p].saturating_sub(1);
        }
        prefill(decoder, sequence, &prefixes.nodes[node].tokens, start)?;
        self.held[index] = Some(node);
        Ok(Some(index))
    }
}

/// Wall-clock times derived from one monotonic clock, so differences are exact and ordered.
struct Clock {
    origin: Instant,
    origin_wall: DateTime<Utc>,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            origin: Instant::now(),
            origin_wall: Utc::now(),
        }
    }

    fn wall(&self, at: Instant) -> DateTime<Utc> {
        let offset = at.saturating_duration_since(self.origin);
        self.origin_wall + chrono::Duration::from_std(offset).unwrap_or_default()
    }
}

struct Active<S> {
    job: Job<S>,
    reused: usize,
    prefilled: usize,
    next_position: u32,
    pending_token: Option<Token>,
    logits_at: Option<usize>,
    generated: usize,
    text: Vec<u8>,
    queued: Instant,
    started: Option<Instant>,
    first_token: Option<Instant>,
}

impl<S> Active<S> {
    fn new(job: Job<S>, reused: usize) -> Active<S> {
        Active {
            job,
            reused,
            prefilled: reused,
            next_position: reused as u32,
            pending_token: None,
            logits_at: None,
            generated: 0,
            text: Vec::new(),
            queued: Instant::now(),
            started: None,
            first_token: None,
        }
    }
}

/// One entry per sequence slot; `None` is free.
type Slots<S> = [Option<Active<S>>];

fn ms(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64() * 1000.0
}

/// Decode `jobs` over the decoder's sequences until they run out or `control` says stop.
/// `on_complete` receives each finished question as soon as its last token is sampled.
pub fn run<D: Decoder>(
    decoder: &mut D,
    limits: Limits,
    prefixes: &Prefixes,
    jobs: &mut dyn Iterator<Item = Job<D::Sampler>>,
    control: &mut dyn FnMut() -> Control,
    on_complete: &mut dyn FnMut(Completion),
) -> Result<Ended> {
    let clock = Clock::new();
    let mut slots: Vec<Option<Active<D::Sampler>>> = (0..limits.sequences).map(|_| None).collect();
    let mut jobs_exhausted = false;
    let mut pool = PrefixPool::new(prefixes);
    loop {
        let command = control();
        if command == Control::Abort {
            return Ok(Ended::Stopped);
        }
        if command == Control::Continue && !jobs_exhausted {
            jobs_exhausted = refill_slots(decoder, prefixes, &mut pool, &mut slots, jobs)?;
        }
        if slots.iter().all(Option::is_none) {
            return Ok(if jobs_exhausted {
                Ended::AllDone
            } else {
                Ended::Stopped
            });
        }
        let batch_tokens = build_batch(decoder, &mut slots)?;
        let decode_start = Instant::now();
        decoder.decode()?;
        let sampled_at = Instant::now();
        log::trace!(
            "decoded {batch_tokens} tokens in {:.1} ms",
            ms(decode_start, sampled_at)
        );
        sample(decoder, limits, &clock, &mut slots, sampled_at, on_complete);
    }
}

/// Decode `tokens[start..]` into `sequence` at their positions, in batches of its capacity.
fn prefill<D: Decoder>(
    decoder: &mut D,
    sequence: u32,
    tokens: &[Token],
    start: usize,
) -> Result<()> {
    let capacity = decoder.batch_capacity();
    let mut position = start;
    while position < tokens.len() {
        decoder.clear_batch();
        let end = (position + capacity).min(tokens.len());
        for (at, &token) in tokens.iter().enumerate().take(end).skip(position) {
            decoder.push(token, at as u32, sequence, false)?;
        }
        decoder.decode()?;
        position = end;
    }
    Ok(())
}

/// Give every free slot the next job, its sequence starting from a copy of the deepest shared
/// prefix its prompt starts with. Returns whether the jobs ran out.
fn refill_slots<D: Decoder>(
    decoder: &mut D,
    prefixes: &Prefixes,
    pool: &mut PrefixPool,
    slots: &mut Slots<D::Sampler>,
    jobs: &mut dyn Iterator<Item = Job<D::Sampler>>,
) -> Result<bool> {
    for (sequence, slot) in slots.iter_mut().enumerate().filter(|(_, s)| s.is_none()) {
        let Some(job) = jobs.next() else {
            return Ok(true);
        };
        // Without a prompt token there are no logits to sample, and the slot would never free.
        if job.prompt.is_empty() {
            return Err(anyhow::anyhow!(
                "question {} has an empty prompt",
                job.question_index
            ));
        }
        let mut reused = 0;
        if let Some(node) = prefixes.node_for(&job.prompt) {
            if let Some(index) = pool.hold(decoder, prefixes, node)? {
                pool.users[node] = pool.users[node].saturating_sub(1);
                reused = reusable(&prefixes.nodes[node].tokens, &job.prompt);
                if reused > 0 {
                    // Only the reused positions: the prefix sequence may hold the prompt's last
                    // token too (a prompt no longer than the prefix), computed again here.
                    let from = prefixes.sequences[index];
                    decoder.copy_sequence(from, sequence as u32, reused as u32)?;
                }
            }
        }
        *slot = Some(Active::new(job, reused));
    }
    Ok(false)
}

/// Prompt tokens whose KV can be taken from the prefix sequence. The last prompt token is always
/// computed: its logits give the first answer token.
fn reusable(prefix: &[Token], prompt: &[Token]) -> usize {
    let common = prefix
        .iter()
        .zip(prompt)
        .take_while(|(a, b)| a == b)
        .count();
    common.min(prompt.len().saturating_sub(1))
}

/// Slots in use, with their sequence ids.
fn occupied<S>(slots: &mut Slots<S>) -> impl Iterator<Item = (u32, &mut Active<S>)> {
    slots
        .iter_mut()
        .enumerate()
        .filter_map(|(sequence, slot)| slot.as_mut().map(|active| (sequence as u32, active)))
}

/// Build the next batch: one token for every generating sequence first, so answers never wait
/// behind long prompts, then prompt chunks in slot order while room remains. Returns its size.
fn build_batch<D: Decoder>(decoder: &mut D, slots: &mut Slots<D::Sampler>) -> Result<usize> {
    decoder.clear_batch();
    let capacity = decoder.batch_capacity();
    let mut used = 0;
    for (sequence, active) in occupied(slots) {
        if let Some(token) = active.pending_token.take() {
            active.logits_at = Some(decoder.push(token, active.next_position, sequence, true)?);
            active.next_position += 1;
            used += 1;
        }
    }
    let now = Instant::now();
    for (sequence, active) in occupied(slots) {
        let remaining = active.job.prompt.len() - active.prefilled;
        if remaining == 0 {
            continue;
        }
        let room = capacity.saturating_sub(used);
        if room == 0 {
            break;
        }
        active.started.get_or_insert(now);
        let chunk = remaining.min(room);
        for index in active.prefilled..active.prefilled + chunk {
            let last = index + 1 == active.job.prompt.len();
            let token = active.job.prompt[index];
            let at = decoder.push(token, active.next_position, sequence, last)?;
            if last {
                active.logits_at = Some(at);
            }
            active.next_position += 1;
        }
        active.prefilled += chunk;
        used += chunk;
    }
    Ok(used)
}

/// Sample every sequence whose logits the batch computed; a finished one is handed over and its
/// slot freed for the next refill.
fn sample<D: Decoder>(
    decoder: &mut D,
    limits: Limits,
    clock: &Clock,
    slots: &mut Slots<D::Sampler>,
    sampled_at: Instant,
    on_complete: &mut dyn FnMut(Completion),
) {
    for (sequence, slot) in slots.iter_mut().enumerate() {
        let Some(active) = slot else { continue };
        let Some(batch_index) = active.logits_at.take() else {
            continue;
        };
        let token = decoder.sample(&mut active.job.sampler, batch_index);
        active.first_token.get_or_insert(sampled_at);
        let finish = if decoder.is_end_of_generation(token) && !limits.ignore_eos {
            Some(FinishReason::EndOfSequence)
        } else {
            active.generated += 1;
            active.text.extend(decoder.token_bytes(token));
            active.pending_token = Some(token);
            (active.generated >= limits.max_tokens).then_some(FinishReason::Length)
        };
        if let Some(reason) = finish {
            let Some(done) = slot.take() else { continue };
            decoder.forget_sequence(sequence as u32);
            on_complete(complete(clock, done, sequence as u32, reason, sampled_at));
        }
    }
}

/// Tokens all `prompts` start with.
pub fn common_prefix<'a>(mut prompts: impl Iterator<Item = &'a [Token]>) -> Vec<Token> {
    let Some(first) = prompts.next() else {
        return Vec::new();
    };
    let mut length = first.len();
    for prompt in prompts {
        length = first
            .iter()
            .zip(prompt)
            .take(length)
            .take_while(|(a, b)| a == b)
            .count();
    }
    first[..length].to_vec()
}

/// Generated bytes as text. A character cut by the token limit is dropped rather than shown as
/// U+FFFD; bytes the model emitted invalid elsewhere are replaced.
fn decode_text(mut bytes: Vec<u8>) -> String {
    if let Err(error) = std::str::from_utf8(&bytes) {
        if error.error_len().is_none() {
            bytes.truncate(error.valid_up_to());
        }
    }
    String::from_utf8_lossy(&bytes).trim().to_string()
}

fn complete<S>(
    clock: &Clock,
    done: Active<S>,
    slot: u32,
    reason: FinishReason,
    finished: Instant,
) -> Completion {
    let started = done.started.unwrap_or(done.queued);
    let first = done.first_token.unwrap_or(finished);
    let decode_seconds = finished.saturating_duration_since(first).as_secs_f64();
    Completion {
        question_index: done.job.question_index,
        slot,
        text: decode_text(done.text),
        finish_reason: reason,
        prompt_tokens: done.job.prompt.len(),
        prompt_tokens_reused: done.reused,
        completion_tokens: done.generated,
        queued_at: clock.wall(done.queued),
        started_at: clock.wall(started),
        first_token_at: clock.wall(first),
        finished_at: clock.wall(finished),
        ttft_ms: ms(started, first),
        latency_ms: ms(started, finished),
        decode_tok_per_s: (done.generated >= 2 && decode_seconds > 0.0)
            .then(|| (done.generated - 1) as f64 / decode_seconds),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::scripted::{pushed, text, tokens, Pushed, Scripted, EOS};
    use std::cell::Cell;

    fn job(question_index: usize, prompt: &[i32]) -> Job<Vec<Token>> {
        Job {
            question_index,
            prompt: tokens(prompt),
            sampler: tokens(prompt),
        }
    }

    fn limits(sequences: u32, max_tokens: usize) -> Limits {
        Limits {
            sequences,
            max_tokens,
            ignore_eos: false,
        }
    }

    fn no_prefix() -> Prefixes {
        Prefixes::default()
    }

    /// One prefix shared by every prompt, in `sequence`, never given up.
    fn prefix(ids: &[i32], sequence: u32) -> Prefixes {
        Prefixes {
            nodes: vec![PrefixNode {
                tokens: tokens(ids),
                parent: None,
                users: usize::MAX,
            }],
            sequences: vec![sequence],
        }
    }

    /// Run the scheduler under `control`; completions in the order they came.
    fn schedule(
        decoder: &mut Scripted,
        limits: Limits,
        prefix: &Prefixes,
        jobs: &mut dyn Iterator<Item = Job<Vec<Token>>>,
        mut control: impl FnMut() -> Control,
    ) -> (Result<Ended>, Vec<Completion>) {
        let mut completions = Vec::new();
        let ended = run(decoder, limits, prefix, jobs, &mut control, &mut |c| {
            completions.push(c)
        });
        (ended, completions)
    }

    /// Run every job to the end; completions by question index, each exactly once.
    fn run_all(
        decoder: &mut Scripted,
        limits: Limits,
        prefix: &Prefixes,
        jobs: Vec<Job<Vec<Token>>>,
    ) -> Vec<Completion> {
        let count = jobs.len();
        let (ended, mut completions) =
            schedule(decoder, limits, prefix, &mut jobs.into_iter(), || {
                Control::Continue
            });
        assert_eq!(ended.expect("no decode error"), Ended::AllDone);
        completions.sort_by_key(|c| c.question_index);
        let indices: Vec<usize> = completions.iter().map(|c| c.question_index).collect();
        assert_eq!(
            indices,
            (0..count).collect::<Vec<_>>(),
            "every job exactly once"
        );
        completions
    }

    #[test]
    fn a_character_cut_by_the_token_limit_is_dropped() {
        let mut bytes = "세종".as_bytes().to_vec();
        bytes.extend_from_slice(&"대".as_bytes()[..2]);
        assert_eq!(decode_text(bytes), "세종");
        assert_eq!(decode_text(b"a\xffb".to_vec()), "a\u{fffd}b");
        assert_eq!(decode_text(b"  ok \n".to_vec()), "ok");
    }

    #[test]
    fn the_fake_decoder_rejects_what_llama_cpp_rejects() {
        let mut fake = Scripted::new(2, &[]);
        fake.clear_batch();
        fake.push(Token::from_id(1), 0, 0, false).unwrap();
        fake.push(Token::from_id(2), 1, 0, true).unwrap();
        assert!(
            fake.push(Token::from_id(3), 2, 0, false).is_err(),
            "overflow"
        );
        fake.decode().unwrap();
        fake.copy_sequence(0, 1, 1).unwrap();
        fake.clear_batch();
        fake.push(Token::from_id(2), 1, 0, true).unwrap();
        assert!(
            fake.decode().is_err(),
            "a position the sequence already holds"
        );
        fake.clear_batch();
        fake.push(Token::from_id(3), 2, 1, true).unwrap();
        assert!(fake.decode().is_err(), "a gap after the copied position");
        fake.forget_sequence(0);
        fake.clear_batch();
        fake.push(Token::from_id(3), 1, 0, true).unwrap();
        assert!(
            fake.decode().is_err(),
            "a forgotten sequence starts again at 0"
        );
    }

    #[test]
    fn a_finished_sequence_frees_its_slot_for_the_next_job_in_the_same_step() {
        let scripts: [(&[i32], &[i32]); 5] = [
            (&[10, 11], &[20]),
            (&[12, 13], &[21, 22, 23, 24]),
            (&[14], &[25, 26]),
            (&[15, 16, 17], &[27]),
            (&[18], &[]),
        ];
        let mut fake = Scripted::new(8, &scripts);
        let jobs = scripts
            .iter()
            .enumerate()
            .map(|(i, (p, _))| job(i, p))
            .collect();
        let completions = run_all(&mut fake, limits(2, 16), &no_prefix(), jobs);

        // Job 0 ends when its second batch is sampled; the third batch already holds job 2's
        // prompt in the freed sequence 0, after job 1's decode step.
        assert_eq!(
            fake.batches[2],
            vec![pushed(22, 3, 1, true), pushed(14, 0, 0, true)]
        );
        assert_eq!(completions[2].slot, 0);
        for (completion, (_, script)) in completions.iter().zip(scripts) {
            assert_eq!(completion.text, text(script));
            assert_eq!(completion.completion_tokens, script.len());
            assert_eq!(completion.finish_reason, FinishReason::EndOfSequence);
        }
    }

    #[test]
    fn drain_finishes_the_jobs_in_flight_and_takes_no_new_one() {
        let scripts: [(&[i32], &[i32]); 4] = [
            (&[10], &[20, 21, 22]),
            (&[11], &[23, 24, 25]),
            (&[12], &[26]),
            (&[13], &[27]),
        ];
        let mut fake = Scripted::new(8, &scripts);
        let mut jobs = scripts.iter().enumerate().map(|(i, (p, _))| job(i, p));
        let calls = Cell::new(0);
        let control = || {
            calls.set(calls.get() + 1);
            if calls.get() == 1 {
                Control::Continue
            } else {
                Control::Drain
            }
        };
        let (ended, completions) =
            schedule(&mut fake, limits(2, 16), &no_prefix(), &mut jobs, control);
        assert_eq!(ended.unwrap(), Ended::Stopped);
        let done: Vec<(usize, String)> = completions
            .iter()
            .map(|c| (c.question_index, c.text.clone()))
            .collect();
        assert_eq!(
            done,
            vec![(0, text(&[20, 21, 22])), (1, text(&[23, 24, 25]))]
        );
        assert_eq!(jobs.next().map(|j| j.question_index), Some(2), "not taken");
    }

    #[test]
    fn abort_returns_at_once_without_further_completions() {
        let scripts: [(&[i32], &[i32]); 3] = [
            (&[10], &[20, 21, 22, 23]),
            (&[11], &[24, 25, 26, 27]),
            (&[12], &[28]),
        ];
        let mut fake = Scripted::new(8, &scripts);
        let mut jobs = scripts.iter().enumerate().map(|(i, (p, _))| job(i, p));
        let calls = Cell::new(0);
        let control = || {
            calls.set(calls.get() + 1);
            if calls.get() <= 2 {
                Control::Continue
            } else {
                Control::Abort
            }
        };
        let (ended, completions) =
            schedule(&mut fake, limits(2, 16), &no_prefix(), &mut jobs, control);
        assert_eq!(ended.unwrap(), Ended::Stopped);
        assert!(completions.is_empty());
        assert_eq!(fake.batches.len(), 2, "no decode after the abort");
        assert_eq!(jobs.next().map(|j| j.question_index), Some(2));
    }

    #[test]
    fn a_prompt_longer_than_the_batch_is_chunked_and_shares_batches_with_decode_steps() {
        let long: Vec<i32> = (30..39).collect();
        let scripts: [(&[i32], &[i32]); 2] = [(&[10, 11], &[20, 21, 22, 23]), (&long, &[40])];
        let mut fake = Scripted::new(4, &scripts);
        let jobs = vec![job(0, scripts[0].0), job(1, &long)];
        let completions = run_all(&mut fake, limits(2, 16), &no_prefix(), jobs);

        assert!(fake.batches.iter().all(|b| b.len() <= 4));
        let prompt_pushes: Vec<Pushed> = fake.pushed_to(1).into_iter().take(long.len()).collect();
        let positions: Vec<u32> = prompt_pushes.iter().map(|p| p.position).collect();
        assert_eq!(positions, (0..long.len() as u32).collect::<Vec<_>>());
        assert_eq!(
            prompt_pushes.iter().map(|p| p.token).collect::<Vec<_>>(),
            tokens(&long)
        );
        let chunks = fake
            .batches
            .iter()
            .filter(|b| {
                b.iter()
                    .any(|p| p.sequence == 1 && p.position < long.len() as u32)
            })
            .count();
        assert_eq!(
            chunks, 4,
            "9 prompt tokens beside a decode step in batches of 4"
        );
        assert_eq!(
            fake.batches[1],
            vec![
                pushed(20, 2, 0, true),
                pushed(32, 2, 1, false),
                pushed(33, 3, 1, false),
                pushed(34, 4, 1, false)
            ],
            "sequence 0's decode step shares the batch with sequence 1's prefill"
        );
        assert_eq!(completions[0].text, text(&[20, 21, 22, 23]));
        assert_eq!(completions[1].text, text(&[40]));
    }

    #[test]
    fn a_shared_prefix_is_computed_once_and_each_slot_starts_from_its_copy() {
        let shared = [1, 2, 3, 4, 5, 6];
        let prompts: [&[i32]; 3] = [
            &[1, 2, 3, 4, 5, 6, 7, 8],
            &[1, 2, 3, 4, 5, 6, 9],
            &[1, 2, 3, 4, 5, 6, 7, 10, 11],
        ];
        let scripts = [
            (prompts[0], &[20, 21][..]),
            (prompts[1], &[22]),
            (prompts[2], &[23, 24, 25]),
        ];
        let mut fake = Scripted::new(4, &scripts);
        let jobs = prompts.iter().enumerate().map(|(i, p)| job(i, p)).collect();
        let completions = run_all(&mut fake, limits(2, 16), &prefix(&shared, 2), jobs);

        let prefix_pushes = fake.pushed_to(2);
        assert_eq!(
            prefix_pushes.iter().map(|p| p.token).collect::<Vec<_>>(),
            tokens(&shared)
        );
        assert_eq!(
            prefix_pushes.iter().map(|p| p.position).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4, 5]
        );
        let slot_pushes: Vec<Pushed> = (0..2).flat_map(|s| fake.pushed_to(s)).collect();
        assert!(
            slot_pushes.iter().all(|p| p.position >= 6),
            "prefix pushed again"
        );
        assert_eq!(fake.copies.len(), 3);
        assert!(fake
            .copies
            .iter()
            .all(|&(from, _, positions)| from == 2 && positions == 6));
        for (completion, (_, script)) in completions.iter().zip(scripts) {
            assert_eq!(completion.prompt_tokens_reused, 6);
            assert_eq!(completion.text, text(script));
        }
    }

    #[test]
    fn nested_prefixes_are_each_computed_once_from_their_parents_copy_in_two_sequences() {
        // A system prompt (1..4) and three passages read by two questions each, in the order
        // the planner gives (questions of a passage together).
        let prompts: [&[i32]; 6] = [
            &[1, 2, 3, 4, 10, 11, 12, 13, 50],
            &[1, 2, 3, 4, 10, 11, 12, 13, 51],
            &[1, 2, 3, 4, 20, 21, 22, 23, 52],
            &[1, 2, 3, 4, 20, 21, 22, 23, 53, 54],
            &[1, 2, 3, 4, 30, 31, 32, 33, 55],
            &[1, 2, 3, 4, 30, 31, 32, 33, 56],
        ];
        let scripts: Vec<(&[i32], &[i32])> = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| (*p, &[60, 61, 62][..1 + i % 3]))
            .collect();
        let node = |ids: &[i32], parent, users| PrefixNode {
            tokens: tokens(ids),
            parent,
            users,
        };
        let prefixes = Prefixes {
            nodes: vec![
                node(&[1, 2, 3, 4], None, 3),
                node(&[1, 2, 3, 4, 10, 11, 12, 13], Some(0), 2),
                node(&[1, 2, 3, 4, 20, 21, 22, 23], Some(0), 2),
                node(&[1, 2, 3, 4, 30, 31, 32, 33], Some(0), 2),
            ],
            sequences: vec![2, 3],
        };
        let mut fake = Scripted::new(5, &scripts);
        let jobs = prompts.iter().enumerate().map(|(i, p)| job(i, p)).collect();
        let completions = run_all(&mut fake, limits(2, 8), &prefixes, jobs);
        for (completion, (_, script)) in completions.iter().zip(&scripts) {
            assert_eq!(completion.text, text(script));
            assert_eq!(
                completion.prompt_tokens_reused, 8,
                "the passage came from a copy"
            );
        }
        // The system prompt is computed once, each passage's 4 tokens once after a copy of it.
        let prefix_tokens: usize = [2, 3].iter().map(|&s| fake.pushed_to(s).len()).sum();
        assert_eq!(prefix_tokens, 4 + 3 * 4);
        let built_from_parent = fake
            .copies
            .iter()
            .filter(|&&(from, to, positions)| from != to && to >= 2 && positions == 4)
            .count();
        assert_eq!(built_from_parent, 3);
    }

    #[test]
    fn a_prompt_exactly_as_long_as_the_shared_prefix_completes_without_a_decode_error() {
        let shared = [1, 2, 3, 4, 5, 6];
        let longer = [1, 2, 3, 4, 5, 6, 7];
        let scripts: [(&[i32], &[i32]); 2] = [(&shared, &[20, 21]), (&longer, &[22])];
        let mut fake = Scripted::new(8, &scripts);
        let jobs = vec![job(0, &shared), job(1, &longer)];
        let completions = run_all(&mut fake, limits(1, 16), &prefix(&shared, 1), jobs);

        assert_eq!(fake.copies, vec![(1, 0, 5), (1, 0, 6)]);
        assert_eq!(
            completions[0].prompt_tokens_reused, 5,
            "last prompt token computed"
        );
        assert_eq!(completions[0].text, text(&[20, 21]));
        assert_eq!(completions[1].prompt_tokens_reused, 6);
        assert_eq!(completions[1].text, text(&[22]));
    }

    #[test]
    fn a_single_prompt_completes_in_one_slot_with_and_without_a_prefix() {
        let prompt = [1, 2, 3, 4, 5, 6, 7, 8, 9];
        for shared in [no_prefix(), prefix(&prompt, 1)] {
            let mut fake = Scripted::new(4, &[(&prompt, &[20, 21, 22])]);
            let completions = run_all(&mut fake, limits(1, 16), &shared, vec![job(0, &prompt)]);
            assert_eq!(completions[0].text, text(&[20, 21, 22]));
            let reused = if shared.nodes.is_empty() {
                0
            } else {
                prompt.len() - 1
            };
            assert_eq!(completions[0].prompt_tokens_reused, reused);
        }
    }

    #[test]
    fn identical_prompts_both_complete_with_the_whole_prompt_as_prefix() {
        let prompt = [1, 2, 3, 4, 5, 6, 7, 8];
        let mut fake = Scripted::new(8, &[(&prompt, &[20, 21])]);
        let jobs = vec![job(0, &prompt), job(1, &prompt)];
        let completions = run_all(&mut fake, limits(2, 16), &prefix(&prompt, 2), jobs);
        for completion in &completions {
            assert_eq!(completion.text, text(&[20, 21]));
            assert_eq!(completion.prompt_tokens_reused, prompt.len() - 1);
        }
    }

    #[test]
    fn max_tokens_ends_generation_with_length() {
        let mut fake = Scripted::new(8, &[(&[1], &[20, 21, 22, 23])]);
        let completions = run_all(&mut fake, limits(1, 2), &no_prefix(), vec![job(0, &[1])]);
        assert_eq!(completions[0].finish_reason, FinishReason::Length);
        assert_eq!(completions[0].completion_tokens, 2);
        assert_eq!(completions[0].text, text(&[20, 21]));
    }

    #[test]
    fn end_of_generation_ends_with_end_of_sequence_and_is_not_counted() {
        let mut fake = Scripted::new(8, &[(&[1], &[20, 21])]);
        let completions = run_all(&mut fake, limits(1, 8), &no_prefix(), vec![job(0, &[1])]);
        assert_eq!(completions[0].finish_reason, FinishReason::EndOfSequence);
        assert_eq!(completions[0].completion_tokens, 2);
        assert_eq!(completions[0].text, text(&[20, 21]));
    }

    #[test]
    fn ignore_eos_generates_past_end_of_generation_up_to_max_tokens() {
        let mut fake = Scripted::new(8, &[(&[1], &[20, EOS, 21])]);
        let limits = Limits {
            ignore_eos: true,
            ..limits(1, 4)
        };
        let completions = run_all(&mut fake, limits, &no_prefix(), vec![job(0, &[1])]);
        assert_eq!(completions[0].finish_reason, FinishReason::Length);
        assert_eq!(completions[0].completion_tokens, 4);
        assert_eq!(completions[0].text, text(&[20, EOS, 21, EOS]));
    }

    #[test]
    fn timings_are_ordered_for_every_completion() {
        let shared = [1, 2, 3, 4, 5, 6];
        let prompts: Vec<Vec<i32>> = (0..5)
            .map(|i| [&shared[..], &[10 + i, 20 + i]].concat())
            .collect();
        let scripts: Vec<(&[i32], &[i32])> = prompts
            .iter()
            .map(|p| (&p[..], &[30, 31, 32][..]))
            .collect();
        let mut fake = Scripted::new(4, &scripts);
        let jobs = prompts.iter().enumerate().map(|(i, p)| job(i, p)).collect();
        let completions = run_all(&mut fake, limits(2, 16), &prefix(&shared, 2), jobs);
        for c in &completions {
            assert!(c.queued_at <= c.started_at, "{c:?}");
            assert!(c.started_at <= c.first_token_at, "{c:?}");
            assert!(c.first_token_at <= c.finished_at, "{c:?}");
            assert!(c.ttft_ms >= 0.0 && c.latency_ms >= c.ttft_ms, "{c:?}");
        }
    }
}
