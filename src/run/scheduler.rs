//! Continuous batching over `--parallel` sequences of one llama.cpp context.
//!
//! Each step builds one batch: first one token for every sequence that is generating, then prompt
//! chunks of sequences that are prefilling, up to the batch capacity (so long prompts are chunked
//! and prefill shares batches with other sequences' decode steps). A finished sequence frees its
//! slot, which takes the next question in the same step.

use crate::engine::{SequenceSampler, Session, Token};
use crate::error::Result;
use chrono::{DateTime, Utc};
use std::time::Instant;

/// One question ready for decoding.
pub struct Job {
    /// Index of the question in the caller's list.
    pub question_index: usize,
    /// Tokenized prompt (fits the sequence's context together with `max_tokens`).
    pub prompt: Vec<Token>,
    /// Sampler for this question.
    pub sampler: SequenceSampler,
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

/// Tokens every prompt starts with (chat-template header, system prompt), prefilled once into
/// their own sequence and copied into each slot instead of being recomputed per question.
#[derive(Debug, Clone, Default)]
pub struct SharedPrefix {
    /// The common tokens; empty disables the cache.
    pub tokens: Vec<Token>,
    /// The sequence id that holds them (one past the slots).
    pub sequence: u32,
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

struct Active {
    job: Job,
    reused: usize,
    prefilled: usize,
    next_position: u32,
    pending_token: Option<Token>,
    logits_at: Option<i32>,
    generated: usize,
    text: Vec<u8>,
    queued: Instant,
    started: Option<Instant>,
    first_token: Option<Instant>,
}

fn ms(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64() * 1000.0
}

/// Decode `jobs` over the session's sequences until they run out or `control` says stop.
/// `on_complete` receives each finished question as soon as its last token is sampled.
pub fn run(
    session: &mut Session<'_>,
    limits: Limits,
    prefix: &SharedPrefix,
    jobs: &mut dyn Iterator<Item = Job>,
    control: &mut dyn FnMut() -> Control,
    on_complete: &mut dyn FnMut(Completion),
) -> Result<Ended> {
    let engine = session.engine();
    let clock = Clock::new();
    let mut slots: Vec<Option<Active>> = (0..limits.sequences).map(|_| None).collect();
    let mut jobs_exhausted = false;
    prefill_prefix(session, prefix)?;
    loop {
        let command = control();
        if command == Control::Abort {
            return Ok(Ended::Stopped);
        }
        if command == Control::Continue && !jobs_exhausted {
            for (sequence, slot) in slots.iter_mut().enumerate().filter(|(_, s)| s.is_none()) {
                match jobs.next() {
                    Some(job) => {
                        // Reuse the prefix, but always compute the last prompt token: its logits
                        // give the first answer token.
                        let reused = if prefix.tokens.is_empty() {
                            0
                        } else {
                            prefix.tokens.len().min(job.prompt.len() - 1)
                        };
                        *slot = Some(Active {
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
                        });
                        if reused > 0 {
                            session.copy_sequence(prefix.sequence, sequence as u32);
                        }
                    }
                    None => {
                        jobs_exhausted = true;
                        break;
                    }
                }
            }
        }
        if slots.iter().all(Option::is_none) {
            return Ok(if jobs_exhausted {
                Ended::AllDone
            } else {
                Ended::Stopped
            });
        }

        session.clear_batch();
        for (sequence, slot) in slots.iter_mut().enumerate() {
            let Some(active) = slot else { continue };
            if let Some(token) = active.pending_token.take() {
                active.logits_at =
                    Some(session.push(token, active.next_position, sequence as u32, true)?);
                active.next_position += 1;
            }
        }
        let now = Instant::now();
        for (sequence, slot) in slots.iter_mut().enumerate() {
            let Some(active) = slot else { continue };
            let remaining = active.job.prompt.len() - active.prefilled;
            let room = session.batch_capacity() - session.batch_len();
            if remaining == 0 {
                continue;
            }
            if room == 0 {
                break;
            }
            active.started.get_or_insert(now);
            let chunk = remaining.min(room);
            for offset in 0..chunk {
                let index = active.prefilled + offset;
                let last = index + 1 == active.job.prompt.len();
                let at = session.push(
                    active.job.prompt[index],
                    active.next_position,
                    sequence as u32,
                    last,
                )?;
                if last {
                    active.logits_at = Some(at);
                }
                active.next_position += 1;
            }
            active.prefilled += chunk;
        }

        let decode_start = Instant::now();
        let batch_tokens = session.batch_len();
        session.decode()?;
        let sampled_at = Instant::now();
        log::trace!(
            "decoded {batch_tokens} tokens in {:.1} ms",
            ms(decode_start, sampled_at)
        );

        for (sequence, slot) in slots.iter_mut().enumerate() {
            let Some(active) = slot else { continue };
            let Some(batch_index) = active.logits_at.take() else {
                continue;
            };
            let token = session.sample(&mut active.job.sampler, batch_index);
            active.first_token.get_or_insert(sampled_at);
            let finish = if engine.is_end_of_generation(token) && !limits.ignore_eos {
                Some(FinishReason::EndOfSequence)
            } else {
                active.generated += 1;
                active.text.extend(engine.token_bytes(token));
                active.pending_token = Some(token);
                (active.generated >= limits.max_tokens).then_some(FinishReason::Length)
            };
            if let Some(reason) = finish {
                let Some(done) = slot.take() else { continue };
                session.forget_sequence(sequence as u32);
                on_complete(complete(&clock, done, sequence as u32, reason, sampled_at));
            }
        }
    }
}

fn prefill_prefix(session: &mut Session<'_>, prefix: &SharedPrefix) -> Result<()> {
    for (chunk_index, chunk) in prefix.tokens.chunks(session.batch_capacity()).enumerate() {
        session.clear_batch();
        let start = chunk_index * session.batch_capacity();
        for (offset, &token) in chunk.iter().enumerate() {
            session.push(token, (start + offset) as u32, prefix.sequence, false)?;
        }
        session.decode()?;
    }
    Ok(())
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

fn complete(
    clock: &Clock,
    done: Active,
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

    #[test]
    fn a_character_cut_by_the_token_limit_is_dropped() {
        let mut bytes = "세종".as_bytes().to_vec();
        bytes.extend_from_slice(&"대".as_bytes()[..2]);
        assert_eq!(decode_text(bytes), "세종");
        assert_eq!(decode_text(b"a\xffb".to_vec()), "a\u{fffd}b");
        assert_eq!(decode_text(b"  ok \n".to_vec()), "ok");
    }
}
